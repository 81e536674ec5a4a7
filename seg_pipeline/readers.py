"""Readers: put a source file into a DuckDB table exactly as it is, under canonical column names.

Every value lands as text (VARCHAR), so nothing is changed or dropped on the way in: typing, parsing
and rejection are the cleaning step's job (sql/cleaned_sales.sql), where each rejected row keeps its reason.
Typed sources (Parquet) also pass their numbers and timestamps through untouched (NATIVE), so they are
not turned into text and parsed back.

Supported sources: `.csv`, `.csv.gz` (and `.txt`/`.tsv`), `.parquet`, `.xlsx` (every sheet, read with
python-calamine), or a folder holding such files. Columns are recognised from the UCI Online Retail II
names, the older UCI Online Retail names, or a user mapping (a YAML file, see `ColumnMapping.from_yaml`).

User-supplied paths never reach SQL as text: they are bound as parameters. Column names read from the
file header are quoted as identifiers.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path

import duckdb
import pyarrow as pa
import yaml

# Canonical columns of raw_transactions, in order. Required ones must be mappable from every source.
CANONICAL = [
    "invoice",
    "stock_code",
    "description",
    "quantity",
    "invoice_date",
    "price",
    "customer_id",
    "country",
    "store",
]
REQUIRED = ["invoice", "quantity", "invoice_date", "price", "customer_id"]
OPTIONAL = [c for c in CANONICAL if c not in REQUIRED]

# Known header spellings (compared case-insensitively, ignoring spaces and underscores).
KNOWN_NAMES: dict[str, list[str]] = {
    "invoice": ["Invoice", "InvoiceNo", "Invoice Number", "order_id", "OrderID", "Order"],
    "stock_code": ["StockCode", "Stock Code", "sku", "product_id", "ProductID"],
    "description": ["Description", "product_name"],
    "quantity": ["Quantity", "Qty", "items", "num_items"],
    "invoice_date": ["InvoiceDate", "Invoice Date", "order_date", "OrderDate", "date"],
    "price": ["Price", "UnitPrice", "Unit Price", "unit_price"],
    "customer_id": ["Customer ID", "CustomerID", "customer", "Customer", "customer_id", "cust_id"],
    "country": ["Country"],
    "store": ["Store", "store_id", "StoreID", "shop", "branch"],
}

SUPPORTED_SUFFIXES = (".csv", ".csv.gz", ".txt", ".tsv", ".parquet", ".xlsx")


class SourceError(ValueError):
    """A source that cannot be loaded; the message says which file and what is wrong."""


def _norm(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def quote_ident(name: str) -> str:
    """Quote an identifier for DuckDB (double any embedded quote)."""
    return '"' + str(name).replace('"', '""') + '"'


@dataclass(frozen=True)
class ColumnMapping:
    """How to read another export: canonical column -> the header in the file, plus reader options.

    YAML example (every key optional except those needed to find the required columns):

        columns:
          customer_id: cust
          invoice: order_id
          invoice_date: order_date
          quantity: items
          price: unit_price        # or `amount: order_value` for order-level exports (price = amount / quantity)
          stock_code: sku
          store: store_id
        delimiter: " "             # CSV only; default: sniffed
        date_format: "%Y%m%d"      # strptime format when dates are not ISO or m/d/Y
        encoding: latin-1          # CSV only; default utf-8
    """

    columns: dict[str, str] = field(default_factory=dict)
    amount: str | None = None
    delimiter: str | None = None
    date_format: str | None = None
    encoding: str | None = None

    @classmethod
    def from_yaml(cls, path: str | Path | None) -> ColumnMapping:
        if not path:
            return cls()
        p = Path(path)
        if not p.is_file():
            raise SourceError(f"column mapping file {p} does not exist")
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise SourceError(f"column mapping file {p}: expected a mapping at the top level")
        cols = dict(data.get("columns") or {})
        unknown = sorted(set(cols) - set(CANONICAL))
        if unknown:
            raise SourceError(f"column mapping file {p}: unknown target column(s) {unknown}; allowed: {CANONICAL}")
        return cls(
            columns={k: str(v) for k, v in cols.items()},
            amount=data.get("amount"),
            delimiter=data.get("delimiter"),
            date_format=data.get("date_format"),
            encoding=data.get("encoding"),
        )

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(sorted(self.__dict__.items())).encode()).hexdigest()[:16]


def resolve_columns(header: list[str], mapping: ColumnMapping, where: str) -> dict[str, str | None]:
    """Map canonical columns to header names; raise a SourceError naming what is missing."""
    by_norm = {_norm(h): h for h in header}
    out: dict[str, str | None] = {}
    for canon in CANONICAL:
        if canon in mapping.columns:
            wanted = mapping.columns[canon]
            if wanted not in header:
                raise SourceError(
                    f"{where}: column mapping says {canon} is column {wanted!r}, "
                    f"but the file has no such column (columns: {header})"
                )
            out[canon] = wanted
            continue
        found = None
        for cand in KNOWN_NAMES[canon]:
            if _norm(cand) in by_norm:
                found = by_norm[_norm(cand)]
                break
        out[canon] = found
    if mapping.amount:
        if mapping.amount not in header:
            raise SourceError(f"{where}: mapping amount column {mapping.amount!r} not in {header}")
    missing = [c for c in REQUIRED if out[c] is None and not (c == "price" and mapping.amount)]
    if missing:
        hints = {c: KNOWN_NAMES[c][:3] for c in missing}
        raise SourceError(
            f"{where}: required column(s) missing: {missing}. The file has columns {header}. "
            f"Expected one of {hints}, or map them in a column mapping file "
            f"(SEG_PIPELINE_COLUMN_MAPPING / --mapping)."
        )
    return out


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def list_source_files(source: str | Path) -> list[Path]:
    """The files a source names: the file itself, or the supported files of a folder (sorted)."""
    p = Path(source).expanduser()
    if not p.exists():
        raise SourceError(f"source {p} does not exist")
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and f.name.lower().endswith(SUPPORTED_SUFFIXES))
        if not files:
            raise SourceError(f"source folder {p} holds no {', '.join(SUPPORTED_SUFFIXES)} file")
        return files
    if not p.name.lower().endswith(SUPPORTED_SUFFIXES):
        raise SourceError(f"source {p}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    try:
        with open(p, "rb"):
            pass
    except OSError as exc:
        raise SourceError(f"source {p} cannot be read: {exc.strerror or exc}") from exc
    return [p]


# Typed sources (Parquet) already hold numbers and timestamps: besides the text, the reader passes those
# values through as they are, so sql/raw_transactions.sql need not parse text it just made from them.
NATIVE = {
    "quantity": ("_quantity_native", "DOUBLE"),
    "price": ("_price_native", "DOUBLE"),
    "invoice_date": ("_invoice_ts_native", "TIMESTAMP"),
}
_NUMERIC = (
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "DOUBLE",
    "DECIMAL",
)  # not FLOAT: its text ('2.1') and its value as DOUBLE (2.0999999...) differ
_TIMESTAMP = ("TIMESTAMP", "TIMESTAMP_NS", "TIMESTAMP_MS", "TIMESTAMP_S", "DATE")


def _native_kind(sql_type: str | None) -> str | None:
    t = (sql_type or "").upper()
    if t.startswith(_NUMERIC):
        return "DOUBLE"
    if t in _TIMESTAMP:
        return "TIMESTAMP"
    return None


def _select_list(
    cols: dict[str, str | None], mapping: ColumnMapping, src_alias: str = "src", types: dict[str, str] | None = None
) -> str:
    """The canonical text columns, then the NATIVE pass-through columns (NULL unless the source column is
    typed as the parsed value would be)."""
    types = types or {}
    parts = []
    for canon in CANONICAL:
        col = cols[canon]
        if canon == "price" and col is None and mapping.amount:
            # order-level export: unit price derived from the order value; kept as text like every raw value
            amt = f"{src_alias}.{quote_ident(mapping.amount)}"
            qty = f"{src_alias}.{quote_ident(cols['quantity'])}"
            parts.append(f"CAST(TRY_CAST({amt} AS DOUBLE) / NULLIF(TRY_CAST({qty} AS DOUBLE), 0) AS VARCHAR) AS price")
        elif col is None:
            parts.append(f"CAST(NULL AS VARCHAR) AS {canon}")
        else:
            parts.append(f"CAST({src_alias}.{quote_ident(col)} AS VARCHAR) AS {canon}")
    for canon, (alias, kind) in NATIVE.items():
        col = cols[canon]
        if canon == "price" and col is None and mapping.amount:
            qty = cols["quantity"]
            typed = _native_kind(types.get(mapping.amount)) == "DOUBLE" and _native_kind(types.get(qty)) == "DOUBLE"
            expr = (
                (
                    f"CAST({src_alias}.{quote_ident(mapping.amount)} AS DOUBLE) / "
                    f"NULLIF(CAST({src_alias}.{quote_ident(qty)} AS DOUBLE), 0)"
                )
                if typed
                else None
            )
        else:
            expr = (
                f"CAST({src_alias}.{quote_ident(col)} AS {kind})"
                if col and _native_kind(types.get(col)) == kind
                else None
            )
        parts.append(f"{expr or f'CAST(NULL AS {kind})'} AS {alias}")
    return ",\n  ".join(parts)


def _csv_options(mapping: ColumnMapping) -> tuple[str, dict]:
    opts = ["all_varchar = true", "header = true", "null_padding = false"]
    params: dict = {}
    if mapping.delimiter:
        opts.append("delim = $delim")
        params["delim"] = mapping.delimiter
    if mapping.encoding:
        opts.append("encoding = $encoding")
        params["encoding"] = mapping.encoding
    return ", ".join(opts), params


def _read_error(path: Path, exc: Exception) -> SourceError:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = str(exc)
    if "unicode" in text.lower() or "utf-8" in text.lower() or "encoding" in text.lower():
        msg = (
            "the file is not valid UTF-8 text. Save it as UTF-8, or set `encoding:` "
            "(e.g. latin-1) in a column mapping file. DuckDB said: " + msg
        )
    return SourceError(f"source {path} could not be read: {msg}")


def stage_file(
    con: duckdb.DuckDBPyConnection,
    path: Path,
    sha256: str,
    table: str,
    mapping: ColumnMapping,
    loaded_at: datetime,
    transform: tuple[str, dict] | None = None,
) -> int:
    """Append one source file's rows to `table`. Returns the number of rows.

    Without `transform`, `table` has the raw text columns (RAW_DDL). With `transform` = (sql, params),
    the rows as read are offered to `sql` as the relation `__load_raw` and what it selects is appended:
    one pass over the file, no intermediate copy."""
    name = path.name.lower()
    if path.stat().st_size == 0:
        raise SourceError(f"source {path} is empty (0 bytes): there is nothing to load")
    base_params = {"path": str(path), "file": path.name, "sha": sha256, "loaded_at": loaded_at}
    if transform:
        base_params.update(transform[1])
    lineage = "$file AS _source_file, $sha AS _source_sha256, {sheet} AS _sheet, {rownum} AS _row_number, CAST($loaded_at AS TIMESTAMP) AS _loaded_at"
    if name.endswith(".xlsx"):
        return _stage_xlsx(con, path, table, mapping, base_params, transform)
    if name.endswith(".parquet"):
        reader, params = "read_parquet($path, file_row_number = true)", {}
        rownum = "src.file_row_number + 1"
    else:
        opts, params = _csv_options(mapping)
        reader = f"read_csv($path, {opts})"
        rownum = "row_number() OVER ()"
    params = {**base_params, **params}
    try:
        described = con.execute(
            f"DESCRIBE SELECT * FROM {reader}", {k: v for k, v in params.items() if k in ("path", "delim", "encoding")}
        ).fetchall()
    except duckdb.Error as exc:
        raise _read_error(path, exc) from exc
    types = {r[0]: r[1] for r in described if r[0] != "file_row_number"}
    header = list(types)
    if len(header) == 1:
        seps = [d for d in (";", ",", "\t", "|") if d in header[0] and d != mapping.delimiter]
        if seps:
            said = (
                f"the column mapping sets delimiter {mapping.delimiter!r}"
                if mapping.delimiter
                else "the delimiter was detected wrongly"
            )
            raise SourceError(
                f"source {path}: the header was read as one column ({header[0][:80]!r}): the file seems to be "
                f"separated by {seps[0]!r} but {said}. Set `delimiter: {seps[0]!r}` in the column mapping file "
                "(or remove a wrong one)."
            )
    cols = resolve_columns(header, mapping, where=f"source {path}")
    sql = _insert_sql(
        table,
        f"SELECT\n  {_select_list(cols, mapping, types=types)},\n  "
        + lineage.format(sheet="CAST(NULL AS VARCHAR)", rownum=rownum)
        + f"\nFROM {reader} AS src",
        transform,
    )
    try:
        before = con.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchall()[0][0]
        con.execute(sql, params)
        after = con.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchall()[0][0]
    except duckdb.Error as exc:
        raise _read_error(path, exc) from exc
    return after - before


def _insert_sql(table: str, select_sql: str, transform: tuple[str, dict] | None) -> str:
    if transform is None:
        return f"INSERT INTO {quote_ident(table)} {select_sql}"
    return f"INSERT INTO {quote_ident(table)} WITH __load_raw AS ({select_sql})\n{transform[0]}"


def _cell_text(value) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, date):
        return value.strftime("%Y-%m-%d 00:00:00")
    if isinstance(value, time):
        return value.strftime("%H:%M:%S")
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        # calamine gives every xlsx number as float; keep the text the CSV export would show
        return repr(value)
    return str(value)


def _stage_xlsx(con, path: Path, table: str, mapping: ColumnMapping, base_params: dict, transform=None) -> int:
    from python_calamine import CalamineWorkbook

    try:
        wb = CalamineWorkbook.from_path(str(path))
    except Exception as exc:  # calamine raises its own error types
        raise SourceError(f"source {path} is not a readable .xlsx workbook: {exc}") from exc
    total = 0
    for sheet_name in wb.sheet_names:
        rows = wb.get_sheet_by_name(sheet_name).to_python(skip_empty_area=True)
        if not rows:
            continue
        header = [str(h) if h is not None else "" for h in rows[0]]
        cols = resolve_columns(header, mapping, where=f"source {path}, sheet {sheet_name!r}")
        body = rows[1:]
        arrays = {
            f"c{i}": pa.array([_cell_text(r[i]) if i < len(r) else None for r in body], type=pa.string())
            for i in range(len(header))
        }
        tbl = pa.table(arrays) if arrays else pa.table({})
        renamed = {h: f"c{i}" for i, h in enumerate(header)}
        sheet_cols = {k: (renamed[v] if v is not None else None) for k, v in cols.items()}
        sheet_mapping = ColumnMapping(
            amount=renamed.get(mapping.amount) if mapping.amount else None,
            date_format=mapping.date_format,
        )
        view = "__xlsx_sheet"
        con.register(view, tbl)
        try:
            sql = _insert_sql(
                table,
                f"SELECT\n  {_select_list(sheet_cols, sheet_mapping)},\n  "
                "$file AS _source_file, $sha AS _source_sha256, $sheet AS _sheet, "
                "row_number() OVER () AS _row_number, CAST($loaded_at AS TIMESTAMP) AS _loaded_at\n"
                f"FROM {view} AS src",
                transform,
            )
            params = {k: v for k, v in base_params.items() if k != "path"}  # the sheet is read by calamine
            con.execute(sql, {**params, "sheet": sheet_name})
            total += len(body)
        finally:
            con.unregister(view)
    if total == 0:
        raise SourceError(f"source {path}: the workbook has no data rows")
    return total


RAW_DDL = (
    "("
    + ", ".join(f"{c} VARCHAR" for c in CANONICAL)
    + "".join(f", {alias} {kind}" for alias, kind in NATIVE.values())
    + ", _source_file VARCHAR, _source_sha256 VARCHAR, _sheet VARCHAR, _row_number BIGINT, _loaded_at TIMESTAMP)"
)
