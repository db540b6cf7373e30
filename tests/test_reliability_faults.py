"""Faults injected into a running service: nothing it accepted is lost, nothing half-written is
ever visible, and every job ends done or failed with a reason.

Already covered in tests/test_service_faults.py and not repeated here: a worker SIGKILLed mid-
compression (plain), a transient error retried, a lost queue (FLUSHDB) reconciled, delete while
running, job timeouts, a corrupt bundle.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests._reliability import (
    FAULT_WORKER,
    GatewayProcess,
    StorageWatcher,
    job,
    storage_keys,
    upload,
    wait_job,
    wait_video,
)


def _accepted(response: httpx.Response) -> str:
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


# --------------------------------------------------------------------------------------------
# workers killed


@pytest.mark.slow
def test_worker_sigkilled_mid_compression_and_mid_reconstruction_no_partial_output_visible(
    service_stacks: Callable[..., Any], clip: Path, wait_for: Callable[..., Any], tmp_path: Path
) -> None:
    stack = service_stacks(workers=0)
    compress_started, reconstruct_started = tmp_path / "c", tmp_path / "r"
    slow = stack.start_worker(
        script=[FAULT_WORKER], env={"FRAMERS_TEST_FAULT": "slow:1.0", "FRAMERS_TEST_STARTED": str(compress_started)}
    )
    with stack.client() as client:
        video_id = _accepted(upload(client, clip))
        watcher = StorageWatcher(stack.settings, video_id, frames=40)
        watcher.start()
        try:
            # 1. killed while compressing: another worker re-runs the job from the kept source
            wait_for(compress_started.exists, timeout=30, what="the slow worker to start compressing")
            wait_for(lambda: job(client, video_id)["status"] == "running", timeout=10, what="status running")
            os.kill(slow.pid, signal.SIGKILL)
            slow.wait()
            healthy = stack.start_worker()
            state = wait_job(client, video_id, wait_for, timeout=60)
            assert state["status"] == "done", f"{state}\n{stack.worker_logs()}"
            assert state["attempts"] == 2 and state["frames"] == 40, f"{state}\n{stack.worker_logs()}"
            healthy.terminate()
            healthy.wait(30)

            # 2. killed while reconstructing: the reconstruction is re-run, no partial mp4 shows
            slow = stack.start_worker(
                script=[FAULT_WORKER],
                env={"FRAMERS_TEST_SLOW_RECONSTRUCT": "1.0", "FRAMERS_TEST_STARTED": str(reconstruct_started)},
            )
            assert client.get(f"/reconstruct/{video_id}").status_code == 202
            wait_for(reconstruct_started.exists, timeout=30, what="the slow worker to start reconstructing")
            wait_for(
                lambda: job(client, video_id)["reconstructions"]["linear"]["status"] == "running",
                timeout=10,
                what="reconstruction running",
            )
            os.kill(slow.pid, signal.SIGKILL)
            slow.wait()
            stack.start_worker()
            response = wait_video(client, video_id, wait_for, timeout=60)
            # (The mp4 is served as soon as it is stored; its state says "done" a moment later.)
            rebuilt = wait_for(
                lambda: (r := job(client, video_id)["reconstructions"]["linear"])["status"] != "running" and r,
                timeout=15,
                what="the reconstruction state",
            )
            # The watcher has seen (and checked) every output before it stops.
            outputs = {"record.json", "bundle.frs", "reconstructions/linear.mp4"}
            wait_for(lambda: outputs <= set(watcher.checked), timeout=15, what=f"the watcher ({watcher.checked})")
        finally:
            watcher.stop()
    assert rebuilt["status"] == "done" and rebuilt["frames"] == 40, f"{rebuilt}\n{stack.worker_logs()}"
    assert rebuilt["attempts"] == 2, f"{rebuilt}\n{stack.worker_logs()}"
    assert rebuilt["output_bytes"] == len(response.content)
    assert watcher.violations == [], watcher.violations


# --------------------------------------------------------------------------------------------
# Redis restarted


@pytest.mark.slow
def test_redis_restart_with_queued_jobs_loses_no_accepted_upload(
    service_stacks: Callable[..., Any],
    clip: Path,
    wait_for: Callable[..., Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Redis dies with jobs queued and comes back empty (no persistence: the worst case). Uploads
    accepted before — and one accepted while Redis was down — are all compressed: the records in
    storage are the source of truth and the reconciler re-enqueues them."""
    import service.redis_server
    from service.redis_server import RedisServer

    server = RedisServer(tmp_path / "redis", persist=False)
    server.start()
    try:
        stack = service_stacks(workers=0, redis_url=server.url)
        # A worker for reconstructions only, alive across the restart: its periodic reconciler
        # re-enqueues the lost compressions, and it serves the reconstruction at the end.
        survivor = stack.start_worker(env={"FRAMERS_WORKER_QUEUES": "reconstruct"})
        conn = redis.Redis.from_url(server.url)
        with stack.client() as client:
            queued = [_accepted(upload(client, clip)) for _ in range(2)]
            assert conn.llen("rq:queue:compress") == 2
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGKILL)  # crash: the queue is gone
            server.process.wait()
            during = _accepted(upload(client, clip))  # Redis down: stored, queued later
            for video_id in [*queued, during]:
                assert job(client, video_id)["status"] == "queued"  # served from storage alone
            monkeypatch.setattr(service.redis_server, "free_port", lambda host="127.0.0.1": server.port)
            server.start()  # same port, empty
            wait_for(
                lambda: conn.llen("rq:queue:compress") == 3, timeout=30, what="the reconciler to re-enqueue the jobs"
            )
            assert survivor.poll() is None, stack.worker_logs()
            stack.start_worker()
            for video_id in [*queued, during]:
                state = wait_job(client, video_id, wait_for, timeout=60)
                assert state["status"] == "done", f"{state}\n{stack.worker_logs()}"
            assert len(wait_video(client, queued[0], wait_for, timeout=60).content) > 0
        stack.stop()
    finally:
        server.stop()


# --------------------------------------------------------------------------------------------
# storage failures


def test_storage_write_failures_are_retried_then_fail_with_a_reason(
    service_stacks: Callable[..., Any], clip: Path, wait_for: Callable[..., Any], tmp_path: Path
) -> None:
    from core.storage import LocalStorage

    control = tmp_path / "storage-faults"
    stack = service_stacks(workers=0)
    stack.start_worker(script=[FAULT_WORKER], env={"FRAMERS_TEST_STORAGE_FAULTS": str(control)})
    storage = LocalStorage(stack.settings.local_storage_dir)
    with stack.client() as client:
        # Storage refuses every bundle write: retried (job_retries=2), then failed with the reason.
        control.write_text("always")
        broken = _accepted(upload(client, clip))
        state = wait_job(client, broken, wait_for, timeout=60)
        assert state["status"] == "failed", f"{state}\n{stack.worker_logs()}"
        assert state["attempts"] == 1 + stack.settings.job_retries
        assert "StorageError: injected storage failure" in state["error"]
        keys = list(storage.list(f"videos/{broken}/"))
        assert f"videos/{broken}/bundle.frs" not in keys
        assert any("/source" in k for k in keys), keys  # the upload is kept: nothing accepted is lost
        # the worker writes the failed record, then drops the marker: the client may look in between
        wait_for(lambda: list(storage.list(f"pending/{broken}/")) == [], timeout=10, what="marker dropped")
        assert client.get(f"/bundles/{broken}").status_code == 409

        # Two failures, then storage recovers: the third attempt succeeds.
        control.write_text("2")
        flaky = _accepted(upload(client, clip))
        state = wait_job(client, flaky, wait_for, timeout=60)
        assert state["status"] == "done", f"{state}\n{stack.worker_logs()}"
        assert state["attempts"] == 3 and state["last_error"] is None
        assert control.read_text() == "0"
        assert len(wait_video(client, flaky, wait_for, timeout=60).content) > 0


def test_the_same_codec_failure_twice_is_not_retried_again(
    service_stacks: Callable[..., Any], clip: Path, wait_for: Callable[..., Any]
) -> None:
    """A failure of the work itself (not storage, Redis, the OS or memory) that repeats on the
    retry is deterministic: the job fails then, with the reason, instead of waiting through every
    backoff (a fresh-user trial's 8×8 video sat "queued" for 6 minutes through 4 attempts of one
    OpenCV error). The upload is kept."""
    stack = service_stacks(workers=0)
    stack.start_worker(script=[FAULT_WORKER], env={"FRAMERS_TEST_FAULT": "bug:injected codec bug"})
    with stack.client() as client:
        video_id = _accepted(upload(client, clip))
        state = wait_job(client, video_id, wait_for, timeout=60)
        assert state["status"] == "failed", f"{state}\n{stack.worker_logs()}"
        assert stack.settings.job_retries >= 2 and state["attempts"] == 2
        assert state["error"].startswith("RuntimeError: injected codec bug") and "not retried again" in state["error"]
        assert state["source_kept"]  # nothing the user uploaded is lost


def test_storage_outage_at_the_gateway_answers_503_and_stores_nothing(
    service_stacks: Callable[..., Any], clip: Path, wait_for: Callable[..., Any]
) -> None:
    """An OS-level failure of local storage (here: its temp folder replaced by a file, as good as a
    read-only or full disk) is a clean 503 with Retry-After, not a 500, and leaves nothing behind."""
    stack = service_stacks(workers=0)
    tmp = Path(stack.settings.local_storage_dir) / ".tmp"
    shutil.rmtree(tmp)
    tmp.write_bytes(b"")
    try:
        with stack.client() as client:
            response = upload(client, clip)
            assert response.status_code == 503, response.text
            assert response.json()["detail"] == "storage is unavailable, try again later"
            assert response.headers["retry-after"] == "10"
            ready = client.get("/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["storage"].startswith("unreachable")
    finally:
        tmp.unlink()
        tmp.mkdir()
    assert storage_keys(stack.settings) == []
    assert list((stack.settings.scratch_dir / "uploads").glob("*.part")) == []
    stack.start_worker()
    with stack.client() as client:  # storage back: uploads work again
        assert wait_job(client, _accepted(upload(client, clip)), wait_for)["status"] == "done"


# --------------------------------------------------------------------------------------------
# gateway restarted


@pytest.mark.slow
def test_gateway_killed_during_upload_leaves_no_record_and_restarts_clean(
    service_stacks: Callable[..., Any], clip: Path, wait_for: Callable[..., Any], tmp_path: Path
) -> None:
    from core.records import PendingWork, RecordStore, VideoKeys, new_video_id, utcnow
    from core.storage import LocalStorage

    stack = service_stacks(workers=0, gateway=False)
    uploads = stack.settings.scratch_dir / "uploads"
    gateway = GatewayProcess(stack.settings, tmp_path / "gateway.log").start()
    outcome: dict[str, Any] = {}

    def slow_upload() -> None:
        def body() -> Any:
            yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="slow.mp4"\r\n\r\n'
            for _ in range(200):
                yield b"\0" * 16384
                threading.Event().wait(0.05)
            yield b"\r\n--b--\r\n"

        try:
            outcome["response"] = httpx.post(
                f"{gateway.url}/compress",
                content=body(),
                headers={"Content-Type": "multipart/form-data; boundary=b"},
                timeout=30,
            )
        except httpx.TransportError as exc:
            outcome["error"] = exc

    sender = threading.Thread(target=slow_upload)
    sender.start()
    wait_for(
        lambda: any(p.stat().st_size > 0 for p in uploads.glob("*.part")), timeout=30, what="the upload to be under way"
    )
    gateway.kill()
    sender.join(30)
    assert "error" in outcome, outcome  # the client sees the connection drop, never a 202

    # A gateway that died inside accept_upload hours ago (marker and source stored, no record).
    records = RecordStore(LocalStorage(stack.settings.local_storage_dir))
    orphan = new_video_id()
    marker = PendingWork(video_id=orphan, job="compress", created_at=utcnow() - timedelta(hours=7))
    records.storage.put_bytes(marker.model_dump_json().encode(), VideoKeys(orphan).pending("compress"))
    records.storage.put_file(clip, VideoKeys(orphan).source(".mp4"))

    restarted = GatewayProcess(stack.settings, tmp_path / "gateway.log", port=gateway.port).start()
    try:
        assert not [k for k in storage_keys(stack.settings) if orphan not in k]  # the killed upload left nothing
        with httpx.Client(base_url=restarted.url, timeout=30) as client:
            assert client.get(f"/jobs/{orphan}").status_code == 404  # never visible
            stack.start_worker()  # reconciles at start: the old orphan's leftovers are removed
            wait_for(lambda: storage_keys(stack.settings) == [], timeout=30, what="the orphan to be cleaned up")
            video_id = _accepted(upload(client, clip))
            state = wait_job(client, video_id, wait_for, timeout=60)
            assert state["status"] == "done", f"{state}\n{stack.worker_logs()}"
    finally:
        restarted.stop()
