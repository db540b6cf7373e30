"""Which H.264 encoder writes reconstructed videos: NVIDIA's ``h264_nvenc`` when this worker has
one, else ``libx264`` (issue 17: the output's x264 encode is ~21 % of a 1080p reconstruction on
the CPU; on a GPU worker NVENC takes it off the CPU).

``FRAMERS_VIDEO_ENCODER``: ``auto`` (default), ``libx264`` or ``h264_nvenc``. ``auto`` probes once
per process (``nvenc_status``): PyAV's FFmpeg is built with ``h264_nvenc`` even where no NVIDIA
driver or GPU exists, so being listed in ``av.codecs_available`` proves nothing; the probe opens
the encoder and encodes one tiny frame, which fails without a driver and an NVENC-capable GPU
(data-centre GPUs such as the H100/H200 have no NVENC). The answer is cached; the choice is
logged once. An explicit ``h264_nvenc`` that cannot open raises UnsupportedOptionError with
FFmpeg's reason.

Quality: x264's CRF becomes NVENC's constant-quality VBR (``rc=vbr``, ``cq`` = the CRF value,
``b=0`` so no bitrate cap applies, ``preset=p5``). The two scales are not the same; quality and
size parity with x264 at equal CRF/CQ were NOT measured here (no NVENC on the machines this was
built on); bench/gpu_check.py measures fps and bytes on a GPU worker.

Odd frame sizes stay on libx264: 4:2:0 cannot hold them, the x264 path writes them in 4:4:4,
and NVENC's H.264 4:4:4 support depends on the GPU generation.
"""

from __future__ import annotations

import logging
import os
import threading
from fractions import Fraction
from typing import cast

import av
import numpy as np

from framers.errors import UnsupportedOptionError

log = logging.getLogger(__name__)

ENCODER_ENV = "FRAMERS_VIDEO_ENCODER"
CHOICES = ("auto", "libx264", "h264_nvenc")
NVENC = "h264_nvenc"
X264 = "libx264"
NVENC_PRESET = "p5"  # p1 fastest … p7 best; p5 is FFmpeg's "slow"-equivalent, still real-time at 1080p
PROBE_SIZE = (256, 144)  # above NVENC's minimum frame size on every generation

_lock = threading.Lock()
_status: tuple[bool, str] | None = None
_logged: set[tuple[str, str]] = set()


def _probe() -> tuple[bool, str]:
    """(works, reason): open h264_nvenc with the options the writer uses and encode one frame."""
    if NVENC not in av.codecs_available:
        return False, f"{NVENC} is not in this FFmpeg build"
    try:
        ctx = cast(av.VideoCodecContext, av.CodecContext.create(NVENC, "w"))
        ctx.width, ctx.height = PROBE_SIZE
        ctx.pix_fmt = "yuv420p"
        ctx.time_base = Fraction(1, 25)
        ctx.options = nvenc_options(23)
        ctx.open()
        black = np.zeros((PROBE_SIZE[1], PROBE_SIZE[0], 3), np.uint8)
        frame = av.VideoFrame.from_ndarray(black, format="rgb24").reformat(format="yuv420p")
        frame.pts = 0
        ctx.encode(frame)
        ctx.encode(None)
    except Exception as exc:  # FFmpeg's error says why: no driver, no NVENC on this GPU, out of sessions
        return False, f"{NVENC} cannot be opened here: {type(exc).__name__}: {exc}"
    return True, f"{NVENC} opened and encoded a {PROBE_SIZE[0]}x{PROBE_SIZE[1]} frame"


def nvenc_status() -> tuple[bool, str]:
    """(whether h264_nvenc works in this process, why); probed on first call, then cached."""
    global _status
    if _status is None:
        with _lock:
            if _status is None:
                _status = _probe()
    return _status


def reset() -> None:
    """Forget the cached probe and log state (tests)."""
    global _status
    with _lock:
        _status = None
        _logged.clear()


def setting() -> str:
    """``FRAMERS_VIDEO_ENCODER`` (auto when unset). Raises UnsupportedOptionError for another value."""
    value = os.environ.get(ENCODER_ENV, "").strip().lower() or "auto"
    if value not in CHOICES:
        raise UnsupportedOptionError(f"{ENCODER_ENV} must be one of {', '.join(CHOICES)}, got {value!r}")
    return value


def _log_once(encoder: str, why: str) -> None:
    if (encoder, why) not in _logged:
        _logged.add((encoder, why))
        # libx264 on a machine without NVENC is the ordinary case: said at debug level only
        quiet = encoder != NVENC and setting() == "auto"
        log.log(logging.DEBUG if quiet else logging.INFO, "H.264 output encoder: %s (%s)", encoder, why)


def h264_encoder(odd_size: bool = False) -> str:
    """``"h264_nvenc"`` or ``"libx264"`` under ``FRAMERS_VIDEO_ENCODER`` (see the module doc).

    Raises UnsupportedOptionError for an unknown setting, or for ``h264_nvenc`` where it cannot
    be opened."""
    wanted = setting()
    if wanted == X264:
        _log_once(X264, f"{ENCODER_ENV}={wanted}")
        return X264
    works, why = nvenc_status()
    if wanted == NVENC and not works:
        raise UnsupportedOptionError(f"{ENCODER_ENV}=h264_nvenc, but {why}; use auto or libx264")
    if works and odd_size:
        _log_once(X264, "odd frame size: 4:4:4 output, kept on libx264")
        return X264
    if works:
        _log_once(NVENC, f"{ENCODER_ENV}={wanted}: {why}")
        return NVENC
    _log_once(X264, f"{ENCODER_ENV}=auto, falling back: {why}")
    return X264


def nvenc_options(crf: int) -> dict[str, str]:
    """h264_nvenc options for x264's ``crf`` (constant-quality VBR at cq = crf, no bitrate cap)."""
    return {"rc": "vbr", "cq": str(crf), "b": "0", "preset": NVENC_PRESET}
