#!/usr/bin/env bash
# Creates .venv with what the tests use to cross-check numerics (onnx, onnxruntime, numpy,
# pillow for scripts/ref_detect.py).
# Idempotent: does nothing when the pinned versions are already installed.
# Usage: scripts/setup_python.sh [--fixtures]   (--fixtures adds torch & co. for make_fixtures.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null; then
    echo "setup_python: $PY not found; install Python 3.9+ first" >&2
    exit 1
fi
req=scripts/requirements-ci.txt
[ "${1:-}" = "--fixtures" ] && req=scripts/requirements-fixtures.txt
if [ ! -x .venv/bin/python ]; then
    echo "setup_python: creating .venv" >&2
    "$PY" -m venv .venv
fi
stamp=".venv/.installed-$(sha256sum "$req" | cut -c1-16)"
if [ -f "$stamp" ]; then
    exit 0
fi
echo "setup_python: installing $req into .venv" >&2
.venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"
touch "$stamp"
