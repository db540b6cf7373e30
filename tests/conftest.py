"""Shared fixtures: a real redis-server, small generated clips, a moto S3 server, and a helper
that runs the service for real (uvicorn on a loopback port, `python -m workers.main` children).

Kept generic on purpose: other test modules can use `make_clip`, `redis_server` and
`service_stacks` without a conftest of their own.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent


# --------------------------------------------------------------------------------------------
# media


def write_clip(path: Path, *, width: int = 64, height: int = 48, frames: int = 40, fps: int = 25) -> Path:
    """An H.264 mp4 of a bright square moving over a gradient (libx264 via PyAV)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "crf": "23"}
        yy, xx = np.mgrid[0:height, 0:width]
        for i in range(frames):
            rgb = np.zeros((height, width, 3), np.uint8)
            rgb[..., 0] = (xx * 255 // max(1, width - 1)).astype(np.uint8)
            rgb[..., 1] = (yy * 255 // max(1, height - 1)).astype(np.uint8)
            rgb[..., 2] = (i * 6) % 256
            x0 = (i * 2) % max(1, width - 12)
            rgb[8:20, x0 : x0 + 12] = 255
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@pytest.fixture(scope="session")
def make_clip(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """make_clip(width=64, height=48, frames=40, fps=25) -> Path, cached per parameter set."""
    folder = tmp_path_factory.mktemp("clips")
    cache: dict[tuple[int, int, int, int], Path] = {}

    def make(width: int = 64, height: int = 48, frames: int = 40, fps: int = 25) -> Path:
        key = (width, height, frames, fps)
        if key not in cache:
            cache[key] = write_clip(
                folder / f"clip_{width}x{height}_{frames}f_{fps}.mp4",
                width=width,
                height=height,
                frames=frames,
                fps=fps,
            )
        return cache[key]

    return make


@pytest.fixture(scope="session")
def clip(make_clip: Callable[..., Path]) -> Path:
    return make_clip()


# --------------------------------------------------------------------------------------------
# redis


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A private redis-server on a free loopback port for the whole session."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    from service.redis_server import RedisServer

    server = RedisServer(tmp_path_factory.mktemp("redis"), persist=False, extra_args=("--databases", str(MAX_DBS)))
    server.start()
    yield server
    server.stop()


MAX_DBS = 256
_redis_dbs = itertools.count(1)


def _fresh_db_url(redis_server: Any) -> str:
    # A database per test / stack instead of flushing: nothing can leak between them.
    db = next(_redis_dbs)
    if db >= MAX_DBS:
        raise RuntimeError(f"more than {MAX_DBS - 1} Redis databases requested in one session")
    return f"redis://127.0.0.1:{redis_server.port}/{db}"


@pytest.fixture
def redis_url(redis_server: Any) -> str:
    """A Redis URL on an empty database of its own."""
    return _fresh_db_url(redis_server)


# --------------------------------------------------------------------------------------------
# S3 (moto server mode)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    pytest.importorskip("boto3")
    moto_server = pytest.importorskip("moto.server")
    from service.redis_server import free_port

    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


_buckets = itertools.count(1)


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> dict[str, str]:
    """A fresh bucket; returns the FRAMERS_S3_* settings for it."""
    import boto3

    name = f"framers-test-{next(_buckets)}"
    boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket=name)
    return {
        "storage_backend": "s3",
        "s3_bucket": name,
        "s3_endpoint_url": s3_endpoint,
        "s3_region": "us-east-1",
        "s3_access_key_id": "test",
        "s3_secret_access_key": "test",
    }


# --------------------------------------------------------------------------------------------
# the running service


# Fast timings for tests: short leases and maintenance so dead workers are noticed in seconds.
TEST_SETTINGS: dict[str, Any] = {
    "job_lease_s": 3,
    "maintenance_interval_s": 0.5,
    "reconcile_interval_s": 2.0,
    "retry_backoff_s": [1],
    "job_retries": 2,
    "progress_interval_s": 0.0,
    "retry_after_s": 1,
    "max_upload_bytes": 4 * 1024 * 1024,
    "log_level": "WARNING",
    # The service-mechanics tests run the fast classical methods; the shipped defaults
    # (stride + framemae) have their own end-to-end test (test_service_api.py).
    "default_selector": "uniform",
    "default_reconstructor": "linear",
    "default_target_psnr": None,
}


@dataclass
class Stack:
    """A running service: gateways (threads) and workers (child processes) on one Redis + storage."""

    settings: Any
    url: str = ""
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _servers: list[tuple[Any, threading.Thread]] = field(default_factory=list)
    _logs: list[Path] = field(default_factory=list)

    def start_gateway(self, **overrides: Any) -> str:
        import uvicorn

        from service.main import create_app
        from service.redis_server import free_port

        settings = self.settings.replace(**overrides) if overrides else self.settings
        port = free_port()
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + 15
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the gateway did not start")
            time.sleep(0.02)
        self._servers.append((server, thread))
        return f"http://127.0.0.1:{port}"

    def start_worker(
        self, *, script: list[str] | None = None, env: dict[str, str] | None = None, settings: Any = None
    ) -> subprocess.Popen[bytes]:
        """`python -m workers.main` (or `script`) with these settings in its environment."""
        full_env = (settings or self.settings).worker_env()
        full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), full_env.get("PYTHONPATH", "")) if p)
        full_env.update(env or {})
        log_path = Path(self.settings.data_dir) / f"worker-{len(self._logs)}.log"
        self._logs.append(log_path)
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, *(script or ["-m", "workers.main"])],
                env=full_env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.workers.append(proc)
        return proc

    def client(self, api_key: str | None = None, url: str | None = None) -> httpx.Client:
        headers = {"X-API-Key": api_key} if api_key else {}
        return httpx.Client(base_url=url or self.url, headers=headers, timeout=30)

    def worker_logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in self._logs if p.exists())

    def stop(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for server, thread in self._servers:
            server.should_exit = True
            thread.join(10)


@pytest.fixture(scope="session")
def service_stacks(redis_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Stack]]:
    """Factory: service_stacks(workers=1, gateway=True, **settings) -> a running Stack.

    Each stack gets its own data dir and Redis database; all are stopped at session end
    (tests that kill workers themselves are fine).
    """
    from core.settings import Settings

    stacks: list[Stack] = []

    def make(*, workers: int = 1, gateway: bool = True, **overrides: Any) -> Stack:
        data_dir = tmp_path_factory.mktemp("stack")
        values = {**TEST_SETTINGS, "data_dir": data_dir, "redis_url": _fresh_db_url(redis_server), **overrides}
        stack = Stack(settings=Settings(**values))
        stacks.append(stack)
        for _ in range(workers):
            stack.start_worker()
        if gateway:
            stack.url = stack.start_gateway()
        return stack

    yield make
    for stack in stacks:
        stack.stop()


def _wait_for(predicate: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    """Poll until predicate() is truthy; return its value or fail the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., Any]:
    """wait_for(predicate, timeout=30, interval=0.1, what="") -> predicate's truthy value."""
    return _wait_for
