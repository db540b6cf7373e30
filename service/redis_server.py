"""A private redis-server child process (for `framers serve` and the tests).

Bound to loopback on a free port, data (append-only file) under a directory of ours, so queued
jobs survive a restart of `framers serve`.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import ConnectionError as RedisConnectionError


class RedisServerError(RuntimeError):
    """redis-server is missing or did not start."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class RedisServer:
    def __init__(
        self, data_dir: Path, *, persist: bool = True, host: str = "127.0.0.1", extra_args: tuple[str, ...] = ()
    ) -> None:
        self.data_dir = Path(data_dir)
        self.extra_args = extra_args
        self.persist = persist
        self.host = host
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self, timeout_s: float = 15.0) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerError(
                "redis-server not found: install it (apt-get install redis-server) or set FRAMERS_REDIS_URL"
            )
        self.data_dir.mkdir(parents=True, exist_ok=True)
        last_error = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = free_port(self.host)
            args = [binary, "--port", str(self.port), "--bind", self.host, "--dir", str(self.data_dir.resolve())]
            args += ["--logfile", "redis.log", "--protected-mode", "yes"]
            if self.persist:
                args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "60 1"]
            else:
                args += ["--appendonly", "no", "--save", ""]
            args += list(self.extra_args)
            # Own session: a Ctrl-C in the terminal reaches `framers serve`, which stops Redis
            # last, after the workers, instead of Redis dying under them.
            self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, start_new_session=True)
            if self._wait_ready(timeout_s):
                return self.url
            last_error = self._log_tail()
            self.stop()
        raise RedisServerError(f"redis-server did not start: {last_error}")

    def _wait_ready(self, timeout_s: float) -> bool:
        assert self.process is not None
        client = Redis(host=self.host, port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except RedisConnectionError:
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def _log_tail(self) -> str:
        log = self.data_dir / "redis.log"
        try:
            return " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        except OSError:
            return "no log"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: Redis flushes its append-only file and exits."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
