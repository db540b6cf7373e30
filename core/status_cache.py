"""A copy in Redis of what ``GET /jobs/{id}`` shows, so a status answer is one Redis round trip
and no storage read (issue 18: at 200 polls/s the storage reads and listings of every poll were
most of the gateway's CPU, and on S3 they are HTTP requests).

Object storage stays the source of truth. Per video one Redis hash ``framers:status:<id>``:
field ``record`` (the video record's JSON), ``r:<name>`` per reconstruction state, ``w:<event>``
per webhook delivery, each with a version field ``v:<field>`` (its ``updated_at`` /
``created_at`` + attempts, sortable text), and ``complete`` once every stored part was copied in.
``RecordStore`` writes every save through (a write older than the cached one is ignored, so a
slow writer cannot put back a stale state), a miss (no ``complete``: Redis restarted, expired,
never read) is filled from storage, and a deleted video's hash is dropped. Hashes expire after
``ttl_s`` without writes or reads.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime

from redis import Redis
from redis.exceptions import RedisError

from core.records import (
    CorruptRecord,
    ReconstructionRecord,
    RecordNotFound,
    RecordStore,
    VideoRecord,
    WebhookDelivery,
)

KEY_PREFIX = "framers:status:"
COMPLETE = "complete"
RECORD = "record"
DEFAULT_TTL_S = 86_400
#: while any part may still change (a job queued or running, a webhook pending) the hash lives
#: this long after its last write: a write-through lost to a Redis error leaves a stale status
#: for at most this long (running jobs write their progress every second, refreshing it)
UNSETTLED_TTL_S = 60

# ARGV: ttl, then (field, version, value) triples; sets each field whose cached version is not newer.
_WRITE = """
local n = 0
for i = 2, #ARGV, 3 do
  local field, version = ARGV[i], ARGV[i + 1]
  local cached = redis.call('HGET', KEYS[1], 'v:' .. field)
  if (not cached) or cached <= version then
    redis.call('HSET', KEYS[1], field, ARGV[i + 2], 'v:' .. field, version)
    n = n + 1
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return n
"""


def key_of(video_id: str) -> str:
    """The Redis key of a video's status hash."""
    return KEY_PREFIX + video_id


class StatusCache:
    """Write-through status copies in Redis (see the module docstring). Redis errors on writes
    are swallowed (storage has the truth; the next read refills), on reads they are raised."""

    def __init__(self, redis: Redis, ttl_s: int = DEFAULT_TTL_S) -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        self._write = redis.register_script(_WRITE)

    def put(self, video_id: str, parts: list[tuple[str, str, str]], *, settled: bool,
            complete: bool = False) -> None:
        """Write (field, version, JSON) parts; ``settled``: nothing in them can change any more
        (else the hash expires after UNSETTLED_TTL_S); ``complete``: they are all of the video's."""
        args: list[str | int] = [self.ttl_s if settled else min(self.ttl_s, UNSETTLED_TTL_S)]
        for field, version, value in parts:
            args += [field, version, value]
        if complete:
            args += [COMPLETE, "1", "1"]
        with contextlib.suppress(RedisError):  # a copy: stale for at most UNSETTLED_TTL_S (see put)
            self._write(keys=[key_of(video_id)], args=args)

    def put_item(self, item: VideoRecord | ReconstructionRecord | WebhookDelivery, body: str) -> None:
        """Write through one saved state (``body``: its JSON as stored)."""
        video_id = item.id if isinstance(item, VideoRecord) else item.video_id
        self.put(video_id, [status_part(item, body)], settled=settled(item))

    def get(self, video_id: str) -> dict[str, bytes] | None:
        """The cached parts (field → JSON bytes, version fields left out), None when not complete.
        Raises redis errors."""
        raw: dict[bytes, bytes] = self.redis.hgetall(key_of(video_id))  # type: ignore[assignment]
        if COMPLETE.encode() not in raw:
            return None
        return {k.decode(): v for k, v in raw.items() if not k.startswith(b"v:") and k != COMPLETE.encode()}

    def drop(self, video_id: str) -> None:
        """Forget a video (after its deletion from storage)."""
        with contextlib.suppress(RedisError):
            self.redis.delete(key_of(video_id))


def status_part(item: VideoRecord | ReconstructionRecord | WebhookDelivery, body: str) -> tuple[str, str, str]:
    """(field, version, JSON) of a state: versions sort as text in the order states are written
    (``updated_at``; a webhook delivery only grows by attempts)."""
    if isinstance(item, VideoRecord):
        return RECORD, _stamp(item.updated_at), body
    if isinstance(item, ReconstructionRecord):
        return f"r:{item.name}", _stamp(item.updated_at), body
    return f"w:{item.event_id}", f"{len(item.attempts):06d}", body


def settled(item: VideoRecord | ReconstructionRecord | WebhookDelivery) -> bool:
    """Whether a state is final (a finished job, a webhook delivered or given up)."""
    if isinstance(item, WebhookDelivery):
        return item.status in ("delivered", "failed")
    return item.status.terminal


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%S.%f")


def load_status(
    records: RecordStore, video_id: str
) -> tuple[VideoRecord, list[ReconstructionRecord], list[WebhookDelivery]]:
    """The video record with its reconstruction states (by name) and webhook deliveries (oldest
    first), from the cache when it holds them all, else from storage (then cached).

    Raises RecordNotFound, CorruptRecord (the record), redis errors only when there is no cache
    fallback to storage (a cache read error falls back to storage)."""
    cache = records.cache
    parts = None
    if cache is not None:
        try:
            parts = cache.get(video_id)
        except RedisError:
            parts = None
    if parts is not None and RECORD in parts:
        try:
            record = VideoRecord.model_validate_json(parts[RECORD])
            states = [ReconstructionRecord.model_validate_json(v) for k, v in parts.items() if k.startswith("r:")]
            hooks = [WebhookDelivery.model_validate_json(v) for k, v in parts.items() if k.startswith("w:")]
        except ValueError:
            parts = None  # a garbled copy: storage decides
        else:
            return record, sorted(states, key=lambda s: s.name), sorted(hooks, key=lambda d: (d.created_at, d.event_id))
    try:
        record = records.load(video_id)
    except RecordNotFound:
        if cache is not None:
            cache.drop(video_id)  # a write-through that raced a delete
        raise
    states = records.list_reconstructions(video_id)
    hooks = records.list_webhooks(video_id)
    if cache is not None:
        items: list[VideoRecord | ReconstructionRecord | WebhookDelivery] = [record, *states, *hooks]
        dump = [(item, item.model_dump_json(indent=1)) for item in items]
        cache.put(video_id, [status_part(item, body) for item, body in dump],
                  settled=all(settled(item) for item, _ in dump), complete=True)
    return record, states, hooks


__all__ = ["CorruptRecord", "StatusCache", "load_status", "status_part"]
