"""The refresh layer's block map: which blocks each refresh picture corrects (issue 15).

One bool mask [rows, cols] per refresh picture, in picture order, in one file of the bundle. Two
codings, named by the manifest's ``refresh.map_coding``:

- ``deflate`` (bundle v5, no ``map_coding`` key): each mask's packed bits (``numpy.packbits``,
  row-major), all pictures one zlib stream.
- ``range`` (v6): a context-adaptive binary range code (``constriction``'s queue ``RangeEncoder``
  and its ``Bernoulli`` model). A block's bit is coded with the probability that its context had a
  1 in the pictures before (Laplace-initialised counts, updated after each picture); the context
  is the block and its 3×3 neighbourhood in the previous picture and the blocks above, above-left
  and above-right in this one (``contexts``), so a decoder finds every row's contexts before it
  decodes the row. Refreshed blocks cluster in space and time, where deflate sees bytes: on three
  val clips (64 frames, share 0.1) the map was 30–39 % smaller than deflate's, on a 1080p clip with
  scattered blocks 2 % (BENCHMARKS.md section 8b).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

#: the coding ``BlockMapWriter`` writes (the manifest's ``refresh.map_coding``)
RANGE = "range"
#: the v5 coding (no ``map_coding`` key in the manifest)
DEFLATE = "deflate"
CODINGS = (DEFLATE, RANGE)
#: number of contexts of ``contexts``: 5 binary features
N_CONTEXTS = 32


def previous_context(previous: np.ndarray) -> np.ndarray:
    """Context bits 0–1 of each block, int64 [rows, cols]: bit 0 the same block in the previous
    picture's mask (bool [rows, cols]; all False before the first picture), bit 1 any block of its
    3×3 neighbourhood there."""
    import cv2

    prev = previous.astype(np.uint8)
    near = cv2.dilate(prev, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0)
    return prev.astype(np.int64) | np.asarray(near, np.int64) << 1


def above_context(above: np.ndarray) -> np.ndarray:
    """Context bits 2–4, int64 of ``above``'s shape: the blocks above, above-left and above-right
    in this picture, from ``above`` = the row(s) right above (bool [..., cols]; False for row 0)."""
    up = above.astype(np.int64)
    up_left = np.zeros_like(up)
    up_left[..., 1:] = up[..., :-1]
    up_right = np.zeros_like(up)
    up_right[..., :-1] = up[..., 1:]
    return up << 2 | up_left << 3 | up_right << 4


def contexts(previous: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Context index (int64 [rows, cols], 0 … N_CONTEXTS − 1) of every block of ``mask`` (bool
    [rows, cols]) after the ``previous`` picture's mask: ``previous_context | above_context``.
    Row r's context needs only rows < r of ``mask``, so a decoder finds it before decoding row r."""
    above = np.zeros_like(mask)
    above[1:] = mask[:-1]
    return previous_context(previous) | above_context(above)


class _Counts:
    """Per-context counts of 0s and 1s (float64, from 1 each: Laplace), shared by both sides."""

    def __init__(self) -> None:
        self.counts = np.ones((N_CONTEXTS, 2))

    def p_one(self, ctx: np.ndarray) -> np.ndarray:
        return (self.counts[:, 1] / self.counts.sum(axis=1))[ctx]

    def update(self, ctx: np.ndarray, bits: np.ndarray) -> None:
        np.add.at(self.counts, (ctx.ravel(), bits.ravel().astype(np.int64)), 1.0)


def _bernoulli() -> Any:
    import constriction

    return constriction.stream.model.Bernoulli(perfect=False)


class BlockMapWriter:
    """Writes the block masks (bool [rows, cols], one per refresh picture, in order) to ``path``
    in ``coding`` (``RANGE`` or ``DEFLATE``; ValueError for another). ``close`` writes the file
    and returns its bytes. The range coder keeps its words in memory until ``close`` (a bit or
    less per block: ~1 kB per 1080p picture at most)."""

    def __init__(self, path: Path, coding: str = RANGE) -> None:
        if coding not in CODINGS:
            raise ValueError(f"unknown block map coding {coding!r} (known: {CODINGS})")
        self.path = Path(path)
        self.coding = coding
        self._file: BinaryIO = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        if coding == DEFLATE:
            self._deflate = zlib.compressobj(9)
        else:
            import constriction

            self._encoder = constriction.stream.queue.RangeEncoder()
            self._model = _bernoulli()
            self._previous: np.ndarray | None = None
            self._counts = _Counts()

    def write(self, mask: np.ndarray) -> None:
        """Code one picture's mask, bool [rows, cols] (every picture the same shape)."""
        mask = np.asarray(mask, bool)
        if self.coding == DEFLATE:
            self._file.write(self._deflate.compress(np.packbits(mask.ravel()).tobytes()))
            return
        previous = np.zeros_like(mask) if self._previous is None else self._previous
        if previous.shape != mask.shape:
            raise ValueError(f"block mask {mask.shape} after {previous.shape}")
        ctx = contexts(previous, mask)
        self._encoder.encode(mask.ravel().astype(np.int32), self._model, self._counts.p_one(ctx).ravel())
        self._counts.update(ctx, mask)
        self._previous = mask

    def close(self) -> int:
        try:
            if self.coding == DEFLATE:
                self._file.write(self._deflate.flush())
            else:
                self._file.write(self._encoder.get_compressed().astype("<u4").tobytes())
        finally:
            self._file.close()
        return self.path.stat().st_size


def iter_block_maps(path: Path, rows: int, cols: int, expected: int, coding: str = DEFLATE) -> Iterator[np.ndarray]:
    """The masks a ``BlockMapWriter`` wrote in ``coding``, bool [rows, cols] each, in order.
    ValueError when the file is not of that coding or holds another number than ``expected``."""
    if coding == DEFLATE:
        yield from _iter_deflate(path, rows, cols, expected)
    elif coding == RANGE:
        yield from _iter_range(path, rows, cols, expected)
    else:
        raise ValueError(f"unknown block map coding {coding!r} (known: {CODINGS})")


def _iter_range(path: Path, rows: int, cols: int, expected: int) -> Iterator[np.ndarray]:
    import constriction

    data = Path(path).read_bytes()
    if len(data) % 4:
        raise ValueError(f"refresh map is not a range code: {len(data)} bytes is not whole 32-bit words")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
    model = _bernoulli()
    counts = _Counts()
    previous = np.zeros((rows, cols), bool)
    for _ in range(expected):
        mask = np.zeros((rows, cols), bool)
        from_previous = previous_context(previous)
        for r in range(rows):  # a row's contexts need only the rows above it
            above = mask[r - 1] if r else np.zeros(cols, bool)
            row_ctx = from_previous[r] | above_context(above)
            try:
                mask[r] = decoder.decode(model, counts.p_one(row_ctx)) != 0
            except (AssertionError, ValueError, RuntimeError) as exc:  # constriction's word on invalid data
                raise ValueError(f"refresh map is not a valid range code: {exc}") from exc
        counts.update(contexts(previous, mask), mask)
        previous = mask
        yield mask
    if not decoder.maybe_exhausted():
        raise ValueError(f"refresh map does not end after {expected} pictures (damaged, or more pictures)")


def _iter_deflate(path: Path, rows: int, cols: int, expected: int) -> Iterator[np.ndarray]:
    size = -(-rows * cols // 8)
    inflate = zlib.decompressobj()
    pending = b""
    count = 0
    try:
        with open(path, "rb") as file:
            while chunk := file.read(1 << 16):
                pending += inflate.decompress(chunk)
                whole = len(pending) // size
                for k in range(whole):
                    count += 1
                    if count > expected:
                        raise ValueError(f"refresh map holds more than {expected} pictures")
                    bits = np.unpackbits(np.frombuffer(pending, np.uint8, size, k * size))[: rows * cols]
                    yield bits.reshape(rows, cols).astype(bool)
                pending = pending[whole * size:]
        pending += inflate.flush()
    except zlib.error as exc:
        raise ValueError(f"refresh map is not a deflate stream: {exc}") from exc
    if pending or count != expected:
        raise ValueError(f"refresh map holds {count} pictures (+{len(pending)} bytes), the manifest says {expected}")
