#!/usr/bin/env bash
# The main command: set up, generate the default data if absent, materialise every asset for every
# quarter the data covers, print the latest quarter's segments and migration matrix.
# Extra arguments go to `seg-pipeline run` (e.g. --source path/to/online_retail_II.xlsx).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export GX_ANALYTICS_ENABLED=false OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec .venv/bin/seg-pipeline run "$@"
