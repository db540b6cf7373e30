"""Trial ("probe") encodes of kept-frame streams with x264: bytes and RGB error per frame.

The adaptive mode measures, for every stride, what its kept frames cost and how much coding
distorts them, by encoding them with a fast x264 preset at one CRF (``ratemodel.PROBE_PRESET``)
and decoding the result; ``ratemodel`` maps those measurements to the final preset at any CRF.
Frames go through the same colour path as the bundle's keyframes (PyAV's reformatter RGB →
YUV and back), so the error is the one the decoder will see.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np

from framers.video import output_pix_fmt


@dataclass
class Coded:
    """Per coded frame, in input order: ``bytes`` [n] int64 (its packet) and ``mse`` [n] float64
    (mean squared RGB error of the decoded frame against the input, gray levels²)."""

    index: np.ndarray
    bytes: np.ndarray
    mse: np.ndarray


def conversion_mse(rgb: np.ndarray) -> float:
    """Mean squared RGB error (gray levels²) of the colour path alone: RGB [H, W, 3] uint8 →
    the codec's YUV (4:2:0 for even sizes) → RGB. No CRF gets below it (fine colour detail lost
    to chroma subsampling), so the rate model scales only the coding error above this floor."""
    h, w = rgb.shape[:2]
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
    back = frame.reformat(format=output_pix_fmt(w, h)).to_ndarray(format="rgb24")
    diff = back.astype(np.int16) - rgb
    return float(np.mean(np.square(diff, dtype=np.int32)))


def x264_context(width: int, height: int, crf: int, preset: str) -> av.VideoCodecContext:
    """An opened-on-first-frame libx264 encoder writing Annex B (headers in band), default
    GOP and look-ahead of ``preset``, 4:2:0 unless the size is odd (then 4:4:4)."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = output_pix_fmt(width, height)
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"crf": str(crf), "preset": preset}
    return ctx  # type: ignore[return-value]


class ProbeEncoder:
    """Streams frames (with their video index) through x264 and a decoder; ``finish`` returns
    the per-frame ``Coded`` record. Holds only the frames x264 has not yet given back
    (its look-ahead), never the whole stream."""

    def __init__(self, width: int, height: int, crf: int, preset: str) -> None:
        self._enc = x264_context(width, height, crf, preset)
        self._dec = av.CodecContext.create("h264", "r")
        self._pending: deque[tuple[int, np.ndarray]] = deque()
        self._bytes: dict[int, int] = {}
        self._order: list[int] = []
        self._mse: dict[int, float] = {}
        self._count = 0

    def _take(self, packets: Sequence[av.Packet]) -> None:
        for packet in packets:
            position = int(packet.pts)
            self._bytes[self._order[position]] = packet.size
            for frame in self._dec.decode(av.Packet(bytes(packet))):
                self._compare(frame)

    def _compare(self, frame: av.VideoFrame) -> None:
        index, source = self._pending.popleft()
        decoded = frame.to_ndarray(format="rgb24").astype(np.int16)
        diff = decoded - source
        self._mse[index] = float(np.mean(np.square(diff, dtype=np.int32)))

    def write(self, index: int, rgb: np.ndarray) -> None:
        """Encode frame ``index`` (RGB uint8 [H, W, 3]); frames must come in increasing index."""
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self._count
        self._count += 1
        self._order.append(index)
        self._pending.append((index, rgb.astype(np.int16)))
        self._take(self._enc.encode(frame))

    def finish(self) -> Coded:
        """Flush encoder and decoder; per-frame bytes and MSE in input order."""
        self._take(self._enc.encode(None))
        for frame in self._dec.decode(None):
            self._compare(frame)
        order = np.array(self._order, dtype=np.int64)
        return Coded(
            order,
            np.array([self._bytes.get(i, 0) for i in self._order], dtype=np.int64),
            np.array([self._mse[i] for i in self._order], dtype=np.float64),
        )


def code_frames(frames: Sequence[np.ndarray], crf: int, preset: str) -> Coded:
    """Encode and decode a list of RGB frames [H, W, 3] uint8 (one x264 stream)."""
    h, w = frames[0].shape[:2]
    probe = ProbeEncoder(w, h, crf, preset)
    for i, rgb in enumerate(frames):
        probe.write(i, rgb)
    return probe.finish()
