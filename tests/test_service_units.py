"""The service's pure parts: settings, auth, ranges, limits, uploads, storage backends, records."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from starlette.datastructures import Headers

from core.records import (
    CompressOptions,
    RecordNotFound,
    RecordStore,
    SourceInfo,
    Status,
    VideoKeys,
    VideoRecord,
    new_video_id,
)
from core.settings import Settings, SettingsError, parse_api_keys
from core.storage import InvalidKey, LocalStorage, ObjectNotFound, Storage, check_key
from core.storage_s3 import S3Storage
from service.auth import AuthError, RemoteAnonymousDenied, resolve_tenant
from service.limits import LimitExceeded, check_video_limits
from service.ranges import RangeNotSatisfiable, parse_range
from service.uploads import (
    MalformedUpload,
    MissingFile,
    NotMultipart,
    RepeatedField,
    TooManyParts,
    UploadTooLarge,
    receive_upload,
)
from workers.progress import ProgressReporter

# --------------------------------------------------------------------------------------------
# settings


def test_api_keys_parse() -> None:
    assert parse_api_keys("k1:a, k2:b,") == {"k1": "a", "k2": "b"}
    assert parse_api_keys("") == {}
    assert parse_api_keys("with:colon:tenant") == {"with:colon": "tenant"}
    for bad in ("nokey", "k1:", "k1:a,k1:b", "k:bad tenant"):
        with pytest.raises(SettingsError):
            parse_api_keys(bad)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FRAMERS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FRAMERS_RETRY_BACKOFF_S", "1, 5,30")
    monkeypatch.setenv("FRAMERS_WORKER_QUEUES", "compress")
    monkeypatch.setenv("FRAMERS_API_KEYS", "s3cr3tk3y:acme")
    monkeypatch.setenv("FRAMERS_S3_PREFIX", "prod")
    settings = Settings()
    assert settings.retry_backoff_s == [1, 5, 30]
    assert settings.worker_queues == ["compress"]
    assert settings.tenants_by_key == {"s3cr3tk3y": "acme"}
    assert settings.s3_prefix == "prod/"
    assert "s3cr3tk3y" not in repr(settings)
    assert settings.scratch_dir == tmp_path / "work"
    # A worker started with worker_env() sees the very same settings.
    for key in [k for k in list(__import__("os").environ) if k.startswith("FRAMERS_")]:
        monkeypatch.delenv(key)
    for key, value in settings.worker_env().items():
        if key.startswith("FRAMERS_"):
            monkeypatch.setenv(key, value)
    assert Settings() == settings.replace(api_keys="")  # workers never get the keys


def test_settings_reject_bad_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMERS_API_KEYS", "justakey")
    with pytest.raises(ValueError, match="key:tenant"):
        Settings()


# --------------------------------------------------------------------------------------------
# auth


def test_resolve_tenant() -> None:
    keys = {"k-a": "a", "k-b": "b"}
    assert resolve_tenant(keys, Headers({"x-api-key": "k-a"}), "10.0.0.1") == "a"
    assert resolve_tenant(keys, Headers({"authorization": "Bearer k-b"}), "10.0.0.1") == "b"
    with pytest.raises(AuthError, match="missing"):
        resolve_tenant(keys, Headers({}), "127.0.0.1")
    with pytest.raises(AuthError, match="invalid"):
        resolve_tenant(keys, Headers({"x-api-key": "k-c"}), "127.0.0.1")
    with pytest.raises(AuthError):
        resolve_tenant(keys, Headers({"authorization": "Basic k-a"}), "127.0.0.1")


def test_no_keys_allows_loopback_only() -> None:
    assert resolve_tenant({}, Headers({}), "127.0.0.1") == "default"
    assert resolve_tenant({}, Headers({}), "::1") == "default"
    with pytest.raises(RemoteAnonymousDenied, match=r"loopback|this machine"):
        resolve_tenant({}, Headers({}), "192.168.1.20")


# --------------------------------------------------------------------------------------------
# ranges and limits


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-9", (0, 9)),
        ("bytes=5-", (5, 99)),
        ("bytes=-10", (90, 99)),
        ("bytes=-500", (0, 99)),
        ("bytes=90-200", (90, 99)),
        ("bytes=0-1,5-6", None),  # multi-range: served whole
        ("items=0-1", None),
        ("bytes=9-3", None),
        ("bytes=0-" + "9" * 4301, (0, 99)),  # past Python's int-from-string limit: clipped, no ValueError
        ("bytes=-" + "9" * 5000, (0, 99)),
        ("bytes=" + "0" * 5000 + "5-" + "0" * 5000 + "9", (5, 9)),  # leading zeros do not count
    ],
)
def test_parse_range(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 100) == expected


@pytest.mark.parametrize("header", ["bytes=100-", "bytes=150-160", "bytes=-0", "bytes=" + "9" * 4301 + "-"])
def test_unsatisfiable_range(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 100)


class _Info:
    def __init__(self, width: int, height: int, frames: int, duration: float) -> None:
        self.width, self.height, self.frames, self.duration = width, height, frames, duration


def test_limits() -> None:
    settings = Settings(max_width=1920, max_height=1080, max_frames=100, max_duration_s=10)
    check_video_limits(_Info(1080, 1920, 100, 10.0), settings)  # portrait is fine
    for info, needle in [
        (_Info(2000, 1000, 10, 1.0), "resolution"),
        (_Info(1920, 1200, 10, 1.0), "resolution"),
        (_Info(64, 48, 101, 1.0), "frames"),
        (_Info(64, 48, 10, 10.5), "duration"),
    ]:
        with pytest.raises(LimitExceeded, match=needle):
            check_video_limits(info, settings)


# --------------------------------------------------------------------------------------------
# streaming multipart


async def _body(*chunks: bytes) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


def _multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZ") -> tuple[Headers, bytes]:
    out = io.BytesIO()
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out.write(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode())
        out.write(data + b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return Headers({"content-type": f"multipart/form-data; boundary={boundary}"}), out.getvalue()


def _receive(headers: Headers, body: bytes, dest: Path, max_bytes: int = 1000, chunk: int = 7) -> Any:
    chunks = [body[i : i + chunk] for i in range(0, len(body), chunk)]
    return asyncio.run(receive_upload(headers, _body(*chunks), dest, max_bytes=max_bytes))


def test_upload_streams_file_and_collects_fields(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 3
    headers, body = _multipart([("selector", None, b"uniform"), ("file", "../../etc/v.mp4", payload)])
    upload = _receive(headers, body, tmp_path / "up", max_bytes=10_000)
    assert upload.path.read_bytes() == payload
    assert upload.size == len(payload)
    assert upload.filename == "v.mp4"  # no directories from the client
    assert upload.fields == {"selector": "uniform"}


def test_upload_errors(tmp_path: Path) -> None:
    dest = tmp_path / "up"
    headers, body = _multipart([("file", "v.mp4", b"x" * 2000)])
    with pytest.raises(UploadTooLarge):
        _receive(headers, body, dest, max_bytes=1000)
    assert not dest.exists()  # nothing half-written left behind
    headers, body = _multipart([("video", "v.mp4", b"x")])
    with pytest.raises(MissingFile, match=r"'file'.*video"):
        _receive(headers, body, dest)
    headers, body = _multipart([("file", "a.mp4", b"x"), ("file", "b.mp4", b"y")])
    with pytest.raises(MalformedUpload, match="one video"):
        _receive(headers, body, dest)
    with pytest.raises(NotMultipart):
        _receive(Headers({"content-type": "application/json"}), b"{}", dest)
    headers, body = _multipart([("file", "v.mp4", b"x"), ("crf", None, b"1" * 5000)])
    with pytest.raises(MalformedUpload, match="longer"):
        _receive(headers, body, dest, max_bytes=10_000)
    headers, body = _multipart([("file", "v.mp4", b"x")], boundary="B" * 257)
    with pytest.raises(MalformedUpload, match="oundary"):  # raised by the parser's constructor
        _receive(headers, body, dest)
    headers, body = _multipart([("crf", None, b"10"), ("file", "v.mp4", b"x"), ("crf", None, b"40")])
    with pytest.raises(RepeatedField, match="'crf'") as repeated:
        _receive(headers, body, dest)
    assert repeated.value.field == "crf" and repeated.value.status == 422
    headers, body = _multipart([("file", "v.mp4", b"x")] + [("extra", "e.bin", b"1")] * 40)  # one name, 41 parts
    with pytest.raises(TooManyParts):
        _receive(headers, body, dest)
    assert not dest.exists()


# --------------------------------------------------------------------------------------------
# storage backends (local, and S3 on moto's server)


@pytest.fixture(params=["local", "s3"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "objects")
    s3 = request.getfixturevalue("s3_bucket")
    return S3Storage(
        s3["s3_bucket"],
        prefix="pfx/",
        endpoint_url=s3["s3_endpoint_url"],
        region="us-east-1",
        access_key_id="test",
        secret_access_key="test",
    )


def test_storage_roundtrip(storage: Storage, tmp_path: Path) -> None:
    src = tmp_path / "src.bin"
    data = bytes(range(256)) * 4000  # ~1 MB, several chunks
    src.write_bytes(data)
    assert storage.put_file(src, "videos/a/file.bin") == len(data)
    assert src.exists()
    assert storage.put_file(src, "videos/a/moved.bin", move=True) == len(data)
    assert not src.exists()
    assert storage.put_stream(io.BytesIO(b"hello"), "videos/a/sub/x.txt") == 5
    storage.put_bytes(b"{}", "videos/b/record.json")
    assert storage.exists("videos/a/file.bin") and not storage.exists("videos/a/nope")
    assert storage.size("videos/a/moved.bin") == len(data)
    assert storage.get_bytes("videos/a/sub/x.txt") == b"hello"
    assert b"".join(storage.iter_range("videos/a/file.bin", 1000, 2999)) == data[1000:3000]
    assert b"".join(storage.iter_range("videos/a/file.bin", len(data) - 3)) == data[-3:]
    out = tmp_path / "out.bin"
    assert storage.get_file("videos/a/file.bin", out) == len(data) and out.read_bytes() == data
    assert sorted(storage.list("videos/a/")) == ["videos/a/file.bin", "videos/a/moved.bin", "videos/a/sub/x.txt"]
    assert storage.delete("videos/a/moved.bin") and not storage.delete("videos/a/moved.bin")
    assert storage.delete_prefix("videos/a/") == 2
    assert list(storage.list("videos/a/")) == []
    assert list(storage.list("videos/")) == ["videos/b/record.json"]
    storage.ping()


def test_storage_missing_objects(storage: Storage, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFound):
        storage.size("videos/none")
    with pytest.raises(ObjectNotFound):
        storage.get_file("videos/none", tmp_path / "x")
    with pytest.raises(ObjectNotFound):
        b"".join(storage.iter_range("videos/none"))
    assert storage.delete_prefix("videos/none/") == 0
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs", "a/../b", "a//b", ".tmp/x", "a/./b", "", "a\\b", "a/b/", "ä"])
def test_unsafe_keys_are_rejected(key: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidKey):
        check_key(key)
    with pytest.raises(InvalidKey):
        LocalStorage(tmp_path).exists(key)


def test_local_writes_are_atomic(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "objects")

    class Exploding(io.RawIOBase):
        def __init__(self) -> None:
            self.calls = 0

        def read(self, size: int = -1) -> bytes:
            self.calls += 1
            if self.calls > 2:
                raise OSError("connection reset")
            return b"x" * 1024

    with pytest.raises(OSError):
        storage.put_stream(Exploding(), "videos/a/partial.bin")  # type: ignore[arg-type]
    assert not storage.exists("videos/a/partial.bin")
    assert list((tmp_path / "objects" / ".tmp").iterdir()) == []


# --------------------------------------------------------------------------------------------
# records


def test_record_store(tmp_path: Path) -> None:
    records = RecordStore(LocalStorage(tmp_path))
    video_id = new_video_id()
    keys = VideoKeys(video_id)
    record = VideoRecord(
        id=video_id,
        tenant="t",
        options=CompressOptions(selector="uniform", keep=2, stride=4, reconstructor="linear"),
        source=SourceInfo(filename="a.mp4", bytes=1, width=2, height=2, frames=1, fps=1, duration=1, codec="h264"),
        source_key=keys.source(".mp4"),
    )
    records.save(record)
    loaded = records.load(video_id)
    assert loaded.status is Status.queued and loaded.tenant == "t"
    records.mark_pending(video_id, "compress")
    assert [p.job for p in records.iter_pending()] == ["compress"]
    records.delete_video(video_id)
    with pytest.raises(RecordNotFound):
        records.load(video_id)
    assert list(records.iter_pending()) == []
    with pytest.raises(ValueError):
        VideoKeys("../x")
    with pytest.raises(ValueError):
        keys.reconstruction("../../x")


def test_progress_reporter_throttles() -> None:
    written: list[float] = []
    report = ProgressReporter(written.append, min_interval_s=3600)
    for f in (0.0, 0.1, 0.2, 0.5):
        report(f)
    report(1.0)
    report(1.0)
    assert written == [0.0, 1.0]  # the first, then the last; never the same value twice


# --------------------------------------------------------------------------------------------
# the client's errors from bodies that are not problem details


@pytest.mark.parametrize(
    ("status", "body", "content_type", "expected"),
    [
        (
            404,
            b'{"detail": "no video x", "code": "not_found"}',
            "application/problem+json",
            "HTTP 404 not_found: no video x",
        ),
        (
            422,
            b'{"detail": [{"loc": ["path", "video_id"], "msg": "bad"}]}',
            "application/json",
            "HTTP 422: path.video_id: bad",
        ),
        (502, b"<html>Bad Gateway</html>", "text/html", "HTTP 502: <html>Bad Gateway</html>"),
        (
            500,
            b'{"detail": "internal error", "code": "internal_error", "request_id": "r1"}',
            "application/problem+json",
            "HTTP 500 internal_error: internal error (request id r1)",
        ),
    ],
)
def test_client_error_messages(status: int, body: bytes, content_type: str, expected: str) -> None:
    import httpx

    from framers.client import error_from_response

    error = error_from_response(httpx.Response(status, content=body, headers={"Content-Type": content_type}))
    assert str(error) == expected and error.status_code == status
