#!/usr/bin/env bash
# Open the Dagster UI (http://127.0.0.1:3000) on the same pipeline home as `seg-pipeline run`:
# the same warehouse, and the same Dagster instance, so the CLI's runs and checks show in the UI.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export GX_ANALYTICS_ENABLED=false OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export SEG_PIPELINE_HOME=${SEG_PIPELINE_HOME:-$PWD/.seg_home}
# the code location's resources read these as dg.EnvVar when a run starts; empty = the default
export SEG_PIPELINE_SOURCE=${SEG_PIPELINE_SOURCE:-} SEG_PIPELINE_COLUMN_MAPPING=${SEG_PIPELINE_COLUMN_MAPPING:-}
export SEG_PIPELINE_DUCKDB_MEMORY=${SEG_PIPELINE_DUCKDB_MEMORY:-2GB}
export DAGSTER_HOME=${DAGSTER_HOME:-$SEG_PIPELINE_HOME/dagster}
mkdir -p "$DAGSTER_HOME"
.venv/bin/python -c "from seg_pipeline.cli import write_instance_config; write_instance_config()"
exec .venv/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p "${PORT:-3000}" "$@"
