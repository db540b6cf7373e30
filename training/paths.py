"""Where training finds its data (no heavy imports: label machines may lack PyAV).

Shared data lives in ``../shared`` next to the repository root (one copy for every checkout):
``../shared/data/videos/{train,val}`` with ``manifest.csv`` (sources, licences, split). Decoded
clips are cached in ``<repo>/data/cache``.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_ROOT = REPO_ROOT.parent / "shared"
DATA_ROOT = SHARED_ROOT / "data" / "videos"
CACHE_ROOT = REPO_ROOT / "data" / "cache"
