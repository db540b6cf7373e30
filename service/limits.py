"""Limits on what an upload may be, checked on the probed video before any job is queued."""

from __future__ import annotations

from typing import Protocol

from core.settings import Settings


class LimitExceeded(Exception):
    """The video is a valid video but larger than this service accepts."""


class _Info(Protocol):
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def frames(self) -> int: ...
    @property
    def duration(self) -> float: ...


def check_resolution(width: int, height: int, settings: Settings) -> None:
    long_side, short_side = max(width, height), min(width, height)
    max_long, max_short = max(settings.max_width, settings.max_height), min(settings.max_width, settings.max_height)
    if long_side > max_long or short_side > max_short:
        raise LimitExceeded(
            f"resolution {width}x{height} exceeds the limit of {max_long}x{max_short} (either orientation)"
        )


def check_video_limits(info: _Info, settings: Settings) -> None:
    check_resolution(info.width, info.height, settings)
    if info.duration > settings.max_duration_s:
        raise LimitExceeded(f"duration {info.duration:.1f} s exceeds the limit of {settings.max_duration_s:g} s")
    if info.frames > settings.max_frames:
        raise LimitExceeded(f"{info.frames} frames exceed the limit of {settings.max_frames} frames")
    if info.frames < 1 or info.width < 1 or info.height < 1:
        raise LimitExceeded("the video has no frames")
