"""data_contracts/segment_insights.yaml: passes on what the full run published, and each planted fault
breaks exactly the rule written for it."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from seg_pipeline.assets.insights import InsightsConfig
from seg_pipeline.ml.naming import descriptive_names, segment_names
from seg_pipeline.quality.gate import run_contract

TABLES = ["segment_profile", "store_concentration", "winback_list"]


@pytest.fixture(scope="module")
def staged(full_run, tmp_path_factory):
    """A writable copy of the full run's warehouse with the latest quarter's insight tables staged."""
    home, quarters = full_run
    q = quarters[-1]
    copy = tmp_path_factory.mktemp("insights_contract")
    shutil.copy(Path(home) / "warehouse.duckdb", copy / "warehouse.duckdb")
    con = duckdb.connect(str(copy / "warehouse.duckdb"))
    for t in TABLES:
        con.execute(f"CREATE TABLE __stage_{t} AS SELECT * FROM {t} WHERE quarter = ?", [q])
    cfg = InsightsConfig()
    revenue = con.execute("SELECT sum(monetary) FROM customer_features WHERE quarter = ?", [q]).fetchall()[0][0]
    winback_min = con.execute(
        "SELECT quantile_cont(monetary, ?) FROM customer_features WHERE quarter = ?", [cfg.winback_revenue_quantile, q]
    ).fetchall()[0][0]
    params = {
        "segment_names": segment_names() + descriptive_names(),  # a label: a catalogue or a descriptive name
        "assigned_customers": con.execute("SELECT count(*) FROM segment_assignments WHERE quarter = ?", [q]).fetchall()[
            0
        ][0],
        "assigned_revenue": revenue,
        "store_table": "__stage_store_concentration",
        "winback_table": "__stage_winback_list",
        "store_threshold": cfg.store_dependence_threshold,
        "min_store_customers": cfg.min_store_customers,
        "winback_min_days": cfg.winback_min_days,
        "winback_min_revenue": winback_min,
        "quarter": q,
    }
    yield con, params
    con.close()


def test_contract_passes_on_the_published_output(staged):
    con, params = staged
    assert con.execute("SELECT count(*) FROM __stage_winback_list").fetchall()[0][0] > 1  # the order rules have work
    outcome = run_contract(con, "segment_insights", "__stage_segment_profile", params)
    assert [o.sentence() for o in outcome.failed] == []


# (table, SQL corrupting its copy {bad}, the rule that must fail)
FAULTS = {
    "winback order": (
        "winback_list",
        "UPDATE {bad} SET rank = CASE rank WHEN 1 THEN 2 WHEN 2 THEN 1 ELSE rank END",
        "win-back list is ordered by value at risk, or by revenue at risk without a customer-value fit (rank 1 = the most)",
    ),
    "winback rank gap": (
        "winback_list",
        "UPDATE {bad} SET rank = rank + 1 WHERE rank = (SELECT max(rank) FROM {bad})",
        "win-back ranks are 1..n, each once",
    ),
    "recent customer on the win-back list": (
        "winback_list",
        "UPDATE {bad} SET recency_days = 3 WHERE rank = 1",
        "every win-back customer is high-value and has not bought for the configured days",
    ),
    "store flag disagrees with the rule": (
        "store_concentration",
        "UPDATE {bad} SET flagged = NOT flagged WHERE store = (SELECT min(store) FROM {bad})",
        "a store is flagged exactly when its top 10 customers pass the threshold and it has enough customers",
    ),
    "store share above 1": (
        "store_concentration",
        "UPDATE {bad} SET top10pct_revenue_share = 1.5, largest_customer_share = 0.1",
        "store shares are within [0, 1]",
    ),
    "segment twice": (
        "segment_profile",
        "INSERT INTO {bad} SELECT * FROM {bad} LIMIT 1",
        "one row per segment",
    ),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_each_fault_breaks_its_rule(staged, fault):
    con, params = staged
    table, sql, rule = FAULTS[fault]
    bad = f"__stage_{table}_bad"
    con.execute(f"CREATE OR REPLACE TABLE {bad} AS SELECT * FROM __stage_{table}")
    con.execute(sql.replace("{bad}", bad))
    p = dict(params)
    batch = "__stage_segment_profile"
    if table == "segment_profile":
        batch = bad
    else:
        p["store_table" if table == "store_concentration" else "winback_table"] = bad
    outcome = run_contract(con, "segment_insights", batch, p)
    failed = {o.rule for o in outcome.failed}
    assert rule in failed, [o.sentence() for o in outcome.failed]
    assert outcome.blocking
    con.execute(f"DROP TABLE {bad}")
