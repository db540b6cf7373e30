"""Liveness check of the worker process(es) of this host: `python -m workers.liveness`.

A worker has no HTTP port, so Kubernetes checks it with an exec probe. RQ already writes a
heartbeat: every worker registers `rq:worker:<name>` (our names start with the host name, see
workers.main) and refreshes its `last_heartbeat` field while it waits for jobs (each dequeue
timeout) and while a job runs (the lease renewer in workers.worker calls RQ's heartbeat).
A worker whose heartbeat is older than `max_age_s` is stuck (or gone) and should be restarted.

Exit codes: 0 alive (or Redis unreachable: a Redis outage is not cured by restarting every
worker, and the worker itself waits for Redis to come back), 1 no fresh heartbeat of this host.
"""

from __future__ import annotations

import argparse
import socket
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import RedisError
from rq.utils import utcparse
from rq.worker import Worker

from core.queues import connect
from core.settings import Settings


def default_max_age_s(settings: Settings) -> float:
    """The age past which a heartbeat is stale: RQ expires a worker key `worker_ttl + 60` s after
    its last heartbeat, and workers.main sets worker_ttl = max(30, 2 * job_lease_s)."""
    return max(30, 2 * settings.job_lease_s) + 60


def heartbeat_ages(conn: Redis, hostname: str, now: datetime | None = None) -> dict[str, float]:
    """Seconds since the last heartbeat of each registered worker of `hostname`, by worker name."""
    now = now or datetime.now(UTC)
    prefix = Worker.redis_worker_namespace_prefix + hostname + "."
    ages: dict[str, float] = {}
    for raw in conn.smembers(Worker.redis_workers_keys):
        key = raw.decode() if isinstance(raw, bytes) else str(raw)
        if not key.startswith(prefix):
            continue
        beat = conn.hget(key, "last_heartbeat")
        if beat is None:  # key expired: the worker is gone (its set entry is cleaned up later)
            continue
        last = utcparse(beat.decode() if isinstance(beat, bytes) else str(beat))
        if last.tzinfo is None:
            last = last.replace(tzinfo=UTC)
        ages[key.removeprefix(Worker.redis_worker_namespace_prefix)] = (now - last).total_seconds()
    return ages


def check(conn: Redis, hostname: str, max_age_s: float) -> tuple[bool, str]:
    """(alive, reason): alive when Redis is unreachable or a worker of this host beat recently."""
    try:
        ages = heartbeat_ages(conn, hostname)
    except RedisError as exc:
        return True, f"redis unreachable ({exc}); not judging the worker"
    fresh = {name: age for name, age in ages.items() if age <= max_age_s}
    if fresh:
        name, age = min(fresh.items(), key=lambda item: item[1])
        return True, f"worker {name} beat {age:.0f} s ago"
    if ages:
        return False, f"stale heartbeats (> {max_age_s:.0f} s): " + ", ".join(f"{n} {a:.0f} s" for n, a in ages.items())
    return False, f"no worker of host {hostname} is registered"


def main(argv: Sequence[str] | None = None) -> int:
    """Exec-probe entry point; prints the reason on one line."""
    parser = argparse.ArgumentParser(prog="python -m workers.liveness", description=__doc__)
    parser.add_argument("--max-age", type=float, help="stale after this many seconds (default from settings)")
    parser.add_argument("--hostname", default=socket.gethostname(), help="worker name prefix (default: this host)")
    args = parser.parse_args(argv)
    settings = Settings()
    conn = connect(settings)
    conn.connection_pool.connection_kwargs["socket_timeout"] = 3  # a probe must answer within its timeout
    alive, reason = check(conn, args.hostname, args.max_age or default_max_age_s(settings))
    print(("alive: " if alive else "dead: ") + reason)
    return 0 if alive else 1


if __name__ == "__main__":
    sys.exit(main())
