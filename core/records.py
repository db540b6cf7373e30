"""The durable video record, the storage layout of a video, and the pending-work index.

The record in object storage — not Redis — is the source of truth about a video: Redis only holds
the queue, so losing it (or a worker) loses no state that cannot be rebuilt from storage.

Layout (all keys under one folder per video so a delete is one prefix delete):
    videos/<id>/record.json                      VideoRecord (compression status, sizes, options)
    videos/<id>/source<.ext>                     the upload (deleted after success unless kept)
    videos/<id>/bundle.frs                       the single-file keyframe bundle
    videos/<id>/reconstructions/<name>.json      ReconstructionRecord per reconstructor
    videos/<id>/reconstructions/<name>.mp4       the reconstructed video
    videos/<id>/webhooks/<event id>.json         WebhookDelivery: one event and its delivery log
    pending/<id>/<job>                           marker: work accepted but not finished
    tenants/<tenant>/videos/<newest-first key>   listing index (GET /videos), see `index_key`
The pending markers let a restarted system find unfinished work without listing every video.
Each reconstructor has its own state object so concurrent reconstructions never overwrite each
other's progress in a shared record.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.storage import ObjectNotFound, Storage

if TYPE_CHECKING:
    from core.status_cache import StatusCache

VIDEO_ID_PATTERN = r"^[0-9a-f]{32}$"
METHOD_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
# A reconstruction = a reconstructor plus output options (see core.outputs): "framemae" (H.264 mp4 at
# the default CRF) or "framemae-vp9-crf32-webm".
VARIANT_PATTERN = r"^[a-z][a-z0-9_]{0,31}(-(h264|vp9|av1)-crf[0-9]{1,2}-(mp4|webm))?$"
_VIDEO_ID_RE = re.compile(VIDEO_ID_PATTERN)
_METHOD_RE = re.compile(METHOD_PATTERN)
_VARIANT_RE = re.compile(VARIANT_PATTERN)
_M = TypeVar("_M", bound=BaseModel)


class RecordNotFound(LookupError):
    """No record for this video id (never uploaded, or deleted)."""


class CorruptRecord(RuntimeError):
    """A record object exists but is not a valid record (manual edit, foreign writer)."""


def new_video_id() -> str:
    return uuid.uuid4().hex


def is_video_id(value: str) -> bool:
    return bool(_VIDEO_ID_RE.match(value))


def is_method_name(value: str) -> bool:
    return bool(_METHOD_RE.match(value))


def is_variant_name(value: str) -> bool:
    """A reconstruction's name: a reconstructor, optionally with output options (core.outputs)."""
    return bool(_VARIANT_RE.match(value))


def utcnow() -> datetime:
    return datetime.now(UTC)


class Status(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"
    canceled = "canceled"

    @property
    def terminal(self) -> bool:
        """No run of the job is queued or under way (done, failed or canceled)."""
        return self in (Status.done, Status.failed, Status.canceled)


class CompressOptions(BaseModel):
    """What the client chose at upload; stored so a retry runs with exactly the same options."""

    # NaN compares false with every bound, so without this `target_psnr=nan` was refused as "should
    # be ≤ 60" (misleading) and inf as out of range: both are now "should be a finite number"
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    selector: str = Field(pattern=METHOD_PATTERN)
    keep: int = Field(ge=1, le=8, description="Two-frame slots kept per 16-frame clip")
    stride: int = Field(ge=1, le=64, description="Keep every Nth frame (selector 'stride')")
    reconstructor: str = Field(pattern=METHOD_PATTERN, description="Default for GET /reconstruct")
    keyframe_codec: str | None = Field(default=None, pattern=r"^[a-z0-9_]{1,32}$")
    crf: int | None = Field(default=None, ge=0, le=63)
    target_psnr: float | None = Field(
        default=None, ge=20, le=60, description="Content-adaptive mode: mean PSNR (dB) of the rebuilt video"
    )
    target_kbps: float | None = Field(
        default=None, ge=1, le=1_000_000, description="Content-adaptive mode: kept-frame bitrate (kbit/s)"
    )
    refresh: float = Field(
        default=0.0, ge=0, lt=1, description="Refresh layer: share of the dropped frames' 16x16 blocks corrected "
        "(0 = off; fixed patterns only)"
    )
    refresh_kbps: float | None = Field(
        default=None, ge=1, le=1_000_000, description="Refresh layer's byte budget (kbit/s over the video's duration; "
        "alone it refreshes 0.1 of the blocks; fixed patterns only)"
    )
    candidate_map: bool = Field(
        default=False, description="Candidate map: per ~16-px block of each dropped frame, framemae's mix or a "
        "fixed weighting of its candidates, chosen by the encoder against the source (any keep pattern)"
    )


class SourceInfo(BaseModel):
    filename: str
    bytes: int
    width: int
    height: int
    frames: int
    fps: float
    duration: float
    codec: str
    has_audio: bool = False


class JobState(BaseModel):
    """What every job record has: its state, timing, tries and errors, and the models it ran."""

    schema_version: int = 1
    status: Status = Status.queued
    progress: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    model_versions: dict[str, str] = Field(default_factory=dict)
    attempts: int = 0
    error: str | None = Field(default=None, description="Why the job failed (set only when status is failed)")
    last_error: str | None = Field(default=None, description="Last transient error; the job is being retried")


class VideoRecord(JobState):
    """State of one uploaded video and its compression job."""

    id: str = Field(pattern=VIDEO_ID_PATTERN)
    tenant: str
    options: CompressOptions
    source: SourceInfo
    source_key: str
    source_deleted: bool = False
    keep_source: bool = Field(default=False, description="Keep the upload after compression (for comparisons)")
    bundle_bytes: int | None = None
    frames: int | None = None
    duration: float | None = Field(
        default=None, description="Seconds the bundle plays: what could be decoded of the source (`source` "
        "holds what the upload's header declared, which a truncated file overstates)"
    )
    kept_frames: int | None = None
    compress_seconds: float | None = None
    cuts: list[int] = Field(default_factory=list, description="Scene cuts found by the encoder (first frames of shots)")
    adaptive: dict[str, Any] | None = Field(
        default=None, description="Content-adaptive decisions: target, predicted PSNR and bytes, per-segment stride/CRF"
    )
    refresh: dict[str, Any] | None = Field(
        default=None, description="The refresh layer: share, blocks, pictures, bytes, CRF, the reconstructor it is for"
    )
    candidate_map: dict[str, Any] | None = Field(
        default=None, description="The candidate map: blocks set to one candidate, mixed frames, bytes, the "
        "reconstructor and model version it is for"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Deliberate changes to the source (deinterlaced, HDR tone-mapped, alpha flattened, "
        "audio that could not be kept, other video streams ignored)",
    )
    callback_url: str | None = Field(default=None, description="Where signed events of this video are POSTed")
    metadata: dict[str, Any] | None = Field(default=None, description="The caller's JSON object, echoed back")


class ReconstructionRecord(JobState):
    """State of one reconstruction (one reconstructor) of a video."""

    video_id: str = Field(pattern=VIDEO_ID_PATTERN)
    reconstructor: str = Field(pattern=METHOD_PATTERN)
    variant: str | None = Field(
        default=None, pattern=VARIANT_PATTERN, description="Reconstructor + output options; None: the default mp4"
    )
    codec: str = "h264"
    container: str = "mp4"
    crf: int | None = None
    output_bytes: int | None = None
    psnr_mean: float | None = Field(default=None, description="Mean per-frame PSNR (dB) against the kept source")
    warnings: list[str] = Field(default_factory=list, description="What the rebuild could not do as the bundle "
                                "asks (a refresh layer made for another reconstructor)")
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    # A permanent failure (bad bundle, unsupported option) is not retried by a new request.
    permanent: bool = False

    @property
    def name(self) -> str:
        """The key of this reconstruction (storage, job id, job view)."""
        return self.variant or self.reconstructor


class WebhookAttempt(BaseModel):
    """One try to deliver an event."""

    at: datetime = Field(default_factory=utcnow)
    status_code: int | None = Field(default=None, description="The receiver's HTTP status, if it answered")
    error: str | None = Field(default=None, description="Why there was no 2xx answer (refused, timeout, ...)")
    seconds: float = 0.0


class WebhookDelivery(BaseModel):
    """One webhook event of a video: the exact body sent and its delivery log."""

    schema_version: int = 1
    event_id: str = Field(pattern=VIDEO_ID_PATTERN)
    event: str
    video_id: str = Field(pattern=VIDEO_ID_PATTERN)
    url: str
    created_at: datetime = Field(default_factory=utcnow)
    status: str = Field(default="pending", description="pending (being delivered or retried), delivered, failed")
    attempts: list[WebhookAttempt] = Field(default_factory=list)
    body: str = Field(description="The JSON event as POSTed (the same bytes on every attempt)")


class VideoKeys:
    """Storage keys of one video."""

    def __init__(self, video_id: str) -> None:
        if not is_video_id(video_id):
            raise ValueError(f"invalid video id {video_id!r}")
        self.video_id = video_id
        self.prefix = f"videos/{video_id}/"
        self.record = self.prefix + "record.json"
        self.bundle = self.prefix + "bundle.frs"
        self.pending_prefix = f"pending/{video_id}/"

    def source(self, suffix: str) -> str:
        return f"{self.prefix}source{suffix}"

    def reconstruction(self, variant: str) -> str:
        """The output video of a reconstruction (`<variant>.mp4` or `.webm`)."""
        ext = "webm" if _variant(variant).endswith("-webm") else "mp4"
        return f"{self.prefix}reconstructions/{variant}.{ext}"

    def reconstruction_state(self, variant: str) -> str:
        return f"{self.prefix}reconstructions/{_variant(variant)}.json"

    def frames(self, variant: str) -> str:
        """Per-frame facts of a reconstruction: kept frames, times, PSNR against the source."""
        return f"{self.prefix}reconstructions/{_variant(variant)}.frames.json"

    def significance(self, variant: str, fmt: str = "json") -> str:
        """The per-chunk error map of a reconstruction against the source (``framers.significance``):
        ``json`` (values) or ``png`` (heatmap). A folder of its own: ``reconstructions/*.json`` are
        job states."""
        if fmt not in ("json", "png"):
            raise ValueError(f"invalid significance format {fmt!r}")
        return f"{self.prefix}significance/{_variant(variant)}.{fmt}"

    def pending(self, job: str) -> str:
        return self.pending_prefix + job

    def webhook(self, event_id: str) -> str:
        if not is_video_id(event_id):
            raise ValueError(f"invalid event id {event_id!r}")
        return f"{self.prefix}webhooks/{event_id}.json"


_INDEX_EPOCH_MS = 10**15  # newest first: keys hold (this - created ms), zero-padded, then the id


def index_prefix(tenant: str) -> str:
    """Storage prefix of a tenant's listing index."""
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", tenant):
        raise ValueError(f"invalid tenant {tenant!r}")
    return f"tenants/{tenant}/videos/"


def index_key(record: VideoRecord) -> str:
    """The index entry of a video: lexicographic order of the keys is newest first."""
    created_ms = int(record.created_at.timestamp() * 1000)
    return f"{index_prefix(record.tenant)}{_INDEX_EPOCH_MS - created_ms:016d}-{record.id}"


def video_id_of_index_key(key: str) -> str | None:
    """The video id an index key names, None for a foreign key."""
    name = key.rsplit("/", 1)[-1]
    video_id = name.rpartition("-")[2]
    return video_id if is_video_id(video_id) else None


def _variant(name: str) -> str:
    if not is_variant_name(name):
        raise ValueError(f"invalid reconstruction name {name!r}")
    return name


def compress_marker() -> str:
    return "compress"


def reconstruct_marker(variant: str) -> str:
    return f"reconstruct-{_variant(variant)}"


def webhook_marker(event_id: str) -> str:
    """The pending marker of a webhook event that is not delivered (or given up) yet."""
    if not is_video_id(event_id):
        raise ValueError(f"invalid event id {event_id!r}")
    return f"webhook-{event_id}"


class PendingWork(BaseModel):
    """One pending marker: which job of which video still has to reach a terminal state."""

    video_id: str
    job: str  # "compress", "reconstruct-<name>" or "webhook-<event id>"
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def reconstructor(self) -> str | None:
        return self.job.removeprefix("reconstruct-") if self.job.startswith("reconstruct-") else None

    @property
    def webhook_event(self) -> str | None:
        """The event id of a webhook marker, None for a compress/reconstruct marker."""
        return self.job.removeprefix("webhook-") if self.job.startswith("webhook-") else None


class RecordStore:
    """Load and save records, reconstruction states and pending markers in object storage;
    with a ``cache`` (``core.status_cache``) every save of what the status shows is written
    through to Redis."""

    def __init__(self, storage: Storage, cache: StatusCache | None = None) -> None:
        self.storage = storage
        self.cache = cache

    # --- video records -------------------------------------------------------------------
    def load(self, video_id: str) -> VideoRecord:
        return self._load(VideoKeys(video_id).record, VideoRecord, video_id)

    def save(self, record: VideoRecord) -> None:
        record.updated_at = utcnow()
        body = record.model_dump_json(indent=1)
        self.storage.put_bytes(body.encode(), VideoKeys(record.id).record)
        if self.cache is not None:
            self.cache.put_item(record, body)

    def exists(self, video_id: str) -> bool:
        return self.storage.exists(VideoKeys(video_id).record)

    # --- reconstructions -----------------------------------------------------------------
    def load_reconstruction(self, video_id: str, variant: str) -> ReconstructionRecord:
        key = VideoKeys(video_id).reconstruction_state(variant)
        return self._load(key, ReconstructionRecord, video_id)

    def save_reconstruction(self, state: ReconstructionRecord) -> None:
        state.updated_at = utcnow()
        key = VideoKeys(state.video_id).reconstruction_state(state.name)
        body = state.model_dump_json(indent=1)
        self.storage.put_bytes(body.encode(), key)
        if self.cache is not None:
            self.cache.put_item(state, body)

    def list_reconstructions(self, video_id: str) -> list[ReconstructionRecord]:
        keys = VideoKeys(video_id)
        states = []
        for key in self.storage.list(keys.prefix + "reconstructions/"):
            if key.endswith(".json") and not key.endswith(".frames.json"):
                try:
                    states.append(self._load(key, ReconstructionRecord, video_id))
                except (RecordNotFound, CorruptRecord):
                    continue  # deleted meanwhile, or foreign: a listing must not fail because of one
        return sorted(states, key=lambda s: s.name)

    # --- webhook deliveries --------------------------------------------------------------
    def load_webhook(self, video_id: str, event_id: str) -> WebhookDelivery:
        """One event of a video and its delivery log. Raises RecordNotFound, CorruptRecord."""
        return self._load(VideoKeys(video_id).webhook(event_id), WebhookDelivery, video_id)

    def save_webhook(self, delivery: WebhookDelivery) -> None:
        """Write an event and its delivery log."""
        key = VideoKeys(delivery.video_id).webhook(delivery.event_id)
        body = delivery.model_dump_json(indent=1)
        self.storage.put_bytes(body.encode(), key)
        if self.cache is not None:
            self.cache.put_item(delivery, body)

    def list_webhooks(self, video_id: str) -> list[WebhookDelivery]:
        """A video's events, oldest first (unreadable ones skipped)."""
        found = []
        for key in self.storage.list(VideoKeys(video_id).prefix + "webhooks/"):
            if key.endswith(".json"):
                try:
                    found.append(self._load(key, WebhookDelivery, video_id))
                except (RecordNotFound, CorruptRecord):
                    continue
        return sorted(found, key=lambda d: (d.created_at, d.event_id))

    # --- listing index -------------------------------------------------------------------
    def add_to_index(self, record: VideoRecord) -> None:
        """Make the video appear in its tenant's listing."""
        self.storage.put_bytes(record.id.encode(), index_key(record))

    def iter_index(self, tenant: str, after: str | None = None) -> Iterator[str]:
        """A tenant's index keys, newest video first, strictly after the key `after`."""
        for key in self.storage.list(index_prefix(tenant)):
            if after is None or key > after:
                yield key

    # --- pending markers -----------------------------------------------------------------
    def mark_pending(self, video_id: str, job: str) -> None:
        marker = PendingWork(video_id=video_id, job=job)
        self.storage.put_bytes(marker.model_dump_json().encode(), VideoKeys(video_id).pending(job))

    def clear_pending(self, video_id: str, job: str) -> None:
        self.storage.delete(VideoKeys(video_id).pending(job))

    def iter_pending(self) -> Iterator[PendingWork]:
        for key in self.storage.list("pending/"):
            parts = key.split("/")
            if len(parts) != 3 or not is_video_id(parts[1]):
                continue
            try:
                yield PendingWork.model_validate_json(self.storage.get_bytes(key))
            except ObjectNotFound:
                continue
            except ValidationError:
                yield PendingWork(video_id=parts[1], job=parts[2], created_at=datetime.fromtimestamp(0, UTC))

    # --- whole videos --------------------------------------------------------------------
    def delete_video(self, video_id: str, record: VideoRecord | None = None) -> int:
        """Remove every object of the video (and its listing entry when `record` is known or
        still loadable). Returns how many objects were removed."""
        keys = VideoKeys(video_id)
        if record is None:
            try:
                record = self.load(video_id)
            except (RecordNotFound, CorruptRecord):
                record = None
        # The record goes first: once it is gone the video is gone for every reader, even if
        # removing the (possibly large) rest is interrupted and finished by a later delete.
        removed = int(self.storage.delete(keys.record))
        removed += self.storage.delete_prefix(keys.prefix)
        removed += self.storage.delete_prefix(keys.pending_prefix)
        if record is not None:
            removed += int(self.storage.delete(index_key(record)))
        if self.cache is not None:
            self.cache.drop(video_id)
        return removed

    def _load(self, key: str, model: type[_M], video_id: str) -> _M:
        try:
            raw = self.storage.get_bytes(key)
        except ObjectNotFound as exc:
            raise RecordNotFound(video_id) from exc
        try:
            return model.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as exc:
            raise CorruptRecord(f"{key}: {exc}") from exc

