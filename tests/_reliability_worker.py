"""A worker process with injected faults for the reliability tests (never used in production).

Everything tests/_fault_worker.py offers (FRAMERS_TEST_FAULT, e.g. `slow:SECONDS` for compressions), plus:
  FRAMERS_TEST_SLOW_RECONSTRUCT=SECONDS   every progress report of a reconstruction sleeps SECONDS
                                          and touches FRAMERS_TEST_STARTED
  FRAMERS_TEST_STORAGE_FAULTS=FILE        writes of objects named `bundle.frs` fail with a StorageError
                                          while FILE holds "always" or a positive count (decremented
                                          on each failure); FILE absent or "0": no failure
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import _fault_worker  # noqa: F401 - applies FRAMERS_TEST_FAULT to compressions

import framers.pipeline as pipeline
import workers.context
from core.storage import Storage, StorageError
from workers.main import main

_real_reconstruct = pipeline.reconstruct
_slow_reconstruct = float(os.environ.get("FRAMERS_TEST_SLOW_RECONSTRUCT", "0") or 0)


def _reconstruct(*args: Any, progress: Any = None, **kwargs: Any) -> Any:
    if not _slow_reconstruct:
        return _real_reconstruct(*args, progress=progress, **kwargs)
    started = Path(os.environ["FRAMERS_TEST_STARTED"])

    def slow_progress(fraction: float) -> None:
        started.touch()
        time.sleep(_slow_reconstruct)
        if progress is not None:
            progress(fraction)

    return _real_reconstruct(*args, progress=slow_progress, **kwargs)


pipeline.reconstruct = _reconstruct


class FlakyStorage(Storage):
    """Delegates to the real backend; bundle writes fail as long as the control file says so."""

    def __init__(self, inner: Storage, control: Path) -> None:
        self.inner = inner
        self.control = control

    def _maybe_fail(self, key: str) -> None:
        if not key.endswith("/bundle.frs"):
            return
        try:
            state = self.control.read_text().strip()
        except FileNotFoundError:
            return
        if state == "always":
            raise StorageError(f"injected storage failure writing {key}")
        if state.isdigit() and int(state) > 0:
            self.control.write_text(str(int(state) - 1))
            raise StorageError(f"injected storage failure writing {key}")

    def put_file(self, src: Path, key: str, *, move: bool = False) -> int:
        self._maybe_fail(key)
        return self.inner.put_file(src, key, move=move)

    def put_stream(self, stream: Any, key: str) -> int:
        self._maybe_fail(key)
        return self.inner.put_stream(stream, key)

    def get_file(self, key: str, dest: Path) -> int:
        return self.inner.get_file(key, dest)

    def iter_range(self, key: str, start: int = 0, end: int | None = None) -> Any:
        return self.inner.iter_range(key, start, end)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def size(self, key: str) -> int:
        return self.inner.size(key)

    def delete(self, key: str) -> bool:
        return self.inner.delete(key)

    def delete_prefix(self, prefix: str) -> int:
        return self.inner.delete_prefix(prefix)

    def list(self, prefix: str) -> Any:
        return self.inner.list(prefix)

    def ping(self) -> None:
        self.inner.ping()


_control = os.environ.get("FRAMERS_TEST_STORAGE_FAULTS", "")
if _control:
    _real_make_storage = workers.context.make_storage

    def _make_storage(settings: Any) -> Storage:
        return FlakyStorage(_real_make_storage(settings), Path(_control))

    workers.context.make_storage = _make_storage

if __name__ == "__main__":
    sys.exit(main())
