#!/usr/bin/env bash
# The test command: set up, lint (ruff on the Python, sqlfluff on sql/), check the Dagster definitions with
# Dagster's `dg` CLI, then run the whole test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export GX_ANALYTICS_ENABLED=false OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
.venv/bin/ruff check --quiet seg_pipeline tests bench
.venv/bin/ruff format --check --quiet seg_pipeline tests bench
.venv/bin/sqlfluff lint sql --nocolor >/dev/null || .venv/bin/sqlfluff lint sql --nocolor
# loads the code location as `dg dev` and a deployment do ([tool.dg] in pyproject.toml); VIRTUAL_ENV tells dg
# that the project's .venv is the one in use (it warns otherwise)
VIRTUAL_ENV="$PWD/.venv" .venv/bin/dg check defs
# two workers (the machine has 2 cores), whole files per worker: each file keeps its module fixtures
exec .venv/bin/python -m pytest -n "${PYTEST_WORKERS:-2}" --dist loadfile "$@"
