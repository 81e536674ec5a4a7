"""Readers: every supported layout of the same data gives the same cleaned_sales; raw inputs are never
modified; raw_transactions keeps the source text with its lineage; clear errors for unusable files."""

from __future__ import annotations

import click
import pandas as pd
import pytest

from seg_pipeline.readers import CANONICAL, ColumnMapping, SourceError
from seg_pipeline.sample_data import write_transactions
from tests.conftest import read_table, run
from tests.pipeline.helpers import (
    business_frame,
    expected_reasons,
    failure_message,
    ingest_and_clean,
    read_source_text,
    sha256,
)

N_CUSTOMERS, SEED = 80, 4  # this seed has ~200 kept sales (and exact duplicates) in the 1-9 Dec 2010 overlap
OVERLAP = (pd.Timestamp("2010-12-01"), pd.Timestamp("2010-12-10"))  # in both sheets of the UCI workbook
CLEANED = "SELECT * FROM cleaned_sales"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("formats")


@pytest.fixture(scope="module")
def csv_source(data_dir):
    return write_transactions(data_dir / "uci.csv", n_customers=N_CUSTOMERS, seed=SEED)


@pytest.fixture(scope="module")
def source_text(csv_source) -> pd.DataFrame:
    return read_source_text(csv_source)


@pytest.fixture(scope="module")
def baseline(data_dir, csv_source, dagster_instance):
    """cleaned_sales of the plain UCI II CSV: every other layout must give exactly this."""
    home = data_dir / "home_csv"
    ingest_and_clean(home, csv_source, dagster_instance)
    return home, business_frame(read_table(home, CLEANED))


def _old_uci(data_dir, text: pd.DataFrame):
    """The older UCI Online Retail layout: InvoiceNo/UnitPrice/CustomerID, m/d/Y H:MM dates without zero
    padding, ';'-separated, 'NA' for a missing customer."""
    df = text.rename(columns={"Invoice": "InvoiceNo", "Price": "UnitPrice", "Customer ID": "CustomerID"})
    ts = pd.to_datetime(df.InvoiceDate)
    df["InvoiceDate"] = [f"{t.month}/{t.day}/{t.year} {t.hour}:{t.minute:02d}" for t in ts]
    df["CustomerID"] = df.CustomerID.replace("", "NA")
    path = data_dir / "old_uci.csv"
    df.to_csv(path, index=False, sep=";")
    return path, None


MAPPED_HEADERS = {
    "Invoice": "order_ref",
    "StockCode": "sku_code",
    "Description": "item_name",
    "Quantity": "units",
    "InvoiceDate": "ordered_at",
    "Price": "unit_cost",
    "Customer ID": "client",
    "Country": "nation",
}


def _mapped(data_dir, text: pd.DataFrame, date_format: str = "%d.%m.%Y %H:%M", name: str = "export"):
    """Another shop's export: own headers, '|'-separated, day-first dates, columns in another order."""
    df = text.rename(columns=MAPPED_HEADERS)
    df["ordered_at"] = pd.to_datetime(df.ordered_at).dt.strftime(date_format)
    df = df[["client", "ordered_at", "order_ref", "sku_code", "item_name", "units", "unit_cost", "nation"]]
    path = data_dir / f"{name}.txt"
    df.to_csv(path, index=False, sep="|")
    mapping = data_dir / f"{name}_mapping.yaml"
    cols = "\n".join(
        f"  {canon}: {MAPPED_HEADERS[uci]}"
        for canon, uci in zip(
            ["invoice", "stock_code", "description", "quantity", "invoice_date", "price", "customer_id", "country"],
            MAPPED_HEADERS,
        )
    )
    mapping.write_text(f"columns:\n{cols}\ndelimiter: '|'\ndate_format: '{date_format}'\n", encoding="utf-8")
    return path, mapping


def _crlf(data_dir, text: pd.DataFrame):
    """The UCI layout with Windows line ends (CRLF)."""
    path = data_dir / "crlf.csv"
    text.to_csv(path, index=False, lineterminator="\r\n")
    assert b"\r\n" in path.read_bytes()[:200]
    return path, None


def _headerless(data_dir, text: pd.DataFrame):
    """No header line, CRLF: the names come from the mapping (`header: false`, `names:`), in file order."""
    path = data_dir / "headerless.csv"
    text.to_csv(path, index=False, header=False, lineterminator="\r\n")
    mapping = data_dir / "headerless_mapping.yaml"
    names = ", ".join(f'"{c}"' for c in text.columns)
    mapping.write_text(f"header: false\nnames: [{names}]\n", encoding="utf-8")
    return path, mapping


def _generated(suffix):
    def make(data_dir, text):
        return write_transactions(data_dir / f"uci{suffix}", n_customers=N_CUSTOMERS, seed=SEED), None

    return make


LAYOUTS = {
    "csv_gz": _generated(".csv.gz"),
    "parquet": _generated(".parquet"),
    "xlsx": _generated(".xlsx"),
    "old_uci_semicolon": _old_uci,
    "mapped_export": _mapped,
    "crlf": _crlf,
    "headerless_with_names": _headerless,
}


LAYOUT_PARAMS = list(LAYOUTS)


@pytest.fixture(scope="module")
def layout_runs(data_dir, source_text, dagster_instance):
    """Each layout written, hashed, loaded and cleaned once (module scope: the xlsx is the slow one)."""
    out = {}
    for name, make in LAYOUTS.items():
        path, mapping = make(data_dir, source_text)
        before = sha256(path)
        home = data_dir / f"home_{name}"
        result = ingest_and_clean(home, path, dagster_instance, mapping=mapping, raise_on_error=False)
        out[name] = {
            "path": path,
            "mapping": mapping,
            "home": home,
            "sha_before": before,
            "success": result.success,
            "error": failure_message(result),
        }
    return out


def _loaded(layout_runs, layout):
    run_ = layout_runs[layout]
    assert run_["success"], f"{layout}: {run_['error'][:600]}"
    return run_


@pytest.mark.parametrize("layout", LAYOUT_PARAMS)
def test_every_layout_gives_the_same_cleaned_sales(layout, layout_runs, baseline):
    _, expected = baseline
    got = business_frame(read_table(_loaded(layout_runs, layout)["home"], CLEANED))
    assert len(expected) > 1000
    pd.testing.assert_frame_equal(got, expected, check_exact=True)


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_raw_input_is_never_modified(layout, layout_runs):
    run_ = layout_runs[layout]
    assert sha256(run_["path"]) == run_["sha_before"]


@pytest.mark.parametrize("layout", LAYOUT_PARAMS)
def test_lineage_records_file_and_hash(layout, layout_runs):
    run_ = _loaded(layout_runs, layout)
    got = read_table(run_["home"], "SELECT DISTINCT _source_file, _source_sha256 FROM raw_transactions")
    assert got._source_file.tolist() == [run_["path"].name]
    assert got._source_sha256.tolist() == [run_["sha_before"]]


def test_csv_input_is_never_modified(csv_source, baseline):
    home, _ = baseline
    recorded = read_table(home, "SELECT DISTINCT _source_sha256 FROM raw_transactions")._source_sha256.tolist()
    assert recorded == [sha256(csv_source)]


def test_xlsx_rows_repeated_across_sheets(layout_runs, source_text, baseline):
    home = _loaded(layout_runs, "xlsx")["home"]
    ts = pd.to_datetime(source_text.InvoiceDate)
    in_overlap = (ts >= OVERLAP[0]) & (ts < OVERLAP[1])
    reasons = expected_reasons(source_text)
    # rows the rules keep (and their exact copies) appear again in the second sheet: repeated_across_sheets
    expected_repeated = int((in_overlap & (reasons.isna() | (reasons == "duplicate_line"))).sum())
    assert expected_repeated > 0, "the generated data has no sale in 1-9 Dec 2010: the test proves nothing"

    raw = read_table(home, "SELECT _sheet, count(*) AS n FROM raw_transactions GROUP BY 1 ORDER BY 1")
    assert raw._sheet.tolist() == ["Year 2009-2010", "Year 2010-2011"]
    assert raw.n.sum() == len(source_text) + int(in_overlap.sum())

    got = read_table(home, "SELECT rejection_reason AS r, _sheet, count(*) AS n FROM rejected_sales GROUP BY ALL")
    repeated = got[got.r == "repeated_across_sheets"]
    assert repeated._sheet.tolist() == ["Year 2010-2011"]
    assert int(repeated.n.sum()) == expected_repeated
    # every other reason: the CSV's count plus the overlap's rule-rejected rows seen a second time
    csv_counts = reasons.value_counts()
    overlap_counts = reasons[in_overlap].value_counts()
    by_reason = got[got.r != "repeated_across_sheets"].groupby("r").n.sum()
    for reason, n in by_reason.items():
        extra = 0 if reason == "duplicate_line" else int(overlap_counts.get(reason, 0))
        assert n == int(csv_counts.get(reason, 0)) + extra, reason


def test_raw_transactions_keeps_source_text_and_lineage(baseline, csv_source, source_text):
    home, _ = baseline
    types = read_table(
        home, "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'raw_transactions'"
    )
    types = dict(zip(types.column_name, types.data_type))
    assert all(types[c] == "VARCHAR" for c in CANONICAL)
    for c in ("_source_file", "_source_sha256", "_row_number"):
        assert c in types
    raw = read_table(home, "SELECT * FROM raw_transactions ORDER BY _row_number")
    assert raw._row_number.tolist() == list(range(1, len(source_text) + 1))
    assert set(raw._source_file) == {csv_source.name}
    assert set(raw._source_sha256) == {sha256(csv_source)}
    # every value exactly as in the file (an empty field is NULL)
    pairs = {
        "invoice": "Invoice",
        "stock_code": "StockCode",
        "description": "Description",
        "quantity": "Quantity",
        "invoice_date": "InvoiceDate",
        "price": "Price",
        "customer_id": "Customer ID",
        "country": "Country",
    }
    for canon, uci in pairs.items():
        assert raw[canon].fillna("").tolist() == source_text[uci].tolist(), canon
    assert raw.customer_id.dropna().str.endswith(".0").all()  # IDs kept as the float text of the export
    assert raw.store.isna().all()


def test_rerun_with_the_same_file_does_not_duplicate(data_dir, csv_source, dagster_instance):
    home = data_dir / "home_rerun"
    ingest_and_clean(home, csv_source, dagster_instance)
    first = read_table(home, "SELECT count(*) AS n, max(_loaded_at) AS t FROM raw_transactions").iloc[0]
    result = ingest_and_clean(home, csv_source, dagster_instance)
    second = read_table(home, "SELECT count(*) AS n, max(_loaded_at) AS t FROM raw_transactions").iloc[0]
    assert second.n == first.n
    assert second.t == first.t  # not read again
    meta = result.asset_materializations_for_node("raw_transactions")[0].metadata
    assert meta["files_loaded_this_run"].value == 0
    assert meta["files_unchanged_skipped"].value == 1


def test_changed_file_replaces_its_rows(tmp_path, csv_source, source_text, dagster_instance):
    src = tmp_path / "data.csv"
    source_text.to_csv(src, index=False)
    home = tmp_path / "home"
    ingest_and_clean(home, src, dagster_instance)
    old_sha = sha256(src)
    source_text.iloc[: len(source_text) // 2].to_csv(src, index=False)
    ingest_and_clean(home, src, dagster_instance)
    raw = read_table(home, "SELECT _source_sha256, count(*) AS n FROM raw_transactions GROUP BY 1")
    assert raw._source_sha256.tolist() == [sha256(src)] != [old_sha]
    assert raw.n.tolist() == [len(source_text) // 2]


def test_folder_of_files_gives_the_same_cleaned_sales(tmp_path, source_text, baseline, dagster_instance):
    folder = tmp_path / "exports"
    folder.mkdir()
    half = len(source_text) // 2
    source_text.iloc[:half].to_csv(folder / "part1.csv", index=False)
    source_text.iloc[half:].to_csv(folder / "part2.csv", index=False)
    (folder / "notes.md").write_text("not a data file")
    home = tmp_path / "home"
    ingest_and_clean(home, folder, dagster_instance)
    files = read_table(home, "SELECT DISTINCT _source_file FROM raw_transactions ORDER BY 1")._source_file.tolist()
    assert files == ["part1.csv", "part2.csv"]
    pd.testing.assert_frame_equal(business_frame(read_table(home, CLEANED)), baseline[1], check_exact=True)


@pytest.mark.parametrize(
    "missing, header", [("price", "Price"), ("customer_id", "Customer ID"), ("invoice_date", "InvoiceDate")]
)
def test_missing_required_column_names_file_and_column(tmp_path, source_text, dagster_instance, missing, header):
    src = tmp_path / f"no_{missing}.csv"
    source_text.head(50).drop(columns=[header]).to_csv(src, index=False)
    with pytest.raises(click.ClickException) as info:
        run(tmp_path / "home", src, instance=dagster_instance)
    msg = info.value.message
    assert src.name in msg
    assert f"'{missing}'" in msg
    assert "required column" in msg


def test_mapping_naming_an_absent_column_is_explained(tmp_path, source_text, dagster_instance):
    src = tmp_path / "shop.csv"
    source_text.head(20).to_csv(src, index=False)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("columns:\n  customer_id: client_no\n")
    result = ingest_and_clean(tmp_path / "home", src, dagster_instance, mapping=mapping, raise_on_error=False)
    assert not result.success
    msg = failure_message(result)
    assert "shop.csv" in msg and "client_no" in msg and "customer_id" in msg


def test_mapping_file_with_unknown_target_is_refused(tmp_path):
    mapping = tmp_path / "m.yaml"
    mapping.write_text("columns:\n  client: cust\n")
    with pytest.raises(SourceError, match="unknown target column"):
        ColumnMapping.from_yaml(mapping)


def test_mapping_date_format_outside_the_builtin_list(tmp_path, source_text, baseline, dagster_instance):
    """A date format only the mapping knows (day-first with slashes) is honoured by ingestion and cleaning."""
    path, mapping = _mapped(tmp_path, source_text, date_format="%d/%m/%Y %H:%M", name="dayfirst")
    result = ingest_and_clean(tmp_path / "home", path, dagster_instance, mapping=mapping, raise_on_error=False)
    assert result.success, failure_message(result)[:400]
    got = business_frame(read_table(tmp_path / "home", CLEANED))
    pd.testing.assert_frame_equal(got, baseline[1], check_exact=True)


def test_parquet_values_stay_typed_and_rejected_rows_show_them_as_text(layout_runs, source_text):
    """A typed source is copied as it is: numbers and timestamps are kept typed only (their text columns are
    NULL), the customer id's normal form comes from the number, and rejected_sales shows every value as
    text, as a CSV export of the same file would."""
    home = _loaded(layout_runs, "parquet")["home"]
    raw = read_table(
        home,
        "SELECT count(*) AS n, count(quantity) AS qty_text, count(price) AS price_text, count(invoice_date) AS "
        "date_text, count(quantity_value) AS qty, count(invoice_ts) AS ts, count(customer_id) AS ids, "
        "count(customer_key) AS id_keys, count(*) FILTER (WHERE customer_key LIKE '%.%') AS keys_with_point "
        "FROM raw_transactions",
    ).iloc[0]
    assert raw.n == len(source_text)
    assert (raw.qty_text, raw.price_text, raw.date_text) == (0, 0, 0)
    assert raw.qty == raw.n and raw.ts == raw.n
    assert raw.id_keys == raw.ids > 0 and raw.keys_with_point == 0  # 17850.0 -> '17850'
    rejected = read_table(
        home, "SELECT quantity, price, invoice_date, rejection_reason FROM rejected_sales ORDER BY _row_number"
    )
    returns = rejected[rejected.rejection_reason == "cancellation"]
    assert len(returns) > 0
    assert returns.quantity.str.fullmatch(r"-\d+").all()  # whole numbers as the CSV writes them, no '.0'
    assert returns.invoice_date.str.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d").all()
    assert pd.to_numeric(returns.price).notna().all()
    # the same rows, the same texts as the CSV export of the same data gives (quantity and date)
    csv_home = layout_runs["csv_gz"]["home"]
    csv_rejected = read_table(csv_home, "SELECT quantity, rejection_reason FROM rejected_sales ORDER BY _row_number")
    assert rejected.rejection_reason.tolist() == csv_rejected.rejection_reason.tolist()
    assert rejected.quantity.tolist() == csv_rejected.quantity.tolist()


# ------------------------------------------------- hostile input (issue 22): readers, as unit tests (no Dagster)

HEADER = b"Invoice,StockCode,Quantity,InvoiceDate,Price,Customer ID\n"


def _csv(tmp_path, body: bytes, name: str = "x.csv", header: bytes = HEADER):
    path = tmp_path / name
    path.write_bytes(header + body)
    return path


def _workbook(path, sheets: dict[str, list[list]]):
    from openpyxl import Workbook

    wb = Workbook()
    wb.remove(wb.active)
    for name, rows in sheets.items():
        ws = wb.create_sheet(name)
        for row in rows:
            ws.append(row)
    wb.save(path)
    return path


XLSX_HEADER = ["Invoice", "StockCode", "Quantity", "InvoiceDate", "Price", "Customer ID"]


def test_xlsx_repeated_header_in_any_sheet_stops_the_load(tmp_path):
    """The CSV rule for every sheet: a second `price` column (here a cost, in sheet 2) is not silently read
    as the price."""
    from tests.pipeline.helpers import stage_raw

    good = ["1", "A", 1, "2011-01-01 10:00:00", 2.5, "5"]
    book = _workbook(
        tmp_path / "two.xlsx",
        {"2009-2010": [XLSX_HEADER, good], "2010-2011": [[*XLSX_HEADER, "price "], [*good, 1.0]]},
    )
    with pytest.raises(SourceError) as info:
        stage_raw(book)
    assert str(info.value) == (
        f"source {book}, sheet '2010-2011': the header repeats column name(s) ['Price', 'price ']: which one is "
        "meant cannot be told. Rename them in the file, then load it again (`names:` applies to text files only)"
    )
    one = _workbook(tmp_path / "one.xlsx", {"2009-2010": [XLSX_HEADER, good]})
    assert stage_raw(one).price.tolist() == ["2.5"]  # the same sheet without the repeat loads


def test_parquet_repeated_column_name_stops_the_load(tmp_path):
    """DuckDB reads a repeated Parquet name as Price and Price_1; the rule looks at the names in the file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tests.pipeline.helpers import stage_raw

    cols = [pa.array([v]) for v in ["1", "A", 1.0, "2011-01-01 10:00:00", 2.5, 0.4, "5"]]
    path = tmp_path / "dup.parquet"
    pq.write_table(pa.table(cols, names=[*XLSX_HEADER[:5], "Price", "Customer ID"]), path)
    with pytest.raises(SourceError) as info:
        stage_raw(path)
    assert str(info.value) == (
        f"source {path}: the header repeats column name(s) ['Price']: which one is meant cannot be told. "
        "Rename them in the file, then load it again (`names:` applies to text files only)"
    )


# a raw value, its normal form as an invoice or stock code, and as a customer id (then the numeric rule)
IDENTIFIERS = [
    ("\t17850", "17850", "17850"),
    ("17850\t", "17850", "17850"),
    ("\ufeff17850", "17850", "17850"),
    ("1785\u200b0", "17850", "17850"),
    (" 17850\u00a0", "17850", "17850"),
    ("17850\u00ad", "17850", "17850"),
    ("0017850.0\u200c", "0017850.0", "17850"),
    ("AB\t007", "AB 007", "AB 007"),
    ("AB \u3000 007\x0b", "AB 007", "AB 007"),  # a vertical tab is not a line end
    ("\u200b", None, None),
    ("cafe\u0301", "caf\u00e9", "caf\u00e9"),  # NFC: e + combining acute accent is one letter
]


def test_identifiers_have_one_normal_form(tmp_path):
    """Tab, NBSP, zero-width space, BOM, soft hyphen, ZWNJ, ideographic space: one customer, one invoice, one
    stock code, whatever invisible characters the export left in them; the text as read is kept beside."""
    from tests.pipeline.helpers import stage_raw

    body = "".join(f'"{v}","{v}",1,2011-01-01 10:00:00,2.5,"{v}"\n' for v, _, _ in IDENTIFIERS)
    raw = stage_raw(_csv(tmp_path, body.encode()))
    assert raw.customer_id.tolist() == [v for v, _, _ in IDENTIFIERS]
    assert raw.invoice_key.tolist() == [k for _, k, _ in IDENTIFIERS]
    assert raw.stock_code_key.tolist() == [k for _, k, _ in IDENTIFIERS]
    assert raw.customer_key.tolist() == [c for _, _, c in IDENTIFIERS]


def test_time_zone_offsets_are_converted_to_utc(tmp_path):
    """invoice_ts is UTC: an offset or zone is applied (23:30 at -01:00 is 00:30 the next day, a sale of the
    next quarter), a time without one is taken as written, an offset that cannot be read leaves NULL. A
    12-hour time keeps its AM/PM (the plain cast reads 12:10 AM as 12:10)."""
    from tests.pipeline.helpers import stage_raw

    dates = [
        "2010-12-31T23:30-01:00",
        "2010-12-31 23:30:00 +01:00",
        "2010-12-31T23:30:00.5+0530",
        "2010-12-31 23:30:00Z",
        "2010-12-31 23:30:00 Europe/Paris",
        "2010-12-31 23:30:00",
        "2010-12-31 23:30:00+99:00",
        "2010-12-31 12:10 AM",
        "12/31/2010 11:30PM",
    ]
    body = "".join(f"{i},A,1,{d},2.5,5\n" for i, d in enumerate(dates))
    raw = stage_raw(_csv(tmp_path, body.encode()))
    assert raw.invoice_date.tolist() == dates
    assert [None if pd.isna(t) else str(t) for t in raw.invoice_ts] == [
        "2011-01-01 00:30:00",
        "2010-12-31 22:30:00",
        "2010-12-31 18:00:00.500000",
        "2010-12-31 23:30:00",
        "2010-12-31 22:30:00",
        "2010-12-31 23:30:00",
        None,
        "2010-12-31 00:10:00",
        "2010-12-31 23:30:00",
    ]
    typed = tmp_path / "tz.parquet"  # a typed timestamp with a zone: the same instant, in UTC
    pd.DataFrame(
        {
            "Invoice": ["1"],
            "Quantity": [1],
            "InvoiceDate": [pd.Timestamp("2010-12-31 23:30", tz="Etc/GMT+1")],  # UTC-1
            "Price": [2.5],
            "Customer ID": ["5"],
        }
    ).to_parquet(typed)
    assert stage_raw(typed).invoice_ts.tolist() == [pd.Timestamp("2011-01-01 00:30")]


def test_a_pipe_in_a_folder_is_listed_and_never_opened(tmp_path, monkeypatch):
    import os

    from seg_pipeline.readers import source_files

    folder = tmp_path / "exports"
    folder.mkdir()
    _csv(folder, b"1,A,1,2011-01-01,1.0,5\n", name="a.csv")
    os.mkfifo(folder / "b.csv")  # opening it for reading would wait for a writer
    real_open = open

    def no_pipes(path, *a, **k):
        assert not str(path).endswith("b.csv"), "the pipe was opened"
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", no_pipes)
    files, ignored = source_files(folder)
    assert files == [folder / "a.csv"]
    assert ignored == {"b.csv": "not a regular file (a named pipe): never opened"}
    with pytest.raises(SourceError) as info:
        source_files(folder / "b.csv")
    assert str(info.value) == (
        f"source {folder / 'b.csv'} is not a regular file (a named pipe): it is not opened, as reading it could "
        "wait forever. Export the data to a file and name that"
    )


@pytest.mark.parametrize("late", [False, True], ids=["first lines", "beyond the sniffed lines"])
def test_mixed_line_ends_name_the_lines(tmp_path, late):
    from tests.pipeline.helpers import stage_raw

    lead = b"1,A,1,2011-01-01 10:00:00,1.0,5\r\n" * (20000 if late else 1)
    body = lead + b"2,B,1,2011-01-01 10:00:00,1.0,6\n3,B,1,2011-01-01 10:00:00,1.0,6\r\n"
    path = _csv(tmp_path, body, header=HEADER.replace(b"\n", b"\r\n"))
    with pytest.raises(SourceError) as info:
        stage_raw(path)
    n = 20002 if late else 3
    assert str(info.value) == (
        f"source {path} mixes line ends: line 1 ends with CRLF (\\r\\n), line {n:,} with LF (\\n). Save it "
        "with one kind of line end (e.g. dos2unix, or an editor's line-ending setting), then load it again"
    )


def test_quoted_values_are_shortened_in_every_message(tmp_path):
    """A 1,000,000-character column name is quoted as its first 80 characters and its length."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from seg_pipeline.readers import show
    from tests.pipeline.helpers import stage_raw

    long = "x" * 1_000_000
    assert show(long) == repr("x" * 80 + "…") + " (1,000,000 characters)"
    path = tmp_path / "wide.parquet"
    pq.write_table(pa.table({"Invoice": ["1"], long: ["a"]}), path)
    with pytest.raises(SourceError) as info:
        stage_raw(path)
    msg = str(info.value)
    assert len(msg) < 700
    assert f"The file has columns ['Invoice', {show(long)}]." in msg
    csv = _csv(tmp_path, b"1,A\n", header=long.encode() + b",Invoice\n")  # a header line beyond the sample
    with pytest.raises(SourceError) as info:
        stage_raw(csv)
    assert str(info.value) == (
        f"source {csv}: line 1 is longer than 262,144 bytes (no line end in them): this is not a file of one row "
        "per line, or its header holds a name of that length"
    )
    wide = _csv(tmp_path, b"1,A\n", name="w.csv", header=b"Invoice," + b"y" * 100_000 + b"\n")
    with pytest.raises(SourceError) as info:
        stage_raw(wide)
    assert f"The file has columns ['Invoice', {show('y' * 100_000)}]." in str(info.value)
    assert len(str(info.value)) < 700


def test_mapping_with_amount_and_price_is_refused(tmp_path):
    m = tmp_path / "m.yaml"
    m.write_text("columns:\n  price: unit_price\namount: order_value\n")
    with pytest.raises(SourceError) as info:
        ColumnMapping.from_yaml(m)
    assert str(info.value) == (
        f"column mapping file {m} sets both `amount:` ('order_value') and `columns: price:` ('unit_price'): a unit "
        "price and an order value that would be divided into one cannot both be the price. Keep `columns: price:` "
        "for a file with unit prices, or `amount:` for an order-level export"
    )


def test_mapping_alias_bomb_and_oversized_mapping_are_refused(tmp_path):
    """Billion laughs: each level repeats the one before ten times; refused before anything is built."""
    levels = ['a0: &a0 ["lol"]'] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(levels) + "\n")
    with pytest.raises(SourceError) as info:
        ColumnMapping.from_yaml(bomb)
    assert str(info.value) == (
        f"column mapping file {bomb} uses a YAML anchor or alias (line 1, column 5); a mapping file needs "
        "neither: write each value out"
    )
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * 70_000 + "\ncolumns: {}\n")
    with pytest.raises(SourceError) as info:
        ColumnMapping.from_yaml(big)
    assert str(info.value) == (
        f"column mapping file {big} is 70,015 bytes; a mapping file is a few lines (at most 65,536 bytes): is "
        "it the right file?"
    )
