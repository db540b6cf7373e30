"""Helpers shared by the reliability tests (tests/test_reliability_*.py): HTTP shortcuts, a raw
socket for bodies that stall, a subprocess gateway that can be SIGKILLed, and a storage watcher
that fails the test if a half-written object ever becomes visible."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
FAULT_WORKER = str(Path(__file__).with_name("_reliability_worker.py"))


def upload(client: httpx.Client, path: Path, *, field: str = "file", filename: str | None = None, **options: Any):
    with open(path, "rb") as f:
        return client.post("/compress", files={field: (filename or path.name, f, "video/mp4")}, data=options)


def job(client: httpx.Client, video_id: str) -> dict[str, Any]:
    body: dict[str, Any] = client.get(f"/jobs/{video_id}").json()
    return body


def wait_job(client: httpx.Client, video_id: str, wait_for: Callable[..., Any], timeout: float = 60) -> dict[str, Any]:
    def finished() -> dict[str, Any] | None:
        state = job(client, video_id)
        return state if state["status"] in ("done", "failed") else None

    result: dict[str, Any] = wait_for(finished, timeout=timeout, what=f"job {video_id}")
    return result


def wait_video(
    client: httpx.Client, video_id: str, wait_for: Callable[..., Any], timeout: float = 60, **params: str
) -> httpx.Response:
    """GET /reconstruct until it answers 200 (fails on anything but 200/202)."""

    def ready() -> httpx.Response | None:
        response = client.get(f"/reconstruct/{video_id}", params=params)
        assert response.status_code in (200, 202), response.text
        return response if response.status_code == 200 else None

    result: httpx.Response = wait_for(ready, timeout=timeout, what=f"reconstruction of {video_id}")
    return result


def multipart_head(boundary: str, filename: str = "clip.mp4", field: str = "file") -> bytes:
    return (
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    ).encode()


def open_raw_upload(
    url: str, content_length: int, first_bytes: bytes, boundary: str, headers: dict[str, str] | None = None
) -> socket.socket:
    """POST /compress by hand: headers (with a Content-Length) and the first bytes of the body."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    head = (
        f"POST /compress HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {content_length}\r\n\r\n"
    ).encode()
    sock.sendall(head + first_bytes)
    return sock


def read_response(sock: socket.socket, timeout: float) -> bytes:
    """Everything the server sends until it closes the connection (or the timeout)."""
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except TimeoutError:
        pass
    return data


def read_head(sock: socket.socket, timeout: float) -> bytes:
    """The status line and headers of the answer (without waiting for the connection to close)."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def storage_keys(settings: Any) -> list[str]:
    from core.storage import LocalStorage

    storage = LocalStorage(settings.local_storage_dir)
    return sorted([*storage.list("videos/"), *storage.list("pending/")])


def stored_ids(settings: Any) -> set[str]:
    """Videos that have anything in storage (object names inside a video change while a worker
    finishes a job, so tests that run beside a worker compare these)."""
    return {key.split("/")[1] for key in storage_keys(settings)}


class GatewayProcess:
    """`uvicorn service.main:app` in a child process (so that it can be SIGKILLed), settings from
    the environment like a deployment; output goes to `log`."""

    def __init__(self, settings: Any, log: Path, port: int | None = None, env: dict[str, str] | None = None) -> None:
        from service.redis_server import free_port

        self.settings = settings
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> GatewayProcess:
        env = self.settings.worker_env()
        env["FRAMERS_API_KEYS"] = self.settings.api_keys.get_secret_value()
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        env.update(self.env)
        argv = [sys.executable, "-m", "uvicorn", "service.main:app", "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the gateway exited: {self.log.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class StorageWatcher(threading.Thread):
    """Polls a video's folder in local storage while jobs run. Every object it sees must be one of
    the documented names and complete: a bundle that opens, a video whose frame count is right.
    A temp file, a partial bundle or a truncated mp4 ever visible is recorded as a violation."""

    ALLOWED = ("record.json", "bundle.frs", "reconstructions/")

    def __init__(self, settings: Any, video_id: str, frames: int, interval: float = 0.05) -> None:
        super().__init__(name="storage-watcher", daemon=True)
        self.root = Path(settings.local_storage_dir) / "videos" / video_id
        self.frames = frames
        self.interval = interval
        self.stop_event = threading.Event()
        self.violations: list[str] = []
        self.checked: dict[str, int] = {}  # object -> times seen complete
        self._seen: dict[Path, tuple[int, int]] = {}

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            if not self.root.is_dir():
                continue
            for path in sorted(self.root.rglob("*")):
                if path.is_file():
                    self._check(path)

    def _check(self, path: Path) -> None:
        rel = path.relative_to(self.root).as_posix()
        if not (rel.startswith(self.ALLOWED) or rel.startswith("source.")):
            self.violations.append(f"unexpected object {rel}")
            return
        try:
            stat = path.stat()
            data = path.read_bytes()
        except FileNotFoundError:
            return  # replaced or deleted between listing and reading: fine
        if self._seen.get(path) == (stat.st_ino, stat.st_size):
            return
        self._seen[path] = (stat.st_ino, stat.st_size)
        problem = self._problem(rel, data)
        if problem:
            self.violations.append(f"{rel}: {problem}")
        else:
            self.checked[rel] = self.checked.get(rel, 0) + 1

    def _problem(self, rel: str, data: bytes) -> str | None:
        import json
        import tempfile

        if rel.endswith(".json"):
            try:
                json.loads(data)
            except ValueError as exc:
                return f"not complete JSON ({exc})"
            return None
        if rel == "bundle.frs" or rel.endswith(".mp4"):
            with tempfile.TemporaryDirectory() as tmp:
                copy = Path(tmp) / Path(rel).name
                copy.write_bytes(data)
                try:
                    if rel == "bundle.frs":
                        from framers import bundle as fb

                        with fb.open_bundle(copy) as folder:
                            manifest = fb.read_manifest(folder)
                        frames = manifest.n_frames
                    else:
                        from framers.video import count_packets

                        frames = count_packets(copy)
                except Exception as exc:
                    return f"unreadable ({type(exc).__name__}: {exc})"
            if frames != self.frames:
                return f"{frames} frames, expected {self.frames}"
        return None

    def stop(self) -> None:
        self.stop_event.set()
        self.join(5)


def raw_request(url: str, method: str, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request with the request target sent exactly as given (no client-side normalisation
    of `..` or percent-escapes); returns (status, body)."""
    host, port = url.removeprefix("http://").split(":")
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}:{port}", "Connection: close", "Content-Length: 0"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        data = read_response(sock, timeout=30)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    return int(status_line[1]), body
