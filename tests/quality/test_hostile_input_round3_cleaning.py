"""One odd row changes only its own line: the UCI invoice prefixes apply to the UCI layout only, a rule that
rejects most of a file is called out, every rule gives the same verdict whether the rows arrive in one load
or in two, and neither stray rows nor late rows move the quarters or leave a segmented quarter stale silently."""

from __future__ import annotations

import logging
import shutil

import click
import duckdb
import pandas as pd
import pytest

from seg_pipeline.cli import run_pipeline
from seg_pipeline.readers import ColumnMapping, SourceError
from tests.conftest import read_table
from tests.pipeline.helpers import UCI_COLUMNS, failure_message, ingest_and_clean, write_uci_csv

EXPORT = ["order_ref", "sku_code", "item_name", "units", "ordered_at", "unit_cost", "client", "nation"]
EXPORT_MAPPING = (
    "columns: {invoice: order_ref, stock_code: sku_code, description: item_name, quantity: units, "
    "invoice_date: ordered_at, price: unit_cost, customer_id: client, country: nation}\n"
)
REJECTED = "SELECT _source_file, _row_number, rejection_reason FROM rejected_sales ORDER BY 1, 2"


def _line(invoice, date="2011-06-01 10:00:00", customer="12669", qty="2", price="2.50", code="85123A"):
    return [invoice, code, "WHITE HANGING HEART", qty, date, price, customer, "United Kingdom"]


def _meta(result, asset: str = "cleaned_sales") -> dict:
    mats = [m for m in result.asset_materializations_for_node("cleaned_sales") if m.asset_key.to_user_string() == asset]
    return {k: v.value for k, v in mats[0].metadata.items()}


def _mapping(tmp_path, text: str):
    path = tmp_path / "mapping.yaml"
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------- A. the UCI invoice prefixes belong to the UCI layout


def test_a_mapped_export_keeps_its_c_and_a_invoices(tmp_path, dagster_instance):
    """CS-1042 and AMZ-... are ordinary order ids of another export: kept. Its return (a negative quantity
    without any prefix rule) is rejected as non_positive_quantity."""
    invoices = ["CS-1042", "CS-1043", "AMZ-77", "AMZ-78", "CS-1044", "AMZ-79", "CS-1045", "B-1", "B-2", "B-3"]
    rows = [_line(inv, customer=str(100 + i)) for i, inv in enumerate(invoices)]
    rows[9][3] = "-2"
    src = write_uci_csv(tmp_path / "shop.csv", rows, columns=EXPORT)
    result = ingest_and_clean(tmp_path / "home", src, dagster_instance, mapping=_mapping(tmp_path, EXPORT_MAPPING))
    assert result.success, failure_message(result)
    kept = read_table(tmp_path / "home", "SELECT invoice FROM cleaned_sales ORDER BY _row_number").invoice.tolist()
    assert kept == invoices[:9]
    assert read_table(tmp_path / "home", REJECTED).values.tolist() == [["shop.csv", 10, "non_positive_quantity"]]
    assert (
        read_table(tmp_path / "home", "SELECT DISTINCT _invoice_rule FROM raw_transactions")._invoice_rule.isna().all()
    )
    assert _meta(result)["rules_rejecting_most_of_a_file"] == "none"


def test_a_uci_file_still_rejects_c_and_a_invoices(tmp_path, dagster_instance):
    """The UCI layout (its column names), with or without a mapping that only says how to read the file."""
    rows = [_line("C536379", qty="-1"), _line("A563185", qty="1", price="-11062.06"), _line("536365")]
    rows += [_line("CS-1042")]  # in the UCI layout a C invoice is a cancellation, whatever follows
    src = write_uci_csv(tmp_path / "uci.csv", rows, sep=";")
    result = ingest_and_clean(tmp_path / "home", src, dagster_instance, mapping=_mapping(tmp_path, 'delimiter: ";"\n'))
    assert result.success, failure_message(result)
    assert read_table(tmp_path / "home", REJECTED).values.tolist() == [
        ["uci.csv", 1, "cancellation"],
        ["uci.csv", 2, "adjustment"],
        ["uci.csv", 4, "cancellation"],
    ]
    assert read_table(tmp_path / "home", "SELECT invoice FROM cleaned_sales").invoice.tolist() == ["536365"]


def test_a_mapping_declares_its_own_cancellation_prefix(tmp_path, dagster_instance):
    rows = [_line("RET-9", qty="3"), _line("CS-1042"), _line("AMZ-1"), _line("ret-10")]
    src = write_uci_csv(tmp_path / "shop.csv", rows, columns=EXPORT)
    mapping = _mapping(tmp_path, EXPORT_MAPPING + 'cancellations: {invoice_prefix: "RET"}\n')
    result = ingest_and_clean(tmp_path / "home", src, dagster_instance, mapping=mapping)
    assert result.success, failure_message(result)
    assert read_table(tmp_path / "home", REJECTED).values.tolist() == [
        ["shop.csv", 1, "cancellation"],
        ["shop.csv", 4, "cancellation"],
    ]
    assert read_table(tmp_path / "home", "SELECT invoice FROM cleaned_sales ORDER BY 1").invoice.tolist() == [
        "AMZ-1",
        "CS-1042",
    ]


def test_cancellations_key_is_checked(tmp_path):
    path = _mapping(tmp_path, "cancellations: {prefix: C}\n")
    with pytest.raises(SourceError, match=r"`cancellations:` must be uci, none or \{invoice_prefix: \"X\"\}"):
        ColumnMapping.from_yaml(path)
    assert ColumnMapping.from_yaml(_mapping(tmp_path, "cancellations: uci\n")).cancellations == "uci"


def test_a_rule_rejecting_most_of_a_file_is_called_out(tmp_path, dagster_instance, capsys):
    """7 of 10 lines of a UCI-named file start with C: rejected as cancellations, and said loudly with the
    file, the rule, the count and the share: in the metadata, the run log and the CLI output."""
    rows = [_line(f"C{536000 + i}", date=f"2011-06-0{1 + i % 5} 10:00:00") for i in range(7)]
    rows += [_line(f"{537000 + i}") for i in range(3)]
    src = write_uci_csv(tmp_path / "export.csv", rows)
    expected = (
        "export.csv: the rule cancellation rejects 7 of its 10 rows (70.0%), more than 50%: check that the rule "
        "fits this file (README, 'What is never guessed'); the rows are in rejected_sales"
    )
    result = ingest_and_clean(tmp_path / "home", src, dagster_instance)
    assert result.success
    assert _meta(result)["rules_rejecting_most_of_a_file"] == [expected]
    warnings = [r.user_message for r in dagster_instance.all_logs(result.run_id) if r.level == logging.WARNING]
    assert expected in warnings
    # the CLI says it too (one week of data covers no quarter: the run stops right after cleaning)
    with pytest.raises(click.ClickException, match="covers no complete quarter"):
        run_pipeline(tmp_path / "home2", source=str(src), quarters="all", instance=dagster_instance)
    assert f"warning: {expected}" in " ".join(capsys.readouterr().out.split())


# ------------------------------------------------- B. the same verdicts in one load or in two (arrival order)


def _both_ways(tmp_path, instance, files: dict[str, list[list[str]]], first: list[str]):
    """Load `files` (name -> rows, UCI columns) once all together and once `first` then the rest added;
    return (incremental home, full home, the incremental second run)."""
    src = tmp_path / "files"
    src.mkdir()
    for name, rows in files.items():
        if name.endswith(".xlsx"):
            with pd.ExcelWriter(src / name, engine="openpyxl") as writer:
                for sheet, sheet_rows in rows:
                    pd.DataFrame(sheet_rows, columns=UCI_COLUMNS).to_excel(writer, sheet_name=sheet, index=False)
        else:
            write_uci_csv(src / name, rows)
    full_dir, inc_dir = tmp_path / "full_src", tmp_path / "inc_src"
    shutil.copytree(src, full_dir)
    inc_dir.mkdir()
    for name in first:
        shutil.copy(src / name, inc_dir / name)
    full = ingest_and_clean(tmp_path / "full", full_dir, instance)
    assert _meta(full)["cleaning_mode"] == "full"
    ingest_and_clean(tmp_path / "inc", inc_dir, instance)
    for name in files:
        if name not in first:
            shutil.copy(src / name, inc_dir / name)
    second = ingest_and_clean(tmp_path / "inc", inc_dir, instance)
    for table in ("cleaned_sales", "rejected_sales"):
        sql = f"SELECT * EXCLUDE (_loaded_at) FROM {table}" if table == "rejected_sales" else f"SELECT * FROM {table}"
        got, want = (
            read_table(h, sql).sort_values(["_source_file", "_sheet", "_row_number"]).reset_index(drop=True)
            for h in (tmp_path / "inc", tmp_path / "full")
        )
        pd.testing.assert_frame_equal(got, want, check_dtype=False)
    return tmp_path / "inc", tmp_path / "full", second


def _normal(n: int, qty=lambda i: str(1 + i % 4), day=1, invoice0=540000):
    return [
        _line(
            str(invoice0 + i),
            date=f"2011-06-{day + i % 20:02d} 10:{i % 60:02d}:00",
            customer=str(12000 + i),
            qty=qty(i),
        )
        for i in range(n)
    ]


def test_an_absurd_quantity_in_an_added_file_is_rejected_as_in_a_full_load(tmp_path, dagster_instance):
    added = _normal(50, invoice0=560000)
    added[7][3] = "50000000"
    inc, _, second = _both_ways(tmp_path, dagster_instance, {"a.csv": _normal(300), "b.csv": added}, ["a.csv"])
    assert _meta(second)["cleaning_mode"] == "append"
    assert read_table(inc, REJECTED).values.tolist() == [["b.csv", 8, "implausible_quantity"]]


def test_a_file_that_moves_the_bound_rejudges_the_published_rows(tmp_path, dagster_instance):
    """a.csv alone: quantities 1..4 and one of 5,000 (over 1,000 x its 99th percentile: implausible). b.csv
    has quantities up to 50: over both files 5,000 is plausible. Adding b.csv to a published a.csv cleans
    everything again, so the 5,000 line is kept, as loading both at once keeps it."""
    first = _normal(300)
    first[5][3] = "5000"
    added = _normal(300, qty=lambda i: str(10 + i % 41), invoice0=560000)
    solo = tmp_path / "solo"
    solo.mkdir()
    ingest_and_clean(solo / "home", write_uci_csv(solo / "a.csv", first), dagster_instance)
    assert read_table(solo / "home", REJECTED).values.tolist() == [["a.csv", 6, "implausible_quantity"]]

    inc, _, second = _both_ways(tmp_path, dagster_instance, {"a.csv": first, "b.csv": added}, ["a.csv"])
    assert _meta(second)["cleaning_mode"] == "full"
    assert read_table(inc, REJECTED).empty
    assert read_table(
        inc, "SELECT quantity FROM cleaned_sales WHERE _source_file = 'a.csv' AND _row_number = 6"
    ).quantity.tolist() == [5000.0]


def test_a_copy_in_an_added_file_named_first_wins_as_in_a_full_load(tmp_path, dagster_instance):
    """b_first.csv is published; a_added.csv, added later, holds a copy of its line 3. In a load of both the
    first occurrence by file name is a_added.csv's, so the incremental run gives the same: b_first.csv's line
    is the duplicate."""
    published = _normal(40)
    added = _normal(10, invoice0=560000) + [list(published[2])]
    inc, _, second = _both_ways(
        tmp_path, dagster_instance, {"b_first.csv": published, "a_added.csv": added}, ["b_first.csv"]
    )
    assert _meta(second)["cleaning_mode"] == "full"
    assert read_table(inc, REJECTED).values.tolist() == [["b_first.csv", 3, "duplicate_line"]]


def test_every_rule_gives_the_same_verdict_in_one_load_or_two(tmp_path, dagster_instance):
    """Every rejection reason, spread over two files (one a workbook with a line repeated across its sheets),
    loaded at once and one after the other in both orders: the same rows kept and rejected, row for row."""
    a = _normal(400)  # the raw contract blocks a load with 1% of unparseable or out-of-range values
    a[0] = _line("C540999", qty="-1")  # cancellation
    a[1] = _line("A540998")  # adjustment
    a[2] = _line("540997", code="POST")  # non_product_code
    a[3] = _line("540996", qty="0")  # non_positive_quantity
    a[4] = _line("540995", price="0")  # non_positive_price
    a[5] = _line("540994", customer="")  # missing_customer
    a[6] = _line("540993", date="not a date")  # unparseable_date
    a[7] = _line("540992", date="2099-01-01 10:00:00")  # date_out_of_range
    a[8] = _line("540991", qty="twelve")  # unparseable_quantity
    a[9] = _line("540990", price="?")  # unparseable_price
    a[10] = _line("  ")  # missing_invoice (blank: an absent invoice stops the load)
    a[11] = _line("540989", qty="inf")  # non_finite_quantity
    a[12] = _line("540988", price="9e12")  # implausible_price
    a[13] = list(a[20])  # duplicate_line within the file
    sheet1 = _normal(30, invoice0=570000)
    sheet2 = _normal(30, invoice0=580000) + [list(sheet1[4])]  # repeated_across_sheets
    b = [("Year 2010-2011", sheet1), ("Year 2011-2012", sheet2 + [list(a[30])])]  # and a copy of a.csv's line 31
    files = {"a.csv": a, "b.xlsx": b}
    reasons = {
        "cancellation", "adjustment", "non_product_code", "non_positive_quantity", "non_positive_price",
        "missing_customer", "unparseable_date", "date_out_of_range", "unparseable_quantity", "unparseable_price",
        "missing_invoice", "non_finite_quantity", "implausible_price", "duplicate_line", "repeated_across_sheets",
    }  # fmt: skip
    for order in (["a.csv"], ["b.xlsx"]):
        sub = tmp_path / order[0].replace(".", "_")
        sub.mkdir()
        inc, _, _ = _both_ways(sub, dagster_instance, files, order)
        got = read_table(inc, "SELECT _source_file, _sheet, _row_number, rejection_reason FROM rejected_sales")
        assert set(got.rejection_reason) == reasons
        assert got[got.rejection_reason == "repeated_across_sheets"][["_sheet", "_row_number"]].values.tolist() == [
            ["Year 2011-2012", 31]
        ]
        # a.csv sorts before b.xlsx: its line 31 stays, the workbook's copy is the duplicate, in either order
        dups = got[(got.rejection_reason == "duplicate_line")][["_source_file", "_row_number"]].values.tolist()
        assert sorted(dups) == [["a.csv", 21], ["b.xlsx", 32]]


# ------------------------------------------------------------------ D. late rows for a segmented quarter


def test_late_rows_for_a_segmented_quarter_are_reported(home_copy, good_csv, quality_instance, tmp_path, capsys):
    """The baseline home has 2011-Q2 and 2011-Q3 segmented. A file added later with two sales dated in May 2011
    is appended; `--quarters latest` re-runs 2011-Q3 only and says that 2011-Q2 was built without them and
    how to refresh both, in order."""
    folder = tmp_path / "src"
    folder.mkdir()
    shutil.copy(good_csv, folder / good_csv.name)
    late = [
        _line("590001", date="2011-05-10 10:00:00", customer="99001"),
        _line("590002", date="2011-05-11 10:00:00", customer="99001"),
    ]
    write_uci_csv(folder / "late.csv", late)
    capsys.readouterr()
    done = run_pipeline(home_copy, source=str(folder), quarters="latest", instance=quality_instance)
    assert done == ["2011-07-01"]
    out = " ".join(capsys.readouterr().out.split())
    notice = (
        "warning: sales dated in quarters already segmented arrived: 2011-Q2 (2 new lines). The outputs of "
        "2011-Q2, 2011-Q3 were built without them; refresh them in order with `seg-pipeline run --quarters "
        "2011-04-01,2011-07-01`. Not refreshed by this run: 2011-Q2."
    )
    assert notice in out
    con = duckdb.connect(str(home_copy / "warehouse.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM cleaned_sales WHERE customer_id = '99001'").fetchall()[0][0] == 2
    finally:
        con.close()
