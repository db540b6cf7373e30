"""Response bodies of the HTTP API (what /docs shows)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from core.events import reconstruction_link
from core.records import (
    CompressOptions,
    ReconstructionRecord,
    SourceInfo,
    Status,
    VideoRecord,
    WebhookAttempt,
    WebhookDelivery,
)
from service.eta import eta_seconds


class Links(BaseModel):
    status: str = Field(description="GET: the job record")
    bundle: str = Field(description="GET: the single-file keyframe bundle (when done)")
    reconstruct: str = Field(description="GET: the reconstructed video (starts it if needed)")
    video: str = Field(description="DELETE: remove the video and everything derived from it")
    cancel: str = Field(description="POST: cancel the compression (or, with ?reconstructor=..., a reconstruction)")
    quality: str = Field(description="GET: kept frames, times and per-frame PSNR of a reconstruction")
    source: str = Field(description="GET: the uploaded source, while it is kept")


def links_for(video_id: str) -> Links:
    """The links of a video."""
    return Links(
        status=f"/jobs/{video_id}",
        bundle=f"/bundles/{video_id}",
        reconstruct=f"/reconstruct/{video_id}",
        video=f"/videos/{video_id}",
        cancel=f"/jobs/{video_id}/cancel",
        quality=f"/quality/{video_id}",
        source=f"/sources/{video_id}",
    )


class CompressAccepted(BaseModel):
    id: str
    status: Status
    links: Links


class Sizes(BaseModel):
    source_bytes: int
    bundle_bytes: int | None = None
    ratio: float | None = Field(default=None, description="bundle_bytes / source_bytes")


class ReconstructionView(BaseModel):
    """One reconstruction (a reconstructor + output options) of a video."""

    reconstructor: str = ""
    codec: str = Field(default="h264", description="Output video codec: h264, vp9, av1")
    container: str = Field(default="mp4", description="mp4 or webm")
    crf: int | None = Field(default=None, description="The output encoder's constant rate factor")
    status: Status
    progress: float
    eta_s: float | None = Field(default=None, description="Estimated seconds until done (while running)")
    psnr_mean: float | None = Field(default=None, description="Mean per-frame PSNR against the kept source (dB)")
    error: str | None = None
    last_error: str | None = None
    attempts: int = 0
    output_bytes: int | None = None
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    seconds: float | None = None
    model_versions: dict[str, str] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list, description="What the rebuild could not do as the bundle "
                                "asks (a refresh layer made for another reconstructor)")
    link: str

    @classmethod
    def of(cls, state: ReconstructionRecord) -> ReconstructionView:
        """The view of a reconstruction state."""
        return cls(
            eta_s=eta_seconds(state.status, state.progress, state.started_at),
            **state.model_dump(
                include={
                    "reconstructor",
                    "codec",
                    "container",
                    "crf",
                    "psnr_mean",
                    "status",
                    "progress",
                    "error",
                    "last_error",
                    "attempts",
                    "output_bytes",
                    "frames",
                    "width",
                    "height",
                    "seconds",
                    "model_versions",
                    "warnings",
                }
            ),
            link=reconstruction_link(state),
        )


class WebhookView(BaseModel):
    """One event of the video and its delivery log."""

    event_id: str
    event: str = Field(description="compress.done, compress.failed, reconstruct.done or reconstruct.failed")
    url: str
    status: str = Field(description="pending (being delivered or retried), delivered, failed")
    created_at: datetime
    attempts: list[WebhookAttempt]

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> WebhookView:
        """The view of a stored event (without its body)."""
        return cls(**delivery.model_dump(include={"event_id", "event", "url", "status", "created_at", "attempts"}))


class JobView(BaseModel):
    id: str
    status: Status = Field(description="queued, running, done, failed or canceled")
    progress: float = Field(description="0..1 of the compression")
    eta_s: float | None = Field(default=None, description="Estimated seconds until the compression is done")
    error: str | None = Field(default=None, description="Why the job failed (status failed)")
    last_error: str | None = Field(default=None, description="Last transient error while being retried")
    attempts: int
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    options: CompressOptions
    mode: str = Field(default="fixed", description="adaptive (target_psnr / target_kbps chose the kept frames and "
                      "their CRF per segment: selector, keep and stride in options are unused defaults) or fixed")
    source: SourceInfo
    sizes: Sizes
    frames: int | None
    duration: float | None = Field(default=None, description="Seconds the bundle plays: what could be decoded "
                                   "(source.duration is what the upload's header declared)")
    kept_frames: int | None
    compress_seconds: float | None
    model_versions: dict[str, str]
    cuts: list[int] = Field(default_factory=list, description="Scene cuts found by the encoder")
    adaptive: dict[str, Any] | None = Field(
        default=None, description="Content-adaptive decisions (target, predicted PSNR/bytes, per-segment "
                                  "stride/CRF and estimate, estimated_psnr: the prediction again after coding, "
                                  "from x264's error of the kept frames, checked on a sample of kept frames decoded "
                                  "and dropped frames rebuilt (rebuild_sample); recoded: coded twice, the first "
                                  "estimate short of the target or more than 1 dB over it (reason), with the "
                                  "first plan's segments and whether the first coding was kept); "
                                  "surplus_left: more than 1 dB over the target but not coded again, a "
                                  "second coding of that share of the frames being past twice x264 "
                                  "medium's time (estimate, over_db, kept_share)"
    )
    refresh: dict[str, Any] | None = Field(
        default=None, description="The refresh layer (share, blocks, pictures, bytes, CRF, the reconstructor it is for)"
    )
    candidate_map: dict[str, Any] | None = Field(
        default=None, description="The candidate map (blocks set to one candidate, mixed frames, bytes, the "
                                  "reconstructor and model version it is for)"
    )
    warnings: list[str] = Field(default_factory=list, description="Deliberate changes to the source, "
                                "e.g. deinterlaced, HDR tone-mapped, alpha flattened, audio dropped")
    reconstructions: dict[str, ReconstructionView] = Field(
        description="By name: the reconstructor (default output) or <reconstructor>-<codec>-crf<N>-<container>"
    )
    source_kept: bool = Field(default=False, description="The upload is still stored (GET /sources/{id})")
    metadata: dict[str, Any] | None = Field(default=None, description="The caller's JSON object from the upload")
    callback_url: str | None = Field(default=None, description="Where this video's signed events are POSTed")
    webhooks: list[WebhookView] = Field(default_factory=list, description="Events sent and their delivery logs")
    links: Links

    @classmethod
    def of(
        cls,
        record: VideoRecord,
        reconstructions: list[ReconstructionRecord],
        webhooks: list[WebhookDelivery] | None = None,
    ) -> JobView:
        """The job view of a record, its reconstructions and its webhook events."""
        bundle = record.bundle_bytes
        return cls(
            id=record.id,
            status=record.status,
            progress=record.progress,
            eta_s=eta_seconds(record.status, record.progress, record.started_at),
            error=record.error,
            last_error=record.last_error,
            attempts=record.attempts,
            created_at=record.created_at,
            updated_at=record.updated_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            options=record.options,
            mode="adaptive" if record.options.target_psnr is not None or record.options.target_kbps is not None
            else "fixed",
            source=record.source,
            sizes=Sizes(
                source_bytes=record.source.bytes,
                bundle_bytes=bundle,
                ratio=round(bundle / record.source.bytes, 6) if bundle and record.source.bytes else None,
            ),
            frames=record.frames,
            duration=record.duration,
            kept_frames=record.kept_frames,
            compress_seconds=record.compress_seconds,
            model_versions=record.model_versions,
            cuts=record.cuts,
            adaptive=record.adaptive,
            refresh=record.refresh,
            candidate_map=record.candidate_map,
            warnings=list(record.warnings),
            reconstructions={s.name: ReconstructionView.of(s) for s in reconstructions},
            source_kept=not record.source_deleted,
            metadata=record.metadata,
            callback_url=record.callback_url,
            webhooks=[WebhookView.of(d) for d in webhooks or []],
            links=links_for(record.id),
        )


class ReconstructionAccepted(BaseModel):
    id: str
    reconstructor: str
    reconstruction: str = Field(default="", description="The reconstruction's name (reconstructor + output options)")
    status: Status = Field(description="Of the reconstruction (or of the compression, if still running)")
    progress: float
    eta_s: float | None = Field(default=None, description="Estimated seconds until done (null: unknown yet)")
    detail: str
    links: dict[str, str]


class CancelView(BaseModel):
    """The answer to a cancel request."""

    id: str
    job: str = Field(description="compress or reconstruct")
    reconstruction: str | None = Field(default=None, description="The reconstruction's name (job view key)")
    status: str = Field(description="canceled (done), or canceling (the running job stops at its next frame)")
    links: dict[str, str]


class QualityView(BaseModel):
    """Per-frame facts of a reconstruction (for plots and timelines)."""

    id: str
    reconstruction: str
    frames: int
    times: list[float] = Field(description="When each frame is shown (seconds from the start)")
    kept: list[int] = Field(description="Indices of the frames the bundle holds (the others are rebuilt)")
    psnr: list[float] | None = Field(
        description="Per-frame PSNR (dB, capped at 60) of the rebuilt frames against the source; null when "
        "the source was not kept at reconstruction time (upload with keep_source=true)"
    )
    psnr_mean: float | None = None
    sizes: dict[str, int | None] = Field(description="source_bytes, bundle_bytes, output_bytes")


class ModelsView(BaseModel):
    selectors: list[str]
    reconstructors: list[str]
    output_codecs: list[str] = Field(default_factory=list, description="Codecs GET /reconstruct can write")
    models: dict[str, Any]
    defaults: dict[str, Any]


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    status: str
    checks: dict[str, str]


class VideoSummary(BaseModel):
    """One video in a listing."""

    id: str
    status: Status
    progress: float
    created_at: datetime
    updated_at: datetime
    filename: str
    sizes: Sizes
    error: str | None = None
    metadata: dict[str, Any] | None = None
    links: Links

    @classmethod
    def of(cls, record: VideoRecord) -> VideoSummary:
        """The summary of a record."""
        bundle = record.bundle_bytes
        return cls(
            id=record.id,
            status=record.status,
            progress=record.progress,
            created_at=record.created_at,
            updated_at=record.updated_at,
            filename=record.source.filename,
            sizes=Sizes(
                source_bytes=record.source.bytes,
                bundle_bytes=bundle,
                ratio=round(bundle / record.source.bytes, 6) if bundle and record.source.bytes else None,
            ),
            error=record.error,
            metadata=record.metadata,
            links=links_for(record.id),
        )


class VideoList(BaseModel):
    """A page of the tenant's videos, newest first."""

    videos: list[VideoSummary]
    next_cursor: str | None = Field(default=None, description="Pass as `cursor` for the next page; null at the end")
