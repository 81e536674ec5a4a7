"""raw_transactions: the configured source, loaded as it is, keyed by file hash."""

from datetime import UTC, datetime

import dagster as dg

from .. import readers
from ..quality import gx_duckdb
from ..resources import PipelineHome, Warehouse
from ..sql import load_sql
from ..storage import create_stage, get_state, set_state_sql, stage_name, table_exists, transaction
from .common import GROUP, OWNERS, contract_spec, gate, md_table, preview, sql_references, table_metadata

TABLE = "raw_transactions"
MAPPING_STATE = "raw_transactions.mapping"  # the column mapping the raw rows were loaded under (_pipeline_state)
# the raw layout's version: a home loaded under an older one is loaded again (part of the mapping state)
RAW_LAYOUT = "raw3"  # raw3: invoice_key, stock_code_key, _invoice_rule; identifiers and offsets normalised
LOAD = "__load_raw"
# how the rows of a file make orders (raw _order_rule), in the words the metadata shows
ORDER_RULE_TEXT = {
    None: "line items: the invoice column groups lines into orders",
    "per_row": "order-level export (no invoice column): one order per customer and timestamp (orders: per_row)",
    "per_day": "order-level export (no invoice column): one order per customer and day (orders: per_day)",
}  # what the readers produce, before the parsed columns are added


def non_product_rule(files_without_codes: list[str], n_files: int) -> str:
    """Whether cleaning can tell service lines (postage, fees, manual lines) from product sales: it needs the
    stock code. Said in the metadata and the run log, never silently skipped."""
    if not files_without_codes:
        return "applied: service and fee lines are told apart by their stock code"
    what = (
        "the source has no stock_code column"
        if len(files_without_codes) == n_files
        else f"{', '.join(files_without_codes)} {'has' if len(files_without_codes) == 1 else 'have'} no stock_code column"
    )
    return (
        f"not applied: {what} (or no stock code in any row), so postage, fees and manual lines (POST, DOT, M, ...) "
        "cannot be told from product sales and are kept as sales"
    )


@dg.asset(
    name=TABLE,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "python"},
    check_specs=[contract_spec(TABLE)],
    metadata={"dagster/table_name": f"warehouse.main.{TABLE}", **sql_references("raw_transactions")},
    description=(
        "Every row of the configured source (CSV, CSV.gz, Parquet, or every sheet of an XLSX workbook), "
        "loaded into DuckDB exactly as it is under canonical column names: a text source's values as text, "
        "a typed source's (Parquet) numbers and timestamps typed only (their text columns NULL), plus the "
        "source file name, its SHA-256, the sheet, the row number and the load time, what each value "
        "parses to (quantity_value, price_value, invoice_ts in UTC; NULL where it does not parse) and the "
        "identifiers' normal forms customer_key, invoice_key, stock_code_key (sql/raw_transactions.sql). Text "
        "files are read with their layout stated or detected from the first "
        "lines (delimiter or runs of whitespace, header or `names:`, either line end); an order-level export "
        "without an order id makes one order per customer and timestamp (or day, `orders: per_day`), as the "
        "`orders` metadata says. Ingestion is keyed "
        "by file hash: a file already loaded is not read again; a changed file replaces its old rows."
    ),
)
def raw_transactions(context: dg.AssetExecutionContext, pipeline: PipelineHome, warehouse: Warehouse):
    mapping = pipeline.mapping()
    hashes: dict = {}
    states: dict = {}  # size and time of each file before it is hashed; compared after it is loaded
    source_files, ignored = readers.source_files(pipeline.source_path())
    for name, why in ignored.items():
        context.log.info(f"ignored {name}: {why}")
    for f in source_files:
        states[f] = readers.file_state(f)
        h = readers.sha256_file(f)
        if h in hashes.values():
            context.log.warning(
                f"{f} has the same content as {next(k for k, v in hashes.items() if v == h)}: loaded once"
            )
            continue
        hashes[f] = h
    files = list(hashes)
    stage = stage_name(TABLE)
    loaded_at = datetime.now(UTC).replace(tzinfo=None)

    with warehouse.get_connection() as con:
        loaded_under = f"{mapping.fingerprint()}:{RAW_LAYOUT}"
        remap = (get_state(con, MAPPING_STATE) or "") != loaded_under
        loaded: set[str] = set()
        if table_exists(con, TABLE) and not remap:
            loaded = {r[0] for r in con.execute(f"SELECT DISTINCT _source_sha256 FROM {TABLE}").fetchall()}
        new_files = [f for f in files if hashes[f] not in loaded]
        stale = loaded - set(hashes.values())

        per_file: dict[str, int] = {}
        empty_rows: dict[str, int] = {}  # fully empty rows (as spreadsheets write at the end), skipped
        date_orders: dict[str, str] = {}  # the order of each file's slash dates, as the file shows it
        if new_files:
            # the text as read, plus what it parses to (sql/raw_transactions.sql over the reader's rows)
            transform = (load_sql(TABLE), {"date_format": mapping.date_format, "customer_ids": mapping.customer_ids})
            con.execute(f"CREATE OR REPLACE TABLE {LOAD} {readers.RAW_DDL}")
            create_stage(con, TABLE, load_sql(TABLE) + " LIMIT 0", transform[1])  # the schema only
            con.execute(f"DROP TABLE {LOAD}")
            for f in new_files:
                context.log.info(f"loading {f}")
                # GX's import runs beside the load (DuckDB work), not before the contract
                with gx_duckdb.importing_beside():
                    per_file[f.name] = readers.stage_file(con, f, hashes[f], stage, mapping, loaded_at, transform)
                readers.check_unchanged(f, states[f])  # the rows read are the content hashed
                empty = readers.drop_empty_rows(con, stage, f.name)
                if empty:
                    empty_rows[f.name] = empty
                    per_file[f.name] -= empty
                if per_file[f.name] == 0:
                    raise dg.Failure(description=f"source {f} holds no data rows (an empty file, or a header only)")
                if mapping.date_format is None:
                    order = readers.settle_slash_dates(con, stage, f.name, f)
                    if order:
                        date_orders[f.name] = order
            # the contract validates the rows being added; rows published earlier passed it when added
            yield from gate(context, con, TABLE, stage)
        else:
            yield dg.AssetCheckResult(
                check_name="data_contract",
                asset_key=TABLE,
                passed=True,
                metadata={"validated_rows": 0, "note": "every source file was loaded and validated before"},
                description="No new or changed source file: nothing new to validate.",
            )

        with transaction(con, TABLE):
            keep_old = table_exists(con, TABLE) and not remap and bool(loaded & set(hashes.values()))
            if not keep_old and new_files:
                # nothing published is kept: the staged table becomes the table (renamed, not copied)
                con.execute(f"DROP TABLE IF EXISTS {TABLE}")
                con.execute(f"ALTER TABLE {stage} RENAME TO {TABLE}")
            else:
                con.execute(
                    f"DELETE FROM {TABLE} WHERE $remap OR NOT list_contains(CAST($keep AS VARCHAR[]), _source_sha256) "
                    "OR list_contains(CAST($new AS VARCHAR[]), _source_sha256)",
                    {"remap": remap, "keep": list(hashes.values()), "new": [hashes[f] for f in new_files]},
                )
                if new_files:
                    con.execute(f"INSERT INTO {TABLE} SELECT * FROM {stage}")
                    con.execute(f"DROP TABLE {stage}")
            if remap:  # recorded when it changes only: an unchanged source leaves every table as it was
                set_state_sql(con, MAPPING_STATE, loaded_under)
            con.execute("DROP TABLE IF EXISTS _raw_mapping")  # where homes made before one state table kept it

        total = con.execute(f"SELECT count(*) FROM {TABLE}").fetchall()[0][0]
        by_file = con.execute(
            f"SELECT _source_file AS file, _sheet AS sheet, _source_sha256 AS sha256, count(*) AS rows, "
            f"max(_loaded_at) AS loaded_at FROM {TABLE} GROUP BY ALL ORDER BY file, sheet"
        ).df()
        absent = [c for c in readers.OPTIONAL if con.execute(f"SELECT count({c}) FROM {TABLE}").fetchall()[0][0] == 0]
        no_codes = [
            r[0]
            for r in con.execute(
                f"SELECT _source_file FROM {TABLE} GROUP BY 1 HAVING count(stock_code) = 0 ORDER BY 1"
            ).fetchall()
        ]
        rules = [r[0] for r in con.execute(f"SELECT DISTINCT _order_rule FROM {TABLE} ORDER BY 1").fetchall()]
        md_preview = preview(con, TABLE)
        table_meta = table_metadata(con, TABLE)

    return_meta = {
        **table_meta,
        "dagster/row_count": total,
        "source": dg.MetadataValue.path(str(pipeline.source_path())),
        "files": dg.MetadataValue.md(md_table(by_file, max_rows=50)),
        "files_loaded_this_run": len(new_files),
        "files_unchanged_skipped": len(files) - len(new_files),
        "rows_loaded_this_run": sum(per_file.values()),
        "stale_files_removed": len(stale),
        "files_ignored": dg.MetadataValue.json(ignored) if ignored else "none",
        "columns_absent_in_source": ", ".join(absent) or "none",
        "non_product_rule": non_product_rule(no_codes, by_file.file.nunique()),
        "orders": "; ".join(ORDER_RULE_TEXT[r] for r in rules),
        "preview": md_preview,
    }
    if no_codes:
        context.log.warning(return_meta["non_product_rule"])
    if per_file:
        return_meta["rows_per_new_file"] = dg.MetadataValue.json(per_file)
        return_meta["empty_rows_skipped"] = dg.MetadataValue.json(empty_rows or {"all files": 0})
    if date_orders:
        return_meta["slash_date_order"] = dg.MetadataValue.json(date_orders)
    yield dg.MaterializeResult(metadata=return_meta)
