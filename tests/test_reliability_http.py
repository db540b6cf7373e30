"""HTTP edge cases (issue 20): no input reaches a 5xx, HEAD on every GET route, bounded forms and
error bodies, one error shape (RFC 9457 problem details), downloads that close their files when
the client goes away — plus property-based runs over Range headers, boundaries and part counts.

Everything talks to the real gateway (uvicorn on loopback) with a real worker behind it."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests._reliability import (
    multipart_head,
    open_raw_upload,
    read_head,
    stored_ids,
    upload,
    wait_job,
    wait_video,
)

PROBLEM = "application/problem+json"
PROBLEM_KEYS = {"type", "title", "status", "detail", "code"}
HUGE = "9" * 4301  # one digit past Python's int-from-string limit (4300 digits)
FUZZ = settings(
    max_examples=40, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
)


@pytest.fixture(scope="module")
def stack(service_stacks: Callable[..., Any]) -> Any:
    return service_stacks(workers=1)  # no keys: the anonymous loopback tenant


@pytest.fixture(scope="module")
def video(stack: Any, clip: Path, wait_for: Callable[..., Any]) -> dict[str, Any]:
    """A compressed video with its `linear` reconstruction made (source kept: GET /sources answers)."""
    with stack.client() as client:
        response = upload(client, clip, keep_source="true")
        assert response.status_code == 202, response.text
        state = wait_job(client, response.json()["id"], wait_for, timeout=90)
        assert state["status"] == "done", state
        wait_video(client, state["id"], wait_for, timeout=90)
    return state


def assert_problem(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The answer is problem details of this status (and code), with a short string detail."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"] == PROBLEM, response.headers
    body: dict[str, Any] = response.json()
    assert set(body) >= PROBLEM_KEYS, body
    assert body["status"] == status and isinstance(body["detail"], str) and body["detail"]
    assert body["type"] == f"urn:framers:problem:{body['code']}"
    assert len(response.content) < 4096, len(response.content)
    if code is not None:
        assert body["code"] == code, body
    return body


def form(parts: list[tuple[str, str, bytes]], boundary: str = "b") -> bytes:
    """A multipart body from (kind, name, value) parts; kind "file" or "field"."""
    chunks = []
    for kind, name, value in parts:
        if kind == "file":
            chunks.append(multipart_head(boundary, field=name) + value + b"\r\n")
        else:
            head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            chunks.append(head.encode() + value + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode()


def post_form(url: str, body: bytes, boundary: str = "b") -> httpx.Response:
    return httpx.post(
        f"{url}/compress", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}
    )


def _read_answer(sock: socket.socket, timeout: float) -> bytes:
    """One HTTP answer (head + Content-Length bytes), also when the server resets the connection
    right after it (it does not read the rest of a refused body)."""
    sock.settimeout(timeout)
    data = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
            head, sep, content = data.partition(b"\r\n\r\n")
            lines = head.lower().split(b"\r\n")
            length = [line.split(b":")[1] for line in lines if line.startswith(b"content-length:")]
            if sep and length and len(content) >= int(length[0]):
                break
    return data


def post_raw(url: str, body: bytes, content_type: str, timeout: float = 30) -> tuple[int, dict[str, str], bytes, float]:
    """POST /compress over a raw socket, chunked (no Content-Length to refuse up front), sending the
    body from a thread while the answer is read (the gateway answers a refused form early and
    closes). Returns status, headers, body, seconds."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=timeout)
    head = (
        f"POST /compress HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    size = 64 * 1024
    body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[i : i + size] for i in range(0, len(body), size)))
    body += b"0\r\n\r\n"
    started = time.monotonic()

    def send() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(head + body)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    data = _read_answer(sock, timeout)
    elapsed = time.monotonic() - started
    sock.close()
    sender.join(5)
    raw_head, _, content = data.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if "content-length" in headers:
        content = content[: int(headers["content-length"])]
    return int(lines[0].split()[1]), headers, content, elapsed


# --------------------------------------------------------------------------------------------
# Range: length-bounded numbers


@pytest.mark.parametrize("path", ["bundles", "reconstruct"])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_huge_range_numbers_are_answered_never_500(stack: Any, video: dict[str, Any], path: str, method: str) -> None:
    url = f"{stack.url}/{path}/{video['id']}"
    whole = httpx.get(url)
    assert whole.status_code == 200
    size = len(whole.content)

    # A first position beyond any object: 416 with the size, as problem details.
    response = httpx.request(method, url, headers={"Range": f"bytes={HUGE}-"})
    assert response.status_code == 416, response.text[:300]
    assert response.headers["content-range"] == f"bytes */{size}"
    if method == "GET":
        assert_problem(response, 416, "range_not_satisfiable")
    # A last position (or suffix length) beyond the end is clipped to the end (RFC 9110 §14.1.2).
    for header in (f"bytes=0-{HUGE}", f"bytes=-{HUGE}"):
        response = httpx.request(method, url, headers={"Range": header})
        assert response.status_code == 206, (header[:20], response.text[:300])
        assert response.headers["content-range"] == f"bytes 0-{size - 1}/{size}"
        assert response.headers["content-length"] == str(size)
        assert response.content == (whole.content if method == "GET" else b"")
    # 5000 leading zeros are still the number 5.
    response = httpx.request(method, url, headers={"Range": f"bytes={'0' * 5000}5-9"})
    assert response.status_code == 206 and response.headers["content-range"] == f"bytes 5-9/{size}"
    assert response.content == (whole.content[5:10] if method == "GET" else b"")


# --------------------------------------------------------------------------------------------
# multipart boundaries


@pytest.mark.parametrize("length", [257, 1000, 4000])
def test_overlong_multipart_boundary_is_400(stack: Any, clip: Path, length: int) -> None:
    boundary = "x" * length
    body = form([("file", "file", clip.read_bytes())], boundary)
    before = stored_ids(stack.settings)
    body_json = assert_problem(post_form(stack.url, body, boundary), 400, "malformed_upload")
    assert "boundary" in body_json["detail"].lower()
    assert stored_ids(stack.settings) == before
    assert list((stack.settings.scratch_dir / "uploads").glob("*.part")) == []


def test_longest_accepted_boundary_still_works(stack: Any, tmp_path: Path) -> None:
    """256 characters is python-multipart's limit (RFC 2046 asks for at most 70): parsed, and the
    text "video" is then refused for what it is (415), not for its framing."""
    boundary = "y" * 256
    body = form([("file", "file", b"not a video at all")], boundary)
    assert_problem(post_form(stack.url, body, boundary), 415, "not_a_video")


# --------------------------------------------------------------------------------------------
# HEAD on every GET route


def _get_paths(stack: Any, video_id: str) -> list[str]:
    spec = httpx.get(f"{stack.url}/openapi.json").json()
    paths = [p.replace("{video_id}", video_id) for p, item in spec["paths"].items() if "get" in item]
    return [*paths, "/openapi.json", "/docs", "/redoc"]


VOLATILE = {"date", "content-length", "server"}


def test_head_on_every_get_route(stack: Any, video: dict[str, Any]) -> None:
    """Walks the OpenAPI spec, so a GET route added later is checked too."""
    paths = _get_paths(stack, video["id"])
    assert {"/healthz", f"/jobs/{video['id']}", f"/bundles/{video['id']}", f"/reconstruct/{video['id']}"} <= set(paths)
    for path in paths:
        get = httpx.get(stack.url + path)
        head = httpx.head(stack.url + path)
        assert head.status_code == get.status_code == 200, (path, head.status_code, get.status_code)
        assert head.content == b"", path
        same = {k: v for k, v in get.headers.items() if k not in VOLATILE}
        assert {k: v for k, v in head.headers.items() if k not in VOLATILE} == same, path
        if path != "/metrics":  # the metrics text grows between the two requests
            assert head.headers["content-length"] == str(len(get.content)), path


@pytest.mark.parametrize("path", ["bundles", "reconstruct"])
def test_head_with_ranges(stack: Any, video: dict[str, Any], path: str) -> None:
    url = f"{stack.url}/{path}/{video['id']}"
    size = int(httpx.head(url).headers["content-length"])
    assert size > 10
    for header, status, content_range, length in [
        ("bytes=2-5", 206, f"bytes 2-5/{size}", 4),
        ("bytes=-3", 206, f"bytes {size - 3}-{size - 1}/{size}", 3),
        (f"bytes={size}-", 416, f"bytes */{size}", None),
    ]:
        get = httpx.get(url, headers={"Range": header})
        head = httpx.head(url, headers={"Range": header})
        assert head.status_code == get.status_code == status, header
        assert head.headers["content-range"] == get.headers["content-range"] == content_range
        assert head.headers["content-length"] == get.headers["content-length"]
        assert head.content == b""
        if length is not None:
            assert head.headers["content-length"] == str(length) and len(get.content) == length


def test_head_answers_errors_like_get(stack: Any) -> None:
    missing = f"/jobs/{'0' * 32}"
    get, head = httpx.get(stack.url + missing), httpx.head(stack.url + missing)
    assert get.status_code == head.status_code == 404 and head.content == b""
    assert head.headers["content-type"] == PROBLEM
    assert head.headers["content-length"] == str(len(get.content))
    refused = httpx.head(f"{stack.url}/compress")  # a POST-only route
    assert refused.status_code == 405 and refused.headers["allow"] == "POST" and refused.content == b""


# --------------------------------------------------------------------------------------------
# form limits


def test_repeated_option_field_is_422_naming_it(stack: Any, clip: Path) -> None:
    before = stored_ids(stack.settings)
    body = form([("file", "file", clip.read_bytes()), ("field", "crf", b"10"), ("field", "crf", b"40")])
    problem = assert_problem(post_form(stack.url, body), 422, "repeated_field")
    assert "'crf'" in problem["detail"]
    assert problem["errors"][0]["field"] == "crf"
    assert stored_ids(stack.settings) == before


def test_parts_are_counted_not_names(stack: Any, clip: Path) -> None:
    """33 parts are too many even when they repeat one unknown name... which is refused first."""
    video = ("file", "file", clip.read_bytes())
    distinct = [video] + [("field", f"f{i}", b"1") for i in range(32)]
    assert "32 parts" in assert_problem(post_form(stack.url, form(distinct)), 400, "too_many_parts")["detail"]
    extra_files = [video] + [("file", f"extra{i}", b"x") for i in range(32)]
    assert_problem(post_form(stack.url, form(extra_files)), 400, "too_many_parts")


def test_form_bytes_are_bounded(stack: Any, clip: Path) -> None:
    """Each field at most 4096 bytes, the form around the video at most 64 KiB."""
    video = ("file", "file", clip.read_bytes())
    fields = [video] + [("field", f"f{i}", b"v" * 4000) for i in range(20)]  # 80 kB of fields
    assert_problem(post_form(stack.url, form(fields)), 400, "form_too_large")
    one = [video, ("field", "metadata", b"v" * 5000)]
    assert "longer than 4096 bytes" in assert_problem(post_form(stack.url, form(one)), 400, "field_too_large")["detail"]
    # A part header of 100 kB: python-multipart's header limit.
    huge_header = [video, ("field", "n" * 100_000, b"1")]
    assert_problem(post_form(stack.url, form(huge_header)), 400)


def test_error_messages_are_bounded(stack: Any, clip: Path) -> None:
    """Many long part names: a few are named, the rest counted."""
    parts = [("file", "file", clip.read_bytes())] + [("file", f"{'n' * 300}{i}", b"x") for i in range(30)]
    problem = assert_problem(post_form(stack.url, form(parts)), 400, "malformed_upload")
    assert "and 25 more" in problem["detail"] and len(problem["detail"]) < 600
    no_file = [("field", f"{'m' * 300}{i}", b"x") for i in range(30)]
    problem = assert_problem(post_form(stack.url, form(no_file)), 422, "missing_file")
    assert "and 25 more" in problem["detail"]
    # A 4000-character id: the validation error does not echo it.
    problem = assert_problem(httpx.get(f"{stack.url}/jobs/{'a' * 4000}"), 422, "validation_error")
    assert "a" * 100 not in str(problem) and problem["errors"][0]["field"] == "video_id"


@pytest.mark.parametrize("kind", ["repeated", "distinct"])
def test_16_mib_many_part_form_is_refused_early(stack: Any, kind: str) -> None:
    """200,000 parts (16.5 MiB): refused after the first few parts, small answer, others served."""
    boundary = "-" * 24 + "d74496d66958873e"  # as curl makes them
    if kind == "repeated":  # curl -F crf=20 -F crf=20 ...
        body = form([("field", "crf", b"20")] * 200_000, boundary)
        status, code = 422, "repeated_field"
    else:
        body = form([("field", f"f{i:06d}", b"1") for i in range(200_000)], boundary)
        status, code = 400, "too_many_parts"
    assert len(body) > 16 * 1024 * 1024
    latencies: list[float] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            started = time.monotonic()
            assert httpx.get(f"{stack.url}/healthz").status_code == 200
            latencies.append(time.monotonic() - started)

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    try:
        got, headers, content, elapsed = post_raw(stack.url, body, f"multipart/form-data; boundary={boundary}")
    finally:
        stop.set()
        poller.join(10)
    assert got == status, content[:300]
    assert headers["content-type"] == PROBLEM and headers.get("connection") == "close"
    assert len(content) < 1024 and code.encode() in content
    assert elapsed < 10, elapsed
    assert latencies and max(latencies) < 2.0, latencies


# --------------------------------------------------------------------------------------------
# one error shape


def test_every_error_is_problem_details(stack: Any, video: dict[str, Any], clip: Path) -> None:
    vid = video["id"]
    assert_problem(httpx.get(f"{stack.url}/no/such/route"), 404, "not_found")
    assert_problem(httpx.get(f"{stack.url}/jobs/{'0' * 32}"), 404, "not_found")
    not_allowed = assert_problem(httpx.post(f"{stack.url}/healthz"), 405, "method_not_allowed")
    assert "POST" in not_allowed["detail"]
    assert httpx.post(f"{stack.url}/healthz").headers["allow"] == "GET, HEAD"
    invalid = assert_problem(httpx.get(f"{stack.url}/jobs/not-an-id"), 422, "validation_error")
    assert invalid["errors"][0]["location"] == "path.video_id" and "video_id" in invalid["detail"]
    # GET /reconstruct's dependencies each declare the id: it is reported once (a trial saw it twice)
    invalid = assert_problem(httpx.get(f"{stack.url}/reconstruct/deadbeef"), 422, "validation_error")
    assert len(invalid["errors"]) == 1 and invalid["detail"].count("path.video_id") == 1, invalid
    assert_problem(httpx.get(f"{stack.url}/reconstruct/{vid}", params={"reconstructor": "../x"}), 422)
    assert_problem(httpx.get(f"{stack.url}/reconstruct/{vid}", params={"reconstructor": "nope"}), 422, "invalid_option")
    assert_problem(httpx.get(f"{stack.url}/bundles/{vid}", headers={"Range": "bytes=99999999-"}), 416)
    assert_problem(httpx.post(f"{stack.url}/compress", content=b"x"), 415, "not_multipart")
    assert_problem(post_form(stack.url, form([("field", "crf", b"1")])), 422, "missing_file")
    options = form([("file", "file", clip.read_bytes()), ("field", "crf", b"1e9"), ("field", "bogus", b"1")])
    problem = assert_problem(post_form(stack.url, options), 422, "invalid_option")
    assert problem["errors"][0]["field"] == "bogus"
    assert_problem(post_form(stack.url, form([("file", "file", b"")])), 422, "empty_upload")
    assert_problem(post_form(stack.url, form([("file", "file", b"text")])), 415, "not_a_video")
    for declared_length in (10**12, 10**19 + 12345):  # a terabyte; 20 digits (h11's most), never int()ed
        sock = open_raw_upload(stack.url, declared_length, b"", "b")  # sends nothing
        try:
            head = read_head(sock, timeout=10)
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            content = head.partition(b"\r\n\r\n")[2]
            while len(content) < length:
                content += sock.recv(65536)
        finally:
            sock.close()
        status_line, _, raw_headers = head.partition(b"\r\n\r\n")[0].partition(b"\r\n")
        headers = dict(line.split(": ", 1) for line in raw_headers.decode().lower().split("\r\n"))
        declared = httpx.Response(int(status_line.split()[1]), headers=headers, content=content)
        assert_problem(declared, 413, "upload_too_large")


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """`app` under uvicorn on a loopback port (a thread), for apps a test has modified."""
    import uvicorn

    from service.redis_server import free_port

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the gateway did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_unexpected_error_is_a_500_problem_with_request_id(
    stack: Any, video: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """A bug (here: the record store raises a RuntimeError naming a server path, on a route that
    loads the record from storage: GET /jobs reads its Redis copy) is a 500 problem with a request
    id that is also in the log line with the traceback; no internals in the answer."""
    from service.main import create_app

    app = create_app(stack.settings)

    def broken_load(video_id: str) -> Any:
        raise RuntimeError("secret internals at /srv/framers/records.py")

    app.state.services.records.load = broken_load
    with caplog.at_level(logging.ERROR, logger="service"), serve(app) as url:
        response = httpx.get(f"{url}/bundles/{video['id']}")
        given = httpx.get(f"{url}/bundles/{video['id']}", headers={"X-Request-ID": "req-42"})
        assert httpx.get(f"{url}/healthz").status_code == 200  # and the gateway keeps serving
    problem = assert_problem(response, 500, "internal_error")
    rid = problem["request_id"]
    assert len(rid) == 32 and response.headers["x-request-id"] == rid and rid in problem["detail"]
    assert "secret" not in response.text and "RuntimeError" not in response.text and "/srv" not in response.text
    assert assert_problem(given, 500)["request_id"] == "req-42"
    logged = [r for r in caplog.records if rid in r.getMessage()]
    assert logged and logged[0].exc_info is not None and "secret internals" in str(logged[0].exc_info[1])


def test_stray_missing_object_is_a_404_not_a_503(stack: Any, video: dict[str, Any]) -> None:
    """ObjectNotFound is not a StorageError: a route that did not expect a missing object answers
    404 not_found, not 503 storage_unavailable (the storage works; the object is gone)."""
    from core.storage import ObjectNotFound, StorageError
    from service.main import create_app

    assert not issubclass(ObjectNotFound, StorageError)
    app = create_app(stack.settings)

    def gone(video_id: str) -> Any:
        raise ObjectNotFound(f"videos/{video_id}/record.json")

    app.state.services.records.load = gone
    with serve(app) as url:
        response = httpx.get(f"{url}/bundles/{video['id']}")
    assert_problem(response, 404, "not_found")
    assert "retry-after" not in response.headers


def test_python_client_shows_detail_and_code(stack: Any) -> None:
    from framers.client import FramersClient, FramersClientError

    with FramersClient(stack.url) as client:
        with pytest.raises(FramersClientError) as missing:
            client.status("0" * 32)
        with pytest.raises(FramersClientError) as invalid:
            client.status("not-an-id")
    assert missing.value.status_code == 404 and missing.value.code == "not_found"
    assert missing.value.detail == f"no video {'0' * 32}"
    assert str(missing.value) == f"HTTP 404 not_found: no video {'0' * 32}"
    assert invalid.value.code == "validation_error" and invalid.value.status_code == 422
    assert "path.video_id" in str(invalid.value) and "[{" not in str(invalid.value)  # a sentence, not a list repr
    assert invalid.value.problem is not None and invalid.value.problem["errors"][0]["field"] == "video_id"


# --------------------------------------------------------------------------------------------
# aborted downloads


def _open_fds_to(path: Path) -> list[str]:
    """This process's file descriptors open on `path` (the gateway runs in this process)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith(str(path)):
                found.append(target)
    return found


def test_aborted_downloads_close_their_files_and_delete_frees_disk(
    stack: Any, clip: Path, wait_for: Callable[..., Any]
) -> None:
    """20 downloads of a 32 MiB object aborted after the first bytes: every file handle is closed
    within a second or two (garbage collection disabled, so nothing depends on it), and DELETE then
    frees the space at once (no descriptor left on the deleted file)."""
    from core.records import VideoKeys
    from core.storage import LocalStorage

    with stack.client() as client:
        response = upload(client, clip)
        assert response.status_code == 202
        video_id = response.json()["id"]
        assert wait_job(client, video_id, wait_for, timeout=90)["status"] == "done"
    storage = LocalStorage(stack.settings.local_storage_dir)
    key = VideoKeys(video_id).bundle
    storage.put_bytes(os.urandom(1024 * 1024) * 32, key)  # a large bundle: far more than socket buffers
    path = stack.settings.local_storage_dir / key
    host, port = stack.url.removeprefix("http://").split(":")
    gc.disable()
    try:
        for i in range(20):
            sock = socket.create_connection((host, int(port)), timeout=10)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
            extra = "Range: bytes=1000-\r\n" if i % 2 else ""
            sock.sendall(f"GET /bundles/{video_id} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
            first = sock.recv(65536)
            assert first.startswith((b"HTTP/1.1 200", b"HTTP/1.1 206")), first[:100]
            sock.close()  # mid-stream
        wait_for(lambda: not _open_fds_to(path), timeout=5, interval=0.05, what="download file handles to close")
        assert httpx.delete(f"{stack.url}/videos/{video_id}").status_code == 204
        assert not path.exists() and not _open_fds_to(path)
    finally:
        gc.enable()


# --------------------------------------------------------------------------------------------
# property-based: Range headers, boundaries, part counts (bounded: 40 examples each)

_digits = st.one_of(
    st.just(""),
    st.integers(0, 10**7).map(str),
    st.integers(1, 6000).map(lambda n: "9" * n),
    st.integers(1, 6000).map(lambda n: "0" * n + "7"),
)
_range_header = st.one_of(
    st.builds(
        lambda unit, a, sep, b, extra: f"{unit}={a}{sep}{b}{extra}",
        st.sampled_from(["bytes", "BYTES", "items", "", "bytes "]),
        _digits,
        st.sampled_from(["-", "--", "", " - "]),
        _digits,
        st.sampled_from(["", ",0-1", ", -5", ",", "-", ";x"]),
    ),
    st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=200),
)


@FUZZ
@given(header=_range_header, path=st.sampled_from(["bundles", "reconstruct"]), method=st.sampled_from(["GET", "HEAD"]))
def test_fuzzed_range_headers_no_5xx(stack: Any, video: dict[str, Any], header: str, path: str, method: str) -> None:
    response = httpx.request(
        method, f"{stack.url}/{path}/{video['id']}", headers={"Range": header.strip().encode("latin-1")}
    )
    assert response.status_code in (200, 206, 416), (header[:80], response.status_code, response.text[:200])
    if method == "HEAD":
        assert response.content == b""
    elif response.status_code == 416:
        assert_problem(response, 416, "range_not_satisfiable")
    else:
        assert response.headers["content-length"] == str(len(response.content))


_bchars = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=?"  # RFC 2046, no space
_token = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_."


@FUZZ
@given(
    boundary=st.one_of(
        st.text(alphabet=_bchars, min_size=1, max_size=400),
        st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300),
    ),
    quoted=st.booleans(),
)
def test_fuzzed_boundaries_no_5xx(stack: Any, boundary: str, quoted: bool) -> None:
    """A well-formed body around a text "video" with this boundary: a plain boundary of up to 256
    characters parses (415: not a video), a longer one is malformed (400); nothing is a 5xx."""
    body = form([("file", "file", b"plain text, not a video")], boundary)
    value = f'"{boundary}"' if quoted else boundary
    response = httpx.post(
        f"{stack.url}/compress", content=body, headers={"Content-Type": f"multipart/form-data; boundary={value}"}
    )
    assert 400 <= response.status_code < 500, (boundary[:80], response.status_code, response.text[:200])
    problem = assert_problem(response, response.status_code)
    if boundary and set(boundary) <= set(_token) and len(boundary) <= 256:
        assert problem["code"] == "not_a_video", (boundary, problem)
    if len(boundary) > 256:
        assert problem["code"] == "malformed_upload", (boundary[:80], problem)


def _expected(parts: list[tuple[str, str]]) -> tuple[int, str]:
    """What the gateway must answer to these parts, in order: ("file", "file") is the text video."""
    seen: set[str] = set()
    has_file = False
    for i, (kind, name) in enumerate(parts, 1):
        if i > 32:
            return 400, "too_many_parts"
        if kind == "field" and name in seen:
            return 422, "repeated_field"
        if kind == "file":
            if has_file:
                return 400, "malformed_upload"
            has_file = True
        else:
            seen.add(name)
    if not has_file:
        return 422, "missing_file"
    if seen - {"selector", "keep", "crf"}:
        return 422, "invalid_option"
    return 415, "not_a_video"


_part = st.one_of(
    st.tuples(st.just("field"), st.sampled_from(["selector", "keep", "crf", "extra"])),
    st.tuples(st.just("field"), st.integers(0, 10**6).map(lambda i: f"f{i}")),
    st.tuples(st.just("file"), st.just("file")),
)


@FUZZ
@given(parts=st.one_of(st.lists(_part, max_size=8), st.lists(_part, min_size=20, max_size=120)))
def test_fuzzed_part_counts_no_5xx(stack: Any, parts: list[tuple[str, str]]) -> None:
    values = {"selector": b"uniform", "keep": b"2", "crf": b"20"}
    body = form([(kind, name, b"text" if kind == "file" else values.get(name, b"1")) for kind, name in parts])
    status, code = _expected(parts)
    assert_problem(post_form(stack.url, body), status, code)
