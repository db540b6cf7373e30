"""`framers serve`: Redis + gateway + N workers on one machine, one command, Ctrl-C stops all.

- Redis: a private redis-server under DATA_DIR/redis (append-only file, so queued work survives
  a restart), unless FRAMERS_REDIS_URL / --redis-url names one.
- Workers: N `python -m workers.main` children, restarted if they die.
- Gateway: uvicorn in this process, or ``gateway_workers`` uvicorn processes on one socket (default
  min(2, cores), measured in BENCHMARKS.md §7c), whose Prometheus metrics are then summed through a
  private multiprocess folder (service.metrics), removed on exit.
Shutdown (SIGINT/SIGTERM): the gateway stops accepting, workers get SIGTERM (finish the current
job) and are killed after a grace period (their jobs are then re-run on the next start), Redis
stops last.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from uvicorn import Config
from uvicorn.supervisors import Multiprocess

from core.settings import Settings
from service.auth import is_loopback
from service.metrics import MULTIPROC_ENV, clear_multiprocess_dir, forget_dead_processes, multiprocess_dir_from_env
from service.redis_server import RedisServer, RedisServerError
from workers import limits

log = logging.getLogger("framers.serve")

WORKER_STOP_GRACE_S = 10.0
RESTART_BACKOFF_S = (1, 2, 5, 10, 30)


class WorkerPool:
    """N worker child processes, restarted with backoff when one dies."""

    def __init__(self, settings: Settings, count: int) -> None:
        self.settings = settings
        self.count = count
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * count
        self.restarts = [0] * count
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)

    def _spawn(self, index: int) -> subprocess.Popen[bytes]:
        env = self.settings.worker_env()
        env["FRAMERS_PARENT_PID"] = str(os.getpid())  # the worker exits if we vanish
        # Workers keep no Prometheus metrics (theirs go to Redis, core.job_metrics): the gateway's
        # metrics folder is not theirs to write into.
        env.pop(MULTIPROC_ENV, None)
        # Project root on the path, so an uninstalled checkout works too.
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        proc = subprocess.Popen([sys.executable, "-m", "workers.main"], env=env, start_new_session=True)
        log.info("worker %d started (pid %d)", index, proc.pid)
        return proc

    def start(self) -> None:
        with self._lock:
            for i in range(self.count):
                self.procs[i] = self._spawn(i)
        self._thread.start()

    def _supervise(self) -> None:
        next_start = [0.0] * self.count
        while not self._stopping.wait(1.0):
            with self._lock:
                for i, proc in enumerate(self.procs):
                    if self._stopping.is_set():
                        return
                    if proc is not None and proc.poll() is None:
                        continue
                    now = time.monotonic()
                    if proc is not None:
                        log.warning("worker %d (pid %d) exited with %s; restarting", i, proc.pid, proc.returncode)
                        delay = RESTART_BACKOFF_S[min(self.restarts[i], len(RESTART_BACKOFF_S) - 1)]
                        self.restarts[i] += 1
                        self.procs[i] = None
                        next_start[i] = now + delay
                    if now >= next_start[i]:
                        self.procs[i] = self._spawn(i)

    def stop(self, grace_s: float = WORKER_STOP_GRACE_S) -> None:
        self._stopping.set()
        with self._lock:
            live = [p for p in self.procs if p is not None and p.poll() is None]
            for proc in live:
                proc.terminate()  # RQ warm shutdown: finish the current job
            deadline = time.monotonic() + grace_s
            for proc in live:
                try:
                    proc.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    log.warning(
                        "worker pid %d still busy after %.0f s; killing it (its job will re-run)", proc.pid, grace_s
                    )
                    proc.kill()
                    proc.wait()


def gateway_processes(settings: Settings, cores: int | None = None) -> int:
    """How many uvicorn processes `framers serve` runs for the gateway: FRAMERS_GATEWAY_WORKERS
    when set (1 allowed), else min(2, ``cores``) (default: this process's CPU affinity).

    Why 2 (issue 18, BENCHMARKS.md §7c): GET /jobs at 200 req/s, idle p99 4.1 ms with two processes
    against 20.5 ms with one; more than two was not measured, and one core gains nothing from two."""
    if settings.gateway_workers is not None:
        return settings.gateway_workers
    return max(1, min(2, cores or limits.available_cores()))


def serve(settings: Settings, *, workers: int = 2, redis_url_given: bool = False) -> int:
    """Run Redis (unless ``redis_url_given``), ``workers`` worker processes and the gateway until
    SIGINT/SIGTERM; returns the exit status (0, or 1 when our Redis could not start)."""
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not settings.auth_enabled and not is_loopback(settings.host):
        log.warning(
            "no API keys configured (FRAMERS_API_KEYS): listening on 127.0.0.1 instead of %s; "
            "configure keys to serve other machines",
            settings.host,
        )
        settings = settings.replace(host="127.0.0.1")
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    stop_requested = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop_requested.set()

    # Our handlers stay in place around uvicorn's, so a signal can never kill us mid-cleanup.
    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    redis_server: RedisServer | None = None
    pool: WorkerPool | None = None
    try:
        if not redis_url_given:
            redis_server = RedisServer(settings.data_dir / "redis")
            try:
                url = redis_server.start()
            except RedisServerError as exc:
                log.error("%s", exc)
                return 1
            settings = settings.replace(redis_url=url)
            log.info("redis-server started at %s (data in %s)", url, redis_server.data_dir)
        # The thread budget is the workers' alone: gateway processes are mostly idle, and they run
        # at a higher priority than the workers anyway (worker_nice).
        if not settings.worker_threads:
            settings = settings.replace(worker_threads=limits.threads_per_worker(workers))
        log.info("%d worker(s) at niceness +%d, %d thread(s) each", workers, settings.worker_nice,
                 settings.worker_threads)
        pool = WorkerPool(settings, workers)
        pool.start()
        settings = settings.replace(gateway_workers=gateway_processes(settings))
        if not stop_requested.is_set():
            log.info("gateway on http://%s:%d (docs at /docs), %d process(es)", settings.host, settings.port,
                     settings.gateway_workers)
            with gateway_metrics_dir(settings.gateway_workers or 1):
                _run_gateway(settings, redis_server)
        return 0
    finally:
        log.info("stopping")
        if pool is not None:
            pool.stop()
        if redis_server is not None:
            redis_server.stop()
        log.info("stopped")


@contextmanager
def gateway_metrics_dir(processes: int) -> Iterator[Path | None]:
    """The folder of prometheus_client's multiprocess mode for a gateway of ``processes`` processes,
    ready (empty of earlier runs' files) before any gateway process starts; None: not needed.

    - PROMETHEUS_MULTIPROC_DIR set by the deployment: that folder, whatever ``processes`` is (the
      library in this process already runs in that mode); kept on exit, emptied of ``*.db`` now.
    - otherwise, more than one process: a fresh private folder (mkdtemp: mode 0700), exported in
      os.environ for the gateway processes, which uvicorn *spawns* (they import prometheus_client
      after this, as the mode requires); removed, and unexported, on exit.
    - otherwise: None, one process keeps its metrics in memory as before."""
    given = multiprocess_dir_from_env()
    if given is not None:
        clear_multiprocess_dir(given)
        yield given
        return
    if processes <= 1:
        yield None
        return
    private = Path(tempfile.mkdtemp(prefix="framers-metrics-"))
    os.environ[MULTIPROC_ENV] = str(private)
    try:
        yield private
    finally:
        os.environ.pop(MULTIPROC_ENV, None)
        shutil.rmtree(private, ignore_errors=True)


class GatewaySupervisor(Multiprocess):
    """uvicorn's supervisor of the gateway processes, plus prometheus_client's bookkeeping for the
    processes that ended (crashed or hung and replaced, retired by SIGHUP or SIGTTOU, stopped)."""

    def __init__(self, config: Config, sockets: list[socket.socket], metrics_dir: Path | None) -> None:
        super().__init__(config, sockets)
        self.metrics_dir = metrics_dir

    def keep_subprocess_alive(self) -> None:
        super().keep_subprocess_alive()  # every 0.5 s, after signals were handled
        self._forget_dead()

    def run(self) -> None:
        try:
            super().run()
        finally:
            self._forget_dead()

    def _forget_dead(self) -> None:
        if self.metrics_dir is None:
            return
        live = {p.pid for p in self.processes if p.pid is not None and p.exitcode is None}
        for pid in forget_dead_processes(self.metrics_dir, live):
            log.info("gateway process %d ended: its live gauges are dropped from /metrics", pid)


def _run_gateway(settings: Settings, redis_server: RedisServer | None) -> None:
    """uvicorn in this process, or ``gateway_workers`` uvicorn processes sharing one socket (each
    builds its app from the environment, so this process's settings are exported first)."""
    import uvicorn

    from service.main import create_app

    level = settings.log_level.lower()
    processes = settings.gateway_workers or 1
    if processes == 1:
        server = uvicorn.Server(Config(create_app(settings), host=settings.host, port=settings.port, log_level=level))
        if redis_server is not None:
            _watch_redis(redis_server, server)
        server.run()
        return
    env = settings.worker_env()
    env["FRAMERS_API_KEYS"] = settings.api_keys.get_secret_value()  # workers get none; the gateway its own
    os.environ.update({k: v for k, v in env.items() if k.startswith("FRAMERS_")})
    config = Config("service.main:create_app", factory=True, host=settings.host, port=settings.port,
                    workers=processes, log_level=level)
    supervisor = GatewaySupervisor(config, [config.bind_socket()], multiprocess_dir_from_env())
    if redis_server is not None:
        _watch_redis(redis_server, supervisor)
    supervisor.run()


def _watch_redis(redis_server: RedisServer, server: object) -> None:
    """If our Redis dies nothing works: stop the gateway so the whole command exits visibly."""

    def watch() -> None:
        while redis_server.alive():
            time.sleep(1.0)
        exit_flag = getattr(server, "should_exit", True)
        if isinstance(exit_flag, threading.Event):  # uvicorn's multi-process supervisor
            log.error("redis-server exited unexpectedly; shutting down")
            exit_flag.set()
        elif not exit_flag:
            log.error("redis-server exited unexpectedly; shutting down")
            server.should_exit = True  # type: ignore[attr-defined]

    threading.Thread(target=watch, name="redis-watch", daemon=True).start()
