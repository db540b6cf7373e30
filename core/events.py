"""Webhook events of a video: the event body, and `emit` (store the event, queue its delivery).

Used by the workers (a job ended) and by the gateway (a queued job was canceled before any worker
took it). Delivery itself is a worker job (`workers.webhooks.deliver`).

Events: `compress.done`, `compress.failed`, `compress.canceled`, `reconstruct.done`,
`reconstruct.failed`, `reconstruct.canceled`. A cancel has events of its own, not `*.failed`:
it is the caller's decision, not a fault, and receivers that alert on failures must not fire.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any, Protocol

from redis import Redis

from core.queues import enqueue_webhook, is_deleted
from core.records import ReconstructionRecord, RecordStore, VideoRecord, WebhookDelivery, webhook_marker
from core.settings import Settings

log = logging.getLogger(__name__)

EVENTS = (
    "compress.done",
    "compress.failed",
    "compress.canceled",
    "reconstruct.done",
    "reconstruct.failed",
    "reconstruct.canceled",
)


class EventContext(Protocol):
    """What emitting needs: the worker context and the gateway's services both have it."""

    @property
    def settings(self) -> Settings: ...

    @property
    def records(self) -> RecordStore: ...

    @property
    def redis(self) -> Redis: ...


def event_body(
    event: str, event_id: str, record: VideoRecord, reconstruction: ReconstructionRecord | None = None
) -> dict[str, Any]:
    """The JSON of an event: the video's id, status, sizes, model versions, links and metadata."""
    vid = record.id
    body: dict[str, Any] = {
        "event": event,
        "event_id": event_id,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "id": vid,
        "status": str(record.status),
        "error": record.error,
        "sizes": {
            "source_bytes": record.source.bytes,
            "bundle_bytes": record.bundle_bytes,
            "ratio": round(record.bundle_bytes / record.source.bytes, 6)
            if record.bundle_bytes and record.source.bytes
            else None,
        },
        "frames": record.frames,
        "kept_frames": record.kept_frames,
        "model_versions": dict(record.model_versions),
        "links": {
            "status": f"/jobs/{vid}",
            "bundle": f"/bundles/{vid}",
            "reconstruct": f"/reconstruct/{vid}",
            "video": f"/videos/{vid}",
        },
        "metadata": record.metadata,
    }
    if reconstruction is not None:
        name = reconstruction.reconstructor
        body["status"] = str(reconstruction.status)
        body["error"] = reconstruction.error
        body["reconstructor"] = name
        body["output"] = {"codec": reconstruction.codec, "container": reconstruction.container,
                          "crf": reconstruction.crf, "variant": reconstruction.name}
        body["sizes"]["output_bytes"] = reconstruction.output_bytes
        body["model_versions"] = dict(reconstruction.model_versions)
        body["links"]["reconstruct"] = reconstruction_link(reconstruction)
    return body


def emit(
    ctx: EventContext, event: str, record: VideoRecord, reconstruction: ReconstructionRecord | None = None
) -> str | None:
    """Store the event of a finished job and queue its delivery; the event id, None without a
    callback URL. Never raises: a job's outcome does not depend on its notification."""
    url = record.callback_url
    if not url or is_deleted(ctx.redis, record.id):
        return None
    event_id = uuid.uuid4().hex
    try:
        body = json.dumps(event_body(event, event_id, record, reconstruction), separators=(",", ":"))
        delivery = WebhookDelivery(event_id=event_id, event=event, video_id=record.id, url=url, body=body)
        ctx.records.save_webhook(delivery)
        # The marker lets the reconciler re-queue the delivery if Redis loses it.
        ctx.records.mark_pending(record.id, webhook_marker(event_id))
        enqueue_webhook(ctx.redis, ctx.settings, record.id, event_id)
    except Exception:
        log.exception("could not queue the %s event of %s", event, record.id)
        return None
    return event_id


def reconstruction_link(state: ReconstructionRecord) -> str:
    """GET URL of a reconstruction with its output options (the default output: reconstructor only)."""
    link = f"/reconstruct/{state.video_id}?reconstructor={state.reconstructor}"
    if state.variant and state.variant != state.reconstructor:
        link += f"&codec={state.codec}&container={state.container}&crf={state.crf}"
    return link
