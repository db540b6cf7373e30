"""Gateway memory and /healthz latency while 16 MiB many-part forms are refused (issue 20).

Starts a private redis-server and the gateway alone (``uvicorn service.main:app`` in its own
process, default settings: 2 GiB upload limit, so a 16 MiB form is parsed rather than refused by
its Content-Length), then for ``--seconds``:

- ``--clients`` threads each POST 16.5 MiB forms over and over (chunked, like ``curl -T``): the
  issue's 200,000 ``crf=20`` parts (a repeated option), 200,000 distinct names, and 20,000 extra
  file parts with long names — alternating;
- one thread GETs ``/healthz`` back to back and records each latency.

Reported: the answers (status and code) and how fast they came, /healthz p50/p95/p99/max, and the
gateway's RSS before, after and at its peak (``VmHWM`` of the gateway process).

    .venv/bin/python bench/form_flood.py --seconds 20 --clients 4 --json bench/results/form_flood.json
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from service.redis_server import RedisServer, free_port  # noqa: E402

BOUNDARY = "-" * 24 + "d74496d66958873e"  # as curl makes them


def _form(parts: list[tuple[str, str, bytes]]) -> bytes:
    chunks = []
    for kind, name, value in parts:
        filename = '; filename="x.bin"' if kind == "file" else ""
        chunks.append(f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode())
        chunks.append(value + b"\r\n")
    return b"".join(chunks) + f"--{BOUNDARY}--\r\n".encode()


def forms() -> dict[str, bytes]:
    """The three 16+ MiB bodies of the issue."""
    return {
        "200k repeated crf=20": _form([("field", "crf", b"20")] * 200_000),
        "200k distinct names": _form([("field", f"f{i:06d}", b"1") for i in range(200_000)]),
        "20k extra file parts, long names": _form(
            [("file", "file", b"x")] + [("file", f"{'n' * 700}{i}", b"x") for i in range(20_000)]
        ),
    }


def _chunked(body: bytes, size: int = 64 * 1024) -> bytes:
    pieces = (body[i : i + size] for i in range(0, len(body), size))
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"


def post(port: int, body: bytes) -> tuple[int, str, int, float]:
    """One POST /compress; (status, code, answer bytes, seconds to the answer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    head = (
        f"POST /compress HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    started = time.perf_counter()

    def send() -> None:
        with contextlib.suppress(OSError):
            sock.sendall(head + body)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    data = b""
    with contextlib.suppress(OSError):
        while chunk := sock.recv(65536):
            data += chunk
            raw, sep, content = data.partition(b"\r\n\r\n")
            lengths = [x.split(b":")[1] for x in raw.lower().split(b"\r\n") if x.startswith(b"content-length:")]
            if sep and lengths and len(content) >= int(lengths[0]):
                break
    elapsed = time.perf_counter() - started
    sock.close()
    sender.join(30)
    raw, _, content = data.partition(b"\r\n\r\n")
    status = int(raw.split()[1]) if raw else 0
    try:
        code = str(json.loads(content).get("code"))
    except ValueError:
        code = "?"
    return status, code, len(content), elapsed


def flood(port: int, bodies: dict[str, bytes], i: int, until: float, results: Any) -> None:
    """One flooding client (a process): the forms in turn until `until`; rows to `results`."""
    names = list(bodies)
    rows = []
    n = i
    while time.time() < until:
        name = names[n % len(names)]
        rows.append((name, *post(port, bodies[name])))
        n += 1
    results.put(rows)


def rss_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (peak) of a process, MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    bodies = {name: _chunked(body) for name, body in forms().items()}
    sizes = {name: len(body) for name, body in forms().items()}
    with tempfile.TemporaryDirectory() as tmp:
        redis = RedisServer(Path(tmp) / "redis", persist=False)
        redis.start()
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("FRAMERS_")}
        env |= {
            "FRAMERS_DATA_DIR": str(Path(tmp) / "data"),
            "FRAMERS_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0",
            "FRAMERS_LOG_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        argv = [sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(port), "--log-level", "warning"]
        gateway = subprocess.Popen(argv, cwd=ROOT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                if time.monotonic() > deadline or gateway.poll() is not None:
                    raise SystemExit("the gateway did not start")
                time.sleep(0.2)
            for _ in range(20):  # warm-up: every route the flood touches
                httpx.get(f"{url}/healthz")
            for body in bodies.values():
                post(port, body)
            idle = []
            with httpx.Client(base_url=url) as client:
                for _ in range(200):
                    started = time.perf_counter()
                    client.get("/healthz")
                    idle.append(time.perf_counter() - started)
            before = rss_mib(gateway.pid)

            stop = threading.Event()
            latencies: list[float] = []
            samples: list[float] = []
            results: multiprocessing.Queue[list[tuple[str, int, str, int, float]]] = multiprocessing.Queue()

            def probe() -> None:
                with httpx.Client(base_url=url) as client:
                    while not stop.is_set():
                        started = time.perf_counter()
                        assert client.get("/healthz").status_code == 200
                        latencies.append(time.perf_counter() - started)

            def sample() -> None:
                while not stop.is_set():
                    samples.append(rss_mib(gateway.pid)["VmRSS"])
                    time.sleep(0.05)

            # Flooding clients in processes of their own, so that the probe's latency is the gateway's
            # and not this process's (the GIL).
            until = time.time() + args.seconds
            flooders = [
                multiprocessing.Process(target=flood, args=(port, bodies, i, until, results))
                for i in range(args.clients)
            ]
            threads = [threading.Thread(target=probe), threading.Thread(target=sample)]
            started = time.perf_counter()
            for t in [*flooders, *threads]:
                t.start()
            rows = [row for _ in flooders for row in results.get(timeout=args.seconds + 120)]
            stop.set()
            for t in [*flooders, *threads]:
                t.join(60)
            duration = time.perf_counter() - started
            after = rss_mib(gateway.pid)
        finally:
            gateway.terminate()
            gateway.wait(30)
            redis.stop()

    ms = [x * 1000 for x in latencies]
    answers = collections.Counter(f"{name}: {status} {code}" for name, status, code, _, _ in rows)
    per_form: dict[str, list[float]] = collections.defaultdict(list)
    for name, _, _, _, elapsed in rows:
        per_form[name].append(elapsed)
    result: dict[str, Any] = {
        "command": " ".join(["bench/form_flood.py", *sys.argv[1:]]),
        "seconds": round(duration, 1),
        "clients": args.clients,
        "load_average_1min": round(os.getloadavg()[0], 2),
        "form_bytes": sizes,
        "answers": dict(answers),
        "forms_refused": len(rows),
        "seconds_to_answer": {
            k: {"median": round(statistics.median(v), 4), "max": round(max(v), 4)} for k, v in per_form.items()
        },
        "answer_bytes_max": max(size for _, _, _, size, _ in rows),
        "healthz_idle_ms": {
            "p50": round(pct(idle, 0.5) * 1000, 2),
            "p95": round(pct(idle, 0.95) * 1000, 2),
            "max": round(max(idle) * 1000, 2),
        },
        "healthz_during_ms": {
            "n": len(ms),
            "p50": round(pct(ms, 0.5), 2),
            "p95": round(pct(ms, 0.95), 2),
            "p99": round(pct(ms, 0.99), 2),
            "max": round(max(ms), 2),
        },
        "gateway_rss_mib": {
            "before": round(before["VmRSS"], 1),
            "during_max_sampled": round(max(samples), 1),
            "after": round(after["VmRSS"], 1),
            "peak_VmHWM": round(after["VmHWM"], 1),
        },
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    ok = result["gateway_rss_mib"]["peak_VmHWM"] < 200 and result["healthz_during_ms"]["p95"] < 50
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
