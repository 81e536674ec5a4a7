"""The code location: assets, blocking contract checks, job, schedule, partitions, and `dagster definitions
validate` on the workspace."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from seg_pipeline.definitions import ALL_ASSETS, defs
from seg_pipeline.partitions import quarterly_partitions, quarters_covered, registered_quarters, sync_quarters
from seg_pipeline.schedules import TARGET_TAG

REPO_ROOT = Path(__file__).resolve().parent.parent

# The expected graph, written from the design card and the tables each step writes, not from the code.
# Design card: raw transactions -> cleaned sales -> customer features (DuckDB SQL) -> scaled matrix -> fitted
# clustering model -> segment assignments -> segment-migration history; then the insights/report.
DESIGN_CARD = [
    "raw_transactions",
    "cleaned_sales",
    "customer_features",
    "scaled_matrix",
    "clustering_model",
    "segment_assignments",
    "segment_migration_history",
]
# companion tables: written in the same step as their main asset (multi-asset)
COMPANIONS = {
    "cleaned_sales": {"rejected_sales"},
    "scaled_matrix": {"scaled_matrix_columns"},
    "segment_assignments": {"segment_summary"},
    "segment_insights": {"segment_profile", "store_concentration", "winback_list"},
    "customer_value": {"customer_value_parameters"},
}
# the steps beyond the design card, after it: customer value, then the insights/report
BEYOND_CARD = ["customer_value", "segment_insights"]
INSIGHTS_READS = {
    "segment_assignments",
    "segment_summary",
    "segment_migration_history",
    "clustering_model",
    "customer_features",
    "cleaned_sales",
    "customer_value",
    "customer_value_parameters",
}
# what every asset reads (its parents), from what each step's SQL/code must read to do its job
EXPECTED_PARENTS = {
    "raw_transactions": set(),
    "cleaned_sales": {"raw_transactions"},
    "rejected_sales": {"raw_transactions"},
    "customer_features": {"cleaned_sales"},
    "scaled_matrix": {"customer_features"},
    "scaled_matrix_columns": {"customer_features"},
    # the kept model and the previous quarter's segments come from the asset's own previous partition, which
    # Dagster cannot draw between dynamic partitions (no mapping to the partition before): not an edge
    "clustering_model": {"scaled_matrix", "customer_features"},
    "segment_assignments": {"clustering_model", "customer_features"},
    "segment_summary": {"clustering_model", "customer_features"},
    "segment_migration_history": {"segment_assignments", "customer_features", "clustering_model"},
    # every customer's full purchase history up to the as-of date
    "customer_value": {"cleaned_sales"},
    "customer_value_parameters": {"cleaned_sales"},
    "segment_insights": INSIGHTS_READS,
    "segment_profile": INSIGHTS_READS,
    "store_concentration": INSIGHTS_READS,
    "winback_list": INSIGHTS_READS,
}
ASSET_NAMES = set(DESIGN_CARD)
PARTITIONED = set(EXPECTED_PARENTS) - {"raw_transactions", "cleaned_sales", "rejected_sales"}
INTERNAL_TABLES = {"_pipeline_state"}  # bookkeeping (one state table), not a data product


def all_asset_names() -> set[str]:
    return {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}


def test_the_design_card_assets_and_their_companions_exist():
    steps = [{k.to_user_string() for k in a.keys} for a in ALL_ASSETS]
    mains = [next(iter(s & (ASSET_NAMES | set(BEYOND_CARD)))) for s in steps]
    assert mains == DESIGN_CARD + BEYOND_CARD  # the steps, in the design card's order
    assert all_asset_names() == set(EXPECTED_PARENTS)
    for step in ALL_ASSETS:
        names = {k.to_user_string() for k in step.keys}
        main = next(n for n in names if n in ASSET_NAMES | set(BEYOND_CARD))
        assert names == {main} | COMPANIONS.get(main, set()), names


def test_every_contract_check_is_blocking_and_partitioned_like_its_asset():
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == {(a, "data_contract") for a in ASSET_NAMES | set(BEYOND_CARD)}
    for step in ALL_ASSETS:
        for spec in step.check_specs:
            assert spec.blocking and "data contract" in (spec.description or "").lower()
            assert spec.partitions_def == step.partitions_def, spec.asset_key


def test_dependencies_are_the_true_lineage():
    graph = defs.resolve_asset_graph()
    parents = {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys} for k in graph.get_all_asset_keys()
    }
    assert parents == EXPECTED_PARENTS
    # the previous-quarter reads that are not edges are stated where the data team reads lineage
    for name in ("clustering_model", "segment_migration_history"):
        assert "previous" in graph.get(dg.AssetKey(name)).description, name


def test_every_table_a_run_writes_is_an_asset(full_run):
    """Nothing the pipeline publishes is invisible to lineage: the warehouse's tables are the table assets."""
    from tests.conftest import read_table

    home, _ = full_run
    tables = set(read_table(home, "SELECT table_name FROM information_schema.tables").table_name)
    assert tables - INTERNAL_TABLES == set(EXPECTED_PARENTS) - {"segment_insights"}


def test_table_assets_declare_their_table_and_code():
    for step in ALL_ASSETS:
        for key, spec in step.specs_by_key.items():
            name = key.to_user_string()
            refs = spec.metadata.get("dagster/code_references")
            assert refs is not None and refs.code_references, name
            if name != "segment_insights":
                assert spec.metadata.get("dagster/table_name") == f"warehouse.main.{name}", name
            assert spec.description and spec.owners and spec.group_name == "segmentation", name


def test_partitioning():
    for name in EXPECTED_PARENTS:
        spec = defs.resolve_asset_graph().get(dg.AssetKey(name))
        assert spec.partitions_def == (quarterly_partitions if name in PARTITIONED else None), name


def test_jobs_schedule_and_sensor_exist():
    job = defs.resolve_job_def("quarterly_segmentation_job")
    assert job.partitions_def == quarterly_partitions
    selected = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert selected == all_asset_names() >= ASSET_NAMES  # the job refreshes every asset
    ingest = defs.resolve_job_def("ingest_job")
    assert {k.to_user_string() for k in ingest.asset_layer.selected_asset_keys} == set(EXPECTED_PARENTS) - PARTITIONED
    schedule = defs.resolve_schedule_def("quarterly_segmentation_schedule")
    assert schedule.job_name == "ingest_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    sensor = defs.resolve_sensor_def("segment_new_quarter")
    assert sensor.job_name == "quarterly_segmentation_job"


def test_schedule_fires_on_quarter_starts():
    schedule = defs.resolve_schedule_def("quarterly_segmentation_schedule")
    start = datetime(2025, 11, 23, 12, 0, tzinfo=UTC).timestamp()
    ticks = list(
        itertools.islice(cron_string_iterator(start, schedule.cron_schedule, schedule.execution_timezone or "UTC"), 4)
    )
    assert [t.strftime("%Y-%m-%d %H:%M") for t in ticks] == [
        "2026-01-01 00:00",
        "2026-04-01 00:00",
        "2026-07-01 00:00",
        "2026-10-01 00:00",
    ]
    assert all(t.utcoffset().total_seconds() == 0 for t in ticks)


def test_schedule_tick_targets_the_quarter_that_just_ended():
    schedule = defs.resolve_schedule_def("quarterly_segmentation_schedule")
    with dg.instance_for_test() as instance:
        ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2026, 4, 1, tzinfo=UTC))
        data = schedule.evaluate_tick(ctx)
    requests = data.run_requests or []
    assert [(r.job_name or schedule.job_name, r.tags[TARGET_TAG]) for r in requests] == [("ingest_job", "2026-01-01")]


def test_quarters_registered_are_exactly_the_covered_ones():
    """sync_quarters leaves exactly the covered quarters, listed in time order, when the data grows at either
    end or shrinks."""
    with dg.instance_for_test() as instance:
        assert sync_quarters(instance, ["2010-01-01", "2010-04-01"]) == (["2010-01-01", "2010-04-01"], [])
        assert sync_quarters(instance, ["2010-01-01", "2010-04-01"]) == ([], [])
        assert sync_quarters(instance, ["2010-01-01", "2010-04-01", "2010-07-01"]) == (["2010-07-01"], [])
        assert sync_quarters(instance, ["1997-01-01", "2010-01-01", "2010-04-01", "2010-07-01"])[0] == ["1997-01-01"]
        assert registered_quarters(instance) == ["1997-01-01", "2010-01-01", "2010-04-01", "2010-07-01"]
        assert sync_quarters(instance, ["2010-04-01"]) == ([], ["1997-01-01", "2010-01-01", "2010-07-01"])
        assert quarterly_partitions.get_partition_keys(dynamic_partitions_store=instance) == ["2010-04-01"]


def test_quarters_covered_follow_the_data():
    # a partial first quarter is offered (its as-of date is inside the data); an incomplete last one is not
    keys = [q.key for q in quarters_covered(date(2009, 12, 1), date(2011, 12, 9))]
    assert keys[0] == "2009-10-01" and keys[-1] == "2011-07-01" and len(keys) == 8
    assert [q.key for q in quarters_covered(date(1997, 1, 1), date(1997, 12, 31))] == [
        "1997-01-01",
        "1997-04-01",
        "1997-07-01",
        "1997-10-01",
    ]
    assert quarters_covered(date(2011, 12, 1), date(2011, 12, 9)) == []


@pytest.mark.slow  # a `dagster` subprocess loading the code location (~4 s)
def test_dagster_definitions_validate(tmp_path):
    dagster = Path(sys.executable).parent / "dagster"
    assert dagster.exists(), dagster
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "GX_ANALYTICS_ENABLED": "false"}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Validation successful" in proc.stdout + proc.stderr
