#!/usr/bin/env bash
# Create .venv (if missing) and install the locked dependencies plus the package (editable) with its test
# extra (pytest, the dg CLI, setuptools for the offline wheel build; all pinned in requirements.lock).
# Needs python3 >= 3.11 and access to the package registry. Idempotent: a second call is quick.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -x .venv/bin/uv ]; then
  .venv/bin/python -m pip install --quiet --disable-pip-version-check "uv>=0.5"
fi
stamp=.venv/.installed-$(cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  # bytecode compiled once at install: imports are 2-3x slower without it on this machine
  UV_COMPILE_BYTECODE=1 .venv/bin/uv pip install --quiet --python .venv/bin/python -r requirements.lock -e ".[test]"
  rm -f .venv/.installed-* && touch "$stamp"
fi
