"""`framers serve` / `worker` / `remote-*` verbs: registration, and one real serve session."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.commands import register

ROOT = Path(__file__).resolve().parent.parent
# What the `framers` console script does with our entry point, without needing an install.
DRIVER = (
    "import argparse, sys; from service.commands import register; "
    "p = argparse.ArgumentParser(prog='framers'); s = p.add_subparsers(dest='command', required=True); "
    "register(s); a = p.parse_args(); sys.exit(a.func(a))"
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="framers")
    register(p.add_subparsers(dest="command", required=True))
    return p


def run_verb(*argv: str) -> int:
    args = parser().parse_args(list(argv))
    return int(args.func(args))


def test_verbs_are_registered() -> None:
    p = parser()
    args = p.parse_args(["serve", "--port", "9000", "--workers", "3", "--data-dir", "/tmp/x"])
    assert (args.port, args.workers, args.data_dir) == (9000, 3, "/tmp/x") and callable(args.func)
    args = p.parse_args(["worker", "--redis-url", "redis://h:1/0", "--queues", "reconstruct"])
    assert args.queues == ["reconstruct"] and callable(args.func)
    with pytest.raises(SystemExit):
        p.parse_args(["worker", "--queues", "nonsense"])
    for argv in (
        ["remote-compress", "a.mp4", "--url", "http://x"],
        ["remote-status", "id"],
        ["remote-fetch", "id", "-o", "out.mp4"],
    ):
        assert callable(p.parse_args(argv).func)


def test_framers_console_script_sees_the_plugin() -> None:
    from importlib.metadata import entry_points

    if not any(e.name == "service" for e in entry_points(group="framers.commands")):
        pytest.skip("the project is not installed (pip install -e .): no entry points to check")
    from framers.cli import build_parser

    args = build_parser().parse_args(["serve", "--workers", "1"])
    assert args.command == "serve"


def _children_of(pid: int) -> list[int]:
    """Processes started by `framers serve` (workers carry FRAMERS_PARENT_PID in their env)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if f"FRAMERS_PARENT_PID={pid}".encode() in (proc / "environ").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def _niceness(pid: int) -> int:
    """Field 19 of /proc/<pid>/stat (after the parenthesised command name)."""
    stat = (Path("/proc") / str(pid) / "stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


def _environ(pid: int) -> dict[str, str]:
    raw = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def _direct_children(pid: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                stat = (proc / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(proc.name))
    return found


@contextmanager
def _serve(tmp_path: Path, wait_for: Callable[..., Any], env_overrides: dict[str, str],
           *args: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """`framers serve` (one worker, data under tmp_path/data) with only ``env_overrides`` of the
    FRAMERS_ variables; yields (process, url) once /readyz is 200; stops it with SIGTERM and
    asserts exit code 0. The process's output is in ``proc.stdout`` afterwards."""
    from service.redis_server import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMERS_")} | env_overrides
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, "serve", *args, "--port", str(port), "--workers", "1", "--data-dir",
         str(tmp_path / "data")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:

        def ready() -> bool:
            assert proc.poll() is None, proc.stdout.read().decode() if proc.stdout else ""
            try:
                return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(ready, timeout=90, interval=0.2, what="framers serve to become ready")
        yield proc, url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert code == 0, proc.stdout.read().decode() if proc.stdout else ""


def _gateways(pid: int) -> list[int]:
    """The gateway processes uvicorn's supervisor (in `framers serve`, ``pid``) spawned."""
    return [p for p in _direct_children(pid) if b"spawn_main" in (Path("/proc") / str(p) / "cmdline").read_bytes()]


def _healthz_count(families: Any) -> float:
    """framers_http_requests_total{route="/healthz"} summed over statuses; 0 when absent."""
    return sum(s.value for f in families for s in f.samples
               if s.name == "framers_http_requests_total" and s.labels.get("route") == "/healthz")


@pytest.mark.skipif(sys.platform != "linux", reason="uses /proc")
def test_serve_runs_several_gateway_processes(tmp_path: Path, wait_for: Callable[..., Any]) -> None:
    """FRAMERS_GATEWAY_WORKERS=2: two uvicorn processes answer on one port, with the settings
    `framers serve` made (its own Redis); /metrics counts the requests of both, and reports the
    Redis-derived families once; SIGTERM stops them all and removes the private metrics folder."""
    from prometheus_client.multiprocess import MultiProcessCollector
    from prometheus_client.parser import text_string_to_metric_families

    env = {"FRAMERS_LOG_LEVEL": "WARNING", "FRAMERS_GATEWAY_WORKERS": "2", "FRAMERS_API_KEYS": "k1:acme"}
    with _serve(tmp_path, wait_for, env) as (proc, url):
        gateways = _gateways(proc.pid)
        assert len(gateways) == 2, gateways  # uvicorn's supervisor spawns one process per gateway worker
        assert httpx.get(f"{url}/videos", timeout=5).status_code == 401  # the keys reached the gateways
        assert httpx.get(f"{url}/videos", headers={"X-API-Key": "k1"}, timeout=5).status_code == 200

        folders = {_environ(p).get("PROMETHEUS_MULTIPROC_DIR") for p in gateways}
        assert len(folders) == 1 and None not in folders, folders  # one shared folder, made by serve
        folder = Path(folders.pop() or "")
        assert folder.is_dir() and folder.stat().st_mode & 0o077 == 0  # private (mkdtemp)

        def share(pid: int) -> float:
            """This process's own /healthz count, from its file (what it alone would report)."""
            file = folder / f"counter_{pid}.db"
            return _healthz_count(MultiProcessCollector.merge([str(file)])) if file.exists() else 0.0

        # A new connection per request: the kernel gives each to whichever process accepts first
        # (measured: ~half each). Until both answered some, at most 600 requests.
        sent = 0
        while sent < 600 and (sent == 0 or min(share(p) for p in gateways) == 0):
            for _ in range(30):
                assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
            sent += 30
        shares = [share(p) for p in gateways]
        assert min(shares) > 0, f"one process answered all {sent} requests: {shares}"

        def scrape() -> str:
            return httpx.get(f"{url}/metrics", timeout=5).text

        # Counted after the answer is sent, so the last few may land a moment later.
        wait_for(lambda: _healthz_count(text_string_to_metric_families(scrape())) >= sent, timeout=10)
        text = scrape()
        assert _healthz_count(text_string_to_metric_families(text)) == sent  # the sum, not a share
        # read again once all are counted: ``shares`` was read while the last few could still be
        # landing (a CI run: 12 + 17 of 30)
        assert sum(share(p) for p in gateways) == sent
        lines = text.splitlines()
        assert [ln for ln in lines if ln.startswith("framers_redis_up")] == ["framers_redis_up 1.0"]
        assert lines.count("# TYPE framers_queue_jobs gauge") == 1
        assert 'pid="' not in text  # no per-process series
    assert not [p for p in gateways if (Path("/proc") / str(p)).exists()]  # none left behind
    assert not folder.exists()  # serve removed its metrics folder


@pytest.mark.skipif(sys.platform != "linux", reason="uses /proc")
def test_serve_uses_the_deployments_metrics_folder_with_one_process(
    tmp_path: Path, wait_for: Callable[..., Any]
) -> None:
    """PROMETHEUS_MULTIPROC_DIR given and one gateway process: serve empties the folder of an
    earlier run's files first, the gateway (in serve itself) counts there, the folder stays."""
    given = tmp_path / "prom"
    given.mkdir()
    (given / "counter_1.db").write_bytes(b"an earlier run's file")  # unreadable: /metrics would fail
    env = {"FRAMERS_LOG_LEVEL": "WARNING", "FRAMERS_GATEWAY_WORKERS": "1", "PROMETHEUS_MULTIPROC_DIR": str(given)}
    with _serve(tmp_path, wait_for, env) as (proc, url):
        assert _gateways(proc.pid) == []  # uvicorn in serve itself
        for _ in range(5):
            assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert not (given / "counter_1.db").exists()
        assert (given / f"counter_{proc.pid}.db").exists()

        def scrape() -> str:
            response = httpx.get(f"{url}/metrics", timeout=5)
            assert response.status_code == 200
            return response.text

        from prometheus_client.parser import text_string_to_metric_families

        wait_for(lambda: _healthz_count(text_string_to_metric_families(scrape())) == 5, timeout=10)
        assert scrape().count("\nframers_redis_up ") == 1
    assert given.is_dir()


@pytest.mark.skipif(sys.platform != "linux", reason="uses /proc")
def test_serve_runs_everything_and_stops_cleanly(
    clip: Path, tmp_path: Path, wait_for: Callable[..., Any], capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    env_overrides = {"FRAMERS_LOG_LEVEL": "WARNING", "FRAMERS_RETRY_AFTER_S": "1", "FRAMERS_API_KEYS": ""}
    with _serve(tmp_path, wait_for, env_overrides, "--host", "0.0.0.0") as (proc, url):
        assert (data / "redis" / "redis.log").exists()  # its own Redis, under the data dir

        assert run_verb("remote-compress", str(clip), "--url", url, "--wait") == 0
        job = json.loads(capsys.readouterr().out)
        assert job["status"] == "done"
        assert run_verb("remote-status", job["id"], "--url", url) == 0
        assert json.loads(capsys.readouterr().out)["id"] == job["id"]
        out = tmp_path / "rec.mp4"
        assert run_verb("remote-fetch", job["id"], "-o", str(out), "--url", url, "--timeout", "60") == 0
        assert out.stat().st_size > 0
        bundle = tmp_path / "b.frs"
        assert run_verb("remote-fetch", job["id"], "-o", str(bundle), "--bundle", "--url", url) == 0
        assert bundle.stat().st_size == job["sizes"]["bundle_bytes"]
        assert run_verb("remote-status", "0" * 32, "--url", url) == 1  # a 404 is an error exit
        # a refused option (422) is a usage error, exit 2 as the local CLI's
        assert run_verb("remote-compress", str(clip), "--url", url, "--refresh-kbps", "0") == 2
        assert "refresh_kbps" in capsys.readouterr().err
        # --candidate-map reaches the service as the form field (refused here with a reconstructor that
        # would never read the map)
        assert run_verb("remote-compress", str(clip), "--url", url, "--candidate-map", "--reconstructor", "linear") == 2
        assert "candidate_map: the candidate map is made for framemae" in capsys.readouterr().err

        workers = _children_of(proc.pid)
        assert len(workers) == 1
        # issue 18: by default two gateway processes where there are two cores (one: uvicorn in serve)
        assert len(_gateways(proc.pid)) == (2 if len(os.sched_getaffinity(0)) >= 2 else 0)
        # issue 18: workers yield the CPU to the gateway and size their thread pools to the cores
        assert _niceness(workers[0]) == min(19, _niceness(proc.pid) + 10)
        worker_env = _environ(workers[0])
        assert worker_env["FRAMERS_WORKER_THREADS"] == str(len(os.sched_getaffinity(0)))  # cores / 1 worker
    output = proc.stdout.read().decode() if proc.stdout else ""
    assert "listening on 127.0.0.1 instead of 0.0.0.0" in output  # no keys: loopback only
    deadline = time.monotonic() + 10
    while _children_of(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _children_of(proc.pid) == []
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{url}/healthz", timeout=1)
