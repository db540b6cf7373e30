"""Exhaustive-search labels for the Frame Selector: the error of all 28 kept slot pairs per clip.

For every window (16 consecutive frames) and each of the 28 pairs of kept slots (2 of 8,
lexicographic order = ``framers.geometry.PAIRS``), the window is reconstructed from the
kept frames and the per-frame MSE (0–255 scale, all 16 frames, kept ones included) is stored:
``mse`` [N, 28, 16] float32. Top-k accuracy, soft labels, PSNR and regret all follow from it.

Context: like the codec, a window is reconstructed together with the last kept frame of the
previous clip and the first kept frame of the next clip; both are taken at the ``uniform``
positions (slots (1, 5) → frames start−5 and start+18) where the video has them.

Windows
* train: random 16-frame windows (seeded) of the decoded train clips (``training.cache``),
* val: the codec's own clip grid (starts at multiples of 16, full clips only), up to
  ``--per-video`` evenly spread clips of each val video (first ``--max-frames`` frames).

Besides the labels each chunk stores the selector's input view: every frame area-resized to
``--view`` × ``--view`` (the FrameMAE encoder's tile), uint8 [N, 16, S, S, 3], made from the
native frames exactly as ``framers.selector_model`` does at inference.

Output (gitignored): ``data/selector/<split>_<reconstructor>_<res>/chunk_XXXX.npz``, one file
per ``--chunk`` windows, written atomically; a rerun skips finished chunks (resumable).

    python -m training.labels --split train --reconstructor linear --n 4000 --short-side 144
    python -m training.labels --split val --reconstructor linear --short-side 0   # native
    # the shipped selector's labels: val here (two processes, one per core, ~15 min) ...
    python -m training.labels --split val --reconstructor framemae --short-side 96 --chunk 16 --shard 0/2
    # ... train (4096 windows) on a GPU machine from two frame packs (~30 MB each), then the views here
    python -m training.labels --split train --reconstructor framemae --short-side 96 --n 4096 --seed 0 \
        --write-pack .dev/train_s96.npz --pack-parts 2     # then, there: training/labels_gpu.sh
    python -m training.labels --split train --reconstructor framemae --engine torch --device cuda \
        --short-side 96 --chunk 8 --pack .dev/train_s96_p0of2.npz --shard i/16      # i = 0..15; p1of2 too
    python -m training.labels --split train --reconstructor framemae --short-side 96 --n 4096 --seed 0 \
        --refresh-views

``framemae`` labels run the codec's own stages (``FrameMAEReconstructor.plan / net_input /
compose``) with the network tiles of all 28 pairs batched (``pair_errors_framemae``); the
``torch`` engine runs the network on the store's weights.npz (fp32; ``--bf16`` optional). At
short side 96 the network sees about what it sees at any resolution (``framers.motion.net_scale``
brings the short side to 96–191 px); a window costs ~6.7 s on one core of this CPU (5.1 s of it
the network, ~150 tiles), ~1.6 s of CPU with the network on a GPU: 16 processes beside one H100
labelled the 4096 train windows in ~7 min.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from framers.geometry import CLIP_LEN, N_PAIRS, PAIRS, pair_frames
from framers.metrics import psnr_of_mses
from framers.motion import N_CANDIDATES
from framers.reconstructors.base import KeptFrame, WindowReconstructor
from framers.reconstructors.framemae import FrameMAEReconstructor, run_tiled_many

# Nothing here imports framers.video / framers.selectors (and so PyAV) at module level: label
# errors also run on machines that have only the frame pack (``--write-pack`` / ``--pack``).

ROOT = Path(__file__).resolve().parents[1]
LABEL_ROOT = ROOT / "data" / "selector"
DATA_ROOT = Path("/work/shared/data/videos")
PREV_CONTEXT = -5  # last kept frame of the previous clip under uniform (1, 5): frame 11 - 16
NEXT_CONTEXT = CLIP_LEN + 2  # first kept frame of the next clip under uniform: frame 2 + 16


@dataclass(frozen=True)
class WindowSpec:
    video: str
    start: int


def psnr_of_mse(mse: np.ndarray) -> np.ndarray:
    """Per-frame PSNR (dB, 0–255 scale) capped at 60 dB, as in DESIGN's quality protocol."""
    return psnr_of_mses(mse)


def window_psnr(mse: np.ndarray) -> np.ndarray:
    """[..., 16] per-frame MSE → [...] mean of capped per-frame PSNR over the window's frames."""
    return psnr_of_mse(mse).mean(-1)


# --------------------------------------------------------------------------- frame sources
def area_resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    return cv2.resize(np.ascontiguousarray(rgb), (width, height), interpolation=cv2.INTER_AREA)


def label_scale(height: int, width: int, short_side: int) -> int:
    """Integer area-downscale factor of the label resolution (1 = native)."""
    return 1 if short_side <= 0 else max(1, round(min(height, width) / short_side))


def downscale(frame: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return frame
    h, w = frame.shape[:2]
    return area_resize(frame, w // factor, h // factor)


def train_windows(n: int, seed: int) -> tuple[list[WindowSpec], dict[str, np.ndarray]]:
    """n random windows over the cached train videos (a video drawn ∝ √windows)."""
    from training.cache import CACHE_ROOT

    paths = sorted(p for p in (CACHE_ROOT / "train").glob("*.npy") if ".tmp." not in p.name)
    if not paths:
        raise FileNotFoundError(f"no cached train clips in {CACHE_ROOT / 'train'}: run python -m training.cache")
    videos = {p.name[:-4]: np.load(p, mmap_mode="r") for p in paths}
    names = sorted(videos)
    counts = np.array([max(1, len(videos[k]) - CLIP_LEN + 1) for k in names], dtype=np.float64)
    prob = np.sqrt(counts) / np.sqrt(counts).sum()
    rng = np.random.default_rng(seed)
    specs = []
    for _ in range(n):
        name = names[int(rng.choice(len(names), p=prob))]
        start = int(rng.integers(0, len(videos[name]) - CLIP_LEN + 1))
        specs.append(WindowSpec(name, start))
    return specs, videos


def val_files() -> list[Path]:
    import csv

    with open(DATA_ROOT / "manifest.csv", newline="") as handle:
        return [DATA_ROOT / r["file"] for r in csv.DictReader(handle) if r["split"] == "val"]


def decode_frames(path: Path, max_frames: int) -> np.ndarray:
    """The first max_frames frames as the codec reads them (display orientation), [T, H, W, 3]."""
    from framers.video import FrameReader

    frames = []
    with FrameReader(path) as reader:
        for frame in reader.frames():
            frames.append(frame.rgb)
            if len(frames) >= max_frames:
                break
    return np.stack(frames)


def val_windows(per_video: int, max_frames: int) -> tuple[list[WindowSpec], dict[str, np.ndarray]]:
    """Codec-aligned full clips of each val video, up to per_video evenly spread ones."""
    specs: list[WindowSpec] = []
    videos: dict[str, np.ndarray] = {}
    for path in tqdm(val_files(), desc="decode val", unit="video"):
        try:
            frames = decode_frames(path, max_frames)
        except Exception as exc:
            print(f"skip {path.name}: {exc}")
            continue
        full = len(frames) // CLIP_LEN
        if full == 0:
            print(f"skip {path.name}: {len(frames)} frames")
            continue
        videos[path.name] = frames
        picks = sorted({round(x) for x in np.linspace(0, full - 1, min(per_video, full))})
        specs += [WindowSpec(path.name, k * CLIP_LEN) for k in picks]
    return specs, videos


# --------------------------------------------------------------------------- frame packs
def window_frame_ids(start: int, length: int) -> list[int]:
    """Frames a window's label needs: its 16 frames and the uniform context frames it has."""
    ids = list(range(start, start + CLIP_LEN))
    if start + PREV_CONTEXT >= 0:
        ids.append(start + PREV_CONTEXT)
    if start + NEXT_CONTEXT < length:
        ids.append(start + NEXT_CONTEXT)
    return ids


def label_window(video: np.ndarray, start: int, short_side: int
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A window's frames [16, h, w, 3] at label resolution and its context frames (or None)."""
    native = np.asarray(video[start:start + CLIP_LEN])
    f = label_scale(native.shape[1], native.shape[2], short_side)
    frames = np.stack([downscale(x, f) for x in native])
    p, q = start + PREV_CONTEXT, start + NEXT_CONTEXT
    prev = downscale(np.asarray(video[p]), f) if p >= 0 else None
    nxt = downscale(np.asarray(video[q]), f) if q < len(video) else None
    return frames, prev, nxt


def encode_lossless(frames: np.ndarray) -> bytes:
    """uint8 [T, h, w, 3] RGB → lossless H.264 RGB (libx264rgb, qp 0) in Matroska: a fifth of
    the bytes of zlib on video frames, since it predicts across frames."""
    import av  # only where a pack is written

    buf = io.BytesIO()
    with av.open(buf, "w", format="matroska") as container:
        stream = container.add_stream("libx264rgb", rate=25)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "rgb24"
        stream.options = {"qp": "0", "preset": "slow"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def decode_lossless(data: bytes, expected: tuple[int, ...]) -> np.ndarray:
    """Inverse of ``encode_lossless`` with OpenCV's FFmpeg (no PyAV needed); checks the shape."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".mkv") as tmp:
        tmp.write(data)
        tmp.flush()
        capture = cv2.VideoCapture(tmp.name, cv2.CAP_FFMPEG)
        frames = []
        while True:
            ok, bgr = capture.read()
            if not ok:
                break
            frames.append(bgr[..., ::-1])
        capture.release()
    out = np.stack(frames) if frames else np.zeros((0,), np.uint8)
    if out.shape != expected:
        raise ValueError(f"pack frames decode to {out.shape}, expected {expected}")
    return out


class FramePack:
    """The label-resolution frames a list of windows needs, each frame stored once per video and
    the frames of a video as lossless H.264: what a machine without the videos (or PyAV) needs
    to compute the labels (``--write-pack`` / ``--pack``), e.g. a GPU machine. 4096 train
    windows at short side 96 need ~6900 frames, 285 MB raw, ~61 MB packed; ``--pack-parts``
    splits a pack by video for machines that take less at a time."""

    def __init__(self, specs: list[WindowSpec], short_side: int,
                 frames: dict[str, tuple[np.ndarray, np.ndarray, int]], tag: str = "") -> None:
        self.specs = specs
        self.short_side = short_side
        self.frames = frames  # video → (frame ids, frames at label resolution, video length)
        self.tag = tag  # names this pack's chunks apart from other parts'

    @classmethod
    def build(cls, specs: list[WindowSpec], videos: dict[str, np.ndarray], short_side: int) -> FramePack:
        needed: dict[str, set[int]] = {}
        for spec in specs:
            needed.setdefault(spec.video, set()).update(window_frame_ids(spec.start, len(videos[spec.video])))
        frames = {}
        for name, id_set in needed.items():
            video = videos[name]
            ids = np.array(sorted(id_set))
            f = label_scale(video.shape[1], video.shape[2], short_side)
            frames[name] = (ids, np.stack([downscale(np.asarray(video[i]), f) for i in ids]), len(video))
        return cls(specs, short_side, frames)

    def split(self, part: int, n_parts: int) -> FramePack:
        """Videos dealt to n parts by frame bytes (largest first, to the lightest part)."""
        load = [0] * n_parts
        owner: dict[str, int] = {}
        for name in sorted(self.frames, key=lambda k: -self.frames[k][1].nbytes):
            owner[name] = k = load.index(min(load))
            load[k] += self.frames[name][1].nbytes
        keep = {name for name, k in owner.items() if k == part}
        return FramePack([s for s in self.specs if s.video in keep], self.short_side,
                         {k: v for k, v in self.frames.items() if k in keep}, tag=f"p{part}of{n_parts}")

    def save(self, path: Path) -> None:
        names = sorted(self.frames)
        arrays: dict[str, np.ndarray] = {
            "spec_video": np.array([s.video for s in self.specs]),
            "spec_start": np.array([s.start for s in self.specs]),
            "short_side": np.array(self.short_side),
            "tag": np.array(self.tag),
            "names": np.array(names),
        }
        for k, name in enumerate(names):
            ids, frames, length = self.frames[name]
            arrays[f"ids_{k}"], arrays[f"length_{k}"] = ids, np.array(length)
            arrays[f"shape_{k}"] = np.array(frames.shape)
            arrays[f"h264_{k}"] = np.frombuffer(encode_lossless(frames), np.uint8)
        np.savez(path, allow_pickle=False, **arrays)

    @classmethod
    def load(cls, path: Path) -> FramePack:
        with np.load(path) as z:
            specs = [WindowSpec(str(v), int(s)) for v, s in zip(z["spec_video"], z["spec_start"], strict=True)]
            frames = {str(name): (z[f"ids_{k}"], decode_lossless(z[f"h264_{k}"].tobytes(), tuple(z[f"shape_{k}"])),
                                  int(z[f"length_{k}"]))
                      for k, name in enumerate(z["names"])}
            return cls(specs, int(z["short_side"]), frames, str(z["tag"]))

    def window(self, spec: WindowSpec) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """As ``label_window`` on the decoded video, from the pack."""
        ids, frames, length = self.frames[spec.video]
        row = {int(i): r for r, i in enumerate(ids)}

        def at(i: int) -> np.ndarray | None:
            return frames[row[i]] if 0 <= i < length else None

        clip = np.stack([frames[row[i]] for i in range(spec.start, spec.start + CLIP_LEN)])
        return clip, at(spec.start + PREV_CONTEXT), at(spec.start + NEXT_CONTEXT)


# --------------------------------------------------------------------------- errors of 28 pairs
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
                  ) -> Callable[[np.ndarray, np.ndarray | None, np.ndarray | None], np.ndarray]:
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


# --------------------------------------------------------------------------- driver
def label_dir(split: str, reconstructor: str, short_side: int) -> Path:
    res = "native" if short_side <= 0 else f"s{short_side}"
    return LABEL_ROOT / f"{split}_{reconstructor}_{res}"


def load_labels(folder: Path) -> dict[str, np.ndarray]:
    """Concatenate the finished chunks of a label folder, in chunk order. Sharded runs may leave
    gaps while they work; every finished chunk is used (windows are keyed by video and start)."""
    paths = sorted(p for p in folder.glob("chunk_*.npz") if ".tmp" not in p.name)
    parts: list[dict[str, np.ndarray]] = []
    for path in paths:
        with np.load(path) as z:
            parts.append({key: z[key] for key in z.files})
    if not parts:
        raise FileNotFoundError(f"no label chunks in {folder}")
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


def refresh_views(folder: Path, videos: dict[str, np.ndarray], view: int) -> None:
    """(Re)compute the stored selector views of every chunk with the current ``global_view``
    (labels made before the view function changed, or from a frame pack, which has no views);
    labels themselves are untouched."""
    from framers.video import global_view

    for path in tqdm(sorted(p for p in folder.glob("chunk_*.npz") if ".tmp" not in p.name), desc="views"):
        with np.load(path) as z:
            data = {key: z[key] for key in z.files}
        data["view"] = np.stack([global_view(np.asarray(videos[str(v)][int(s):int(s) + CLIP_LEN]), view)
                                 for v, s in zip(data["video"], data["start"], strict=True)])
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez(tmp, **data)
        tmp.replace(path)
    for stale in folder.glob("tokens_*"):
        stale.unlink()  # encoder features of the old views


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=["train", "val"], default="train")
    parser.add_argument("--reconstructor", default="linear", help="linear | framemae | hold")
    parser.add_argument("--n", type=int, default=4000, help="train windows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-video", type=int, default=8, help="val clips per video")
    parser.add_argument("--max-frames", type=int, default=360, help="val: frames decoded per video")
    parser.add_argument("--short-side", type=int, default=144,
                        help="label resolution: integer area-downscale to about this short side (0 = native)")
    parser.add_argument("--view", type=int, default=64, help="side of the stored selector input view")
    parser.add_argument("--chunk", type=int, default=64)
    parser.add_argument("--limit-chunks", type=int, default=0, help="stop after this many chunks (0 = all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--refresh-views", action="store_true",
                        help="recompute the stored views of an existing label folder with the current global_view")
    parser.add_argument("--engine", choices=["onnx", "torch"], default="onnx",
                        help="framemae: the network on onnxruntime (exactly the codec) or torch (--device, --bf16)")
    parser.add_argument("--shard", default="0/1", help="i/n: this process does chunks c with c %% n == i")
    parser.add_argument("--device", default="cpu", help="torch engine: cpu | cuda")
    parser.add_argument("--bf16", action="store_true",
                        help="torch engine: bf16 autocast (fast only on CPUs with bf16 units, e.g. AMX)")
    parser.add_argument("--write-pack", type=Path, help="write the windows' label-resolution frames here and stop")
    parser.add_argument("--pack-parts", type=int, default=1, help="with --write-pack: this many files, split by video")
    parser.add_argument("--pack", type=Path, help="take windows and frames from a pack (no videos needed)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args()

    cv2.setNumThreads(args.threads)
    try:
        import torch

        torch.set_num_threads(args.threads)
    except ImportError:
        pass
    shard, n_shards = (int(v) for v in args.shard.split("/"))
    out = label_dir(args.split, args.reconstructor, args.short_side)
    out.mkdir(parents=True, exist_ok=True)
    pack: FramePack | None = None
    videos: dict[str, np.ndarray] = {}
    if args.pack:
        pack = FramePack.load(args.pack)
        if pack.short_side != args.short_side:
            raise SystemExit(f"{args.pack} holds short side {pack.short_side}, not {args.short_side}")
        specs = pack.specs
    elif args.split == "train":
        specs, videos = train_windows(args.n, args.seed)
    else:
        specs, videos = val_windows(args.per_video, args.max_frames)
    prefix = f"chunk_{pack.tag}_" if pack is not None and pack.tag else "chunk_"
    if args.write_pack:
        whole = FramePack.build(specs, videos, args.short_side)
        n_parts = args.pack_parts
        for k in range(n_parts):
            piece = whole.split(k, n_parts) if n_parts > 1 else whole
            path = args.write_pack
            if piece.tag:
                path = path.with_name(f"{path.stem}_{piece.tag}.npz")
            piece.save(path)
            print(f"{path}: {len(piece.specs)} windows, {path.stat().st_size / 1e6:.1f} MB")
        return
    if args.refresh_views:
        refresh_views(out, videos, args.view)
        return
    n_chunks = -(-len(specs) // args.chunk)
    if args.limit_chunks:
        n_chunks = min(n_chunks, args.limit_chunks)
    meta = {"split": args.split, "reconstructor": args.reconstructor, "short_side": args.short_side,
            "view": args.view, "seed": args.seed, "windows": len(specs), "chunk": args.chunk,
            "context": "uniform kept frames of the neighbouring clips (start-5, start+18)",
            "per_video": args.per_video, "max_frames": args.max_frames, "engine": args.engine,
            "device": args.device, "bf16": args.bf16, "from_pack": bool(args.pack),
            "view_fn": "framers.video.global_view (two-step area resize)"}
    if shard == 0:
        (out / "meta.json").write_text(json.dumps(meta, indent=1))
    error_fn = make_error_fn(args.reconstructor, args.engine, args.device, args.bf16)
    todo = [c for c in range(n_chunks) if c % n_shards == shard and not (out / f"{prefix}{c:04d}.npz").exists()]
    bar = tqdm(total=len(todo) * args.chunk, unit="clip",
               desc=f"labels {args.split}/{args.reconstructor}", disable=args.quiet)
    started = time.time()
    for c in todo:
        part = specs[c * args.chunk:(c + 1) * args.chunk]
        mse = np.zeros((len(part), N_PAIRS, CLIP_LEN), np.float32)
        chunk: dict[str, np.ndarray] = {}
        if pack is None:  # a pack has no native frames: views come later (--refresh-views)
            from framers.video import global_view

            chunk["view"] = np.stack([global_view(np.asarray(videos[s.video][s.start:s.start + CLIP_LEN]), args.view)
                                      for s in part])
        for i, spec in enumerate(part):
            frames, prev, nxt = (pack.window(spec) if pack is not None
                                 else label_window(videos[spec.video], spec.start, args.short_side))
            mse[i] = error_fn(frames, prev, nxt)
            bar.update(1)
        tmp = out / f"{prefix}{c:04d}.tmp.npz"
        np.savez(tmp, mse=mse, start=np.array([s.start for s in part]),
                 video=np.array([s.video for s in part]), allow_pickle=False, **chunk)
        tmp.replace(out / f"{prefix}{c:04d}.npz")
    bar.close()
    print(f"{out}: {n_chunks} chunks, {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
