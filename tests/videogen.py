"""Generate small test videos with PyAV: moving content, optional audio, any size/rate/rotation."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from framers.rgb import to_rgb


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


# ---------------------------------------------------------------------------------------------
# variants of real-world properties, from FFmpeg's lavfi sources run through PyAV filter graphs


def lavfi_frames(graph: str, frames: int) -> list[av.VideoFrame]:
    """The first ``frames`` pictures of a lavfi source chain, e.g.
    ``"testsrc2=size=64x48:rate=25"`` or ``"testsrc2=size=64x24:rate=50,weave=first_field=top"``."""
    from av.filter import Graph

    g = Graph()
    filters = [g.add(*(part.split("=", 1) if "=" in part else (part,))) for part in graph.split(",")]
    sink = g.add("buffersink")
    for a, b in zip([*filters], [*filters[1:], sink], strict=True):
        a.link_to(b)
    g.configure()
    out: list[av.VideoFrame] = []
    while len(out) < frames:
        try:
            out.append(g.pull())
        except (av.error.BlockingIOError, av.error.EOFError):
            break
    return out


def beep_audio(rate: int, seconds: float, beep_at: float, channels: int = 1) -> np.ndarray:
    """[channels, samples] float32: silence with a 40 ms 1 kHz beep starting at ``beep_at`` s."""
    t = np.arange(int(rate * seconds)) / rate
    tone = np.where((t >= beep_at) & (t < beep_at + 0.04), 0.8 * np.sin(2 * np.pi * 1000 * t), 0.0)
    return np.repeat(tone[None, :].astype(np.float32), channels, axis=0)


def _timed(packet: av.Packet, shown: dict[int, int]) -> av.Packet:
    """Give a packet its frame's display duration (encoders output packets late and reordered)."""
    if packet.pts is not None and packet.pts in shown:
        packet.duration = shown[packet.pts]
    return packet


def write_variant(
    path: Path,
    *,
    source: str = "testsrc2",
    width: int = 96,
    height: int = 64,
    fps: int = 25,
    frames: int = 20,
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    container_format: str | None = None,
    filters: str = "",
    colour: tuple[int, int, int, int] | None = None,
    sar: Fraction | None = None,
    display: tuple[int, bool, bool] | None = None,
    interlaced: str | None = None,
    durations: list[int] | None = None,
    audio: list[dict] | None = None,
    extra_video_first: bool = False,
    options: dict[str, str] | None = None,
    alpha: bool = False,
    origin: float = 0.0,
) -> Path:
    """A small video with one real-world property, from a lavfi source (``testsrc2``, ``smptebars``,
    ...), encoded with PyAV.

    ``colour``: (primaries, transfer, matrix, range) FFmpeg ids, both tagged *and* used for the RGB
    -> YUV conversion. ``sar``: sample aspect ratio. ``display``: (degrees ccw, hflip, vflip) as a
    display matrix. ``interlaced``: "tff" | "bff" (fields at twice the rate woven by FFmpeg's ``weave``,
    coded interlaced). ``durations``: per-frame display durations in ms
    (variable rate, e.g. a long end card). ``audio``: one dict per audio stream: ``codec``, ``rate``,
    ``channels``, ``start`` (s), ``beep_at`` (s), ``layout`` (None for PCM without a layout), ``tags``
    (stream metadata, e.g. ``{"language": "eng"}``).
    ``alpha``: the left half of every picture fully transparent, the rest opaque (use a ``pix_fmt``
    with alpha: rgba for png, argb for qtrle, yuva420p for ffv1/libvpx-vp9). ``extra_video_first``: a
    one-frame MJPEG video track (cover art) before the main one, the main one marked default.
    ``origin``: seconds every stream's timestamps start from (an MPEG-TS capture's clock), the
    audio's ``start`` and ``beep_at`` counted from it.
    """
    chain = f"{source}=size={width}x{height}:rate={fps}"
    if interlaced:  # fields at twice the rate, each half the height, woven into frames
        first = "top" if interlaced == "tff" else "bottom"
        chain = (f"{source}=size={width}x{height // 2}:rate={fps * 2},weave=first_field={first},"
                 f"setfield={interlaced}")
    if filters:
        chain += "," + filters
    pictures = lavfi_frames(chain, frames)
    out = av.open(str(path), mode="w", format=container_format)
    time_base = Fraction(1, 1000) if durations else Fraction(1, fps)
    cover = None
    if extra_video_first:
        cover = out.add_stream("mjpeg", rate=1)
        cover.width, cover.height, cover.pix_fmt = width // 2, height // 2, "yuvj420p"
    stream = out.add_stream(codec, rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.time_base = time_base
    stream.codec_context.time_base = time_base
    opts = dict(options or {})
    if codec == "libx264":
        opts.setdefault("crf", "16")
        opts.setdefault("preset", "ultrafast")
        if interlaced:
            opts["flags"] = "+ildct+ilme"
            opts["x264-params"] = "tff=1" if interlaced == "tff" else "bff=1"
    if interlaced:
        stream.codec_context.field_order = 2 if interlaced == "tff" else 3
    stream.options = opts
    if colour is not None:
        cc = stream.codec_context
        cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range = colour
    if sar is not None:
        stream.sample_aspect_ratio = sar
        stream.codec_context.sample_aspect_ratio = sar
    if display is not None:
        stream.set_display_rotation(display[0], hflip=display[1], vflip=display[2])
    if extra_video_first:
        from av.stream import Disposition

        stream.disposition = Disposition.default
    astreams = []
    for spec in audio or []:
        a = out.add_stream(spec["codec"], rate=spec.get("rate", 48000))
        layout = spec.get("layout", "mono" if spec.get("channels", 1) == 1 else "stereo")
        if layout is not None:
            a.layout = layout
        for key, value in (spec.get("tags") or {}).items():
            a.metadata[key] = value
        astreams.append((a, spec))
    if cover is not None:
        art = av.VideoFrame.from_ndarray(np.full((height // 2, width // 2, 3), 200, np.uint8), format="rgb24")
        art = art.reformat(format="yuvj420p")
        art.pts = 0
        for packet in cover.encode(art):
            out.mux(packet)
        for packet in cover.encode(None):
            out.mux(packet)
    t = 0
    shown: dict[int, int] = {}
    for i, pic in enumerate(pictures):
        if alpha:
            rgba = pic.to_ndarray(format="rgba")
            rgba[:, : width // 2, 3] = 0
            pic = av.VideoFrame.from_ndarray(rgba, format="rgba").reformat(format=pix_fmt)
        elif colour is not None:
            rgb = to_rgb(pic)
            pic = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(
                format=pix_fmt, dst_colorspace=colour[2], dst_color_range=colour[3])
            pic.color_primaries, pic.color_trc = colour[0], colour[1]
        elif pic.format.name != pix_fmt:
            pic = pic.reformat(format=pix_fmt)
        pic.pts = (t if durations else i) + round(origin / time_base)
        pic.time_base = time_base
        t += durations[i] if durations else 1
        shown[pic.pts] = durations[i] if durations else 1
        for packet in stream.encode(pic):
            out.mux(_timed(packet, shown))
    for packet in stream.encode(None):
        out.mux(_timed(packet, shown))
    seconds = (sum(durations) / 1000) if durations else frames / fps
    for a, spec in astreams:
        rate = spec.get("rate", 48000)
        channels = spec.get("channels", 1)
        start = spec.get("start", 0.0)
        samples = beep_audio(rate, seconds - start, spec.get("beep_at", 0.5) - start, channels)
        fmt = a.codec_context.format.name if a.codec_context.format else "fltp"
        step = a.codec_context.frame_size or 1024
        for s0 in range(0, samples.shape[1], step):
            chunk = samples[:, s0 : s0 + step]
            if fmt.startswith("s16"):
                data = (chunk * 32767).astype(np.int16)
                data = data.T.reshape(1, -1) if not fmt.endswith("p") else data
            elif fmt.endswith("p"):
                data = chunk
            else:
                data = chunk.T.reshape(1, -1)
            layout_name = {1: "mono", 2: "stereo", 6: "5.1"}[channels]
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data), format=fmt, layout=layout_name)
            frame.sample_rate = rate
            frame.pts = round((origin + start) * rate) + s0
            frame.time_base = Fraction(1, rate)
            for packet in a.encode(frame):
                out.mux(packet)
        for packet in a.encode(None):
            out.mux(packet)
    out.close()
    return path
