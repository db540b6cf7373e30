"""Region refresh (issue 15): a second x264 stream that corrects the worst blocks of the rebuilt frames.

The encoder knows exactly what the decoder will rebuild (it runs the same reconstructor on the
same decoded kept frames), so it can measure where rebuilt frames fail and send the source there.
This is the spatial half of the Nokia learned P-frame codec's idea (Zou et al.: an importance map
decides where bits go) and of CARV's chunk refresh (Chhabra & Yang: regions refreshed by
significance), on the encoder's exact error map (``framers.significance``, method ``exact``):

1. Per group of ``clips_per_group`` clips of ``clip_len`` frames, the MSE of every
   ``BLOCK``×``BLOCK`` block of every dropped frame against the source; the worst ``share`` of
   those blocks are refreshed (``choose_blocks``), so a clip whose rebuild fails more gets more.
2. Every dropped frame becomes one picture of the refresh stream, in the codec's YUV: per plane
   ``128 + a·(source − rebuilt)`` of the two frames' YUV planes, with ``a`` an attention map, 1
   in its refreshed blocks and falling linearly to 0 over ``FEATHER`` pixels around them, exactly
   128 elsewhere (``attention``, ``residual_picture``). x264 codes the flat parts as skipped
   blocks (almost free; 128 is its prediction where nothing precedes, so they decode exactly at
   any quantiser) and predicts moving residuals from earlier pictures.
3. The decoder adds the decoded picture, less 128, to every dropped frame it rebuilt, in the
   stream's YUV (``apply_residual_yuv``): the rebuilt frame goes to YUV as the encoder's
   (``adaptive.coding.to_codec_yuv``), the planes are added, and the sum comes back to RGB
   (``rgb.to_rgb``). (The first layers coded an RGB residual around mid-grey, whose YUV is not
   128 in every plane: at a starved bitrate its flat parts decoded to 128 and shifted whole
   frames; those layers, without ``"residual": "yuv"`` in the manifest, still decode.) Adding in
   RGB instead keeps the rebuilt frame's fine chroma error in the refreshed blocks, which the
   residual's 4:2:0 chroma cannot cancel:
   on a 4:2:0 source that left those frames ~1.5 dB below what the 4:2:0 output file then
   showed. Since bundle v5 a block map (``framers.refresh_map``: which blocks each picture
   refreshes) is stored and the sum is taken only in those blocks and their ramp (``support``),
   the rest of the frame left as rebuilt: a starved stream skips blocks and carries earlier
   pictures' residual over, which added everywhere made a small budget worse than no layer. The sum is
   ``a·source + (1 − a)·rebuilt`` up to coding: the form of the Nokia codec's mixing of a refreshed
   and a predicted frame (Eq. 7–8), with a fixed map that removes the hard seam at block edges
   instead of a learned one. Its 4-pixel ramp gained on each of 6 train clips against a hard edge
   (BENCHMARKS.md section 8b). The stream is x264 ``tune=psnr`` (``TUNE``).

Measured gains and losses at equal bytes: BENCHMARKS.md section 8b (on val: +1.06 dB mean against
plain every-4th-frame; losses on static cameras; no help against x264).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np

from framers.h264_sei import SeiDropper
from framers.significance import frame_error, pool_pixels

#: block side (pixels) of the refresh decision: CARV's chunk and x264's macroblock
BLOCK = 16
#: the refresh stream's CRF, relative to the kept frames' (bench/refresh_tune.py, BENCHMARKS.md
#: section 8b: on 6 train clips with the 4-pixel ramp and the YUV residual, +6 gained 0.05 dB on
#: +4 in the mean (4 of 6 clips), +2 lost 0.10)
CRF_OFFSET = 6
#: the refresh picture's attention ramp (pixels) outside its blocks: the residual is weighted by
#: a map that is 1 in the chosen blocks and falls linearly to 0 over this many pixels around
#: them, so the decoder's sum is ``a·source + (1 − a)·rebuilt`` (the form of Nokia's mixing,
#: Eq. 7–8, with a fixed map instead of a learned one); 0: a hard block edge. Chosen on 6 train
#: clips (bench/refresh_tune.py, BENCHMARKS.md section 8b): 4 px gained on all 6 against a hard
#: edge (+0.01 to +0.33 dB, mean +0.15), 8 px was no better
FEATHER = 4
#: the VBV buffer of the byte-budget form (``RefreshWriter(bits_per_picture=…)``), in pictures
VBV_PICTURES = 16
#: the smallest VBV rate and buffer (bits): x264 takes them in whole kbit
MIN_VBV_BITS = 1000
#: the zero of a residual plane: x264's DC prediction where no neighbour exists, so a picture
#: that is NEUTRAL away from its blocks decodes to exactly NEUTRAL there at any quantiser (the
#: first layers coded an RGB residual around mid-grey, MID, whose YUV is not 128 in every
#: plane: a starved stream drifted to 128 and offset whole frames)
NEUTRAL = 128
#: mid-grey: the zero of those first (RGB-residual) layers, ``mid_grey_yuv``
MID = 128
#: the manifest's ``residual`` value of a layer coded in YUV around NEUTRAL (absent: the first,
#: RGB-residual layers)
YUV_RESIDUAL = "yuv"
#: a block is refreshed only if its error exceeds this many times the kept frames' coding error
#: at the same place (``local_coding_error``; 0: no floor)
FLOOR_FACTOR = 0.0
#: how blocks are ranked (``block_scores``): ``error`` or ``excess`` over the local coding error
CRITERION = "error"
#: x264's ``tune`` of the refresh stream (None: x264's defaults). ``psnr`` turns off adaptive
#: quantisation and psychovisual RD, which weigh the residual picture's own texture, not the
#: texture of the frame it corrects; on 6 train clips it gained on all 6, +0.03 to +0.53 dB, mean
#: +0.20 (bench/refresh_tune.py, BENCHMARKS.md section 8b). The kept frames keep x264's defaults.
TUNE: str | None = "psnr"
#: x264's preset of the refresh stream
PRESET = "medium"
#: at most this many clips of ``clip_len`` frames share one choice of blocks (``encode_refresh``,
#: ``clips_per_group``), so a clip whose rebuild fails more gets more of the group's blocks. On
#: the first 4 of the 6 train clips (48 frames: one group) against one clip per choice: +0.01 to
#: +0.11 dB, all 4 gaining (bench/refresh_tune.py, BENCHMARKS.md section 8b)
GROUP_CLIPS = 4
#: the encoder holds a group's dropped frames (source and rebuilt, RGB): fewer clips per group
#: where their frames would pass this many bytes (1080p: 4 clips of every-4th ~0.6 GiB; 4K: 1)
GROUP_MAX_BYTES = 1 << 30
#: more x264 options of the refresh stream (``x264-params``, "key=value:…"; None: none)
X264_PARAMS: str | None = None


def block_errors(source: np.ndarray, rebuilt: np.ndarray, block: int = BLOCK) -> np.ndarray:
    """Mean squared RGB error per block: float64 [ceil(H/block), ceil(W/block)] of two uint8
    [H, W, 3] frames (ValueError when their shapes differ)."""
    return pool_pixels(frame_error(source, rebuilt), block)


def choose_blocks(errors: Sequence[np.ndarray], share: float, floor: float = 0.0) -> list[np.ndarray]:
    """The worst ``share`` of all blocks of a group of frames: bool masks [rows, cols], one per
    frame of ``errors`` (float [rows, cols] each), ``round(share · total)`` blocks set in all,
    largest errors first (ties: the earlier block), none whose error is ≤ ``floor``.
    ValueError for ``share`` outside [0, 1]."""
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    if not errors:
        return []
    flat = np.concatenate([e.ravel() for e in errors])
    count = round(share * flat.size)
    chosen = np.zeros(flat.size, dtype=bool)
    if count > 0:
        chosen[np.argsort(-flat, kind="stable")[:count]] = True
        chosen &= flat > floor
    masks, start = [], 0
    for e in errors:
        masks.append(chosen[start:start + e.size].reshape(e.shape))
        start += e.size
    return masks


def expand(mask: np.ndarray, height: int, width: int, block: int = BLOCK) -> np.ndarray:
    """A block mask [rows, cols] as a pixel mask bool [height, width] (edge blocks cut)."""
    return np.repeat(np.repeat(mask, block, axis=0), block, axis=1)[:height, :width]


def attention(inside: np.ndarray, feather: int) -> np.ndarray:
    """The mixing weight of the refreshed source per pixel: float32 [H, W], 1 where ``inside``
    (bool [H, W]), ``1 − d / (feather + 1)`` at Euclidean distance ``d`` ≤ ``feather`` pixels
    from it, 0 beyond."""
    if feather <= 0 or inside.all() or not inside.any():
        return inside.astype(np.float32)
    import cv2

    distance = cv2.distanceTransform((~inside).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return np.clip(1.0 - distance / (feather + 1.0), 0.0, 1.0).astype(np.float32)


def residual_picture(source: np.ndarray, rebuilt: np.ndarray, mask: np.ndarray, block: int = BLOCK,
                     feather: int | None = None) -> av.VideoFrame:
    """One refresh picture in the codec's YUV (``to_codec_yuv``: 4:2:0 for even sizes, else
    4:4:4) of two RGB uint8 [H, W, 3] frames: per plane ``NEUTRAL + a·(source − rebuilt)`` of
    their YUV planes, rounded and clipped to 0–255, with ``a`` the ``attention`` map of the blocks
    of ``mask`` (bool [rows, cols]) ramped over ``feather`` pixels (default ``FEATHER``; averaged
    over each chroma sample's pixels): exactly ``NEUTRAL`` away from the chosen blocks."""
    import cv2

    from framers.adaptive.coding import planes_of, to_codec_yuv

    h, w = source.shape[:2]
    weight = attention(expand(mask, h, w, block), FEATHER if feather is None else feather)
    picture = to_codec_yuv(rebuilt)
    for plane, target in zip(planes_of(picture), planes_of(to_codec_yuv(source)), strict=True):
        ph, pw = plane.shape
        a = weight if (ph, pw) == (h, w) else cv2.resize(weight, (pw, ph), interpolation=cv2.INTER_AREA)
        delta = (target.astype(np.float32) - plane) * a
        plane[...] = np.clip(np.rint(delta + NEUTRAL), 0, 255)
    return picture


@functools.lru_cache(maxsize=8)
def mid_grey_yuv(pix_fmt: str) -> tuple[int, ...]:
    """The YUV values (per plane) a mid-grey RGB picture gets through ``to_codec_yuv``: the zero
    of a residual picture in that format."""
    from framers.adaptive.coding import planes_of, to_codec_yuv

    grey = to_codec_yuv(np.full((2, 2, 3), MID, np.uint8))
    if grey.format.name != pix_fmt:
        raise ValueError(f"mid-grey came out as {grey.format.name}, not {pix_fmt}")
    return tuple(int(p[0, 0]) for p in planes_of(grey))


def support(mask: np.ndarray, height: int, width: int, feather: int, block: int = BLOCK) -> np.ndarray:
    """Where a refresh picture may differ from NEUTRAL: bool [height, width], the blocks of
    ``mask`` (bool [rows, cols]) and their ``feather``-pixel ramp (``attention`` > 0: within a
    Euclidean distance < ``feather`` + 1 of a block pixel). A dilation by that disk, the same set
    as the ramp's distance transform at a fifth of its time at 1080p (the decoder's cost)."""
    inside = expand(mask, height, width, block)
    if feather <= 0 or not inside.any():
        return inside
    import cv2

    radius = feather + 1
    yy, xx = np.mgrid[-feather:feather + 1, -feather:feather + 1]
    disk = (yy * yy + xx * xx < radius * radius).astype(np.uint8)
    return np.asarray(cv2.dilate(inside.view(np.uint8), disk, borderType=cv2.BORDER_CONSTANT, borderValue=0)) > 0


def apply_residual_yuv(rebuilt: np.ndarray, residual: av.VideoFrame, zero: Sequence[int] | None = None,
                       inside: np.ndarray | None = None) -> np.ndarray:
    """The refreshed frame, uint8 [H, W, 3]: ``rebuilt`` (RGB uint8 [H, W, 3]) in the residual's
    YUV format (``to_codec_yuv``, as the encoder converted it), plus the decoded residual
    picture's planes less ``zero`` per plane (default ``NEUTRAL`` in each; the first layers'
    ``mid_grey_yuv``), clipped to 0–255 per plane, back to RGB (``rgb.to_rgb``). ``inside``
    (bool [H, W], ``support``): add only there (a chroma sample where any of its pixels is), so
    what x264 carries over from earlier pictures elsewhere (a starved stream skips blocks) is
    not added, and return ``rebuilt`` itself outside those chroma samples; None: everywhere, the
    whole frame through the YUV (layers without a block map). ValueError when the sizes or
    formats differ."""
    from framers.adaptive.coding import planes_of, to_codec_yuv
    from framers.rgb import to_rgb

    base = to_codec_yuv(rebuilt)
    if (base.width, base.height, base.format.name) != (residual.width, residual.height, residual.format.name):
        raise ValueError(f"refresh picture {residual.width}x{residual.height} {residual.format.name} does not "
                         f"match the frame {base.width}x{base.height} {base.format.name}")
    planes = planes_of(base)
    h, w = rebuilt.shape[:2]
    chroma = None  # the chroma planes' mask, once for both
    if inside is not None and planes[-1].shape != (h, w):
        chroma = _subsampled(inside, planes[-1].shape)
    for plane, delta, level in zip(planes, planes_of(residual), zero or (NEUTRAL,) * len(planes), strict=True):
        total = plane.astype(np.int16) + delta
        total -= level
        if inside is None:
            plane[...] = np.clip(total, 0, 255)
            continue
        here = inside if plane.shape == (h, w) else chroma
        plane[here] = np.clip(total[here], 0, 255)
    if inside is None:
        return to_rgb(base)
    # elsewhere the rebuilt frame as it was: a trip through 4:2:0 and back would cost it fine
    # colour (measured: -0.5 dB on a 2 s val cut at 10 kbit/s, where the layer itself gained)
    out = rebuilt.copy()
    touched = inside
    if chroma is not None:  # whole chroma samples of the touched pixels
        ph, pw = chroma.shape
        touched = np.repeat(np.repeat(chroma, -(-h // ph), 0), -(-w // pw), 1)[:h, :w]
    np.copyto(out, to_rgb(base), where=touched[..., None])
    return out


def _subsampled(inside: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A pixel mask [H, W] on a chroma plane of ``shape``: a sample is in when any pixel it covers is."""
    import cv2

    ph, pw = shape[:2]
    return np.asarray(cv2.resize(inside.astype(np.float32), (pw, ph), interpolation=cv2.INTER_AREA)) > 0


def iter_pictures(path: Path, expected: int) -> Iterator[av.VideoFrame]:
    """The decoded pictures of a refresh stream (Annex B H.264), in order; ValueError when it
    holds another number than ``expected``, av.error.FFmpegError when it does not decode."""
    count = 0
    with av.open(str(path), format="h264") as container:
        for frame in container.decode(video=0):
            yield frame
            count += 1
    if count != expected:
        raise ValueError(f"refresh stream holds {count} pictures, the manifest says {expected}")


def layer_encoder(width: int, height: int, crf: int, bits_per_picture: float | None = None) -> av.VideoCodecContext:
    """The refresh stream's x264 encoder (opened on its first picture): preset ``PRESET``, tune
    ``TUNE``, ``X264_PARAMS``; at ``crf`` or, with ``bits_per_picture`` (> 0), x264's one-pass
    average-bitrate control at that many bits per picture on average with a VBV buffer of
    ``VBV_PICTURES`` pictures at the same rate, so that the bytes follow the budget along the
    stream, not only in total (a VBV capped at the average rate: x264 reports it as ``rc=cbr``,
    without filler data)."""
    from framers.adaptive.coding import x264_context

    encoder = x264_context(width, height, crf, PRESET)
    extra = ({"tune": TUNE} if TUNE else {}) | ({"x264-params": X264_PARAMS} if X264_PARAMS else {})
    encoder.options = encoder.options | extra
    if bits_per_picture is not None:
        # bits per second of the stream; x264 takes its VBV in whole kbit (0 fails to open)
        rate = max(MIN_VBV_BITS, round(bits_per_picture / float(encoder.time_base)))
        buffer = max(MIN_VBV_BITS, int(rate * VBV_PICTURES * float(encoder.time_base)))
        encoder.options = {"preset": PRESET, "maxrate": str(rate), "bufsize": str(buffer)} | extra
        encoder.bit_rate = rate
    return encoder


class RefreshWriter:
    """Writes refresh pictures (``residual_picture``: the codec's YUV, 4:2:0 unless the size is
    odd) as one x264 stream (``layer_encoder``: at ``crf``, or at ``bits_per_picture`` on
    average), Annex B, without x264's SEI text (``framers.h264_sei``: a fresh-user trial found it
    was 32 % of a 10 kbit/s layer on a 2 s clip, and it hid a starved layer from the bits-per-block
    warning), to ``path``. ``close`` returns the stream's bytes."""

    def __init__(self, path: Path, width: int, height: int, crf: int, bits_per_picture: float | None = None) -> None:
        self.path = Path(path)
        self._encoder = layer_encoder(width, height, crf, bits_per_picture)
        self._sei = SeiDropper()
        self._file: BinaryIO = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        self.count = 0

    def _put(self, packets: Sequence[av.Packet]) -> None:
        for kept in self._sei.filter(packets):
            self._file.write(bytes(kept))

    def write(self, frame: av.VideoFrame) -> None:
        """Code one picture in the codec's YUV (``residual_picture``)."""
        frame.pts = self.count
        self.count += 1
        self._put(self._encoder.encode(frame))

    def close(self) -> int:
        try:
            self._put(self._encoder.encode(None))
            for kept in self._sei.flush():  # already through the filter
                self._file.write(bytes(kept))
        finally:
            self._file.close()
        return self.path.stat().st_size


def local_coding_error(index: int, kept_errors: Sequence[tuple[int, np.ndarray]]) -> np.ndarray:
    """The kept frames' coding error where dropped frame ``index`` is rebuilt from: the block
    errors (float64 [rows, cols]) of the kept frames around it, ``(index, map)`` in increasing
    index, mixed by position like a linear interpolation (the previous one alone when no later
    one is known yet). ValueError when no kept frame precedes ``index``."""
    before = [(k, e) for k, e in kept_errors if k < index]
    if not before:
        raise ValueError(f"no kept frame before frame {index}")
    a, left = before[-1]
    after = [(k, e) for k, e in kept_errors if k > index]
    if not after:
        return left
    b, right = after[0]
    t = (index - a) / (b - a)
    return (1.0 - t) * left + t * right


def block_scores(errors: np.ndarray, local: np.ndarray | None, criterion: str, floor_factor: float) -> np.ndarray:
    """How much a dropped frame's blocks deserve a refresh: float64 [rows, cols] from their errors
    and the ``local`` coding error of the kept frames (``local_coding_error``; needed for the
    ``excess`` criterion and a floor): ``error`` ranks by the block's MSE, ``excess`` by its MSE
    less the local coding error (what interpolation lost; the coding loss is cheaper to buy back
    with a lower kept-frame CRF). With ``floor_factor`` > 0 a block whose error is at most that many
    times its local coding error scores 0 (never chosen). ValueError for another criterion."""
    if criterion not in ("error", "excess"):
        raise ValueError(f"unknown refresh criterion {criterion!r}")
    if local is None:
        if criterion == "excess" or floor_factor > 0:
            raise ValueError("the excess criterion and a floor need the local coding error")
        return errors
    scores = errors - local if criterion == "excess" else errors.copy()
    if floor_factor > 0:
        scores[errors <= floor_factor * local] = 0.0
    return scores


def clips_per_group(height: int, width: int, clip_len: int) -> int:
    """How many clips share one choice of blocks for a video of ``height`` × ``width`` pixels:
    ``GROUP_CLIPS``, fewer where a group's frames (every frame of it held as source and rebuilt
    RGB uint8, the worst case) would pass ``GROUP_MAX_BYTES``; at least 1."""
    per_clip = clip_len * 2 * height * width * 3
    return max(1, min(GROUP_CLIPS, GROUP_MAX_BYTES // max(1, per_clip)))


def encode_refresh(
    frames: Iterator[tuple[np.ndarray, np.ndarray]],
    kept: set[int],
    n_frames: int,
    clip_len: int,
    share: float,
    write: Callable[[av.VideoFrame], None],
    write_map: Callable[[np.ndarray], None] | None = None,
) -> tuple[int, int]:
    """Make the refresh pictures of a video from (source, rebuilt) RGB uint8 [H, W, 3] pairs in
    frame order (``n_frames`` of them; ``kept``: the kept indices, which get no picture) and hand
    them to ``write`` in order: per group of ``clips_per_group`` clips of ``clip_len`` frames, the
    ``share`` of the dropped frames' blocks with the highest ``block_scores`` (``CRITERION``,
    ``FLOOR_FACTOR``) are refreshed; ``write_map`` gets each picture's block mask (bool [rows, cols]). Returns (pictures
    written, blocks refreshed). Raises ValueError when ``frames`` yields another count than
    ``n_frames``."""
    pictures = refreshed = seen = 0
    group_len = clip_len  # frames per block choice, set from the first frame's size
    group: list[tuple[int, np.ndarray, np.ndarray]] = []
    kept_errors: list[tuple[int, np.ndarray]] = []  # (index, block coding errors) of kept frames
    local_needed = CRITERION != "error" or FLOOR_FACTOR > 0

    def flush() -> None:
        nonlocal pictures, refreshed, kept_errors
        scores = [block_scores(block_errors(s, r, BLOCK), local_coding_error(i, kept_errors) if local_needed else None,
                               CRITERION, FLOOR_FACTOR) for i, s, r in group]
        masks = choose_blocks(scores, share)
        for (_, src, rebuilt), mask in zip(group, masks, strict=True):
            write(residual_picture(src, rebuilt, mask, BLOCK))
            if write_map is not None:
                write_map(mask)
            pictures += 1
            refreshed += int(mask.sum())
        group.clear()
        kept_errors = kept_errors[-1:]  # the next clip's frames are rebuilt from the last one on

    for index, (src, rebuilt) in enumerate(frames):
        seen += 1
        if index == 0:
            group_len = clip_len * clips_per_group(src.shape[0], src.shape[1], clip_len)
        if index not in kept:
            group.append((index, src, rebuilt))
        elif local_needed:
            kept_errors.append((index, block_errors(src, rebuilt, BLOCK)))
        if (index + 1) % group_len == 0:
            flush()
    flush()
    if seen != n_frames:
        raise ValueError(f"refresh pass saw {seen} frames, the bundle holds {n_frames}")
    return pictures, refreshed
