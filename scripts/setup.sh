#!/usr/bin/env bash
# Create .venv (if missing) and install the project with the extras named in $SIMCLR_EXTRAS.
# Idempotent: a second run only re-checks the install. Used by quickstart.sh, test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${SIMCLR_EXTRAS:-dev}"
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: Python 3.11 or newer is required (found $("$python" --version 2>&1)); set PYTHON=..." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi
stamp=".venv/.installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras//,/_}"
if [ ! -f "$stamp" ]; then
  echo "setup: installing simclr-search[$extras] (torch comes from the local wheel cache where present)"
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install --quiet -e ".[$extras]" 2>&1 | grep -v "^WARNING: Location" || true
  .venv/bin/python -c "import training, torch, numpy" # fail loudly if the install did not take
  touch "$stamp"
fi
# The web page's browser tests (tests/serving/test_page.py) drive Debian's chromium through
# chromedriver. Installed once, where this runs as root with apt (CI, containers); elsewhere the
# tests skip and say why. SIMCLR_NO_BROWSER=1 skips it.
if [[ ",$extras," == *",dev,"* ]] && [ -z "${SIMCLR_NO_BROWSER:-}" ] \
  && ! { command -v chromium >/dev/null && command -v chromedriver >/dev/null; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing chromium and chromium-driver (apt) for the browser tests"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      chromium chromium-driver >/dev/null) || echo "setup: could not install chromium; the browser tests will skip" >&2
  else
    echo "setup: no chromium/chromedriver and no root apt: the browser tests will skip" >&2
  fi
fi

