"""Training windows from the decoded train clips (``training.cache``): random 16-frame windows
of consecutive frames, random crops at native scale, flips, time reversal, random keep patterns
(codec ``uniform`` slots (1, 5), ``stride`` 4, any slot pair, the paper's 3-of-8 slots, and every
2nd, 8th and 16th frame: gaps the content-adaptive mode uses), optionally with the kept frames
coded by x264 as a bundle stores them (``coded``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from framers import motion
from framers.geometry import CLIP_LEN
from framers.reconstructors.base import KeptFrame
from training.cache import CACHE_ROOT

PATTERNS = ("uniform", "stride", "pair")
#: FrameMAE 1.1's patterns: the adaptive mode keeps every 2nd to 16th frame
GAP_PATTERNS = ("uniform", "stride", "pair", "stride2", "stride8", "stride16")


def slot_frames(slots: tuple[int, ...] | list[int]) -> list[int]:
    return [f for s in sorted(slots) for f in (2 * s, 2 * s + 1)]


def pattern_offsets(rng: np.random.Generator, pattern: str) -> list[int]:
    """Kept frame offsets inside a 16-frame clip for a keep pattern."""
    if pattern == "uniform":
        return slot_frames((1, 5))
    if pattern == "stride":
        return [0, 4, 8, 12]
    if pattern.startswith("stride"):  # every Nth frame: stride2, stride8, stride16
        return list(range(0, CLIP_LEN, int(pattern[len("stride"):])))
    if pattern == "pair":
        return slot_frames(sorted(rng.choice(8, size=2, replace=False).tolist()))
    if pattern == "three":
        return slot_frames(sorted(rng.choice(8, size=3, replace=False).tolist()))
    raise ValueError(pattern)


@dataclass
class Video:
    name: str
    frames: np.ndarray  # memmap uint8 [T, H, W, 3]

    @property
    def scale(self) -> int:
        return motion.net_scale(*self.frames.shape[1:3])


def load_videos(split: str = "train") -> list[Video]:
    paths = sorted((CACHE_ROOT / split).glob("*.npy"))
    if not paths:
        raise FileNotFoundError(f"no cached clips in {CACHE_ROOT / split}: run python -m training.cache")
    return [Video(p.name[:-4], np.load(p, mmap_mode="r")) for p in paths if ".tmp." not in p.name]


def sample_window(
    videos: list[Video], rng: np.random.Generator, tile: int, loss_crop: int = 128,
    patterns: tuple[str, ...] = PATTERNS, flow_preset: str = motion.DEFAULT_FLOW_PRESET, coded: float = 0.0,
    crfs: tuple[int, int] = (18, 34), candidate_set: str = motion.DEFAULT_CANDIDATES,
    disagreement: bool = False,
) -> dict[str, np.ndarray]:
    """One flowmix training sample (numpy): net input, candidates and target of a loss crop.

    ``flow_preset``: the DIS preset of the candidates' flows; ``coded``: the probability that the
    kept frames (crops) go through x264 (``framers.adaptive.coding.x264_round_trip``, preset
    medium) at a CRF drawn uniformly from ``crfs`` (inclusive), as the codec's kept frames do;
    ``candidate_set``: a key of ``framers.motion.CANDIDATE_SETS``; ``disagreement``: the
    trajectory set's extra input channels (``motion.net_input_window``)."""
    weights = np.array([1.0 / v.scale for v in videos])
    video = videos[rng.choice(len(videos), p=weights / weights.sum())]
    frames = video.frames
    n, hh, ww = frames.shape[:3]
    s = video.scale
    crop = tile * s
    y = int(rng.integers(0, hh - crop + 1))
    x = int(rng.integers(0, ww - crop + 1))
    start = int(rng.integers(0, n - CLIP_LEN + 1))
    reverse = bool(rng.random() < 0.5)
    flip = bool(rng.random() < 0.5)

    def get(i: int) -> np.ndarray:
        j = n - 1 - i if reverse else i
        img = np.asarray(frames[j, y : y + crop, x : x + crop])
        return np.ascontiguousarray(img[:, ::-1]) if flip else img

    pattern = patterns[int(rng.integers(len(patterns)))]
    inside = [start + o for o in pattern_offsets(rng, pattern)]
    kept_idx = list(inside)
    if start - CLIP_LEN >= 0:
        kept_idx.insert(0, start - CLIP_LEN + pattern_offsets(rng, pattern)[-1])
    nxt = start + CLIP_LEN + pattern_offsets(rng, pattern)[0]
    if nxt < n:
        kept_idx.append(nxt)
    images = [get(i) for i in kept_idx]
    if coded > 0 and rng.random() < coded:
        from framers.adaptive.coding import x264_round_trip

        images, _ = x264_round_trip(images, int(rng.integers(crfs[0], crfs[1] + 1)), "medium")
    kept = [KeptFrame(i, img) for i, img in zip(kept_idx, images, strict=True)]
    flows = motion.WindowFlows(kept, motion.flow_scale(hh, ww), preset=flow_preset, candidate_set=candidate_set)
    plans = motion.plan_window(kept_idx, start, start + CLIP_LEN)
    net_in = motion.net_input_window(flows, plans, s, disagreement)
    lc = min(crop, loss_crop)
    ly = int(rng.integers(0, crop - lc + 1))
    lx = int(rng.integers(0, crop - lc + 1))
    cands = np.stack([flows.candidates(p, 1, (ly, lx, lc, lc)) for p in plans])
    x0 = crop - lx - lc if flip else lx

    def get_region(i: int) -> np.ndarray:
        j = n - 1 - i if reverse else i
        img = np.asarray(frames[j, y + ly : y + ly + lc, x + x0 : x + x0 + lc])
        return img[:, ::-1] if flip else img

    target = np.stack([get_region(i) for i in range(start, start + CLIP_LEN)])
    loss_mask = np.array([p.interpolated for p in plans], dtype=np.float32)
    return {
        "net_in": net_in,  # [C, 16, tile, tile]
        # [K, 16, 3, lc, lc] float16 candidates of the loss crop, target [16, 3, lc, lc]
        "cands": cands.transpose(1, 0, 4, 2, 3).astype(np.float16),
        "target": target.transpose(0, 3, 1, 2).copy(),
        "loss_mask": loss_mask,
        "loss_box": np.array([ly, lx, lc, crop], dtype=np.int64),
    }


class FlowMixWindows(IterableDataset):
    """Endless ``sample_window`` draws from the cached train clips (one generator per worker)."""

    def __init__(self, tile: int, seed: int, loss_crop: int = 128, patterns: tuple[str, ...] = PATTERNS,
                 flow_preset: str = motion.DEFAULT_FLOW_PRESET, coded: float = 0.0,
                 candidate_set: str = motion.DEFAULT_CANDIDATES, disagreement: bool = False):
        self.tile = tile
        self.seed = seed
        self.loss_crop = loss_crop
        self.patterns = patterns
        self.flow_preset = flow_preset
        self.coded = coded
        self.candidate_set = candidate_set
        self.disagreement = disagreement

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        import cv2

        cv2.setNumThreads(1)
        info = get_worker_info()
        wid = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, wid, int(torch.initial_seed() % 2**31)])
        videos = load_videos("train")
        while True:
            yield sample_window(videos, rng, self.tile, self.loss_crop, self.patterns, self.flow_preset, self.coded,
                                candidate_set=self.candidate_set, disagreement=self.disagreement)


def collate_flowmix(batch: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
    """Stack samples; loss crops of different sizes are cut to the smallest one."""
    lc = min(int(b["loss_box"][2]) for b in batch)
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("net_in", "cands", "target", "loss_mask", "loss_box")}
    for b in batch:
        out["net_in"].append(b["net_in"])
        out["cands"].append(b["cands"][..., :lc, :lc])
        out["target"].append(b["target"][..., :lc, :lc])
        out["loss_mask"].append(b["loss_mask"])
        box = b["loss_box"].copy()
        box[2] = lc
        out["loss_box"].append(box)
    return {k: torch.from_numpy(np.stack(v)) for k, v in out.items()}


def sample_plain(videos: list[Video], rng: np.random.Generator, tile: int, n_keep: int) -> dict[str, np.ndarray]:
    """One plain FrameMAE sample: a tile×tile crop at native scale, kept slots (n_keep of 8)."""
    video = videos[int(rng.integers(len(videos)))]
    frames = video.frames
    n, hh, ww = frames.shape[:3]
    y = int(rng.integers(0, hh - tile + 1))
    x = int(rng.integers(0, ww - tile + 1))
    start = int(rng.integers(0, n - CLIP_LEN + 1))
    clip = np.asarray(frames[start : start + CLIP_LEN, y : y + tile, x : x + tile])
    if rng.random() < 0.5:
        clip = clip[:, :, ::-1]
    if rng.random() < 0.5:
        clip = clip[::-1]
    slots = (
        np.sort(rng.choice(8, size=n_keep, replace=False)) if n_keep != 2 or rng.random() < 0.5 else np.array([1, 5])
    )
    return {"video": np.ascontiguousarray(clip.transpose(3, 0, 1, 2)), "slots": slots.astype(np.int64)}


class PlainWindows(IterableDataset):
    def __init__(self, tile: int, seed: int, n_keep: int):
        self.tile = tile
        self.seed = seed
        self.n_keep = n_keep

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        info = get_worker_info()
        wid = info.id if info is not None else 0
        rng = np.random.default_rng([self.seed, wid, 7])
        videos = load_videos("train")
        while True:
            yield sample_plain(videos, rng, self.tile, self.n_keep)


__all__ = ["GAP_PATTERNS", "PATTERNS", "FlowMixWindows", "PlainWindows", "collate_flowmix", "load_videos",
           "sample_window"]
