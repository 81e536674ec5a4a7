"""The code location: assembles assets, checks, jobs, schedules and resources, and sets the process's garbage
collection (seg_pipeline/runtime.py) before it imports them. Nothing else lives here."""

from __future__ import annotations

from . import runtime

# every Dagster process loads this module: set its garbage collection before the libraries load, and keep
# the collector from walking them afterwards (seg_pipeline/runtime.py; measured in bench/results.md)
runtime.tune_gc()
with runtime.importing():
    import dagster as dg

    from .ml.naming import load_catalogue

    # the segment catalogue is checked when the definitions load: a broken segments.yaml fails `dg check defs`
    load_catalogue()
    from .assets import cleaning, customer_value, features, ingest, insights, migration, model, segments
    from .resources import env_resources
    from .schedules import ingest_job, quarterly_segmentation_job, quarterly_segmentation_schedule, segment_new_quarter

# in dependency order; each step's companion tables are assets of the same step
ALL_ASSETS = dg.with_source_code_references(
    [
        ingest.raw_transactions,
        cleaning.cleaned_sales,
        features.customer_features,
        model.scaled_matrix,
        model.clustering_model,
        segments.segment_assignments,
        migration.segment_migration_history,
        customer_value.customer_value,
        insights.segment_insights,
    ]
)

# every table asset by name, in dependency order: the one list the CLI, the benchmark and the tests select by
ASSET_NAMES = [k.to_user_string() for a in ALL_ASSETS for k in a.keys]
UNPARTITIONED = [k.to_user_string() for a in ALL_ASSETS if a.partitions_def is None for k in a.keys]
PARTITIONED = [k.to_user_string() for a in ALL_ASSETS if a.partitions_def is not None for k in a.keys]

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[quarterly_segmentation_job, ingest_job],
    schedules=[quarterly_segmentation_schedule],
    sensors=[segment_new_quarter],
    resources=env_resources(),
)
