"""The quarterly job, the ingest job, the quarterly schedule and the sensor that segments a new quarter.

The quarters are the ones the data covers (partitions.py), so the quarter that has just ended is a partition
only once a refreshed source reaches its last day. The quarterly refresh therefore works in two steps:
- at 00:00 UTC on the first day of each quarter the schedule runs the ingest job (raw_transactions,
  cleaned_sales, rejected_sales) for the quarter that has just ended: it re-reads the source and registers
  the quarters the data now covers;
- when an ingest run succeeds, the `segment_new_quarter` sensor runs the quarterly job for the quarter that
  run was for (for an ingest started by hand: the newest covered quarter not segmented yet), if the data
  covers it. If it does not yet, the sensor says so and nothing runs; ingest again when the export is complete.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import dagster as dg

from .partitions import quarter_of, quarterly_partitions, registered_quarters

TARGET_TAG = "seg_pipeline/quarter"  # the quarter an ingest run was started for

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

# The unpartitioned assets only: re-read the source, clean it, register the quarters it covers.
ingest_job = dg.define_asset_job(
    name="ingest_job",
    selection=dg.AssetSelection.assets("cleaned_sales", "rejected_sales").upstream(),
    description="Re-read the source and clean it; registers the quarters the data covers as partitions.",
    executor_def=dg.in_process_executor,
    tags={"dagster/max_retries": 0},
)


def just_ended(when: datetime) -> str:
    """The key of the quarter that ended before `when` (a tick on a quarter's first day: the one before)."""
    return quarter_of(when - timedelta(days=1)).key


@dg.schedule(
    name="quarterly_segmentation_schedule",
    cron_schedule="0 0 1 1,4,7,10 *",
    execution_timezone="UTC",
    job=ingest_job,
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description=(
        "Quarterly refresh: at 00:00 UTC on the first day of each quarter, re-read the source for the quarter "
        "that has just ended; segment_new_quarter then segments that quarter once the data covers it."
    ),
)
def quarterly_segmentation_schedule(context: dg.ScheduleEvaluationContext):
    quarter = just_ended(context.scheduled_execution_time)
    return dg.RunRequest(run_key=f"ingest-for-{quarter}", tags={TARGET_TAG: quarter})


@dg.run_status_sensor(
    name="segment_new_quarter",
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[ingest_job],
    request_job=quarterly_segmentation_job,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "After a successful ingest run: run the quarterly job for the quarter it was for (the schedule's), or "
        "for the newest covered quarter not segmented yet, once the data covers it."
    ),
)
def segment_new_quarter(context: dg.RunStatusSensorContext):
    covered = registered_quarters(context.instance)
    wanted = context.dagster_run.tags.get(TARGET_TAG)
    if wanted is None:
        done = context.instance.get_materialized_partitions(dg.AssetKey("segment_assignments"))
        todo = [q for q in covered if q not in done]
        if not todo:
            return dg.SkipReason("every covered quarter is segmented")
        wanted = todo[-1]
    if wanted not in covered:
        last = covered[-1] if covered else "none"
        return dg.SkipReason(
            f"the data does not cover quarter {wanted} yet (latest covered quarter: {last}): refresh the source "
            "and run ingest_job again"
        )
    return dg.RunRequest(
        run_key=f"quarter-{wanted}-after-{context.dagster_run.run_id}", partition_key=wanted, tags={TARGET_TAG: wanted}
    )
