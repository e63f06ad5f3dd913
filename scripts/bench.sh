#!/usr/bin/env bash
# The benchmarks (not part of the test command): install, start the real services on
# loopback, run bench/run.py (pass --quick for smaller sizes). Prints a table and writes
# bench/results/<date>.json.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
bash scripts/services.sh up
exec .venv/bin/python bench/run.py "$@"
