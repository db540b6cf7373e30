"""Time estimates for `GET /jobs/{id}` (`eta_s`) and the `Retry-After` of a 202."""

from __future__ import annotations

import math
from datetime import datetime

from core.records import Status, utcnow

MIN_PROGRESS = 0.02  # below this, elapsed / progress says little
MAX_RETRY_AFTER_S = 60


def eta_seconds(
    status: Status, progress: float, started_at: datetime | None, now: datetime | None = None
) -> float | None:
    """Seconds until a running job is done, from its pace so far (elapsed x remaining / done);
    None when it is not running or too little is done to tell."""
    if status is not Status.running or started_at is None or progress < MIN_PROGRESS:
        return None
    elapsed = ((now or utcnow()) - started_at).total_seconds()
    if elapsed <= 0:
        return None
    return round(elapsed * (1.0 - min(progress, 1.0)) / progress, 1)


def retry_after(eta_s: float | None, default_s: int) -> int:
    """Retry-After seconds: the estimate (at least 1 s, at most a minute, so a slowed job is
    looked at again), or the configured default without one."""
    if eta_s is None:
        return default_s
    return max(1, min(MAX_RETRY_AFTER_S, math.ceil(eta_s)))
