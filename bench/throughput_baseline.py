"""``bench/throughput.py --baseline ROOT``: time another checkout's reconstruction in the same run.

A child Python process imports ``framers`` from ``ROOT`` (``PYTHONPATH=ROOT``) and rebuilds
bundles on request, one at a time, reporting the frames it wrote and its own wall and CPU
seconds. The parent interleaves these runs with its own methods, so "before" and "after" of a
change see the same background load and the same decode+encode floor.

Protocol (one JSON object per line): the parent writes
``{"bundle": path, "output": path, "reconstructor": name}``; the child answers
``{"frames": n, "wall_s": s, "cpu_s": s}`` or ``{"error": text}``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


class BaselineWorker:
    """The child process serving one checkout's ``framers.pipeline.reconstruct``."""

    def __init__(self, root: Path) -> None:
        env = dict(os.environ, PYTHONPATH=str(Path(root).resolve()))
        self.root = Path(root)
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve"],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=str(root),
        )
        hello = self._read()
        self.framers_file = str(hello["framers"])

    def _read(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError(f"baseline worker for {self.root} exited ({self._proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"baseline worker for {self.root}: {reply['error']}")
        return reply

    def reconstruct(self, bundle: Path, output: Path, reconstructor: str) -> tuple[float, float, int]:
        """(wall seconds, CPU seconds of the child, frames) of one ``reconstruct`` run."""
        assert self._proc.stdin is not None
        request = {"bundle": str(bundle), "output": str(output), "reconstructor": reconstructor}
        self._proc.stdin.write(json.dumps(request) + "\n")
        self._proc.stdin.flush()
        reply = self._read()
        return float(reply["wall_s"]), float(reply["cpu_s"]), int(reply["frames"])

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)


def serve() -> None:
    """The child's loop: stdin requests → stdout replies (imports from PYTHONPATH)."""
    import framers
    from framers.pipeline import reconstruct

    print(json.dumps({"framers": framers.__file__}), flush=True)
    for line in sys.stdin:
        try:
            request = json.loads(line)
            cpu0, wall0 = time.process_time(), time.perf_counter()
            result = reconstruct(Path(request["bundle"]), Path(request["output"]),
                                 reconstructor=request["reconstructor"])
            reply = {"frames": result.frames, "wall_s": time.perf_counter() - wall0,
                     "cpu_s": time.process_time() - cpu0}
        except Exception as exc:  # reported to the parent, which stops
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(reply), flush=True)


if __name__ == "__main__" and sys.argv[1:] == ["--serve"]:
    sys.path = [p for p in sys.path if Path(p).resolve() != Path(__file__).resolve().parent]
    serve()
