"""Job metrics kept in Redis: workers record them, the gateway's /metrics exposes them.

Workers may run on other machines (a GPU box) than the gateway, so in-process Prometheus
counters in the workers would be invisible to a scrape of the gateway. A few Redis hash
counters are cheap, shared, and survive worker restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from redis import Redis

KEY = "framers:metrics:jobs"
DURATION_BUCKETS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, math.inf)


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def record_job(conn: Redis, queue: str, outcome: str, seconds: float, frames: int = 0) -> None:
    """Count one finished job run (outcome: done / failed / retry) and the frames it processed."""
    with conn.pipeline(transaction=False) as pipe:
        for bound in DURATION_BUCKETS:
            if seconds <= bound:  # cumulative buckets, as Prometheus exposes them
                pipe.hincrby(KEY, f"bucket|{queue}|{outcome}|{_le(bound)}", 1)
        pipe.hincrbyfloat(KEY, f"sum|{queue}|{outcome}", seconds)
        pipe.hincrby(KEY, f"count|{queue}|{outcome}", 1)
        if frames:
            pipe.hincrby(KEY, f"frames|{queue}", frames)
        pipe.execute()


@dataclass
class Histogram:
    buckets: dict[str, float] = field(default_factory=dict)
    sum: float = 0.0
    count: float = 0.0


@dataclass
class JobMetrics:
    durations: dict[tuple[str, str], Histogram] = field(default_factory=dict)  # (queue, outcome)
    frames: dict[str, float] = field(default_factory=dict)  # queue -> frames processed


def read_job_metrics(conn: Redis) -> JobMetrics:
    out = JobMetrics()
    for raw_name, raw_value in conn.hgetall(KEY).items():
        name = raw_name.decode() if isinstance(raw_name, bytes) else str(raw_name)
        value = float(raw_value)
        kind, _, rest = name.partition("|")
        parts = rest.split("|")
        if kind == "frames" and len(parts) == 1:
            out.frames[parts[0]] = value
        elif kind in ("bucket", "sum", "count") and len(parts) >= 2:
            hist = out.durations.setdefault((parts[0], parts[1]), Histogram())
            if kind == "bucket" and len(parts) == 3:
                hist.buckets[parts[2]] = value
            elif kind == "sum":
                hist.sum = value
            elif kind == "count":
                hist.count = value
    return out
