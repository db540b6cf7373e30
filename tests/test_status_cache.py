"""The Redis copy of what GET /jobs shows (issue 18): write-through, fill on a miss, no stale
write winning, drop on delete, bounded life while a job can still change."""

from __future__ import annotations

from pathlib import Path

import pytest
from redis import Redis

from core.records import (
    CompressOptions,
    ReconstructionRecord,
    RecordNotFound,
    RecordStore,
    SourceInfo,
    Status,
    VideoKeys,
    VideoRecord,
    WebhookDelivery,
    new_video_id,
)
from core.status_cache import DEFAULT_TTL_S, UNSETTLED_TTL_S, StatusCache, key_of, load_status
from core.storage import LocalStorage


def _record(video_id: str) -> VideoRecord:
    return VideoRecord(
        id=video_id,
        tenant="t",
        options=CompressOptions(selector="uniform", keep=2, stride=4, reconstructor="linear"),
        source=SourceInfo(filename="a.mp4", bytes=1, width=2, height=2, frames=1, fps=1, duration=1, codec="h264"),
        source_key=VideoKeys(video_id).source(".mp4"),
    )


def test_status_comes_from_redis_once_filled_and_follows_every_save(tmp_path: Path, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    storage = LocalStorage(tmp_path)
    plain = RecordStore(storage)  # writes storage only (as a process without the cache would)
    cached = RecordStore(storage, StatusCache(redis))
    video_id, event_id = new_video_id(), new_video_id()
    record = _record(video_id)
    plain.save(record)
    assert not redis.exists(key_of(video_id))

    got, states, hooks = load_status(cached, video_id)  # miss: filled from storage
    assert got.status is Status.queued and states == [] and hooks == []
    assert 0 < redis.ttl(key_of(video_id)) <= UNSETTLED_TTL_S  # a queued job can still change

    # once filled, storage is not read: a change behind the cache's back is not seen ...
    record.progress = 0.5
    plain.save(record)
    assert load_status(cached, video_id)[0].progress == 0.0
    # ... while every save through the store is
    record.status, record.progress = Status.done, 1.0
    cached.save(record)
    cached.save_reconstruction(ReconstructionRecord(video_id=video_id, reconstructor="linear", status=Status.running))
    cached.save_webhook(WebhookDelivery(event_id=event_id, video_id=video_id, event="compress.done", url="http://x",
                                        body="{}", status="pending"))
    got, states, hooks = load_status(cached, video_id)
    assert got.status is Status.done and [s.reconstructor for s in states] == ["linear"]
    assert [h.event_id for h in hooks] == [event_id]

    # a slower writer holding an older state cannot put it back
    stale = record.model_copy(update={"status": Status.running})
    older = stale.model_dump_json()
    assert cached.cache is not None
    cached.cache.put_item(stale.model_copy(update={"updated_at": record.updated_at.replace(year=2000)}), older)
    assert load_status(cached, video_id)[0].status is Status.done

    # settled (every part final): the copy lives long
    cached.save_reconstruction(ReconstructionRecord(video_id=video_id, reconstructor="linear", status=Status.done))
    cached.save_webhook(WebhookDelivery(event_id=event_id, video_id=video_id, event="compress.done", url="http://x",
                                        body="{}", status="delivered"))
    redis.delete(key_of(video_id))
    load_status(cached, video_id)
    assert redis.ttl(key_of(video_id)) > DEFAULT_TTL_S - 60

    cached.delete_video(video_id)
    assert not redis.exists(key_of(video_id))
    with pytest.raises(RecordNotFound):
        load_status(cached, video_id)
    assert not redis.exists(key_of(video_id))


def test_a_garbled_or_unreachable_copy_falls_back_to_storage(tmp_path: Path, redis_url: str) -> None:
    redis = Redis.from_url(redis_url)
    cached = RecordStore(LocalStorage(tmp_path), StatusCache(redis))
    video_id = new_video_id()
    cached.save(_record(video_id))
    load_status(cached, video_id)
    redis.hset(key_of(video_id), "record", b"{not json")
    assert load_status(cached, video_id)[0].id == video_id
    down = RecordStore(cached.storage, StatusCache(Redis(port=1, socket_connect_timeout=0.2)))
    down.save(_record(video_id))  # a lost write-through does not fail the save
    assert load_status(down, video_id)[0].id == video_id
