#!/usr/bin/env bash
# Run the whole service on this machine: a Redis it starts itself, the gateway on
# http://127.0.0.1:8000 and two workers, local storage under ./data. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/bootstrap.sh
exec .venv/bin/framers serve --data-dir "${FRAMERS_DATA_DIR:-./data}" --workers "${FRAMERS_WORKERS:-2}" "$@"
