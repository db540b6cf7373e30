"""The candidate map: per block of every rebuilt frame, which of ``framemae``'s mixes the decoder uses.

``framemae`` rebuilds a dropped frame by mixing three candidates (``framers.motion.CANDIDATES``:
``linear`` and the two flow warps) with weights its network computes at a low resolution. The
network mixes about as well as the single best candidate of the whole frame, 3 dB below a
per-pixel oracle (BENCHMARKS.md section 2c). The encoder has the source: for every block of
about ``BLOCK_PX`` pixels it measures the network's mix and each fixed weighting of the
candidates in ``CODEBOOK`` (each candidate alone, the two warps' mean) against the source, and
where one is closer by more than it costs to say so, it signals it. The decoder then sets the
block's mixing weights to that weighting before the weights are upscaled, so the choice goes
through the same composition as the network's own weights (numpy or the ONNX graph), with the
bilinear upscaling's soft block edges.

This is decoder-side interpolation with an encoder-signalled mode per block, as codecs signal a
prediction mode: the candidates cost nothing to send (the decoder derives them from the kept
frames), the choice a few bits. The choice is made with the kept frames' x264 rate-distortion
trade-off (``lagrangian``: a switch is signalled where it gains more than ``SWITCH_BITS`` bits
would at λ).

Blocks are whole cells of the network's weight grid (``cell_size``: ``round(BLOCK_PX /
net_scale)`` weight pixels a side), so a block is 11–18 px from 240p to 1080p (18 at 576p, 22 at
4K). One map per dropped frame, in frame order (all zeros where the frame is not mixed: held
frames, frames the flow gate hands to ``linear``), coded by an adaptive range coder
(``constriction``) with the same cell of the previous map as context (``contexts``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np

from framers import motion

#: the block side the cells approximate, pixels: at equal bytes against the same bundles without a
#: map, 6 train clips at every 4th frame kept (48 frames, CRF 18–36; nineteenth session, BENCHMARKS
#: 2f) gained +0.56 dB with 32 px, +0.65 with 24, +0.73 with 16 and +0.70 with 8 (the map then 1.7,
#: 3.0, 5.9 and 14.9 % of the bytes). A bundle's manifest names its own cell, so 32-px maps read.
BLOCK_PX = 16
#: choice 0: the network's mix; choice k > 0: the weights ``CODEBOOK[k − 1]`` over the candidates
MIX = 0
#: the fixed weights a block can be given instead of the network's: each candidate alone (a flow
#: warp where it holds, ``linear`` where no flow does), and the two warps' mean (where both hold,
#: their mean halves the noise of either); float32 [N_CHOICES − 1, K]
CODEBOOK = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.5, 0.5]], np.float32)
N_CHOICES = 1 + len(CODEBOOK)
#: the codebook of a manifest that names none (the first v7 encoder's: each candidate alone)
ONE_HOT_CODEBOOK = CODEBOOK[: motion.N_CANDIDATES]
#: bits a block's switch away from the mix is priced at in the decision (a rare symbol of the
#: adaptive coder: −log2 of its share)
SWITCH_BITS = 8.0
#: the coder's starting count of the mix in every context (1 for each candidate): maps of static
#: video are nearly all mix, and a uniform start cost them ~2 bits a block while the counts learn
MIX_PRIOR = 16.0


@dataclass(frozen=True)
class MapLayout:
    """What a reader needs from the manifest's ``candidate_map`` entry: the grid (rows × cols of
    cells of ``cell`` weight pixels), the number of maps, the codebook float32 [N, K]."""

    rows: int
    cols: int
    cell: int
    maps: int
    codebook: np.ndarray

    @classmethod
    def from_entry(cls, entry: dict[str, Any], file_name: str) -> MapLayout:
        """The layout of a manifest entry; ValueError naming the field that is missing or wrong
        (the manifest carries no checksum of its own: a hand-edited one must fail clearly)."""
        if not isinstance(entry, dict):
            raise ValueError(f"expected an object, got {type(entry).__name__}")
        if entry.get("file", file_name) != file_name:
            raise ValueError(f"file must be {file_name}, not {entry.get('file')!r}")
        values = {}
        for name, low in (("rows", 1), ("cols", 1), ("cell", 1), ("maps", 0)):
            value = entry.get(name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer ≥ {low}, not {value!r}")
            values[name] = value
        raw = entry.get("codebook", ONE_HOT_CODEBOOK.tolist())
        try:
            codebook = np.asarray(raw, np.float32)
        except (TypeError, ValueError):
            raise ValueError(f"codebook must be a list of weight lists, not {raw!r}"[:200]) from None
        if codebook.ndim != 2 or codebook.shape[1] != motion.N_CANDIDATES or not 1 <= len(codebook) < 255 \
                or not np.all(np.isfinite(codebook)):
            raise ValueError(f"codebook must hold 1–254 lists of {motion.N_CANDIDATES} finite weights, "
                             f"not shape {codebook.shape}")
        return cls(codebook=codebook, **values)


def cell_size(height: int, width: int) -> int:
    """Weight-grid pixels per block side for frames of ``height`` × ``width`` pixels."""
    return max(1, round(BLOCK_PX / motion.net_scale(height, width)))


def grid_shape(net_height: int, net_width: int, cell: int) -> tuple[int, int]:
    """(rows, cols) of the map over a weight grid of ``net_height`` × ``net_width``."""
    return -(-net_height // cell), -(-net_width // cell)


def lagrangian(kept_squared_error: float, kept_bits: float) -> float:
    """λ = −dD/dR of the kept frames' coding, squared error (RGB, summed) per bit: 2·D/R, the
    high-rate approximation of a quantiser whose error D grows as 2^(QP/3) while its rate R halves
    every 6 QP (H.264's quantiser step doubles every 6 QP). ``kept_squared_error``: the kept
    frames' coding error summed over their pixels and channels; ``kept_bits``: their stream's bits
    (> 0; 0 gives λ = 0, every gain switches). A map's bits spent where a block gains more than
    λ per bit buy more than the same bits would on the kept frames."""
    return 2.0 * kept_squared_error / kept_bits if kept_bits > 0 else 0.0


def cell_errors(squared_error: np.ndarray, net_shape: tuple[int, int], cell: int) -> np.ndarray:
    """Sum of ``squared_error`` (float32 [H, W], per pixel, summed over RGB) over each block:
    float64 [rows, cols]. A block is ``cell`` × ``cell`` weight pixels; each weight pixel covers
    H / h × W / w frame pixels of a ``net_shape`` = (h, w) grid (area resampling)."""
    height, width = squared_error.shape
    h, w = net_shape
    area = cv2.resize(np.ascontiguousarray(squared_error, np.float32), (w, h), interpolation=cv2.INTER_AREA)
    area = area.astype(np.float64) * (height * width / (h * w))
    rows, cols = grid_shape(h, w, cell)
    padded = np.zeros((rows * cell, cols * cell))
    padded[:h, :w] = area
    return padded.reshape(rows, cell, cols, cell).sum(axis=(1, 3))


def choose(errors: np.ndarray, gain_needed: float) -> np.ndarray:
    """The choice of each block, uint8 [rows, cols], from its errors float [N_CHOICES, rows, cols]
    (choice 0 the mix): the choice with the least error where it beats the mix's by more than
    ``gain_needed``, else ``MIX``."""
    best = errors.argmin(axis=0)
    gain = errors[MIX] - errors.min(axis=0)
    return np.where(gain > gain_needed, best, MIX).astype(np.uint8)


def apply_choices(weights: np.ndarray, choice: np.ndarray, cell: int, codebook: np.ndarray = CODEBOOK) -> np.ndarray:
    """The mixing weights float32 [K, h, w] with every block whose ``choice`` (uint8 [rows, cols])
    is k > 0 set to ``codebook[k − 1]`` (float [N, K]); a new array. ValueError when the map does
    not fit the grid or the codebook."""
    k, h, w = weights.shape
    if choice.shape != grid_shape(h, w, cell) or int(choice.max(initial=0)) > len(codebook) \
            or codebook.shape[1:] != (k,):
        raise ValueError(f"candidate map {choice.shape} (max {int(choice.max(initial=0))}) does not fit weights "
                         f"{weights.shape} in cells of {cell} with a codebook of {codebook.shape}")
    full = np.repeat(np.repeat(choice, cell, axis=0), cell, axis=1)[:h, :w]
    out = weights.copy()
    chosen = full > MIX
    if chosen.any():
        out[:, chosen] = codebook[full[chosen] - 1].T.astype(weights.dtype)  # [K, m]
    return out


def codebook_images(candidates: Sequence[np.ndarray], codebook: np.ndarray = CODEBOOK) -> list[np.ndarray]:
    """What each codebook entry makes of a frame's candidates (K float32 [H, W, 3]): one image per
    entry, float32 [H, W, 3] (a one-hot entry is its candidate itself, not a copy)."""
    images = []
    for entry in codebook:
        nonzero = [int(k) for k in np.flatnonzero(entry)]
        if len(nonzero) == 1 and entry[nonzero[0]] == 1.0:
            images.append(candidates[nonzero[0]])
            continue
        total = np.zeros_like(candidates[0])
        for k in nonzero:
            cv2.scaleAdd(candidates[k], float(entry[k]), total, dst=total)
        images.append(total)
    return images


def _add_squared_error(image: np.ndarray, target: np.ndarray, diff: np.ndarray, out: np.ndarray) -> None:
    """``out`` (float32 [n, W]) = Σ_RGB (image − target)² of a band (float32 [n, W, 3] each);
    ``diff`` a scratch band of the same shape."""
    cv2.subtract(image, target, dst=diff)
    cv2.multiply(diff, diff, dst=diff)
    out[...] = np.asarray(cv2.transform(diff, _RGB_SUM)).reshape(out.shape)


_RGB_SUM = np.ones((1, 3), np.float32)
#: rows of a band of ``block_errors``: its float32 RGB intermediates (~0.7 MB at 1080p) stay in the
#: CPU cache; whole-frame passes (25 MB per 1080p float32 RGB image, each allocation paying page
#: faults) were ~40 % of the map's encoder pass at 1080p (``bench/compress_speed.py --candidate-map``)
BAND_ROWS = 32


def block_errors(weights: np.ndarray, candidates: Sequence[np.ndarray], truth: np.ndarray,
                 net_shape: tuple[int, int], cell: int, codebook: np.ndarray = CODEBOOK) -> np.ndarray:
    """Squared error per block (RGB, summed; float64 [1 + N, rows, cols], ``cell_errors``) against
    the source ``truth`` (uint8 [H, W, 3]) of (0) the network's mix: the candidates (K float32
    [H, W, 3], ``motion.CANDIDATES`` order) mixed by its low-resolution weights (float32 [K, h, w],
    a softmax) upscaled bilinearly, as ``motion.WindowFlows.interpolate`` mixes them before its
    rounding (two ``cv2.blendLinear`` passes: within ~0.003 gray levels of Σ w_k·c_k), and (k) each
    of the N ``codebook`` entries' weighting of them (``codebook_images``). Computed in bands of
    ``BAND_ROWS`` rows."""
    height, width = truth.shape[:2]
    w1, w2 = (np.asarray(cv2.resize(np.ascontiguousarray(weights[k], np.float32), (width, height),
                                    interpolation=cv2.INTER_LINEAR)) for k in (1, 2))
    share = np.asarray(cv2.add(w1, w2))
    w0 = np.subtract(np.float32(1.0), share)
    pixel_errors = np.empty((1 + len(codebook), height, width), np.float32)
    rows = min(BAND_ROWS, height)
    target, image, diff = (np.empty((rows, width, 3), np.float32) for _ in range(3))
    for y0 in range(0, height, rows):
        y1 = min(height, y0 + rows)
        n, band = y1 - y0, slice(y0, y1)
        t_, i_, d_ = target[:n], image[:n], diff[:n]
        np.copyto(t_, truth[band], casting="unsafe")
        c = [np.asarray(candidate[band], np.float32) for candidate in candidates]
        cv2.blendLinear(c[1], c[2], w1[band], w2[band], dst=i_)  # the warps' share, then linear's
        cv2.blendLinear(c[0], i_, w0[band], share[band], dst=i_)
        _add_squared_error(i_, t_, d_, pixel_errors[0, band])
        for k, entry_image in enumerate(codebook_images(c, codebook)):
            _add_squared_error(entry_image, t_, d_, pixel_errors[1 + k, band])
    return np.stack([cell_errors(e, net_shape, cell) for e in pixel_errors])


def choose_blocks(weights: np.ndarray, candidates: Sequence[np.ndarray], truth: np.ndarray,
                  net_shape: tuple[int, int], cell: int, gain_needed: float,
                  codebook: np.ndarray = CODEBOOK) -> np.ndarray:
    """One frame's map, uint8 [rows, cols] (``choose``) from ``block_errors`` of the network's
    mix (its ``weights`` float32 [K, h, w]) and each ``codebook`` entry's image of the frame's
    ``candidates`` (K float32 [H, W, 3]) against the source ``truth`` (uint8 [H, W, 3])."""
    return choose(block_errors(weights, candidates, truth, net_shape, cell, codebook), gain_needed)


def contexts(previous: np.ndarray, n_choices: int = N_CHOICES) -> np.ndarray:
    """Context index (int64 [rows, cols], 0 … 2·n_choices − 1) of every block, from the previous
    map (uint8 [rows, cols]; all ``MIX`` before the first): its choice there, plus ``n_choices``
    when any block of its 3×3 neighbourhood there left the mix."""
    near = cv2.dilate((previous != MIX).astype(np.uint8), np.ones((3, 3), np.uint8),
                      borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return previous.astype(np.int64) + n_choices * np.asarray(near, np.int64)


class _Counts:
    """Per-context symbol counts, the same on both sides: from ``MIX_PRIOR`` for the mix and 1 for
    each candidate (most blocks of most frames keep the mix)."""

    def __init__(self, n_choices: int) -> None:
        self.counts = np.ones((2 * n_choices, n_choices))
        self.counts[:, MIX] = MIX_PRIOR

    def probabilities(self, ctx: np.ndarray) -> np.ndarray:
        p = self.counts / self.counts.sum(axis=1, keepdims=True)
        return np.ascontiguousarray(p[ctx.ravel()])

    def update(self, ctx: np.ndarray, choice: np.ndarray) -> None:
        np.add.at(self.counts, (ctx.ravel(), choice.ravel().astype(np.int64)), 1.0)


def _categorical() -> Any:
    import constriction

    return constriction.stream.model.Categorical(perfect=False)


class CandidateMapWriter:
    """Writes candidate maps (uint8 [rows, cols], values < ``n_choices``, one per dropped frame, in
    frame order) to ``path`` as one range code. ``close`` writes the file, returns its bytes."""

    def __init__(self, path: Path, n_choices: int = N_CHOICES) -> None:
        import constriction

        self.n_choices = n_choices
        self.path = Path(path)
        self._file: BinaryIO = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        self._encoder = constriction.stream.queue.RangeEncoder()
        self._model = _categorical()
        self._counts = _Counts(n_choices)
        self._previous: np.ndarray | None = None
        self.count = 0
        self.switched = 0

    def write(self, choice: np.ndarray) -> None:
        """Code one frame's map. ValueError for another shape than the first's or a bad value."""
        choice = np.asarray(choice, np.uint8)
        previous = np.zeros_like(choice) if self._previous is None else self._previous
        if previous.shape != choice.shape or int(choice.max(initial=0)) >= self.n_choices:
            raise ValueError(f"candidate map {choice.shape} after {previous.shape}, max {int(choice.max(initial=0))}")
        ctx = contexts(previous, self.n_choices)
        self._encoder.encode(choice.ravel().astype(np.int32), self._model, self._counts.probabilities(ctx))
        self._counts.update(ctx, choice)
        self._previous = choice
        self.count += 1
        self.switched += int(np.count_nonzero(choice))

    def close(self) -> int:
        try:
            self._file.write(self._encoder.get_compressed().astype("<u4").tobytes())
        finally:
            self._file.close()
        return self.path.stat().st_size


def iter_candidate_maps(path: Path, rows: int, cols: int, expected: int,
                        n_choices: int = N_CHOICES) -> Iterator[np.ndarray]:
    """The maps a ``CandidateMapWriter`` of ``n_choices`` wrote, uint8 [rows, cols] each, in order.
    ValueError when the file is not such a code or holds another number than ``expected``."""
    import constriction

    data = Path(path).read_bytes()
    if len(data) % 4 or (expected and not data):
        raise ValueError(f"candidate map is not a range code of {expected} maps: {len(data)} bytes")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
    model = _categorical()
    counts = _Counts(n_choices)
    previous = np.zeros((rows, cols), np.uint8)
    for _ in range(expected):
        ctx = contexts(previous, n_choices)
        try:
            choice = np.asarray(decoder.decode(model, counts.probabilities(ctx)), np.uint8).reshape(rows, cols)
        except (AssertionError, ValueError, RuntimeError) as exc:  # constriction's word on invalid data
            raise ValueError(f"candidate map is not a valid range code: {exc}") from exc
        counts.update(ctx, choice)
        previous = choice
        yield choice
    if not decoder.maybe_exhausted():
        raise ValueError(f"candidate map does not end after {expected} maps (damaged, or more maps)")


class ChoiceReader:
    """The decoder's side: the maps of a bundle, taken by frame index in increasing order (one map
    per frame not in ``kept``, of ``n_frames``), and applied to a frame's mixing weights
    (``apply``). Windows are prepared in order on one thread, so the maps are read in one pass."""

    def __init__(self, maps: Iterator[np.ndarray], kept: set[int], n_frames: int, cell: int,
                 codebook: np.ndarray = CODEBOOK) -> None:
        self.cell = cell
        self.codebook = codebook
        self._maps = maps
        self._dropped = (i for i in range(n_frames) if i not in kept)
        self.taken = 0

    def take(self, index: int) -> np.ndarray:
        """The map of dropped frame ``index`` (the maps of dropped frames before it are skipped).
        BundleError when ``index`` is kept, behind, or the maps end before it."""
        from framers.errors import BundleError

        for dropped in self._dropped:
            choice = self._next(dropped)
            self.taken += 1
            if dropped == index:
                return choice
            if dropped > index:
                break
        raise BundleError(f"candidate map asked for frame {index}, which is kept or was passed")

    def apply(self, weights: np.ndarray, index: int) -> np.ndarray:
        """``apply_choices`` of frame ``index``'s map to its weights float32 [K, h, w]; BundleError
        when the map does not fit them."""
        from framers.errors import BundleError

        try:
            return apply_choices(weights, self.take(index), self.cell, self.codebook)
        except ValueError as exc:
            raise BundleError(f"frame {index}: {exc}") from exc

    def finish(self) -> None:
        """Read the rest (BundleError when the file is damaged or holds more maps than frames)."""
        from framers.errors import BundleError

        for dropped in self._dropped:
            self._next(dropped)
            self.taken += 1
        try:
            for _ in self._maps:
                raise BundleError("candidate map holds more maps than dropped frames")
        except ValueError as exc:
            raise BundleError(str(exc)) from exc

    def _next(self, index: int) -> np.ndarray:
        from framers.errors import BundleError

        try:
            choice = next(self._maps, None)
        except ValueError as exc:
            raise BundleError(str(exc)) from exc
        if choice is None:
            raise BundleError(f"candidate map ends before frame {index}")
        return choice
