#!/usr/bin/env bash
# Prepare a fresh Debian/Ubuntu machine: redis-server and docker-compose (apt) and a virtualenv
# with the project; with the dev extra also Debian's chromium (the /ui browser test drives it with
# Playwright). Idempotent; used by scripts/serve.sh, scripts/test.sh and CI.
# docker-compose (Debian's, Python-based, ~20 s to install) only runs `docker-compose config` in
# tests/test_deploy.py, which validates docker-compose.yml; no container engine is needed.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${FRAMERS_EXTRAS:-cpu,s3}"

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi
APT=()
command -v redis-server >/dev/null || APT+=(redis-server)
command -v docker-compose >/dev/null || APT+=(docker-compose)
BROWSER=()  # with its recommended packages (fonts)
if [[ ",$EXTRAS," == *",dev,"* ]] && ! command -v chromium >/dev/null; then BROWSER+=(chromium); fi
if [ $(( ${#APT[@]} + ${#BROWSER[@]} )) -gt 0 ]; then
  $SUDO apt-get update -q
fi
if [ ${#APT[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${APT[@]}"
fi
if [ ${#BROWSER[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${BROWSER[@]}"
fi
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# One stamp per install: pyproject's hash + the extras installed. An install with more extras
# (e.g. the tests' cpu,dev,s3,train) covers a request for fewer (serve's cpu,s3): no reinstall,
# which in a shared venv would also re-point the editable install at this checkout.
prefix=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-"
covered=""
for done_stamp in "$prefix"*; do
  [ -f "$done_stamp" ] || continue
  have=",${done_stamp#"$prefix"},"; have="${have//-/,}"
  missing=""
  for extra in ${EXTRAS//,/ }; do
    [[ "$have" == *",$extra,"* ]] || missing="$extra"
  done
  if [ -z "$missing" ]; then covered="$done_stamp"; break; fi
done
if [ -z "$covered" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e ".[${EXTRAS}]"
  touch "$prefix${EXTRAS//,/-}"
fi
