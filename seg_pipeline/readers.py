"""Readers: put a source file into a DuckDB table exactly as it is, under canonical column names.

A text source's values land as text (VARCHAR), so nothing is changed or dropped on the way in: typing,
parsing and rejection are the cleaning step's job (sql/sales_rules.sql), where each rejected row keeps its
reason. A typed source (Parquet) passes its numbers and timestamps through untouched (NATIVE) and keeps
them typed only: their text columns are NULL, so the file is copied as it is, not turned into text and
parsed back (rejected_sales shows them as text).

Supported sources: `.csv`, `.csv.gz` (and `.txt`/`.tsv`), `.parquet`, `.xlsx` (every sheet, read with
python-calamine), or a folder holding such files. Columns are recognised from the UCI Online Retail II
names, the older UCI Online Retail names, or a user mapping (a YAML file, see `ColumnMapping.from_yaml`).

User-supplied paths never reach SQL as text: they are bound as parameters. Column names read from the
file header are quoted as identifiers.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import gzip
import hashlib
import re
import stat
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


SHOW_CHARS = 80  # a value quoted in a message is cut to this many characters (a file can hold anything)
SHOW_NAMES = 20  # and a list of names (a header) to this many names


def show(value, limit: int = SHOW_CHARS) -> str:
    """A value from a file or a mapping, quoted for a message: its repr, cut to `limit` characters with an
    ellipsis and the full length, so a 10 MB column name is one short line. Every reader message quotes
    file content through this (or `show_names`)."""
    text = str(value) if not isinstance(value, str) else value
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit] + '…'!r} ({len(text):,} characters)"


def show_names(names, limit: int = SHOW_NAMES) -> str:
    """A list of names (a header, the keys of a mapping), each shortened by `show`, at most `limit` of them."""
    names = list(names)
    shown = ", ".join(show(n) for n in names[:limit])
    more = f", … {len(names) - limit:,} more" if len(names) > limit else ""
    return f"[{shown}{more}]"


def _norm(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch.isalnum())


def quote_ident(name: str) -> str:
    """Quote an identifier for DuckDB (double any embedded quote)."""
    return '"' + str(name).replace('"', '""') + '"'


MAPPING_KEYS = (
    "columns",
    "amount",
    "delimiter",
    "header",
    "names",
    "orders",
    "date_format",
    "encoding",
    "customer_ids",
    "cancellations",
)
MAPPING_MAX_BYTES = 64 << 10  # a mapping file is a few lines
CUSTOMER_ID_RULES = ("numeric", "verbatim")
ORDER_RULES = ("per_row", "per_day")
WHITESPACE = "whitespace"


@dataclass(frozen=True)
class ColumnMapping:
    """How to read another export: canonical column -> the header in the file, plus reader options.

    YAML keys (every one optional; README "Configuration" has one example per layout):

        columns:                   # canonical column -> the file's column name
          customer_id: cust
          invoice: order_id        # leave out for an order-level export (each row is one order)
          invoice_date: order_date
          quantity: items
          price: unit_price        # or `amount:` below for order-level exports (price = amount / quantity)
        amount: order_value        # the order's value, when the file has no unit price
        orders: per_row            # no invoice column: per_row (default; a customer's rows with the same
                                   # timestamp are one order) or per_day (a customer's rows of one day)
        delimiter: "|"             # text files: one character, or `whitespace` (runs of spaces/tabs);
                                   # default: detected from the first lines
        header: false              # text files: the first line is data, not names (then `names:` is needed)
        names: [cust, date, items, order_value]   # the columns in file order (replaces a header's names)
        date_format: "%Y%m%d"      # strptime format when dates are not ISO or m/d/Y
        encoding: latin-1          # text files; default utf-8
        customer_ids: verbatim     # keep ids as written; default numeric: 0017850, 17850.0 -> 17850
        cancellations: {invoice_prefix: "X"}  # invoices starting with X are cancellations; `uci`: the UCI
                                   # rules (C = cancellation, A = adjustment); `none`. Default: the UCI rules
                                   # for a file in the UCI layout only (invoice_rule), none for any other
    """

    columns: dict[str, str] = field(default_factory=dict)
    amount: str | None = None
    delimiter: str | None = None
    header: bool = True
    names: tuple[str, ...] | None = None
    orders: str | None = None  # None: per_row when the file has no invoice column
    date_format: str | None = None
    encoding: str | None = None
    customer_ids: str = "numeric"
    cancellations: str | None = None  # None: by the file's layout (invoice_rule); "uci", "none" or "prefix:X"

    @classmethod
    def from_yaml(cls, path: str | Path | None) -> ColumnMapping:
        if not path:
            return cls()
        p = Path(path)
        if not p.is_file():
            raise SourceError(f"column mapping file {p} does not exist")
        size = p.stat().st_size
        if size > MAPPING_MAX_BYTES:
            raise SourceError(
                f"column mapping file {p} is {size:,} bytes; a mapping file is a few lines (at most "
                f"{MAPPING_MAX_BYTES:,} bytes): is it the right file?"
            )
        try:
            text = p.read_text(encoding="utf-8")
            _refuse_aliases(p, text)
            data = yaml.safe_load(text) or {}
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where is not None else ""
            raise SourceError(
                f"column mapping file {p} is not valid YAML{at}: {getattr(exc, 'problem', exc)}"
            ) from None
        except UnicodeDecodeError:
            raise SourceError(f"column mapping file {p} is not UTF-8 text") from None
        if not isinstance(data, dict):
            raise SourceError(f"column mapping file {p}: expected `key: value` lines at the top level")
        for key in data:
            if key not in MAPPING_KEYS:
                raise SourceError(f"column mapping file {p}: unknown key {show(key)}{_did_you_mean(key, MAPPING_KEYS)}")
        cols = data.get("columns") or {}
        if not isinstance(cols, dict):
            raise SourceError(f"column mapping file {p}: `columns:` must map canonical names to the file's columns")
        for key in cols:
            if key not in CANONICAL:
                raise SourceError(
                    f"column mapping file {p}: unknown target column {show(key)} under `columns:`"
                    f"{_did_you_mean(key, CANONICAL)}; allowed: {CANONICAL}"
                )
        header = data.get("header", True)
        if not isinstance(header, bool):
            raise SourceError(f"column mapping file {p}: `header:` must be true or false, not {show(header)}")
        names = data.get("names")
        if names is not None and (not isinstance(names, list) or not names):
            raise SourceError(f"column mapping file {p}: `names:` must be a list of column names, in file order")
        if names is not None and len({str(n) for n in names}) != len(names):
            dup = sorted({str(n) for n in names if [str(m) for m in names].count(str(n)) > 1})
            raise SourceError(f"column mapping file {p}: `names:` repeats {show_names(dup)}")
        orders = data.get("orders")
        if orders is not None and orders not in ORDER_RULES:
            raise SourceError(f"column mapping file {p}: `orders:` must be per_row or per_day, not {show(orders)}")
        customer_ids = data.get("customer_ids", "numeric")
        if customer_ids not in CUSTOMER_ID_RULES:
            raise SourceError(
                f"column mapping file {p}: `customer_ids:` must be numeric or verbatim, not {show(customer_ids)}"
            )
        cancellations = _cancellation_rule(data.get("cancellations"), p)
        delimiter = data.get("delimiter")
        if delimiter is not None:
            delimiter = str(delimiter)
            if delimiter.lower() == WHITESPACE:
                delimiter = WHITESPACE
            elif delimiter == "\\t":
                delimiter = "\t"
            elif len(delimiter) != 1:
                raise SourceError(
                    f"column mapping file {p}: `delimiter:` must be one character or `whitespace` (runs of spaces "
                    f"or tabs), not {show(delimiter)}"
                )
        roles: dict[str, list[str]] = {}
        for canon, col in [*cols.items(), *([("amount", data["amount"])] if data.get("amount") else [])]:
            roles.setdefault(str(col), []).append(canon)
        shared = {col: r for col, r in roles.items() if len(r) > 1}
        if shared:
            col, r = next(iter(shared.items()))
            raise SourceError(f"column mapping file {p}: column {show(col)} is given two roles, {' and '.join(r)}")
        if data.get("amount") and "price" in cols:
            raise SourceError(
                f"column mapping file {p} sets both `amount:` ({show(data['amount'])}) and `columns: price:` "
                f"({show(cols['price'])}): a unit price and an order value that would be divided into one cannot "
                "both be the price. Keep `columns: price:` for a file with unit prices, or `amount:` for an "
                "order-level export"
            )
        return cls(
            columns={k: str(v) for k, v in cols.items()},
            amount=str(data["amount"]) if data.get("amount") else None,
            delimiter=delimiter,
            header=header,
            names=tuple(str(n) for n in names) if names is not None else None,
            orders=orders,
            date_format=data.get("date_format"),
            encoding=data.get("encoding"),
            customer_ids=customer_ids,
            cancellations=cancellations,
        )

    def fingerprint(self) -> str:
        return hashlib.sha256(repr(sorted(self.__dict__.items())).encode()).hexdigest()[:16]


def _cancellation_rule(value, path: Path) -> str | None:
    """The mapping's `cancellations:` as the raw _invoice_rule text: "uci", "none" or "prefix:<X>"."""
    if value is None:
        return None
    if value in ("uci", "none"):
        return value
    if isinstance(value, dict) and set(value) == {"invoice_prefix"}:
        prefix = str(value["invoice_prefix"] or "").strip().upper()
        if prefix:
            return f"prefix:{prefix}"
    raise SourceError(
        f'column mapping file {path}: `cancellations:` must be uci, none or {{invoice_prefix: "X"}} (invoices '
        f"starting with X are cancellations), not {value!r}"
    )


# The UCI Online Retail (II) spellings of the required columns: a file whose invoice, quantity, date, price and
# customer columns all carry them (recognised or mapped; no `amount:`) is in the UCI layout, where an invoice
# starting with C is a cancellation and one starting with A a bad-debt adjustment.
UCI_NAMES = {
    "invoice": ("Invoice", "InvoiceNo"),
    "quantity": ("Quantity",),
    "invoice_date": ("InvoiceDate",),
    "price": ("Price", "UnitPrice"),
    "customer_id": ("Customer ID", "CustomerID"),
}


def invoice_rule(cols: dict[str, str | None], mapping: ColumnMapping) -> str | None:
    """How a file's invoice numbers mark cancellations (raw _invoice_rule): "uci" (C... cancellation, A...
    adjustment) for a file in the UCI layout, "prefix:<X>" when the mapping says `cancellations:
    {invoice_prefix: X}`, None otherwise (another export's ids are ids: CS-1042 is a sale; a return is
    a negative quantity). An order-level export (no invoice column) has none."""
    if cols.get("invoice") is None:
        return None
    if mapping.cancellations is not None:
        return None if mapping.cancellations == "none" else mapping.cancellations
    uci = not mapping.amount and all(
        cols.get(c) is not None and _norm(cols[c]) in {_norm(n) for n in names} for c, names in UCI_NAMES.items()
    )
    return "uci" if uci else None


def _did_you_mean(word: str, options) -> str:
    close = difflib.get_close_matches(str(word)[:SHOW_CHARS], list(options), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else f"; the keys are {', '.join(options)}"


def _refuse_aliases(p: Path, text: str) -> None:
    """A mapping file is a few plain keys: YAML anchors and aliases (`&a`, `*a`) are refused before anything
    is built from them, so an alias bomb (each alias repeating the one before) cannot expand."""
    try:
        for event in yaml.parse(text, Loader=yaml.SafeLoader):
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
                mark = event.start_mark
                raise SourceError(
                    f"column mapping file {p} uses a YAML anchor or alias (line {mark.line + 1}, column "
                    f"{mark.column + 1}); a mapping file needs neither: write each value out"
                )
    except yaml.YAMLError:
        return  # safe_load reports the syntax error with its place


def resolve_columns(header: list[str], mapping: ColumnMapping, where: str) -> dict[str, str | None]:
    """Map canonical columns to header names; raise a SourceError naming what is missing."""
    by_norm = {_norm(h): h for h in header}
    out: dict[str, str | None] = {}
    for canon in CANONICAL:
        if canon in mapping.columns:
            wanted = mapping.columns[canon]
            if wanted not in header:
                raise SourceError(
                    f"{where}: column mapping says {canon} is column {show(wanted)}, "
                    f"but the file has no such column (columns: {show_names(header)})"
                )
            out[canon] = wanted
            continue
        found = None
        for cand in KNOWN_NAMES[canon]:
            if _norm(cand) in by_norm:
                found = by_norm[_norm(cand)]
                break
        out[canon] = found
    if mapping.amount and mapping.amount not in header:
        raise SourceError(
            f"{where}: column mapping says amount is column {show(mapping.amount)}, "
            f"but the file has no such column (columns: {show_names(header)})"
        )
    explicit = set(mapping.columns.values()) | ({mapping.amount} if mapping.amount else set())
    for canon, col in out.items():
        if col in explicit and mapping.columns.get(canon) != col:
            out[canon] = None  # the mapping gives this column another role: the name-based guess yields
    order_level = out["invoice"] is None and (bool(mapping.columns) or mapping.orders is not None)
    missing = [
        c
        for c in REQUIRED
        if out[c] is None and not (c == "price" and mapping.amount) and not (c == "invoice" and order_level)
    ]
    if missing:
        hints = {c: KNOWN_NAMES[c][:3] for c in missing}
        order_hint = (
            " An order-level export (one row per order, no order id) needs a column mapping file without "
            "`invoice` (README, Configuration)."
            if "invoice" in missing
            else ""
        )
        raise SourceError(
            f"{where}: required column(s) missing: {missing}. The file has columns {show_names(header)}. "
            f"Expected one of {hints}, or map them in a column mapping file "
            f"(SEG_PIPELINE_COLUMN_MAPPING / --mapping).{order_hint}"
        )
    return out


def sha256_file(path: Path, chunk: int = 8 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_state(path: Path) -> tuple[int, int]:
    """A file's size and modification time (ns): taken before it is hashed, compared after it is loaded."""
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def check_unchanged(path: Path, before: tuple[int, int]) -> None:
    """Stop when a file changed between its hash and the end of its load (an export still being written):
    the rows read and the hash recorded for them would be of different content."""
    after = file_state(path)
    if after != before:
        size = f"{before[0]:,} bytes, then {after[0]:,}" if after[0] != before[0] else "same size, new time"
        raise SourceError(
            f"source {path} changed while it was read ({size}); try again when the export is finished. "
            "Nothing was published"
        )


def _not_a_file(path: Path) -> str | None:
    """What a path is when it is neither a regular file nor a folder (after symlinks): a named pipe, a socket,
    a device. Such a path is never opened: opening a pipe waits for a writer, a device may never end."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None  # a broken link: opening it reports the error
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def source_files(source: str | Path) -> tuple[list[Path], dict[str, str]]:
    """The files a source names, and (for a folder) the entries it deliberately ignores, with why: hidden
    files, sub-folders, files of other types and entries that are not regular files (pipes, sockets,
    devices: never opened). A supported file that cannot be opened is an error, never skipped."""
    p = Path(source).expanduser()
    if not p.exists():
        raise SourceError(f"source {p} does not exist")
    if p.is_dir():
        files, ignored = [], {}
        for f in sorted(p.iterdir()):
            special = _not_a_file(f)
            if f.name.startswith((".", "~$")):
                ignored[f.name] = "hidden or an editor's lock file"
            elif f.is_dir():
                ignored[f.name] = "a sub-folder (folders are not read recursively)"
            elif special:
                ignored[f.name] = f"not a regular file ({special}): never opened"
            elif not f.name.lower().endswith(SUPPORTED_SUFFIXES):
                ignored[f.name] = f"not a data file type ({', '.join(SUPPORTED_SUFFIXES)})"
            else:
                files.append(f)
        if not files:
            raise SourceError(f"source folder {p} holds no {', '.join(SUPPORTED_SUFFIXES)} file")
    elif _not_a_file(p):
        raise SourceError(
            f"source {p} is not a regular file ({_not_a_file(p)}): it is not opened, as reading it could wait "
            "forever. Export the data to a file and name that"
        )
    elif not p.name.lower().endswith(SUPPORTED_SUFFIXES):
        raise SourceError(f"source {p}: unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}")
    else:
        files, ignored = [p], {}
    for f in files:
        try:
            with open(f, "rb"):
                pass
        except OSError as exc:
            raise SourceError(f"source {f} cannot be read: {exc.strerror or exc}") from None
    return files, ignored


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
    typed as the parsed value would be). A value the source types is kept typed only: its text column is
    NULL (the text would be made from the value, stored twice and never parsed; rejected_sales shows it as
    text), so a typed source is copied as it is."""
    types = types or {}
    natives: dict[str, str | None] = {}
    for canon, (_alias, kind) in NATIVE.items():
        col = cols[canon]
        if canon == "price" and col is None and mapping.amount:
            qty = cols["quantity"]
            typed = _native_kind(types.get(mapping.amount)) == "DOUBLE" and _native_kind(types.get(qty)) == "DOUBLE"
            natives[canon] = (
                (
                    f"CAST({src_alias}.{quote_ident(mapping.amount)} AS DOUBLE) / "
                    f"NULLIF(CAST({src_alias}.{quote_ident(qty)} AS DOUBLE), 0)"
                )
                if typed
                else None
            )
        else:
            natives[canon] = (
                f"CAST({src_alias}.{quote_ident(col)} AS {kind})"
                if col and _native_kind(types.get(col)) == kind
                else None
            )
    parts = []
    for canon in CANONICAL:
        col = cols[canon]
        if natives.get(canon):
            parts.append(f"CAST(NULL AS VARCHAR) AS {canon}")  # typed: the value is in the native column
        elif canon == "price" and col is None and mapping.amount:
            # order-level export: unit price derived from the order value; kept as text like every raw value
            amt = f"{src_alias}.{quote_ident(mapping.amount)}"
            qty = f"{src_alias}.{quote_ident(cols['quantity'])}"
            parts.append(f"CAST(TRY_CAST({amt} AS DOUBLE) / NULLIF(TRY_CAST({qty} AS DOUBLE), 0) AS VARCHAR) AS price")
        elif col is None:
            parts.append(f"CAST(NULL AS VARCHAR) AS {canon}")
        else:
            parts.append(f"CAST({src_alias}.{quote_ident(col)} AS VARCHAR) AS {canon}")
    for canon, (alias, kind) in NATIVE.items():
        parts.append(f"{natives[canon] or f'CAST(NULL AS {kind})'} AS {alias}")
    # a numeric customer column (Parquet's Customer ID is a double): its value too, so the id's normal form
    # comes from the number (17850.0 -> '17850') without reading the text; the text is kept as it is
    cust = cols["customer_id"]
    typed_id = cust and _native_kind(types.get(cust)) == "DOUBLE"
    parts.append(
        f"{f'CAST({src_alias}.{quote_ident(cust)} AS DOUBLE)' if typed_id else 'CAST(NULL AS DOUBLE)'} AS _customer_native"
    )
    return ",\n  ".join(parts)


# ------------------------------------------------------------------------------------------- text files
SNIFF_BYTES = 256 << 10  # what the layout is judged on: the first 256 KiB (a few thousand lines)
DELIMITER_CANDIDATES = (",", ";", "\t", "|")
_MAGIC = {
    b"\x1f\x8b": "a gzip-compressed file: name it .csv.gz, or unpack it",
    b"PK\x03\x04": "a ZIP archive (an .xlsx workbook is one): name a workbook .xlsx, or unpack the archive",
    b"PAR1": "a Parquet file: name it .parquet",
    b"\xd0\xcf\x11\xe0": "an old Excel (.xls) or other OLE file: save it as .xlsx or CSV",
    b"BZh": "a bzip2-compressed file: unpack it",
    b"\xfd7zXZ": "an xz-compressed file: unpack it",
}


@dataclass(frozen=True)
class TextLayout:
    """What a text file is, as judged from its first lines: the delimiter, whether line 1 is a header,
    the column names and the number of fields."""

    delimiter: str  # one character, or WHITESPACE
    header: bool
    names: list[str]
    encoding: str


def _sample_lines(path: Path, encoding: str | None) -> list[tuple[int, str]]:
    """The first lines of a text file (number, text without the line end), decoded strictly. A file that is
    binary or compressed, or that does not decode, raises a SourceError that says so."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(SNIFF_BYTES)
    except (OSError, EOFError) as exc:  # a .gz that is not gzip, or truncated
        raise SourceError(f"source {path} could not be read: {_first_line(exc)}") from None
    for magic, what in _MAGIC.items():
        if raw.startswith(magic):
            raise SourceError(f"source {path} is not a text file: it is {what}")
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")) and not (encoding or "").lower().startswith("utf-16"):
        raise SourceError(f"source {path} is UTF-16 text: set `encoding: utf-16` in the column mapping file")
    if b"\x00" in raw and not (encoding or "").lower().startswith("utf-16"):
        at = raw.index(b"\x00")
        raise SourceError(
            f"source {path} is not a text file: it holds binary data (a NUL byte at byte {at:,}); "
            "export the data as CSV, Parquet or .xlsx"
        )
    decoder = codecs.getincrementaldecoder(_py_codec(encoding))(errors="strict")
    try:
        text = decoder.decode(raw, final=len(raw) < SNIFF_BYTES)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SourceError(
            f"source {path} is not valid {encoding or 'UTF-8'} text: byte {raw[exc.start : exc.start + 1]!r} on "
            f"line {line:,} does not decode. Save the file as UTF-8, or set `encoding:` (e.g. latin-1) in "
            "a column mapping file"
        ) from None
    if len(raw) == SNIFF_BYTES and b"\n" not in raw and b"\r" not in raw:
        raise SourceError(
            f"source {path}: line 1 is longer than {SNIFF_BYTES:,} bytes (no line end in them): this is not "
            "a file of one row per line, or its header holds a name of that length"
        )
    # lines end where the CSV reader ends them (LF, CRLF or CR), not at the other characters Python's
    # splitlines() breaks at (vertical tab, U+2028...): a value holding one stays on its line
    lines = re.split(r"\r\n|\r|\n", text)
    if lines and lines[-1] == "":
        lines.pop()
    if len(raw) == SNIFF_BYTES and lines:
        lines = lines[:-1]  # the last line may be cut
    return [(i, line) for i, line in enumerate(lines, 1) if line.strip(" \t,;|")]


def _py_codec(encoding: str | None) -> str:
    try:
        return codecs.lookup(encoding or "utf-8").name
    except LookupError:
        raise SourceError(
            f"`encoding: {show(encoding)}` in the column mapping file is not an encoding Python knows"
        ) from None


def split_fields(line: str, delimiter: str) -> list[str]:
    if delimiter == WHITESPACE:
        return line.split()
    return next(csv.reader([line], delimiter=delimiter, quotechar='"'))


def inspect_text(path: Path, mapping: ColumnMapping) -> TextLayout:
    """Judge a text file's layout from its first lines, or raise a SourceError that says what was seen and
    which mapping key changes it: one column, a varying number of fields on line N, names that do not
    match, a header where `header: false` says there is none."""
    encoding = mapping.encoding or "utf-8"
    lines = _sample_lines(path, mapping.encoding)
    if not lines:
        raise SourceError(f"source {path} holds no data rows (only blank lines)")
    delimiter = mapping.delimiter or _detect_delimiter(path, lines)
    counts = [(n, len(split_fields(text, delimiter))) for n, text in lines]
    first_n, expected = counts[0]
    if expected == 1 and delimiter != WHITESPACE:
        first = lines[0][1]
        seps = [d for d in DELIMITER_CANDIDATES if d in first and d != delimiter]
        if mapping.delimiter and seps:
            hint = f"the file seems to be separated by {seps[0]!r}: set `delimiter: {seps[0]!r}`"
        elif len(first.split()) > 1:
            hint = "the file seems to be separated by spaces: set `delimiter: whitespace`"
        else:
            hint = "set `delimiter:` in the column mapping file to the character between its fields"
        said = f"with `delimiter: {delimiter!r}`" if mapping.delimiter else "with no delimiter found"
        raise SourceError(f"source {path}: line {first_n} was read as one column ({show(first)}) {said}; {hint}")
    for n, count in counts[1:]:
        if count != expected:
            what = "the header" if mapping.header else f"line {first_n}"
            how = "`delimiter: whitespace`" if delimiter == WHITESPACE else f"delimiter {delimiter!r}"
            raise SourceError(
                f"source {path}: line {n:,} has {count} fields where {what} has {expected} (split by {how}; "
                f"line {n:,}: {show(dict(lines)[n])}). Fix the file, or set `delimiter:` in the column "
                "mapping file if it is not the one between the fields"
            )
    first_fields = [f.strip() for f in split_fields(lines[0][1], delimiter)]
    if mapping.names is not None and len(mapping.names) != expected:
        raise SourceError(
            f"source {path}: `names:` lists {len(mapping.names)} names but the file has {expected} columns "
            f"(line {first_n}: {show(lines[0][1])})"
        )
    if not mapping.header:
        if mapping.names is None:
            raise SourceError(
                f"source {path}: `header: false` needs `names:`, the column names in file order "
                f"(the file has {expected} columns; line {first_n}: {show(lines[0][1])})"
            )
        if len(lines) > 1 and _looks_like_header(
            first_fields, [f.strip() for f in split_fields(lines[1][1], delimiter)]
        ):
            raise SourceError(
                f"source {path}: `header: false`, but line {first_n} looks like a header "
                f"({', '.join(first_fields)}: text where the next lines have numbers). Remove `header: false` "
                "(`names:` then replaces the header's names), or remove the header line from the file"
            )
    names = list(mapping.names) if mapping.names is not None else first_fields
    check_unique(f"source {path}", names)
    return TextLayout(delimiter=delimiter, header=mapping.header, names=names, encoding=encoding)


def check_unique(where: str, header: list[str], fix: str = "or set `names:` in the column mapping file") -> None:
    """Two columns of one name (or names that differ only in case, spaces or punctuation): which one is
    meant cannot be told, so the load stops rather than let the first one win. The same rule for every
    source: a text file's header (or `names:`), each sheet of a workbook, a Parquet file's schema.
    `where`: 'source <path>' (and the sheet)."""
    seen: dict[str, str] = {}
    for h in header:
        if _norm(h) in seen:
            twice = [seen[_norm(h)], h] if seen[_norm(h)] != h else [h]
            raise SourceError(
                f"{where}: the header repeats column name(s) {show_names(twice)}: which one is meant cannot be "
                f"told. Rename them in the file, {fix}"
            )
        if _norm(h):
            seen[_norm(h)] = h


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", "."))
    except ValueError:
        return False
    return True


def _looks_like_header(first: list[str], second: list[str]) -> bool:
    """Line 1 is a header when it has no number where line 2 has numbers."""
    numeric_below = [i for i, v in enumerate(second) if v and _is_number(v)]
    return bool(numeric_below) and not any(_is_number(first[i]) for i in numeric_below if i < len(first))


def _detect_delimiter(path: Path, lines: list[tuple[int, str]]) -> str:
    """The candidate that splits the first lines into the same number (> 1) of fields; else the one that
    splits line 1 most (the field count check then names the line that differs)."""
    best, best_score = ",", (-1, -1)
    for d in DELIMITER_CANDIDATES:
        counts = [len(split_fields(text, d)) for _, text in lines[:200]]
        if counts[0] < 2:
            continue
        score = (sum(c == counts[0] for c in counts), counts[0])
        if score > best_score:
            best, best_score = d, score
    return best


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
    if name.endswith(".xlsx"):
        if not mapping.header or mapping.names is not None:
            raise SourceError(
                f"source {path}: `header:` and `names:` apply to text files; a workbook's first row is its header"
            )
        return _stage_xlsx(con, path, table, mapping, base_params, transform)
    params: dict = {}
    if name.endswith(".parquet"):
        reader = "read_parquet($path, file_row_number = true)"
        rownum = "src.file_row_number + 1"
        try:
            described = con.execute(f"DESCRIBE SELECT * FROM {reader}", {"path": str(path)}).fetchall()
        except duckdb.Error as exc:
            raise SourceError(f"source {path} could not be read as Parquet: {_first_line(exc)}") from None
        types = {r[0]: r[1] for r in described if r[0] != "file_row_number"}
        # DuckDB renames a repeated name (Price, Price_1): the rule is applied to the names the file holds
        check_unique(f"source {path}", parquet_names(path), fix=ONLY_RENAME)
    else:
        layout = inspect_text(path, mapping)  # checks the header's names (or `names:`)
        reader, rownum, params = _text_reader(path, layout)
        types = dict.fromkeys(layout.names, "VARCHAR")
    header = list(types)
    cols = resolve_columns(header, mapping, where=f"source {path}")
    rule = order_rule(cols, mapping)
    lineage = (
        "$file AS _source_file, $sha AS _source_sha256, CAST(NULL AS VARCHAR) AS _sheet, "
        f"{rownum} AS _row_number, CAST($loaded_at AS TIMESTAMP) AS _loaded_at, $order_rule AS _order_rule, "
        "$invoice_rule AS _invoice_rule"
    )
    sql = _insert_sql(
        table,
        f"SELECT\n  {_select_list(cols, mapping, types=types)},\n  {lineage}\nFROM {reader} AS src",
        transform,
    )
    try:
        before = con.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchall()[0][0]
        con.execute(sql, {**base_params, **params, "order_rule": rule, "invoice_rule": invoice_rule(cols, mapping)})
        after = con.execute(f"SELECT count(*) FROM {quote_ident(table)}").fetchall()[0][0]
    except duckdb.Error as exc:
        raise _read_error(path, exc) from None
    return after - before


ONLY_RENAME = "then load it again (`names:` applies to text files only)"


def parquet_names(path: Path) -> list[str]:
    """The top-level column names a Parquet file's schema holds, as written (repeats included)."""
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as exc:
        raise SourceError(f"source {path} could not be read as Parquet: {_first_line(exc)}") from None


def order_rule(cols: dict[str, str | None], mapping: ColumnMapping) -> str | None:
    """None for a file of sales lines (it has an invoice column); for an order-level export (no invoice
    column), how its rows make orders: per_row or per_day (ColumnMapping.orders)."""
    return None if cols["invoice"] else (mapping.orders or "per_row")


def _text_reader(path: Path, layout: TextLayout) -> tuple[str, str, dict]:
    """The FROM clause that reads a text file in `layout`, its row-number expression and its parameters.
    Delimited files: DuckDB's CSV reader with every dialect setting given (nothing left to its sniffer,
    which can skip lines it does not like). Whitespace files: each line split on runs of spaces/tabs."""
    params = {"encoding": layout.encoding}
    if layout.delimiter != WHITESPACE:
        params.update(delim=layout.delimiter, names=layout.names)
        reader = (
            "read_csv($path, all_varchar = true, header = $header, names = $names, delim = $delim, quote = '\"', "
            "escape = '\"', skip = 0, null_padding = false, encoding = $encoding)"
        )
        return reader, "row_number() OVER ()", {**params, "header": layout.header}
    fields = ", ".join(f"parts[{i}] AS {quote_ident(n)}" for i, n in enumerate(layout.names, 1))
    lines = (
        "SELECT row_number() OVER () AS __line, line, "
        "regexp_split_to_array(trim(line, chr(32) || chr(9) || chr(13)), '[ \\t]+') AS parts "
        "FROM read_csv($path, columns = {'line': 'VARCHAR'}, header = false, delim = chr(0), quote = '', "
        "escape = '', auto_detect = false, encoding = $encoding)"
    )
    first = 2 if layout.header else 1
    reader = (
        f"(SELECT {fields}, __line - {first - 1} AS __row FROM ({lines}) "
        f"WHERE __line >= {first} AND trim(line, chr(32) || chr(9) || chr(13)) <> '')"
    )
    return reader, "src.__row", params


def _first_line(exc: Exception, limit: int = 200) -> str:
    """The first line of an error from a library, cut like a quoted value (it may quote one)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= limit else f"{line[:limit]}… ({len(line):,} characters)"


def mixed_line_ends(path: Path) -> str | None:
    """Where a text file's line ends change kind (CRLF, LF), outside quoted values: 'line 1 ends with CRLF
    (\\r\\n), line 12 with LF (\\n)', or None. Read only when the CSV reader has failed."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    first, inside = None, False
    try:
        with opener(path, "rb") as f:
            for n, line in enumerate(f, 1):
                inside ^= line.count(b'"') % 2 == 1  # a line end inside a quoted value is part of the value
                if inside or not line.endswith(b"\n"):
                    continue
                kind = "CRLF (\\r\\n)" if line.endswith(b"\r\n") else "LF (\\n)"
                if first is None:
                    first = (n, kind)
                elif kind != first[1]:
                    return f"line {first[0]:,} ends with {first[1]}, line {n:,} with {kind}"
    except (OSError, EOFError):
        return None
    return None


def _read_error(path: Path, exc: Exception) -> SourceError:
    """DuckDB's reading error as the cause it names: a line with another number of fields, text that does
    not decode, line ends of two kinds, or (anything else) its first line."""
    text = str(exc)
    if "Error when sniffing file" in text or "state machine reached an invalid state" in text:
        mixed = mixed_line_ends(path)
        if mixed:
            return SourceError(
                f"source {path} mixes line ends: {mixed}. Save it with one kind of line end (e.g. dos2unix, "
                "or an editor's line-ending setting), then load it again"
            )
    line = re.search(r"CSV Error on Line: (\d+)", text)
    fields = re.search(r"Expected Number of Columns: (\d+) Found: (\d+)", text)
    if fields:
        at = f"line {int(line.group(1)):,}" if line else "a line"
        return SourceError(
            f"source {path}: {at} has {fields.group(2)} fields where the header has {fields.group(1)}. "
            "Fix the file, or set `delimiter:` in the column mapping file if it is not the one between the fields"
        )
    if "Invalid unicode" in text or "byte sequence mismatch" in text:
        at = f" on line {int(line.group(1)):,}" if line else ""
        return SourceError(
            f"source {path} is not valid UTF-8 text{at}. Save it as UTF-8, or set `encoding:` (e.g. latin-1) in "
            "a column mapping file"
        )
    if "No space left" in text:
        return SourceError(f"no space left on device while loading {path}: {_first_line(exc)}")
    return SourceError(f"source {path} could not be read: {_first_line(exc)}")


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
        raise SourceError(f"source {path} is not a readable .xlsx workbook: {_first_line(exc)}") from None
    total = 0
    for sheet_name in wb.sheet_names:
        rows = wb.get_sheet_by_name(sheet_name).to_python(skip_empty_area=True)
        if not rows:
            continue
        header = [str(h) if h is not None else "" for h in rows[0]]
        where = f"source {path}, sheet {show(sheet_name)}"
        check_unique(where, header, fix=ONLY_RENAME)
        cols = resolve_columns(header, mapping, where=where)
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
            orders=mapping.orders,
        )
        view = "__xlsx_sheet"
        con.register(view, tbl)
        try:
            sql = _insert_sql(
                table,
                f"SELECT\n  {_select_list(sheet_cols, sheet_mapping)},\n  "
                "$file AS _source_file, $sha AS _source_sha256, $sheet AS _sheet, "
                "row_number() OVER () AS _row_number, CAST($loaded_at AS TIMESTAMP) AS _loaded_at, "
                "$order_rule AS _order_rule, $invoice_rule AS _invoice_rule\n"
                f"FROM {view} AS src",
                transform,
            )
            params = {k: v for k, v in base_params.items() if k != "path"}  # the sheet is read by calamine
            con.execute(
                sql,
                {
                    **params,
                    "sheet": sheet_name,
                    "order_rule": order_rule(cols, mapping),
                    "invoice_rule": invoice_rule(cols, mapping),
                },
            )
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
    + ", _customer_native DOUBLE"
    + ", _source_file VARCHAR, _source_sha256 VARCHAR, _sheet VARCHAR, _row_number BIGINT, _loaded_at TIMESTAMP,"
    " _order_rule VARCHAR, _invoice_rule VARCHAR)"
)


# Slash dates (01/12/2011 10:45) are day/month in most of the world and month/day in the US exports. Without
# `date_format:`, the file decides: a first part above 12 means day first, a second part above 12 month
# first. A file with neither cannot be told apart, and one with both mixes the two: the load stops.
SLASH = r"^\s*(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})\b"
DAY_FIRST_FORMATS = [
    "%d/%m/%Y %H:%M",
    "%d/%m/%Y %H:%M:%S",
    "%d/%m/%y %H:%M",
    "%d/%m/%Y",
    "%d/%m/%y",
    "%d/%m/%Y %I:%M %p",
    "%d/%m/%Y %I:%M:%S %p",
]


def settle_slash_dates(con: duckdb.DuckDBPyConnection, table: str, file: str, path: Path) -> str | None:
    """Decide the order of the slash dates of one loaded file (rows of `file` in `table`, parsed month
    first by sql/raw_transactions.sql) and re-parse them day first when the file says so. Returns
    'day/month', 'month/day' or None (no slash dates); raises a SourceError when the file cannot tell or
    mixes both. Only for loads without `date_format:`."""
    t = quote_ident(table)
    first = f"try_cast(regexp_extract(invoice_date, '{SLASH}', 1) AS INTEGER)"
    second = f"try_cast(regexp_extract(invoice_date, '{SLASH}', 2) AS INTEGER)"
    n, day_first, month_first, ex_day, ex_month, example = con.execute(
        f"""WITH parts AS (
            SELECT invoice_date, {first} AS a, {second} AS b FROM {t}
            WHERE _source_file = $file AND invoice_date LIKE '%/%' AND regexp_matches(invoice_date, '{SLASH}')
        )
        SELECT count(*) FILTER (WHERE a <= 12 AND b <= 12),
            count(*) FILTER (WHERE a BETWEEN 13 AND 31 AND b BETWEEN 1 AND 12),
            count(*) FILTER (WHERE b BETWEEN 13 AND 31 AND a BETWEEN 1 AND 12),
            min(invoice_date) FILTER (WHERE a BETWEEN 13 AND 31 AND b BETWEEN 1 AND 12),
            min(invoice_date) FILTER (WHERE b BETWEEN 13 AND 31 AND a BETWEEN 1 AND 12),
            min(invoice_date) FILTER (WHERE a <= 12 AND b <= 12)
        FROM parts""",
        {"file": file},
    ).fetchall()[0]
    if not (n or day_first or month_first):
        return None  # no slash date that could be read either way (at most impossible ones: unparseable)
    example = example or ex_day or ex_month
    with_time = ":" in (example or "")
    formats = (
        ('"%d/%m/%Y %H:%M"', '"%m/%d/%Y %H:%M"')
        if with_time and (example or "").count(":") == 1
        else ('"%d/%m/%Y %H:%M:%S"', '"%m/%d/%Y %H:%M:%S"')
        if with_time
        else ('"%d/%m/%Y"', '"%m/%d/%Y"')
    )
    fix = f"Set `date_format:` in the column mapping file: {formats[0]} (day first) or {formats[1]} (month first)"
    if day_first and month_first:
        raise SourceError(
            f"source {path}: column invoice_date mixes day-first and month-first slash dates ({day_first:,} rows "
            f"like {show(ex_day)}, {month_first:,} like {show(ex_month)}), so neither order reads all of them. {fix}, or "
            "fix the file"
        )
    if not day_first and not month_first:  # n > 0 here
        raise SourceError(
            f"source {path}: column invoice_date has {n:,} slash dates such as {show(example)} that read as day/month "
            f"or as month/day, and no date in the file has a part above 12 to tell which. {fix}"
        )
    if day_first:
        con.execute(
            f"UPDATE {t} SET invoice_ts = try_strptime(regexp_replace(trim(invoice_date), '\\s*([AaPp][Mm])$', ' \\1'), "
            "$formats) "
            f"WHERE _source_file = $file AND regexp_matches(invoice_date, '{SLASH}')",
            {"file": file, "formats": DAY_FIRST_FORMATS},
        )
        return "day/month"
    return "month/day"


def drop_empty_rows(con: duckdb.DuckDBPyConnection, table: str, file: str) -> int:
    """Remove the rows of `file` in `table` whose every value is empty (a spreadsheet's trailing rows):
    they hold nothing to keep or reject. Returns how many."""
    empty = " AND ".join(
        [f"{c} IS NULL" for c in ("quantity_value", "price_value", "invoice_ts")]  # typed values (NULL for text)
        + [f"nullif(trim({c}), '') IS NULL" for c in CANONICAL]
    )
    return con.execute(
        f"DELETE FROM {quote_ident(table)} WHERE _source_file = $file AND {empty}", {"file": file}
    ).fetchall()[0][0]
