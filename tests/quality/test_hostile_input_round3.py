"""Nothing a file says may act, and nothing one odd row does may spread (issue 22, ingest): invisible
characters in identifiers, time-zone offsets, a file that grows while it is read, a source without stock
codes. Each through raw_transactions and cleaned_sales, with the exact outcome; the reader-level rules
(repeated names in workbooks and Parquet, pipes, mixed line ends, long values, mapping limits) are unit
tests in tests/pipeline/test_readers.py."""

from __future__ import annotations

import pandas as pd

from seg_pipeline import readers
from tests.conftest import read_table
from tests.pipeline.helpers import UCI_COLUMNS, business_frame, failure_message, ingest_and_clean, write_uci_csv

CLEANED = "SELECT * FROM cleaned_sales ORDER BY _source_file, _row_number"
REJECTED = "SELECT _source_file, _row_number, rejection_reason FROM rejected_sales ORDER BY 1, 2"


def _line(invoice, date, customer, code="85123A", qty="1", price="2.50", description="WHITE HANGING HEART"):
    return [invoice, code, description, qty, date, price, customer, "United Kingdom"]


# an invoice of two lines (one with a tab after its number), one customer written six ways, postage with a
# zero-width space, a cancellation behind a byte order mark
INVISIBLE = [
    _line("536365", "2011-12-01 10:00:00", "17850"),
    _line("536365\t", "2011-12-01 10:00:00", "\t17850", code="22752"),
    _line("536366", "2011-12-02 10:00:00", "\ufeff17850"),
    _line("536367", "2011-12-03 10:00:00", "1785\u200b0 "),
    _line("536368", "2011-12-04 10:00:00", "17850\u00a0", code="POST\u200b"),
    _line("\ufeffC536369", "2011-12-05 10:00:00", "17850\t", qty="-1"),
]


def test_invisible_characters_make_no_second_customer_invoice_or_product(tmp_path, dagster_instance):
    src = write_uci_csv(tmp_path / "export.csv", INVISIBLE)
    result = ingest_and_clean(tmp_path / "home", src, dagster_instance, raise_on_error=False)
    assert result.success, failure_message(result)
    home = tmp_path / "home"
    cleaned = read_table(home, CLEANED)
    assert cleaned.customer_id.tolist() == ["17850"] * 4
    assert cleaned.invoice.tolist() == ["536365", "536365", "536366", "536367"]
    assert cleaned.stock_code.tolist() == ["85123A", "22752", "85123A", "85123A"]
    assert read_table(home, REJECTED).values.tolist() == [
        ["export.csv", 5, "non_product_code"],
        ["export.csv", 6, "cancellation"],
    ]
    raw = read_table(home, "SELECT customer_id, customer_key FROM raw_transactions ORDER BY _row_number")
    assert raw.customer_id.tolist() == [r[6] for r in INVISIBLE]  # the text as read is kept
    assert set(raw.customer_key) == {"17850"}

    # the same rows in two files give the same lines: the normal form is a rule of the row, not of the file
    folder = tmp_path / "two"
    folder.mkdir()
    write_uci_csv(folder / "a.csv", INVISIBLE[:3])
    write_uci_csv(folder / "b.csv", INVISIBLE[3:])
    result = ingest_and_clean(tmp_path / "home_two", folder, dagster_instance, raise_on_error=False)
    assert result.success, failure_message(result)
    pd.testing.assert_frame_equal(business_frame(read_table(tmp_path / "home_two", CLEANED)), business_frame(cleaned))


def test_time_zone_offsets_are_applied_and_a_bad_one_rejects_only_its_row(tmp_path, dagster_instance):
    """23:30 at UTC-1 on 31 December is 00:30 UTC on 1 January: a sale of 2011, not of 2010-Q4. A time with
    PM keeps it."""
    rows = [_line(f"5{i:05d}", "2011-06-01 10:00:00", str(100 + i % 7)) for i in range(150)]
    rows[10][4] = "2010-12-31T23:30-01:00"
    rows[20][4] = "2010-12-31 23:30:00+99:00"  # no such offset
    rows[30][4] = "31/12/2010 11:30PM"  # day first (31), a 12-hour time: the PM is not dropped
    src = write_uci_csv(tmp_path / "export.csv", rows)
    result = ingest_and_clean(tmp_path / "home", src, dagster_instance, raise_on_error=False)
    assert result.success, failure_message(result)
    cleaned = read_table(tmp_path / "home", CLEANED)
    assert len(cleaned) == 149
    by_row = cleaned.set_index("_row_number").invoice_date
    assert by_row[[11, 31]].tolist() == [pd.Timestamp("2011-01-01 00:30"), pd.Timestamp("2010-12-31 23:30")]
    assert (by_row.drop([11, 31]) == pd.Timestamp("2011-06-01 10:00")).all()
    assert read_table(tmp_path / "home", REJECTED).values.tolist() == [["export.csv", 21, "unparseable_date"]]


def test_a_file_that_grows_while_it_is_read_stops_the_load_and_publishes_nothing(
    tmp_path, dagster_instance, monkeypatch
):
    folder = tmp_path / "exports"
    folder.mkdir()
    write_uci_csv(folder / "a.csv", [_line("500001", "2011-12-01 10:00:00", "1")])
    home = tmp_path / "home"
    ingest_and_clean(home, folder, dagster_instance)
    raw_before = read_table(home, "SELECT * FROM raw_transactions")
    cleaned_before = read_table(home, CLEANED)

    growing = write_uci_csv(folder / "b.csv", [_line("500002", "2011-12-02 10:00:00", "2")])
    size = growing.stat().st_size
    hash_file = readers.sha256_file

    def hash_then_grow(path, *a, **k):
        digest = hash_file(path, *a, **k)
        if path.name == "b.csv":  # the export is still being written after the hash
            with open(path, "a") as f:
                f.write("500003,85123A,WHITE HANGING HEART,1,2011-12-03 10:00:00,2.50,3,United Kingdom\n")
        return digest

    monkeypatch.setattr(readers, "sha256_file", hash_then_grow)
    result = ingest_and_clean(home, folder, dagster_instance, raise_on_error=False)
    assert not result.success
    grown = growing.stat().st_size
    assert (
        f"source {growing} changed while it was read ({size:,} bytes, then {grown:,}); try again when the export "
        "is finished. Nothing was published"
    ) in failure_message(result)
    pd.testing.assert_frame_equal(read_table(home, "SELECT * FROM raw_transactions"), raw_before)
    pd.testing.assert_frame_equal(read_table(home, CLEANED), cleaned_before)


def test_without_stock_codes_the_non_product_rule_says_it_is_not_applied(tmp_path, dagster_instance):
    """Postage cannot be told from a product without a stock code: it is kept, and the run says so."""
    columns = [c for c in UCI_COLUMNS if c != "StockCode"]
    rows = [
        ["500001", "WHITE HANGING HEART", "1", "2011-12-01 10:00:00", "2.50", "1", "United Kingdom"],
        ["500001", "POSTAGE", "1", "2011-12-01 10:00:00", "18.00", "1", "United Kingdom"],
    ]
    src = write_uci_csv(tmp_path / "nocodes.csv", rows, columns=columns)
    result = ingest_and_clean(tmp_path / "home", src, dagster_instance, raise_on_error=False)
    assert result.success, failure_message(result)
    assert read_table(tmp_path / "home", CLEANED).description.tolist() == ["WHITE HANGING HEART", "POSTAGE"]
    said = (
        "not applied: the source has no stock_code column (or no stock code in any row), so postage, fees and "
        "manual lines (POST, DOT, M, ...) cannot be told from product sales and are kept as sales"
    )
    meta = result.asset_materializations_for_node("raw_transactions")[0].metadata
    assert meta["non_product_rule"].value == said
    warnings = [e.user_message for e in dagster_instance.all_logs(result.run_id) if e.level == 30]
    assert said in warnings


def test_with_stock_codes_the_non_product_rule_is_applied_and_files_without_are_named():
    from seg_pipeline.assets.ingest import non_product_rule

    assert non_product_rule([], 2) == "applied: service and fee lines are told apart by their stock code"
    assert non_product_rule(["b.csv"], 2).startswith("not applied: b.csv has no stock_code column (or no stock code")
