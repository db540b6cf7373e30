"""Chunk significance (issue 15): how badly each chunk of a video is rebuilt when it is not kept.

A chunk is ``CHUNK_FRAMES`` consecutive frames × ``CHUNK_PX``×``CHUNK_PX`` pixels (CARV's unit:
2 frames × 16×16; Chhabra & Yang, "CARV", Sec. 3). Its value is the mean squared error of the
rebuilt pixels against the source (RGB, 0-255 levels, so 0 = perfect and 65025 = worst; PSNR of
a chunk = 10·log10(255² / value)). Two estimates:

* ``exact``: the encoder's own error map. The video is compressed as ``framers compress`` would
  (same options) and rebuilt exactly as the decoder will; the value is the true error of the
  output, kept frames included (their coding error). What a refresh layer would spend bytes on.
* ``masked``: CARV's significance — the mean reconstruction loss of a chunk over random
  high-ratio masks. FrameMAE rebuilds whole frames from kept ones (it is a frame interpolator, not
  a patch in-painter), so a mask hides whole frames: each sample keeps the first and last frame and
  each other frame with probability ``1 - hide`` (at most ``max_gap`` frames apart), rebuilds the
  rest from the *source* frames (no coding), and a chunk's value is its mean error over the samples
  that hid it. It measures how predictable a region is from its neighbours in time, independent of
  the kept-frame CRF. CARV samples 500 masks at 95-98 %; ``bench/significance.py`` measures how
  few samples keep the same ranking.

Pure numerics here plus the two drivers; the heatmap PNG is drawn with matplotlib (Agg).
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CHUNK_FRAMES = 2
CHUNK_PX = 16
#: at most this many chunk values per map (~7 MB of JSON, 8 MB while accumulating): a longer or
#: larger video gets chunks of more frames (``chunk_frames_for``), never an unbounded map
MAX_VALUES = 1_000_000


def chunk_frames_for(n_frames: int, height: int, width: int, max_values: int = MAX_VALUES) -> int:
    """Frames per chunk for a map of a ``n_frames``-frame video of ``height``×``width`` pixels:
    ``CHUNK_FRAMES`` (CARV's 2), or a multiple of it so the map holds at most ``max_values`` values."""
    cells = -(-height // CHUNK_PX) * -(-width // CHUNK_PX)
    planes_allowed = max(1, max_values // max(1, cells))
    planes = -(-n_frames // CHUNK_FRAMES)
    factor = -(-planes // planes_allowed)
    return CHUNK_FRAMES * max(1, factor)


def frame_error(source: np.ndarray, rebuilt: np.ndarray) -> np.ndarray:
    """Per-pixel squared error averaged over the RGB channels: float32 [H, W] from two uint8
    [H, W, 3] frames of the same shape (ValueError otherwise)."""
    if source.shape != rebuilt.shape:
        raise ValueError(f"frame shapes differ: {source.shape} vs {rebuilt.shape}")
    diff = source.astype(np.float32) - rebuilt.astype(np.float32)
    return np.mean(diff * diff, axis=2)


def pool_pixels(error: np.ndarray, size: int = CHUNK_PX) -> np.ndarray:
    """Mean of ``error`` (float [H, W]) over ``size``×``size`` blocks: float64 [ceil(H/size),
    ceil(W/size)]; blocks cut by the right/bottom edge average the pixels they hold."""
    h, w = error.shape
    rows, cols = np.arange(0, h, size), np.arange(0, w, size)
    sums = np.add.reduceat(np.add.reduceat(error.astype(np.float64), rows, axis=0), cols, axis=1)
    counts = np.outer(np.diff(np.append(rows, h)), np.diff(np.append(cols, w)))
    return sums / counts


@dataclass
class ChunkAccumulator:
    """Sums per-frame block errors into chunks of ``frames`` frames; frames may arrive with a
    weight of 0 (not measured: a kept frame in a ``masked`` sample) and several times (samples).

    ``result()``: float32 [ceil(T/frames), rows, cols], the weighted mean per chunk; NaN where no
    frame of the chunk was measured."""

    frames: int = CHUNK_FRAMES
    size: int = CHUNK_PX
    _sums: dict[int, np.ndarray] = field(default_factory=dict)
    _weights: dict[int, float] = field(default_factory=dict)
    _n_frames: int = 0
    #: (height, width) of the frames added, pixels
    pixel_shape: tuple[int, int] = (0, 0)

    def add(self, index: int, error: np.ndarray, weight: float = 1.0) -> None:
        """Add frame ``index``'s per-pixel error (float [H, W]) with ``weight``."""
        self._n_frames = max(self._n_frames, index + 1)
        self.pixel_shape = (int(error.shape[0]), int(error.shape[1]))
        chunk = index // self.frames
        if weight <= 0:
            self._weights.setdefault(chunk, 0.0)
            return
        pooled = pool_pixels(error, self.size) * weight
        if chunk in self._sums:
            self._sums[chunk] += pooled
        else:
            self._sums[chunk] = pooled
        self._weights[chunk] = self._weights.get(chunk, 0.0) + weight

    def result(self) -> np.ndarray:
        if not self._sums:
            raise ValueError("no frame was measured")
        shape = next(iter(self._sums.values())).shape
        n_chunks = -(-self._n_frames // self.frames)
        out = np.full((n_chunks, *shape), np.nan, np.float32)
        for chunk, total in self._sums.items():
            out[chunk] = total / self._weights[chunk]
        return out


def random_keep_patterns(n_frames: int, samples: int, hide: float, max_gap: int,
                         seed: int = 0) -> list[list[int]]:
    """``samples`` random kept-frame index lists for a ``masked`` estimate: each keeps frames 0 and
    ``n_frames - 1`` and every other frame with probability ``1 - hide``, then adds frames so no two
    kept ones are more than ``max_gap`` apart. ValueError for hide outside [0, 1) or max_gap < 1."""
    if not 0.0 <= hide < 1.0 or max_gap < 1:
        raise ValueError(f"hide must be in [0, 1) and max_gap >= 1 (got {hide}, {max_gap})")
    rng = np.random.default_rng(seed)
    patterns = []
    for _ in range(samples):
        keep = rng.random(n_frames) >= hide
        keep[0] = keep[-1] = True
        kept = np.flatnonzero(keep).tolist()
        filled = [kept[0]]
        for nxt in kept[1:]:
            while nxt - filled[-1] > max_gap:
                filled.append(filled[-1] + max_gap)
            filled.append(nxt)
        patterns.append(filled)
    return patterns


def summarize(values: np.ndarray) -> dict[str, Any]:
    """Mean, median, 95th percentile and maximum of the measured chunks (MSE), the share of chunks
    under 30 dB, and the PSNR of the mean MSE."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"chunks": 0}
    mean = float(finite.mean())
    return {
        "chunks": int(finite.size),
        "mean_mse": round(mean, 3),
        "median_mse": round(float(np.median(finite)), 3),
        "p95_mse": round(float(np.percentile(finite, 95)), 3),
        "max_mse": round(float(finite.max()), 3),
        "share_below_30db": round(float(np.mean(finite > 255.0**2 / 10**3)), 4),
        "psnr_of_mean_mse_db": round(10 * np.log10(255.0**2 / mean), 3) if mean > 0 else None,
    }


# -- drivers (video I/O at the edge) ---------------------------------------------------------------
@dataclass
class Significance:
    """A significance map: ``values`` float32 [chunks in time, rows, columns] (MSE, NaN where not
    measured), the settings that made it and the kept frames (``exact``) or sample count."""

    video: str
    method: str
    values: np.ndarray
    frames: int
    width: int
    height: int
    settings: dict[str, Any]
    #: frames per chunk: CHUNK_FRAMES, more for a long video (``chunk_frames_for``)
    chunk_frames: int = CHUNK_FRAMES

    def to_json(self) -> dict[str, Any]:
        t, rows, cols = self.values.shape
        rounded = np.round(self.values.astype(np.float64), 2)
        return {
            "video": self.video, "method": self.method, "frames": self.frames,
            "width": self.width, "height": self.height,
            "chunk": {"frames": self.chunk_frames, "height": CHUNK_PX, "width": CHUNK_PX},
            "shape": [t, rows, cols],
            "unit": "mean squared error per chunk, RGB, 0-255 levels (null: not measured)",
            "settings": self.settings,
            "summary": summarize(self.values),
            "values": [[[None if np.isnan(v) else float(v) for v in row] for row in plane] for plane in rounded],
        }


def source_frames(video: Path, limit: int | None) -> Iterator[np.ndarray]:
    """The decoded frames of ``video`` as ``FrameReader`` gives them to compress (uint8 [H, W, 3],
    display orientation), the first ``limit`` only when given."""
    from framers.video import FrameReader

    with FrameReader(video) as reader:
        for i, frame in enumerate(reader.frames()):
            if limit is not None and i >= limit:
                return
            yield frame.rgb


def exact_significance(video: Path, *, max_frames: int | None = None, reconstructor: str = "framemae",
                       workdir: Path | None = None, **compress_options: Any) -> Significance:
    """The encoder's error map: compress ``video`` (``pipeline.compress`` keyword options; its
    first ``max_frames`` frames when given, cut losslessly first) and measure the frames the
    decoder rebuilds against the source, per chunk. Raises what compress/reconstruct raise."""
    from framers import bundle as fb
    from framers.h264_reference import write_trimmed
    from framers.pipeline import compress, iter_reconstructed
    from framers.registry import get_reconstructor

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        source = Path(video)
        if max_frames is not None:
            source = Path(tmp) / "cut.mkv"
            write_trimmed(Path(video), max_frames, source)
        result = compress(source, Path(tmp) / "bundle", **compress_options)
        manifest = fb.read_manifest(Path(tmp) / "bundle")
        span = chunk_frames_for(manifest.n_frames, int(manifest.source["height"]), int(manifest.source["width"]))
        acc = ChunkAccumulator(frames=span)
        rebuilt = iter_reconstructed(Path(tmp) / "bundle", manifest, get_reconstructor(reconstructor))
        for i, (src, out) in enumerate(zip(source_frames(source, None), rebuilt, strict=True)):
            acc.add(i, frame_error(src, out))
        settings = {"compress": {k: v for k, v in compress_options.items() if v is not None},
                    "reconstructor": reconstructor, "kept": manifest.kept_indices(),
                    "bundle_bytes": result.bundle_bytes}
        return Significance(Path(video).name, "exact", acc.result(), manifest.n_frames, acc.pixel_shape[1],
                            acc.pixel_shape[0], settings, span)


def masked_significance(video: Path, *, max_frames: int = 64, samples: int = 8, hide: float = 0.75,
                        max_gap: int = 16, seed: int = 0, reconstructor: str = "framemae") -> Significance:
    """CARV-style significance of the first ``max_frames`` frames: mean per-chunk error over
    ``samples`` random whole-frame masks (``random_keep_patterns``), rebuilt from the uncoded source
    frames. Holds those frames in memory (480p, 64 frames: ~60 MB). ValueError for an empty video,
    ``samples`` or ``max_frames`` < 1, or ``hide`` outside [0, 1)."""
    from framers.geometry import CLIP_LEN
    from framers.reconstructors.base import KeptFrame
    from framers.registry import get_reconstructor

    if samples < 1 or max_frames < 1:
        raise ValueError(f"need at least one mask and one frame (got samples={samples}, frames={max_frames})")
    if not 0.0 <= hide < 1.0:
        raise ValueError(f"the share of frames a mask hides must be in [0, 1) (got {hide})")
    frames = list(source_frames(Path(video), max_frames))
    if not frames:
        raise ValueError(f"{video}: no frames")
    rebuilder = get_reconstructor(reconstructor)
    acc = ChunkAccumulator()
    patterns = random_keep_patterns(len(frames), samples, hide, max_gap, seed)
    for kept in patterns:
        kept_set = set(kept)
        rebuilt = rebuilder.reconstruct([KeptFrame(i, frames[i]) for i in kept], len(frames), CLIP_LEN)
        for i, out in enumerate(rebuilt):
            acc.add(i, frame_error(frames[i], out), 0.0 if i in kept_set else 1.0)
    h, w = frames[0].shape[:2]
    settings = {"samples": samples, "hide": hide, "max_gap": max_gap, "seed": seed, "reconstructor": reconstructor,
                "hidden_share": round(1 - sum(map(len, patterns)) / (len(patterns) * len(frames)), 4)}
    return Significance(Path(video).name, "masked", acc.result(), len(frames), w, h, settings)


def heatmap_png(significance: Significance, path: Path, frames: Iterable[np.ndarray] | None = None,
                panels: int = 6) -> Path:
    """Draw ``panels`` evenly spaced chunk planes as heatmaps (PSNR per chunk, dB, 15-50 scale,
    red = poorly rebuilt) over the source frame when ``frames`` (uint8 [H, W, 3], in order) is
    given, plus the time-mean map; write a PNG at ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = significance.values
    n = values.shape[0]
    chosen = sorted({int(np.rint(k)) for k in np.linspace(0, n - 1, min(panels, n))})
    span = significance.chunk_frames
    wanted = {c * span for c in chosen}
    backdrop: dict[int, np.ndarray] = {}
    if frames is not None:
        for i, picture in enumerate(frames):
            if i in wanted:
                backdrop[i] = picture
            if i >= max(wanted):
                break
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a chunk column never measured: NaN, drawn blank
        psnr = np.minimum(10 * np.log10(255.0**2 / values), 60.0)
        mean_psnr = np.minimum(10 * np.log10(255.0**2 / np.nanmean(values, axis=0)), 60.0)
    cols = len(chosen) + 1
    aspect = significance.height / max(1, significance.width)
    fig, axes = plt.subplots(1, cols, figsize=(2.4 * cols + 0.8, 2.4 * aspect + 0.7), dpi=110, squeeze=False,
                             layout="constrained")
    extent = (0, significance.width, significance.height, 0)
    image = None
    for ax, chunk in zip(axes[0], chosen, strict=False):
        frame = backdrop.get(chunk * span)
        if frame is not None:
            ax.imshow(frame, extent=extent)
        image = ax.imshow(psnr[chunk], cmap="RdYlGn", vmin=15, vmax=50, alpha=0.55 if frame is not None else 1.0,
                          extent=extent, interpolation="nearest")
        ax.set_title(f"frames {chunk * span}-{min(significance.frames, chunk * span + span) - 1}", fontsize=8)
        ax.axis("off")
    axes[0][-1].imshow(mean_psnr, cmap="RdYlGn", vmin=15, vmax=50, extent=extent, interpolation="nearest")
    axes[0][-1].set_title("mean over time (PSNR of mean MSE)", fontsize=8)
    axes[0][-1].axis("off")
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="chunk PSNR (dB)")
    fig.suptitle(f"{significance.video}: {significance.method} significance "
                 f"({span} frames × {CHUNK_PX}×{CHUNK_PX} px chunks)", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def ranking_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two significance maps of the same shape over the chunks both
    measured (scipy.stats.spearmanr); NaN when fewer than 3 chunks are shared."""
    from scipy.stats import spearmanr

    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 3:
        return float("nan")
    return float(spearmanr(a[both], b[both]).statistic)

