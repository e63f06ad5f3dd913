#!/usr/bin/env bash
# Create .venv with Switchboard and its development tools (idempotent; reinstalls only
# when pyproject.toml changed).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "[bootstrap] error: Switchboard needs Python 3.11 or newer ($PYTHON is $("$PYTHON" -V 2>&1))" >&2
    exit 1
fi
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.switchboard-installed
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[bootstrap] installing Switchboard and its dependencies into .venv" >&2
    .venv/bin/pip install -q --upgrade pip
    # The distribution was called "switchboard" before it moved to a free name.
    .venv/bin/pip uninstall -q -y switchboard 2>/dev/null || true
    .venv/bin/pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
fi
