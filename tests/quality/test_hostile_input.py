"""Nothing wrong gets through silently: ambiguous dates and ids, numbers that cannot be sales, mappings and
headers that cannot be right, folders with files that are not read, and sources that change under a home."""

from __future__ import annotations

import pandas as pd
import pytest

from seg_pipeline.readers import ColumnMapping, SourceError
from seg_pipeline.sample_data import write_transactions
from tests.conftest import read_table, run
from tests.pipeline.helpers import failure_message, ingest_and_clean, write_uci_csv

CLEANED = "SELECT * FROM cleaned_sales ORDER BY _row_number"


def _line(invoice, date, customer, qty="1", price="2.50", code="85123A"):
    return [invoice, code, "WHITE HANGING HEART", qty, date, price, customer, "United Kingdom"]


def _load(tmp_path, instance, rows, mapping_text=None, name="export.csv"):
    src = write_uci_csv(tmp_path / name, rows)
    mapping = None
    if mapping_text is not None:
        mapping = tmp_path / "mapping.yaml"
        mapping.write_text(mapping_text, encoding="utf-8")
    home = tmp_path / "home"
    result = ingest_and_clean(home, src, instance, mapping=mapping, raise_on_error=False)
    return result, home, src


# ------------------------------------------------------------------------------ 1. ambiguous values


def test_slash_dates_that_cannot_be_told_apart_stop_the_load(tmp_path, dagster_instance):
    rows = [_line(f"5{i:05d}", f"{d:02d}/12/2011 10:45", "12669") for i, d in enumerate(range(1, 13))]
    result, _, src = _load(tmp_path, dagster_instance, rows)
    assert not result.success
    assert (
        f"source {src}: column invoice_date has 12 slash dates such as '01/12/2011 10:45' that read as day/month "
        "or as month/day, and no date in the file has a part above 12 to tell which. Set `date_format:` in the "
        'column mapping file: "%d/%m/%Y %H:%M" (day first) or "%m/%d/%Y %H:%M" (month first)'
    ) in failure_message(result)
    tables = read_table(tmp_path / "home", "SELECT table_name FROM information_schema.tables").table_name
    assert "raw_transactions" not in set(tables)  # nothing was published


def test_the_file_decides_the_slash_date_order(tmp_path, dagster_instance):
    """One date with a day above 12 settles it: every date of the file is read day first (December stays
    December), and the metadata says so."""
    rows = [_line(f"5{i:05d}", f"{d:02d}/12/2011 10:45", "12669") for i, d in enumerate([1, 5, 12, 25])]
    result, home, _ = _load(tmp_path, dagster_instance, rows)
    assert result.success, failure_message(result)
    got = read_table(home, CLEANED)
    assert got.invoice_date.dt.month.tolist() == [12, 12, 12, 12]
    assert got.invoice_date.dt.day.tolist() == [1, 5, 12, 25]
    meta = result.asset_materializations_for_node("raw_transactions")[0].metadata
    assert meta["slash_date_order"].value == {"export.csv": "day/month"}


def test_mixed_slash_date_orders_stop_the_load(tmp_path, dagster_instance):
    rows = [_line("500001", "25/12/2011 10:45", "1"), _line("500002", "12/25/2011 10:45", "1")]
    result, _, _ = _load(tmp_path, dagster_instance, rows)
    assert (
        "column invoice_date mixes day-first and month-first slash dates (1 rows like '25/12/2011 10:45', 1 like '12/25/2011 10:45')"
        in failure_message(result)
    )


def test_numeric_customer_ids_are_one_customer_however_written(tmp_path, dagster_instance):
    rows = [_line("500001", "2011-12-01 10:00:00", "0012669"), _line("500002", "2011-12-02 10:00:00", "12669")]
    rows += [_line("500003", "2011-12-03 10:00:00", "12669.0"), _line("500004", "2011-12-03 10:00:00", " AB-007 ")]
    result, home, _ = _load(tmp_path, dagster_instance, rows)
    assert result.success
    assert read_table(home, CLEANED).customer_id.tolist() == ["12669", "12669", "12669", "AB-007"]

    verbatim = tmp_path / "verbatim"
    verbatim.mkdir()
    result, home, _ = _load(verbatim, dagster_instance, rows, "customer_ids: verbatim\n")
    assert result.success
    assert read_table(home, CLEANED).customer_id.tolist() == ["0012669", "12669", "12669.0", "AB-007"]


# ------------------------------------------------------------------- 2. numbers that cannot be sales


def test_non_finite_and_absurd_numbers_are_rejected_with_their_reason(tmp_path, dagster_instance):
    rows = [_line(f"5{i:05d}", "2011-12-01 10:00:00", str(100 + i % 7), qty=str(1 + i % 5)) for i in range(200)]
    rows[3][5] = "NaN"  # price
    rows[10][3] = "inf"  # quantity
    rows[20][5] = "-Infinity"
    rows[30][5] = "2.5e12"  # a price twelve orders of magnitude beyond the rest
    rows[40][3] = "4000000"  # a quantity six orders beyond
    result, home, _ = _load(tmp_path, dagster_instance, rows)
    assert result.success, failure_message(result)
    rejected = read_table(home, "SELECT _row_number, rejection_reason FROM rejected_sales ORDER BY 1")
    assert rejected.values.tolist() == [
        [4, "non_finite_price"],
        [11, "non_finite_quantity"],
        [21, "non_finite_price"],
        [31, "implausible_price"],
        [41, "implausible_quantity"],
    ]
    kept = read_table(home, CLEANED)
    assert len(kept) == 195
    assert kept.line_revenue.notna().all() and (kept.line_revenue < 100).all()


def test_nan_in_cleaned_sales_is_caught_by_the_contract():
    """The cleaned_sales contract itself refuses non-finite values (in case a rule ever lets one through)."""
    from seg_pipeline.quality.contracts import load_contract

    rules = [r for r in load_contract("cleaned_sales").rules if "finite" in r.rule]
    assert [r.severity for r in rules] == ["error"]


def test_empty_rows_are_skipped_and_counted(tmp_path, dagster_instance):
    rows = [_line("500001", "2011-12-01 10:00:00", "1"), _line("500002", "2011-12-02 10:00:00", "2")]
    rows += [[None] * 8, [""] * 8, ["  "] * 8]
    result, home, _ = _load(tmp_path, dagster_instance, rows)
    assert result.success, failure_message(result)
    assert len(read_table(home, "SELECT * FROM raw_transactions")) == 2
    assert len(read_table(home, CLEANED)) == 2
    meta = result.asset_materializations_for_node("raw_transactions")[0].metadata
    assert meta["empty_rows_skipped"].value == {"export.csv": 3}


# ----------------------------------------------------------------- 3. headers and mappings that cannot be right


def test_mapping_giving_one_column_two_roles_is_refused(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("columns:\n  price: Price\n  quantity: Price\n")
    with pytest.raises(SourceError, match=r"column 'Price' is given two roles, price and quantity"):
        ColumnMapping.from_yaml(m)


def test_unknown_mapping_key_names_the_nearest_one(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("date_fromat: '%d/%m/%Y'\n")
    with pytest.raises(SourceError) as info:
        ColumnMapping.from_yaml(m)
    assert str(info.value) == f"column mapping file {m}: unknown key 'date_fromat' (did you mean 'date_format'?)"


def test_invalid_yaml_names_the_file(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("columns:\n  price: [Price\n")
    with pytest.raises(SourceError, match=rf"column mapping file {m} is not valid YAML \(line \d+, column \d+\)"):
        ColumnMapping.from_yaml(m)


def test_auto_detected_role_yields_to_the_mapping(tmp_path, dagster_instance):
    """`Quantity` mapped as the price: the name-based guess for quantity yields, so quantity is missing and the
    load says so, instead of reading one column twice."""
    rows = [_line("500001", "2011-12-01 10:00:00", "1")]
    result, _, _ = _load(tmp_path, dagster_instance, rows, "columns:\n  price: Quantity\n")
    assert "required column(s) missing: ['quantity']" in failure_message(result)


# ------------------------------------------------------------------------------- 4. folders


def test_folder_reports_what_it_ignored_and_refuses_unreadable_files(tmp_path, dagster_instance, monkeypatch):
    folder = tmp_path / "exports"
    folder.mkdir()
    write_uci_csv(folder / "a.csv", [_line("500001", "2011-12-01 10:00:00", "1")])
    write_uci_csv(folder / "b.csv", [_line("500002", "2011-12-02 10:00:00", "2")])
    (folder / "notes.md").write_text("not data")
    (folder / ".~lock.a.csv#").write_text("lock")
    (folder / "old").mkdir()
    home = tmp_path / "home"
    result = ingest_and_clean(home, folder, dagster_instance)
    meta = result.asset_materializations_for_node("raw_transactions")[0].metadata
    assert meta["files_ignored"].value == {
        ".~lock.a.csv#": "hidden or an editor's lock file",
        "notes.md": "not a data file type (.csv, .csv.gz, .txt, .tsv, .parquet, .xlsx)",
        "old": "a sub-folder (folders are not read recursively)",
    }
    from seg_pipeline.cli import _files_line

    assert _files_line(result) == (
        "source: 2 file(s): 2 loaded, 0 unchanged since the last load; ignored: .~lock.a.csv# (hidden or an "
        "editor's lock file), notes.md (not a data file type (.csv, .csv.gz, .txt, .tsv, .parquet, .xlsx)), "
        "old (a sub-folder (folders are not read recursively))"
    )
    assert read_table(home, "SELECT DISTINCT _source_file FROM raw_transactions ORDER BY 1")._source_file.tolist() == [
        "a.csv",
        "b.csv",
    ]
    real_open = open

    def deny(path, *a, **k):
        if str(path).endswith("b.csv"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", deny)
    result = ingest_and_clean(home, folder, dagster_instance, raise_on_error=False)
    monkeypatch.undo()
    assert f"source {folder / 'b.csv'} cannot be read: Permission denied" in failure_message(result)


# ------------------------------------------------------------------------ 5./6. sources that change


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("two")
    a = write_transactions(d / "a.csv", n_customers=150, seed=21)
    df = pd.read_csv(write_transactions(d / "gen_b.csv", n_customers=150, seed=22), dtype=str, keep_default_na=False)
    # B covers another period (one year later) and other customers
    df["InvoiceDate"] = (pd.to_datetime(df.InvoiceDate) + pd.DateOffset(years=1)).dt.strftime("%Y-%m-%d %H:%M:%S")
    df["Customer ID"] = df["Customer ID"].map(lambda c: f"9{c}" if c else c)
    b = d / "b.csv"
    df.to_csv(b, index=False)
    tiny = d / "tiny.csv"
    df[df["Customer ID"].isin(df["Customer ID"][df["Customer ID"] != ""].unique()[:3])].to_csv(tiny, index=False)
    return a, b, tiny


@pytest.fixture(scope="module")
def home_a(tmp_path_factory, two_sources, dagster_instance):
    """A home after a complete run on source A; each test works on its own copy."""
    home = tmp_path_factory.mktemp("home_a") / "home"
    return home, run(home, two_sources[0], instance=dagster_instance)


def _copy(home_a, tmp_path):
    import shutil

    home = tmp_path / "home"
    shutil.copytree(home_a[0], home)
    return home, home_a[1]


@pytest.mark.slow  # full runs
def test_a_new_source_replaces_every_output_of_the_old_one(tmp_path, two_sources, home_a, dagster_instance):
    _, b, _ = two_sources
    home, done_a = _copy(home_a, tmp_path)
    done_b = run(home, b, instance=dagster_instance)
    assert done_b[0] > done_a[0]
    for table in ("customer_features", "segment_assignments", "segment_migration_history", "clustering_model"):
        quarters = read_table(home, f"SELECT DISTINCT quarter FROM {table} ORDER BY 1").quarter.tolist()
        assert quarters == done_b, table
    assert read_table(home, "SELECT DISTINCT _source_file FROM raw_transactions")._source_file.tolist() == ["b.csv"]
    customers = set(read_table(home, "SELECT DISTINCT customer_id FROM segment_migration_history").customer_id)
    assert all(c.startswith("9") for c in customers)  # no customer of A anywhere
    first = read_table(home, "SELECT from_segment FROM segment_migration_history WHERE quarter = ?", [done_b[0]])
    assert set(first.from_segment) == {"new"}
    assert (home / "superseded").is_dir()  # A's models and reports kept aside, not deleted
    # A's quarters that B covers were superseded when B's sales were published; rebuilding took each off
    assert read_table(home, "SELECT count(*) AS n FROM _superseded_quarters").n.iloc[0] == 0


@pytest.mark.slow  # a full run, then a failing one
def test_a_failed_run_on_a_new_source_leaves_a_consistent_home(tmp_path, two_sources, home_a, dagster_instance):
    import click

    _, _, tiny = two_sources
    home, _ = _copy(home_a, tmp_path)
    with pytest.raises(click.ClickException):
        run(home, tiny, instance=dagster_instance)
    raw = read_table(home, "SELECT DISTINCT _source_file FROM raw_transactions")._source_file.tolist()
    assert raw == ["tiny.csv"]
    # A's quarters the new sales do not cover are gone; those they cover stay exactly as published, marked
    # superseded, until rebuilt (a failed step removes nothing); whatever was rebuilt is B's alone
    sql = "SELECT quarter, customer_id, segment FROM segment_assignments ORDER BY ALL"
    got, old = read_table(home, sql), read_table(home_a[0], sql)
    stale = read_table(home, "SELECT quarter FROM _superseded_quarters WHERE table_name = 'segment_assignments'")
    stale = set(stale.quarter)
    assert all(c.startswith("9") for c in got[~got.quarter.isin(stale)].customer_id)
    assert (
        got[got.quarter.isin(stale)].reset_index(drop=True).equals(old[old.quarter.isin(stale)].reset_index(drop=True))
    )
    assert set(read_table(home, "SELECT DISTINCT customer_id FROM cleaned_sales").customer_id) <= {
        c
        for c in read_table(home, "SELECT customer_id FROM raw_transactions").customer_id.dropna().str.replace(".0", "")
    }


@pytest.mark.slow  # a full run, then a new source that fails cleaning
def test_a_new_source_that_fails_cleaning_keeps_the_old_outputs_and_summary_says_so(
    tmp_path, two_sources, home_a, dagster_instance
):
    import click

    from seg_pipeline.insights.summary import latest_summary

    _, b, _ = two_sources
    home, done = _copy(home_a, tmp_path)
    before = read_table(home, "SELECT * FROM segment_assignments ORDER BY quarter, customer_id")
    bad = tmp_path / "b_negative.csv"
    df = pd.read_csv(b, dtype=str, keep_default_na=False)
    df["Price"] = "-1.00"
    df.to_csv(bad, index=False)
    with pytest.raises(click.ClickException, match="step cleaned_sales"):
        run(home, bad, instance=dagster_instance)
    after = read_table(home, "SELECT * FROM segment_assignments ORDER BY quarter, customer_id")
    pd.testing.assert_frame_equal(after, before)  # the last good outputs are intact
    quarter, _, _, headline = latest_summary(home / "warehouse.duckdb")
    assert quarter == done[-1]
    assert (
        "Note: raw_transactions holds b_negative.csv, which has not passed cleaning yet: these segments are of "
        "the sales published before it"
    ) in headline
