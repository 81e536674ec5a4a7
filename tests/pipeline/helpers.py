"""Helpers shared by the pipeline tests: run only some assets, an independent pandas model of the cleaning
rules, and small hand-made CSV files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import dagster as dg
import pandas as pd

from seg_pipeline.definitions import ALL_ASSETS, UNPARTITIONED
from seg_pipeline.resources import build_resources

UCI_COLUMNS = ["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"]
BUSINESS_COLUMNS = [
    "invoice",
    "stock_code",
    "quantity",
    "invoice_date",
    "price",
    "customer_id",
    "country",
    "line_revenue",
]
QUIET = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

# the service/fee codes of the cleaning SQL, written out again on purpose (independent oracle)
NON_PRODUCT_CODES = {
    "POST",
    "DOT",
    "M",
    "D",
    "C2",
    "S",
    "B",
    "BANK CHARGES",
    "AMAZONFEE",
    "ADJUST",
    "ADJUST2",
    "PADS",
    "CRUK",
    "CARRIAGE",
    "DISCOUNT",
}
EMPTY_CUSTOMER = {"", "nan", "na", "none", "null"}


def materialize(
    home: Path, source, selection: list[str], instance, mapping=None, partition_key=None, raise_on_error: bool = True
):
    """Materialise `selection` of the real assets with the real resources, quietly."""
    return dg.materialize(
        ALL_ASSETS,
        selection=selection,
        partition_key=partition_key,
        resources=build_resources(home, source=str(source), mapping=str(mapping) if mapping else ""),
        instance=instance,
        run_config=QUIET,
        raise_on_error=raise_on_error,
    )


def ingest_and_clean(home: Path, source, instance, mapping=None, raise_on_error: bool = True):
    return materialize(home, source, UNPARTITIONED, instance, mapping=mapping, raise_on_error=raise_on_error)


def failure_message(result) -> str:
    """The user-code error message of the first failed step of a materialize() result."""
    for ev in result.all_events:
        if ev.event_type_value == "STEP_FAILURE":
            err = ev.event_specific_data.error
            texts = []
            while err is not None:
                texts.append(err.message)
                err = err.cause
            return "\n".join(texts)
    return ""


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_uci_csv(path: Path, rows: list[list[str]], columns: list[str] = UCI_COLUMNS, sep: str = ",") -> Path:
    """Write rows of text exactly as given (pandas writes None as an empty field)."""
    pd.DataFrame(rows, columns=columns).to_csv(path, index=False, sep=sep)
    return path


def expected_reasons(raw: pd.DataFrame) -> pd.Series:
    """An independent pandas model of the cleaning rules on the source text (UCI column names, every value
    a str, missing values as ''). Returns the expected rejection reason per row (None = kept).

    Rule order (first match wins), as documented in the cleaning SQL: missing invoice, unparseable date,
    date before 1990 or in the future, unparseable quantity / price, cancellation (C...), adjustment (A...), non-product code, quantity <= 0, price <= 0, missing customer;
    then exact duplicates among the kept rows (the first occurrence stays)."""
    inv = raw["Invoice"].str.strip().str.upper()
    code = raw["StockCode"].str.strip()
    qty = pd.to_numeric(raw["Quantity"], errors="coerce")
    price = pd.to_numeric(raw["Price"], errors="coerce")
    date = pd.to_datetime(raw["InvoiceDate"].str.strip(), errors="coerce", format="%Y-%m-%d %H:%M:%S")
    cust = raw["Customer ID"].str.strip().str.lower()
    reason = pd.Series([None] * len(raw), index=raw.index, dtype=object)

    def rule(mask, name):
        reason[mask & reason.isna()] = name

    rule(inv == "", "missing_invoice")
    rule(date.isna(), "unparseable_date")
    rule((date < pd.Timestamp("1990-01-01")) | (date > pd.Timestamp.now() + pd.Timedelta(days=1)), "date_out_of_range")
    rule(qty.isna(), "unparseable_quantity")
    rule(price.isna(), "unparseable_price")
    rule(inv.str.startswith("C"), "cancellation")
    rule(inv.str.startswith("A"), "adjustment")
    rule(
        code.str.upper().isin(NON_PRODUCT_CODES)
        | code.str.upper().str.startswith("TEST")
        | code.str.lower().str.startswith("gift_"),
        "non_product_code",
    )
    rule(qty <= 0, "non_positive_quantity")
    rule(price <= 0, "non_positive_price")
    rule(cust.isin(EMPTY_CUSTOMER), "missing_customer")
    kept = reason.isna()
    dup = raw[kept].duplicated(keep="first")
    reason[dup[dup].index] = "duplicate_line"
    return reason


def read_source_text(path: Path) -> pd.DataFrame:
    """A UCI-named CSV with every value as text, missing values as ''."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def business_frame(df: pd.DataFrame) -> pd.DataFrame:
    """cleaned_sales business columns, sorted, with a clean index (for exact frame comparisons)."""
    out = df[BUSINESS_COLUMNS].copy()
    out["invoice_date"] = pd.to_datetime(out["invoice_date"])
    return out.sort_values(BUSINESS_COLUMNS, kind="mergesort").reset_index(drop=True)


CORE_PARTITIONED = [
    "customer_features",
    "scaled_matrix",
    "scaled_matrix_columns",
    "clustering_model",
    "segment_assignments",
    "segment_summary",
    "segment_migration_history",
]


def run_core(home: Path, source, quarters: list[str], instance) -> list[str]:
    """The segmentation chain only (what run_pipeline does, without the report assets that follow it):
    ingest and clean, then the five quarterly assets for each quarter in order."""
    ingest_and_clean(home, source, instance)
    for q in quarters:
        materialize(home, source, CORE_PARTITIONED, instance, partition_key=q)
    return list(quarters)


def stage_raw(path: Path, mapping_yaml: Path | None = None) -> pd.DataFrame:
    """One source file read as raw_transactions reads it (the reader and sql/raw_transactions.sql), into an
    in-memory DuckDB, without Dagster: the cheap way to test a reader. Raises the reader's SourceError."""
    from datetime import datetime

    import duckdb

    from seg_pipeline import readers
    from seg_pipeline.sql import load_sql

    mapping = readers.ColumnMapping.from_yaml(mapping_yaml)
    transform = (
        load_sql("raw_transactions"),
        {"date_format": mapping.date_format, "customer_ids": mapping.customer_ids},
    )
    con = duckdb.connect()
    con.execute(f"CREATE TABLE __load_raw {readers.RAW_DDL}")
    con.execute(f"CREATE TABLE raw AS {transform[0]} LIMIT 0", transform[1])
    con.execute("DROP TABLE __load_raw")
    readers.stage_file(con, Path(path), "sha", "raw", mapping, datetime(2026, 1, 1), transform)
    return con.execute("SELECT * FROM raw ORDER BY _sheet, _row_number").df()
