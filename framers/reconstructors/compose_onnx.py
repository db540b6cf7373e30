"""FrameMAE ``flowmix``'s full-resolution composition through an ONNX graph (issue 17).

``framemae`` builds each missing frame from three full-resolution candidates (linear blend of
the kept neighbours; each neighbour backward-warped along DIS flow) mixed by the network's
low-resolution softmax weights. With numpy/OpenCV (``framers.motion``) that per-pixel work is
~60 % of a 1080p reconstruction on the CPU; on a GPU worker it would leave the GPU idle. The
stored model ``framemae_compose`` (``training/export_compose.py``) does the same steps in one
graph for all mixed frames of a window: upsample the flows and the weights, warp (GridSample),
build the linear candidate, mix, round and clip to uint8.

``FRAMERS_COMPOSE`` picks the path: ``numpy`` (framers.motion), ``onnx`` (this module), or
``auto`` (default): ``onnx`` when framemae's session runs on CUDA or TensorRT, ``numpy`` on the
CPU, where numpy/OpenCV measure faster (BENCHMARKS.md, bench/compose_paths.py). The choice is
logged once per process and setting. On a CUDA session the graph runs with I/O binding
(``runtime.run_bound``): inputs copied once, the output written straight into the host array.

Parity with the numpy path is not bit-exact: ``cv2.remap`` quantises sampling positions to 1/32
pixel and GridSample does not, so warped pixels at sharp edges differ by a few gray levels
(measured bounds in tests/test_compose_onnx.py).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from framers import model_store, motion, runtime
from framers.errors import ModelError, UnsupportedOptionError
from framers.reconstructors.base import KeptFrame
from framers.reconstructors.classical import linear_prior, to_uint8

if TYPE_CHECKING:
    from framers.reconstructors.framemae import FrameMAEReconstructor

log = logging.getLogger(__name__)

COMPOSE_ENV = "FRAMERS_COMPOSE"
MODES = ("auto", "numpy", "onnx")
MODEL_NAME = "framemae_compose"
#: execution providers on which ``auto`` composes in ONNX
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
#: frames per graph run: a 1080p frame needs ~0.3 GB of float32 intermediates; the CPU (the
#: ``onnx`` path forced there, tests and benches) gets small runs, a GPU the whole window.
FRAMES_PER_RUN_CPU = 2
FRAMES_PER_RUN_GPU = 16

_logged: set[tuple[str, str, str]] = set()


def compose_mode() -> str:
    """``FRAMERS_COMPOSE`` (auto when unset). Raises UnsupportedOptionError for another value."""
    mode = os.environ.get(COMPOSE_ENV, "").strip().lower() or "auto"
    if mode not in MODES:
        raise UnsupportedOptionError(f"{COMPOSE_ENV} must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def choose_path(provider: str) -> str:
    """``"onnx"`` or ``"numpy"`` for a framemae session whose first execution provider is
    ``provider``, under ``FRAMERS_COMPOSE``; logged once per (setting, provider, path)."""
    mode = compose_mode()
    path = "onnx" if mode == "onnx" or (mode == "auto" and provider in GPU_PROVIDERS) else "numpy"
    if (mode, provider, path) not in _logged:
        _logged.add((mode, provider, path))
        log.info("framemae composition: %s path (%s=%s, framemae session on %s)", path, COMPOSE_ENV, mode, provider)
    return path


def use_onnx(framemae_session: Any, candidate_set: str = motion.DEFAULT_CANDIDATES) -> bool:
    """True when this window's composition goes through the ONNX graph; the hook in
    ``FrameMAEReconstructor.compose``. ``auto`` on a GPU falls back to numpy (with a warning)
    when the store lacks a ``framemae_compose`` for the model's candidate set
    (``framers.motion.CANDIDATE_SETS``); an explicit ``onnx`` raises ModelError then."""
    if choose_path(framemae_session.get_providers()[0]) != "onnx":
        return False
    try:
        composer(candidate_set)
    except ModelError:
        if compose_mode() == "onnx":
            raise
        if ("missing", "", "") not in _logged:
            _logged.add(("missing", "", ""))
            log.warning("framemae composition: no usable %s model, numpy path instead", MODEL_NAME, exc_info=True)
        return False
    return True


def graph_dir(candidate_set: str = motion.DEFAULT_CANDIDATES) -> Path:
    """The newest stored ``framemae_compose`` that builds ``candidate_set``. Raises ModelError
    when there is none (or none at all)."""
    versions = model_store.list_versions(MODEL_NAME)
    for version in reversed(versions):
        folder = model_store.model_dir(MODEL_NAME, version)
        config = model_store.read_config(folder)
        try:
            builds = motion.candidate_set_named(config.get("candidates"))
        except KeyError as exc:
            raise ModelError(f"{MODEL_NAME} {config.version}: {exc.args[0]}") from None
        if builds == candidate_set:
            return folder
    raise ModelError(f"no {MODEL_NAME} for the {candidate_set} candidates in {model_store.store_root()} "
                     f"(have: {', '.join(versions) or 'none'})")


class Composer:
    """The verified ``framemae_compose`` session (``runtime.load_model``: sha256 and IO spec)."""

    def __init__(self, directory: Path | None = None) -> None:
        self.loaded = runtime.load_model(directory or graph_dir())
        self.session = self.loaded.session
        self.provider = self.session.get_providers()[0]
        self.on_gpu = self.provider in GPU_PROVIDERS

    def run(self, kept: np.ndarray, flows: np.ndarray, weights: np.ndarray, before: np.ndarray,
            after: np.ndarray, pair: np.ndarray, t: np.ndarray) -> np.ndarray:
        """The composed frames, uint8 [N, H, W, 3].

        kept: uint8 [M, H, W, 3] RGB; flows: float32 [P, fh, fw, 4] = (F(b→a).xy, F(a→b).xy) per
        kept pair in pixels of the flow resolution; weights: float32 [N, 3, h, w] softmax weights
        of motion.CANDIDATES; before, after: int64 [N] indices into kept; pair: int64 [N] indices
        into flows; t: float32 [N] positions in (0, 1)."""
        n, (height, width) = len(t), kept.shape[1:3]
        out = np.empty((n, height, width, 3), np.uint8)
        step = FRAMES_PER_RUN_GPU if self.on_gpu else FRAMES_PER_RUN_CPU
        for lo in range(0, n, step):
            sl = slice(lo, min(n, lo + step))
            feeds = {"kept": np.ascontiguousarray(kept, dtype=np.uint8),
                     "flows": np.ascontiguousarray(flows, dtype=np.float32),
                     "weights": np.ascontiguousarray(weights[sl], dtype=np.float32),
                     "before": np.ascontiguousarray(before[sl], dtype=np.int64),
                     "after": np.ascontiguousarray(after[sl], dtype=np.int64),
                     "pair": np.ascontiguousarray(pair[sl], dtype=np.int64),
                     "t": np.ascontiguousarray(t[sl], dtype=np.float32)}
            if self.on_gpu:  # I/O binding: the output lands in `out` with no second host copy
                runtime.run_bound(self.session, feeds, {"frames": out[sl]})
            else:
                out[sl] = self.session.run(None, feeds)[0]
        return out

    def compose_frames(self, flows: motion.WindowFlows, plans: Sequence[motion.FramePlan],
                       weights: np.ndarray) -> np.ndarray:
        """uint8 [len(plans), H, W, 3]: every plan (all interpolated) mixed with its weights
        float32 [K, len(plans), h, w] (the window's weights, already sliced to these plans)."""
        spans = [_span(p) for p in plans]
        pairs = sorted(set(spans))
        positions = sorted({pos for span in spans for pos in span})
        kept = np.stack([flows.kept[pos].rgb for pos in positions])
        flow_arr = np.stack([np.concatenate(flows.pair(a, b), axis=-1) for a, b in pairs])
        at_pos = {pos: i for i, pos in enumerate(positions)}
        at_pair = {pair: i for i, pair in enumerate(pairs)}
        return self.run(
            kept, flow_arr, weights.transpose(1, 0, 2, 3),
            np.array([at_pos[a] for a, _ in spans], np.int64),
            np.array([at_pos[b] for _, b in spans], np.int64),
            np.array([at_pair[span] for span in spans], np.int64),
            np.array([p.t for p in plans], np.float32),
        )


def _span(plan: motion.FramePlan) -> tuple[int, int]:
    assert plan.before is not None and plan.after is not None, "only interpolated frames are mixed"
    return plan.before, plan.after


def composer(candidate_set: str = motion.DEFAULT_CANDIDATES) -> Composer:
    """A Composer of the newest stored ``framemae_compose`` for ``candidate_set`` (sessions are
    cached by ``framers.runtime``; this object is cheap). Raises ModelError when missing or
    corrupt."""
    return Composer(graph_dir(candidate_set))


def compose_window(rec: FrameMAEReconstructor, kept: Sequence[KeptFrame], flows: motion.WindowFlows,
                   plans: Sequence[motion.FramePlan], weights: np.ndarray) -> np.ndarray:
    """``FrameMAEReconstructor.compose`` with the mixing in ONNX: the same frames get mixed
    (interpolated, and explained by the flow when the gate is on), the others the linear prior."""
    out = np.empty((len(plans), flows.height, flows.width, 3), np.uint8)
    mixed = [j for j, plan in enumerate(plans)
             if plan.interpolated and (not rec.gate or rec._explained(flows, plan))]
    for j, plan in enumerate(plans):
        if j not in mixed:
            out[j] = to_uint8(linear_prior(kept, plan.index, plan.index + 1)[0])
    if mixed:
        out[mixed] = composer(rec.candidate_set).compose_frames(flows, [plans[j] for j in mixed], weights[:, mixed])
    return out
