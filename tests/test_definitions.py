"""The code location: assets, blocking contract checks, job, schedule, partitions, and `dagster definitions
validate` on the workspace."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import pytest
from dagster._utils.schedules import cron_string_iterator

from seg_pipeline.definitions import ALL_ASSETS, defs
from seg_pipeline.partitions import quarterly_partitions

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
}
INSIGHTS_READS = {
    "segment_assignments",
    "segment_summary",
    "segment_migration_history",
    "clustering_model",
    "customer_features",
    "cleaned_sales",
}
# what every asset reads (its parents), from what each step's SQL/code must read to do its job
EXPECTED_PARENTS = {
    "raw_transactions": set(),
    "cleaned_sales": {"raw_transactions"},
    "rejected_sales": {"raw_transactions"},
    "customer_features": {"cleaned_sales"},
    "scaled_matrix": {"customer_features"},
    "scaled_matrix_columns": {"customer_features"},
    # the kept model and the previous quarter's segments come from the asset's own previous partition
    "clustering_model": {"scaled_matrix", "customer_features", "clustering_model"},
    "segment_assignments": {"clustering_model", "customer_features", "segment_assignments"},
    "segment_summary": {"clustering_model", "customer_features"},
    "segment_migration_history": {"segment_assignments", "customer_features", "clustering_model"},
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
    mains = [next(iter(s & (ASSET_NAMES | {"segment_insights"}))) for s in steps]
    assert mains == DESIGN_CARD + ["segment_insights"]  # the steps, in the design card's order
    assert all_asset_names() == set(EXPECTED_PARENTS)
    for step in ALL_ASSETS:
        names = {k.to_user_string() for k in step.keys}
        main = next(n for n in names if n in ASSET_NAMES | {"segment_insights"})
        assert names == {main} | COMPANIONS.get(main, set()), names


def test_every_contract_check_is_blocking_and_partitioned_like_its_asset():
    graph = defs.resolve_asset_graph()
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert checks == {(a, "data_contract") for a in ASSET_NAMES | {"segment_insights"}}
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
    # the self-dependencies read exactly the previous quarter, and migration reads this and the last
    for name in ("clustering_model", "segment_assignments"):
        key = dg.AssetKey(name)
        mapping = graph.get_partition_mapping(key, key)
        assert (mapping.start_offset, mapping.end_offset) == (-1, -1), name
    mapping = graph.get_partition_mapping(dg.AssetKey("segment_migration_history"), dg.AssetKey("segment_assignments"))
    assert (mapping.start_offset, mapping.end_offset) == (-1, 0)


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


def test_job_and_schedule_exist():
    job = defs.resolve_job_def("quarterly_segmentation_job")
    assert job.partitions_def == quarterly_partitions
    schedule = defs.resolve_schedule_def("quarterly_segmentation_schedule")
    assert schedule.job_name == "quarterly_segmentation_job"
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    selected = {k.to_user_string() for k in job.asset_layer.selected_asset_keys}
    assert selected == all_asset_names() >= ASSET_NAMES  # the job refreshes every asset


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


def test_schedule_tick_fills_the_quarter_that_just_ended():
    schedule = defs.resolve_schedule_def("quarterly_segmentation_schedule")
    with dg.instance_for_test() as instance:
        ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2026, 4, 1, tzinfo=UTC))
        data = schedule.evaluate_tick(ctx)
    requests = data.run_requests or []
    assert [r.partition_key for r in requests] == ["2026-01-01"]


def test_partition_keys_are_quarter_starts():
    keys = quarterly_partitions.get_partition_keys(current_time=datetime(2012, 1, 2, tzinfo=UTC))
    assert [k for k in keys if k.startswith("2010")] == ["2010-01-01", "2010-04-01", "2010-07-01", "2010-10-01"]
    assert keys[0] == "2009-10-01"
    assert keys[-1] == "2011-10-01"  # the last quarter that has ended by then
    earlier = quarterly_partitions.get_partition_keys(current_time=datetime(2011, 12, 31, tzinfo=UTC))
    assert earlier[-1] == "2011-07-01"  # 2011-Q4 is not a partition before it ends
    window = quarterly_partitions.time_window_for_partition_key("2010-07-01")
    assert (window.start.date().isoformat(), window.end.date().isoformat()) == ("2010-07-01", "2010-10-01")


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
