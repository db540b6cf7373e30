"""The RQ queue names, in one place (no heavy imports: the `framers worker` parser, the settings
and `core.queues` all read them from here)."""

from __future__ import annotations

COMPRESS_QUEUE = "compress"
RECONSTRUCT_QUEUE = "reconstruct"
WEBHOOK_QUEUE = "webhooks"
# Priority order for a worker serving all: webhook deliveries (short, bounded by a timeout) first,
# then a reconstruction (someone is waiting for a video) before a compression, so
# reconstructions are never stuck behind a compression backlog.
ALL_QUEUES: tuple[str, ...] = (WEBHOOK_QUEUE, RECONSTRUCT_QUEUE, COMPRESS_QUEUE)
