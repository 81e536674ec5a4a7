"""cleaned_sales (and rejected_sales): product sales lines kept for analysis; every removed row with its reason."""


import dagster as dg

from ..resources import Warehouse
from ..sql import load_sql, sql_fingerprint
from ..storage import get_state, publish_tables, table_exists
from .common import GROUP, OWNERS, contract_spec, gate, md_table, preview

TABLE = "cleaned_sales"
REJECTED = "rejected_sales"


@dg.asset(
    name=TABLE,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "sql"},
    deps=["raw_transactions"],
    check_specs=[contract_spec(TABLE)],
    description=(
        "Product sales lines fit for analysis (sql/sales_rules.sql, sql/duplicate_lines.sql, sql/cleaned_sales.sql): typed values, "
        "customer IDs normalised ('17850.0' -> '17850'), line_revenue = quantity x price. Removed, each with "
        "its reason in the rejected_sales table (sql/rejected_sales.sql): cancellations (invoice C...), "
        "bad-debt adjustments (A...), non-product stock codes (POST, DOT, M, D, C2, BANK CHARGES, AMAZONFEE, "
        "ADJUST, PADS, TEST*, gift_*...), non-positive quantity or price, missing customer, unparseable "
        "values, dates out of range, exact duplicate lines and rows repeated across workbook sheets. "
        "raw = cleaned + rejected."
    ),
)
def cleaned_sales(context: dg.AssetExecutionContext, warehouse: Warehouse):
    with warehouse.get_connection() as con:
        raw_key = con.execute(
            "SELECT coalesce(string_agg(DISTINCT _source_sha256, ',' ORDER BY _source_sha256), '') FROM raw_transactions"
        ).fetchall()[0][0]
        fingerprint = f"{raw_key}|{sql_fingerprint('sales_rules', 'duplicate_lines', 'cleaned_sales', 'rejected_sales')}"
        unchanged = (
            get_state(con, TABLE) == fingerprint and table_exists(con, TABLE) and table_exists(con, REJECTED)
        )
        if unchanged:
            context.log.info("raw_transactions and the cleaning SQL are unchanged: keeping the published tables")
            yield dg.AssetCheckResult(
                check_name="data_contract",
                passed=True,
                metadata={"note": "inputs unchanged since the last validated publication"},
                description="Inputs unchanged: the published table passed this contract when it was built.",
            )
        else:
            con.execute(f"CREATE OR REPLACE TEMP VIEW sales_rules AS {load_sql('sales_rules')}")
            con.execute(f"CREATE OR REPLACE TEMP TABLE duplicate_lines AS {load_sql('duplicate_lines')}")
            con.execute(f"CREATE OR REPLACE TABLE __stage_{TABLE} AS {load_sql('cleaned_sales')}")
            con.execute(f"CREATE OR REPLACE TABLE __stage_{REJECTED} AS {load_sql('rejected_sales')}")
            con.execute("DROP TABLE duplicate_lines")

            raw_rows = con.execute("SELECT count(*) FROM raw_transactions").fetchall()[0][0]
            staged_reasons = con.execute(
                f"SELECT rejection_reason, count(*) FROM __stage_{REJECTED} GROUP BY 1 ORDER BY 2 DESC LIMIT 4"
            ).fetchall()
            files = [r[0] for r in con.execute("SELECT DISTINCT _source_file FROM raw_transactions ORDER BY 1 LIMIT 5").fetchall()]
            note = (
                f"Cleaning of {raw_rows:,} raw rows from {', '.join(files)} rejected most as: "
                + ", ".join(f"{r} {n:,} ({n / max(raw_rows, 1):.0%})" for r, n in staged_reasons)
                + f" (see table __stage_{REJECTED})."
            )
            yield from gate(
                context, con, TABLE, f"__stage_{TABLE}",
                {"rejected_table": f"__stage_{REJECTED}", "raw_rows": raw_rows},
                note=note,
            )

            publish_tables(con, [TABLE, REJECTED], state=(TABLE, fingerprint))

        raw_rows = con.execute("SELECT count(*) FROM raw_transactions").fetchall()[0][0]
        kept = con.execute(f"SELECT count(*) FROM {TABLE}").fetchall()[0][0]
        reasons = con.execute(
            f"SELECT rejection_reason AS reason, count(*) AS rows, "
            f"round(100.0 * count(*) / {max(raw_rows, 1)}, 2) AS pct_of_raw "
            f"FROM {REJECTED} GROUP BY 1 ORDER BY 2 DESC"
        ).df()
        span = con.execute(
            f"SELECT min(invoice_date), max(invoice_date), count(DISTINCT customer_id), sum(line_revenue) FROM {TABLE}"
        ).fetchall()[0]
        md_preview = preview(con, TABLE)

    meta = {
        "dagster/row_count": kept,
        "raw_rows": raw_rows,
        "rejected_rows": int(reasons["rows"].sum()) if not reasons.empty else 0,
        "rejected_by_reason": dg.MetadataValue.md(md_table(reasons, max_rows=50)),
        "first_sale": str(span[0]),
        "last_sale": str(span[1]),
        "customers": span[2],
        "revenue": float(span[3] or 0),
        "skipped_unchanged": unchanged,
        "preview": md_preview,
    }
    for r in reasons.itertuples():
        meta[f"rejected/{r.reason}"] = int(r.rows)
    yield dg.MaterializeResult(metadata=meta)
