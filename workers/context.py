"""Per-process worker state: settings, storage, records and the Redis connection, built once.

Job functions take ids only and find everything else here, so a job can be retried, moved to
another worker or re-enqueued by the reconciler without carrying state in its arguments.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from core.queues import connect
from core.records import RecordStore
from core.settings import Settings, get_settings
from core.status_cache import StatusCache
from core.storage import Storage, make_storage


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    storage: Storage
    records: RecordStore
    redis: Redis


_context: WorkerContext | None = None


def configure(settings: Settings, redis: Redis | None = None) -> WorkerContext:
    """Build (or rebuild) the process context from explicit settings."""
    global _context
    storage = make_storage(settings)
    settings.scratch_dir.mkdir(parents=True, exist_ok=True)
    redis = redis if redis is not None else connect(settings)
    # every save of what GET /jobs shows is written through to the gateway's Redis copy
    _context = WorkerContext(
        settings=settings, storage=storage, records=RecordStore(storage, StatusCache(redis)), redis=redis
    )
    return _context


def get_context() -> WorkerContext:
    """The process context; built from the environment on first use (e.g. in a bare `rq worker`)."""
    return _context if _context is not None else configure(get_settings())
