"""The labels' errors: per-frame MSE [28, 16] of a window rebuilt from each of the 28 kept slot
pairs, for ``linear`` (exact, shared gaps computed once), any clip-wise reconstructor, and
``framemae`` (the codec's own stages with the network tiles of all pairs batched; on ONNX Runtime
or on the torch weights)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np

from framers.geometry import CLIP_LEN, N_PAIRS, PAIRS, pair_frames
from framers.motion import N_CANDIDATES
from framers.reconstructors.base import KeptFrame, WindowReconstructor
from framers.reconstructors.framemae import FrameMAEReconstructor, run_tiled_many
from training.label_windows import NEXT_CONTEXT, PREV_CONTEXT

ErrorFn = Callable[[np.ndarray, np.ndarray | None, np.ndarray | None], np.ndarray]


def _frame_mse(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.float32) - b.astype(np.float32)
    return float(np.mean(d * d))


def _segment_mse(frames: np.ndarray, lo: int, hi: int, a: int | None, ra: np.ndarray | None,
                 b: int | None, rb: np.ndarray | None) -> np.ndarray:
    """Per-frame MSE of frames lo..hi-1 rebuilt by ``linear`` from kept frames a < lo, b ≥ hi
    (either may be missing: the other is held). Same float32 arithmetic as ``linear_prior``."""
    target = frames[lo:hi].astype(np.float32)
    if ra is None or rb is None:
        src = ra if ra is not None else rb
        assert src is not None
        rebuilt = np.broadcast_to(src.astype(np.float32), target.shape)
    else:
        assert a is not None and b is not None
        w = ((np.arange(lo, hi) - a) / (b - a)).astype(np.float32)[:, None, None, None]
        rebuilt = ra.astype(np.float32)[None] * (np.float32(1.0) - w)
        rebuilt += rb.astype(np.float32)[None] * w
    d = np.clip(np.rint(rebuilt), 0, 255) - target
    return np.asarray(np.mean(d * d, axis=(1, 2, 3), dtype=np.float64), dtype=np.float32)


def pair_errors_linear(frames: np.ndarray, prev: np.ndarray | None, nxt: np.ndarray | None) -> np.ndarray:
    """Per-frame MSE [28, 16] of the ``linear`` reconstructor (exact, uint8-rounded as the codec),
    computing each gap between consecutive kept frames once (gaps are shared by many pairs)."""
    seg: dict[tuple[int | None, int | None], np.ndarray] = {}
    out = np.zeros((N_PAIRS, CLIP_LEN), np.float32)

    def rgb(k: int | None) -> np.ndarray | None:
        if k is None:
            return None
        return prev if k == PREV_CONTEXT else nxt if k == NEXT_CONTEXT else frames[k]

    for j, pair in enumerate(PAIRS):
        kept = pair_frames(pair)
        bounds: list[int | None] = [PREV_CONTEXT if prev is not None else None, *kept,
                                    NEXT_CONTEXT if nxt is not None else None]
        for a, b in itertools.pairwise(bounds):
            lo = 0 if a is None else max(a + 1, 0)
            hi = CLIP_LEN if b is None else min(b, CLIP_LEN)
            if hi <= lo:
                continue
            if (a, b) not in seg:
                seg[(a, b)] = _segment_mse(frames, lo, hi, a, rgb(a), b, rgb(b))
            out[j, lo:hi] = seg[(a, b)]
    return out


def pair_errors_window(rec: WindowReconstructor, frames: np.ndarray, prev: np.ndarray | None,
                       nxt: np.ndarray | None) -> np.ndarray:
    """Per-frame MSE [28, 16] of any clip-wise reconstructor (one reconstruct_window per pair)."""
    out = np.zeros((N_PAIRS, CLIP_LEN), np.float32)
    for j, pair in enumerate(PAIRS):
        window = [KeptFrame(PREV_CONTEXT, prev)] if prev is not None else []
        window += [KeptFrame(k, frames[k]) for k in pair_frames(pair)]
        if nxt is not None:
            window.append(KeptFrame(NEXT_CONTEXT, nxt))
        rebuilt = rec.reconstruct_window(window, 0, CLIP_LEN)
        out[j] = [_frame_mse(rebuilt[i], frames[i]) for i in range(CLIP_LEN)]
    return out


class TorchFlowMixSession:
    """FrameMAE's network in torch, standing in for its ONNX Runtime session in label generation:
    the same weights (the store's weights.npz, checked against model.onnx). Optional bf16
    autocast: ~2x the tiles per second of fp32 onnxruntime on a CPU with bf16 units (AMX), 8x
    slower than fp32 on one without (AMD EPYC here); label PSNRs within 0.003 dB of the ONNX path
    on the windows checked.
    ``device="cuda"`` runs it on a GPU (the codec's own stages stay on the CPU)."""

    def __init__(self, framemae_dir: Path, bf16: bool = False, device: str = "cpu") -> None:
        import torch

        from training.framemae_store import framemae_info

        self.torch = torch
        self.device = torch.device(device)
        net, _ = framemae_info(framemae_dir, None)
        self.net = net.to(self.device).eval()
        self.bf16 = bf16

    def run(self, batch: np.ndarray) -> np.ndarray:
        torch = self.torch
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            x = torch.from_numpy(batch).to(self.device)
            return self.net(x).float().cpu().numpy()


def pair_errors_framemae(rec: FrameMAEReconstructor, run: Callable[[np.ndarray], np.ndarray],
                         frames: np.ndarray, prev: np.ndarray | None, nxt: np.ndarray | None,
                         batch: int = 64) -> np.ndarray:
    """Per-frame MSE [28, 16] of ``framemae`` (flowmix): the codec's own stages (flows, network
    input, tiling, mixing, gates) with the network calls of all 28 pairs batched together."""
    out = np.zeros((N_PAIRS, CLIP_LEN), np.float32)
    staged = []
    for j, pair in enumerate(PAIRS):
        window = [KeptFrame(PREV_CONTEXT, prev)] if prev is not None else []
        window += [KeptFrame(k, frames[k]) for k in pair_frames(pair)]
        if nxt is not None:
            window.append(KeptFrame(NEXT_CONTEXT, nxt))
        flows, plans = rec.plan(window, 0, CLIP_LEN)
        staged.append((j, window, flows, plans))
    mixed = [s for s in staged if any(p.interpolated for p in s[3])]
    weights: dict[int, np.ndarray] = {}
    if mixed:
        xs = np.stack([rec.net_input(flows, plans) for _, _, flows, plans in mixed])
        ws = run_tiled_many(run, xs, rec.tile, N_CANDIDATES, batch)
        weights = {j: w for (j, *_), w in zip(mixed, ws, strict=True)}
    for j, window, flows, plans in staged:
        rebuilt = rec.compose(window, flows, plans, weights.get(j))
        out[j] = [_frame_mse(rebuilt[i], frames[i]) for i in range(CLIP_LEN)]
    return out


def make_error_fn(name: str, engine: str = "onnx", device: str = "cpu", bf16: bool = False
                  ) -> ErrorFn:
    """The error function of a reconstructor name: (frames [16, h, w, 3], prev, next) → MSE [28, 16].

    ``engine`` "torch" runs framemae's network on the store's torch weights (``device``, ``bf16``)."""
    if name == "linear":
        return pair_errors_linear
    if name == "framemae":
        rec: object = FrameMAEReconstructor()  # not via the registry: it imports PyAV
    else:
        from framers.registry import get_reconstructor

        rec = get_reconstructor(name)
    if isinstance(rec, FrameMAEReconstructor) and rec.variant == "flowmix":
        if engine == "torch":
            run = TorchFlowMixSession(rec.model_dir, bf16=bf16, device=device).run
        else:
            session = rec._session()
            feed = session.get_inputs()[0].name

            def run(batch: np.ndarray) -> np.ndarray:
                return np.asarray(session.run(None, {feed: batch})[0])

        return lambda f, p, n: pair_errors_framemae(rec, run, f, p, n)
    if not isinstance(rec, WindowReconstructor):
        raise SystemExit(f"{name} is not a clip-wise reconstructor")
    return lambda f, p, n: pair_errors_window(rec, f, p, n)
