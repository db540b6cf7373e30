"""The HTTP API end to end: real Redis, a real worker process, real HTTP on loopback."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

KEY_A, KEY_B = "key-a-0123456789", "key-b-9876543210"


@pytest.fixture(scope="module")
def stack(service_stacks: Callable[..., Any]) -> Any:
    return service_stacks(workers=1, api_keys=f"{KEY_A}:tenant-a,{KEY_B}:tenant-b")


@pytest.fixture(scope="module")
def open_url(stack: Any) -> str:
    """A second gateway on the same Redis and storage, without API keys."""
    return str(stack.start_gateway(api_keys=""))


def upload(client: httpx.Client, path: Path, field: str = "file", **options: Any) -> httpx.Response:
    with open(path, "rb") as f:
        return client.post("/compress", files={field: (path.name, f, "video/mp4")}, data=options)


def wait_job(client: httpx.Client, video_id: str, wait_for: Callable[..., Any], timeout: float = 60) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/jobs/{video_id}").json()
        return job if job["status"] in ("done", "failed") else None

    result: dict[str, Any] = wait_for(finished, timeout=timeout, what=f"job {video_id}")
    return result


def wait_reconstruction(
    client: httpx.Client, video_id: str, wait_for: Callable[..., Any], **params: str
) -> httpx.Response:
    def ready() -> httpx.Response | None:
        response = client.get(f"/reconstruct/{video_id}", params=params)
        assert response.status_code in (200, 202), response.text
        return response if response.status_code == 200 else None

    result: httpx.Response = wait_for(ready, timeout=60, what=f"reconstruction of {video_id}")
    return result


@pytest.fixture(scope="module")
def done_video(stack: Any, clip: Path) -> dict[str, Any]:
    """One video of tenant A compressed with the classical methods (shared by several tests)."""
    import time

    with stack.client(KEY_A) as client:
        response = upload(client, clip, selector="uniform", reconstructor="linear")
        assert response.status_code == 202, response.text
        video_id = response.json()["id"]
        deadline = time.monotonic() + 60
        while (job := client.get(f"/jobs/{video_id}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, f"job did not finish: {job}\n{stack.worker_logs()}"
            time.sleep(0.1)
    assert job["status"] == "done", f"{job}\n{stack.worker_logs()}"
    return dict(job)


# --------------------------------------------------------------------------------------------
# the main flow


def test_upload_returns_202_with_links(stack: Any, clip: Path) -> None:
    with stack.client(KEY_A) as client:
        response = upload(client, clip)
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "queued"
    assert len(body["id"]) == 32
    assert body["links"]["status"] == f"/jobs/{body['id']}"
    assert response.headers["location"] == f"/jobs/{body['id']}"


def test_compression_job_reaches_done(done_video: dict[str, Any], clip: Path) -> None:
    job = done_video
    assert job["progress"] == 1.0
    assert job["error"] is None
    assert job["attempts"] == 1
    assert job["frames"] == 40
    assert 0 < job["kept_frames"] < 40
    assert job["source"]["width"] == 64 and job["source"]["height"] == 48
    assert job["sizes"]["source_bytes"] == clip.stat().st_size
    assert job["sizes"]["bundle_bytes"] > 0
    assert job["options"]["selector"] == "uniform"


def test_reconstruct_202_then_200_with_right_video(
    stack: Any, done_video: dict[str, Any], wait_for: Callable[..., Any], tmp_path: Path
) -> None:
    from framers.video import probe

    video_id = done_video["id"]
    with stack.client(KEY_A) as client:
        first = client.get(f"/reconstruct/{video_id}")
        assert first.status_code == 202, first.text
        assert first.headers["retry-after"] == "1"
        assert first.json()["links"]["status"] == f"/jobs/{video_id}"
        assert first.json()["reconstructor"] == "linear"
        response = wait_reconstruction(client, video_id, wait_for)
        # the worker stores the video, then records it done: a read right after the 200 may precede that
        job = wait_for(lambda: (j := client.get(f"/jobs/{video_id}").json())["reconstructions"]["linear"]["status"]
                       == "done" and j, timeout=30, what="the record done")
    assert response.headers["content-type"] == "video/mp4"
    assert response.headers["accept-ranges"] == "bytes"
    out = tmp_path / "out.mp4"
    out.write_bytes(response.content)
    info = probe(out)
    assert (info.width, info.height, info.frames) == (64, 48, 40)
    rec = job["reconstructions"]["linear"]
    assert rec["status"] == "done" and rec["frames"] == 40 and rec["output_bytes"] == len(response.content)


def test_range_requests(stack: Any, done_video: dict[str, Any], wait_for: Callable[..., Any]) -> None:
    video_id = done_video["id"]
    with stack.client(KEY_A) as client:
        full = wait_reconstruction(client, video_id, wait_for).content
        size = len(full)
        part = client.get(f"/reconstruct/{video_id}", headers={"Range": "bytes=10-99"})
        assert part.status_code == 206
        assert part.content == full[10:100]
        assert part.headers["content-range"] == f"bytes 10-99/{size}"
        assert part.headers["content-length"] == "90"
        tail = client.get(f"/reconstruct/{video_id}", headers={"Range": "bytes=-20"})
        assert tail.status_code == 206 and tail.content == full[-20:]
        open_end = client.get(f"/reconstruct/{video_id}", headers={"Range": f"bytes={size - 5}-"})
        assert open_end.status_code == 206 and open_end.content == full[-5:]
        beyond = client.get(f"/reconstruct/{video_id}", headers={"Range": f"bytes={size}-"})
        assert beyond.status_code == 416
        assert beyond.headers["content-range"] == f"bytes */{size}"
        bundle_part = client.get(f"/bundles/{video_id}", headers={"Range": "bytes=0-3"})
        assert bundle_part.status_code == 206 and len(bundle_part.content) == 4


def test_bundle_download_is_a_working_bundle(stack: Any, done_video: dict[str, Any], tmp_path: Path) -> None:
    from framers.pipeline import reconstruct

    video_id = done_video["id"]
    with stack.client(KEY_A) as client:
        response = client.get(f"/bundles/{video_id}")
    assert response.status_code == 200
    assert len(response.content) == done_video["sizes"]["bundle_bytes"]
    assert f'filename="{video_id}.frs"' in response.headers["content-disposition"]
    bundle = tmp_path / "b.frs"
    bundle.write_bytes(response.content)
    result = reconstruct(bundle, tmp_path / "local.mp4", reconstructor="hold")
    assert result.frames == 40


def test_concurrent_reconstruct_requests_start_one_job(
    stack: Any, done_video: dict[str, Any], wait_for: Callable[..., Any]
) -> None:
    video_id = done_video["id"]

    def request(_: int) -> int:
        with stack.client(KEY_A) as client:
            return int(client.get(f"/reconstruct/{video_id}", params={"reconstructor": "hold"}).status_code)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(request, range(16)))
    assert set(codes) <= {200, 202}
    with stack.client(KEY_A) as client:
        wait_reconstruction(client, video_id, wait_for, reconstructor="hold")

        def recorded() -> dict[str, Any] | None:
            # the worker stores the mp4 a moment before it records the reconstruction as done
            state: dict[str, Any] = client.get(f"/jobs/{video_id}").json()["reconstructions"]["hold"]
            return state if state["status"] == "done" else None

        state = wait_for(recorded, timeout=10, what="the reconstruction record")
    assert state["attempts"] == 1  # one run, not sixteen


def test_delete_removes_every_object(stack: Any, clip: Path, wait_for: Callable[..., Any]) -> None:
    from core.storage import LocalStorage

    with stack.client(KEY_A) as client:
        video_id = upload(client, clip).json()["id"]
        job = wait_job(client, video_id, wait_for)
        assert job["status"] == "done"
        # the record's link to the video answers GET with the same view as /jobs
        video = client.get(job["links"]["video"])
        assert video.status_code == 200 and video.json()["id"] == video_id
        assert video.json()["status"] == client.get(f"/jobs/{video_id}").json()["status"]
        wait_reconstruction(client, video_id, wait_for)
        storage = LocalStorage(stack.settings.local_storage_dir)
        assert list(storage.list(f"videos/{video_id}/"))
        response = client.delete(f"/videos/{video_id}")
        assert response.status_code == 204
        assert list(storage.list(f"videos/{video_id}/")) == []
        assert list(storage.list(f"pending/{video_id}/")) == []
        assert client.get(f"/jobs/{video_id}").status_code == 404
        assert client.get(f"/videos/{video_id}").status_code == 404
        assert client.get(f"/bundles/{video_id}").status_code == 404
        assert client.get(f"/reconstruct/{video_id}").status_code == 404
        assert client.delete(f"/videos/{video_id}").status_code == 404


def test_source_is_removed_after_success(stack: Any, done_video: dict[str, Any]) -> None:
    from core.storage import LocalStorage

    keys = list(LocalStorage(stack.settings.local_storage_dir).list(f"videos/{done_video['id']}/"))
    assert not any("/source" in key for key in keys), keys
    assert f"videos/{done_video['id']}/bundle.frs" in keys


# --------------------------------------------------------------------------------------------
# auth and tenants


def test_auth_required_when_keys_configured(stack: Any, clip: Path, done_video: dict[str, Any]) -> None:
    with stack.client() as anonymous:
        response = upload(anonymous, clip)
        assert response.status_code == 401
        assert "API key" in response.json()["detail"]
        assert response.headers["www-authenticate"] == "Bearer"
        assert anonymous.get(f"/jobs/{done_video['id']}").status_code == 401
    with stack.client("not-a-key") as wrong:
        assert wrong.get(f"/jobs/{done_video['id']}").status_code == 401
    with httpx.Client(base_url=stack.url, headers={"Authorization": f"Bearer {KEY_A}"}) as bearer:
        assert bearer.get(f"/jobs/{done_video['id']}").status_code == 200


def test_tenant_sees_only_its_own_videos(stack: Any, done_video: dict[str, Any]) -> None:
    video_id = done_video["id"]
    with stack.client(KEY_B) as other:
        for method, path in [
            ("GET", f"/jobs/{video_id}"),
            ("GET", f"/videos/{video_id}"),
            ("GET", f"/bundles/{video_id}"),
            ("GET", f"/reconstruct/{video_id}"),
            ("DELETE", f"/videos/{video_id}"),
        ]:
            response = other.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
    with stack.client(KEY_A) as owner:
        assert owner.get(f"/jobs/{video_id}").status_code == 200  # the DELETE above did nothing


def test_no_keys_means_anonymous_loopback_tenant(
    stack: Any, open_url: str, clip: Path, wait_for: Callable[..., Any], done_video: dict[str, Any]
) -> None:
    with stack.client(url=open_url) as client:
        response = upload(client, clip)
        assert response.status_code == 202, response.text
        video_id = response.json()["id"]
        assert wait_job(client, video_id, wait_for)["status"] == "done"
        # The anonymous tenant is a tenant like any other: it cannot see tenant A's videos.
        assert client.get(f"/jobs/{done_video['id']}").status_code == 404
    with stack.client(KEY_A) as tenant_a:
        assert tenant_a.get(f"/jobs/{video_id}").status_code == 404


# --------------------------------------------------------------------------------------------
# bad input


def test_text_file_named_mp4_is_rejected(stack: Any, tmp_path: Path) -> None:
    fake = tmp_path / "movie.mp4"
    fake.write_text("this is not a video\n" * 50)
    with stack.client(KEY_A) as client:
        response = upload(client, fake)
    assert response.status_code == 415
    detail = response.json()["detail"]
    assert "movie.mp4" in detail and "not a video" in detail
    assert ".part" not in detail and str(stack.settings.data_dir) not in detail


def test_empty_upload_is_rejected(stack: Any, tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with stack.client(KEY_A) as client:
        response = upload(client, empty)
    assert response.status_code == 422
    assert "empty" in response.json()["detail"]


def test_oversized_upload_is_rejected(stack: Any, tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (stack.settings.max_upload_bytes + 1))
    with stack.client(KEY_A) as client:
        response = upload(client, big)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_oversized_streamed_upload_is_cut_off(stack: Any) -> None:
    """Without Content-Length (chunked), the limit is enforced while the body streams in."""
    boundary = "framers-boundary"
    limit = stack.settings.max_upload_bytes

    def body() -> Any:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="x.mp4"\r\n'
            "Content-Type: video/mp4\r\n\r\n"
        ).encode()
        chunk = b"\0" * (256 * 1024)
        for _ in range(limit // len(chunk) + 2):
            yield chunk
        yield f"\r\n--{boundary}--\r\n".encode()

    with stack.client(KEY_A) as client:
        try:
            response = client.post(
                "/compress", content=body(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
            )
        except httpx.TransportError:
            return  # the server may close the connection while we are still sending: also a refusal
    assert response.status_code == 413


def test_wrong_form_field_is_rejected(stack: Any, clip: Path) -> None:
    with stack.client(KEY_A) as client:
        response = upload(client, clip, field="video")
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert "'file'" in detail and "video" in detail


def test_not_multipart_is_rejected(stack: Any) -> None:
    with stack.client(KEY_A) as client:
        response = client.post("/compress", json={"file": "x"})
    assert response.status_code == 415
    assert "multipart/form-data" in response.json()["detail"]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"selector": "nonexistent"}, "unknown selector"),
        ({"reconstructor": "nonexistent"}, "unknown reconstructor"),
        ({"keep": "abc"}, "keep"),
        ({"keep": "9"}, "keep"),
        ({"colour": "red"}, "unknown form field"),
        ({"keyframe_codec": "vp9"}, "unknown keyframe_codec"),
        ({"crf": "99"}, "crf"),
        ({"target_psnr": "5"}, "target_psnr"),
        ({"target_psnr": "nan"}, "finite number"),
        ({"target_kbps": "inf"}, "finite number"),
        ({"target_psnr": "35", "crf": "20"}, "drop crf"),
        ({"target_psnr": "35", "target_kbps": "100"}, "not both"),
        ({"target_psnr": "35", "refresh": "0.1"}, "drop refresh"),
        ({"refresh": "1"}, "refresh"),
        ({"refresh": "-0.1"}, "refresh"),
        ({"refresh_kbps": "0"}, "refresh_kbps"),
        ({"refresh_kbps": "0.5"}, "refresh_kbps"),
        ({"refresh_kbps": "50", "refresh": "0"}, "drop one of them"),
        ({"refresh_kbps": "nan"}, "finite number"),
        ({"target_psnr": "35", "refresh_kbps": "50"}, "drop refresh_kbps"),
        ({"candidate_map": "maybe"}, "candidate_map"),
        # accepted and ignored before a fresh-user trial (defaults.option_conflicts): each names its field
        ({"crf": "60"}, "crf: x264's CRF is 0 to 51"),
        ({"keyframe_codec": "ffv1", "crf": "20"}, "crf: ffv1 keeps the kept frames losslessly"),
        ({"candidate_map": "true", "reconstructor": "linear"}, "candidate_map: the candidate map is made for framemae"),
        ({"selector": "oracle", "reconstructor": "mci"}, "reconstructor: the oracle selector chooses slots"),
        ({"selector": "stride", "keep": "3"}, "keep: keep counts two-frame slots"),
        ({"selector": "uniform", "stride": "8"}, "stride: stride applies to selector stride"),
        ({"keep": "2", "stride": "8"}, "give one of them"),
    ],
)
def test_bad_options_are_rejected(stack: Any, clip: Path, options: dict[str, str], needle: str) -> None:
    with stack.client(KEY_A) as client:
        response = upload(client, clip, **options)
    assert response.status_code == 422
    assert needle in response.json()["detail"]
    assert response.json().get("errors"), response.text  # every refusal names its field(s) in errors[] too
    if ": " in needle:  # a conflict: that field
        assert needle.split(":")[0] in [e["field"] for e in response.json()["errors"]]


def test_limits_are_enforced(stack: Any, clip: Path) -> None:
    frames_url = stack.start_gateway(max_frames=10)
    size_url = stack.start_gateway(max_width=32, max_height=32)
    with stack.client(KEY_A, url=frames_url) as client:
        response = upload(client, clip)
        assert response.status_code == 422
        assert "40 frames exceed the limit of 10" in response.json()["detail"]
    with stack.client(KEY_A, url=size_url) as client:
        response = upload(client, clip)
        assert response.status_code == 422
        assert "resolution 64x48" in response.json()["detail"]


@pytest.mark.parametrize(
    "path",
    [
        "/jobs/..%2F..%2Fetc%2Fpasswd",
        "/jobs/../../etc/passwd",
        "/jobs/0123",
        "/bundles/..",
        "/reconstruct/%2e%2e%2f%2e%2e",
        "/jobs/0123456789ABCDEF0123456789ABCDEF",
    ],
)
def test_path_traversal_ids_are_rejected(stack: Any, path: str) -> None:
    with stack.client(KEY_A) as client:
        response = client.get(path)
    # "/bundles/.." reaches the gateway as "/" (the client normalises the path), which leads to the page
    assert response.status_code in (404, 422) or (response.status_code == 307 and
                                                   response.headers["location"] == "/ui"), response.text


def test_bad_reconstructor_names_are_rejected(stack: Any, done_video: dict[str, Any]) -> None:
    with stack.client(KEY_A) as client:
        for name in ("../../x", "Linear", "nonexistent"):
            response = client.get(f"/reconstruct/{done_video['id']}", params={"reconstructor": name})
            assert response.status_code == 422, (name, response.text)
            assert [e["location"] for e in response.json()["errors"]] == ["query.reconstructor"], response.text


def test_unfinished_video_bundle_409_reconstruct_202(service_stacks: Callable[..., Any], clip: Path) -> None:
    idle = service_stacks(workers=0)  # nobody works: the video stays queued
    with idle.client() as client:
        video_id = upload(client, clip).json()["id"]
        assert client.get(f"/jobs/{video_id}").json()["status"] == "queued"
        bundle = client.get(f"/bundles/{video_id}")
        assert bundle.status_code == 409 and "not ready" in bundle.json()["detail"]
        assert bundle.headers["retry-after"] == "1"
        pending = client.get(f"/reconstruct/{video_id}")
        assert pending.status_code == 202
        assert pending.json()["status"] == "queued"
        assert "still being compressed" in pending.json()["detail"]


# --------------------------------------------------------------------------------------------
# system endpoints


def test_health_ready_models_docs(stack: Any) -> None:
    with stack.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        checks = ready.json()["checks"]
        assert checks["redis"] == "ok" and checks["storage"] == "ok" and checks["models"].startswith("ok")
        models = client.get("/models").json()
        assert "uniform" in models["selectors"] and "linear" in models["reconstructors"]
        assert models["defaults"]["selector"] == stack.settings.default_selector
        assert models["defaults"]["selector_when_keep_is_given"] == "framers"
        assert models["models"] == {"framemae": "1.0.0", "framemae_compose": "1.0.0", "selector": "1.1.0",
                                    "ratemodel": "1.4.0"}  # shipped store
        assert client.get("/docs").status_code == 200
        spec = client.get("/openapi.json").json()
        assert "multipart/form-data" in spec["paths"]["/compress"]["post"]["requestBody"]["content"]


def test_metrics(stack: Any, done_video: dict[str, Any]) -> None:
    with stack.client() as client:
        text = client.get("/metrics").text
    assert 'framers_http_requests_total{method="POST",route="/compress",status="202"}' in text
    assert 'framers_queue_jobs{queue="compress",state="queued"}' in text
    assert 'framers_job_duration_seconds_bucket{le="+Inf",outcome="done",queue="compress"}' in text
    assert 'framers_frames_processed_total{queue="compress"}' in text
    assert "framers_redis_up 1.0" in text


def test_readyz_reports_redis_down(stack: Any) -> None:
    url = stack.start_gateway(redis_url="redis://127.0.0.1:1/0")
    with stack.client(url=url) as client:
        response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["checks"]["redis"].startswith("unreachable")


def test_python_client(stack: Any, clip: Path, tmp_path: Path) -> None:
    from framers.client import FramersClient, FramersClientError

    with FramersClient(stack.url, api_key=KEY_B) as client:
        assert "linear" in client.models()["reconstructors"]
        video_id = client.compress(clip, selector="stride", stride=4)["id"]
        job = client.wait(video_id, timeout=60, poll_s=0.1)
        assert job["options"]["selector"] == "stride"
        assert client.reconstruct(video_id, tmp_path / "a.mp4", wait=False) is None  # just started
        out = client.reconstruct(video_id, tmp_path / "a.mp4", timeout=60, poll_s=0.2)
        assert out is not None and out.stat().st_size > 0
        assert client.download_bundle(video_id, tmp_path / "a.frs").stat().st_size == job["sizes"]["bundle_bytes"]
        client.delete(video_id)
        with pytest.raises(FramersClientError) as err:
            client.status(video_id)
        assert err.value.status_code == 404
    assert not list(tmp_path.glob(".*.part"))  # downloads are renamed into place, no leftovers


def test_shipped_defaults_adaptive_and_framemae_end_to_end(
    service_stacks: Callable[..., Any], make_clip: Callable[..., Path], wait_for: Callable[..., Any], tmp_path: Path
) -> None:
    """With no options, a video is compressed with the shipped defaults (the content-adaptive mode
    at 35 dB; every 4th frame when a fixed option is given) and rebuilt by the learned FrameMAE
    from model_store/, through the whole service."""
    from core.settings import Settings
    from framers.video import probe

    defaults = Settings.model_fields
    shipped = {"default_selector": defaults["default_selector"].default,
               "default_reconstructor": defaults["default_reconstructor"].default,
               "default_target_psnr": defaults["default_target_psnr"].default}
    assert shipped == {"default_selector": "stride", "default_reconstructor": "framemae", "default_target_psnr": 35.0}
    stack = service_stacks(workers=1, api_keys="", **shipped)
    video = make_clip(width=96, height=64, frames=40)
    with stack.client() as client:
        response = upload(client, video)
        fixed = upload(client, video, stride="4")
        assert response.status_code == 202 and fixed.status_code == 202, (response.text, fixed.text)
        video_id = response.json()["id"]
        job = wait_job(client, video_id, wait_for)
        assert job["status"] == "done", f"{job}\n{stack.worker_logs()}"
        assert job["options"]["target_psnr"] == 35.0 and job["adaptive"]["target_psnr"] == 35.0
        assert job["mode"] == "adaptive"  # its options' selector/stride are unused defaults
        fixed_job = wait_job(client, fixed.json()["id"], wait_for)
        assert fixed_job["options"]["target_psnr"] is None and fixed_job["adaptive"] is None
        assert fixed_job["mode"] == "fixed"
        assert fixed_job["options"]["selector"] == "stride" and fixed_job["kept_frames"] == 11  # every 4th + last
        rebuilt = wait_reconstruction(client, video_id, wait_for)
        # the video is stored before the worker writes "done" into the record: the record follows
        job = wait_for(lambda: (j := client.get(f"/jobs/{video_id}").json())["reconstructions"]["framemae"][
            "status"] == "done" and j, timeout=30, what="record says done")
        models = client.get("/models").json()
    assert models["defaults"]["target_psnr"] == 35.0
    out = tmp_path / "out.mp4"
    out.write_bytes(rebuilt.content)
    info = probe(out)
    assert (info.width, info.height, info.frames) == (96, 64, 40)
    assert job["reconstructions"]["framemae"]["status"] == "done"


def test_keep_without_selector_uses_the_learned_selector(
    stack: Any, make_clip: Callable[..., Path], wait_for: Callable[..., Any]
) -> None:
    """Asking for slots (``keep``) without naming a selector chooses them with the shipped
    learned selector; naming one still wins."""
    video = make_clip(width=96, height=64, frames=40)
    with stack.client(KEY_A) as client:
        learned = upload(client, video, keep="2")
        named = upload(client, video, keep="2", selector="uniform")
        assert learned.status_code == 202 and named.status_code == 202, (learned.text, named.text)
        job = wait_job(client, learned.json()["id"], wait_for)
        assert job["status"] == "done", f"{job}\n{stack.worker_logs()}"
        # 2 clips x 4 + uniform tail 2, + the first and last frames when the pairs miss them
        assert job["options"]["selector"] == "framers" and 10 <= job["kept_frames"] <= 12
        job = wait_job(client, named.json()["id"], wait_for)
        assert job["status"] == "done" and job["options"]["selector"] == "uniform"


def test_refresh_and_candidate_map_fields_add_their_layers_and_the_job_shows_them(
    stack: Any, make_clip: Callable[..., Path], wait_for: Callable[..., Any]
) -> None:
    """Form field refresh (issue 15): alone it runs the fixed default pattern with a refresh layer
    made for the video's reconstructor; the job record shows the layer, and the default
    reconstruction uses it (no warning). Form field candidate_map: the job shows the map too."""
    video = make_clip(width=96, height=64, frames=40)
    with stack.client(KEY_A) as client:
        response = upload(client, video, refresh="0.2")
        off = upload(client, video, refresh="0")
        budget = upload(client, video, refresh_kbps="40")
        mapped = upload(client, video, stride="4", candidate_map="true", reconstructor="framemae")
        assert all(r.status_code == 202 for r in (response, off, budget, mapped)), (response.text, mapped.text)
        video_id = response.json()["id"]
        job = wait_job(client, video_id, wait_for)
        assert job["status"] == "done", f"{job}\n{stack.worker_logs()}"
        assert job["options"]["refresh"] == 0.2 and job["adaptive"] is None
        layer = job["refresh"]
        assert layer["pictures"] == 40 - job["kept_frames"] > 0 and layer["bytes"] > 0
        assert layer["reconstructor"] == job["options"]["reconstructor"]
        off_job = wait_job(client, off.json()["id"], wait_for)
        assert off_job["status"] == "done" and off_job["refresh"] is None
        budget_job = wait_job(client, budget.json()["id"], wait_for)  # the byte-budget form, alone: share 0.1
        assert budget_job["status"] == "done" and budget_job["options"]["refresh_kbps"] == 40
        assert budget_job["options"]["refresh"] == 0.1  # the share a budget alone refreshes
        assert budget_job["adaptive"] is None and budget_job["refresh"]["kbps"] == 40
        assert budget_job["refresh"]["share"] == 0.1 and "crf" not in budget_job["refresh"]
        mapped_job = wait_job(client, mapped.json()["id"], wait_for)  # the job shows the map as it shows the layer
        assert mapped_job["status"] == "done" and mapped_job["candidate_map"]["reconstructor"] == "framemae"
        assert mapped_job["candidate_map"]["maps"] == 40 - mapped_job["kept_frames"] and job["candidate_map"] is None
        assert mapped_job["duration"] == pytest.approx(mapped_job["source"]["duration"], abs=0.01)
        rebuilt = wait_reconstruction(client, video_id, wait_for)
        assert rebuilt.status_code == 200
        job = wait_for(lambda: (j := client.get(f"/jobs/{video_id}").json())["reconstructions"][
            layer["reconstructor"]]["status"] == "done" and j, timeout=30, what="record says done")
        assert job["reconstructions"][layer["reconstructor"]]["warnings"] == []


def test_target_psnr_runs_the_adaptive_mode_and_records_its_decisions(
    stack: Any, make_clip: Callable[..., Path], wait_for: Callable[..., Any]
) -> None:
    """Form field target_psnr: the worker chooses per segment a stride and CRF; the job record
    shows the target, the predicted PSNR and every segment's decision."""
    video = make_clip(width=96, height=64, frames=40)
    with stack.client(KEY_A) as client:
        response = upload(client, video, target_psnr="34")
        assert response.status_code == 202, response.text
        job = wait_job(client, response.json()["id"], wait_for)
    assert job["status"] == "done", f"{job}\n{stack.worker_logs()}"
    assert job["options"]["target_psnr"] == 34.0
    adaptive = job["adaptive"]
    assert adaptive["target_psnr"] == 34.0 and adaptive["predicted_psnr"] > 0
    assert adaptive["segments"][0]["start"] == 0 and adaptive["segments"][-1]["stop"] == 40
    assert all(s["stride"] in (1, 2, 4, 8, 16) and 0 <= s["crf"] <= 51 for s in adaptive["segments"])
    assert job["cuts"] == []
