"""Windows and frames for the selector's labels: which 16-frame windows are labelled (train:
random windows of the cached train clips; val: the codec's clip grid), their frames at label
resolution with the ``uniform`` context frames of the neighbouring clips, and frame packs (the
frames a machine without the videos needs). See ``training.labels`` for the whole procedure.

Nothing here imports framers.video (and so PyAV) at module level: label errors also run on
machines that have only the frame pack (``--write-pack`` / ``--pack``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from framers.geometry import CLIP_LEN
from training.paths import CACHE_ROOT, DATA_ROOT

PREV_CONTEXT = -5  # last kept frame of the previous clip under uniform (1, 5): frame 11 - 16
NEXT_CONTEXT = CLIP_LEN + 2  # first kept frame of the next clip under uniform: frame 2 + 16


@dataclass(frozen=True)
class WindowSpec:
    """A labelled window: the video's name and the window's first frame."""

    video: str
    start: int


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
