"""The code location: assembles assets, checks, jobs, schedules and resources. Nothing else lives here."""

from __future__ import annotations

import os

import dagster as dg

from .assets import cleaning, features, ingest, insights, migration, model, segments
from .resources import build_resources
from .schedules import quarterly_segmentation_job, quarterly_segmentation_schedule

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

ALL_ASSETS = [
    ingest.raw_transactions,
    cleaning.cleaned_sales,
    features.customer_features,
    model.scaled_matrix,
    model.clustering_model,
    segments.segment_assignments,
    migration.segment_migration_history,
    insights.segment_insights,
]

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[quarterly_segmentation_job],
    schedules=[quarterly_segmentation_schedule],
    resources=build_resources(),
)
