"""``framemae``: the learned reconstructor (ONNX Runtime, no torch).

Default model variant ``flowmix``: for every missing frame, three candidates are built at full
resolution by ``framers.motion`` (linear blend of the kept neighbours, and each neighbour
backward-warped along OpenCV DIS optical flow); the network sees the candidates of the whole
16-frame clip at reduced resolution (``net_scale``) in overlapping 64×64 tiles (feathered
seams), predicts softmax mixing weights per pixel and frame, and the weights, bilinearly
upscaled, mix the full-resolution candidates. Kept frames come back unchanged; frames outside
the span of kept frames are held like ``linear`` does; frames between two kept frames whose
change the flow does not explain (scene cuts, flicker) fall back to ``linear`` (``GATE_*``).

The ablation variant ``plain`` (the paper's masked autoencoder predicting pixels) runs on
native-resolution tiles for clips with exactly two kept slots and falls back to ``linear``
elsewhere.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from framers import model_store, motion, runtime
from framers.errors import ModelError
from framers.geometry import CLIP_LEN
from framers.reconstructors import compose_onnx  # issue 17 hook (compose)
from framers.reconstructors.base import KeptFrame, WindowReconstructor, iter_clip_windows
from framers.reconstructors.classical import LinearReconstructor, linear_prior, to_uint8
from framers.threads import codec_threads

if TYPE_CHECKING:
    import onnxruntime as ort

    from framers.candidate_map import ChoiceReader

TILE_OVERLAP = 8
TILE_BATCH = 8
#: safety gate: frames between two kept frames whose change the optical flow does not explain
#: (warp error ≥ GATE_RATIO × plain difference, and that difference ≥ GATE_MIN_DIFF gray
#: levels: scene cuts, flicker, fades) are rebuilt by ``linear`` instead of the network.
GATE_RATIO = 0.8
GATE_MIN_DIFF = 4.0


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering [0, length) with at least ``overlap`` shared pixels."""
    if length <= tile:
        return [0]
    n = int(np.ceil((length - overlap) / (tile - overlap)))
    return sorted({round(i * (length - tile) / (n - 1)) for i in range(n)})


def feather(tile: int, overlap: int) -> np.ndarray:
    """2-D blending window [tile, tile]: linear ramps over ``overlap`` pixels at the edges."""
    ramp = np.minimum(1.0, np.minimum(np.arange(1, tile + 1), np.arange(tile, 0, -1)) / overlap)
    return np.outer(ramp, ramp).astype(np.float32)


def run_tiled(
    session_run: Callable[[np.ndarray], np.ndarray], x: np.ndarray, tile: int, out_channels: int,
    batch: int = TILE_BATCH,
) -> np.ndarray:
    """Apply a tile network to x [C, T, h, w] → [out_channels, T', h, w] with feathered seams.

    ``session_run(batch [N, C, T, tile, tile]) -> [N, out_channels, T, tile, tile]``; inputs smaller
    than a tile are edge-padded."""
    return run_tiled_many(session_run, x[None], tile, out_channels, batch)[0]


def run_tiled_many(
    session_run: Callable[[np.ndarray], np.ndarray], xs: np.ndarray, tile: int, out_channels: int,
    batch: int = TILE_BATCH,
) -> np.ndarray:
    """``run_tiled`` of several same-size inputs xs [P, C, T, h, w] → [P, out_channels, T', h, w],
    their tiles sharing network calls of up to ``batch`` tiles (label generation runs the 28
    kept-pair variants of a window this way)."""
    h, w = xs.shape[3:]
    ph, pw = max(h, tile), max(w, tile)
    if (ph, pw) != (h, w):
        xs = np.pad(xs, ((0, 0), (0, 0), (0, 0), (0, ph - h), (0, pw - w)), mode="edge")
    window = feather(tile, TILE_OVERLAP)
    acc: np.ndarray | None = None
    norm = np.zeros((ph, pw), np.float32)
    boxes = [(y, x0) for y in tile_starts(ph, tile, TILE_OVERLAP) for x0 in tile_starts(pw, tile, TILE_OVERLAP)]
    for y, x0 in boxes:
        norm[y : y + tile, x0 : x0 + tile] += window
    jobs = [(i, y, x0) for i in range(len(xs)) for y, x0 in boxes]
    for start in range(0, len(jobs), batch):
        chunk = jobs[start : start + batch]
        tiles = np.stack([xs[i, :, :, y : y + tile, x0 : x0 + tile] for i, y, x0 in chunk])
        result = session_run(np.ascontiguousarray(tiles, dtype=np.float32))
        if acc is None:  # the network may return another number of frames than it takes
            acc = np.zeros((len(xs), out_channels, result.shape[2], ph, pw), np.float32)
        for (i, y, x0), res in zip(chunk, result, strict=True):
            acc[i, :, :, y : y + tile, x0 : x0 + tile] += res * window
    assert acc is not None
    return (acc / norm)[..., :h, :w]


#: onnxruntime threads of the network. It runs on the worker thread of ``reconstruct`` next to the
#: full-resolution stage and the encoder; its pool threads do not spin (``runtime.session_options``),
#: so a second thread costs about no CPU time when the cores are busy (2 spinning threads on 2
#: cores took 1.5x the CPU of one) and halves the network's wall time when a core is free, which
#: shortens the window-by-window critical path (480p: 58 → 62 fps in one run, issue 17).
NET_THREADS = 2

#: full-resolution threads of ``reconstruct`` (frames built in parallel, yielded in order):
#: one per core up to 4, or the service's thread budget (``FRAMERS_CODEC_THREADS``)
COMPOSE_THREADS = max(1, min(4, os.cpu_count() or 1))


def compose_threads() -> int:
    """Threads ``reconstruct`` builds full-resolution frames on."""
    return codec_threads() or COMPOSE_THREADS


#: what ``_prepare`` hands ``_finish``: (flows, plans, weights or None), or None (no flowmix)
Prepared = tuple[motion.WindowFlows, list[motion.FramePlan], np.ndarray | None] | None

# Smallest frame side the learned path handles (OpenCV's DIS flow needs 12 px or more).
MIN_SIDE = 16


@dataclass(frozen=True)
class Mixed:
    """A frame ``framemae`` mixes (``FrameMAEReconstructor.mixes``): its index, the network's
    weights float32 [K, h, w] and its K candidates float32 [H, W, 3] (``motion.CANDIDATES``
    order); the decoder's frame is their mix (``candidate_map.block_errors`` measures it)."""

    index: int
    weights: np.ndarray
    candidates: list[np.ndarray]


class FrameMAEReconstructor(WindowReconstructor):
    name = "framemae"
    local = False

    def __init__(self, model_dir: Path | None = None, gate: bool = True):
        self.gate = gate
        self.model_dir = Path(model_dir) if model_dir is not None else model_store.model_dir("framemae")
        self.config = model_store.read_config(self.model_dir)
        self.variant = str(self.config.get("variant") or "flowmix")
        if self.variant not in ("flowmix", "plain"):
            raise ModelError(f"{self.model_dir}: unknown framemae variant {self.variant!r}")
        self.tile = int(self.config.inputs[0].dims[-1])
        # the DIS preset the network was trained with (FrameMAE 1.0.0 names none: ``fast``)
        self.flow_preset = str((self.config.get("prior") or {}).get("flow_preset") or motion.DEFAULT_FLOW_PRESET)
        if self.flow_preset not in motion.FLOW_PRESETS:
            raise ModelError(f"{self.model_dir}: unknown flow preset {self.flow_preset!r}")
        try:  # the network's weights mean nothing over other candidates than it was trained on
            self.candidate_set = motion.candidate_set_named((self.config.get("prior") or {}).get("candidates"))
        except KeyError as exc:
            raise ModelError(f"{self.model_dir}: {exc.args[0]}") from None
        # the trajectory set's sample disagreement as extra network input (motion.net_input_window)
        self.disagreement = bool((self.config.get("prior") or {}).get("disagreement"))
        if self.disagreement and self.candidate_set != "trajectory":
            raise ModelError(f"{self.model_dir}: prior.disagreement needs the trajectory candidates")

    @property
    def model_versions(self) -> dict[str, str]:
        return {"framemae": self.config.version}

    def _session(self) -> ort.InferenceSession:
        """The model's ONNX Runtime session (``framers.runtime``'s cache): ``NET_THREADS``
        intra-op threads that sleep instead of spinning, at most the service's thread budget
        (``FRAMERS_CODEC_THREADS``); FRAMERS_ORT_THREADS overrides the count."""
        threads = min(NET_THREADS, codec_threads() or NET_THREADS)
        return runtime.load_model(self.model_dir, default_threads=threads, spinning=False).session

    def reconstruct_window(self, kept: Sequence[KeptFrame], start: int, stop: int,
                           times: Sequence[float] | None = None) -> np.ndarray:
        return self._finish(kept, start, stop, self._prepare(kept, start, stop, times=times), times)

    def reconstruct(self, kept: Iterable[KeptFrame], n_frames: int, clip_len: int,
                    times: Sequence[float] | None = None, choices: ChoiceReader | None = None) -> Iterator[np.ndarray]:
        """``WindowReconstructor.reconstruct``, pipelined; the frames are the same as window by
        window. A worker thread prepares the next window (decodes its kept frames: the ``kept``
        stream is only advanced there; computes its flows and runs the network: ``_prepare``,
        all at low resolution) while ``compose_threads()`` threads build frames at full
        resolution (``frame``), up to two frames per thread ahead of the caller, who encodes them
        (``pipeline.reconstruct`` on a writer thread). FFmpeg, x264, OpenCV and ONNX Runtime
        release the GIL, so the stages share the cores instead of taking turns. ``cache`` keeps
        what neighbouring windows share (the flow across their border, the images of its ends)
        until no window in flight reads it. ``choices``: the bundle's candidate map
        (``framers.candidate_map``), applied to each mixed frame's weights."""
        windows = iter_clip_windows(kept, n_frames, clip_len)
        cache = motion.FrameCache()  # flows and images two neighbouring windows share

        def prepare_next() -> tuple[list[KeptFrame], int, int, Prepared] | None:
            item = next(windows, None)
            if item is None:
                return None
            start, stop, window = item
            return window, start, stop, self._prepare(window, start, stop, cache, times, choices)

        workers = compose_threads()
        ahead: deque[tuple[Future[np.ndarray], int]] = deque()  # (frames, first kept index they read)
        with ThreadPoolExecutor(1, thread_name_prefix="framemae-prepare") as preparer, \
                ThreadPoolExecutor(workers, thread_name_prefix="framemae-compose") as composers:
            pending = preparer.submit(prepare_next)
            try:
                while (ready := pending.result()) is not None:
                    pending = preparer.submit(prepare_next)
                    window, start, stop, prepared = ready
                    first = window[0].index
                    cache.forget_before(min([first] + [f for _, f in ahead]))
                    if prepared is None:  # not the flowmix path: the whole window at once
                        ahead.append((composers.submit(self._finish, window, start, stop, None, times), first))
                    elif prepared[2] is not None and compose_onnx.use_onnx(self._session(), self.candidate_set):
                        # issue 17 hook: the ONNX graph composes the whole window in one run
                        ahead.append((composers.submit(self.compose, window, *prepared), first))
                    else:
                        flows, plans, weights = prepared
                        for j, plan in enumerate(plans):
                            w = None if weights is None else weights[:, j]
                            ahead.append((composers.submit(self._frames, window, flows, plan, w), first))
                    while len(ahead) > 2 * workers:
                        yield from ahead.popleft()[0].result()
                while ahead:
                    yield from ahead.popleft()[0].result()
            finally:  # the caller stopped early (an error, a closed generator): drop queued work
                for future, _ in ahead:
                    future.cancel()

    def _frames(self, kept: Sequence[KeptFrame], flows: motion.WindowFlows, plan: motion.FramePlan,
                weights: np.ndarray | None) -> np.ndarray:
        """One frame as a stack of one, uint8 [1, H, W, 3] (a compose job of ``reconstruct``);
        a kept or held frame is the kept frame's own array (frames are not modified once yielded)."""
        if not plan.interpolated:
            pos = plan.before if plan.before is not None else plan.after
            assert pos is not None
            return kept[pos].rgb[None]
        out = np.empty((1, flows.height, flows.width, 3), np.uint8)
        self.frame(kept, flows, plan, weights, out[0])
        return out

    def _prepare(self, kept: Sequence[KeptFrame], start: int, stop: int,
                 cache: motion.FrameCache | None = None, times: Sequence[float] | None = None,
                 choices: ChoiceReader | None = None) -> Prepared:
        """The low-resolution half of a window: flows, frame plans, the network's mixing weights
        [K, n, h, w] (None when no frame is interpolated; with ``choices``, each interpolated
        frame's set by its candidate map) and the gate of every interpolated frame; None when the
        window is not rebuilt by the flowmix path (tiny frames, ``plain``)."""
        height, width = kept[0].rgb.shape[:2]
        if min(height, width) < MIN_SIDE or self.variant == "plain":
            return None
        flows, plans = self.plan(kept, start, stop, cache, times)
        if not any(p.interpolated for p in plans):
            return flows, plans, None
        if stop - start > CLIP_LEN:
            raise ModelError(f"framemae reconstructs at most {CLIP_LEN} frames per window")
        weights = self.mixing_weights(flows, plans)
        if choices is not None:
            for j, plan in enumerate(plans):
                if plan.interpolated:
                    weights[:, j] = choices.apply(weights[:, j], plan.index)
        if self.gate:  # cached in ``flows``: compose finds them computed
            for plan in plans:
                if plan.interpolated:
                    self._explained(flows, plan)
        return flows, plans, weights

    def _finish(self, kept: Sequence[KeptFrame], start: int, stop: int, prepared: Prepared,
                times: Sequence[float] | None = None) -> np.ndarray:
        """The full-resolution half: the window's frames uint8 [stop - start, H, W, 3]."""
        if prepared is None:
            if min(kept[0].rgb.shape[:2]) < MIN_SIDE:
                # Optical flow (and a 16-px patch grid) means nothing on a frame this small; such
                # videos (thumbnails, 1x1 test patterns) get the linear prior the model starts from.
                return LinearReconstructor().reconstruct_window(kept, start, stop, times)
            return self._reconstruct_plain(kept, start, stop)
        return self.compose(kept, *prepared)

    def mixes(self, kept: Iterable[KeptFrame], n_frames: int, clip_len: int,
              times: Sequence[float] | None = None) -> Iterator[Mixed | None]:
        """What the encoder of a candidate map (``framers.candidate_map``) measures: per frame of
        the video, in order, a ``Mixed`` for every frame the network mixes (between two kept
        frames, the flow gate passed) and None for the others (kept, held, ``linear`` by the
        gate, or not the flowmix path). Its weights and candidates are those of the frames
        ``reconstruct`` gives without a map, one window at a time (no pipelining: the encoder's
        pass, not the decoder's)."""
        cache = motion.FrameCache()
        for start, stop, window in iter_clip_windows(kept, n_frames, clip_len):
            cache.forget_before(window[0].index if window else start)
            prepared = self._prepare(window, start, stop, cache, times)
            flows, plans, weights = prepared if prepared is not None else (None, [], None)
            if flows is None or weights is None:
                yield from (None for _ in range(start, stop))
                continue
            for j, plan in enumerate(plans):
                if not plan.interpolated or (self.gate and not self._explained(flows, plan)):
                    yield None
                    continue
                flows.drop_images(keep=(plan.before, plan.after))  # type: ignore[arg-type]
                yield Mixed(plan.index, weights[:, j], flows.candidates(plan, 1, as_list=True))
            flows.drop_images()
        motion.release_workspace()

    # ------------------------------------------------------------------ flowmix
    def net_input(self, flows: motion.WindowFlows, plans: Sequence[motion.FramePlan]) -> np.ndarray:
        """The network input of a window, [C, 16, h, w] (a short last clip repeats its last frame)."""
        x = motion.net_input_window(flows, plans, motion.net_scale(flows.height, flows.width),
                                    self.disagreement)  # [C, n, h, w]
        n = x.shape[1]
        if n < CLIP_LEN:
            x = np.concatenate([x, np.repeat(x[:, -1:], CLIP_LEN - n, axis=1)], axis=1)
        return x[:, :CLIP_LEN]

    def mixing_weights(self, flows: motion.WindowFlows, plans: Sequence[motion.FramePlan]) -> np.ndarray:
        """Low-resolution mixing weights [K, n, h, w] of a window."""
        session = self._session()
        name = session.get_inputs()[0].name

        def run(batch: np.ndarray) -> np.ndarray:
            return session.run(None, {name: batch})[0]

        return run_tiled(run, self.net_input(flows, plans), self.tile, motion.N_CANDIDATES)[:, :len(plans)]

    def plan(self, kept: Sequence[KeptFrame], start: int, stop: int, cache: motion.FrameCache | None = None,
             times: Sequence[float] | None = None) -> tuple[motion.WindowFlows, list[motion.FramePlan]]:
        """Flows (lazily computed, in ``cache`` if given) and frame plans of a window; no frame
        needs the network when none is interpolated."""
        flows = motion.WindowFlows(kept, cache=cache, preset=self.flow_preset, candidate_set=self.candidate_set)
        return flows, motion.plan_window([k.index for k in kept], start, stop, times)

    def compose(self, kept: Sequence[KeptFrame], flows: motion.WindowFlows, plans: Sequence[motion.FramePlan],
                weights: np.ndarray | None) -> np.ndarray:
        """The window's frames, uint8 [n, H, W, 3], from its mixing weights [K, n, h, w] (None:
        nothing to mix), one after the other (``frame``)."""
        # --- issue 17 hook: FRAMERS_COMPOSE=auto|numpy|onnx; the ONNX graph (on a GPU by default)
        # does the same composition as the numpy/OpenCV loop below (framers/reconstructors/compose_onnx.py)
        if weights is not None and compose_onnx.use_onnx(self._session(), self.candidate_set):
            return compose_onnx.compose_window(self, kept, flows, plans, weights)
        # --- end of issue 17 hook
        out = np.empty((len(plans), flows.height, flows.width, 3), np.uint8)
        for j, plan in enumerate(plans):
            if plan.interpolated:  # bounds memory to the full-resolution images of one pair
                flows.drop_images(keep=(plan.before, plan.after))  # type: ignore[arg-type]
            self.frame(kept, flows, plan, None if weights is None else weights[:, j], out[j])
        flows.drop_images()
        motion.release_workspace()
        return out

    def frame(self, kept: Sequence[KeptFrame], flows: motion.WindowFlows, plan: motion.FramePlan,
              weights: np.ndarray | None, out: np.ndarray) -> None:
        """Frame ``plan.index`` into ``out`` (uint8 [H, W, 3]) from its mixing weights [K, h, w].

        Interpolated frames the gate accepts are mixed (``WindowFlows.interpolate``); kept frames
        and frames held before the first / after the last kept frame are copied (what
        ``linear_prior`` gives them, without its float round trip); frames the gate refuses get
        ``linear``."""
        if weights is not None and plan.interpolated and (not self.gate or self._explained(flows, plan)):
            flows.interpolate(plan, weights, dst=out)
        elif not plan.interpolated:
            pos = plan.before if plan.before is not None else plan.after
            assert pos is not None
            out[...] = kept[pos].rgb
        else:
            # ``linear`` (the uint8 OpenCV blend of LinearReconstructor; ``linear_prior`` to ±1 level)
            assert plan.before is not None and plan.after is not None
            cv2.addWeighted(kept[plan.before].rgb, 1.0 - plan.t, kept[plan.after].rgb, plan.t, 0.0, dst=out)

    @staticmethod
    def _explained(flows: motion.WindowFlows, plan: motion.FramePlan) -> bool:
        assert plan.before is not None and plan.after is not None
        return flows.flow_explains(plan.before, plan.after, GATE_RATIO, GATE_MIN_DIFF)

    # ------------------------------------------------------------------ plain (ablation)
    def _reconstruct_plain(self, kept: Sequence[KeptFrame], start: int, stop: int) -> np.ndarray:
        inside = [k for k in kept if start <= k.index < stop]
        offsets = [k.index - start for k in inside]
        slots = sorted({o // 2 for o in offsets})
        pairs_ok = len(slots) == 2 and sorted(offsets) == [f for s in slots for f in (2 * s, 2 * s + 1)]
        prior = linear_prior(kept, start, stop)
        if stop - start != CLIP_LEN or not pairs_ok:
            return to_uint8(prior)
        frames = np.stack([k.rgb for k in sorted(inside, key=lambda k: k.index)])  # [4, H, W, 3]
        x = frames.transpose(3, 0, 1, 2).astype(np.float32) / 255.0  # [3, 4, H, W]
        session = self._session()
        slot_arr = np.array(slots, dtype=np.int64)

        def run(batch: np.ndarray) -> np.ndarray:
            feed = {"kept": batch, "slots": np.repeat(slot_arr[None], len(batch), axis=0)}
            return session.run(None, feed)[0]

        pred = run_tiled(run, x, self.tile, 3)  # [3, 16, H, W]
        out = to_uint8(pred.transpose(1, 2, 3, 0) * 255.0)
        for k in inside:
            out[k.index - start] = k.rgb
        return out
