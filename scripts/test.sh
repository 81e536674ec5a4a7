#!/usr/bin/env bash
# The test command: set up, then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export GX_ANALYTICS_ENABLED=false
exec .venv/bin/python -m pytest "$@"
