"""Issue 16 over real HTTP (loopback gateway, real Redis, real worker processes, real videos):
cancel, output options (codec/container/CRF, cached per option), per-frame PSNR and kept frames,
the source download, time estimates, readiness with workers, the worker's Redis timeouts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import pytest
from rq.exceptions import DequeueTimeout

from tests.test_service_platform import SECRET, Receiver, check_signature, upload
from tests.videogen import write_video


@pytest.fixture(scope="module")
def receiver() -> Any:
    server = Receiver()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def stack(service_stacks: Callable[..., Any], receiver: Receiver) -> Any:
    return service_stacks(
        workers=1,
        max_upload_bytes=64 * 1024 * 1024,
        webhook_secret=SECRET,
        callback_allowed_hosts="127.0.0.1",
    )


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """600 frames of 320x240: the oracle selector and the mci reconstructor take seconds on it."""
    from tests.conftest import write_clip

    return write_clip(tmp_path_factory.mktemp("long") / "long.mp4", width=320, height=240, frames=600)


@pytest.fixture(scope="module")
def audio_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("audio") / "with_audio.mp4", frames=48, audio=True)


def job(client: httpx.Client, video_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/jobs/{video_id}").json()
    return body


def wait_status(client: httpx.Client, video_id: str, wait_for: Callable[..., Any], *statuses: str) -> dict[str, Any]:
    result: dict[str, Any] = wait_for(
        lambda: (j := job(client, video_id))["status"] in statuses and j, timeout=90, what=f"{video_id} {statuses}"
    )
    return result


def fetch(client: httpx.Client, url: str, wait_for: Callable[..., Any]) -> httpx.Response:
    """GET a reconstruction until it is made (202 + Retry-After meanwhile)."""

    def made() -> httpx.Response | None:
        response = client.get(url)
        if response.status_code == 202:
            retry = int(response.headers["retry-after"])
            assert 1 <= retry <= 60
            return None
        return response

    result: httpx.Response = wait_for(made, timeout=120, interval=0.2, what=url)
    return result


def events_for(receiver: Receiver, path: str, video_id: str) -> list[dict[str, Any]]:
    return [e for e in (check_signature(r) for r in receiver.on(path)) if e["id"] == video_id]


# --------------------------------------------------------------------------------------------
# cancel


def test_cancel_a_queued_compression(service_stacks: Callable[..., Any], receiver: Receiver, clip: Path,
                                     wait_for: Callable[..., Any]) -> None:
    """No worker yet: the job waits; cancel takes it out of the queue at once (200), the record says
    canceled, the source stays, and the compress.canceled event goes out once a worker runs."""
    stack = service_stacks(workers=0, webhook_secret=SECRET, callback_allowed_hosts="127.0.0.1")
    hook = receiver.url("/queued-cancel")
    with stack.client() as client:
        video_id = upload(client, clip, callback_url=hook).json()["id"]
        answer = client.post(f"/jobs/{video_id}/cancel")
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "canceled" and answer.json()["job"] == "compress"
        view = job(client, video_id)
        assert view["status"] == "canceled" and view["source_kept"] is True
        assert client.post(f"/jobs/{video_id}/cancel").status_code == 200  # repeating is harmless
        assert client.get(f"/sources/{video_id}").content == clip.read_bytes()  # nothing lost
        stack.start_worker()
        events = wait_for(lambda: events_for(receiver, "/queued-cancel", video_id), timeout=60, what="event")
        assert [e["event"] for e in events] == ["compress.canceled"] and events[0]["status"] == "canceled"
        assert job(client, video_id)["status"] == "canceled"  # the worker never ran it
        refused = client.get(f"/reconstruct/{video_id}")
        assert refused.status_code == 409 and refused.json()["code"] == "compression_canceled"
        assert client.get(f"/bundles/{video_id}").json()["code"] == "compression_canceled"
        assert client.get(f"/quality/{video_id}").json()["code"] == "compression_canceled"  # was not_ready
    # the webhook's marker goes once its delivery is recorded, just after the receiver answered
    pending = Path(stack.settings.local_storage_dir) / "pending" / video_id
    wait_for(lambda: not pending.exists() or not any(pending.iterdir()), timeout=30, what="the markers cleared")


def test_cancel_a_running_compression(stack: Any, receiver: Receiver, long_clip: Path,
                                      wait_for: Callable[..., Any]) -> None:
    hook = receiver.url("/running-cancel")
    with stack.client() as client:
        video_id = upload(client, long_clip, selector="oracle", callback_url=hook).json()["id"]
        running = wait_for(lambda: (j := job(client, video_id))["status"] == "running" and j["progress"] > 0 and j,
                           timeout=60, interval=0.05, what="running")
        assert running["eta_s"] is None or running["eta_s"] > 0
        answer = client.post(f"/jobs/{video_id}/cancel")
        assert answer.status_code == 202 and answer.json()["status"] == "canceling"
        view = wait_status(client, video_id, wait_for, "canceled", "done", "failed")
        assert view["status"] == "canceled", view
        assert view["error"] is None and view["sizes"]["bundle_bytes"] is None
        assert not (Path(stack.settings.local_storage_dir) / "videos" / video_id / "bundle.frs").exists()
        assert client.get(f"/sources/{video_id}").status_code == 200  # the upload stays
        events = wait_for(lambda: events_for(receiver, "/running-cancel", video_id), timeout=60, what="event")
        assert [e["event"] for e in events] == ["compress.canceled"]
        done = client.post(f"/jobs/{video_id}/cancel")
        assert done.status_code == 200  # already canceled


def test_cancel_a_running_reconstruction_then_start_it_again(stack: Any, long_clip: Path,
                                                             wait_for: Callable[..., Any]) -> None:
    with stack.client() as client:
        video_id = upload(client, long_clip).json()["id"]
        wait_status(client, video_id, wait_for, "done")
        assert client.post(f"/jobs/{video_id}/cancel").json()["code"] == "not_cancelable"
        missing = client.post(f"/jobs/{video_id}/cancel", params={"reconstructor": "mci"})
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
        assert client.get(f"/reconstruct/{video_id}", params={"reconstructor": "mci"}).status_code == 202

        def running() -> Any:
            state = job(client, video_id)["reconstructions"].get("mci", {})
            return state.get("status") == "running" and state["progress"] > 0 and state

        wait_for(running, timeout=60, interval=0.05, what="mci running")
        answer = client.post(f"/jobs/{video_id}/cancel", params={"reconstructor": "mci"})
        assert answer.status_code == 202 and answer.json()["reconstruction"] == "mci"
        wait_for(lambda: job(client, video_id)["reconstructions"]["mci"]["status"] == "canceled", timeout=60,
                 what="mci canceled")
        assert job(client, video_id)["status"] == "done"  # the video itself is untouched
        again = client.get(f"/reconstruct/{video_id}", params={"reconstructor": "mci"})
        assert again.status_code == 202 and again.json()["status"] in ("queued", "running")
        client.post(f"/jobs/{video_id}/cancel", params={"reconstructor": "mci"})  # don't keep the worker busy


# --------------------------------------------------------------------------------------------
# output options, quality, sources


def test_output_options_are_separate_cached_outputs(stack: Any, audio_clip: Path, wait_for: Callable[..., Any],
                                                    tmp_path: Path) -> None:
    with stack.client() as client:
        video_id = upload(client, audio_clip, keep_source="true").json()["id"]
        wait_status(client, video_id, wait_for, "done")
        base = f"/reconstruct/{video_id}"
        mp4 = fetch(client, base, wait_for)
        webm = fetch(client, f"{base}?codec=vp9&quality=medium", wait_for)
        av1 = fetch(client, f"{base}?codec=av1&container=webm&crf=40", wait_for)
        low = fetch(client, f"{base}?crf=35", wait_for)
        assert mp4.headers["content-type"] == "video/mp4" and webm.headers["content-type"] == "video/webm"
        assert av1.headers["content-type"] == "video/webm" and low.headers["content-type"] == "video/mp4"
        assert len(low.content) < len(mp4.content)  # a higher CRF is a smaller output
        expected = {"mp4": (mp4, "h264", "aac"), "webm": (webm, "vp9", "opus"), "av1": (av1, "av1", "opus")}
        for name, (response, video_codec, audio_codec) in expected.items():
            path = tmp_path / f"{name}.out"
            path.write_bytes(response.content)
            with av.open(str(path)) as container:
                assert container.streams.video[0].codec_context.name in (video_codec, "libdav1d", "libvpx-vp9")
                assert container.streams.audio[0].codec_context.name in (audio_codec, "libopus")
                assert sum(1 for _ in container.decode(video=0)) == 48
        view = job(client, video_id)["reconstructions"]
        assert set(view) == {"linear", "linear-vp9-crf32-webm", "linear-av1-crf40-webm", "linear-h264-crf35-mp4"}
        assert view["linear-vp9-crf32-webm"]["codec"] == "vp9" and view["linear"]["crf"] == 18
        assert "codec=vp9" in view["linear-vp9-crf32-webm"]["link"]
        # the same options spelled differently are the same output: answered at once
        assert client.get(f"{base}?codec=vp9&container=webm&crf=32").status_code == 200
        for bad in ("codec=h264&container=webm", "crf=20&quality=high", "crf=60", "codec=mpeg2", "quality=best"):
            refused = client.get(f"{base}?{bad}")
            assert refused.status_code == 422 and refused.json()["code"] in ("invalid_option", "validation_error"), bad


def test_quality_has_per_frame_psnr_and_kept_frames(stack: Any, clip: Path, wait_for: Callable[..., Any]) -> None:
    with stack.client() as client:
        kept = upload(client, clip, keep_source="true", selector="stride", stride="4").json()["id"]
        dropped = upload(client, clip).json()["id"]
        for video_id in (kept, dropped):
            wait_status(client, video_id, wait_for, "done")
            assert client.get(f"/quality/{video_id}").json()["code"] == "not_ready"
            fetch(client, f"/reconstruct/{video_id}", wait_for)
        quality = client.get(f"/quality/{kept}").json()
        view = job(client, kept)
        assert quality["frames"] == view["frames"] == 40 and len(quality["times"]) == 40
        assert len(quality["kept"]) == view["kept_frames"] and quality["kept"][:2] == [0, 4]
        assert quality["times"][1] == pytest.approx(0.04)
        psnr = quality["psnr"]
        assert len(psnr) == 40 and all(15 < p <= 60 for p in psnr)
        assert min(psnr[i] for i in quality["kept"]) > min(psnr)  # kept frames beat the rebuilt ones
        assert quality["psnr_mean"] == pytest.approx(sum(psnr) / 40, abs=0.01)
        assert view["reconstructions"]["linear"]["psnr_mean"] == quality["psnr_mean"]
        assert quality["sizes"]["output_bytes"] > 0
        assert quality["sizes"]["bundle_bytes"] == view["sizes"]["bundle_bytes"]
        assert client.get(f"/sources/{kept}").content == clip.read_bytes()
        assert client.get(f"/sources/{kept}", headers={"Range": "bytes=0-9"}).content == clip.read_bytes()[:10]
        # without keep_source the upload is gone after compression: no PSNR, 410 for the source
        assert client.get(f"/quality/{dropped}").json()["psnr"] is None
        gone = client.get(f"/sources/{dropped}")
        assert gone.status_code == 410 and gone.json()["code"] == "source_deleted"
        assert upload(client, clip, keep_source="maybe").json()["code"] == "invalid_option"


def test_significance_is_measured_by_the_reconstruction_and_served_as_json_and_png(
    stack: Any, clip: Path, wait_for: Callable[..., Any]
) -> None:
    """GET /significance starts the reconstruction that measures it (202), then serves the map the
    job stored: per 2-frame x 16x16 chunk, the MSE of the rebuilt frames against the kept source."""
    with stack.client() as client:
        kept = upload(client, clip, keep_source="true", selector="stride", stride="4").json()["id"]
        dropped = upload(client, clip).json()["id"]
        for video_id in (kept, dropped):
            wait_status(client, video_id, wait_for, "done")
        first = client.get(f"/significance/{kept}")
        assert first.status_code == 202 and first.json()["links"]["reconstruction"] == f"/reconstruct/{kept}"
        doc = fetch(client, f"/significance/{kept}", wait_for)
        assert doc.status_code == 200 and doc.headers["content-type"] == "application/json"
        body = doc.json()
        assert body["method"] == "exact" and body["frames"] == 40 and body["shape"] == [20, 3, 4]  # 64x48 clip
        assert body["settings"]["kept"][:2] == [0, 4] and body["settings"]["reconstructor"] == "linear"
        fetch(client, f"/reconstruct/{kept}", wait_for)  # stored last, after the map
        quality = client.get(f"/quality/{kept}").json()  # the same job measured both
        values = np.array([[[np.nan if v is None else v for v in row] for row in plane] for plane in body["values"]])
        # 64x48 is whole 16x16 blocks: a chunk plane's mean is the mean of its two frames' MSE
        frame_mse = (255.0**2 / 10 ** (np.array(quality["psnr"]) / 10)).reshape(20, 2).mean(axis=1)
        assert np.all(np.isfinite(values)) and values.max() > 10 * values.min()
        assert np.allclose(values.reshape(20, -1).mean(axis=1), frame_mse, rtol=0.01, atol=0.01)
        png = client.get(f"/significance/{kept}?format=png")
        assert png.status_code == 200 and png.headers["content-type"] == "image/png"
        assert png.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert client.get(f"/significance/{kept}?format=gif").status_code == 422
        # without keep_source there is nothing to measure against
        refused = client.get(f"/significance/{dropped}")
        assert refused.status_code == 409 and refused.json()["code"] == "source_deleted"
        # deleting the video deletes its maps
        assert client.delete(f"/videos/{kept}").status_code in (200, 202, 204)
        assert client.get(f"/significance/{kept}").status_code == 404


# --------------------------------------------------------------------------------------------
# readiness and the worker's Redis connection


def test_readyz_tells_whether_workers_are_connected(service_stacks: Callable[..., Any],
                                                    wait_for: Callable[..., Any]) -> None:
    stack = service_stacks(workers=0)
    with stack.client() as client:
        alone = client.get("/readyz")
        assert alone.status_code == 503
        assert alone.json()["checks"]["workers"] == "no worker serves webhooks, reconstruct, compress (0 connected)"
    # a gateway told not to require workers reports them and stays ready
    with stack.client(url=stack.start_gateway(ready_requires_workers=False)) as lenient:
        answer = lenient.get("/readyz")
        assert answer.status_code == 200 and answer.json()["checks"]["workers"].startswith("no worker serves")
    with stack.client() as client:
        worker = stack.start_worker()
        ready = wait_for(lambda: (r := client.get("/readyz")).status_code == 200 and r, timeout=60, what="ready")
        assert ready.json()["checks"]["workers"] == "ok: 1 connected"
        only = stack.start_worker(env={"FRAMERS_WORKER_QUEUES": "reconstruct"})
        wait_for(lambda: client.get("/readyz").json()["checks"]["workers"] == "ok: 2 connected", what="2 workers")
        worker.terminate()
        worker.wait(30)  # a worker that stops unregisters itself
        answer = client.get("/readyz")
        assert answer.status_code == 503
        assert answer.json()["checks"]["workers"] == "no worker serves webhooks, compress (1 connected)"
        only.terminate()
        only.wait(30)
    assert "could not connect to Redis" not in stack.worker_logs()


def test_worker_connection_outlasts_the_blocking_dequeue(redis_url: str, tmp_path: Path) -> None:
    """Every connection the worker can dequeue on waits longer than RQ's BLPOP (the startup ping's
    connection included): with redis-py's 5 s default the first dequeue timed out."""
    from core.settings import Settings
    from workers.main import build_worker

    settings = Settings(redis_url=redis_url, data_dir=tmp_path, job_lease_s=60)
    worker = build_worker(settings, ["compress"])
    pool = worker.connection.connection_pool
    connections = [*pool._available_connections, *pool._in_use_connections]  # the startup ping's
    assert connections, "build_worker pings Redis through the worker's connection"
    for conn in connections:
        assert conn.socket_timeout is not None and conn.socket_timeout > worker.dequeue_timeout
    assert pool.connection_kwargs["socket_timeout"] > worker.dequeue_timeout
    # one real blocking dequeue longer than redis-py's default 5 s ends as RQ's "nothing came", not as
    # a socket timeout
    with pytest.raises(DequeueTimeout):
        worker.queue_class.dequeue_any(worker.queues, 6, connection=worker.connection)
