"""The customer_value asset: on the shared full run (tests/conftest.py: ~400 generated customers, 8 quarters)
and on data that cannot support a fit (one day of data, one purchase per customer)."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from seg_pipeline.assets.customer_value import customer_value
from seg_pipeline.escaping import markdown
from seg_pipeline.partitions import quarterly_partitions
from seg_pipeline.resources import build_resources
from tests.conftest import read_table

PARAMETERS = {("bgnbd", p) for p in ("r", "alpha", "a", "b")} | {("gamma_gamma", p) for p in ("p", "q", "v")}
PREDICTIONS = ["p_alive", "expected_purchases_13w", "expected_purchases_52w", "expected_avg_order_value", "clv"]


def _states(home) -> dict[str, str]:
    df = read_table(
        home, "SELECT quarter, min(model_state) AS s, count(DISTINCT model_state) AS n FROM customer_value GROUP BY 1"
    )
    assert (df["n"] == 1).all()
    return dict(zip(df["quarter"], df["s"]))


def test_every_customer_of_every_quarter_has_a_row(full_run):
    home, quarters = full_run
    for q in quarters:
        end = (pd.Timestamp(q) + pd.DateOffset(months=3)).to_pydatetime()
        expected = read_table(
            home, "SELECT count(DISTINCT customer_id) AS n FROM cleaned_sales WHERE invoice_date < ?", [end]
        )["n"].iloc[0]
        got = read_table(
            home, "SELECT count(*) AS n, count(DISTINCT customer_id) AS d FROM customer_value WHERE quarter = ?", [q]
        )
        assert got["n"].iloc[0] == got["d"].iloc[0] == expected, q


def test_the_latest_quarter_is_fitted_and_the_first_says_why_not(full_run):
    home, quarters = full_run
    states = _states(home)
    assert states[quarters[-1]] == "fitted"
    assert states[quarters[0]] == "insufficient_data"  # 2009-Q4: one month of data, 3 repeat buyers
    first = read_table(home, "SELECT * FROM customer_value WHERE quarter = ?", [quarters[0]])
    assert first[PREDICTIONS + ["value_at_risk"]].isna().all().all()  # NULL, not numbers that look real
    note = read_table(home, "SELECT DISTINCT note FROM customer_value_parameters WHERE quarter = ?", [quarters[0]])
    assert "repeat buyers" in note["note"].iloc[0]
    latest = read_table(home, "SELECT * FROM customer_value WHERE quarter = ?", [quarters[-1]])
    assert latest[PREDICTIONS].notna().all().all()
    assert latest["p_alive"].between(0, 1).all() and (latest[PREDICTIONS] >= 0).all().all()


def test_parameters_table_has_one_row_per_parameter_per_quarter(full_run):
    home, quarters = full_run
    params = read_table(home, "SELECT * FROM customer_value_parameters")
    assert sorted(params["quarter"].unique()) == sorted(quarters)
    for q, rows in params.groupby("quarter"):
        assert set(zip(rows["model"], rows["parameter"])) == PARAMETERS and len(rows) == 7, q
        assert set(rows["time_unit"]) == {"weeks"}
    fitted = params[params["state"] == "fitted"]
    assert not fitted.empty and (fitted["value"] > 0).all() and fitted["converged"].all()
    assert fitted["log_likelihood"].lt(0).all() and fitted["library_version"].str.match(r"\d+\.\d+").all()


def test_the_model_artifact_records_versions_and_calibration(full_run):
    home, quarters = full_run
    states = _states(home)
    fitted = [q for q in quarters if states[q] == "fitted"]
    for q in fitted:
        art = json.loads((Path(home) / "models" / q / "customer_value.json").read_text())
        assert art["libraries"]["pymc_marketing"] and art["state"] == "fitted"
        assert set(art["models"]) == {"bgnbd", "gamma_gamma"}
        if q == quarters[-1]:
            assert art["calibration"] is None  # no later quarter to compare with
        else:
            c = art["calibration"]
            assert c["holdout_days"] in (90, 91, 92) and c["actual_purchases"] > 0
            assert sum(b["customers"] for b in c["by_frequency"]) == c["customers"]
            assert -1 <= c["correlation"] <= 1


def test_segment_profiles_and_csv_files_show_p_alive_and_clv(full_run):
    home, quarters = full_run
    q = quarters[-1]
    folder = Path(home) / "reports" / q
    profiles = pd.read_csv(folder / "cluster_profiles.csv", dtype={"customer_id": str})
    value = read_table(
        home, "SELECT customer_id, p_alive, expected_purchases_13w, clv FROM customer_value WHERE quarter = ?", [q]
    )
    m = profiles.merge(value, on="customer_id", suffixes=("", "_v"), validate="one_to_one")
    assert len(m) == len(profiles)
    for c in ("p_alive", "expected_purchases_13w", "clv"):
        assert m[c].to_numpy() == pytest.approx(m[f"{c}_v"].to_numpy(), abs=0.01), c
    summary = pd.read_csv(folder / "cluster_summary.csv")
    expected = m.groupby("segment")[["p_alive_v", "clv_v"]].mean()
    for r in summary.itertuples():
        assert r.mean_p_alive == pytest.approx(expected.loc[r.segment, "p_alive_v"], rel=1e-6)
        assert r.mean_clv == pytest.approx(expected.loc[r.segment, "clv_v"], rel=1e-6)
    table = read_table(home, "SELECT segment, mean_p_alive, mean_clv FROM segment_profile WHERE quarter = ?", [q])
    assert table["mean_p_alive"].notna().all()
    md = (folder / "report.md").read_text(encoding="utf-8")
    assert "## Customer value" in md and "plots/p_alive_by_segment.png" in md and "| bgnbd | alpha |" in md


def test_a_quarter_without_a_fit_falls_back_to_revenue_and_says_so(full_run):
    home, quarters = full_run
    q = quarters[0]
    wb = read_table(home, "SELECT * FROM winback_list WHERE quarter = ? ORDER BY rank", [q])
    if not wb.empty:
        assert set(wb["ranked_by"]) == {"revenue_at_risk"} and wb["value_at_risk"].isna().all()
    md = (Path(home) / "reports" / q / "report.md").read_text(encoding="utf-8")
    assert "No customer-value fit for 2009-Q4" in md and "ranked by past revenue" in md
    profiles = pd.read_csv(Path(home) / "reports" / q / "cluster_profiles.csv")
    assert profiles["p_alive"].isna().all()  # empty cells, not NaN text or zeros


# ---------------------------------------------------------------------------- data that cannot support a fit


def _warehouse(tmp_path, rows) -> dict:
    home = tmp_path / "home"
    home.mkdir()
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    df = pd.DataFrame(rows, columns=["customer_id", "invoice", "invoice_date", "line_revenue"])
    con.register("df", df)
    con.execute("CREATE TABLE cleaned_sales AS SELECT * FROM df")
    con.close()
    return build_resources(home, None, None)


@pytest.mark.parametrize(
    "kind, words",
    [("single_day", "single day"), ("one_purchase_each", "bought on one day only")],
)
def test_data_that_cannot_support_a_fit_is_reported_plainly(tmp_path, kind, words):
    if kind == "single_day":  # 60 customers, all on 2011-09-30 (some twice that day: collapsed)
        rows = [
            (f"c{i}", f"i{i}-{j}", datetime(2011, 9, 30, 10 + j), 10.0) for i in range(60) for j in range(1 + i % 2)
        ]
    else:  # 60 customers, one purchase day each, spread over the quarter
        rows = [(f"c{i}", f"i{i}", datetime(2011, 7, 1 + i % 30, 12), 20.0 + i) for i in range(60)]
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    with dg.instance_for_test() as instance:
        if isinstance(quarterly_partitions, dg.DynamicPartitionsDefinition):
            instance.add_dynamic_partitions(quarterly_partitions.name, ["2011-07-01"])
        result = dg.materialize(
            [customer_value],
            partition_key="2011-07-01",
            resources=_warehouse(tmp_path, rows),
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            raise_on_error=False,
        )
    assert result.success  # no traceback, no failure: a plain state
    mat = next(
        m for m in result.asset_materializations_for_node("customer_value") if m.asset_key.path == ["customer_value"]
    )
    assert mat.metadata["model_state"].value == "insufficient_data"
    text = mat.metadata["fit_outcome"].value
    assert words in text and "win-back list is ranked by past revenue" in text
    checks = result.get_asset_check_evaluations()
    assert checks and all(c.passed for c in checks)
    con = duckdb.connect(str(tmp_path / "home" / "warehouse.duckdb"), read_only=True)
    df = con.execute("SELECT * FROM customer_value").df()
    params = con.execute("SELECT * FROM customer_value_parameters").df()
    con.close()
    assert len(df) == 60 and df["p_alive"].isna().all() and (df["model_state"] == "insufficient_data").all()
    assert len(params) == 7 and params["value"].isna().all() and words in params["note"].iloc[0]


# ---------------------------------------------------------------------- a fit that does not converge


def _thin_rows(n: int = 300, silent: int = 25, seed: int = 3) -> list[list[str]]:
    """One quarter (2011-Q3) of sales where most customers bought once or twice, the second time in the
    quarter's last weeks, plus `silent` big spenders who bought once on the quarter's first day (the win-back
    list). On these the BG/NBD estimates run off and the predictions are not finite."""
    rng = np.random.default_rng(seed)
    start, end = datetime(2011, 7, 1), datetime(2011, 9, 30)
    rows = []
    for i in range(n):
        first = start + timedelta(days=int(rng.integers(0, 85)), hours=10)
        days = [first]
        if rng.random() < 0.7:
            days.append(first + timedelta(days=int(max(1, (end - first).days * (0.9 + 0.1 * rng.random())))))
        for j, d in enumerate(days):
            qty, price = str(int(rng.integers(1, 12))), f"{rng.uniform(1, 20):.2f}"
            rows.append(
                [f"5{i:04d}{j}", f"S{i % 37}", "item", qty, f"{d:%Y-%m-%d %H:%M:%S}", price, str(12000 + i), "UK"]
            )
    for i in range(n, n + silent):
        rows.append([f"5{i:04d}0", "S1", "item", "200", "2011-07-01 09:00:00", "9.50", str(12000 + i), "UK"])
    rows.append(["599999", "S1", "item", "1", "2011-09-30 12:00:00", "2.00", "12000", "UK"])  # the quarter's end
    return rows


@pytest.mark.slow  # one more run of the pipeline (one quarter, ~25 s)
def test_a_fit_that_does_not_converge_is_published_and_blocks_nothing(tmp_path, dagster_instance):
    """On thin data the BG/NBD fit runs off: customer_value is published with model_state not_converged and
    the reason, NULL predictions, and the contract passes; segments, migration and insights are published; the
    win-back list is ranked by past revenue and the report says why."""
    from tests.conftest import run
    from tests.pipeline.helpers import write_uci_csv

    source = write_uci_csv(tmp_path / "thin.csv", _thin_rows())
    home = tmp_path / "home"
    assert run(home, source, instance=dagster_instance) == ["2011-07-01"]  # no exception: nothing blocked
    q = "2011-07-01"
    value = read_table(home, "SELECT * FROM customer_value WHERE quarter = ?", [q])
    assert len(value) == 325 and set(value["model_state"]) == {"not_converged"}
    assert value[PREDICTIONS + ["value_at_risk"]].isna().all().all()
    params = read_table(home, "SELECT * FROM customer_value_parameters WHERE quarter = ?", [q])
    assert len(params) == 7 and set(params["state"]) == {"not_converged"} and params["value"].isna().all()
    note = params["note"].iloc[0]
    assert set(params["note"]) == {note} and note.startswith("the fit did not converge: bgnbd: r=")
    assert note.endswith(
        "; the predictions are not finite for 325 of 325 customers (expected_purchases_13w, expected_purchases_52w, "
        "clv, value_at_risk)"
    )
    counts = {
        t: read_table(home, f"SELECT count(*) AS n FROM {t} WHERE quarter = ?", [q])["n"].iloc[0]
        for t in ("segment_assignments", "segment_migration_history", "segment_profile")
    }
    assert counts["segment_assignments"] == counts["segment_migration_history"] == 325
    assert counts["segment_profile"] > 0
    wb = read_table(home, "SELECT * FROM winback_list WHERE quarter = ? ORDER BY rank", [q])
    assert len(wb) == 25 and set(wb["ranked_by"]) == {"revenue_at_risk"} and wb["value_at_risk"].isna().all()
    assert wb["revenue_at_risk"].tolist() == [1900.0] * 25 and wb["customer_id"].tolist() == sorted(wb["customer_id"])
    md = (home / "reports" / q / "report.md").read_text(encoding="utf-8")
    # report.md shows every value as Markdown text (seg_pipeline/escaping.py)
    assert markdown(f"No customer-value fit for 2011-Q3: {note}. P(alive) and CLV are left empty") in md
    assert markdown("Ranked by past revenue (no customer-value fit this quarter)") in md
