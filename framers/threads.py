"""Thread budget of one process for the codec libraries: FFmpeg's decoders, x264, OpenCV.

Unset (the CLI on a machine of its own) every library sizes its thread pool by the cores, which
is fastest for one job. Several service workers on one machine would then run cores × workers
threads and starve the gateway (issue 18), so a service worker sets ``FRAMERS_CODEC_THREADS``
(and ONNX Runtime's ``FRAMERS_ORT_THREADS``, read by ``framers.runtime``) from its setting
``worker_threads``, which ``framers serve`` makes cores / workers.
x264's output depends on its thread count (frame threads share look-ahead), so the streams a
bundle holds are coded on a fixed count whatever the budget (``framers.adaptive.coding.X264_THREADS``):
a bundle's size and the adaptive mode's choices then do not depend on the machine or the worker.
"""

from __future__ import annotations

import os

from framers.errors import UnsupportedOptionError

CODEC_THREADS_ENV = "FRAMERS_CODEC_THREADS"


def codec_threads() -> int:
    """Threads for one decoder or encoder from FRAMERS_CODEC_THREADS; 0 = the library's default.

    Raises UnsupportedOptionError when the variable is not a whole number ≥ 0."""
    raw = os.environ.get(CODEC_THREADS_ENV, "").strip()
    if not raw:
        return 0
    if not raw.isdigit():
        raise UnsupportedOptionError(f"{CODEC_THREADS_ENV} must be a whole number ≥ 0, got {raw!r}")
    return int(raw)


def limit_codec_context(context: object) -> None:
    """Apply the budget to a PyAV codec context (decoder or encoder) before it is opened."""
    threads = codec_threads()
    if threads:
        context.thread_count = threads  # type: ignore[attr-defined]


def limit_opencv() -> None:
    """Apply the budget to OpenCV's global thread pool (DIS flow, remap, resize)."""
    threads = codec_threads()
    if threads:
        import cv2

        cv2.setNumThreads(threads)
