#!/usr/bin/env bash
# Create ./.venv (once) and install expoft with its pinned dependencies (CPU-only JAX).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), f"expoft needs Python >= 3.11, found {sys.version.split()[0]}"'
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
