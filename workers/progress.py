"""Throttled progress reporting from a codec callback into the durable record."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from core.storage import StorageError

log = logging.getLogger(__name__)


class ProgressReporter:
    """Callable(fraction) handed to the codec; writes at most every `min_interval_s` seconds.

    `check` runs at every call (not throttled) and may raise to stop the job.
    Every write is an object-storage PUT, so writing per frame would cost more than the work.
    A failed write is logged and skipped: progress is advisory and must not fail a job. Other
    exceptions (notably "the video was deleted") propagate and stop the job.
    """

    def __init__(
        self, write: Callable[[float], None], min_interval_s: float, check: Callable[[], None] | None = None
    ) -> None:
        self._write = write
        self._check = check
        self._min_interval_s = min_interval_s
        self._last_time = float("-inf")
        self._last_value = -1.0

    def __call__(self, fraction: float) -> None:
        if self._check is not None:
            self._check()  # may raise (e.g. the job was canceled): stops the codec
        value = round(min(max(float(fraction), 0.0), 1.0), 4)
        now = time.monotonic()
        if value == self._last_value or (now - self._last_time < self._min_interval_s and value < 1.0):
            return
        self._last_time, self._last_value = now, value
        try:
            self._write(value)
        except StorageError as exc:
            log.warning("progress write failed (ignored): %s", exc)
