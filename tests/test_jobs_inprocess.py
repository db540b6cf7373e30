"""The job functions of workers/jobs.py run in this process by an RQ ``SimpleWorker`` in burst
mode, on a real Redis (the subprocess tests run the same jobs in `python -m workers.main`): a
compression, then a reconstruction of its bundle, and a bad source failing at once."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.queue_names import ALL_QUEUES
from core.queues import compress_spec, connect, enqueue_once, reconstruct_spec
from core.records import CompressOptions, RecordStore, SourceInfo, Status, VideoKeys, VideoRecord, new_video_id
from core.settings import Settings
from tests.conftest import TEST_SETTINGS
from tests.videogen import write_variant


@pytest.fixture
def ctx(redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The worker context of this process, on a fresh Redis database and local storage."""
    from workers import context

    settings = Settings(**{**TEST_SETTINGS, "data_dir": tmp_path / "data", "redis_url": redis_url})
    monkeypatch.setattr(context, "_context", None)
    yield context.configure(settings, connect(settings))
    context._context = None


def _store_upload(ctx: Any, source: bytes, info: SourceInfo, options: CompressOptions | None = None) -> str:
    records: RecordStore = ctx.records
    video_id = new_video_id()
    source_key = VideoKeys(video_id).source(".mp4")
    records.storage.put_bytes(source, source_key)
    options = options or CompressOptions(selector="stride", keep=2, stride=4, reconstructor="linear")
    records.save(VideoRecord(id=video_id, tenant="default", options=options, source=info, source_key=source_key))
    records.mark_pending(video_id, "compress")
    return video_id


def _work(ctx: Any) -> None:
    """Run every queued job in this process (burst: return when the queues are empty)."""
    from rq import Queue, SimpleWorker

    queues = [Queue(name, connection=ctx.redis) for name in ALL_QUEUES]
    SimpleWorker(queues, connection=ctx.redis).work(burst=True, with_scheduler=False)


def _compressed_clip(ctx: Any, make_clip: Callable[..., Path], frames: int) -> str:
    """A generated 64x48 clip of ``frames`` frames uploaded and compressed in process: its id."""
    clip = make_clip(width=64, height=48, frames=frames)
    info = SourceInfo(filename="clip.mp4", bytes=clip.stat().st_size, width=64, height=48, frames=frames, fps=25,
                      duration=frames / 25, codec="h264")
    video_id = _store_upload(ctx, clip.read_bytes(), info)
    assert enqueue_once(ctx.redis, ctx.settings, compress_spec(ctx.settings, video_id))
    _work(ctx)
    return video_id


def test_compress_then_reconstruct_in_process(ctx: Any, make_clip: Callable[..., Path]) -> None:
    video_id = _compressed_clip(ctx, make_clip, 40)

    record = ctx.records.load(video_id)
    assert record.status is Status.done, record.error
    assert record.attempts == 1 and record.progress == 1.0
    assert ctx.storage.exists(VideoKeys(video_id).bundle)
    assert list(ctx.records.iter_pending()) == []

    assert enqueue_once(ctx.redis, ctx.settings, reconstruct_spec(ctx.settings, video_id, "linear"))
    _work(ctx)
    state = ctx.records.load_reconstruction(video_id, "linear")
    assert state.status is Status.done, state.error
    output = VideoKeys(video_id).reconstruction("linear")
    assert ctx.storage.size(output) == state.output_bytes > 0
    assert state.frames == 40


def test_a_candidate_map_job_records_the_map(ctx: Any) -> None:
    """``candidate_map=true`` on a real clip: the job's record says what the map holds, and the
    reconstruction by framemae (the model it was made for) gives no warning."""
    clip = Path(__file__).parent / "data" / "mmaction2_test.avi"
    info = SourceInfo(filename="test.avi", bytes=clip.stat().st_size, width=320, height=240, frames=164, fps=30,
                      duration=164 / 30, codec="mpeg4")
    options = CompressOptions(selector="stride", keep=2, stride=8, reconstructor="framemae", candidate_map=True)
    video_id = _store_upload(ctx, clip.read_bytes(), info, options)
    assert enqueue_once(ctx.redis, ctx.settings, compress_spec(ctx.settings, video_id))
    _work(ctx)
    record = ctx.records.load(video_id)
    assert record.status is Status.done, record.error
    entry = record.candidate_map
    assert entry is not None and entry["reconstructor"] == "framemae" and entry["switched"] > 0
    assert entry["maps"] == record.frames - record.kept_frames
    assert enqueue_once(ctx.redis, ctx.settings, reconstruct_spec(ctx.settings, video_id, "framemae"))
    _work(ctx)
    state = ctx.records.load_reconstruction(video_id, "framemae")
    assert state.status is Status.done, state.error
    assert state.warnings == []


def test_a_truncated_upload_records_what_was_decoded(ctx: Any, tmp_path: Path) -> None:
    """A Matroska file cut at 60 % keeps its header's 2 s: the record's ``source`` says what the
    upload declared, its ``duration`` what the bundle plays, and a warning says why they differ."""
    whole = write_variant(tmp_path / "whole.mkv", container_format="matroska", frames=50, width=64, height=48)
    data = whole.read_bytes()[: int(whole.stat().st_size * 0.6)]
    info = SourceInfo(filename="cut.mkv", bytes=len(data), width=64, height=48, frames=50, fps=25, duration=2.0,
                      codec="h264")
    video_id = _store_upload(ctx, data, info)
    assert enqueue_once(ctx.redis, ctx.settings, compress_spec(ctx.settings, video_id))
    _work(ctx)
    record = ctx.records.load(video_id)
    assert record.status is Status.done, record.error
    assert record.source.duration == 2.0 and record.duration is not None
    assert 0.5 < record.duration < 1.6 and record.frames is not None and record.frames < 40
    assert any("truncated" in w for w in record.warnings), record.warnings


def test_late_request_does_not_rerun_a_finished_reconstruction(ctx: Any, make_clip: Callable[..., Path]) -> None:
    """A GET /reconstruct that found no video a moment before the run finished (the race of 16
    concurrent requests) must not start the run again once the job is over."""
    from core.outputs import output_spec
    from core.queues import job_status
    from service.operations import request_reconstruction
    from service.state import Services
    from service.targets import Target

    video_id = _compressed_clip(ctx, make_clip, 24)
    services = Services.build(ctx.settings)
    spec = output_spec(None, None, None, None)
    target = Target(reconstructor="hold", output=spec, variant=spec.variant("hold"), explicit=True)
    record = ctx.records.load(video_id)
    request_reconstruction(services, record, target)
    _work(ctx)
    job_id = reconstruct_spec(ctx.settings, video_id, target.variant).job_id
    assert job_status(ctx.redis, job_id) == "finished"

    state = request_reconstruction(services, record, target)  # the late one
    assert state.status is Status.done and state.attempts == 1
    assert job_status(ctx.redis, job_id) == "finished"  # not queued again
    ctx.storage.delete(VideoKeys(video_id).reconstruction(target.variant))
    assert request_reconstruction(services, record, target).status is Status.queued  # gone: made again


def test_bad_source_fails_at_once_in_process(ctx: Any) -> None:
    info = SourceInfo(filename="fake.mp4", bytes=2300, width=64, height=48, frames=40, fps=25, duration=1.6,
                      codec="h264")
    video_id = _store_upload(ctx, b"definitely not a video\n" * 100, info)
    assert enqueue_once(ctx.redis, ctx.settings, compress_spec(ctx.settings, video_id))
    _work(ctx)
    record = ctx.records.load(video_id)
    assert record.status is Status.failed and record.attempts == 1
    assert "fake.mp4" in (record.error or "")
    assert ctx.storage.exists(record.source_key)  # a failed job keeps what the user uploaded
