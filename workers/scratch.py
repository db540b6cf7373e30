"""Per-job scratch folders on local disk, and removal of those left by dead workers."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def job_dir(root: Path) -> Iterator[Path]:
    """A fresh folder for one job run, removed afterwards; named after this process so that a
    later worker can tell a dead worker's leftovers from a live worker's folder."""
    root.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=f"job-{os.getpid()}-", dir=root))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def sweep_dead(root: Path) -> int:
    """Remove job folders of processes that no longer exist (a SIGKILLed worker leaves its
    source copy and partial bundle behind). Only meaningful for a scratch dir on this host."""
    removed = 0
    if not root.is_dir():
        return 0
    for path in root.glob("job-*-*"):
        pid = path.name.split("-")[1]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    if removed:
        log.info("removed %d scratch folder(s) of dead workers in %s", removed, root)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
