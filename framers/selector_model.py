"""The learned ``framers`` selector: the paper's Frame Selector run with ONNX Runtime.

One ONNX model (``model_store/selector/<version>/model.onnx``) holds the frozen FrameMAE
encoder and the selector head: every frame of a 16-frame clip is area-resized to the encoder's
tile (a global view, so a clip costs one encoder pass whatever the source resolution), and the
model returns the scores of the 28 kept slot pairs (``framers.geometry.PAIRS`` order).

* keep = 2 (the trained case): the highest-scoring pair.
* keep ≠ 2 (fallback, logged and shown in ``describe()``): the K slots with the largest
  marginal score, slot score = Σ softmax(pair scores) over the 7 pairs that contain the slot.
* a short last clip (fewer than 16 frames): ``uniform``'s positions for that clip.

The selector is tied to the FrameMAE it was trained against: its config names that FrameMAE's
version and sha256, and loading fails with ``ModelError`` unless the store's FrameMAE (the one
the ``framemae`` reconstructor uses) is exactly that one.

Several clips share one ONNX call (up to ``MAX_BATCH`` clips and ``BATCH_BYTES`` of frames),
scored on a worker thread while the next batch is decoded, so this selector holds up to two
batches of clips in memory (≤ 2 × BATCH_BYTES), not just two clips.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from framers.clip import Clip
from framers.errors import ModelError
from framers.geometry import N_SLOTS, PAIRS
from framers.model_store import StoreConfig
from framers.selectors import ClipSource, Selection, Selector, UniformSelector, slots_to_positions

log = logging.getLogger(__name__)

MAX_BATCH = 8
BATCH_BYTES = 64 << 20  # frames of the clips of one batched ONNX call (two batches are held)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def slots_from_scores(logits: np.ndarray, keep: int) -> tuple[int, ...]:
    """Kept slots of one clip from its 28 pair scores: the best pair for keep = 2, else the
    ``keep`` slots with the largest marginal probability."""
    if keep == 2:
        return PAIRS[int(np.argmax(logits))]
    prob = softmax(logits.astype(np.float64))
    marginal = np.zeros(N_SLOTS)
    for p, (a, b) in zip(prob, PAIRS, strict=True):
        marginal[a] += p
        marginal[b] += p
    return tuple(sorted(int(s) for s in np.argsort(-marginal, kind="stable")[:keep]))


def check_pair(selector_cfg: StoreConfig, framemae_cfg: StoreConfig, where: Path) -> None:
    """Raise ModelError unless the selector was trained against exactly this FrameMAE (its config's
    ``framemae`` entry names the version and sha256)."""
    want = selector_cfg.get("framemae") or {}
    if not want.get("version"):
        raise ModelError(f"{where}: the selector config does not name the FrameMAE it was trained against")
    if want["version"] != framemae_cfg.version or (want.get("sha256") and want["sha256"] != framemae_cfg.sha256):
        raise ModelError(
            f"selector {selector_cfg.version!r} was trained against FrameMAE {want['version']!r} "
            f"(sha256 {str(want.get('sha256'))[:12]}), but the model store's FrameMAE is "
            f"{framemae_cfg.version!r} (sha256 {framemae_cfg.sha256[:12]}): "
            "retrain/export a selector for this FrameMAE or install the matching FrameMAE version"
        )


class LearnedSelector(Selector):
    """The learned Frame Selector (``--selector framers``)."""

    name = "framers"

    def __init__(self, keep: int = 2, *, selector_version: str | None = None,
                 framemae_version: str | None = None, root: Path | None = None, **kwargs: Any) -> None:
        super().__init__(keep, **kwargs)
        from framers.model_store import model_dir, read_config
        from framers.runtime import load_model

        sel_dir = model_dir("selector", selector_version, root)
        mae_dir = model_dir("framemae", framemae_version, root)
        sel_cfg = read_config(sel_dir)
        check_pair(sel_cfg, read_config(mae_dir), sel_dir)
        # One onnxruntime thread: the model runs on its own thread beside decoding and the
        # keyframe encoder, which need the other cores (480p compress 150 → 180 fps on 2 cores).
        loaded = load_model(sel_dir, default_threads=1)
        self._session = loaded.session
        self._config = loaded.config
        self._input = self._session.get_inputs()[0].name
        self.view = int(loaded.config.inputs[0].dims[2])
        self._versions = {"selector": loaded.version, "framemae": str(sel_cfg.get("framemae")["version"])}
        self._uniform = UniformSelector(keep, self.clip_len, self.slot_len)
        if keep != 2:
            log.warning("framers selector: trained for keep=2; keep=%d ranks slots by their summed pair "
                        "probabilities instead", keep)

    @property
    def model_versions(self) -> dict[str, str]:
        return dict(self._versions)

    @property
    def strategy(self) -> str:
        if self.keep == 2:
            return "learned pair (argmax of 28 pair scores); short clips: uniform"
        return (f"keep={self.keep}: top-{self.keep} slots by summed pair probabilities "
                "(the model is trained for keep=2); short clips: uniform")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "strategy": self.strategy, "models": self.model_versions}

    def scores(self, views: np.ndarray) -> np.ndarray:
        """Pair logits [B, 28] of a batch of views uint8 [B, 16, S, S, 3]."""
        out = self._session.run(None, {self._input: np.ascontiguousarray(views, dtype=np.uint8)})[0]
        return np.asarray(out, dtype=np.float32)

    def choose(self, clips: Sequence[Clip]) -> list[tuple[int, ...]]:
        """Kept positions of full clips (one batched ONNX call)."""
        if not clips:
            return []
        logits = self.scores(np.stack([c.view(self.view) for c in clips]))
        return [slots_to_positions(slots_from_scores(row, self.keep), len(c.frames), self.slot_len)
                for row, c in zip(logits, clips, strict=True)]

    def _groups(self, clips: Iterator[Clip]) -> Iterator[tuple[list[Clip], bool]]:
        """Consecutive full clips in batches (≤ MAX_BATCH clips, ≤ BATCH_BYTES), and each short
        clip alone (flag True)."""
        pending: list[Clip] = []
        held = 0
        for clip in clips:
            if len(clip) < self.clip_len:
                if pending:
                    yield pending, False
                pending, held = [], 0
                yield [clip], True
                continue
            pending.append(clip)
            held += clip.nbytes
            if len(pending) >= MAX_BATCH or held + clip.nbytes > BATCH_BYTES:
                yield pending, False
                pending, held = [], 0
        if pending:
            yield pending, False

    def select(self, open_clips: ClipSource) -> Selection:
        """Batches of clips are scored on a worker thread (ONNX Runtime releases the GIL) while
        the next batch is decoded and resized, so decoding and the model overlap."""
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="framers-selector") as pool:
            inflight: tuple[list[Clip], Future[np.ndarray]] | None = None
            for group, short in self._groups(open_clips()):
                if short:
                    if inflight is not None:
                        yield from self._finish(*inflight)
                        inflight = None
                    yield group[0], self._uniform.positions(len(group[0].frames))
                    continue
                views = np.stack([c.view(self.view) for c in group])  # [B, 16, S, S, 3]
                job = pool.submit(self.scores, views)
                if inflight is not None:
                    yield from self._finish(*inflight)
                inflight = (group, job)
            if inflight is not None:
                yield from self._finish(*inflight)

    def _finish(self, group: list[Clip], job: Future[np.ndarray]) -> Selection:
        for clip, row in zip(group, job.result(), strict=True):
            yield clip, slots_to_positions(slots_from_scores(row, self.keep), len(clip), self.slot_len)
