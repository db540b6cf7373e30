"""Security: every endpoint behind a key (another tenant's key answers 404, never the data), ids
and names that try to leave their folder, limits, secrets kept out of logs, and a schemathesis run
over the OpenAPI spec that must never produce a 5xx."""

from __future__ import annotations

import json
import os
import signal
import string
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests._reliability import (
    ROOT,
    multipart_head,
    open_raw_upload,
    raw_request,
    read_head,
    storage_keys,
    stored_ids,
    upload,
    wait_job,
    wait_video,
)

KEY_A, KEY_B = "rel-key-A-5f1d8c0e9b7a", "rel-key-B-0a9b8c7d6e5f"
TENANT_A, TENANT_B = "tenant-alpha", "tenant-bravo"
# Deliberately public (probes, scrapers, the API description); they must not carry tenant data.
PUBLIC = {"/healthz", "/readyz", "/metrics", "/models", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


@pytest.fixture(scope="module")
def stack(service_stacks: Callable[..., Any]) -> Any:
    return service_stacks(workers=1, api_keys=f"{KEY_A}:{TENANT_A},{KEY_B}:{TENANT_B}")


@pytest.fixture(scope="module")
def video_a(stack: Any, clip: Path) -> dict[str, Any]:
    """A video of tenant A, compressed and reconstructed with `linear`."""
    import time

    with stack.client(KEY_A) as client:
        response = upload(client, clip, filename="alpha-secret-plans.mp4")
        assert response.status_code == 202, response.text
        video_id = response.json()["id"]
        deadline = time.monotonic() + 90
        while (state := client.get(f"/jobs/{video_id}").json())["status"] not in ("done", "failed"):
            assert time.monotonic() < deadline, state
            time.sleep(0.1)
        assert state["status"] == "done", f"{state}\n{stack.worker_logs()}"
        while (r := client.get(f"/reconstruct/{video_id}")).status_code != 200:
            assert r.status_code == 202 and time.monotonic() < deadline, r.text
            time.sleep(0.1)
    return dict(state)


def _operations(stack: Any) -> list[tuple[str, str]]:
    spec = httpx.get(f"{stack.url}/openapi.json").json()
    return [(method.upper(), path) for path, item in spec["paths"].items() for method in item]


# --------------------------------------------------------------------------------------------
# keys and tenants


def test_every_operation_needs_a_key_and_hides_other_tenants_videos(stack: Any, video_a: dict[str, Any]) -> None:
    """Walks the OpenAPI spec, so an endpoint added later without auth fails this test."""
    video_id = video_a["id"]
    operations = _operations(stack)
    private = [(m, p) for m, p in operations if p not in PUBLIC]
    assert {p for _, p in private} == {
        "/compress",
        "/jobs/{video_id}",
        "/reconstruct/{video_id}",
        "/bundles/{video_id}",
        "/videos/{video_id}",
        "/videos",
        "/jobs/{video_id}/cancel",
        "/quality/{video_id}",
        "/sources/{video_id}",
        "/significance/{video_id}",
    }
    before = stored_ids(stack.settings)
    secrets = [video_a["source"]["filename"], TENANT_A, str(video_a["sizes"]["bundle_bytes"])]
    for method, template in private:
        path = template.replace("{video_id}", video_id)
        for who, headers in [
            ("no key", {}),
            ("unknown key", {"X-API-Key": "guess-0000"}),
            ("bearer unknown", {"Authorization": "Bearer guess-0000"}),
            ("empty key", {"X-API-Key": ""}),
        ]:
            response = httpx.request(method, stack.url + path, headers=headers)
            assert response.status_code == 401, (who, method, path, response.text)
            assert not any(s in response.text for s in secrets), (who, method, path, response.text)
        other = httpx.request(method, stack.url + path, headers={"X-API-Key": KEY_B})
        if template == "/compress":
            assert other.status_code in (415, 422)  # B may upload; it just sent no video
        elif template == "/videos":
            assert other.status_code == 200, other.text  # B's own listing: without A's video
            assert video_id not in other.text and not any(s in other.text for s in secrets)
        else:
            assert other.status_code == 404, (method, path, other.text)
            missing = httpx.request(method, stack.url + path.replace(video_id, "0" * 32), headers={"X-API-Key": KEY_B})
            assert other.json()["detail"] == f"no video {video_id}"  # same as a missing video
            assert {**other.json(), "detail": ""} == {**missing.json(), "detail": ""}
            assert other.json()["code"] == "not_found" and other.headers["content-type"] == "application/problem+json"
    assert stored_ids(stack.settings) == before  # nothing written, nothing deleted
    with stack.client(KEY_A) as owner:
        assert owner.get(f"/jobs/{video_id}").json()["status"] == "done"
        assert owner.get(f"/bundles/{video_id}").status_code == 200


def test_public_endpoints_carry_no_tenant_data(stack: Any, video_a: dict[str, Any]) -> None:
    needles = [KEY_A, KEY_B, TENANT_A, TENANT_B, video_a["id"], video_a["source"]["filename"]]
    for path in ("/healthz", "/readyz", "/metrics", "/models", "/docs", "/openapi.json"):
        response = httpx.get(stack.url + path)
        assert response.status_code == 200, (path, response.text)
        assert not [n for n in needles if n in response.text], path


def test_without_keys_only_this_machine_is_served(stack: Any, video_a: dict[str, Any]) -> None:
    """A gateway started without keys behind a local reverse proxy: requests the proxy forwards
    from elsewhere (X-Forwarded-For, trusted from loopback by uvicorn) are refused."""
    url = stack.start_gateway(api_keys="")
    remote = {"X-Forwarded-For": "203.0.113.7"}
    for method, path in [
        ("POST", "/compress"),
        ("GET", f"/jobs/{video_a['id']}"),
        ("GET", f"/bundles/{video_a['id']}"),
        ("DELETE", f"/videos/{video_a['id']}"),
    ]:
        response = httpx.request(method, url + path, headers=remote)
        assert response.status_code == 403, (method, path, response.text)
    # The anonymous tenant cannot see tenant A's video either.
    assert httpx.get(f"{url}/jobs/{video_a['id']}").status_code == 404


# --------------------------------------------------------------------------------------------
# ids and names that try to leave their folder

TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "%2e%2e",
    "..%5c..%5cwindows%5cwin.ini",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "%00",
    "{id}%00",
    "{id}%00.json",
    "{id}%2F..%2F..%2Fpending",
    "{id}/../{id}",
    "%c0%ae%c0%ae%c0%af",
    "{id}.json",
    "{ID}",
    "a" * 4000,
]


@pytest.mark.parametrize("payload", TRAVERSALS, ids=[t[:24] for t in TRAVERSALS])
def test_path_traversal_in_ids_never_reaches_storage(stack: Any, video_a: dict[str, Any], payload: str) -> None:
    canary = Path(stack.settings.data_dir) / "canary.txt"
    canary.write_text("must survive")
    target = payload.replace("{id}", video_a["id"]).replace("{ID}", video_a["id"].upper())
    for method, prefix in [("GET", "/jobs/"), ("GET", "/bundles/"), ("GET", "/reconstruct/"), ("DELETE", "/videos/")]:
        status, body = raw_request(stack.url, method, prefix + target, {"X-API-Key": KEY_A})
        assert status in (400, 404, 405, 422), (method, prefix + target, status, body[:300])
        assert b"root:" not in body
    assert canary.read_text() == "must survive"
    with stack.client(KEY_A) as client:
        assert client.get(f"/jobs/{video_a['id']}").status_code == 200  # the DELETEs did nothing


@pytest.mark.parametrize("name", ["../../record", "..%2F..%2Frecord", "linear%00", "linear/../x", "LINEAR", "a" * 40])
def test_path_traversal_in_reconstructor_names_is_refused(stack: Any, video_a: dict[str, Any], name: str) -> None:
    status, body = raw_request(
        stack.url, "GET", f"/reconstruct/{video_a['id']}?reconstructor={name}", {"X-API-Key": KEY_A}
    )
    assert status == 422, (name, status, body[:300])


def test_upload_filenames_cannot_escape_storage(
    stack: Any, clip: Path, tmp_path: Path, wait_for: Callable[..., Any]
) -> None:
    escape = tmp_path / "escaped.mp4"
    names = [
        "../" * 12 + str(escape).lstrip("/"),
        str(escape),
        "..\\..\\..\\escaped.mp4",
        "nul\x00byte.mp4",
        "x" * 600 + ".mp4",
        "clip.mp4\r\nX-Injected: yes",
        "",
    ]
    with stack.client(KEY_A) as client:
        ids = []
        for name in names:
            response = upload(client, clip, filename=name)
            assert response.status_code == 202, (name, response.text)
            ids.append(response.json()["id"])
        for name, video_id in zip(names, ids, strict=True):
            state = wait_job(client, video_id, wait_for, timeout=90)
            assert state["status"] == "done", (name, state)
            stored = state["source"]["filename"]
            assert "/" not in stored and "\\" not in stored and len(stored) <= 255, stored
            assert "X-Injected" not in client.get(f"/bundles/{video_id}").headers
    assert not escape.exists()
    keys = storage_keys(stack.settings)
    for key in keys:
        parts = key.split("/")
        assert parts[0] in ("videos", "pending") and ".." not in parts, key


# --------------------------------------------------------------------------------------------
# limits


def test_declared_oversized_body_is_refused_before_it_is_sent(stack: Any) -> None:
    """A request claiming 50 GiB is answered at once (401 without a key, 413 with one): the
    gateway does not wait for, read or store any of it."""
    for headers, expected in [({}, b"HTTP/1.1 401"), ({"X-API-Key": KEY_A}, b"HTTP/1.1 413")]:
        sock = open_raw_upload(stack.url, 50 * 1024**3, b"", "b", headers)
        try:
            answer = read_head(sock, timeout=10)
        finally:
            sock.close()
        assert answer.startswith(expected), answer[:200]
    assert list((stack.settings.scratch_dir / "uploads").glob("*.part")) == []


@pytest.mark.parametrize(
    ("parts", "status", "needle"),
    [
        ([("field", f"f{i}", "x") for i in range(40)], 400, "too many form fields"),
        ([("field", "selector", "u" * 5000)], 400, "longer than 4096 bytes"),
        ([("file", "file", "a.mp4"), ("file", "file", "b.mp4")], 400, "one video per request"),
        ([("file", "file", "a.mp4"), ("file", "extra", "b.mp4")], 400, "unexpected file field"),
        ([("field", "keep", "100")], 422, "keep"),
        ([("field", "stride", "-1")], 422, "stride"),
        ([("field", "crf", "1e9")], 422, "crf"),
    ],
    ids=["40-fields", "5000-byte-field", "two-files", "extra-file-field", "keep-100", "stride--1", "crf-1e9"],
)
def test_form_limits(stack: Any, clip: Path, parts: list[tuple[str, str, str]], status: int, needle: str) -> None:
    body = b""
    has_file = any(kind == "file" for kind, _, _ in parts)
    if not has_file:
        parts = [("file", "file", "clip.mp4"), *parts]
    for kind, name, value in parts:
        if kind == "file":
            body += multipart_head("b", filename=value, field=name) + clip.read_bytes() + b"\r\n"
        else:
            body += f'--b\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    body += b"--b--\r\n"
    before = stored_ids(stack.settings)
    response = httpx.post(
        f"{stack.url}/compress",
        content=body,
        headers={"Content-Type": "multipart/form-data; boundary=b", "X-API-Key": KEY_A},
    )
    assert response.status_code == status, response.text
    assert needle in response.json()["detail"]
    assert stored_ids(stack.settings) == before


@settings(max_examples=60, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(
    range_header=st.one_of(
        st.from_regex(r"bytes=[0-9]{0,22}-[0-9]{0,22}(, ?[0-9]{0,3}-[0-9]{0,3})?", fullmatch=True),
        st.text(alphabet=string.printable.replace("\r", "").replace("\n", "").replace("\x0b", "").replace("\x0c", "")),
    ),
    if_range=st.sampled_from([None, "", '"etag"', "Wed, 21 Oct 2015 07:28:00 GMT"]),
    path=st.sampled_from(["bundles", "reconstruct"]),
)
def test_range_headers_never_break_downloads(
    stack: Any, video_a: dict[str, Any], range_header: str, if_range: str | None, path: str
) -> None:
    headers = {"X-API-Key": KEY_A, "Range": range_header.strip()}
    if if_range is not None:
        headers["If-Range"] = if_range
    response = httpx.get(f"{stack.url}/{path}/{video_a['id']}", headers=headers)
    assert response.status_code in (200, 206, 416), (headers, response.status_code, response.text[:200])


# --------------------------------------------------------------------------------------------
# schemathesis over the OpenAPI spec


@pytest.fixture(scope="module")
def api_schema(stack: Any) -> Any:
    return schemathesis.openapi.from_url(f"{stack.url}/openapi.json")


# One test per operation. (schemathesis.pytest.from_fixture would do this, but schemathesis 4.32
# touches `request.node._nodeid`, which pytest 9 no longer has.)
OPERATIONS = [
    ("POST", "/compress"),
    ("GET", "/jobs/{video_id}"),
    ("GET", "/reconstruct/{video_id}"),
    ("GET", "/bundles/{video_id}"),
    ("DELETE", "/videos/{video_id}"),
    ("GET", "/videos/{video_id}"),
    ("GET", "/videos"),
    ("POST", "/jobs/{video_id}/cancel"),
    ("GET", "/quality/{video_id}"),
    ("GET", "/sources/{video_id}"),
    ("GET", "/significance/{video_id}"),
    ("GET", "/models"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
]


def test_fuzzed_operations_are_the_whole_api(stack: Any) -> None:
    assert sorted(OPERATIONS) == sorted(_operations(stack))


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_openapi_fuzz_no_server_errors(api_schema: Any, stack: Any, method: str, path: str) -> None:
    """Schema-valid and schema-violating requests (schemathesis) never get a 5xx."""
    from schemathesis import GenerationMode

    operation = api_schema[path][method]
    modes = [GenerationMode.POSITIVE]
    if operation.path_parameters or operation.body or operation.query:
        modes.append(GenerationMode.NEGATIVE)  # nothing to violate in an operation without inputs
    strategy = st.one_of(*(operation.as_strategy(generation_mode=mode) for mode in modes))
    seen: list[int] = []

    @settings(max_examples=50, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=stack.url, headers={"X-API-Key": KEY_A}, timeout=30)
        seen.append(response.status_code)
        assert response.status_code < 500, (
            f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
        )

    run()
    assert seen  # it did send requests


# --------------------------------------------------------------------------------------------
# secrets in logs

DRIVER = (
    "import argparse, sys; from service.commands import register; "
    "p = argparse.ArgumentParser(prog='framers'); s = p.add_subparsers(dest='command', required=True); "
    "register(s); a = p.parse_args(); sys.exit(a.func(a))"
)


@pytest.fixture
def serve_with_s3(
    redis_url: str, s3_bucket: dict[str, str], tmp_path: Path, wait_for: Callable[..., Any]
) -> Iterator[tuple[str, Path, dict[str, str]]]:
    """`framers serve` (gateway + 1 worker) on S3 with a recognisable secret, logging at DEBUG."""
    from service.redis_server import free_port

    port = free_port()
    log = tmp_path / "serve.log"
    secret = "S3-SECRET-" + "7" * 20
    webhook_secret = "WEBHOOK-SECRET-" + "9" * 20
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMERS_")}
    env |= {
        "FRAMERS_API_KEYS": f"{KEY_A}:{TENANT_A},{KEY_B}:{TENANT_B}",
        "FRAMERS_LOG_LEVEL": "DEBUG",
        "FRAMERS_STORAGE_BACKEND": "s3",
        "FRAMERS_S3_BUCKET": s3_bucket["s3_bucket"],
        "FRAMERS_S3_ENDPOINT_URL": s3_bucket["s3_endpoint_url"],
        "FRAMERS_S3_ACCESS_KEY_ID": "rel-access-key-id",
        "FRAMERS_S3_SECRET_ACCESS_KEY": secret,
        "FRAMERS_RETRY_AFTER_S": "1",
        "FRAMERS_JOB_RETRIES": "0",
        "FRAMERS_WEBHOOK_SECRET": webhook_secret,
        "FRAMERS_CALLBACK_ALLOWED_HOSTS": "127.0.0.1",
        "PYTHONPATH": str(ROOT),
    }
    argv = [sys.executable, "-c", DRIVER, "serve", "--port", str(port), "--workers", "1"]
    argv += ["--data-dir", str(tmp_path / "data"), "--redis-url", redis_url]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(up, timeout=60, interval=0.2, what="framers serve")
        yield url, log, {"secret": secret, "webhook_secret": webhook_secret, "redis_url": redis_url}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_no_secrets_in_logs_records_or_queue(
    serve_with_s3: tuple[str, Path, dict[str, str]],
    s3_bucket: dict[str, str],
    clip: Path,
    tmp_path: Path,
    wait_for: Callable[..., Any],
) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import boto3
    import redis

    from tests.test_reliability_inputs import make_frame_size_change, make_text

    url, log, extra = serve_with_s3
    answers: list[str] = []
    deliveries: list[str] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            deliveries.append(f"{self.headers}\n{body.decode(errors='replace')}")
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    with httpx.Client(base_url=url, headers={"X-API-Key": KEY_A}, timeout=30) as client:
        answers.append(httpx.get(f"{url}/jobs/{'0' * 32}", headers={"X-API-Key": KEY_B + "x"}).text)  # bad key
        good = upload(client, clip, callback_url=hook)
        answers.append(good.text)
        video_id = good.json()["id"]
        answers.append(json.dumps(wait_job(client, video_id, wait_for, timeout=90)))
        answers.append(httpx.get(f"{url}/jobs/{video_id}", headers={"X-API-Key": KEY_B}).text)  # other tenant
        wait_video(client, video_id, wait_for, timeout=90)
        answers.append(upload(client, make_text(tmp_path)).text)  # refused at the gateway
        failing = upload(client, make_frame_size_change(tmp_path)).json()["id"]  # fails in the worker
        answers.append(json.dumps(wait_job(client, failing, wait_for, timeout=90)))
        for path in ("/readyz", "/metrics", "/models"):
            answers.append(client.get(path).text)
        wait_for(lambda: deliveries, timeout=30, what="the compress.done delivery")
        answers.append(client.get(f"/jobs/{video_id}").text)  # with its delivery log
        assert client.delete(f"/videos/{video_id}").status_code == 204
    receiver.shutdown()
    logs = log.read_text(errors="replace")
    # The log did capture the gateway, the worker and the codec jobs, at DEBUG.
    for line in ('"POST /compress HTTP/1.1" 202', "listening on webhooks, reconstruct, compress", "INFO compressed "):
        assert line in logs, line
    assert "frame size changes mid-stream" in logs and " DEBUG " in logs
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_bucket["s3_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    objects = [
        s3.get_object(Bucket=s3_bucket["s3_bucket"], Key=o["Key"])["Body"].read().decode("latin-1")
        for o in s3.list_objects_v2(Bucket=s3_bucket["s3_bucket"]).get("Contents", [])
        if o["Key"].endswith(".json")
    ]
    queue = redis.Redis.from_url(extra["redis_url"])
    dumped = []
    for key in queue.scan_iter():
        dumped.append(repr(key))
        kind = str(queue.type(key), "ascii")  # type: ignore[arg-type]
        if kind == "string":
            dumped.append(repr(queue.get(key)))
        elif kind == "hash":
            dumped.append(repr(queue.hgetall(key)))
        elif kind == "list":
            dumped.append(repr(queue.lrange(key, 0, -1)))
        elif kind == "zset":
            dumped.append(repr(queue.zrange(key, 0, -1)))
        elif kind == "set":
            dumped.append(repr(queue.smembers(key)))
    haystacks = {"serve log": logs, "HTTP answers": "\n".join(answers), "records": "\n".join(objects)}
    haystacks["redis"] = "\n".join(dumped)
    haystacks["webhook deliveries"] = "\n".join(deliveries)
    assert "X-FrameRS-Signature: t=" in haystacks["webhook deliveries"]
    for where, text in haystacks.items():
        for secret in (KEY_A, KEY_B, extra["secret"], extra["webhook_secret"]):
            assert secret not in text, f"{secret[:6]}… found in {where}"
