#!/usr/bin/env bash
# Run the whole test suite (installs what it needs first). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
FRAMERS_EXTRAS="cpu,dev,s3,train" ./scripts/bootstrap.sh
.venv/bin/ruff check .
.venv/bin/python -m pytest -q "$@"
