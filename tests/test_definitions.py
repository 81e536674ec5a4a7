"""The code location: assets, blocking contract checks, job, schedule, partitions, and `dagster definitions
validate` on the workspace."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
from dagster._utils.schedules import cron_string_iterator

from seg_pipeline.definitions import ALL_ASSETS, defs
from seg_pipeline.partitions import quarterly_partitions

REPO_ROOT = Path(__file__).resolve().parent.parent
# the seven assets of the segmentation chain (later additions, e.g. reports, may follow them)
ASSET_NAMES = {
    "raw_transactions", "cleaned_sales", "customer_features", "scaled_matrix", "clustering_model",
    "segment_assignments", "segment_migration_history",
}
PARTITIONED = ASSET_NAMES - {"raw_transactions", "cleaned_sales"}


def all_asset_names() -> set[str]:
    return {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}


def test_all_seven_assets_exist():
    assert ASSET_NAMES <= all_asset_names()
    assert [a.key.to_user_string() for a in ALL_ASSETS][:7] == [
        "raw_transactions", "cleaned_sales", "customer_features", "scaled_matrix", "clustering_model",
        "segment_assignments", "segment_migration_history",
    ]
    assert {a.key.to_user_string() for a in ALL_ASSETS} == all_asset_names()


def test_every_asset_has_a_blocking_data_contract_check():
    seen = set()
    for asset in defs.assets:
        specs = list(asset.check_specs)
        assert [s.name for s in specs] == ["data_contract"], asset.key
        spec = specs[0]
        assert spec.blocking, asset.key
        assert spec.asset_key == asset.key
        assert "data contract" in (spec.description or "").lower()
        seen.add(asset.key.to_user_string())
    assert seen == all_asset_names() >= ASSET_NAMES
    check_keys = defs.resolve_asset_graph().asset_check_keys
    assert {(k.asset_key.to_user_string(), k.name) for k in check_keys} == {(a, "data_contract") for a in seen}


def test_dependencies_form_the_documented_chain():
    graph = defs.resolve_asset_graph()
    parents = {
        k.to_user_string(): {p.to_user_string() for p in graph.get(k).parent_keys}
        for k in graph.get_all_asset_keys()
        if k.to_user_string() in ASSET_NAMES
    }
    assert parents == {
        "raw_transactions": set(),
        "cleaned_sales": {"raw_transactions"},
        "customer_features": {"cleaned_sales"},
        "scaled_matrix": {"customer_features"},
        # the kept model and the previous quarter's segments are read from the asset's own previous partition
        "clustering_model": {"scaled_matrix", "customer_features", "clustering_model"},
        "segment_assignments": {"clustering_model", "customer_features", "segment_assignments"},
        "segment_migration_history": {"segment_assignments", "customer_features", "clustering_model"},
    }
    # the self-dependencies read exactly the previous quarter
    for name in ("clustering_model", "segment_assignments"):
        key = dg.AssetKey(name)
        mapping = graph.get_partition_mapping(key, key)
        assert (mapping.start_offset, mapping.end_offset) == (-1, -1), name


def test_partitioning():
    for asset in defs.assets:
        name = asset.key.to_user_string()
        if name not in ASSET_NAMES:
            continue
        if name in PARTITIONED:
            assert asset.partitions_def == quarterly_partitions, name
        else:
            assert asset.partitions_def is None, name


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
    start = datetime(2025, 11, 23, 12, 0, tzinfo=timezone.utc).timestamp()
    ticks = list(itertools.islice(
        cron_string_iterator(start, schedule.cron_schedule, schedule.execution_timezone or "UTC"), 4))
    assert [t.strftime("%Y-%m-%d %H:%M") for t in ticks] == [
        "2026-01-01 00:00", "2026-04-01 00:00", "2026-07-01 00:00", "2026-10-01 00:00",
    ]
    assert all(t.utcoffset().total_seconds() == 0 for t in ticks)


def test_schedule_tick_fills_the_quarter_that_just_ended():
    schedule = defs.resolve_schedule_def("quarterly_segmentation_schedule")
    with dg.instance_for_test() as instance:
        ctx = dg.build_schedule_context(
            instance=instance, scheduled_execution_time=datetime(2026, 4, 1, tzinfo=timezone.utc)
        )
        data = schedule.evaluate_tick(ctx)
    requests = data.run_requests or []
    assert [r.partition_key for r in requests] == ["2026-01-01"]


def test_partition_keys_are_quarter_starts():
    keys = quarterly_partitions.get_partition_keys(current_time=datetime(2012, 1, 2, tzinfo=timezone.utc))
    assert [k for k in keys if k.startswith("2010")] == ["2010-01-01", "2010-04-01", "2010-07-01", "2010-10-01"]
    assert keys[0] == "2009-10-01"
    assert keys[-1] == "2011-10-01"  # the last quarter that has ended by then
    earlier = quarterly_partitions.get_partition_keys(current_time=datetime(2011, 12, 31, tzinfo=timezone.utc))
    assert earlier[-1] == "2011-07-01"  # 2011-Q4 is not a partition before it ends
    window = quarterly_partitions.time_window_for_partition_key("2010-07-01")
    assert (window.start.date().isoformat(), window.end.date().isoformat()) == ("2010-07-01", "2010-10-01")


def test_dagster_definitions_validate(tmp_path):
    dagster = Path(sys.executable).parent / "dagster"
    assert dagster.exists(), dagster
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "GX_ANALYTICS_ENABLED": "false"}
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    proc = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Validation successful" in proc.stdout + proc.stderr
