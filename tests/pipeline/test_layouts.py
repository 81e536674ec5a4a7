"""Real export layouts: whitespace-separated files (runs of spaces, leading spaces, CRLF), headerless files
with `names:`, integer dates (YYYYMMDD), and order-level exports without an order id. Each gives the same
cleaned_sales as the equivalent plain CSV; each wrong layout gets a message that names the cause."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest

from seg_pipeline.sample_data import write_transactions
from tests.conftest import read_table, run
from tests.pipeline.helpers import business_frame, failure_message, ingest_and_clean, read_source_text

CLEANED = "SELECT * FROM cleaned_sales"
LINE_COLUMNS = ["Invoice", "StockCode", "Quantity", "InvoiceDate", "Price", "Customer ID"]


def _whitespace(df: pd.DataFrame, header: bool = True) -> bytes:
    """Fields padded with runs of spaces (and a tab), leading spaces, CRLF line ends."""
    names = [c.replace(" ", "") for c in df.columns]  # "Customer ID" -> "CustomerID": a name is one token
    rows = ([names] if header else []) + df.astype(str).values.tolist()
    lines = []
    for i, row in enumerate(rows):
        lead = " " * (i % 3)
        lines.append(lead + ("\t" if i % 5 == 0 else "   ").join(f"{v:<{1 + i % 4}}" for v in row))
    return ("\r\n".join(lines) + "\r\n").encode()


def _compare(tmp_path, instance, name, csv_frame, other_bytes, csv_mapping, other_mapping, suffix=".txt"):
    """Load the plain CSV and the other layout of the same rows; return both cleaned_sales frames."""
    csv_path = tmp_path / f"{name}.csv"
    csv_frame.to_csv(csv_path, index=False)
    other = tmp_path / f"{name}{suffix}"
    other.write_bytes(other_bytes)
    frames = []
    for label, path, mapping_text in (("csv", csv_path, csv_mapping), ("other", other, other_mapping)):
        mapping = None
        if mapping_text:
            mapping = tmp_path / f"{name}_{label}.yaml"
            mapping.write_text(mapping_text, encoding="utf-8")
        home = tmp_path / f"home_{name}_{label}"
        result = ingest_and_clean(home, path, instance, mapping=mapping, raise_on_error=False)
        assert result.success, failure_message(result)[:800]
        frames.append(business_frame(read_table(home, CLEANED)))
    return frames


@pytest.fixture(scope="module")
def line_items(tmp_path_factory) -> pd.DataFrame:
    """Generated sales lines without the columns that hold spaces (description, country), values without
    spaces, a missing customer written as 'nan' (a whitespace file has no empty field), ISO dates with 'T'."""
    d = tmp_path_factory.mktemp("lines")
    text = read_source_text(write_transactions(d / "gen.csv", n_customers=60, seed=3))[LINE_COLUMNS]
    text = text[~text.drop(columns="InvoiceDate").apply(lambda c: c.str.contains(" ")).any(axis=1)].copy()
    text["Customer ID"] = text["Customer ID"].replace("", "nan")
    text["InvoiceDate"] = pd.to_datetime(text.InvoiceDate).dt.strftime("%Y-%m-%dT%H:%M:%S")
    return text.reset_index(drop=True)


def test_whitespace_file_gives_the_same_cleaned_sales_as_the_csv(tmp_path, line_items, dagster_instance):
    csv_rows, ws_rows = _compare(
        tmp_path,
        dagster_instance,
        "lines",
        line_items,
        _whitespace(line_items),
        None,
        "delimiter: whitespace\n",
    )
    assert len(csv_rows) > 1000
    pd.testing.assert_frame_equal(ws_rows, csv_rows, check_exact=True)


def test_headerless_whitespace_file_with_names(tmp_path, line_items, dagster_instance):
    names = ", ".join(f'"{c.replace(" ", "")}"' for c in LINE_COLUMNS)
    csv_rows, ws_rows = _compare(
        tmp_path,
        dagster_instance,
        "noheader",
        line_items,
        _whitespace(line_items, header=False),
        None,
        f"delimiter: whitespace\nheader: false\nnames: [{names}]\n",
    )
    pd.testing.assert_frame_equal(ws_rows, csv_rows, check_exact=True)


# ------------------------------------------------------------------------------------------ order-level


def orders_from(text: pd.DataFrame) -> pd.DataFrame:
    """An order-level export made from generated sales lines: one row per invoice (customer id, order date,
    number of items, order value), no order id."""
    sales = text[~text.Invoice.str.startswith(("C", "A")) & (text["Customer ID"] != "")].copy()
    sales["qty"] = pd.to_numeric(sales.Quantity)
    sales["value"] = sales.qty * pd.to_numeric(sales.Price)
    sales = sales[(sales.qty > 0) & (sales.value > 0)]
    orders = sales.groupby(["Invoice", "Customer ID", "InvoiceDate"], as_index=False).agg(
        items=("qty", "sum"), value=("value", "sum")
    )
    orders["cust"] = orders["Customer ID"].str.replace(".0", "", regex=False)
    orders["value"] = orders.value.round(2)
    orders["when"] = pd.to_datetime(orders.InvoiceDate)
    return orders[["cust", "when", "items", "value"]].sort_values(["when", "cust"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def orders(tmp_path_factory) -> pd.DataFrame:
    d = tmp_path_factory.mktemp("orders")
    return orders_from(read_source_text(write_transactions(d / "gen.csv", n_customers=100, seed=5)))


# the README's order-level example (Configuration), for a file like DATA.md describes
ORDER_MAPPING = """\
header: false
names: [cust, date, items, value]
delimiter: whitespace
columns:
  customer_id: cust
  invoice_date: date
  quantity: items
amount: value
date_format: "%Y%m%d"
"""


def _order_files(orders: pd.DataFrame) -> tuple[pd.DataFrame, bytes]:
    """The same orders as a plain CSV (header, ISO dates) and as DATA.md's layout (whitespace, no header,
    YYYYMMDD integer dates, CRLF)."""
    day = orders.assign(date=orders["when"].dt.strftime("%Y%m%d"))[["cust", "date", "items", "value"]]
    csv = day.assign(date=orders["when"].dt.strftime("%Y-%m-%d"))
    return csv, _whitespace(day, header=False)


CSV_ORDER_MAPPING = """\
columns:
  customer_id: cust
  invoice_date: date
  quantity: items
amount: value
"""


def test_order_level_whitespace_export_gives_the_same_cleaned_sales_as_its_csv(tmp_path, orders, dagster_instance):
    csv, ws = _order_files(orders)
    csv_rows, ws_rows = _compare(tmp_path, dagster_instance, "orders", csv, ws, CSV_ORDER_MAPPING, ORDER_MAPPING)
    pd.testing.assert_frame_equal(ws_rows, csv_rows, check_exact=True)
    # one order per customer and timestamp: same-day orders of a customer merge only because these dates
    # carry no time of day
    expected_orders = csv.drop_duplicates(["cust", "date"]).shape[0]
    assert ws_rows.invoice.nunique() == expected_orders
    assert ws_rows.invoice.str.startswith("ORD-").all()
    assert (ws_rows.line_revenue.round(2) == ws_rows.line_revenue.round(2)).all()
    assert np.isclose(ws_rows.line_revenue.sum(), csv["value"].sum())


def test_order_rule_per_row_and_per_day(tmp_path, dagster_instance):
    """Two orders of one customer on one day at different times: two orders by default (per customer and
    timestamp), one with `orders: per_day`; an exact repeat of a row is a duplicate either way."""
    rows = pd.DataFrame(
        {
            "cust": ["7", "7", "7", "8"],
            "date": ["2011-03-01 09:00:00", "2011-03-01 15:30:00", "2011-03-01 15:30:00", "2011-03-01 09:00:00"],
            "items": ["1", "2", "2", "3"],
            "value": ["10.00", "20.00", "20.00", "30.00"],
        }
    )
    src = tmp_path / "orders.csv"
    rows.to_csv(src, index=False)
    counts = {}
    for rule in ("per_row", "per_day"):
        mapping = tmp_path / f"{rule}.yaml"
        mapping.write_text(CSV_ORDER_MAPPING + f"orders: {rule}\n", encoding="utf-8")
        home = tmp_path / f"home_{rule}"
        result = ingest_and_clean(home, src, dagster_instance, mapping=mapping)
        kept = read_table(home, CLEANED)
        rejected = read_table(home, "SELECT rejection_reason, _row_number FROM rejected_sales")
        assert rejected.values.tolist() == [["duplicate_line", 3]]
        counts[rule] = kept.groupby("customer_id").invoice.nunique().to_dict()
        meta = result.asset_materializations_for_node("raw_transactions")[0].metadata
        assert f"orders: {rule}" in meta["orders"].value
    assert counts == {"per_row": {"7": 2, "8": 1}, "per_day": {"7": 1, "8": 1}}


@pytest.mark.slow  # the whole pipeline over eight quarters of an order-level export
def test_order_level_export_runs_end_to_end(tmp_path, orders, dagster_instance):
    _, ws = _order_files(orders)
    src = tmp_path / "orders.txt"
    src.write_bytes(ws)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(ORDER_MAPPING, encoding="utf-8")
    done = run(tmp_path / "home", src, mapping=str(mapping), instance=dagster_instance)
    assert len(done) == 8
    features = read_table(tmp_path / "home", "SELECT * FROM customer_features WHERE quarter = ?", [done[-1]])
    assert features.distinct_products.eq(0).all() or features.distinct_products.isna().all()
    columns = read_table(tmp_path / "home", "SELECT * FROM scaled_matrix_columns WHERE quarter = ?", [done[-1]])
    assert "distinct_products" not in set(columns.loc[columns.kept, "feature"])
    segments = read_table(tmp_path / "home", "SELECT DISTINCT quarter FROM segment_assignments")
    assert len(segments) == 8


# ------------------------------------------------------------------------------------ wrong layouts


ORDER_TEXT = b"  cust   date    items  value\r\n  101  19970101   2   29.33\r\n 102   19970102  1  11.77\r\n"
ORDER_COLUMNS = "columns:\n  customer_id: cust\n  invoice_date: date\n  quantity: items\namount: value\n"


def _load_error(tmp_path, instance, data: bytes, mapping_text: str | None, name: str = "export.txt") -> str:
    src = tmp_path / name
    src.write_bytes(data)
    mapping = None
    if mapping_text is not None:
        mapping = tmp_path / "mapping.yaml"
        mapping.write_text(mapping_text, encoding="utf-8")
    result = ingest_and_clean(tmp_path / "home", src, instance, mapping=mapping, raise_on_error=False)
    assert not result.success
    return failure_message(result).replace(str(src), "{file}")


def test_whitespace_file_with_a_header_and_other_names(tmp_path, dagster_instance):
    msg = _load_error(tmp_path, dagster_instance, ORDER_TEXT, "delimiter: whitespace\nnames: [cust, date, items]\n")
    assert (
        "source {file}: `names:` lists 3 names but the file has 4 columns (line 1: '  cust   date    items  value')"
    ) in msg


def test_headerless_file_without_names(tmp_path, dagster_instance):
    body = ORDER_TEXT.split(b"\r\n", 1)[1]
    msg = _load_error(tmp_path, dagster_instance, body, "delimiter: whitespace\nheader: false\n" + ORDER_COLUMNS)
    assert (
        "source {file}: `header: false` needs `names:`, the column names in file order (the file has 4 columns; "
        "line 1: '  101  19970101   2   29.33')"
    ) in msg


def test_header_false_on_a_file_with_a_header(tmp_path, dagster_instance):
    mapping = "delimiter: whitespace\nheader: false\nnames: [cust, date, items, value]\n" + ORDER_COLUMNS
    msg = _load_error(tmp_path, dagster_instance, ORDER_TEXT, mapping)
    assert (
        "source {file}: `header: false`, but line 1 looks like a header (cust, date, items, value: text where "
        "the next lines have numbers). Remove `header: false`"
    ) in msg


def test_whitespace_file_read_with_the_default_delimiter_says_so(tmp_path, dagster_instance):
    msg = _load_error(tmp_path, dagster_instance, ORDER_TEXT, ORDER_COLUMNS)
    assert (
        "source {file}: line 1 was read as one column ('  cust   date    items  value') with no delimiter found; "
        "the file seems to be separated by spaces: set `delimiter: whitespace`"
    ) in msg
    assert "UTF-8" not in msg and "encoding" not in msg


def test_ragged_csv_names_the_line(tmp_path, dagster_instance):
    data = b"Invoice,StockCode,Quantity,InvoiceDate,Price,Customer ID\n1,A,1,2011-01-01,1.0,5\n2,B,1,2011-01-01\n"
    msg = _load_error(tmp_path, dagster_instance, data, None, name="ragged.csv")
    assert "source {file}: line 3 has 4 fields where the header has 6 (split by delimiter ','" in msg
    assert "UTF-8" not in msg and "encoding" not in msg


def test_ragged_line_beyond_the_sniffed_lines_names_the_line(tmp_path, dagster_instance):
    good = b"1,A,1,2011-01-01 10:00:00,1.0,5\n" * 20000
    data = b"Invoice,StockCode,Quantity,InvoiceDate,Price,Customer ID\n" + good + b"2,B,1\n"
    msg = _load_error(tmp_path, dagster_instance, data, None, name="long.csv")
    assert "source {file}: line 20,002 has 3 fields where the header has 6." in msg


def test_compressed_file_named_csv_says_what_it_is(tmp_path, dagster_instance):
    data = gzip.compress(b"Invoice,StockCode\n1,A\n")
    msg = _load_error(tmp_path, dagster_instance, data, None, name="sales.csv")
    assert "source {file} is not a text file: it is a gzip-compressed file: name it .csv.gz, or unpack it" in msg
    assert "UTF-8" not in msg


def test_repeated_header_names_stop_the_load(tmp_path, dagster_instance):
    data = b"Invoice,StockCode,Quantity,InvoiceDate,Price,Price,Customer ID\n1,A,1,2011-01-01,1.0,1.0,5\n"
    msg = _load_error(tmp_path, dagster_instance, data, None, name="twice.csv")
    assert "source {file}: the header repeats column name(s) ['Price']" in msg
