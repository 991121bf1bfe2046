#!/usr/bin/env bash
# The whole test suite: lint, then every test. Sets up .venv first (reused when present).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"`.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="$(python3 scripts/bootstrap.py --extras test)"
"$PY" -m ruff check .
"$PY" -m pytest "$@"
