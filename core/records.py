"""The durable video record, the storage layout of a video, and the pending-work index.

The record in object storage — not Redis — is the source of truth about a video: Redis only holds
the queue, so losing it (or a worker) loses no state that cannot be rebuilt from storage.

Layout (all keys under one folder per video so a delete is one prefix delete):
    videos/<id>/record.json                      VideoRecord (compression status, sizes, options)
    videos/<id>/source<.ext>                     the upload (deleted after success unless kept)
    videos/<id>/bundle.frs                       the single-file keyframe bundle
    videos/<id>/reconstructions/<name>.json      ReconstructionRecord per reconstructor
    videos/<id>/reconstructions/<name>.mp4       the reconstructed video
    pending/<id>/<job>                           marker: work accepted but not finished
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
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from core.storage import ObjectNotFound, Storage

VIDEO_ID_PATTERN = r"^[0-9a-f]{32}$"
METHOD_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
_VIDEO_ID_RE = re.compile(VIDEO_ID_PATTERN)
_METHOD_RE = re.compile(METHOD_PATTERN)
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


def utcnow() -> datetime:
    return datetime.now(UTC)


class Status(StrEnum):
    queued = "queued"
    running = "running"
    done = "done"
    failed = "failed"

    @property
    def terminal(self) -> bool:
        return self in (Status.done, Status.failed)


class CompressOptions(BaseModel):
    """What the client chose at upload; stored so a retry runs with exactly the same options."""

    model_config = ConfigDict(extra="forbid")

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


class VideoRecord(BaseModel):
    """State of one uploaded video and its compression job."""

    schema_version: int = 1
    id: str = Field(pattern=VIDEO_ID_PATTERN)
    tenant: str
    status: Status = Status.queued
    progress: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    options: CompressOptions
    source: SourceInfo
    source_key: str
    source_deleted: bool = False
    bundle_bytes: int | None = None
    frames: int | None = None
    kept_frames: int | None = None
    compress_seconds: float | None = None
    model_versions: dict[str, str] = Field(default_factory=dict)
    cuts: list[int] = Field(default_factory=list, description="Scene cuts found by the encoder (first frames of shots)")
    adaptive: dict[str, Any] | None = Field(
        default=None, description="Content-adaptive decisions: target, predicted PSNR and bytes, per-segment stride/CRF"
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="Deliberate changes to the source (deinterlaced, HDR tone-mapped, alpha flattened, "
        "audio that could not be kept, other video streams ignored)",
    )
    attempts: int = 0
    error: str | None = Field(default=None, description="Why the job failed (set only when status is failed)")
    last_error: str | None = Field(default=None, description="Last transient error; the job is being retried")


class ReconstructionRecord(BaseModel):
    """State of one reconstruction (one reconstructor) of a video."""

    schema_version: int = 1
    video_id: str = Field(pattern=VIDEO_ID_PATTERN)
    reconstructor: str = Field(pattern=METHOD_PATTERN)
    status: Status = Status.queued
    progress: float = 0.0
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output_bytes: int | None = None
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    model_versions: dict[str, str] = Field(default_factory=dict)
    attempts: int = 0
    error: str | None = None
    last_error: str | None = None
    # A permanent failure (bad bundle, unsupported option) is not retried by a new request.
    permanent: bool = False


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

    def reconstruction(self, reconstructor: str) -> str:
        return f"{self.prefix}reconstructions/{_method(reconstructor)}.mp4"

    def reconstruction_state(self, reconstructor: str) -> str:
        return f"{self.prefix}reconstructions/{_method(reconstructor)}.json"

    def pending(self, job: str) -> str:
        return self.pending_prefix + job


def _method(name: str) -> str:
    if not is_method_name(name):
        raise ValueError(f"invalid method name {name!r}")
    return name


def compress_marker() -> str:
    return "compress"


def reconstruct_marker(reconstructor: str) -> str:
    return f"reconstruct-{_method(reconstructor)}"


class PendingWork(BaseModel):
    """One pending marker: which job of which video still has to reach a terminal state."""

    video_id: str
    job: str  # "compress" or "reconstruct-<name>"
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def reconstructor(self) -> str | None:
        return self.job.removeprefix("reconstruct-") if self.job.startswith("reconstruct-") else None


class RecordStore:
    """Load and save records, reconstruction states and pending markers in object storage."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    # --- video records -------------------------------------------------------------------
    def load(self, video_id: str) -> VideoRecord:
        return self._load(VideoKeys(video_id).record, VideoRecord, video_id)

    def save(self, record: VideoRecord) -> None:
        record.updated_at = utcnow()
        self.storage.put_bytes(record.model_dump_json(indent=1).encode(), VideoKeys(record.id).record)

    def exists(self, video_id: str) -> bool:
        return self.storage.exists(VideoKeys(video_id).record)

    # --- reconstructions -----------------------------------------------------------------
    def load_reconstruction(self, video_id: str, reconstructor: str) -> ReconstructionRecord:
        key = VideoKeys(video_id).reconstruction_state(reconstructor)
        return self._load(key, ReconstructionRecord, video_id)

    def save_reconstruction(self, state: ReconstructionRecord) -> None:
        state.updated_at = utcnow()
        key = VideoKeys(state.video_id).reconstruction_state(state.reconstructor)
        self.storage.put_bytes(state.model_dump_json(indent=1).encode(), key)

    def list_reconstructions(self, video_id: str) -> list[ReconstructionRecord]:
        keys = VideoKeys(video_id)
        states = []
        for key in self.storage.list(keys.prefix + "reconstructions/"):
            if key.endswith(".json"):
                try:
                    states.append(self._load(key, ReconstructionRecord, video_id))
                except (RecordNotFound, CorruptRecord):
                    continue  # deleted meanwhile, or foreign: a listing must not fail because of one
        return sorted(states, key=lambda s: s.reconstructor)

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
    def delete_video(self, video_id: str) -> int:
        keys = VideoKeys(video_id)
        # The record goes first: once it is gone the video is gone for every reader, even if
        # removing the (possibly large) rest is interrupted and finished by a later delete.
        removed = int(self.storage.delete(keys.record))
        removed += self.storage.delete_prefix(keys.prefix)
        removed += self.storage.delete_prefix(keys.pending_prefix)
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
