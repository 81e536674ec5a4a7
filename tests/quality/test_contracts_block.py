"""Every data contract passes on good output and blocks on bad output.

- passing: the full run of the shared small data materialised all seven assets, and each contract, run
  again on the published output of the latest quarter, passes every rule;
- failing: for each contract, a staged table corrupted on purpose (a few rows) fails with the rule, the
  column and the exact number of rows; ERROR rules block, WARN rules do not;
- end to end: with one contract tightened, a real Dagster run stops at that asset with a message naming
  the asset and the rule; nothing downstream changes and the staged candidate is kept for inspection.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import dagster as dg
import pytest
import yaml

from seg_pipeline.assets.features import feature_params
from seg_pipeline.assets.model import ModelConfig
from seg_pipeline.quality import contracts, gate
from seg_pipeline.quality.gate import run_contract
from tests.conftest import run
from tests.quality.conftest import ASSETS, LATEST, connect, snapshot, tables

QUARTERLY = ASSETS[2:]


# ------------------------------------------------------------------------------------------------- passing


def test_full_run_materialised_all_seven_assets_for_the_latest_quarter(full_run):
    home, quarters = full_run
    latest = quarters[-1]
    con = connect(home)
    try:
        names = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        assert set(ASSETS) <= names
        for t in ASSETS[:2]:
            assert con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] > 0, t
        for t in QUARTERLY:
            assert con.execute(f"SELECT count(*) FROM {t} WHERE quarter = ?", [latest]).fetchall()[0][0] > 0, t
        # a successful run leaves no staged candidate behind
        assert not [n for n in names if n.startswith("__stage_")]
    finally:
        con.close()


@pytest.fixture(scope="module")
def warehouse(full_run, tmp_path_factory):
    """A writable copy of the full run's warehouse, with each asset's latest-quarter output staged the way
    the asset stages it (`__stage_<table>`), and the parameters each asset gives its contract."""
    home, quarters = full_run
    latest, previous = quarters[-1], quarters[-2]
    copy = tmp_path_factory.mktemp("contracts_block")
    shutil.copy(Path(home) / "warehouse.duckdb", copy / "warehouse.duckdb")
    con = connect(copy, read_only=False)
    for t in ["raw_transactions", "cleaned_sales", "rejected_sales"]:
        con.execute(f"CREATE TABLE __stage_{t} AS SELECT * FROM {t}")
    for t in QUARTERLY + ["segment_summary"]:
        con.execute(f"CREATE TABLE __stage_{t} AS SELECT * FROM {t} WHERE quarter = ?", [latest])
    con.execute(  # what cleaning stages beside its output: each file's invoice rule
        "CREATE TABLE __batch_files AS SELECT _source_file, _sheet, any_value(_invoice_rule) AS _invoice_rule, "
        "count(*) AS rows FROM raw_transactions GROUP BY ALL"
    )

    def n(sql, p=()):
        return con.execute(sql, list(p)).fetchall()[0][0]

    def names(q):
        return [
            r[0]
            for r in con.execute(
                "SELECT DISTINCT segment FROM segment_assignments WHERE quarter = ? ORDER BY 1", [q]
            ).fetchall()
        ]

    fp = feature_params(latest, 12)
    model = ModelConfig()
    features_rows = n("SELECT count(*) FROM customer_features WHERE quarter = ?", [latest])
    params = {
        "raw_transactions": {},
        "cleaned_sales": {
            "rejected_table": "__stage_rejected_sales",
            "raw_rows": n("SELECT count(*) FROM raw_transactions"),
            "batch_files": "__batch_files",
        },
        "customer_features": {"lookback_days": (fp["as_of_end"] - fp["window_start"]).days},
        "scaled_matrix": {"customer_features_rows": features_rows, "mean_tolerance": 1e-6},
        "clustering_model": {
            "business_k_min": model.business_k_min,
            "business_k_max": model.business_k_max,
            "silhouette_floor": model.silhouette_floor,
            "min_cluster_share": model.min_cluster_share,
        },
        "segment_assignments": {
            "customer_features_rows": features_rows,
            "segment_names": names(latest),
            "model_version": con.execute(
                "SELECT any_value(model_version) FROM segment_assignments WHERE quarter = ?", [latest]
            ).fetchall()[0][0],
            "summary_table": "__stage_segment_summary",
        },
        "segment_migration_history": {
            "from_segments": names(previous) + ["new", "returning"],
            "to_segments": names(latest) + ["lapsed"],
            "quarter": latest,
            "quarter_start": latest,
            "features_table": "customer_features",
            "previous_customers": n("SELECT count(*) FROM segment_assignments WHERE quarter = ?", [previous]),
            "current_customers": n("SELECT count(*) FROM segment_assignments WHERE quarter = ?", [latest]),
            "to_model_version": con.execute(
                "SELECT coalesce(any_value(model_version), '') FROM segment_assignments WHERE quarter = ?", [latest]
            ).fetchall()[0][0],
        },
    }
    yield con, params
    con.close()


@pytest.mark.parametrize("asset", ASSETS)
def test_contract_passes_on_the_published_output(warehouse, asset):
    con, params = warehouse
    outcome = run_contract(con, asset, f"__stage_{asset}", params[asset])
    assert outcome.rows > 0
    assert [o.sentence() for o in outcome.failed] == []
    assert not outcome.blocking
    check = outcome.check_result()
    assert check.passed and check.description.startswith(f"All {len(outcome.outcomes)} rules of {asset}.yaml passed")


# ------------------------------------------------------------------------------------------------- failing

# asset -> (SQL corrupting a copy {bad} of the staged output, failed rule, its column, rows it must report as breaking it).
# Each corruption breaks exactly one rule of the contract.
CORRUPTIONS = {
    "raw_transactions": (
        "UPDATE {bad} SET invoice = NULL WHERE _row_number IN (SELECT _row_number FROM {bad} ORDER BY _row_number LIMIT 3)",
        "invoice is present on every row (of a file of sales lines; an order-level export has none)",
        "invoice",
        3,
    ),
    "cleaned_sales": (
        # line revenue stays consistent (0 x price = 0): only "quantity > 0" is broken
        "UPDATE {bad} SET quantity = 0, line_revenue = 0 WHERE _row_number IN (SELECT _row_number FROM {bad} ORDER BY _row_number LIMIT 2)",
        "quantity > 0",
        "quantity",
        2,
    ),
    "customer_features": (
        "UPDATE {bad} SET recency_days = -1 WHERE customer_id = (SELECT min(customer_id) FROM {bad})",
        "0 <= recency_days <= look-back window",
        "recency_days",
        1,
    ),
    "scaled_matrix": (
        # one customer id given to a second row: both rows of the pair are duplicates (GX counts both)
        "UPDATE {bad} SET customer_id = (SELECT min(customer_id) FROM {bad}) "
        "WHERE customer_id = (SELECT max(customer_id) FROM {bad})",
        "customer id is unique",
        "customer_id",
        2,
    ),
    "clustering_model": (
        "UPDATE {bad} SET inertia = -1 WHERE NOT chosen AND k = (SELECT min(k) FROM {bad})",
        "inertia is not negative",
        "inertia",
        1,
    ),
    "segment_assignments": (
        # three customers of one cluster get a name outside the catalogue (still one cluster per name)
        "UPDATE {bad} SET segment = 'Bogus Segment' WHERE customer_id IN "
        "(SELECT customer_id FROM {bad} WHERE cluster = (SELECT min(cluster) FROM {bad}) ORDER BY customer_id LIMIT 3)",
        "labels are catalogue names or descriptive names",
        "segment",
        3,
    ),
    "segment_migration_history": (
        "UPDATE {bad} SET to_segment = 'Nowhere' WHERE customer_id IN "
        "(SELECT customer_id FROM {bad} WHERE to_segment <> 'lapsed' ORDER BY customer_id LIMIT 2)",
        "to-segment is a segment of this quarter or 'lapsed'",
        "to_segment",
        2,
    ),
}


def test_a_cancellation_left_in_a_uci_file_fails_the_contract_and_an_export_id_does_not(warehouse):
    """The cancellation rule of the contract follows each file's invoice rule: a C... invoice kept from a file
    in the UCI layout is an error; the same id in a file of another export (no invoice rule) is a sale."""
    con, params = warehouse
    sql = "UPDATE {bad} SET invoice = 'C' || invoice WHERE _row_number IN (SELECT _row_number FROM {bad} ORDER BY _row_number LIMIT 2)"
    bad = _corrupted(con, "cleaned_sales", sql)
    outcome = run_contract(con, "cleaned_sales", bad, params["cleaned_sales"])
    assert [(o.column, o.unexpected_count) for o in outcome.failed] == [("invoice", 2)]
    assert outcome.failed[0].rule.startswith("no cancellation or adjustment invoice where the file's invoice numbers")
    con.execute(
        "CREATE OR REPLACE TABLE __batch_files_export AS SELECT * REPLACE (CAST(NULL AS VARCHAR) AS _invoice_rule) FROM __batch_files"
    )
    outcome = run_contract(
        con, "cleaned_sales", bad, {**params["cleaned_sales"], "batch_files": "__batch_files_export"}
    )
    assert outcome.failed == []


def _corrupted(con, asset: str, sql: str) -> str:
    bad = f"__stage_{asset}_bad"
    con.execute(f"CREATE OR REPLACE TABLE {bad} AS SELECT * FROM __stage_{asset}")
    con.execute(sql.format(bad=bad))
    return bad


@pytest.mark.parametrize("asset", ASSETS)
def test_corrupted_output_fails_its_contract_and_blocks(warehouse, asset):
    con, params = warehouse
    sql, rule, column, rows = CORRUPTIONS[asset]
    bad = _corrupted(con, asset, sql)
    outcome = run_contract(con, asset, bad, params[asset])
    assert [(o.rule, o.column, o.unexpected_count) for o in outcome.failed] == [(rule, column, rows)]
    assert outcome.blocking
    failed = outcome.failed[0]
    assert failed.severity == "error" and failed.error is None and failed.examples
    msg = outcome.failure_message()
    total = outcome.rows
    assert msg.splitlines()[0] == (
        f"{asset}: data contract {asset}.yaml failed on {total:,} rows"
        + (f" from {outcome.source}" if outcome.source else "")
        + " - nothing downstream runs; the published table is unchanged."
    )
    assert f"[ERROR] {rule} (column {column}): FAILED: {rows:,} row(s) break it ({100 * rows / total:.2f}%)" in msg
    check = outcome.check_result()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["rules_failed"].value == 1
    assert check.metadata["failed_rules"].value[0]["unexpected_count"] == rows


def test_gate_raises_a_dagster_failure_that_carries_the_message(warehouse):
    """The asset-side wrapper: the check result is yielded first, then dagster.Failure stops the asset."""
    con, params = warehouse
    sql, rule, column, rows = CORRUPTIONS["customer_features"]
    bad = _corrupted(con, "customer_features", sql)
    from seg_pipeline.assets.common import gate as asset_gate

    results = []
    # `with`: the context owns an ephemeral Dagster instance (two in-memory SQLite storages); closing it here
    # disposes them now instead of leaving it to the garbage collector, whose SQLAlchemy connection finalizer
    # and the context's __del__ would each close the same connection ("Cannot operate on a closed database").
    with dg.build_asset_context() as context, pytest.raises(dg.Failure) as exc:
        for r in asset_gate(context, con, "customer_features", bad, params["customer_features"]):
            results.append(r)
    assert len(results) == 1 and not results[0].passed
    assert f"[ERROR] {rule} (column {column}): FAILED: 1 row(s) break it" in exc.value.description
    assert exc.value.metadata["staged_table"].value == bad


def test_raw_customer_id_under_half_warns_but_does_not_block(warehouse):
    con, params = warehouse
    bad = _corrupted(con, "raw_transactions", "UPDATE {bad} SET customer_id = NULL WHERE _row_number % 10 < 7")
    nulls = con.execute(f"SELECT count(*) FROM {bad} WHERE customer_id IS NULL").fetchall()[0][0]
    outcome = run_contract(con, "raw_transactions", bad, params["raw_transactions"])
    assert [(o.rule, o.severity, o.unexpected_count) for o in outcome.failed] == [
        ("customer id is present on at least half the rows (UCI exports miss about 23%)", "warn", nulls)
    ]
    assert not outcome.blocking
    assert outcome.failure_message().splitlines()[0].endswith("(warnings only).")
    assert outcome.check_result().severity == dg.AssetCheckSeverity.WARN


def test_raw_a_few_non_numeric_quantities_warn_but_do_not_block(warehouse):
    """Under 1% of rows: a warning (cleaning rejects those rows as unparseable_quantity); the 99% rule holds."""
    con, params = warehouse
    bad = _corrupted(
        con,
        "raw_transactions",
        "UPDATE {bad} SET quantity = 'twelve', quantity_value = NULL "
        "WHERE _row_number IN (SELECT _row_number FROM {bad} ORDER BY _row_number LIMIT 3)",
    )
    outcome = run_contract(con, "raw_transactions", bad, params["raw_transactions"])
    assert [(o.column, o.severity, o.unexpected_count) for o in outcome.failed] == [("quantity", "warn", 3)]
    assert not outcome.blocking
    assert "data row 1: quantity='twelve'" in outcome.failure_message()


def test_raw_non_numeric_quantities_on_over_1pct_of_rows_block(warehouse):
    con, params = warehouse
    bad = _corrupted(
        con,
        "raw_transactions",
        "UPDATE {bad} SET quantity = 'twelve', quantity_value = NULL WHERE _row_number % 50 = 0",
    )  # 2%
    n = con.execute(f"SELECT count(*) FROM {bad} WHERE quantity_value IS NULL").fetchall()[0][0]
    outcome = run_contract(con, "raw_transactions", bad, params["raw_transactions"])
    assert sorted((o.column, o.severity, o.unexpected_count) for o in outcome.failed) == [
        ("quantity", "warn", n),
        ("quantity_value", "error", n),
    ]
    assert outcome.blocking


def test_clustering_silhouette_floor_and_min_cluster_share_warn_but_do_not_block(warehouse):
    con, params = warehouse
    bad = _corrupted(
        con, "clustering_model", "UPDATE {bad} SET silhouette = 0.05, min_cluster_share = 0.001 WHERE chosen"
    )
    outcome = run_contract(con, "clustering_model", bad, params["clustering_model"])
    assert [(o.rule, o.severity, o.unexpected_count) for o in outcome.failed] == [
        ("silhouette of the chosen k >= the configured floor", "warn", 1),
        ("no cluster smaller than the configured share of customers", "warn", 1),
    ]
    assert not outcome.blocking
    check = outcome.check_result()
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    # the violating row is shown
    assert "silhouette" in outcome.failed[0].examples[0] and "0.05" in str(outcome.failed[0].examples[0])


def test_clustering_more_than_one_chosen_k_blocks(warehouse):
    con, params = warehouse
    bad = _corrupted(con, "clustering_model", "UPDATE {bad} SET chosen = true WHERE k = (SELECT max(k) FROM {bad})")
    outcome = run_contract(con, "clustering_model", bad, params["clustering_model"])
    failed = {o.rule for o in outcome.failed if o.severity == "error"}
    assert "exactly one k is chosen" in failed and outcome.blocking


# ---------------------------------------------------------------------------------------------- end to end


def _tightened(tmp_path: Path, asset: str, edit) -> Path:
    """A copy of data_contracts/ in which `edit(contract_dict)` changed the asset's contract."""
    d = tmp_path / "contracts"
    shutil.copytree(contracts.CONTRACTS_DIR, d)
    p = d / f"{asset}.yaml"
    data = yaml.safe_load(p.read_text(encoding="utf-8"))
    edit(data)
    p.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return d


def _use_contracts(monkeypatch, directory: Path):
    real = contracts.load_contract
    monkeypatch.setattr(gate, "load_contract", lambda asset: real(asset, directory=directory))


QUARTER_TABLES = [
    "customer_features",
    "scaled_matrix",
    "scaled_matrix_columns",
    "clustering_model",
    "segment_assignments",
    "segment_summary",
    "segment_migration_history",
]


def _quarter_snapshot(home: Path, quarter: str) -> dict:
    """Per table: row count and content hash of the quarter's rows. clustering_model.artifact_path is left out:
    it is the absolute path of the artifact in the home that wrote it (the baseline, for a copied home)."""
    con = connect(home)
    try:
        return {
            t: con.execute(
                f"SELECT count(*), coalesce(sum(hash(x)::HUGEINT), 0) FROM "
                f"(SELECT * {'EXCLUDE (artifact_path)' if t == 'clustering_model' else ''} FROM {t} WHERE quarter = ?) AS x",
                [quarter],
            ).fetchall()[0]
            for t in QUARTER_TABLES
        }
    finally:
        con.close()


def test_tightened_customer_features_contract_blocks_a_real_run(
    home_copy, good_csv, tmp_path, monkeypatch, quality_instance
):
    def edit(c):
        for e in c["expectations"]:
            if e["rule"] == "monetary > 0":
                e["rule"] = "monetary >= 1e12 (tightened by the test)"
                e["kwargs"] = {"column": "monetary", "min_value": 1e12}

    _use_contracts(monkeypatch, _tightened(tmp_path, "customer_features", edit))
    before, before_all = _quarter_snapshot(home_copy, LATEST), snapshot(home_copy)
    customers = before["customer_features"][0]

    with pytest.raises(click.ClickException) as exc:
        run(home_copy, good_csv, quarters=LATEST, instance=quality_instance)
    msg = exc.value.message
    print(f"\n[tightened customer_features] {msg[:600]}")
    assert msg.startswith(
        f"quarter {LATEST} failed: step customer_features: customer_features: data contract "
        f"customer_features.yaml failed on {customers:,} rows - nothing downstream runs"
    )
    assert (
        f"[ERROR] monetary >= 1e12 (tightened by the test) (column monetary): FAILED: {customers:,} row(s) "
        "break it (100.00%)"
    ) in msg
    # nothing of the quarter changed, customer_features included; the other tables are intact too
    assert _quarter_snapshot(home_copy, LATEST) == before
    assert snapshot(home_copy) == before_all
    # the rejected candidate is kept for inspection, with the rows that were validated
    assert "__stage_customer_features" in tables(home_copy)
    con = connect(home_copy)
    try:
        assert con.execute("SELECT count(*) FROM __stage_customer_features").fetchall()[0][0] == customers
    finally:
        con.close()


def test_tightened_segment_assignments_contract_blocks_a_real_run(
    home_copy, good_csv, tmp_path, monkeypatch, quality_instance
):
    def edit(c):
        for e in c["expectations"]:
            if e["rule"] == "labels are catalogue names or descriptive names":
                e["kwargs"] = {"column": "segment", "value_set": ["Nobody"]}

    _use_contracts(monkeypatch, _tightened(tmp_path, "segment_assignments", edit))
    before, before_all = _quarter_snapshot(home_copy, LATEST), snapshot(home_copy)
    customers = before["segment_assignments"][0]

    with pytest.raises(click.ClickException) as exc:
        run(home_copy, good_csv, quarters=LATEST, instance=quality_instance)
    msg = exc.value.message
    print(f"\n[tightened segment_assignments] {msg[:600]}")
    assert msg.startswith(
        f"quarter {LATEST} failed: step segment_assignments: segment_assignments: data contract "
        "segment_assignments.yaml failed"
    )
    assert (
        f"[ERROR] labels are catalogue names or descriptive names (column "
        f"segment): FAILED: {customers:,} row(s) break it (100.00%)"
    ) in msg
    after = _quarter_snapshot(home_copy, LATEST)
    # upstream was re-materialised from the same data: same rows (content only up to float rounding: DuckDB's
    # parallel sum of doubles may differ in the last bit from one run to the next) ...
    for t in ["customer_features", "scaled_matrix", "scaled_matrix_columns", "clustering_model"]:
        assert after[t][0] == before[t][0], t
    # ... and the failing asset, its companion table and everything downstream were not touched
    for t in ["segment_assignments", "segment_summary", "segment_migration_history"]:
        assert after[t] == before[t], t
    # every other published table (the insight tables downstream included) is exactly as it was
    after_all = snapshot(home_copy, list(before_all))
    rematerialised = {"customer_features", "scaled_matrix", "scaled_matrix_columns", "clustering_model"}
    assert {t: v for t, v in after_all.items() if t not in rematerialised} == {
        t: v for t, v in before_all.items() if t not in rematerialised
    }
    assert "__stage_segment_assignments" in tables(home_copy)
    assert "__stage_segment_migration_history" not in tables(home_copy)  # downstream never ran
