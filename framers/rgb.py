"""Decoded pictures as RGB, without swscale's default bias, in a form that survives re-encoding.

Two measured faults of swscale's default YUV 4:2:0 -> RGB conversion (what PyAV's
``to_ndarray(format="rgb24")`` does), ``bench/colour_bias.py``, BENCHMARKS.md section 0b:

- it is 0.4-1.3 gray levels too dark against an exact BT.601/BT.709 conversion, and every
  RGB -> YUV -> RGB trip of the codec (source -> kept frame, kept frame -> output file) repeats
  the shift: after the two trips the output's luma sits 1-2.3 levels below the source's;
- swscale's accurate path (``ACCURATE_RND | FULL_CHR_H_INT``) removes the bias but upsamples
  chroma bilinearly, which the encoder's chroma downsampling does not undo: each trip blurs the
  chroma again, and on saturated graphics the blended chroma falls out of gamut (3-8 dB lost
  on test patterns over two trips).

Here each chroma sample is repeated over the luma samples it covers (nearest-neighbour
upsampling), and the 4:4:4 picture is converted by swscale with accurate rounding. The trip is
then unbiased and close to idempotent: over the codec's two trips, luma PSNR in the YUV domain
goes 40.5 -> 69.8 dB (cotracker cat) and 44.3 -> 47.5 dB (c00 test pattern), chroma 60.3 -> 64.1
and 33.9 -> 34.0 dB (``bench/colour_bias.py``). The way back, :func:`to_yuv`, averages chroma
over the pixels each sample covers, the inverse of the repetition. Every YUV -> RGB conversion
of the codec, its tests and its benches goes through :func:`to_rgb`, so the codec and its
measurements agree. (An 8-bit 4:2:0 BT.601 limited-range picture, which the trip gives back up
to rounding, skips the first trip: ``framers.adaptive.coding.codec_yuv``.)
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from framers.threads import codec_threads

#: swscale flags of the final conversion: exact arithmetic (with a 4:4:4 input nothing is scaled;
#: a subsampled format not upsampled here gets its chroma interpolated at full resolution)
ACCURATE = Interpolation.BILINEAR | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT
#: the same for a 4:4:4 input (FULL_CHR_H_INT would only slow it down: ~20 % at 1080p)
ACCURATE_444 = Interpolation.BILINEAR | Interpolation.ACCURATE_RND
#: planar YUV with subsampled chroma: prefix, subsampling, bit depth suffix
_SUBSAMPLED = re.compile(r"^(yuvj?|yuva)(420|422|440|411|410)p(\d+(?:le|be))?$")
#: (vertical, horizontal) chroma subsampling of each layout
_STEPS = {"420": (2, 2), "422": (1, 2), "440": (2, 1), "411": (1, 4), "410": (4, 4)}

_local = threading.local()


def reformatter() -> VideoReformatter:
    """This thread's VideoReformatter (it caches an FFmpeg swscale context and is not
    thread-safe, so each thread gets its own)."""
    value = getattr(_local, "value", None)
    if value is None:
        value = _local.value = VideoReformatter()
    return value


def _threads() -> int:
    """swscale's thread count: the codec budget (``FRAMERS_CODEC_THREADS``), else every core
    (swscale's own "auto", 0, ran one thread here: 3x slower at 1080p)."""
    return codec_threads() or os.cpu_count() or 1


def _plane(plane: av.video.plane.VideoPlane, dtype: type) -> np.ndarray:
    itemsize = np.dtype(dtype).itemsize
    rows: np.ndarray = np.frombuffer(memoryview(plane), dtype).reshape(plane.height, plane.line_size // itemsize)
    return rows[:, : plane.width]


def chroma_repeated(frame: av.VideoFrame) -> av.VideoFrame:
    """A planar YUV picture with subsampled chroma (4:2:0, 4:2:2, 4:4:0, 4:1:1, 4:1:0; 8-16 bit;
    with or without alpha) as the 4:4:4 picture of the same depth whose every chroma sample is
    repeated over the luma samples it covers; colour tags copied. Any other picture (4:4:4, RGB,
    palette, semi-planar) is returned as it is. Shapes: planes [H, W] of uint8 or uint16."""
    match = _SUBSAMPLED.match(frame.format.name)
    if match is None:
        return frame
    prefix, layout, depth = match.groups()
    target = f"{prefix}444p{depth or ''}"
    dtype = np.uint16 if depth else np.uint8
    width, height = frame.width, frame.height
    out = av.VideoFrame(width, height, target)
    for index, (source, dest) in enumerate(zip(frame.planes, out.planes, strict=True)):
        samples, full = _plane(source, dtype), _plane(dest, dtype)
        step_y, step_x = _STEPS[layout] if index in (1, 2) else (1, 1)  # Y and alpha: full size
        # each phase of the step_y x step_x block takes the chroma plane as it is: luma sample
        # (y, x) gets chroma (y // step_y, x // step_x), written in place (no temporary)
        for dy in range(step_y):
            for dx in range(step_x):
                phase = full[dy::step_y, dx::step_x]
                phase[...] = samples[: phase.shape[0], : phase.shape[1]]
    out.colorspace = frame.colorspace
    out.color_range = frame.color_range
    return out


def to_rgb(frame: av.VideoFrame, fmt: str = "rgb24", conv: VideoReformatter | None = None,
           **tags: Any) -> np.ndarray:
    """A decoded picture as packed RGB: uint8 [H, W, 3] (``rgb24``) or [H, W, 4] (``rgba``).

    Subsampled chroma is upsampled by repetition (:func:`chroma_repeated`), then swscale
    converts with accurate rounding. ``tags``: ``src_colorspace`` / ``src_color_range`` (FFmpeg
    enum ids or names) overriding the frame's own; without them the frame's tags are used
    (untagged: BT.601, limited range). ``conv``: the VideoReformatter to use (default: this
    thread's, :func:`reformatter`). Raises av.error.FFmpegError when swscale cannot convert.
    """
    picture = chroma_repeated(frame)
    flags = ACCURATE_444 if picture is not frame else ACCURATE
    return (conv or reformatter()).reformat(picture, format=fmt, interpolation=flags, threads=_threads(),
                                            **tags).to_ndarray()


#: RGB -> subsampled YUV: each chroma sample the mean of the pixels it covers (a box filter), the
#: inverse of to_rgb's repetition: a picture to_rgb made comes back with the same chroma
TO_YUV = Interpolation.AREA


def to_yuv(picture: np.ndarray, pix_fmt: str, conv: VideoReformatter | None = None, **tags: Any) -> av.VideoFrame:
    """RGB uint8 [H, W, 3] as a ``pix_fmt`` picture (e.g. ``yuv420p``), chroma averaged over the
    pixels each sample covers (``TO_YUV``). ``tags``: ``dst_colorspace`` / ``dst_color_range``
    (FFmpeg enum ids; default BT.601 limited range). Measured over the codec's two trips, this
    keeps 0.3-11 dB more chroma than swscale's default downsampling (bench/colour_bias.py,
    BENCHMARKS.md section 0b). Raises av.error.FFmpegError when swscale cannot convert."""
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(picture), format="rgb24")
    return (conv or reformatter()).reformat(frame, format=pix_fmt, interpolation=TO_YUV, threads=_threads(), **tags)

