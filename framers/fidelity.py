"""Real-world fidelity of a source video: colour, geometry, fields, alpha and stream choice.

A :class:`DecodePlan` is made once per video from its main stream and first decoded picture.
It turns every decoded picture into the RGB uint8 [H, W, 3] frames the codec works on, and
describes (for the bundle manifest) what the output must carry so it looks like the source:

- colour: pictures are converted to RGB with the source's own matrix and range (untagged video:
  BT.709 from 720 lines up, BT.601 below, what players assume); the output is encoded with the
  same matrix and range and tagged with the source's primaries, transfer, matrix and range.
  HDR (PQ / HLG transfer) is tone-mapped to SDR BT.709 with a documented operator
  (:func:`tonemap_operator`) and the manifest, CLI and job record say so.
- geometry: the display matrix (rotations *and* mirror flips, as FFmpeg's own ``autorotate``
  reads it) is applied to the pixels; the sample aspect ratio is carried to the output
  (inverted when a quarter turn swaps the axes).
- fields: interlaced video is deinterlaced on input with FFmpeg's ``bwdif`` (one frame per
  frame, field order from the stream), and the manifest, CLI and job record say so.
- alpha: pictures with an alpha channel (including VP8/VP9 alpha in WebM, decoded with libvpx)
  are composited on :data:`ALPHA_BACKGROUND` with a warning; the output has no alpha.
- stream choice: the main video stream is FFmpeg's best stream, never an attached picture
  (cover art); the other streams are named in the manifest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import av
import av.error
import numpy as np

from framers.rgb import reformatter, to_rgb

# FFmpeg's enum values (libavutil/pixfmt.h): AVColorPrimaries, AVColorTransferCharacteristic,
# AVColorSpace (the YUV matrix) and AVColorRange.
PRIMARIES = {1: "bt709", 2: "unknown", 4: "bt470m", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 8: "film",
             9: "bt2020", 10: "smpte428", 11: "smpte431", 12: "smpte432", 22: "ebu3213"}
TRANSFERS = {1: "bt709", 2: "unknown", 4: "gamma22", 5: "gamma28", 6: "smpte170m", 7: "smpte240m", 8: "linear",
             9: "log100", 10: "log316", 11: "iec61966-2-4", 12: "bt1361e", 13: "iec61966-2-1", 14: "bt2020-10",
             15: "bt2020-12", 16: "smpte2084", 17: "smpte428", 18: "arib-std-b67"}
MATRICES = {0: "gbr", 1: "bt709", 2: "unknown", 4: "fcc", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m",
            8: "ycgco", 9: "bt2020nc", 10: "bt2020c"}
RANGES = {0: "unknown", 1: "tv", 2: "pc"}
UNSPECIFIED = 2
PQ, HLG = 16, 18
#: matrices swscale converts with; anything else (ycgco, bt2020c, ...) falls back to the size guess
_SWS_MATRICES = {1, 4, 5, 6, 7, 9}
#: the deliberate HDR -> SDR mapping, stated in the manifest, CLI output and job record
#: (``tonemap_operator`` names the source's own transfer in place of "{curve}")
TONEMAP_OPERATOR = (
    "HDR tone-mapped to SDR BT.709: {curve} to "
    "linear light, BT.2020 -> BT.709 primaries, Hable curve on max(R,G,B) (FFmpeg tonemap=hable) "
    "with a 1000 nit peak and 203 nit reference white (BT.2408), BT.1886 (gamma 2.4) encoding"
)
_CURVES = {PQ: "ST 2084 (PQ)", HLG: "ARIB STD-B67 (HLG, 1000 nit system gamma 1.2)"}


def tonemap_operator(transfer: int) -> str:
    """``TONEMAP_OPERATOR`` for a source of FFmpeg transfer id ``transfer`` (16 PQ, 18 HLG): the
    text says only the curve the source uses. Raises KeyError for another transfer."""
    return TONEMAP_OPERATOR.format(curve=_CURVES[transfer])
#: the colour transparent pixels are composited on when a source has an alpha channel
ALPHA_BACKGROUND = (0, 0, 0)
_REF_WHITE_NITS = 203.0
_PEAK_NITS = 1000.0
_BT2020_TO_BT709 = np.array([[1.6605, -0.5876, -0.0728],
                             [-0.1246, 1.1329, -0.0083],
                             [-0.0182, -0.1006, 1.1187]], dtype=np.float32)


def _hable(x: np.ndarray | float) -> np.ndarray | float:
    a, b, c, d, e, f = 0.15, 0.50, 0.10, 0.20, 0.02, 0.30
    return (x * (x * a + b * c) + d * e) / (x * (x * a + b) + d * f) - e / f


def _transfer_lut(transfer: int) -> np.ndarray:
    """[65536] float32: 16-bit code value -> linear light relative to the reference white."""
    e = np.arange(65536, dtype=np.float64) / 65535.0
    if transfer == PQ:
        m1, m2 = 2610 / 16384, 2523 / 4096 * 128
        c1, c2, c3 = 3424 / 4096, 2413 / 4096 * 32, 2392 / 4096 * 32
        p = e ** (1 / m2)
        nits = (np.maximum(p - c1, 0) / (c2 - c3 * p)) ** (1 / m1) * 10000.0
    else:  # HLG: inverse OETF to scene light, then a 1000 nit OOTF (gamma 1.2) applied per channel
        a, b, c = 0.17883277, 0.28466892, 0.55991073
        scene = np.where(e <= 0.5, e * e / 3.0, (np.exp((e - c) / a) + b) / 12.0)
        nits = 1000.0 * scene ** 1.2
    return (nits / _REF_WHITE_NITS).astype(np.float32)


_LUTS: dict[int, np.ndarray] = {}


def tonemap_to_sdr(rgb48: np.ndarray, transfer: int) -> np.ndarray:
    """HDR RGB (BT.2020 primaries) [H, W, 3] uint16 code values -> SDR BT.709 RGB [H, W, 3] uint8.

    ``transfer`` is FFmpeg's transfer id: 16 (PQ) or 18 (HLG). The operator is
    ``tonemap_operator(transfer)``; it is deterministic and needs nothing but the pixels.
    """
    if transfer not in (PQ, HLG):
        raise ValueError(f"tone-mapping needs a PQ or HLG transfer, not {transfer}")
    lut = _LUTS.get(transfer)
    if lut is None:
        lut = _LUTS[transfer] = _transfer_lut(transfer)
    linear = np.take(lut, rgb48)  # [H, W, 3] float32, 1.0 = reference white
    linear = np.maximum(linear @ _BT2020_TO_BT709.T, 0.0)
    peak = _PEAK_NITS / _REF_WHITE_NITS
    sig = np.maximum(linear.max(axis=-1, keepdims=True), 1e-6)
    mapped = _hable(np.minimum(sig, peak)) / _hable(peak)
    sdr = np.clip(linear * (mapped / sig), 0.0, 1.0) ** (1 / 2.4)
    return (sdr * 255.0 + 0.5).astype(np.uint8)


# ----------------------------------------------------------------------------- geometry

def display_matrix(frame: av.VideoFrame) -> tuple[int, ...] | None:
    """The picture's display matrix as 9 int32 (FFmpeg layout), or None when it has none."""
    try:
        from av.sidedata.sidedata import Type

        entry = frame.side_data.get(Type.DISPLAYMATRIX)  # type: ignore[call-overload]
    except (AttributeError, ImportError, KeyError, TypeError, ValueError):
        return None
    if entry is None:
        return None
    raw = bytes(entry)
    if len(raw) < 36:
        return None
    return tuple(int(v) for v in np.frombuffer(raw[:36], dtype="<i4"))


def orientation_ops(matrix: tuple[int, ...] | None) -> tuple[str, ...]:
    """The pixel operations that show a picture as its display matrix asks (FFmpeg's autorotate).

    Returns a sequence of ``"transpose"`` (swap axes), ``"hflip"`` and ``"vflip"`` applied in
    order; ``()`` when nothing is needed. Same decisions as ``ffmpeg``'s own autorotate
    (fftools: transpose clock / cclock / *_flip, hflip, vflip); rotations that are not a multiple
    of 90 degrees are rounded to the nearest quarter turn.
    """
    if matrix is None:
        return ()
    a, b, c, d = (v / 65536.0 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    s0, s1 = math.hypot(a, c), math.hypot(b, d)
    if s0 == 0 or s1 == 0:
        return ()
    theta = -round(-math.degrees(math.atan2(b / s1, a / s0)))  # fftools get_rotation()
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    quarter = round(theta / 90) % 4
    # numpy equivalents of FFmpeg's transpose modes on an [H, W] picture
    clock = ("transpose", "hflip")  # rotate 90 degrees clockwise
    cclock = ("transpose", "vflip")  # rotate 90 degrees counter-clockwise
    if quarter == 1:
        return ("transpose",) if matrix[3] > 0 else clock  # cclock_flip | clock
    if quarter == 2:
        return (("hflip",) if matrix[0] < 0 else ()) + (("vflip",) if matrix[4] < 0 else ())
    if quarter == 3:
        return ("transpose", "hflip", "vflip") if matrix[3] < 0 else cclock  # clock_flip | cclock
    return ("vflip",) if matrix[4] < 0 else ()


def apply_orientation(rgb: np.ndarray, ops: tuple[str, ...]) -> np.ndarray:
    """Apply :func:`orientation_ops` to an image [H, W, C] (any dtype); returns a contiguous array."""
    if not ops:
        return rgb
    for op in ops:
        if op == "transpose":
            rgb = rgb.swapaxes(0, 1)
        elif op == "hflip":
            rgb = rgb[:, ::-1]
        elif op == "vflip":
            rgb = rgb[::-1]
        else:
            raise ValueError(f"unknown orientation op {op!r}")
    return np.ascontiguousarray(rgb)


# ----------------------------------------------------------------------------- stream choice

def main_video_stream(container: Any) -> Any:
    """FFmpeg's best video stream of an opened container, never an attached picture (cover art).

    Raises IndexError when the container has no video stream other than attached pictures.
    """
    candidates = [s for s in container.streams.video if not _attached_picture(s)]
    if not candidates:
        raise IndexError("no video stream")
    try:
        best = container.streams.best("video")
    except (av.error.FFmpegError, ValueError):
        best = None
    if best is not None and best in candidates:
        return best
    return candidates[0]


def _attached_picture(stream: Any) -> bool:
    try:
        return bool(int(stream.disposition) & int(av.stream.Disposition.attached_pic))
    except (AttributeError, TypeError, ValueError):
        return False


def describe_streams(container: Any, main_index: int) -> list[dict[str, Any]]:
    """Every stream other than the main video one: index, type, codec and why it was not used."""
    out: list[dict[str, Any]] = []
    for s in container.streams:
        if s.index == main_index:
            continue
        entry: dict[str, Any] = {"index": s.index, "type": s.type}
        try:
            entry["codec"] = s.codec_context.name if s.codec_context is not None else None
        except (AttributeError, av.error.FFmpegError):
            entry["codec"] = None
        if s.type == "video":
            entry["width"], entry["height"] = s.codec_context.width, s.codec_context.height
            entry["attached_pic"] = _attached_picture(s)
            entry["use"] = "ignored (not the main video stream)"
        elif s.type == "audio":
            entry["use"] = "audio (kept when decodable)"
        else:
            entry["use"] = "ignored"
        out.append(entry)
    return out


# ----------------------------------------------------------------------------- the plan

def _has_alpha(fmt: Any) -> bool:
    try:
        if hasattr(fmt, "has_alpha"):
            return bool(fmt.has_alpha)
        return len(fmt.components) in (2, 4) and not fmt.name.startswith(("nv", "p0", "p2", "p4"))
    except (AttributeError, TypeError):
        return False


@dataclass
class DecodePlan:
    """How decoded pictures of one video become RGB, and what the output must carry.

    Made by :func:`plan_for` from the main stream and the first decoded picture.
    """

    matrix: int  # AVColorSpace used for YUV -> RGB (never "unspecified")
    range: int  # AVColorRange used (1 tv, 2 pc)
    source_colour: dict[str, Any]  # the source's tags as found (names and ids)
    output_colour: dict[str, int]  # primaries / transfer / matrix / range ids for the output
    tonemap: int | None = None  # PQ or HLG transfer id when tone-mapping to SDR
    alpha: bool = False  # pictures have an alpha channel: composited on ALPHA_BACKGROUND
    alpha_seen: bool = False  # some pixel was not opaque (GIF / PNG decode to RGBA even when opaque)
    ops: tuple[str, ...] = ()  # orientation ops
    deinterlace: str | None = None  # bwdif parity when deinterlacing ("tff" | "bff" | "auto")
    sample_aspect_ratio: Fraction | None = None  # of the output (display orientation)
    warnings: list[str] = field(default_factory=list)

    def note_alpha(self, frame: av.VideoFrame) -> None:
        """Record whether a decoded picture has any pixel that is not fully opaque."""
        if self.alpha and not self.alpha_seen and _has_alpha(frame.format):
            rgba = to_rgb(frame, "rgba")
            self.alpha_seen = bool((rgba[..., 3] < 255).any())

    def all_warnings(self) -> list[str]:
        """The plan's warnings, plus the alpha one once a transparent pixel was seen."""
        notes = list(self.warnings)
        if self.alpha_seen:
            notes.append(
                "the source has an alpha channel: frames are composited on background "
                f"rgb{ALPHA_BACKGROUND} and the output has no transparency"
            )
        return notes

    @property
    def special(self) -> bool:
        """True when a picture cannot be shown by a plain RGB conversion (HDR, alpha)."""
        return self.tonemap is not None or self.alpha

    def to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        """A decoded picture -> RGB uint8 [H, W, 3] in display orientation, source colours."""
        if self.tonemap is not None:
            # HDR keeps swscale's 16-bit rgb48le conversion: the tone map's own error dominates
            rgb48 = reformatter().reformat(frame, format="rgb48le", src_colorspace=self.matrix,
                                           src_color_range=self.range).to_ndarray()
            picture = tonemap_to_sdr(rgb48, self.tonemap)
        elif self.alpha and _has_alpha(frame.format):
            rgba = to_rgb(frame, "rgba", src_colorspace=self.matrix, src_color_range=self.range)
            a = rgba[..., 3:4].astype(np.uint16)
            bg = np.asarray(ALPHA_BACKGROUND, dtype=np.uint16)
            picture = ((rgba[..., :3] * a + bg * (255 - a) + 127) // 255).astype(np.uint8)
        else:
            picture = to_rgb(frame, src_colorspace=self.matrix, src_color_range=self.range)
        return apply_orientation(picture, self.ops)

    def manifest(self) -> dict[str, Any]:
        """The per-video facts stored in the bundle manifest's ``source`` dict (JSON-ready)."""
        colour = {**self.source_colour, "output": dict(self.output_colour)}
        if self.tonemap is not None:
            colour["tonemap"] = tonemap_operator(self.tonemap)
        facts: dict[str, Any] = {
            "colour": colour,
            "orientation": list(self.ops),
            "deinterlaced": f"bwdif ({self.deinterlace})" if self.deinterlace else None,
            "alpha": {"flattened_on": list(ALPHA_BACKGROUND)} if self.alpha_seen else None,
        }
        if self.sample_aspect_ratio is not None:
            sar = self.sample_aspect_ratio
            facts["sample_aspect_ratio"] = [sar.numerator, sar.denominator]
        return facts


def _tag(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return UNSPECIFIED


def plan_for(stream: Any, first: av.VideoFrame, alpha_lost: bool = False) -> DecodePlan:
    """The :class:`DecodePlan` of a video from its main stream and first decoded picture.

    ``alpha_lost`` says the stream declares alpha that this build cannot decode (a warning).
    """
    cc = stream.codec_context
    prim = _tag(first.color_primaries) if _tag(first.color_primaries) != UNSPECIFIED else _tag(cc.color_primaries)
    trc = _tag(first.color_trc) if _tag(first.color_trc) != UNSPECIFIED else _tag(cc.color_trc)
    mat = _tag(first.colorspace) if _tag(first.colorspace) != UNSPECIFIED else _tag(cc.colorspace)
    rng = _tag(first.color_range) or _tag(cc.color_range)
    fmt = first.format.name
    if fmt.startswith("yuvj"):
        rng = 2
    hd = max(first.width, first.height) >= 1280 or min(first.width, first.height) >= 720
    guess = 1 if hd else 6
    depth = max((c.bits for c in first.format.components), default=8)
    source_colour = {
        "primaries": PRIMARIES.get(prim, str(prim)), "transfer": TRANSFERS.get(trc, str(trc)),
        "matrix": MATRICES.get(mat, str(mat)), "range": RANGES.get(rng, str(rng)), "bit_depth": depth,
        "pix_fmt": fmt,
    }
    is_rgb = mat == 0 or fmt.startswith(("rgb", "bgr", "gbr", "argb", "abgr", "pal", "gray"))
    decode_matrix = mat if mat in _SWS_MATRICES else (9 if mat == 10 else guess)
    decode_range = 2 if rng == 2 else 1
    warnings: list[str] = []
    tonemap = trc if trc in (PQ, HLG) else None
    if tonemap is not None:
        output = {"primaries": 1, "transfer": 1, "matrix": 1, "range": 1}
        if mat not in (9, 10):
            decode_matrix = 9 if mat == UNSPECIFIED else decode_matrix
        warnings.append(f"{TRANSFERS[tonemap]} {depth}-bit HDR source: {tonemap_operator(tonemap)}")
    else:
        out_matrix = guess if is_rgb else decode_matrix
        output = {
            "primaries": prim, "transfer": trc, "matrix": out_matrix,
            "range": 2 if (rng == 2 and not is_rgb) else 1,
        }
        if depth > 8:
            warnings.append(f"{depth}-bit source stored and rebuilt at 8 bits per component")
    finer = re.match(r"^yuv[ja]?(422|444|440)p", fmt)
    # odd sizes are stored and rebuilt as 4:4:4 (video_writer.output_pix_fmt): nothing lost there
    if finer and not is_rgb and first.width % 2 == 0 and first.height % 2 == 0:
        warnings.append(f"{finer.group(1)[0]}:{finer.group(1)[1]}:{finer.group(1)[2]} chroma source stored and "
                        "rebuilt as 4:2:0 (less colour resolution; 4:4:4 only for odd frame sizes)")
    alpha = _has_alpha(first.format)
    if not alpha and alpha_lost:
        warnings.append("the source declares an alpha channel this build cannot decode: transparency is lost")
    ops = orientation_ops(display_matrix(first))
    field_order = _tag(getattr(cc, "field_order", 0))
    interlaced = bool(getattr(first, "interlaced_frame", False)) or field_order in (2, 3, 4, 5)
    deinterlace = None
    if interlaced:
        deinterlace = {2: "tff", 4: "tff", 3: "bff", 5: "bff"}.get(field_order, "auto")
        warnings.append(f"interlaced source ({deinterlace}): deinterlaced on input with bwdif, one frame per frame")
    sar = stream.sample_aspect_ratio or cc.sample_aspect_ratio
    sample_aspect_ratio = None
    if sar and sar.numerator > 0 and sar.denominator > 0 and sar != 1:
        sample_aspect_ratio = Fraction(sar.numerator, sar.denominator)
        if "transpose" in ops:
            sample_aspect_ratio = 1 / sample_aspect_ratio
    return DecodePlan(
        matrix=decode_matrix, range=decode_range, source_colour=source_colour, output_colour=output,
        tonemap=tonemap, alpha=alpha, ops=ops, deinterlace=deinterlace,
        sample_aspect_ratio=sample_aspect_ratio, warnings=warnings,
    )


def alpha_decoder(stream: Any) -> tuple[Any, bool]:
    """(decoder, declared): a libvpx decoder that keeps VP8/VP9 alpha, when the stream has alpha.

    FFmpeg's native VP8/VP9 decoders drop the alpha that WebM stores beside the picture
    (``alpha_mode`` = 1); libvpx decodes it as yuva420p. ``decoder`` is None when not needed or
    not available; ``declared`` says whether the stream declares alpha at all.
    """
    meta = {str(k).lower(): str(v) for k, v in (stream.metadata or {}).items()}
    declared = meta.get("alpha_mode") == "1"
    name = stream.codec_context.name
    if not declared or name not in ("vp8", "vp9"):
        return None, declared
    codec = "libvpx-vp9" if name == "vp9" else "libvpx"
    try:
        decoder = av.CodecContext.create(codec, "r")
        if stream.codec_context.extradata:
            decoder.extradata = stream.codec_context.extradata
    except (av.error.FFmpegError, ValueError):
        return None, declared
    return decoder, declared


#: frames at a video's start checked for woven fields when its stream says progressive: hard
#: telecine (3:2 pulldown flagged progressive) and interlaced captures re-muxed without field flags
COMB_CHECK_FRAMES = 24
#: a frame is combed when its lines differ more from the mean of their two neighbours (the other
#: field) than from the mean of the lines two away (their own field): ratio over 1. Measured on the
#: first 60 frames (``comb_ratio``): ≤ 0.82 on every one of the 91 val/train videos, the ten cases'
#: progressive ones and ~50 generated lavfi clips; 1.0–1.65 on woven fields in motion (c02; a PAL
#: 50i capture; MPEG-2 TFF; 3:2 pulldown flagged progressive, 2 of 5 frames)
COMB_RATIO = 1.0
#: share of the checked frames combed for the video to be taken as interlaced (3:2 pulldown: 0.4;
#: c02, whose motion starts late: 0.3)
COMBED_SHARE = 0.1


def comb_ratio(gray: np.ndarray) -> float:
    """How woven a picture's lines look (uint8 or float [H, W] luma, H ≥ 5): mean |y − (y₋₁ + y₊₁)/2|
    over mean |y − (y₋₂ + y₊₂)/2|, every 2nd column (``COMB_RATIO``: over 1 is combed)."""
    y = np.asarray(gray[:, ::2], np.float32)
    other = np.abs(y[2:-2] - 0.5 * (y[1:-3] + y[3:-1])).mean()
    own = np.abs(y[2:-2] - 0.5 * (y[:-4] + y[4:])).mean()
    return float(other / max(float(own), 1e-3))


def field_parity(frames: Sequence[av.VideoFrame], time_base: Fraction) -> str:
    """"tff" or "bff": which field FFmpeg's ``idet`` finds first in woven ``frames`` (single-frame
    counts; ``idet`` alone cannot tell progressive from woven on synthetic pictures, so the caller
    decides that with ``comb_ratio``); "tff" on a tie."""
    graph = av.filter.Graph()
    first = frames[0]
    src = graph.add_buffer(width=first.width, height=first.height, format=first.format, time_base=time_base)
    idet, sink = graph.add("idet"), graph.add("buffersink")
    src.link_to(idet)
    idet.link_to(sink)
    graph.configure()
    last: av.VideoFrame | None = None
    for frame in frames:
        graph.push(frame)
        while True:
            try:
                pulled = graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                break
            assert isinstance(pulled, av.VideoFrame)
            last = pulled
    meta = dict(last.metadata) if last is not None else {}

    def count(key: str) -> float:
        try:
            return float(meta.get(f"lavfi.idet.single.{key}", 0))
        except ValueError:
            return 0.0

    return "bff" if count("bff") > count("tff") else "tff"


def _luma(frame: av.VideoFrame) -> np.ndarray:
    """A picture's luma, uint8 [H, W]: 8-bit planar YUV's first plane as it lies in memory (no
    conversion: at 1080p ~6 ms a frame less), anything else converted to gray."""
    if frame.format.name in ("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p", "nv12", "gray"):
        plane = frame.planes[0]
        rows = np.frombuffer(memoryview(plane), np.uint8)[: plane.height * plane.line_size]
        return rows.reshape(plane.height, plane.line_size)[:, : plane.width]
    return np.asarray(frame.to_ndarray(format="gray"))


def woven_parity(frames: Sequence[av.VideoFrame], time_base: Fraction) -> str | None:
    """The field order (``field_parity``) when at least ``COMBED_SHARE`` of ``frames`` (decoded
    pictures of a stream that says progressive) are combed (``comb_ratio``), else None."""
    if not frames or frames[0].height < 8 or frames[0].format.name.startswith(("pal", "rgb", "bgr", "gbr")):
        return None
    combed = sum(comb_ratio(_luma(f)) > COMB_RATIO for f in frames)
    if combed < max(2, COMBED_SHARE * len(frames)):
        return None
    return field_parity(frames, time_base)


class Deinterlacer:
    """FFmpeg's ``bwdif`` (send_frame: one output frame per input frame) through a PyAV graph:
    every frame, or with ``only_flagged`` the frames flagged interlaced only (``deint=interlaced``;
    the others pass unchanged). ``parity``: ``tff``, ``bff`` or ``auto`` (each frame's own flag)."""

    def __init__(self, first: av.VideoFrame, time_base: Fraction, parity: str, only_flagged: bool = False) -> None:
        self._time_base = time_base
        self._graph = av.filter.Graph()
        src = self._graph.add_buffer(width=first.width, height=first.height, format=first.format,
                                     time_base=time_base)
        deint = "interlaced" if only_flagged else "all"
        bwdif = self._graph.add("bwdif", f"mode=send_frame:parity={parity}:deint={deint}")
        sink = self._graph.add("buffersink")
        src.link_to(bwdif)
        bwdif.link_to(sink)
        self._graph.configure()

    def _drain(self) -> list[av.VideoFrame]:
        out: list[av.VideoFrame] = []
        while True:
            try:
                frame = self._graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return out
            assert isinstance(frame, av.VideoFrame)
            tb = Fraction(frame.time_base) if frame.time_base else self._time_base
            if tb != self._time_base:  # bwdif doubles the time base (for field rate): back to the stream's
                if frame.pts is not None:
                    frame.pts = round(frame.pts * tb / self._time_base)
                frame.duration = round((frame.duration or 0) * tb / self._time_base)
                frame.time_base = self._time_base
            out.append(frame)

    def push(self, frame: av.VideoFrame | None) -> list[av.VideoFrame]:
        """Feed a picture (None at the end) and return the deinterlaced pictures now ready."""
        self._graph.push(frame)
        return self._drain()


FrameConverter = Callable[[av.VideoFrame], np.ndarray]
