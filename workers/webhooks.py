"""Webhook events of a video: built and stored when a job ends, delivered from the `webhooks` queue.

An event is stored first (`videos/<id>/webhooks/<event id>.json`, with the exact body to send)
and then its delivery is queued; the delivery job signs the stored body anew at each attempt,
POSTs it, and appends the attempt to the stored delivery log (shown in GET /jobs/{id}). A failed
attempt (no answer, or not 2xx) is retried by RQ with FRAMERS_WEBHOOK_RETRY_BACKOFF_S; a refused
URL (not public, not allowed) is not retried. Delivery is at least once: receivers deduplicate by
`event_id` (also in the `X-FrameRS-Event-Id` header).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from rq import get_current_job

from core import job_metrics
from core.events import emit, event_body
from core.queues import WEBHOOK_QUEUE, is_deleted
from core.records import (
    CorruptRecord,
    RecordNotFound,
    WebhookAttempt,
    WebhookDelivery,
    webhook_marker,
)
from core.webhooks import (
    EVENT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    CallbackRefused,
    ResolveError,
    post_event,
    resolve_callback,
    sign,
    tls_context,
)
from workers.context import WorkerContext, get_context

log = logging.getLogger(__name__)

__all__ = ["WebhookDeliveryFailed", "deliver", "emit", "event_body"]


class WebhookDeliveryFailed(Exception):
    """An attempt got no 2xx answer; raised so that RQ retries the delivery with backoff."""


def deliver(video_id: str, event_id: str) -> dict[str, Any]:
    """One delivery attempt of a stored event (the RQ job `workers.jobs.deliver_webhook`)."""
    ctx = get_context()
    try:
        delivery = ctx.records.load_webhook(video_id, event_id)
    except (RecordNotFound, CorruptRecord):
        return {"event_id": event_id, "skipped": "event gone (video deleted)"}
    if delivery.status != "pending":
        ctx.records.clear_pending(video_id, webhook_marker(event_id))
        return {"event_id": event_id, "skipped": f"already {delivery.status}"}
    if is_deleted(ctx.redis, video_id):
        return {"event_id": event_id, "skipped": "video deleted"}
    job = get_current_job()
    secret = ctx.settings.webhook_secret
    body = delivery.body.encode()
    try:
        if secret is None:
            raise CallbackRefused("webhooks are off: FRAMERS_WEBHOOK_SECRET is not set")
        target = resolve_callback(delivery.url, ctx.settings.allowed_callback_hosts)
        verify = tls_context(ctx.settings.webhook_ca_bundle)
    except CallbackRefused as exc:
        delivery.attempts.append(WebhookAttempt(error=f"refused: {exc}"))
        delivery.status = "failed"
        if job is not None:
            job.retries_left = 0
        _save(ctx, delivery)
        log.warning("webhook %s of %s refused: %s", event_id, video_id, exc)
        return {"event_id": event_id, "status": "failed", "error": str(exc)}
    except (ResolveError, OSError) as exc:  # no address now; or FRAMERS_WEBHOOK_CA_BUNDLE unreadable
        result_error, status_code, seconds = f"{type(exc).__name__}: {exc}"[:300], None, 0.0
    else:
        headers = {
            SIGNATURE_HEADER: sign(secret.get_secret_value(), int(time.time()), body),
            EVENT_HEADER: delivery.event,
            EVENT_ID_HEADER: event_id,
        }
        result = post_event(
            target,
            body,
            headers,
            timeout_s=ctx.settings.webhook_timeout_s,
            verify=verify,
        )
        if result.ok:
            delivery.attempts.append(WebhookAttempt(status_code=result.status_code, seconds=round(result.seconds, 3)))
            delivery.status = "delivered"
            _save(ctx, delivery)
            job_metrics.record_job(ctx.redis, WEBHOOK_QUEUE, "done", result.seconds)
            return {"event_id": event_id, "status": "delivered", "status_code": result.status_code}
        status_code, seconds = result.status_code, result.seconds
        result_error = result.error or f"HTTP {result.status_code}"
    retrying = job is not None and bool(job.retries_left)
    delivery.attempts.append(WebhookAttempt(status_code=status_code, error=result_error, seconds=round(seconds, 3)))
    delivery.status = "pending" if retrying else "failed"
    _save(ctx, delivery)
    job_metrics.record_job(ctx.redis, WEBHOOK_QUEUE, "retry" if retrying else "failed", seconds)
    log.warning("webhook %s of %s: attempt %d failed (%s)", event_id, video_id, len(delivery.attempts), result_error)
    raise WebhookDeliveryFailed(result_error)


def _save(ctx: WorkerContext, delivery: WebhookDelivery) -> None:
    # Not after a delete: that would bring back an object under the deleted video's prefix.
    if not is_deleted(ctx.redis, delivery.video_id) and ctx.records.exists(delivery.video_id):
        ctx.records.save_webhook(delivery)
        if delivery.status != "pending":
            ctx.records.clear_pending(delivery.video_id, webhook_marker(delivery.event_id))
