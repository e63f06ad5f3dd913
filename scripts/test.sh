#!/usr/bin/env bash
# The whole test suite on a fresh machine: install, start the real services on
# loopback, lint, type-check, test. Services this script started are stopped at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
was_running=$(bash scripts/services.sh status | grep -c running || true)
bash scripts/services.sh up
if [ "$was_running" = 0 ]; then
    trap 'bash scripts/services.sh down' EXIT
fi
echo "[test] ruff" >&2
.venv/bin/ruff check .
echo "[test] mypy --strict (bot/, storage/)" >&2
.venv/bin/mypy
echo "[test] pytest" >&2
.venv/bin/python -m pytest -p no:cacheprovider "$@"
