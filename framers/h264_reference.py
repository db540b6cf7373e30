"""The H.264 reference of ``framers evaluate``: the whole source encoded with libx264 (ABR,
preset medium, 4:2:0) at a method's bytes, the bitrate corrected until the size is within 10 %;
and the losslessly trimmed stand-in source of ``--max-frames``."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from framers import bundle as fb
from framers.h264_sei import SeiDropper
from framers.metrics import VideoQuality
from framers.video import FrameReader
from framers.video_writer import mux_rgb, output_pix_fmt

H264_TOLERANCE = 0.10


H264_MAX_ENCODES = 4


H264_PRESET = "medium"


def next_bitrate(bitrate: float, achieved_bytes: int, target_bytes: int) -> float:
    """x264's ABR output scales roughly with the requested rate: correct by the size ratio."""
    return bitrate * target_bytes / max(1, achieved_bytes)


def within(achieved: int, target: int, tolerance: float = H264_TOLERANCE) -> bool:
    """Whether ``achieved`` bytes are within ``tolerance`` (a fraction) of a positive ``target``."""
    return target > 0 and abs(achieved / target - 1.0) <= tolerance


# -- source preparation and the H.264 reference ----------------------------------------------------
def write_trimmed(source: Path, max_frames: int, dest: Path) -> int:
    """The first ``max_frames`` frames of ``source`` as lossless RGB (FFV1 in Matroska)."""
    written = 0
    with FrameReader(source) as reader, av.open(str(dest), mode="w", format="matroska") as out:
        stream = None
        for frame in reader.frames():
            if written >= max_frames:
                break
            if stream is None:
                rate = Fraction(reader.fps).limit_denominator(1001)
                stream = out.add_stream("ffv1", rate=rate)
                stream.height, stream.width = frame.rgb.shape[:2]
                # the bundle's lossless RGB format (FFmpeg 8's ffv1 takes no 8-bit gbrp)
                stream.pix_fmt = str(fb.KEYFRAME_CODECS["ffv1"]["pix_fmt"])
            mux_rgb(out, stream, frame.rgb, written)
            written += 1
        if stream is not None:
            mux_rgb(out, stream, None)
    return written


def encode_h264(
    frames: Callable[[], Iterator[np.ndarray]], dest: Path, width: int, height: int, fps: float, bitrate: float
) -> int:
    """Encode a frame stream with libx264 in single-pass ABR at ``bitrate`` bit/s, without x264's
    SEI text (``framers.h264_sei``); return the file bytes."""
    rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
    with av.open(str(dest), mode="w", format="matroska") as out:
        stream = out.add_stream("libx264", rate=rate)
        stream.width, stream.height = width, height
        stream.pix_fmt = output_pix_fmt(width, height)
        stream.bit_rate = max(1000, int(bitrate))
        stream.options = {"preset": H264_PRESET}
        sei = SeiDropper(stream)  # x264's text left out, as the bundle's own streams leave it out
        for index, rgb in enumerate(frames()):
            mux_rgb(out, stream, rgb, index, sei)
        mux_rgb(out, stream, None, sei=sei)
    return dest.stat().st_size


@dataclass
class H264Reference:
    """The x264 encode of a whole source at a method's bytes: file, sizes, ABR bitrate (bit/s),
    encodes tried, seconds, and its quality (filled in by the caller)."""

    path: Path
    target_bytes: int
    bytes: int
    bitrate: float
    encodes: int
    seconds: float
    quality: VideoQuality = field(default_factory=lambda: VideoQuality(structural_metrics=False))


def make_h264_reference(
    source: Path, dest: Path, width: int, height: int, fps: float, frames: int, target_bytes: int
) -> H264Reference:
    """Search the ABR bitrate until the encode is within 10 % of ``target_bytes`` (at most 4 encodes)."""
    started = time.perf_counter()

    def source_frames() -> Iterator[np.ndarray]:
        with FrameReader(source) as reader:
            for frame in reader.frames():
                yield frame.rgb

    duration = frames / fps if fps > 0 else frames / 25.0
    bitrate = target_bytes * 8.0 / duration
    best: tuple[int, float] | None = None
    encodes = 0
    for encodes in range(1, H264_MAX_ENCODES + 1):  # noqa: B007 (the count is reported)
        size = encode_h264(source_frames, dest, width, height, fps, bitrate)
        if best is None or abs(size - target_bytes) < abs(best[0] - target_bytes):
            best = (size, bitrate)
        if within(size, target_bytes):
            break
        bitrate = next_bitrate(bitrate, size, target_bytes)
    assert best is not None
    if best[0] != dest.stat().st_size:  # the last try was not the closest: redo the best one
        encode_h264(source_frames, dest, width, height, fps, best[1])
        encodes += 1
    return H264Reference(
        path=dest,
        target_bytes=target_bytes,
        bytes=dest.stat().st_size,
        bitrate=best[1],
        encodes=encodes,
        seconds=time.perf_counter() - started,
    )
