"""Trial ("probe") encodes of kept-frame streams with x264: bytes and RGB error per frame.

The adaptive mode measures, for every stride, what its kept frames cost and how much coding
distorts them, by encoding them with a fast x264 preset at one CRF (``ratemodel.PROBE_PRESET``)
and decoding the result; ``ratemodel`` maps those measurements to the final preset at any CRF.
Frames go through the same colour path as the bundle's keyframes (``codec_yuv``: PyAV's
reformatter RGB → YUV and back, or the decoded picture itself where that trip would give it
back), so the error is the one the decoder will see.
"""

from __future__ import annotations

import queue
import struct
import threading
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING

import av
import cv2
import numpy as np

from framers.adaptive.ratemodel import Probe
from framers.h264_sei import SeiDropper
from framers.metrics import mse, psnr_of_mses
from framers.rgb import to_rgb, to_yuv
from framers.video_writer import output_pix_fmt

if TYPE_CHECKING:
    from framers.clip import Clip


@dataclass
class Coded:
    """Per coded frame, in input order: ``bytes`` [n] int64 (its packet) and ``mse`` [n] float64,
    the coding error in RGB gray levels² estimated from the YUV planes (``rgb_mse_of_planes``):
    the error x264 adds, without the colour path's own (``conversion_mse``)."""

    index: np.ndarray
    bytes: np.ndarray
    mse: np.ndarray


#: RGB error of YUV plane errors through the BT.601 limited-range inverse matrix (PyAV's default
#: for untagged YUV), errors of the planes taken as independent: R = 1.164·Y + 1.596·V,
#: G = 1.164·Y − 0.392·U − 0.813·V, B = 1.164·Y + 2.017·U, averaged over the three channels.
PLANE_WEIGHTS = (1.164**2, (0.392**2 + 2.017**2) / 3, (1.596**2 + 0.813**2) / 3)


def planes_of(frame: av.VideoFrame) -> list[np.ndarray]:
    """The planes of an 8-bit planar YUV frame as uint8 arrays [h_p, w_p] (no copies)."""
    out = []
    for plane in frame.planes:
        rows = np.frombuffer(memoryview(plane), np.uint8).reshape(plane.height, plane.line_size)
        out.append(rows[:, : plane.width])
    return out


def rgb_mse_of_planes(source: Sequence[np.ndarray], decoded: Sequence[np.ndarray]) -> float:
    """Estimated RGB MSE (gray levels²) of a decoded YUV frame against its source YUV, from the
    per-plane MSEs (``PLANE_WEIGHTS``); 4:2:0 chroma errors count once per chroma sample, which
    bilinear upsampling spreads over four pixels at about the same mean square."""
    total = 0.0
    for weight, a, b in zip(PLANE_WEIGHTS, source, decoded, strict=True):
        diff = cv2.absdiff(a, b)
        total += weight * float(np.mean(np.square(diff, dtype=np.uint16)))
    return total


def to_codec_yuv(rgb: np.ndarray) -> av.VideoFrame:
    """RGB [H, W, 3] uint8 as the YUV frame x264 codes (4:2:0 for even sizes, else 4:4:4), as the
    bundle's keyframe encoder converts it: ``framers.rgb.to_yuv``, chroma averaged over the pixels
    it covers, the inverse of the reader's repetition (``to_rgb``). Until the twelfth session
    this was swscale's default downsampling, whose round trip alone capped testsrc2-like synthetic
    pictures at ~35 dB (c00; 48 dB now, a fresh-user trial) and natural video at 50-60 dB."""
    h, w = rgb.shape[:2]
    return to_yuv(rgb, output_pix_fmt(w, h))


#: AVColorSpace ids swscale converts with the BT.601 coefficients, the codec's own (``to_codec_yuv``)
BT601_MATRICES = frozenset({5, 6})  # bt470bg, smpte170m


def decoded_codec_yuv(clip: Clip, i: int) -> av.VideoFrame | None:
    """Frame ``i`` of ``clip`` as a copy of its decoded picture when that picture is already the
    codec's YUV, i.e. what the trip through RGB (``to_codec_yuv(clip.frame(i))``) gives back: 8-bit
    4:2:0, BT.601 limited range, shown as stored (``Clip.stored_as_shown``); else None. The trip
    repeats each chroma sample and averages it back (``framers.rgb``), so it returns such a
    picture up to rounding and out-of-gamut clipping, and skipping it saves two conversions per
    frame (``bench/compress_speed.py``: the analysis pass at 480p 0.72 → 0.63× x264 medium's
    time). The colour path's floor of such a picture is nil (``conversion_mse`` gives 0). The copy
    is a fresh frame: no side data, no picture type (libx264 would force an I-frame where the
    source had one)."""
    shown = clip.stored_as_shown(i)
    if shown is None:
        return None
    picture, matrix, colour_range = shown
    if (picture.format.name == output_pix_fmt(picture.width, picture.height) == "yuv420p"
            and matrix in BT601_MATRICES and colour_range == 1):
        return av.VideoFrame.from_ndarray(picture.to_ndarray(), format="yuv420p")
    return None


def codec_yuv(clip: Clip, i: int) -> av.VideoFrame:
    """Frame ``i`` of ``clip`` as the YUV picture x264 codes: the decoded picture where it already
    is that (``decoded_codec_yuv``), else ``to_codec_yuv(clip.frame(i))``."""
    yuv = decoded_codec_yuv(clip, i)
    return yuv if yuv is not None else to_codec_yuv(clip.frame(i))


def conversion_mse(rgb: np.ndarray, yuv: av.VideoFrame | None = None) -> float:
    """Mean squared RGB error (gray levels²) of the colour path alone: RGB [H, W, 3] uint8 →
    the codec's YUV (4:2:0 for even sizes) → RGB. No CRF gets below it (fine colour detail lost
    to chroma subsampling), so the rate model scales only the coding error above this floor.
    ``yuv``: the frame already converted by ``to_codec_yuv`` (saves one conversion)."""
    back = to_rgb(yuv if yuv is not None else to_codec_yuv(rgb))
    return mse(back, rgb)


#: x264's threads for every stream a bundle holds (kept frames, refresh layer) and for the probes
#: that predict them: a fixed count, whatever the machine and the worker's thread budget
#: (``FRAMERS_CODEC_THREADS``), so that a bundle's size and the adaptive mode's decisions do not
#: depend on where it was made (a fresh-user trial: the CLI and a service worker with a budget of 1
#: chose different strides for the same file). x264's bytes grow with its threads: 16766, 17202,
#: 17665, 18111 bytes at 1–4 threads on 24 frames of 560×320 (``bench/x264_threads.py``), and its own
#: choice follows the cores. (It is still not byte-reproducible run to run on some sizes, at any
#: thread count: BENCHMARKS.md section 0.) Two threads under a budget of one cost a context switch,
#: not a core each.
X264_THREADS = 2


def x264_context(width: int, height: int, crf: int, preset: str, params: str = "") -> av.VideoCodecContext:
    """An opened-on-first-frame libx264 encoder writing Annex B (headers in band), default
    GOP and look-ahead of ``preset`` (``params``: x264's own options on top, ``key=value:...``),
    4:2:0 unless the size is odd (then 4:4:4), on ``X264_THREADS`` threads."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height = width, height
    ctx.pix_fmt = output_pix_fmt(width, height)
    ctx.time_base = Fraction(1, 25)
    ctx.options = {"crf": str(crf), "preset": preset, **({"x264-params": params} if params else {})}
    ctx.thread_count = X264_THREADS
    return ctx


#: how a probe measures its coding error. "x264": the error x264 reports for its own reconstruction
#: (``AV_CODEC_FLAG_PSNR``: per-plane SSE in each packet's ``quality_stats`` side data), no decoder
#: run. x264 takes it before the deblocking filter on
#: the pictures no other refers to (non-reference B pictures, deblocked only by a decoder), so
#: there it reads a few % more error than a reader sees; the rate model is calibrated on what the
#: probe reports. "decoded": decode the stream and compare planes (the pictures a reader gets; the
#: truth side of calibration, and the probes of rate models before 1.2).
PROBE_ERRORS = ("x264", "decoded")


def x264_reported_mse(packet: av.Packet, plane_pixels: Sequence[int]) -> float | None:
    """RGB MSE (``PLANE_WEIGHTS``) of x264's per-plane SSE of this packet's picture, from the
    ``quality_stats`` side data an encoder opened with ``AV_CODEC_FLAG_PSNR`` attaches (u32
    quality, u8 picture type, u8 error count, 2 reserved, u64 SSE[count]); ``plane_pixels``: the
    samples of each plane. None when the packet has no such statistics."""
    for side in packet.iter_sidedata():
        if side.data_type == "quality_stats":
            raw = bytes(memoryview(side))
            sse = struct.unpack_from(f"<{raw[5]}Q", raw, 8)
            return float(sum(w * e / n for w, e, n in zip(PLANE_WEIGHTS, sse, plane_pixels, strict=False)))
    return None


def plane_pixels(width: int, height: int, pix_fmt: str) -> list[int]:
    """Samples per plane of a ``width``×``height`` picture in ``pix_fmt`` (e.g. yuv420p)."""
    return [plane.width * plane.height for plane in av.VideoFrame(width, height, pix_fmt).planes]


class ProbeEncoder:
    """Streams frames (with their video index) through x264; ``finish`` returns the per-frame
    ``Coded`` record: each packet's bytes (x264's SEI text dropped, as a bundle stores it) and the
    coding error measured as ``error`` says (``PROBE_ERRORS``); x264 at ``preset`` and ``params``
    (``x264_context``). Holds only the frames x264 has not yet given back (its look-ahead), never
    the whole stream. Raises ValueError for an unknown ``error``, RuntimeError when x264 gives a
    packet without its quality statistics."""

    def __init__(self, width: int, height: int, crf: int, preset: str, error: str = "x264",
                 params: str = "") -> None:
        if error not in PROBE_ERRORS:
            raise ValueError(f"probe error {error!r} is not one of {PROBE_ERRORS}")
        self._enc = x264_context(width, height, crf, preset, params)
        self._decoded = error == "decoded"
        if not self._decoded:
            self._enc.flags |= av.codec.context.Flags.psnr
        self._sei = SeiDropper()  # the bytes a bundle's stream holds
        self._dec = av.CodecContext.create("h264", "r")
        self._pending: deque[tuple[int, list[np.ndarray]]] = deque()
        self._plane_pixels: list[int] = []
        self._bytes: dict[int, int] = {}
        self._order: list[int] = []
        self._mse: dict[int, float] = {}
        self._count = 0

    def _take(self, packets: Sequence[av.Packet]) -> None:
        """x264's packets: their error statistics (read before the SEI filter), then ``_store``."""
        if not self._decoded:
            for packet in packets:
                self._mse[self._order[int(packet.pts or 0)]] = self._reported_mse(packet)
        self._store(self._sei.filter(packets))

    def _store(self, packets: Sequence[av.Packet]) -> None:
        """The stored packets (SEI dropped): their bytes, and their pictures when decoding."""
        for packet in packets:
            self._bytes[self._order[int(packet.pts or 0)]] = packet.size
            if self._decoded:
                for frame in self._dec.decode(av.Packet(bytes(packet))):
                    self._compare(frame)

    def _reported_mse(self, packet: av.Packet) -> float:
        mse = x264_reported_mse(packet, self._plane_pixels)
        if mse is None:
            raise RuntimeError("x264 gave a packet without quality statistics (AV_CODEC_FLAG_PSNR)")
        return mse

    def _compare(self, frame: av.VideoFrame) -> None:
        index, source = self._pending.popleft()
        self._mse[index] = rgb_mse_of_planes(source, planes_of(frame))

    def write(self, index: int, rgb: np.ndarray) -> None:
        """Encode frame ``index`` (RGB uint8 [H, W, 3]); frames must come in increasing index."""
        self.write_yuv(index, to_codec_yuv(rgb))

    def write_yuv(self, index: int, yuv: av.VideoFrame) -> None:
        """Encode frame ``index`` given as the codec's YUV (``to_codec_yuv``; one conversion can
        feed several probes)."""
        if not self._plane_pixels:
            self._plane_pixels = [plane.width * plane.height for plane in yuv.planes]
        if self._decoded:
            self._pending.append((index, [p.copy() for p in planes_of(yuv)]))
        yuv.pts = self._count
        self._count += 1
        self._order.append(index)
        self._take(self._enc.encode(yuv))

    def finish(self) -> Coded:
        """Flush encoder (and decoder); per-frame bytes and MSE in input order."""
        self._take(self._enc.encode(None))
        self._store(self._sei.flush())
        if self._decoded:
            for frame in self._dec.decode(None):
                self._compare(frame)
        order = np.array(self._order, dtype=np.int64)
        return Coded(
            order,
            np.array([self._bytes.get(i, 0) for i in self._order], dtype=np.int64),
            np.array([self._mse[i] for i in self._order], dtype=np.float64),
        )


class ProbeSet:
    """The probe encoders of one analysis pass, one per key (the stride), run on a worker thread:
    x264 (and, for ``error="decoded"``, the decoder) release the GIL, so the probes code on one
    core while the caller decodes, converts and measures the next frames on the other.

    ``write(keys, index, yuv)`` queues frame ``index`` (the codec's YUV, ``to_codec_yuv``) for the
    probes of ``keys`` (created on first use at ``crf``, or at ``crfs[key]`` where given, with the
    settings of ``probe``); at most ``QUEUE_FRAMES`` frames wait, so memory stays bounded whatever
    the video's length. ``finish()`` returns key -> ``Coded``. The worker's first error is raised
    by the next ``write`` or by ``finish``."""

    QUEUE_FRAMES = 16

    def __init__(self, crf: int, probe: Probe, crfs: dict[int, int] | None = None) -> None:
        if probe.error not in PROBE_ERRORS:
            raise ValueError(f"probe error {probe.error!r} is not one of {PROBE_ERRORS}")
        self._crf, self._crfs = crf, dict(crfs or {})
        self._settings = (probe.preset, probe.error, probe.params)
        self._probes: dict[int, ProbeEncoder] = {}
        self._queue: queue.Queue[tuple[tuple[int, ...], int, av.VideoFrame] | None] = queue.Queue(self.QUEUE_FRAMES)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="framers-probes", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the caller learns of the error at its next write
            keys, index, yuv = item
            try:
                for key in keys:
                    if key not in self._probes:
                        self._probes[key] = ProbeEncoder(yuv.width, yuv.height, self._crfs.get(key, self._crf),
                                                         *self._settings)
                    self._probes[key].write_yuv(index, yuv)
            except BaseException as exc:  # handed to the caller's thread
                self._error = exc

    def write(self, keys: Sequence[int], index: int, yuv: av.VideoFrame) -> None:
        """Queue frame ``index`` for the probes of ``keys`` (frames in increasing index per key)."""
        if self._error is not None:
            self.close()
            raise self._error
        if keys:
            self._queue.put((tuple(keys), index, yuv))

    def close(self) -> None:
        """Stop the worker (idempotent); queued frames are coded first."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def finish(self) -> dict[int, Coded]:
        """Wait for the queued frames, flush every probe: key -> per-frame ``Coded``."""
        self.close()
        if self._error is not None:
            raise self._error
        return {key: probe.finish() for key, probe in self._probes.items()}


def code_frames(frames: Sequence[np.ndarray], crf: int, preset: str, error: str = "decoded",
                params: str = "") -> Coded:
    """Encode a list of RGB frames [H, W, 3] uint8 as one x264 stream (``preset``, ``params``); the
    error measured as ``error`` says (``PROBE_ERRORS``; default: decoded, the pictures a reader gets)."""
    h, w = frames[0].shape[:2]
    probe = ProbeEncoder(w, h, crf, preset, error, params)
    for i, rgb in enumerate(frames):
        probe.write(i, rgb)
    return probe.finish()


def x264_round_trip(frames: Sequence[np.ndarray], crf: int, preset: str) -> tuple[list[np.ndarray], int]:
    """RGB frames [H, W, 3] uint8 through one x264 stream (``x264_context``: 4:2:0 unless the size
    is odd) and back to RGB, as a decoder of a bundle's keyframes sees them; with the stream's
    bytes (packets + extradata). For calibration and probes that need the decoded pictures
    themselves, where ``code_frames`` keeps only bytes and error. Both count the stream without
    x264's SEI text, as a bundle stores it (``framers.h264_sei``). Raises RuntimeError when the
    decoder returns another number of frames."""
    h, w = frames[0].shape[:2]
    enc = x264_context(w, h, crf, preset)
    sei = SeiDropper()
    packets: list[av.Packet] = []
    for i, rgb in enumerate(frames):
        yuv = to_codec_yuv(rgb)
        yuv.pts = i
        packets.extend(sei.filter(enc.encode(yuv)))
    packets.extend(sei.filter(enc.encode(None)) + sei.flush())
    dec = av.CodecContext.create("h264", "r")
    dec.extradata = enc.extradata
    out = [to_rgb(f) for p in packets for f in dec.decode(p)]
    out.extend(to_rgb(f) for f in dec.decode(None))
    if len(out) != len(frames):
        raise RuntimeError(f"x264 round trip returned {len(out)} of {len(frames)} frames")
    return out, sum(p.size for p in packets) + len(enc.extradata or b"")


def measured_psnr(frames: Sequence[np.ndarray], crf: int, preset: str,
                  kept: Sequence[int] | None = None, times: Sequence[float] | None = None) -> tuple[np.ndarray, int]:
    """Per-frame PSNR (dB, RGB, capped at 60 dB) of a video of RGB frames [H, W, 3] uint8 whose
    ``kept`` frames (indices; None: all) are coded as one x264 stream at ``crf`` and ``preset``
    and decoded as a bundle's reader does (``x264_round_trip``), the others rebuilt from them by
    ``framemae`` (the default reconstructor; ``times``: every frame's timestamp, weighted as the
    decoder weighs them, ``reconstructors.base.position``); with the stream's bytes. The exact figure the rate
    model predicts, at the cost of one encode (and one rebuild). Raises RuntimeError when the
    decoder returns another number of frames, ModelError when framemae cannot load."""
    indices = list(range(len(frames))) if kept is None else list(kept)
    decoded, n_bytes = x264_round_trip([frames[i] for i in indices], crf, preset)
    rebuilt: Sequence[np.ndarray] = decoded
    if len(indices) < len(frames):
        from framers import defaults
        from framers.geometry import CLIP_LEN
        from framers.reconstructors.base import KeptFrame
        from framers.registry import get_reconstructor

        rebuilder = get_reconstructor(defaults.RECONSTRUCTOR)
        kept_frames = [KeptFrame(i, d) for i, d in zip(indices, decoded, strict=True)]
        rebuilt = list(rebuilder.reconstruct(iter(kept_frames), len(frames), CLIP_LEN, times))
    mses = [mse(f, r) for r, f in zip(rebuilt, frames, strict=True)]
    return psnr_of_mses(np.asarray(mses)), n_bytes
