"""Generate small test videos with PyAV: moving content, optional audio, any size/rate/rotation."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def moving_frame(i: int, width: int, height: int) -> np.ndarray:
    """A textured background with a bright square moving 3 px per frame (smooth, interpolable)."""
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([(x * 3 + i) % 256, (y * 2) % 256, ((x + y) // 2) % 256], axis=-1).astype(np.uint8)
    size = max(2, min(width, height) // 4)
    x0 = (i * 3) % max(1, width - size)
    y0 = (i * 2) % max(1, height - size)
    base[y0 : y0 + size, x0 : x0 + size] = (250, 240, 30)
    return base


def write_video(
    path: Path,
    frames: int = 40,
    width: int = 96,
    height: int = 64,
    fps: int = 25,
    audio: bool = False,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    pts: list[int] | None = None,
    rotation: int | None = None,
    container_format: str | None = None,
) -> Path:
    """Write a test video; ``pts`` (in 1/fps... units of time_base 1/1000) gives variable frame rate."""
    out = av.open(str(path), mode="w", format=container_format)
    stream = out.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    if codec == "libx264":
        stream.options = {"crf": "12", "preset": "ultrafast"}
    if pts is not None:
        stream.time_base = Fraction(1, 1000)
        stream.codec_context.time_base = Fraction(1, 1000)
    if rotation is not None:
        stream.set_display_rotation(rotation)
    astream = None
    if audio:
        astream = out.add_stream("aac", rate=44100)
        astream.layout = "mono"
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(moving_frame(i, width, height), format="rgb24")
        if pts is not None:
            frame.pts = pts[i]
            frame.time_base = Fraction(1, 1000)
        else:
            frame.pts = i
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    if astream is not None:
        seconds = frames / fps
        samples = int(44100 * seconds)
        t = np.arange(samples) / 44100
        tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        for start in range(0, samples, 1024):
            chunk = tone[start : start + 1024]
            aframe = av.AudioFrame.from_ndarray(chunk[None, :], format="fltp", layout="mono")
            aframe.sample_rate = 44100
            aframe.pts = start
            for packet in astream.encode(aframe):
                out.mux(packet)
        for packet in astream.encode(None):
            out.mux(packet)
    out.close()
    return path
