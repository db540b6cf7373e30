"""ONNX Runtime session factory: one cached session per model file and process.

Providers come from an ordered preference list filtered by what this onnxruntime build offers
(CUDA first when available, CPU always last). ``FRAMERS_ORT_THREADS`` sets the intra- and
inter-op thread counts (unset or 0: the caller's default, else onnxruntime's). A caller that
runs a model beside other work (the ``framers`` selector runs while frames are decoded and
encoded) asks for one thread: onnxruntime's pool would otherwise spin on the cores the decoder
and encoder need.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import onnxruntime as ort

from framers.errors import ModelError

PREFERRED_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
THREADS_ENV = "FRAMERS_ORT_THREADS"

_lock = threading.Lock()
_sessions: dict[str, ort.InferenceSession] = {}


def providers() -> list[str]:
    """The preferred providers this onnxruntime offers, in order, CPU always last."""
    available = set(ort.get_available_providers())
    chosen = [p for p in PREFERRED_PROVIDERS if p in available and p != "CPUExecutionProvider"]
    return [*chosen, "CPUExecutionProvider"]


def thread_count() -> int:
    """Threads from FRAMERS_ORT_THREADS (0 = onnxruntime default)."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError as exc:
        raise ModelError(f"{THREADS_ENV} must be an integer, got {raw!r}") from exc
    return max(0, value)


def session_options(default_threads: int = 0) -> ort.SessionOptions:
    options = ort.SessionOptions()
    threads = thread_count() or default_threads
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def get_session(path: Path, default_threads: int = 0) -> ort.InferenceSession:
    """The process-wide session of ``path`` (per thread default), created on first use under a lock."""
    file = str(Path(path).resolve())
    key = f"{file}#{default_threads}"
    session = _sessions.get(key)
    if session is not None:
        return session
    with _lock:
        session = _sessions.get(key)
        if session is None:
            try:
                session = ort.InferenceSession(file, sess_options=session_options(default_threads),
                                               providers=providers())
            except Exception as exc:  # onnxruntime raises its own exception types
                raise ModelError(f"cannot load ONNX model {file}: {exc}") from exc
            _sessions[key] = session
    return session


def clear_sessions() -> None:
    """Forget cached sessions (tests)."""
    with _lock:
        _sessions.clear()
