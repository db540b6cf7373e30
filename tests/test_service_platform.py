"""Platform features over real HTTP (loopback gateway, real Redis, real worker processes):
idempotent uploads, signed webhooks, metadata, listing, offline docs."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

KEY_A, KEY_B = "plat-key-a-0123456789", "plat-key-b-9876543210"


@pytest.fixture(scope="module")
def stack(service_stacks: Callable[..., Any]) -> Any:
    return service_stacks(workers=1, api_keys=f"{KEY_A}:tenant-a,{KEY_B}:tenant-b")


def upload(
    client: httpx.Client, path: Path, headers: dict[str, Any] | None = None, **fields: Any
) -> httpx.Response:
    with open(path, "rb") as f:
        return client.post(
            "/compress", files={"file": (path.name, f, "video/mp4")}, data=fields, headers=headers or {}
        )


def stored_videos(stack: Any) -> list[str]:
    """Ids of the videos that have a record in the stack's (local) storage."""
    root = Path(stack.settings.local_storage_dir) / "videos"
    return sorted(p.parent.name for p in root.glob("*/record.json")) if root.is_dir() else []


def wait_job(client: httpx.Client, video_id: str, wait_for: Callable[..., Any]) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(f"/jobs/{video_id}").json()
        return job if job["status"] in ("done", "failed") else None

    result: dict[str, Any] = wait_for(finished, timeout=60, what=f"job {video_id}")
    return result


# --------------------------------------------------------------------------------------------
# Idempotency-Key


def test_repeat_with_same_key_returns_same_video_and_stores_once(
    stack: Any, clip: Path, wait_for: Callable[..., Any]
) -> None:
    before = set(stored_videos(stack))
    headers = {"Idempotency-Key": "upload-0001"}
    with stack.client(KEY_A) as client:
        first = upload(client, clip, headers, crf="30")
        second = upload(client, clip, headers, crf="30")
        assert first.status_code == 202, first.text
        assert second.status_code == 202, second.text
        video_id = first.json()["id"]
        assert second.json()["id"] == video_id
        assert "idempotent-replayed" not in first.headers
        assert second.headers["idempotent-replayed"] == "true"
        assert second.headers["location"] == f"/jobs/{video_id}"
        job = wait_job(client, video_id, wait_for)
    assert job["status"] == "done", job
    assert job["attempts"] == 1  # one job, run once
    assert set(stored_videos(stack)) - before == {video_id}
    # Keys are per tenant: tenant B's same key is another upload.
    with stack.client(KEY_B) as client:
        other = upload(client, clip, headers, crf="30")
    assert other.status_code == 202, other.text
    assert other.json()["id"] != video_id


def test_same_key_with_other_options_or_file_is_409(stack: Any, clip: Path, make_clip: Callable[..., Path]) -> None:
    headers = {"Idempotency-Key": "upload-0002"}
    with stack.client(KEY_A) as client:
        assert upload(client, clip, headers, crf="30").status_code == 202
        before = stored_videos(stack)
        other_options = upload(client, clip, headers, crf="31")
        other_file = upload(client, make_clip(frames=20), headers, crf="30")
    for response in (other_options, other_file):
        assert response.status_code == 409, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == "idempotency_key_reused"
    assert stored_videos(stack) == before


def test_concurrent_repeats_yield_one_video(stack: Any, clip: Path) -> None:
    before = set(stored_videos(stack))
    headers = {"Idempotency-Key": "concurrent-0003"}

    def send(_: int) -> httpx.Response:
        with stack.client(KEY_A) as client:
            return upload(client, clip, headers, selector="uniform")

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(8)))
    assert [r.status_code for r in responses] == [202] * 8, [r.text for r in responses]
    ids = {r.json()["id"] for r in responses}
    assert len(ids) == 1
    assert sum(r.headers.get("idempotent-replayed") == "true" for r in responses) == 7
    assert set(stored_videos(stack)) - before == ids


def test_refused_upload_releases_its_key(stack: Any, clip: Path, tmp_path: Path) -> None:
    not_a_video = tmp_path / "notes.mp4"
    not_a_video.write_bytes(b"this is not a video " * 100)
    headers = {"Idempotency-Key": "refused-0004"}
    with stack.client(KEY_A) as client:
        refused = upload(client, not_a_video, headers)
        assert refused.status_code == 415, refused.text
        # The key was not consumed by the refused request: the corrected upload goes through.
        accepted = upload(client, clip, headers)
        assert accepted.status_code == 202, accepted.text
        again = upload(client, clip, headers)
    assert again.json()["id"] == accepted.json()["id"]


@pytest.mark.parametrize("key", ["", "has space", "x" * 256, "ünïcode"])
def test_malformed_idempotency_key_is_422(stack: Any, clip: Path, key: str) -> None:
    with stack.client(KEY_A) as client:
        response = upload(client, clip, {"Idempotency-Key": key.encode("utf-8")})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "invalid_idempotency_key"


def test_client_idempotency_key(stack: Any, clip: Path) -> None:
    from framers.client import FramersClient, FramersClientError

    with FramersClient(stack.url, api_key=KEY_A) as client:
        first = client.compress(clip, idempotency_key="client-0005", selector="uniform")
        second = client.compress(clip, idempotency_key="client-0005", selector="uniform")
        assert first["id"] == second["id"]
        with pytest.raises(FramersClientError) as info:
            client.compress(clip, idempotency_key="client-0005", selector="stride")
    assert info.value.status_code == 409 and info.value.code == "idempotency_key_reused"
