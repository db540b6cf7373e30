"""Platform features over real HTTP (loopback gateway, real Redis, real worker processes):
idempotent uploads, signed webhooks, metadata, listing, offline docs."""

from __future__ import annotations

import concurrent.futures
import hashlib
import hmac
import ipaddress
import json
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

KEY_A, KEY_B = "plat-key-a-0123456789", "plat-key-b-9876543210"


@pytest.fixture(scope="module")
def stack(service_stacks: Callable[..., Any]) -> Any:
    return service_stacks(workers=1, api_keys=f"{KEY_A}:tenant-a,{KEY_B}:tenant-b")


def upload(client: httpx.Client, path: Path, headers: dict[str, Any] | None = None, **fields: Any) -> httpx.Response:
    with open(path, "rb") as f:
        return client.post("/compress", files={"file": (path.name, f, "video/mp4")}, data=fields, headers=headers or {})


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


# --------------------------------------------------------------------------------------------
# signed webhooks, with a receiver on loopback


SECRET = "whsec-test-5a1b2c3d"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers with queued statuses."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[Received] = []
        self.server_names: list[str | None] = []  # TLS SNI of each handshake
        self.statuses: dict[str, list[int]] = {}  # path -> statuses to answer first (then 200)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.lock:
                    receiver.requests.append(
                        Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.time())
                    )
                    queued = receiver.statuses.get(self.path.split("?")[0], [])
                    status = queued.pop(0) if queued else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.scheme = "http"
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: self.server_names.append(name)  # type: ignore[assignment]
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
            self.scheme = "https"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def on(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path.split("?")[0] == path]


def check_signature(received: Received, tolerance_s: float = 120) -> dict[str, Any]:
    """Verify X-FrameRS-Signature as a receiver would (independently of core.webhooks); the event."""
    parts = dict(item.split("=", 1) for item in received.headers["x-framers-signature"].split(","))
    timestamp = int(parts["t"])
    assert abs(time.time() - timestamp) < tolerance_s
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(parts["v1"], expected), "signature does not match"
    assert received.headers["content-type"] == "application/json"
    event: dict[str, Any] = json.loads(received.body)
    assert received.headers["x-framers-event"] == event["event"]
    assert received.headers["x-framers-event-id"] == event["event_id"]
    return event


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.server.shutdown()


@pytest.fixture(scope="module")
def hook_stack(service_stacks: Callable[..., Any], receiver: Receiver) -> Any:
    return service_stacks(
        workers=1,
        api_keys=f"{KEY_A}:tenant-a,{KEY_B}:tenant-b",
        webhook_secret=SECRET,
        callback_allowed_hosts="127.0.0.1, localhost",
        default_callback_urls=f"tenant-b={receiver.url('/tenant-b-default')}",
        webhook_retry_backoff_s=[1, 1],
    )


def test_compress_done_event_is_signed_and_redelivered_after_a_500(
    hook_stack: Any, receiver: Receiver, clip: Path, wait_for: Callable[..., Any]
) -> None:
    receiver.statuses["/hooks/done"] = [500]
    with hook_stack.client(KEY_A) as client:
        response = upload(
            client,
            clip,
            callback_url=receiver.url("/hooks/done?source=test"),
            metadata=json.dumps({"order": 42, "tags": ["a", "b"]}),
        )
        assert response.status_code == 202, response.text
        video_id = response.json()["id"]
        first, second = wait_for(
            lambda: receiver.on("/hooks/done")[:2] if len(receiver.on("/hooks/done")) >= 2 else None,
            timeout=60,
            what="two deliveries",
        )
        job = wait_for(
            lambda: (
                (j := client.get(f"/jobs/{video_id}").json())["webhooks"]
                and j["webhooks"][0]["status"] == "delivered"
                and j
            ),
            timeout=20,
            what="the delivery log",
        )
    event = check_signature(second)
    assert check_signature(first) == event and first.body == second.body  # the same event, re-signed
    # The retry goes through RQ's scheduled-job registry (the attempts log below). Its timing is not
    # asserted: RQ stores scheduled times in whole seconds, so a 1 s backoff may fire at once
    # (seen: 0.12 s) or up to ~2 s later.
    assert first.path == "/hooks/done?source=test"
    assert first.headers["host"] == f"127.0.0.1:{receiver.port}"
    assert event["event"] == "compress.done" and event["id"] == video_id and event["status"] == "done"
    assert event["sizes"]["source_bytes"] == clip.stat().st_size and event["sizes"]["bundle_bytes"] > 0
    assert event["model_versions"] == job["model_versions"]
    assert event["links"]["status"] == f"/jobs/{video_id}" and event["links"]["bundle"] == f"/bundles/{video_id}"
    assert event["metadata"] == {"order": 42, "tags": ["a", "b"]}
    assert job["metadata"] == {"order": 42, "tags": ["a", "b"]}
    assert job["callback_url"] == receiver.url("/hooks/done?source=test")
    log = job["webhooks"][0]
    assert log["event"] == "compress.done" and log["event_id"] == event["event_id"]
    assert [a["status_code"] for a in log["attempts"]] == [500, 200]
    assert log["attempts"][0]["error"] == "HTTP 500"


def test_reconstruct_done_event_by_host_name(
    hook_stack: Any, receiver: Receiver, clip: Path, wait_for: Callable[..., Any]
) -> None:
    # A host name (resolved once, connected to by address) keeps its name in the Host header.
    with hook_stack.client(KEY_A) as client:
        response = upload(client, clip, callback_url=receiver.url("/hooks/rec", host="localhost"))
        video_id = response.json()["id"]
        assert wait_job(client, video_id, wait_for)["status"] == "done"
        assert client.get(f"/reconstruct/{video_id}").status_code == 202
        wait_for(lambda: client.get(f"/reconstruct/{video_id}").status_code == 200, timeout=60, what="the video")
        events = wait_for(
            lambda: [e for e in map(check_signature, receiver.on("/hooks/rec")) if e["event"] == "reconstruct.done"],
            timeout=30,
            what="reconstruct.done",
        )
        job = client.get(f"/jobs/{video_id}").json()
    event = events[0]
    assert receiver.on("/hooks/rec")[0].headers["host"] == f"localhost:{receiver.port}"
    assert event["id"] == video_id and event["reconstructor"] == "linear" and event["status"] == "done"
    assert event["sizes"]["output_bytes"] == job["reconstructions"]["linear"]["output_bytes"] > 0
    assert event["links"]["reconstruct"] == f"/reconstruct/{video_id}?reconstructor=linear"
    assert event["metadata"] is None
    assert sorted(e["event"] for e in map(check_signature, receiver.on("/hooks/rec"))) == [
        "compress.done",
        "reconstruct.done",
    ]


def _test_ca(folder: Path) -> tuple[Path, ssl.SSLContext]:
    """A private CA (its PEM) and a server TLS context with its certificate for "localhost" only."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FrameRS test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_pem = folder / "ca.pem"
    ca_pem.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    chain = folder / "server.pem"
    chain.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM)
        + leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(chain)
    return ca_pem, server


def test_https_callback_by_name_keeps_sni_and_checks_the_certificate(
    service_stacks: Callable[..., Any], clip: Path, wait_for: Callable[..., Any], tmp_path: Path
) -> None:
    pytest.importorskip("cryptography")
    ca_pem, server_tls = _test_ca(tmp_path)
    tls_receiver = Receiver(tls=server_tls)
    try:
        stack = service_stacks(
            workers=1,
            webhook_secret=SECRET,
            callback_allowed_hosts="localhost,127.0.0.1",
            webhook_ca_bundle=str(ca_pem),
            webhook_retry_backoff_s=[1],
        )
        with stack.client() as client:
            by_name = upload(client, clip, callback_url=tls_receiver.url("/tls", host="localhost")).json()["id"]
            # The certificate names "localhost" only: by address the check must fail (no delivery).
            by_address = upload(client, clip, callback_url=tls_receiver.url("/tls-ip")).json()["id"]
            received = wait_for(lambda: tls_receiver.on("/tls"), timeout=60, what="the https delivery")
            job = wait_for(
                lambda: (j := client.get(f"/jobs/{by_address}").json())["webhooks"]
                and j["webhooks"][0]["status"] == "failed"
                and j,
                timeout=60,
                what="the failed https delivery by address",
            )
    finally:
        tls_receiver.server.shutdown()
    event = check_signature(received[0])
    assert event["id"] == by_name
    assert received[0].headers["host"] == f"localhost:{tls_receiver.port}"
    assert "localhost" in tls_receiver.server_names
    attempts = job["webhooks"][0]["attempts"]
    assert len(attempts) == 2 and all(a["status_code"] is None for a in attempts)  # tried, retried, gave up
    assert "certificate" in attempts[0]["error"].lower() or "ssl" in attempts[0]["error"].lower()
    assert tls_receiver.on("/tls-ip") == []


def test_tenant_default_callback_url(
    hook_stack: Any, receiver: Receiver, clip: Path, wait_for: Callable[..., Any]
) -> None:
    with hook_stack.client(KEY_B) as client:
        video_id = upload(client, clip, metadata='{"from": "b"}').json()["id"]
        events = wait_for(
            lambda: [check_signature(r) for r in receiver.on("/tenant-b-default")],
            timeout=60,
            what="the event at the tenant's default URL",
        )
    assert events[0]["id"] == video_id and events[0]["event"] == "compress.done"
    assert events[0]["metadata"] == {"from": "b"}


def test_failed_events(
    service_stacks: Callable[..., Any], receiver: Receiver, clip: Path, wait_for: Callable[..., Any]
) -> None:
    from core.records import VideoKeys
    from core.storage import LocalStorage

    stack = service_stacks(workers=0, webhook_secret=SECRET, callback_allowed_hosts="127.0.0.1")
    storage = LocalStorage(stack.settings.local_storage_dir)
    with stack.client() as client:
        bad = upload(client, clip, callback_url=receiver.url("/hooks/failed")).json()["id"]
        good = upload(client, clip, callback_url=receiver.url("/hooks/failed")).json()["id"]
        # The stored source of `bad` becomes garbage before any worker runs: compression fails for good.
        source_key = json.loads(storage.get_bytes(VideoKeys(bad).record))["source_key"]
        storage.put_bytes(b"not a video any more\n" * 100, source_key)
        stack.start_worker()
        bad_job = wait_job(client, bad, wait_for)
        assert bad_job["status"] == "failed"
        assert wait_job(client, good, wait_for)["status"] == "done"
        storage.put_bytes(b"garbage", VideoKeys(good).bundle)
        client.get(f"/reconstruct/{good}")
        wait_for(lambda: client.get(f"/reconstruct/{good}").status_code == 422, timeout=60, what="failed rebuild")

        def events() -> dict[tuple[str, str], dict[str, Any]] | None:
            found = {(e["id"], e["event"]): e for e in map(check_signature, receiver.on("/hooks/failed"))}
            return found if len(found) >= 3 else None

        found = wait_for(events, timeout=30, what="three events")
    assert set(found) == {(bad, "compress.failed"), (good, "compress.done"), (good, "reconstruct.failed")}
    assert found[(bad, "compress.failed")]["status"] == "failed"
    assert found[(bad, "compress.failed")]["error"] == bad_job["error"]
    assert found[(good, "reconstruct.failed")]["error"]


def test_delivery_lost_by_redis_is_requeued_by_the_reconciler(
    service_stacks: Callable[..., Any], receiver: Receiver, clip: Path, wait_for: Callable[..., Any]
) -> None:
    from rq.job import Job

    from core.queues import connect, webhook_job_id

    stack = service_stacks(
        workers=1, webhook_secret=SECRET, callback_allowed_hosts="127.0.0.1", webhook_retry_backoff_s=[600]
    )
    receiver.statuses["/hooks/lost"] = [503]
    with stack.client() as client:
        video_id = upload(client, clip, callback_url=receiver.url("/hooks/lost")).json()["id"]
        first = wait_for(
            lambda: (j := client.get(f"/jobs/{video_id}").json())["webhooks"]
            and j["webhooks"][0]["attempts"]
            and j["webhooks"][0],
            timeout=60,
            what="the first (refused) attempt",
        )
        assert first["status"] == "pending" and first["attempts"][0]["status_code"] == 503
        # The retry would come in 10 minutes; Redis loses it instead (as after a restart without persistence).
        Job.fetch(webhook_job_id(first["event_id"]), connection=connect(stack.settings)).delete()
        log = wait_for(
            lambda: (w := client.get(f"/jobs/{video_id}").json()["webhooks"][0])["status"] == "delivered" and w,
            timeout=60,  # a reconciler pass every 2 s here, but a loaded machine (an RD run) took over 30 s
            what="the reconciler's redelivery",
        )
    assert [a["status_code"] for a in log["attempts"]] == [503, 200]
    assert [check_signature(r)["event_id"] for r in receiver.on("/hooks/lost")] == [first["event_id"]] * 2
    pending = Path(stack.settings.local_storage_dir) / "pending" / video_id
    wait_for(lambda: not pending.exists() or not any(pending.iterdir()), timeout=10, what="the marker to go")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "http:///no-host",
        "http://10.0.0.5/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://127.0.0.2:8080/hook",  # loopback, not the allowed 127.0.0.1
        "http://2130706433/hook",  # 127.0.0.1 in decimal: allowed hosts are names, not addresses
        "http://0x7f.1/hook",
        "http://[::1]/hook",
        "http://[::ffff:10.1.2.3]/hook",
        "http://[fe80::1]/hook",
        "http://224.0.0.1/hook",
        "http://0.0.0.0/hook",
        "http://sub.localhost/hook",
    ],
)
def test_callback_to_a_non_public_address_is_refused_at_upload(hook_stack: Any, clip: Path, url: str) -> None:
    before = stored_videos(hook_stack)
    with hook_stack.client(KEY_A) as client:
        response = upload(client, clip, callback_url=url)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_callback_url"
    assert body["errors"][0]["field"] == "callback_url"
    assert stored_videos(hook_stack) == before


def test_host_resolving_to_a_private_address_is_refused_at_delivery(
    hook_stack: Any, receiver: Receiver, clip: Path, wait_for: Callable[..., Any]
) -> None:
    from core.webhooks import address_allowed

    name = socket.gethostname().lower()
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(name, None)}
    except socket.gaierror:
        pytest.skip(f"this machine's name {name!r} does not resolve")
    if name in ("localhost", "127.0.0.1") or all(address_allowed(ipaddress.ip_address(a)) for a in addresses):
        pytest.skip(f"{name!r} resolves to public addresses only")
    with hook_stack.client(KEY_A) as client:
        video_id = upload(client, clip, callback_url=receiver.url("/hooks/private", host=name)).json()["id"]
        job = wait_for(
            lambda: (
                (j := client.get(f"/jobs/{video_id}").json())["webhooks"]
                and j["webhooks"][0]["status"] == "failed"
                and j
            ),
            timeout=60,
            what="the refused delivery",
        )
    attempts = job["webhooks"][0]["attempts"]
    assert len(attempts) == 1 and attempts[0]["status_code"] is None  # refused, not retried
    assert "non-public address" in attempts[0]["error"]
    assert receiver.on("/hooks/private") == []


def test_callback_without_a_webhook_secret_is_refused(stack: Any, clip: Path) -> None:
    with stack.client(KEY_A) as client:
        response = upload(client, clip, callback_url="https://example.com/hook")
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "callbacks_disabled"


def test_signature_helpers_match_the_documented_scheme() -> None:
    from core.webhooks import sign, verify

    body = b'{"event":"compress.done"}'
    header = sign(SECRET, 1_700_000_000, body)
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify(SECRET, header, body, now=1_700_000_100)
    assert not verify(SECRET, header, body + b" ", now=1_700_000_100)
    assert not verify("other", header, body, now=1_700_000_100)
    assert not verify(SECRET, header, body, now=1_700_001_000)  # too old


# --------------------------------------------------------------------------------------------
# metadata and GET /videos


def test_metadata_is_validated(stack: Any, clip: Path) -> None:
    with stack.client(KEY_A) as client:
        not_json = upload(client, clip, metadata="{order: 1}")
        not_object = upload(client, clip, metadata="[1, 2]")
        too_large = upload(client, clip, metadata=json.dumps({"x": "y" * 4100}))
    for response in (not_json, not_object):
        assert response.status_code == 422, response.text
        assert response.json()["code"] == "invalid_metadata"
        assert response.json()["errors"][0]["field"] == "metadata"
    assert too_large.status_code == 400 and too_large.json()["code"] == "field_too_large"


def test_listing_newest_first_with_cursor_and_status(
    service_stacks: Callable[..., Any], clip: Path, wait_for: Callable[..., Any]
) -> None:
    listing_stack = service_stacks(workers=0, api_keys=f"{KEY_A}:lister,{KEY_B}:other")
    with listing_stack.client(KEY_A) as client, listing_stack.client(KEY_B) as other:
        done = [upload(client, clip, metadata=json.dumps({"n": n})).json()["id"] for n in range(3)]
        other_id = upload(other, clip).json()["id"]
        worker = listing_stack.start_worker()
        for video_id in done:
            assert wait_job(client, video_id, wait_for)["status"] == "done"
        wait_job(other, other_id, wait_for)
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        queued = [upload(client, clip).json()["id"] for _ in range(2)]
        deleted = upload(client, clip).json()["id"]
        assert client.delete(f"/videos/{deleted}").status_code == 204

        def pages(**params: Any) -> list[list[dict[str, Any]]]:
            found, cursor = [], None
            while True:
                response = client.get("/videos", params={**params, **({"cursor": cursor} if cursor else {})})
                assert response.status_code == 200, response.text
                body = response.json()
                found.append(body["videos"])
                cursor = body["next_cursor"]
                if cursor is None:
                    return found
                assert len(found) < 10

        newest_first = list(reversed(done + queued))
        by_two = pages(limit=2)
        assert [[v["id"] for v in page] for page in by_two] == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
        everything = [v for page in pages() for v in page]
        assert [v["id"] for v in everything] == newest_first  # other tenant's and the deleted one absent
        first_done = next(v for v in everything if v["id"] == done[0])
        assert first_done["status"] == "done" and first_done["metadata"] == {"n": 0}
        assert first_done["sizes"]["bundle_bytes"] > 0 and first_done["links"]["status"] == f"/jobs/{done[0]}"
        assert [v["id"] for p in pages(status="done", limit=2) for v in p] == list(reversed(done))
        assert [v["id"] for p in pages(status="queued") for v in p] == list(reversed(queued))
        assert [v["id"] for p in pages(status="failed") for v in p] == []
        assert [v["id"] for v in other.get("/videos").json()["videos"]] == [other_id]
        for params in ({"cursor": "bm90LWEtY3Vyc29y"}, {"limit": 0}, {"limit": 101}, {"status": "lost"}):
            response = client.get("/videos", params=params)
            assert response.status_code == 422, (params, response.text)
            assert response.headers["content-type"] == "application/problem+json"


# --------------------------------------------------------------------------------------------
# offline docs


@pytest.mark.parametrize(("page", "assets"), [("/docs", 3), ("/redoc", 2)])
def test_docs_pages_reference_no_external_host(stack: Any, page: str, assets: int) -> None:
    import re

    with stack.client() as client:
        response = client.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        html = response.text
        # Nothing absolute: no scheme, no protocol-relative URL (a CDN, fonts, the validator badge).
        assert re.findall(r"(?i)(?:https?:)?//[a-z0-9.-]+", html) == []
        urls = set(re.findall(r'(?:src|href)="([^"]+)"', html))
        assert len(urls) == assets, urls
        for url in urls:
            assert url.startswith("/docs-assets/"), url
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert len(asset.content) > 1000, url
            assert client.head(url).status_code == 200
        spec = re.search(r"""(?:url: '|spec-url=")(/[^'"]+)""", html)
        assert spec is not None and spec.group(1) == "/openapi.json"
        openapi = client.get(spec.group(1))
        assert openapi.status_code == 200 and "/videos" in openapi.json()["paths"]
    if page == "/docs":
        assert '"validatorUrl": null' in html


# --------------------------------------------------------------------------------------------
# client and CLI


def test_client_listing_and_cli_flags(
    service_stacks: Callable[..., Any], clip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    from framers.client import FramersClient
    from service.commands import register

    cli_stack = service_stacks(workers=0, api_keys=f"{KEY_A}:cli-tenant")
    parser = argparse.ArgumentParser(prog="framers")
    register(parser.add_subparsers(dest="command", required=True))
    argv = ["remote-compress", str(clip), "--url", cli_stack.url, "--api-key", KEY_A]
    argv += ["--idempotency-key", "cli-0006", "--metadata", '{"job": "cli"}']
    ids = []
    for _ in range(2):
        args = parser.parse_args(argv)
        assert args.func(args) == 0
        ids.append(json.loads(capsys.readouterr().out)["id"])
    assert ids[0] == ids[1]
    args = parser.parse_args([*argv[:-2], "--metadata", "{not json"])
    assert args.func(args) == 2
    with FramersClient(cli_stack.url, api_key=KEY_A) as client:
        second = client.compress(clip, metadata={"job": "client"})["id"]
        page = client.list_videos(limit=1)
        assert [v["id"] for v in page["videos"]] == [second] and page["next_cursor"]
        assert [v["id"] for v in client.iter_videos(page_size=1)] == [second, ids[0]]
        assert [v["metadata"] for v in client.iter_videos(status="queued")] == [{"job": "client"}, {"job": "cli"}]
        assert client.status(ids[0])["metadata"] == {"job": "cli"}
