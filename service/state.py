"""The gateway's long-lived collaborators, built once per app and shared by all requests."""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from core.queues import connect
from core.records import RecordStore
from core.settings import Settings
from core.status_cache import StatusCache
from core.storage import Storage, make_storage
from service.methods import MethodCatalog
from service.metrics import GatewayMetrics, active_multiprocess_dir


@dataclass(frozen=True)
class Services:
    settings: Settings
    storage: Storage
    records: RecordStore
    redis: Redis
    catalog: MethodCatalog
    metrics: GatewayMetrics

    @classmethod
    def build(cls, settings: Settings) -> Services:
        storage = make_storage(settings)
        redis = connect(settings)
        return cls(
            settings=settings,
            storage=storage,
            records=RecordStore(storage, StatusCache(redis)),
            redis=redis,
            catalog=MethodCatalog(),
            metrics=GatewayMetrics(redis, active_multiprocess_dir()),
        )
