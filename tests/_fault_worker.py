"""A worker process with an injected fault, for the fault-tolerance tests (never used in production).

FRAMERS_TEST_FAULT:
  slow:SECONDS       every progress report of a compression sleeps SECONDS (and touches
                     FRAMERS_TEST_STARTED), so a test can act while the job runs
  fail-once:MARKER   the first compression raises OSError (a transient failure), later ones work
  bug:MESSAGE        every compression raises RuntimeError(MESSAGE) (a deterministic failure in the
                     codec, as OpenCV raised on an 8×8 video)
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import framers.pipeline as pipeline
from workers.main import main

_real_compress = pipeline.compress
_fault = os.environ.get("FRAMERS_TEST_FAULT", "")


def _compress(*args: Any, progress: Any = None, **kwargs: Any) -> Any:
    kind, _, arg = _fault.partition(":")
    if kind == "slow":
        started = Path(os.environ["FRAMERS_TEST_STARTED"])

        def slow_progress(fraction: float) -> None:
            started.touch()
            time.sleep(float(arg))
            if progress is not None:
                progress(fraction)

        return _real_compress(*args, progress=slow_progress, **kwargs)
    if kind == "bug":
        raise RuntimeError(arg)
    if kind == "fail-once":
        marker = Path(arg)
        if not marker.exists():
            marker.touch()
            raise OSError("simulated storage hiccup")
    return _real_compress(*args, progress=progress, **kwargs)


pipeline.compress = _compress

if __name__ == "__main__":
    sys.exit(main())
