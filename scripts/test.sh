#!/usr/bin/env bash
# The test command the README gives: lint, types, then the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
"$PY" -m ruff check p2prtc signaling tests scripts
"$PY" -m ruff format --check p2prtc signaling tests scripts
"$PY" -m mypy
exec "$PY" -m pytest -q -p no:cacheprovider "$@"
