#!/usr/bin/env bash
# Switchboard's main job on this machine: install, start the real services on loopback,
# then run the demo (see `switchboard demo --help`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
bash scripts/services.sh up
set -a
# shellcheck disable=SC1090
. "$(bash scripts/services.sh env)"
set +a
exec .venv/bin/switchboard demo "$@"
