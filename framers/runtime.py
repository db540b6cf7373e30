"""ONNX Runtime sessions of the model store: the only module of the codec that imports onnxruntime.

``load_model(folder, default_threads)`` verifies a stored model (sha256 and IO spec against its
``StoreConfig``) and opens one session; both are kept in one process-wide cache, filled lazily
under a lock, keyed by folder and thread count. Which execution providers a session got is
logged once per session.

Providers come from an ordered preference list filtered by what this onnxruntime build offers
(CUDA first when available, CPU always last). A CPU-only session opens the config's
``cpu_graph`` file instead of ``model.onnx`` when there is one (the same network with fused
operators, checksum-verified like the model; ``FRAMERS_CPU_GRAPH=0`` opts out).
``FRAMERS_ORT_THREADS`` sets the intra- and inter-op thread counts (unset or 0: the caller's
default, else onnxruntime's). A caller that runs a model beside other work (the ``framers``
selector runs while frames are decoded and encoded) asks for one thread: onnxruntime's pool
would otherwise spin on the cores the decoder and encoder need.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnxruntime as ort

from framers.errors import ModelError
from framers.model_store import StoreConfig, TensorSpec, read_config, verified_model_file

log = logging.getLogger(__name__)

PREFERRED_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
THREADS_ENV = "FRAMERS_ORT_THREADS"
#: "0" makes CPU sessions open the stored model.onnx even where the config records a faster
#: ``cpu_graph`` (parity checks, benchmarks of the graph itself)
CPU_GRAPH_ENV = "FRAMERS_CPU_GRAPH"
#: config dtype names → onnxruntime's tensor type names
ORT_DTYPES = {
    "float32": "tensor(float)",
    "int64": "tensor(int64)",
    "float16": "tensor(float16)",
    "uint8": "tensor(uint8)",
    "int32": "tensor(int32)",
}


def providers() -> list[str]:
    """The preferred providers this onnxruntime offers, in order, CPU always last."""
    available = set(ort.get_available_providers())
    chosen = [p for p in PREFERRED_PROVIDERS if p in available and p != "CPUExecutionProvider"]
    return [*chosen, "CPUExecutionProvider"]


def thread_count() -> int:
    """Threads from FRAMERS_ORT_THREADS (0 = onnxruntime default). Raises ModelError if not an integer."""
    raw = os.environ.get(THREADS_ENV, "").strip()
    if not raw:
        return 0
    try:
        value = int(raw)
    except ValueError as exc:
        raise ModelError(f"{THREADS_ENV} must be an integer, got {raw!r}") from exc
    return max(0, value)


def session_options(default_threads: int = 0, spinning: bool = True) -> ort.SessionOptions:
    """Session options: FRAMERS_ORT_THREADS, else ``default_threads`` (0 = onnxruntime's choice).

    ``spinning=False``: onnxruntime's pool threads sleep between parallel sections instead of
    spin-waiting, so a session with two threads that shares its cores with other work costs
    about the CPU time of one thread (with spinning: ~1.5x) and still runs in about half the
    wall time when a core is free."""
    options = ort.SessionOptions()
    threads = thread_count() or default_threads
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = threads
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _check_io(kind: str, spec: tuple[TensorSpec, ...], actual: list[Any], where: Path) -> None:
    """Raise ModelError unless the session's inputs/outputs match the config (names, dtypes, dims)."""
    if [s.name for s in spec] != [a.name for a in actual]:
        raise ModelError(
            f"{where}: {kind} names {[a.name for a in actual]} do not match config {[s.name for s in spec]}"
        )
    for s, a in zip(spec, actual, strict=True):
        if ORT_DTYPES.get(s.dtype, s.dtype) != a.type:
            raise ModelError(f"{where}: {kind} {a.name!r} has dtype {a.type}, config says {s.dtype}")
        dims = list(a.shape)
        if len(dims) != len(s.dims):
            raise ModelError(f"{where}: {kind} {a.name!r} has rank {len(dims)}, config says {list(s.dims)}")
        for want, got in zip(s.dims, dims, strict=True):
            if isinstance(want, int) != isinstance(got, int) or (isinstance(want, int) and want != got):
                raise ModelError(f"{where}: {kind} {a.name!r} has dims {dims}, config says {list(s.dims)}")


@dataclass(frozen=True)
class LoadedModel:
    """A verified stored model: its folder, typed config and open ONNX Runtime session, and the
    file the session was opened from (``config.file``, or the ``cpu_graph`` file)."""

    directory: Path
    config: StoreConfig
    session: ort.InferenceSession
    file: Path | None = None

    @property
    def version(self) -> str:
        return self.config.version


_lock = threading.Lock()
_models: dict[tuple[str, int, bool], LoadedModel] = {}


def cpu_graph_file(directory: Path, config: StoreConfig, wanted: list[str]) -> Path | None:
    """The verified ``cpu_graph`` file of a model folder (issue 17: the same network as
    ``config.file`` with CPU-friendly fused operators, written by ``training.optimize_onnx``),
    or None: the config records none, the session may get another provider than the CPU, or
    ``FRAMERS_CPU_GRAPH=0``.

    Raises ModelError when the entry is malformed, was made from another model file than the
    one the config names (``source_sha256``), or the file is missing or its sha256 differs."""
    entry = config.get("cpu_graph")
    if not entry or wanted != ["CPUExecutionProvider"] or os.environ.get(CPU_GRAPH_ENV, "").strip() == "0":
        return None
    try:
        file, digest, source = str(entry["file"]), str(entry["sha256"]), str(entry["source_sha256"])
    except (KeyError, TypeError) as exc:
        raise ModelError(f"{directory}: malformed cpu_graph entry in the model config: {exc!r}") from exc
    if source != config.sha256:
        raise ModelError(f"{directory}: cpu_graph {file} was made from another model (sha256 {source[:12]}, "
                         f"the config's model is {config.sha256[:12]}): rerun training.optimize_onnx")
    return verified_model_file(directory, replace(config, file=file, sha256=digest))


def _open(directory: Path, default_threads: int, spinning: bool) -> LoadedModel:
    config = read_config(directory)
    path = verified_model_file(directory, config)
    wanted = providers()
    path = cpu_graph_file(directory, config, wanted) or path
    try:
        options = session_options(default_threads, spinning)
        session = ort.InferenceSession(str(path), sess_options=options, providers=wanted)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelError(f"cannot load ONNX model {path}: {exc}") from exc
    _check_io("input", config.inputs, session.get_inputs(), path)
    _check_io("output", config.outputs, session.get_outputs(), path)
    log.info("model %s %s (%s): execution providers %s (preferred and available: %s; onnxruntime %s)",
             config.name, config.version, path.name, session.get_providers(), wanted, ort.__version__)
    return LoadedModel(directory, config, session, path)


def load_model(directory: Path, default_threads: int = 0, spinning: bool = True) -> LoadedModel:
    """The verified model of a store folder (checksum, IO spec) with its session; one per
    process, folder, thread default and spinning, created on first use under a lock.

    ``default_threads``: onnxruntime threads unless FRAMERS_ORT_THREADS says otherwise
    (0 = onnxruntime's default); ``spinning``: see ``session_options``. Raises ModelError
    (missing, corrupt, mismatched, unloadable)."""
    key = (str(Path(directory).resolve()), default_threads, spinning)
    loaded = _models.get(key)
    if loaded is not None:
        return loaded
    with _lock:
        loaded = _models.get(key)
        if loaded is None:
            loaded = _open(Path(directory), default_threads, spinning)
            _models[key] = loaded
    return loaded


def clear_cache() -> None:
    """Forget every loaded model and session (tests; a store that changed under the process)."""
    with _lock:
        _models.clear()


def run_bound(session: ort.InferenceSession, feeds: dict[str, Any], outputs: dict[str, Any]) -> None:
    """Run ``session`` with I/O binding (issue 17, GPU sessions): host inputs are bound as they
    are (onnxruntime copies each to the device once) and every output is written straight into
    the given preallocated host numpy array (C-contiguous, the output's exact shape and dtype),
    so no output is allocated twice or copied again on the host."""
    binding = session.io_binding()
    for name, array in feeds.items():
        binding.bind_cpu_input(name, array)
    for name, array in outputs.items():
        binding.bind_output(name, "cpu", 0, array.dtype, list(array.shape), array.ctypes.data)
    session.run_with_iobinding(binding)
