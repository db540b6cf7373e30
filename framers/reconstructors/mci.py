"""``mci``: FFmpeg's motion-compensated frame interpolation (the ``minterpolate`` filter).

The kept frames are fed to a filter graph with pts in units of 1/R (their frame index), declared
as a video of rate R/N where N is the typical gap, and ``minterpolate`` (mi_mode=mci,
mc_mode=aobmc, me_mode=bidir, vsbmc=1) emits frames at rate R, i.e. one per original frame index.
The filter interpolates by timestamp, so uneven gaps work too (the codec's extra kept frames at
scene cuts and at the video's end, and the adaptive mode's per-segment strides). Nothing is
buffered beyond the filter's own four-frame window, so memory does not grow with the video.

Pixels travel losslessly: ``minterpolate`` only takes planar YUV, and an RGB→YUV conversion
would round every pixel. Instead the G, B, R planes are handed over *labelled* as the Y, U, V
planes of a yuv444p frame (no subsampling, nothing converted). The filter runs its motion
search on the first plane (G, the channel closest to luma) and applies the same motion to all
three planes, which is exactly what we want for RGB. Kept frames are replaced by the originals
anyway; frames before the first kept frame repeat it, frames after the last kept frame hold it.
"""

from __future__ import annotations

import itertools
from collections.abc import Generator, Iterable, Iterator, Sequence
from fractions import Fraction

import av
import av.error
import numpy as np
from av.filter import Graph

from framers.errors import UnsupportedOptionError
from framers.reconstructors.base import KeptFrame, Reconstructor

#: Output rate handed to the filter. Only pts ratios matter to minterpolate (it interpolates by
#: timestamp), so any fixed rate works; an integer keeps every pts exact.
FILTER_RATE = 25
#: minterpolate refuses smaller frames (measured with FFmpeg 8: 32x32 works, 31x31 or 64x17 not).
MIN_SIDE = 32
MINTERPOLATE_OPTIONS = {"mi_mode": "mci", "mc_mode": "aobmc", "me_mode": "bidir", "vsbmc": "1"}


def typical_gap(kept_indices: Sequence[int]) -> int:
    """The gap the filter's input rate is declared with: the most common gap between the given
    kept frames (the larger on a tie), at least 1."""
    gaps = [b - a for a, b in itertools.pairwise(kept_indices) if b > a]
    if not gaps:
        return 1
    return max(set(gaps), key=lambda g: (gaps.count(g), g))


def _to_planes(rgb: np.ndarray) -> av.VideoFrame:
    """RGB [H, W, 3] -> a yuv444p frame whose Y, U, V planes hold G, B, R (see module doc)."""
    planes = np.ascontiguousarray(np.moveaxis(rgb[..., [1, 2, 0]], -1, 0))
    return av.VideoFrame.from_ndarray(planes, format="yuv444p")


def _from_planes(frame: av.VideoFrame) -> np.ndarray:
    planes = frame.to_ndarray()  # [3, H, W]: G, B, R
    return np.ascontiguousarray(np.moveaxis(planes[[2, 0, 1]], 0, -1))


class _Interpolator:
    """One minterpolate filter graph: push kept frames at index pts, pull one frame per index."""

    def __init__(self, width: int, height: int, stride: int, scd: str) -> None:
        if min(width, height) < MIN_SIDE:
            raise UnsupportedOptionError(
                f"mci: {width}x{height} frames are too small for minterpolate "
                f"(needs at least {MIN_SIDE}x{MIN_SIDE}); use 'linear'"
            )
        self.time_base = Fraction(1, FILTER_RATE)
        self.graph = Graph()
        # Declared input rate R/N: the kept frames are every Nth frame of a rate-R video.
        source = self.graph.add(
            "buffer",
            f"video_size={width}x{height}:pix_fmt=yuv444p:time_base=1/{FILTER_RATE}"
            f":pixel_aspect=1/1:frame_rate={FILTER_RATE}/{stride}",
        )
        options = ":".join(f"{k}={v}" for k, v in {**MINTERPOLATE_OPTIONS, "scd": scd}.items())
        interp = self.graph.add("minterpolate", f"fps={FILTER_RATE}:{options}")
        sink = self.graph.add("buffersink")
        source.link_to(interp)
        interp.link_to(sink)
        try:
            self.graph.configure()
        except av.error.FFmpegError as exc:
            raise UnsupportedOptionError(f"mci: minterpolate cannot run on {width}x{height}: {exc}") from exc
        self._source = source
        self._sink = sink

    def push(self, rgb: np.ndarray | None, index: int = 0) -> None:
        if rgb is None:
            self._source.push(None)
            return
        frame = _to_planes(rgb)
        frame.pts = index
        frame.time_base = self.time_base
        self._source.push(frame)

    def pull(self) -> Iterator[tuple[int, np.ndarray]]:
        """Every frame the filter has ready now, as (frame index, RGB)."""
        while True:
            try:
                frame = self._sink.pull()
            except (BlockingIOError, EOFError):  # nothing more until the next push / the end
                return
            assert isinstance(frame, av.VideoFrame) and frame.pts is not None
            yield int(frame.pts), _from_planes(frame)


class MCIReconstructor(Reconstructor):
    """Motion-compensated interpolation between evenly spaced kept frames (FFmpeg minterpolate)."""

    name = "mci"
    local = False  # a frame depends on up to four kept frames (bidirectional motion search)

    def __init__(self, scd: str = "fdiff") -> None:
        # scd=fdiff (FFmpeg's default): at a detected scene cut the filter repeats the nearer
        # kept frame instead of blending two unrelated pictures. The test compares each span's
        # mean absolute difference with the previous span's, so the first span of a video with
        # large motion (mean difference >= 10 % of full scale) also counts as a cut. "none"
        # interpolates everywhere.
        self.scd = scd

    def check_pattern(self, kept_indices: Sequence[int], n_frames: int, clip_len: int) -> None:
        super().check_pattern(kept_indices, n_frames, clip_len)
        if any(b <= a for a, b in itertools.pairwise(kept_indices)):
            raise UnsupportedOptionError("mci: kept frame indices must be strictly increasing")

    def reconstruct(self, kept: Iterable[KeptFrame], n_frames: int, clip_len: int,
                    times: Sequence[float] | None = None) -> Iterator[np.ndarray]:
        """FFmpeg ``minterpolate`` over a constant-rate stream of the kept frames: positions by
        frame count (``times`` is not used: the filter knows only its own frame rate)."""
        stream = iter(kept)
        # The first three kept frames fix the pattern (free first gap, then stride N).
        head = [frame for _, frame in zip(range(3), stream, strict=False)]
        if not head:
            raise UnsupportedOptionError("mci: no kept frames to reconstruct from")
        first = head[0]
        # Frames before the first kept frame: nothing to interpolate from, repeat it.
        for _ in range(min(first.index, n_frames)):
            yield first.rgb
        if len(head) == 1:
            for _ in range(first.index, n_frames):
                yield first.rgb
            return
        stride = typical_gap([frame.index for frame in head])
        last = yield from self._interpolate(head, stream, stride)
        for _ in range(last.index + 1, n_frames):  # after the last kept frame: hold it
            yield last.rgb

    def _interpolate(
        self, head: list[KeptFrame], rest: Iterator[KeptFrame], stride: int
    ) -> Generator[np.ndarray, None, KeptFrame]:
        """Yield frames head[0].index .. last kept index; return the last kept frame."""
        height, width = head[0].rgb.shape[:2]
        interp = _Interpolator(width, height, stride, self.scd)
        pending: dict[int, np.ndarray] = {}  # kept originals waiting for their slot (at most ~4)
        expected = head[0].index
        limit = 1 << 62

        def emit() -> Iterator[np.ndarray]:
            nonlocal expected
            for index, rgb in interp.pull():
                if index > limit:
                    continue  # produced from the padding frame, past the last kept frame
                if index != expected:
                    raise UnsupportedOptionError(
                        f"mci: minterpolate returned frame {index}, expected {expected}"
                    )
                original = pending.pop(index, None)
                # Kept frames come back as stored (the filter's copy is exact too, but this
                # does not depend on it).
                yield original if original is not None else rgb
                expected += 1

        previous: KeptFrame | None = None
        for frame in itertools.chain(head, rest):
            if previous is not None and frame.index <= previous.index:
                raise UnsupportedOptionError("mci: kept frame indices must be strictly increasing")
            if frame.rgb.shape[:2] != (height, width):
                raise UnsupportedOptionError("mci: kept frames change size mid-video")
            pending[frame.index] = frame.rgb
            interp.push(frame.rgb, frame.index)
            yield from emit()
            previous = frame
        assert previous is not None
        # minterpolate emits the frames of a span only once it holds the kept frame after that
        # span, and FFmpeg 8's filter does not flush the last span at EOF: pad with a copy one
        # stride later and drop whatever it yields past the real last kept frame.
        limit = previous.index
        interp.push(previous.rgb, previous.index + stride)
        yield from emit()
        interp.push(None)
        yield from emit()
        if expected != previous.index + 1:
            raise UnsupportedOptionError(
                f"mci: minterpolate stopped at frame {expected}, expected {previous.index + 1}"
            )
        return previous
