"""Gateway metrics across processes (issue 18): prometheus_client's multiprocess mode as the
gateway uses it, with real processes writing real metric files and a real Redis; the default
number of gateway processes. `framers serve` end to end: tests/test_service_cli.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis

from core.settings import Settings
from service.metrics import (
    MULTIPROC_ENV,
    GatewayMetrics,
    clear_multiprocess_dir,
    forget_dead_processes,
)
from service.serve import gateway_metrics_dir, gateway_processes

ROOT = Path(__file__).resolve().parent.parent

# One gateway process's share: its own GatewayMetrics, multiprocess mode on from the environment
# (as in a process uvicorn spawned), ``argv[2]`` requests of GET /jobs/{video_id}.
GATEWAY_PROCESS = """
import sys
from redis import Redis
from service.metrics import GatewayMetrics, active_multiprocess_dir
folder = active_multiprocess_dir()
assert folder is not None, "multiprocess mode is off"
metrics = GatewayMetrics(Redis.from_url(sys.argv[1]), folder)
for _ in range(int(sys.argv[2])):
    metrics.requests.labels("GET", "/jobs/{video_id}", "200").inc()
    metrics.latency.labels("GET", "/jobs/{video_id}").observe(0.004)
metrics.upload_bytes.inc(100)
"""

# A process with a live gauge (one value per running process) and a counter; prints its pid.
LIVE_GAUGE_PROCESS = """
import os
from prometheus_client import CollectorRegistry, Counter, Gauge
registry = CollectorRegistry()
Gauge("framers_test_inflight", "x", multiprocess_mode="livesum", registry=registry).set(3)
Counter("framers_test_events", "x", registry=registry).inc(2)
print(os.getpid())
"""


def _run(code: str, folder: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k.lower() != MULTIPROC_ENV.lower()}
    env |= {MULTIPROC_ENV: str(folder), "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [(s.labels, s.value) for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def test_metrics_are_summed_over_processes_and_redis_families_appear_once(
    tmp_path: Path, redis_url: str
) -> None:
    folder = tmp_path / "metrics"
    clear_multiprocess_dir(folder)
    _run(GATEWAY_PROCESS, folder, redis_url, "7")
    _run(GATEWAY_PROCESS, folder, redis_url, "5")
    assert len(list(folder.glob("counter_*.db"))) == 2  # one file per process

    text = GatewayMetrics(Redis.from_url(redis_url), folder).render().decode()
    route = {"method": "GET", "route": "/jobs/{video_id}"}
    assert _samples(text, "framers_http_requests_total") == [(route | {"status": "200"}, 12.0)]
    assert _samples(text, "framers_http_request_duration_seconds_count") == [(route, 12.0)]
    assert _samples(text, "framers_http_request_duration_seconds_sum")[0][1] == pytest.approx(12 * 0.004)
    assert _samples(text, "framers_upload_bytes_total") == [({}, 200.0)]
    # Read from Redis by the scraped process alone: once, without a pid label.
    assert _samples(text, "framers_redis_up") == [({}, 1.0)]
    assert text.count("# TYPE framers_queue_jobs gauge") == 1
    assert 'pid="' not in text


def test_one_process_without_a_folder_reports_its_own_registry(redis_url: str) -> None:
    metrics = GatewayMetrics(Redis.from_url(redis_url))
    metrics.requests.labels("GET", "/healthz", "200").inc(3)
    text = metrics.render().decode()
    assert _samples(text, "framers_http_requests_total") == [
        ({"method": "GET", "route": "/healthz", "status": "200"}, 3.0)
    ]
    assert _samples(text, "framers_redis_up") == [({}, 1.0)]


def test_dead_processes_lose_their_live_gauges_but_keep_their_counts(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    clear_multiprocess_dir(folder)
    pid = int(_run(LIVE_GAUGE_PROCESS, folder))
    gauge_file = folder / f"gauge_livesum_{pid}.db"
    assert gauge_file.exists()

    assert forget_dead_processes(folder, live_pids={pid}) == []  # still counted as alive
    assert gauge_file.exists()
    assert forget_dead_processes(folder, live_pids=set()) == [pid]
    assert not gauge_file.exists()
    merged = {s.name: s.value for m in MultiProcessCollector(None, path=str(folder)).collect() for s in m.samples}
    assert merged == {"framers_test_events_total": 2.0}  # the counter stays in the sum


def test_clearing_removes_only_metric_files(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    clear_multiprocess_dir(folder)  # created when missing
    (folder / "counter_1.db").write_bytes(b"x")
    (folder / "keep.txt").write_text("not ours")
    clear_multiprocess_dir(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["keep.txt"]


def test_serve_makes_a_private_folder_only_for_several_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MULTIPROC_ENV, raising=False)
    monkeypatch.delenv(MULTIPROC_ENV.lower(), raising=False)
    with gateway_metrics_dir(1) as folder:
        assert folder is None and MULTIPROC_ENV not in os.environ
    with gateway_metrics_dir(2) as folder:
        assert folder is not None and folder.is_dir() and not any(folder.iterdir())
        assert os.environ[MULTIPROC_ENV] == str(folder)  # for the processes uvicorn spawns
        assert folder.stat().st_mode & 0o777 == 0o700
    assert not folder.exists() and MULTIPROC_ENV not in os.environ


@pytest.mark.parametrize("processes", [1, 2])
def test_serve_uses_and_empties_a_folder_the_deployment_gives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, processes: int
) -> None:
    given = tmp_path / "given"
    given.mkdir()
    (given / "counter_99.db").write_bytes(b"an earlier run")
    monkeypatch.setenv(MULTIPROC_ENV, str(given))
    with gateway_metrics_dir(processes) as folder:
        assert folder == given and not any(given.iterdir())
    assert given.is_dir()  # the deployment's: kept


def test_gateway_processes_default_is_two_where_there_are_two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    auto = Settings(gateway_workers=None)
    assert [gateway_processes(auto, cores=c) for c in (1, 2, 16)] == [1, 2, 2]
    assert gateway_processes(Settings(gateway_workers=1), cores=16) == 1  # explicit 1 is honoured
    assert gateway_processes(Settings(gateway_workers=3), cores=2) == 3
    for raw, expected in (("", None), ("auto", None), ("1", 1), ("4", 4)):
        monkeypatch.setenv("FRAMERS_GATEWAY_WORKERS", raw)
        assert Settings().gateway_workers == expected
    monkeypatch.setenv("FRAMERS_GATEWAY_WORKERS", "0")
    with pytest.raises(ValueError):
        Settings()
