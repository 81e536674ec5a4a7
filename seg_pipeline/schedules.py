"""The quarterly job and its schedule."""

from __future__ import annotations

import dagster as dg

from .partitions import quarterly_partitions

# Every asset of the segmentation group, for one quarterly partition. raw_transactions and cleaned_sales
# are not partitioned: they refresh in the same run (and skip work when their inputs did not change).
quarterly_segmentation_job = dg.define_asset_job(
    name="quarterly_segmentation_job",
    selection=dg.AssetSelection.groups("segmentation"),
    partitions_def=quarterly_partitions,
    description="Refresh the segmentation for one quarter: ingest, clean, features, matrix, model, segments, migration.",
    # one process for every step: a process per step costs ~4 s here and DuckDB has a single writer
    executor_def=dg.in_process_executor,
    tags={"dagster/max_retries": 0},
)

# Fires at 00:00 UTC on the first day of each quarter and fills the quarter that has just ended.
quarterly_segmentation_schedule = dg.build_schedule_from_partitioned_job(
    quarterly_segmentation_job,
    name="quarterly_segmentation_schedule",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Quarterly refresh: at 00:00 UTC on the first day of each quarter, materialise the quarter that just ended.",
)
