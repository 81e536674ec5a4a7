"""seg_pipeline: customer segmentation for retailers, as Dagster assets over DuckDB."""

import os

# OpenMP threads (scikit-learn's k-means) spin while waiting by default; on a small shared machine that
# spinning competes with DuckDB's threads and slows small fits 10x. Sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
