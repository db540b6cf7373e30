"""The reconstructor interface: from the kept frames of a video, rebuild every frame.

A reconstructor consumes the kept frames as a stream (``KeptFrame`` in index order) and yields
all ``n_frames`` frames in order, so memory never grows with the video length.

Most reconstructors only need, for a run of missing frames, the kept frames around them; they
derive from ``WindowReconstructor`` and implement ``reconstruct_window``, a pure function of
the kept frames it is handed (those inside the clip plus the last kept frame before the clip
and the first kept frame after it). The ``oracle`` selector uses ``reconstruct_window`` to try
kept-frame patterns.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from framers.errors import UnsupportedOptionError


def position(index: int, before: int, after: int, times: Sequence[float] | None = None) -> float:
    """Where frame ``index`` lies between kept frames ``before`` < ``after``, in [0, 1]: the
    interpolation weight of the later frame.

    By frame count, unless ``times`` (every frame's presentation timestamp, in time-base ticks)
    places it elsewhere by more than one tick: a variable-frame-rate gap is weighted by when the
    frame is shown, not by how many frames lie between (c12: a frame shown for seconds is not a
    mix of content seconds apart). Constant-rate timestamps, rounded to the time base, keep the
    frame-count position exactly (so such video is rebuilt bit for bit as without ``times``).
    Raises IndexError when ``times`` is shorter than ``after + 1``."""
    by_index = (index - before) / (after - before)
    if times is None:
        return by_index
    span = float(times[after]) - float(times[before])
    if span <= 0:
        return by_index
    by_time = (float(times[index]) - float(times[before])) / span
    if abs(by_time - by_index) * span <= 1.0:
        return by_index
    return min(1.0, max(0.0, by_time))


@dataclass(frozen=True)
class KeptFrame:
    """One kept frame: its index in the whole video and its RGB pixels [H, W, 3] uint8."""

    index: int
    rgb: np.ndarray


class Reconstructor(abc.ABC):
    """Rebuilds all frames of a video from its kept frames."""

    name: str = ""
    #: True when the error of a frame depends only on the nearest kept frame on each side
    #: (lets the oracle selector optimise a whole video exactly by dynamic programming).
    local: bool = False

    @property
    def model_versions(self) -> dict[str, str]:
        """Versions of the learned models this reconstructor runs ({} for classical ones)."""
        return {}

    def check_pattern(self, kept_indices: Sequence[int], n_frames: int, clip_len: int) -> None:
        """Raise UnsupportedOptionError when this reconstructor cannot handle a kept pattern."""
        if n_frames > 0 and not kept_indices:
            raise UnsupportedOptionError(f"{self.name}: no kept frames to reconstruct from")

    @abc.abstractmethod
    def reconstruct(
        self, kept: Iterable[KeptFrame], n_frames: int, clip_len: int, times: Sequence[float] | None = None
    ) -> Iterator[np.ndarray]:
        """Yield all n_frames frames ([H, W, 3] uint8) in order; a frame is not modified once
        yielded (``pipeline.reconstruct`` encodes it on another thread). ``times``: every frame's
        presentation timestamp (time-base ticks), for weights by time (``position``); None: by
        frame count."""


class WindowReconstructor(Reconstructor):
    """A reconstructor that works clip by clip from the kept frames around each clip."""

    @abc.abstractmethod
    def reconstruct_window(self, kept: Sequence[KeptFrame], start: int, stop: int,
                           times: Sequence[float] | None = None) -> np.ndarray:
        """Frames start..stop-1 ([stop-start, H, W, 3] uint8) from the kept frames given.

        ``kept`` is sorted by index and holds every kept frame in [start, stop) plus at most
        the nearest kept frame before ``start`` and the nearest after ``stop - 1``.
        Kept frames inside the range must come back unchanged. ``times``: as ``reconstruct``
        (indexed by frame index of the whole video).
        """

    def reconstruct(
        self, kept: Iterable[KeptFrame], n_frames: int, clip_len: int, times: Sequence[float] | None = None
    ) -> Iterator[np.ndarray]:
        for start, stop, window in iter_clip_windows(kept, n_frames, clip_len):
            yield from self.reconstruct_window(window, start, stop, times)


def iter_clip_windows(
    kept: Iterable[KeptFrame], n_frames: int, clip_len: int
) -> Iterator[tuple[int, int, list[KeptFrame]]]:
    """Group a stream of kept frames into per-clip windows with one frame of context each side.

    Yields (start, stop, window) per clip; holds at most one clip of kept frames plus the
    lookahead frame in memory.
    """
    stream = iter(kept)
    previous: KeptFrame | None = None
    lookahead: KeptFrame | None = next(stream, None)
    for start in range(0, n_frames, clip_len):
        stop = min(start + clip_len, n_frames)
        inside: list[KeptFrame] = []
        while lookahead is not None and lookahead.index < stop:
            if lookahead.index >= start:
                inside.append(lookahead)
            else:  # a kept frame before this clip that is not yet the context: becomes it
                previous = lookahead
            lookahead = next(stream, None)
        window = ([previous] if previous is not None else []) + inside
        if lookahead is not None:
            window.append(lookahead)
        if not window:
            raise UnsupportedOptionError("no kept frames to reconstruct from")
        yield start, stop, window
        if inside:
            previous = inside[-1]
