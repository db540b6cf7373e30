"""Key-frame selectors: which frames of each 16-frame clip are kept.

Slot selectors keep K of the clip's 8 two-frame slots (the paper's layout): ``uniform``
(evenly spaced slots), ``oracle`` (exhaustive search with a reconstructor), ``random`` and the
learned ``framers`` selector (framers/selector_model.py). ``stride`` keeps every Nth single
frame of the whole video (N = 4 spends the same 25 % budget).

A selector maps a re-openable stream of clips to (clip, kept positions in the clip); it may
read the video twice (the oracle does). Memory is bounded by a few clips, independent of the
video's length (the learned selector batches up to 8 clips per ONNX call).
"""

from __future__ import annotations

import abc
import itertools
import random as _random
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from framers.clip import Clip
from framers.errors import UnsupportedOptionError
from framers.geometry import CLIP_LEN, N_SLOTS, SLOT_LEN
from framers.reconstructors.base import KeptFrame, Reconstructor, WindowReconstructor

ClipSource = Callable[[], Iterator[Clip]]
Selection = Iterator[tuple[Clip, tuple[int, ...]]]


def n_slots(n_frames: int, slot_len: int = SLOT_LEN) -> int:
    return -(-n_frames // slot_len)


def slots_to_positions(slots: Sequence[int], n_frames: int, slot_len: int = SLOT_LEN) -> tuple[int, ...]:
    """Kept frame positions of a set of slots, cut to the frames the clip has."""
    return tuple(p for s in sorted(slots) for p in range(s * slot_len, (s + 1) * slot_len) if p < n_frames)


def scaled_keep(keep: int, available: int, total: int = N_SLOTS) -> int:
    """Slots to keep in a clip with only ``available`` slots (a video's last, short clip):
    the same share as a full clip, at least one."""
    return max(1, min(available, round(keep * available / total)))


def uniform_slots(keep: int, available: int) -> tuple[int, ...]:
    """K evenly spaced slots of ``available``, centred: K=2 of 8 gives (1, 5), as in the pilots."""
    keep = scaled_keep(keep, available)
    step = available / keep
    return tuple(int(i * step + (step - 1) / 2) for i in range(keep))


class Selector(abc.ABC):
    name: str = ""

    def __init__(self, keep: int = 2, clip_len: int = CLIP_LEN, slot_len: int = SLOT_LEN) -> None:
        total = clip_len // slot_len
        if not 1 <= keep <= total:
            raise UnsupportedOptionError(f"keep must be between 1 and {total} slots, got {keep}")
        self.keep = keep
        self.clip_len = clip_len
        self.slot_len = slot_len

    @property
    def model_versions(self) -> dict[str, str]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {"selector": self.name, "keep": self.keep, "unit": "slot", "slot_len": self.slot_len}

    @abc.abstractmethod
    def select(self, open_clips: ClipSource) -> Selection: ...


class UniformSelector(Selector):
    name = "uniform"

    def positions(self, n_frames: int) -> tuple[int, ...]:
        return slots_to_positions(uniform_slots(self.keep, n_slots(n_frames, self.slot_len)), n_frames)

    def select(self, open_clips: ClipSource) -> Selection:
        for clip in open_clips():
            yield clip, self.positions(len(clip))


class RandomSelector(UniformSelector):
    """K random slots per clip (seeded): the floor any learned selector must clear."""

    name = "random"

    def __init__(self, keep: int = 2, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(keep, **kwargs)
        self._rng = _random.Random(seed)

    def positions(self, n_frames: int) -> tuple[int, ...]:
        available = n_slots(n_frames, self.slot_len)
        slots = self._rng.sample(range(available), scaled_keep(self.keep, available))
        return slots_to_positions(slots, n_frames)


class StrideSelector(Selector):
    """Every Nth single frame of the video, counted from its first frame."""

    name = "stride"

    def __init__(self, stride: int = 4, clip_len: int = CLIP_LEN, **_: Any) -> None:
        if not 1 <= stride <= 1000:
            raise UnsupportedOptionError(f"stride must be between 1 and 1000, got {stride}")
        self.stride = stride
        self.keep = 0
        self.clip_len = clip_len
        self.slot_len = 1

    def describe(self) -> dict[str, Any]:
        return {"selector": self.name, "stride": self.stride, "unit": "frame"}

    def select(self, open_clips: ClipSource) -> Selection:
        for clip in open_clips():
            yield clip, tuple(p for p in range(len(clip)) if (clip.start + p) % self.stride == 0)


def _sse(a: np.ndarray, b: np.ndarray) -> float:
    diff = (a.astype(np.float32) - b.astype(np.float32)).ravel()
    return float(np.dot(diff, diff))


class OracleSelector(Selector):
    """Exhaustive search over the C(8, K) slot sets with a reconstructor, minimising squared error.

    For local reconstructors (``linear``, ``hold``: a frame depends only on the kept frames on
    either side) the error of a whole video is a chain of per-gap errors, so dynamic programming
    over clips finds the exact minimum (two passes over the video, one clip of lookahead), counting
    the video's first and last frames as kept, as the codec always keeps them (scene-cut keeps
    are not modelled).
    For others (``framemae``) each clip is chosen in turn with the previous clip's choice and
    the next clip's uniform choice as context.
    """

    name = "oracle"

    def __init__(self, reconstructor: Reconstructor, keep: int = 2, **kwargs: Any) -> None:
        super().__init__(keep, **kwargs)
        if not isinstance(reconstructor, WindowReconstructor):
            raise UnsupportedOptionError(
                f"the oracle selector needs a clip-wise reconstructor; {reconstructor.name!r} is not"
            )
        self.reconstructor = reconstructor

    @property
    def model_versions(self) -> dict[str, str]:
        return self.reconstructor.model_versions

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "reconstructor": self.reconstructor.name}

    def candidates(self, n_frames: int) -> list[tuple[int, ...]]:
        available = n_slots(n_frames, self.slot_len)
        combos = itertools.combinations(range(available), scaled_keep(self.keep, available))
        return [slots_to_positions(c, n_frames) for c in combos]

    def select(self, open_clips: ClipSource) -> Selection:
        if self.reconstructor.local:
            yield from self._select_dp(open_clips)
        else:
            yield from self._select_greedy(open_clips)

    # -- exact search for local reconstructors --------------------------------------------
    def _gap_sse(self, frames: Callable[[int], np.ndarray], a: int | None, b: int | None, lo: int, hi: int) -> float:
        """Squared error of frames strictly between kept frames a and b (None: open end at lo/hi)."""
        start = lo if a is None else a + 1
        stop = hi if b is None else b
        if stop <= start:
            return 0.0
        kept = [KeptFrame(i, frames(i)) for i in (a, b) if i is not None]
        assert isinstance(self.reconstructor, WindowReconstructor)
        rebuilt = self.reconstructor.reconstruct_window(kept, start, stop)
        return sum(_sse(rebuilt[i - start], frames(i)) for i in range(start, stop))

    def _select_dp(self, open_clips: ClipSource) -> Selection:
        back: list[list[int]] = []  # per clip, best previous candidate for each candidate
        cands_per_clip: list[list[tuple[int, ...]]] = []
        value: list[float] = []
        previous: Clip | None = None
        for clip in open_clips():
            def frame_at(i: int, clip: Clip = clip, prev: Clip | None = previous) -> np.ndarray:
                if clip.start <= i < clip.stop:
                    return clip.frame(i - clip.start)
                assert prev is not None and prev.start <= i < prev.stop
                return prev.frame(i - prev.start)

            n = len(clip)
            cands = self.candidates(n)
            gap_cache: dict[tuple[int | None, int | None], float] = {}

            def gap(a: int | None, b: int | None, lo: int, hi: int, f: Callable[[int], np.ndarray] = frame_at,
                    cache: dict[tuple[int | None, int | None], float] = gap_cache) -> float:
                if (a, b) not in cache:
                    cache[(a, b)] = self._gap_sse(f, a, b, lo, hi)
                return cache[(a, b)]

            inner = []
            for cand in cands:
                idx = [clip.start + p for p in cand]
                inner.append(sum(gap(x, y, 0, 0) for x, y in itertools.pairwise(idx)))
            new_value: list[float] = []
            new_back: list[int] = []
            for j, cand in enumerate(cands):
                first = clip.start + cand[0]
                if previous is None:
                    # the codec always keeps the video's first frame (pipeline.compress)
                    new_value.append(inner[j] + (gap(clip.start, first, 0, 0) if first > clip.start else 0.0))
                    new_back.append(-1)
                    continue
                best, arg = float("inf"), -1
                for k, prev_cand in enumerate(cands_per_clip[-1]):
                    last = previous.start + prev_cand[-1]
                    total = value[k] + gap(last, first, 0, 0)
                    if total < best:
                        best, arg = total, k
                new_value.append(inner[j] + best)
                new_back.append(arg)
            value = new_value
            back.append(new_back)
            cands_per_clip.append(cands)
            previous = clip
        if previous is None:
            return
        # The codec always keeps the video's last frame: add the error of the frames between the
        # last kept frame and it before choosing the end.
        final = []
        end = previous.stop - 1
        for j, cand in enumerate(cands_per_clip[-1]):
            last = previous.start + cand[-1]
            tail = self._gap_sse(lambda i: previous.frame(i - previous.start), last, end, 0, 0) if last < end else 0.0
            final.append(value[j] + tail)
        choice = [0] * len(back)
        choice[-1] = int(np.argmin(final))
        for c in range(len(back) - 1, 0, -1):
            choice[c - 1] = back[c][choice[c]]
        for clip in open_clips():
            yield clip, cands_per_clip[clip.index][choice[clip.index]]

    # -- clip-by-clip search for other reconstructors ---------------------------------------
    def _select_greedy(self, open_clips: ClipSource) -> Selection:
        assert isinstance(self.reconstructor, WindowReconstructor)
        uniform = UniformSelector(self.keep, self.clip_len, self.slot_len)
        stream = open_clips()
        current = next(stream, None)
        context: KeptFrame | None = None
        while current is not None:
            following = next(stream, None)
            nxt: KeptFrame | None = None
            if following is not None:
                p = uniform.positions(len(following))[0]
                nxt = KeptFrame(following.start + p, following.frame(p))
            best, best_cand = float("inf"), tuple[int, ...]()
            for cand in self.candidates(len(current)):
                window = [context] if context is not None else []
                window += [KeptFrame(current.start + p, current.frame(p)) for p in cand]
                if nxt is not None:
                    window.append(nxt)
                rebuilt = self.reconstructor.reconstruct_window(window, current.start, current.stop)
                err = _sse(rebuilt, current.frames)
                if err < best:
                    best, best_cand = err, cand
            yield current, best_cand
            context = KeptFrame(current.start + best_cand[-1], current.frame(best_cand[-1]))
            current = following
