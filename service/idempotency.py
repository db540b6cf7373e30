"""`Idempotency-Key` on POST /compress: a repeated upload answers with the first one's video.

Per tenant, a key (stored hashed) maps in Redis to the request's fingerprint — the SHA-256 of the
uploaded file and of the form fields — and, once the upload is accepted, to its video id; the
entry is kept `FRAMERS_IDEMPOTENCY_TTL_S` (24 h by default).

- The first request with a key reserves it atomically (`SET NX`, with a short TTL so a gateway
  that dies mid-request does not block the key for a day), stores the video, then records the
  video id under the key. If it is refused (bad options, not a video, storage down) the
  reservation is dropped, so the client can retry with the same key.
- A repeat with the same fingerprint gets the same video id (no second upload stored, no second
  job); while the first one is still being accepted, a repeat waits for it (concurrent repeats
  yield one video).
- A repeat with another file or other fields is a conflict (409 `idempotency_key_reused`).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from redis import Redis

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
_KEY_RE = re.compile(rf"^[\x21-\x7e]{{1,{MAX_KEY_CHARS}}}$")  # printable ASCII, no spaces
PENDING_TTL_S = 600  # how long a reservation of an upload being accepted may live
_PREFIX = "framers:idem"

_REPLACE_IF_OURS = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '' then return redis.call('del', KEYS[1]) end
  redis.call('set', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
  return 1
end
return 0
"""


class InvalidIdempotencyKey(ValueError):
    """The header is empty, too long, or not printable ASCII."""


class IdempotencyKeyReused(Exception):
    """The key was used before with another file or other options."""


class IdempotencyKeyInUse(Exception):
    """The first request with this key is still being accepted after the wait."""


@dataclass(frozen=True)
class Reservation:
    """This request holds the key: finish with `IdempotencyStore.complete` or `.abandon`."""

    redis_key: str
    value: str
    fingerprint: str


def check_key(key: str) -> str:
    """The key if it is 1..255 printable ASCII characters without spaces; else InvalidIdempotencyKey."""
    if not _KEY_RE.fullmatch(key):
        raise InvalidIdempotencyKey(
            f"the {HEADER} header must be 1 to {MAX_KEY_CHARS} printable ASCII characters without spaces"
        )
    return key


def fingerprint(file_sha256: str, fields: Mapping[str, str]) -> str:
    """What makes two uploads "the same request": the file's bytes and the form fields' values."""
    canonical = json.dumps(
        {"file": file_sha256, "fields": {k: v.strip() for k, v in sorted(fields.items())}},
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


class IdempotencyStore:
    """Idempotency keys of all tenants in Redis (decoded-string values, JSON)."""

    def __init__(self, redis: Redis, ttl_s: int, *, pending_ttl_s: int = PENDING_TTL_S) -> None:
        self.redis = redis
        self.ttl_s = int(ttl_s)
        self.pending_ttl_s = int(pending_ttl_s)

    @staticmethod
    def redis_key(tenant: str, key: str) -> str:
        """Where a tenant's key lives (hashed: client keys never appear in Redis as such)."""
        return f"{_PREFIX}:{tenant}:{hashlib.sha256(key.encode()).hexdigest()}"

    def begin(self, tenant: str, key: str, fp: str, *, wait_s: float = 60.0) -> Reservation | str:
        """Reserve `key` for this request (a Reservation) or return the video id of an earlier
        request with the same fingerprint. Raises IdempotencyKeyReused on another fingerprint,
        IdempotencyKeyInUse when an earlier identical request is still being accepted after `wait_s`."""
        redis_key = self.redis_key(tenant, key)
        deadline = time.monotonic() + wait_s
        while True:
            value = json.dumps({"fp": fp, "token": uuid.uuid4().hex})
            if self.redis.set(redis_key, value, nx=True, ex=self.pending_ttl_s):
                return Reservation(redis_key, value, fp)
            raw = self.redis.get(redis_key)
            if raw is None:
                continue  # released (the first request was refused) between SET and GET: try again
            entry = json.loads(raw)
            if entry.get("fp") != fp:
                raise IdempotencyKeyReused(
                    f"the {HEADER} was already used with another file or other options; use a new key"
                )
            if entry.get("video_id"):
                return str(entry["video_id"])
            if time.monotonic() > deadline:
                raise IdempotencyKeyInUse(f"a request with this {HEADER} is still being processed; retry shortly")
            time.sleep(0.05)

    def complete(self, reservation: Reservation, video_id: str) -> None:
        """Record the accepted video under the key for `ttl_s` (if this request still holds it)."""
        done = json.dumps({"fp": reservation.fingerprint, "video_id": video_id})
        self.redis.eval(_REPLACE_IF_OURS, 1, reservation.redis_key, reservation.value, done, self.ttl_s)

    def abandon(self, reservation: Reservation) -> None:
        """Drop the reservation of a refused request, so the client may retry with the same key."""
        self.redis.eval(_REPLACE_IF_OURS, 1, reservation.redis_key, reservation.value, "", 0)
