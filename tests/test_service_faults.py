"""Failures: a worker killed mid-job, transient errors, bad input, a lost queue, delete mid-job."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from rq.job import JobStatus

FAULT_WORKER = str(Path(__file__).with_name("_fault_worker.py"))


@contextlib.contextmanager
def _stopped_after(stack: Any) -> Iterator[None]:
    # Stop before the session's moto server goes away, or its workers log connection errors.
    try:
        yield
    finally:
        stack.stop()


def upload(client: httpx.Client, path: Path, **options: Any) -> str:
    with open(path, "rb") as f:
        response = client.post("/compress", files={"file": (path.name, f, "video/mp4")}, data=options)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def job(client: httpx.Client, video_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/jobs/{video_id}").json()
    return body


def finished(client: httpx.Client, video_id: str) -> Callable[[], dict[str, Any] | None]:
    def check() -> dict[str, Any] | None:
        state = job(client, video_id)
        return state if state["status"] in ("done", "failed") else None

    return check


@pytest.mark.slow
def test_worker_killed_during_job_the_job_still_completes(
    service_stacks: Callable[..., Any], clip: Path, wait_for: Callable[..., Any], tmp_path: Path
) -> None:
    stack = service_stacks(workers=0)
    started = tmp_path / "started"
    slow = stack.start_worker(
        script=[FAULT_WORKER], env={"FRAMERS_TEST_FAULT": "slow:1.0", "FRAMERS_TEST_STARTED": str(started)}
    )
    with stack.client() as client:
        video_id = upload(client, clip)
        wait_for(started.exists, timeout=30, what="the slow worker to start the job")
        wait_for(lambda: job(client, video_id)["status"] == "running", timeout=10, what="status running")
        os.kill(slow.pid, signal.SIGKILL)
        slow.wait()
        stack.start_worker()  # a healthy worker takes over once the dead one's lease lapses
        state = wait_for(finished(client, video_id), timeout=60, what="the job to finish after the kill")
        assert state["status"] == "done", f"{state}\n{stack.worker_logs()}"
        assert state["attempts"] == 2
        assert state["error"] is None
        response = wait_for(lambda: (r := client.get(f"/reconstruct/{video_id}")).status_code == 200 and r, timeout=60)
        assert len(response.content) > 0


def test_transient_failure_is_retried(
    service_stacks: Callable[..., Any], clip: Path, wait_for: Callable[..., Any], tmp_path: Path
) -> None:
    stack = service_stacks(workers=0)
    stack.start_worker(script=[FAULT_WORKER], env={"FRAMERS_TEST_FAULT": f"fail-once:{tmp_path / 'failed'}"})
    with stack.client() as client:
        video_id = upload(client, clip)
        state = wait_for(finished(client, video_id), timeout=60, what="the retried job")
    assert state["status"] == "done", f"{state}\n{stack.worker_logs()}"
    assert state["attempts"] == 2
    assert state["last_error"] is None


def test_bad_input_fails_at_once_with_the_codec_message(
    service_stacks: Callable[..., Any], wait_for: Callable[..., Any]
) -> None:
    """A source that got past the gateway but is not a video (the gateway probes, so we store it
    directly): the job fails without retries and says why."""
    from core.queues import compress_job_id, compress_spec, connect, enqueue_once, job_status
    from core.records import CompressOptions, RecordStore, SourceInfo, VideoKeys, VideoRecord, new_video_id
    from core.storage import LocalStorage

    stack = service_stacks(workers=1)
    records = RecordStore(LocalStorage(stack.settings.local_storage_dir))
    video_id = new_video_id()
    source_key = VideoKeys(video_id).source(".mp4")
    records.storage.put_bytes(b"definitely not a video\n" * 100, source_key)
    info = SourceInfo(
        filename="fake.mp4", bytes=2300, width=64, height=48, frames=40, fps=25, duration=1.6, codec="h264"
    )
    options = CompressOptions(selector="uniform", keep=2, stride=4, reconstructor="linear")
    records.save(VideoRecord(id=video_id, tenant="default", options=options, source=info, source_key=source_key))
    records.mark_pending(video_id, "compress")
    conn = connect(stack.settings)
    assert enqueue_once(conn, stack.settings, compress_spec(stack.settings, video_id))
    with stack.client() as client:
        state = wait_for(finished(client, video_id), timeout=30, what="the bad job to fail")
    assert state["status"] == "failed"
    assert "fake.mp4" in state["error"]
    assert str(stack.settings.scratch_dir) not in state["error"]  # no internal paths for users
    with stack.client() as client:  # every route that needs the bundle gives the same answer
        for route in ("reconstruct", "bundles", "quality"):
            assert client.get(f"/{route}/{video_id}").json()["code"] == "compression_failed", route
    assert state["attempts"] == 1
    # Failed in RQ too (not retried): RQ records that right after the job function returns.
    wait_for(lambda: job_status(conn, compress_job_id(video_id)) == JobStatus.FAILED, timeout=10)
    assert list(records.iter_pending()) == []
    # The source is kept: a failed job must not lose what the user uploaded.
    assert records.storage.exists(source_key)


def test_reconciler_requeues_jobs_lost_by_redis(
    service_stacks: Callable[..., Any], clip: Path, wait_for: Callable[..., Any]
) -> None:
    stack = service_stacks(workers=0)
    with stack.client() as client:
        video_id = upload(client, clip)
        redis.Redis.from_url(stack.settings.redis_url).flushdb()  # the queue forgets everything
        stack.start_worker()  # reconciles at startup from the records in storage
        state = wait_for(finished(client, video_id), timeout=60, what="the reconciled job")
    assert state["status"] == "done", f"{state}\n{stack.worker_logs()}"


def test_delete_while_running_leaves_nothing_behind(
    service_stacks: Callable[..., Any], clip: Path, wait_for: Callable[..., Any], tmp_path: Path
) -> None:
    from core.queues import compress_job_id, connect, job_status
    from core.storage import LocalStorage

    stack = service_stacks(workers=0)
    started = tmp_path / "started"
    stack.start_worker(
        script=[FAULT_WORKER], env={"FRAMERS_TEST_FAULT": "slow:0.5", "FRAMERS_TEST_STARTED": str(started)}
    )
    storage = LocalStorage(stack.settings.local_storage_dir)
    conn = connect(stack.settings)
    with stack.client() as client:
        video_id = upload(client, clip)
        wait_for(started.exists, timeout=30, what="the job to start")
        assert client.delete(f"/videos/{video_id}").status_code == 204
        wait_for(
            lambda: job_status(conn, compress_job_id(video_id)) in (JobStatus.FINISHED, JobStatus.FAILED),
            timeout=30,
            what="the job to stop",
        )
        time.sleep(0.5)
        assert list(storage.list(f"videos/{video_id}/")) == []
        assert list(storage.list(f"pending/{video_id}/")) == []
        assert client.get(f"/jobs/{video_id}").status_code == 404


def test_s3_backend_end_to_end(
    service_stacks: Callable[..., Any], s3_bucket: dict[str, str], clip: Path, wait_for: Callable[..., Any]
) -> None:
    import boto3

    stack = service_stacks(workers=1, **s3_bucket)
    with stack.client() as client, _stopped_after(stack):
        video_id = upload(client, clip)
        state = wait_for(finished(client, video_id), timeout=60, what="the job on S3")
        assert state["status"] == "done", f"{state}\n{stack.worker_logs()}"
        response = wait_for(lambda: (r := client.get(f"/reconstruct/{video_id}")).status_code == 200 and r, timeout=60)
        part = client.get(f"/reconstruct/{video_id}", headers={"Range": "bytes=0-9"})
        assert part.status_code == 206 and part.content == response.content[:10]
        assert client.get(f"/bundles/{video_id}").status_code == 200
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_bucket["s3_endpoint_url"],
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket["s3_bucket"]).get("Contents", [])]
        assert f"videos/{video_id}/bundle.frs" in keys
        assert client.delete(f"/videos/{video_id}").status_code == 204
        left = s3.list_objects_v2(Bucket=s3_bucket["s3_bucket"]).get("Contents", [])
        assert [o["Key"] for o in left] == []


def test_job_timeout_fails_the_job_without_retry(
    service_stacks: Callable[..., Any], clip: Path, wait_for: Callable[..., Any], tmp_path: Path
) -> None:
    stack = service_stacks(workers=0, compress_timeout_s=1)
    stack.start_worker(
        script=[FAULT_WORKER], env={"FRAMERS_TEST_FAULT": "slow:1.5", "FRAMERS_TEST_STARTED": str(tmp_path / "s")}
    )
    with stack.client() as client:
        video_id = upload(client, clip)
        state = wait_for(finished(client, video_id), timeout=30, what="the job to time out")
    assert state["status"] == "failed", f"{state}\n{stack.worker_logs()}"
    assert "timed out" in state["error"]
    assert state["attempts"] == 1


def test_corrupt_bundle_fails_reconstruction_for_good(
    service_stacks: Callable[..., Any], clip: Path, wait_for: Callable[..., Any]
) -> None:
    from core.records import VideoKeys
    from core.storage import LocalStorage

    stack = service_stacks(workers=1)
    with stack.client() as client:
        video_id = upload(client, clip)
        assert wait_for(finished(client, video_id), timeout=60)["status"] == "done"
        LocalStorage(stack.settings.local_storage_dir).put_bytes(b"garbage", VideoKeys(video_id).bundle)
        assert client.get(f"/reconstruct/{video_id}").status_code == 202

        def failed() -> httpx.Response | None:
            response = client.get(f"/reconstruct/{video_id}")
            return response if response.status_code != 202 else None

        response = wait_for(failed, timeout=30, what="the reconstruction to fail")
        assert response.status_code == 422, response.text
        assert "reconstruction with linear failed" in response.json()["detail"]
        state = job(client, video_id)["reconstructions"]["linear"]
        assert state["status"] == "failed" and state["attempts"] == 1
