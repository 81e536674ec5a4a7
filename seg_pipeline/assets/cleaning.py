"""cleaned_sales (and rejected_sales): product sales lines kept for analysis; every removed row with its reason."""

from datetime import UTC, datetime

import dagster as dg

from ..partitions import parse_quarter, sales_quarter_plan, sync_quarters
from ..resources import PipelineHome, Warehouse
from ..sql import load_sql, sql_fingerprint
from ..storage import SUPERSEDED, SUPERSEDED_DDL, get_state, publish_tables, set_state_sql, table_exists
from .common import GROUP, OWNERS, contract_spec, gate, md_table, preview, sql_references, table_metadata, table_spec

TABLE = "cleaned_sales"
REJECTED = "rejected_sales"
CLEANING_SQL = ("batch_bounds", "sales_rules", "duplicate_lines", "cleaned_sales", "rejected_sales")
BOUNDS_STATE = "cleaned_sales.bounds"  # the implausible_* limits the published rows were judged with
# one rule rejecting more than this share of a file's rows is called out (log, metadata, CLI); not an error
SUSPICIOUS_SHARE = 0.5


CLEANED_DESCRIPTION = (
    "Product sales lines fit for analysis (sql/batch_bounds.sql, sql/sales_rules.sql, sql/duplicate_lines.sql, "
    "sql/cleaned_sales.sql): typed values, customer IDs in their normal form ('17850.0' -> '17850', from "
    "raw_transactions.customer_key), line_revenue = quantity x price. Removed, each with "
    "its reason in the rejected_sales table (sql/rejected_sales.sql): cancellations (invoice C... in a file "
    "in the UCI layout, or the mapping's `cancellations:` prefix), bad-debt adjustments (A..., UCI layout), "
    "non-product stock codes (POST, DOT, M, D, C2, BANK CHARGES, AMAZONFEE, ADJUST, PADS, TEST*, gift_*...), non-positive quantity or price, missing customer, unparseable "
    "values, dates out of range, exact duplicate lines and rows repeated across workbook sheets. "
    "raw = cleaned + rejected. Every rule judges a row by its own values and file, against bounds taken "
    "over all raw rows, so adding files one at a time gives the same tables as loading them together. "
    "Incremental: when source files were only added (same cleaning SQL, no file removed or replaced), only "
    "their rows are cleaned and appended, and checked for duplicates against the published lines; when that "
    "would judge a published row differently (a new file moves an implausible_* limit past a published "
    "value, or holds an earlier copy of a published line), everything is recleaned. A rule rejecting more "
    "than half of a file's rows is called out. Each publication registers the quarters where the sales "
    "really are (partitions.quarter_plan: stray rows far from the rest make no quarter) as the quarterly "
    "assets' partitions, and says which segmented quarters received new sales."
)


@dg.multi_asset(
    name=TABLE,  # the step is named after its main table
    specs=[
        dg.AssetSpec(
            TABLE,
            group_name=GROUP,
            owners=OWNERS,
            kinds={"duckdb", "sql"},
            deps=["raw_transactions"],
            metadata={
                "dagster/table_name": f"warehouse.main.{TABLE}",
                **sql_references("batch_bounds", "sales_rules", "duplicate_lines", "cleaned_sales"),
            },
            description=CLEANED_DESCRIPTION,
        ),
        table_spec(
            REJECTED,
            "Every raw row that cleaning removed, with all its raw values and its rejection_reason "
            "(sql/rejected_sales.sql). raw_transactions = cleaned_sales + rejected_sales, row for row.",
            deps=["raw_transactions"],
            kinds=("duckdb", "sql"),
            sql=("sales_rules", "rejected_sales"),
        ),
    ],
    check_specs=[contract_spec(TABLE)],
)
def cleaned_sales(context: dg.AssetExecutionContext, pipeline: PipelineHome, warehouse: Warehouse):
    yield from _clean(context, pipeline, warehouse)


def _clean(context: dg.AssetExecutionContext, pipeline: PipelineHome, warehouse: Warehouse):
    with warehouse.get_connection() as con:
        # a loaded file is its hash and load time: reloading it (e.g. under a new column mapping) changes it
        loads = con.execute("SELECT _source_sha256, min(_loaded_at) FROM raw_transactions GROUP BY 1").fetchall()
        raw_files = {f"{sha}@{loaded:%Y%m%dT%H%M%S%f}": sha for sha, loaded in loads}
        sql_key = sql_fingerprint(*CLEANING_SQL)
        fingerprint = f"{','.join(sorted(raw_files))}|{sql_key}"
        cleared: dict[str, int] = {}
        superseded_quarters: list[str] = []
        moved = None
        suspicious: list[str] = []
        late: dict[str, str] = {}
        stale: list[str] = []
        mode, new_loads = _plan(
            get_state(con, TABLE), set(raw_files), sql_key, table_exists(con, TABLE) and table_exists(con, REJECTED)
        )
        new_files = sorted(raw_files[k] for k in new_loads)
        if mode == "unchanged":
            context.log.info("raw_transactions and the cleaning SQL are unchanged: keeping the published tables")
            yield dg.AssetCheckResult(
                check_name="data_contract",
                asset_key=TABLE,
                passed=True,
                metadata={"note": "inputs unchanged since the last validated publication"},
                description="Inputs unchanged: the published table passed this contract when it was built.",
            )
        else:
            context.log.info(
                f"cleaning {len(new_files)} newly loaded source file(s) only: the published lines are kept"
                if mode == "append"
                else "cleaning every raw row (first run, changed cleaning SQL, or a source "
                "file was removed or replaced)"
            )
            staged = _stage(con, new_files if mode == "append" else None)
            if mode == "append":
                differs = _append_differs(con, get_state(con, BOUNDS_STATE), staged, new_files)
                if differs:
                    context.log.warning(f"{differs}: cleaning every raw row, as a full reload of these files does")
                    mode, new_files = "full", sorted(raw_files.values())
                    staged = _stage(con, None)
            # sales published before are gone (a file removed or replaced, another source or mapping): every
            # quarterly output built from them goes in the same transaction, so no table mixes two sources
            superseded = mode == "full" and _sales_removed(get_state(con, TABLE), set(raw_files))
            batch_rows = con.execute("SELECT count(*) FROM raw_batch").fetchall()[0][0]
            suspicious = suspicious_rules(con)
            for line in suspicious:
                context.log.warning(line)
            staged_reasons = con.execute(
                f"SELECT rejection_reason, count(*) FROM __stage_{REJECTED} GROUP BY 1 ORDER BY 2 DESC LIMIT 4"
            ).fetchall()
            files = [
                r[0] for r in con.execute("SELECT DISTINCT _source_file FROM raw_batch ORDER BY 1 LIMIT 5").fetchall()
            ]
            note = (
                f"Cleaning of {batch_rows:,} raw rows from {', '.join(files)} rejected most as: "
                + ", ".join(f"{r} {n:,} ({n / max(batch_rows, 1):.0%})" for r, n in staged_reasons)
                + f" (see table __stage_{REJECTED})."
            )
            yield from gate(
                context,
                con,
                TABLE,
                f"__stage_{TABLE}",
                {"rejected_table": f"__stage_{REJECTED}", "raw_rows": batch_rows, "batch_files": "__batch_files"},
                note=note,
            )
            if not superseded:
                late, stale = late_sales(con, mode)
                if late:
                    context.log.warning(late_sales_text(late, stale))
            con.execute("DROP VIEW raw_batch")
            con.execute("DROP TABLE __batch_files")
            # sales published before are gone (a file removed or replaced, another source or mapping): in the
            # same transaction, the quarters the new sales no longer cover are removed from every quarterly
            # table and the others are marked superseded: they stay as published until rebuilt
            dropped: list[str] = []

            def also(c) -> None:
                set_state_sql(c, BOUNDS_STATE, staged["bounds"])
                if superseded:
                    removed, gone, kept = supersede_quarterly_outputs(c)
                    cleared.update(removed)
                    dropped.extend(gone)
                    superseded_quarters.extend(kept)

            publish_tables(con, [TABLE, REJECTED], state=(TABLE, fingerprint), append=mode == "append", also=also)
            if dropped:
                moved = _archive_artifacts(pipeline, dropped)
            if superseded:
                context.log.warning(
                    "the sales changed (a source file removed or replaced, or another source or mapping): "
                    + (
                        f"removed {sum(cleared.values()):,} rows of the quarters the new sales do not cover "
                        f"({', '.join(dropped)}) from {', '.join(cleared)}"
                        + (f", their models and reports moved to {moved}; " if moved else "; ")
                        if cleared
                        else ""
                    )
                    + (
                        f"the quarters {', '.join(superseded_quarters)} stay as published until the quarterly "
                        "steps rebuild them from the new sales"
                        if superseded_quarters
                        else "no quarter was built before"
                    )
                )

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
        plan = sales_quarter_plan(con)
        if plan.set_aside:
            context.log.info(f"quarters not offered: {plan.set_aside_text()}")
        added, removed = sync_quarters(context.instance, [q.key for q in plan.offered])
        cleaned_meta, rejected_meta = table_metadata(con, TABLE), table_metadata(con, REJECTED)

    meta = {
        **cleaned_meta,
        "dagster/row_count": kept,
        "raw_rows": raw_rows,
        "rejected_rows": int(reasons["rows"].sum()) if not reasons.empty else 0,
        "rejected_by_reason": dg.MetadataValue.md(md_table(reasons, max_rows=50)),
        "rules_rejecting_most_of_a_file": dg.MetadataValue.json(suspicious) if suspicious else "none",
        "first_sale": str(span[0]),
        "last_sale": str(span[1]),
        "customers": span[2],
        "revenue": float(span[3] or 0),
        "skipped_unchanged": mode == "unchanged",
        "cleaning_mode": mode,
        "quarterly_outputs_cleared": dg.MetadataValue.json(cleared) if cleared else "none",
        "quarters_superseded": ", ".join(superseded_quarters) or "none",
        "old_artifacts_moved_to": str(moved) if moved else "none",
        "quarters": ", ".join(q.label for q in plan.offered) or "none",
        "quarter_keys": dg.MetadataValue.json([q.key for q in plan.offered]),
        "quarters_set_aside": dg.MetadataValue.json(
            {label: {"lines": n, "why": why} for label, (n, why) in plan.set_aside.items()}
        )
        if plan.set_aside
        else "none",
        "quarters_registered": dg.MetadataValue.json({"added": added, "removed": removed}),
        "late_sales": late_sales_text(late, stale) if late else "none",
        "stale_quarters": dg.MetadataValue.json(stale),
        "raw_files_cleaned_this_run": len(new_files),
        "preview": md_preview,
    }
    for r in reasons.itertuples():
        meta[f"rejected/{r.reason}"] = int(r.rows)
    yield dg.MaterializeResult(asset_key=TABLE, metadata=meta)
    yield dg.MaterializeResult(
        asset_key=REJECTED,
        metadata={
            **rejected_meta,
            "rejected_by_reason": dg.MetadataValue.md(md_table(reasons, max_rows=50)),
            "skipped_unchanged": mode == "unchanged",
        },
    )


def suspicious_rules(con) -> list[str]:
    """One line per file (and sheet) of this batch where one rule rejects more than SUSPICIOUS_SHARE of its
    rows: a rule that removes most of a file more likely misreads the file than finds that much bad data."""
    rows = con.execute(
        f"""
        SELECT f._source_file, f._sheet, r.rejection_reason, count(*) AS n, any_value(f.rows) AS total
        FROM __stage_{REJECTED} AS r
        JOIN __batch_files AS f ON f._source_file = r._source_file AND f._sheet IS NOT DISTINCT FROM r._sheet
        GROUP BY ALL
        HAVING count(*) > $share * any_value(f.rows)
        ORDER BY 1, 2, 3
        """,
        {"share": SUSPICIOUS_SHARE},
    ).fetchall()
    return [
        f"{file}{f' (sheet {sheet})' if sheet else ''}: the rule {reason} rejects {n:,} of its {total:,} rows "
        f"({n / total:.1%}), more than {SUSPICIOUS_SHARE:.0%}: check that the rule fits this file (README, "
        "'What is never guessed'); the rows are in rejected_sales"
        for file, sheet, reason, n, total in rows
    ]


def _quarter_sales(con, table: str) -> dict[str, tuple[int, int]]:
    """Per quarter key: the number of sales lines and the xor of their line hashes (what changes when any
    line of the quarter is added, removed or altered)."""
    return {
        k: (n, h)
        for k, n, h in con.execute(
            f"SELECT strftime(date_trunc('quarter', invoice_date), '%Y-%m-%d'), count(*), bit_xor(line_hash) "
            f"FROM {table} GROUP BY 1"
        ).fetchall()
    }


def late_sales(con, mode: str) -> tuple[dict[str, str], list[str]]:
    """Sales this publication adds to (or, recleaning everything, changes in) quarters up to the last one
    already segmented. Returns {quarter key: what changed} and the segmented quarters now out of date: every
    one from the earliest changed quarter on (a quarter's features look back 12 months, customer value and
    tenure the whole history)."""
    if not (table_exists(con, "segment_assignments") and table_exists(con, TABLE)):
        return {}, []
    segmented = sorted(
        str(r[0]) for r in con.execute("SELECT DISTINCT CAST(quarter AS VARCHAR) FROM segment_assignments").fetchall()
    )
    if not segmented:
        return {}, []
    new = _quarter_sales(con, f"__stage_{TABLE}")
    if mode == "append":
        changed = {k: f"{n:,} new line{'s' * (n != 1)}" for k, (n, _) in new.items()}
    else:
        old = _quarter_sales(con, TABLE)
        changed = {
            k: f"{new.get(k, (0, 0))[0]:,} lines, {old.get(k, (0, 0))[0]:,} before"
            for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k)
        }
    changed = {k: v for k, v in sorted(changed.items()) if k <= segmented[-1]}
    if not changed:
        return {}, []
    stale = [q for q in segmented if q >= min(changed)]
    return changed, stale


def late_sales_text(late: dict[str, str], stale: list[str]) -> str:
    """The notice for sales that arrived after their quarter was segmented."""
    dated = ", ".join(f"{parse_quarter(k).label} ({what})" for k, what in late.items())
    return (
        f"sales dated in quarters already segmented arrived: {dated}. The outputs of "
        f"{', '.join(parse_quarter(q).label for q in stale)} were built without them; refresh them in order with "
        f"`seg-pipeline run --quarters {','.join(stale)}`"
    )


def supersede_quarterly_outputs(con) -> tuple[dict[str, int], list[str], list[str]]:
    """The sales being published (__stage_cleaned_sales) replace sales that quarterly outputs were built
    from. In every quarterly table (those with a quarter column): the rows of quarters the new sales do not
    cover are removed; the quarters they cover are listed in storage.SUPERSEDED and stay as published until
    their quarterly steps rebuild them (a step that fails on the new sales never removes a quarter). Returns
    (rows removed per table, quarters removed, quarters superseded). Runs inside the transaction that
    publishes the new cleaned sales."""
    covered = [q.key for q in sales_quarter_plan(con, f"__stage_{TABLE}").offered]  # as cleaned_sales will offer
    tables = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT table_name FROM information_schema.columns WHERE table_schema = 'main' "
            "AND NOT starts_with(table_name, '_') AND column_name = 'quarter' ORDER BY 1"
        ).fetchall()
    ]
    con.execute(SUPERSEDED_DDL)
    removed, gone, kept = {}, set(), set()
    for t in tables:
        quarters = {r[0] for r in con.execute(f'SELECT DISTINCT CAST(quarter AS VARCHAR) FROM "{t}"').fetchall()}
        drop = sorted(quarters - set(covered))
        if drop:
            n = con.execute(f'DELETE FROM "{t}" WHERE list_contains(?, CAST(quarter AS VARCHAR))', [drop]).fetchall()[
                0
            ][0]
            if n:
                removed[t] = n
            gone.update(drop)
        for q in sorted(quarters & set(covered)):
            con.execute(f"INSERT OR REPLACE INTO {SUPERSEDED} VALUES (?, ?, now()::TIMESTAMP)", [t, q])
            kept.add(q)
    return removed, sorted(gone), sorted(kept)


def _archive_artifacts(pipeline: PipelineHome, quarters: list[str]):
    """Move the model and report folders of `quarters` (no longer covered by the sales) aside, kept, never
    deleted: <home>/superseded/<time>/{models,reports}/<quarter>. Other quarters' folders stay in place."""
    dest = pipeline.path / "superseded" / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    moved = False
    for name in ("models", "reports"):
        for q in quarters:
            folder = pipeline.path / name / q
            if folder.is_dir():
                (dest / name).mkdir(parents=True, exist_ok=True)
                folder.rename(dest / name / q)
                moved = True
    return dest if moved else None


def _sales_removed(state: str | None, raw_files: set[str]) -> bool:
    """Whether file loads cleaned before are no longer in raw_transactions (removed, replaced or reloaded)."""
    done = set(filter(None, (state or "").rpartition("|")[0].split(",")))
    return bool(done - raw_files)


def _plan(state: str | None, raw_files: set[str], sql_key: str, published: bool) -> tuple[str, list[str]]:
    """What to clean. 'unchanged': nothing. 'append': only the raw rows of files loaded since the last
    cleaning (the cleaning SQL is the same and every file load cleaned before is still there). 'full': every
    raw row. `raw_files`: the loads in raw_transactions (hash@load time). Returns the mode and the loads
    to clean."""
    done_key, _, done_sql = (state or "").rpartition("|")
    done = set(filter(None, done_key.split(",")))
    if not published or done_sql != sql_key or not done <= raw_files:
        return "full", sorted(raw_files)
    if done == raw_files:
        return "unchanged", []
    return "append", sorted(raw_files - done)


def _append_differs(con, bounds_state: str | None, staged: dict, new_files: list[str]) -> str | None:
    """Why cleaning only the new files would not give what cleaning everything gives (None: it would): a
    published line loses to an earlier copy in a new file, or the new files move an implausible_* limit past
    a value cleaned before (no limit recorded: a home cleaned before the limits were)."""
    if staged["published_losers"]:
        return (
            f"{staged['published_losers']:,} published line(s) have an earlier copy (by file name, sheet and row) "
            "in a new file"
        )
    if bounds_state == staged["bounds"]:
        return None
    if bounds_state is None:
        return "the implausible-value limits the published rows were judged with are not recorded"
    (old_q, old_p), (new_q, new_p) = (map(float, b.split(",")) for b in (bounds_state, staged["bounds"]))
    moved = con.execute(
        "SELECT count(*) FROM raw_transactions WHERE NOT list_contains(CAST($new AS VARCHAR[]), _source_sha256) "
        "AND ((isfinite(quantity_value) AND abs(quantity_value) > least($oq, $nq) "
        "AND abs(quantity_value) <= greatest($oq, $nq)) "
        "OR (isfinite(price_value) AND abs(price_value) > least($op, $np) AND abs(price_value) <= greatest($op, $np)))",
        {"new": new_files, "oq": old_q, "nq": new_q, "op": old_p, "np": new_p},
    ).fetchall()[0][0]
    if not moved:
        return None
    return (
        f"the new file(s) move the implausible limits (quantity {old_q:,.6g} -> {new_q:,.6g}, price {old_p:,.6g} -> "
        f"{new_p:,.6g}) past {moved:,} row(s) cleaned before"
    )


def _stage(con, new_files: list[str] | None) -> dict:
    """Build __stage_cleaned_sales and __stage_rejected_sales for the raw rows of `new_files` (None: every
    raw row), and the table __batch_files (each file and sheet cleaned, its _invoice_rule and rows). The
    scale of all raw rows is computed once (sql/batch_bounds.sql); one pass computes the rules
    (sql/sales_rules.sql) and stages the rows that break none with their line hash; duplicates are then
    found on that stored hash, against the published lines too, and moved to the rejected rows. The rules
    are cheap to evaluate twice (customer ids are normalised at ingest: raw_transactions.customer_key), far
    cheaper than joining the batch with what was staged (measured in bench/results.md). Returns the limits
    used ("qty_limit,price_limit", recorded at publication) and the number of published lines that lose
    to an earlier copy in the batch (append only; then cleaning starts again over every row)."""
    batch = "SELECT * FROM raw_transactions"
    if new_files is None:
        published = "SELECT * FROM __stage_cleaned_sales LIMIT 0"
    else:
        batch += f" WHERE _source_sha256 IN ({', '.join(repr(h) for h in new_files)})"
        published = f"SELECT * FROM {TABLE}"
    con.execute(f"CREATE OR REPLACE TEMP VIEW raw_batch AS {batch}")
    con.execute(
        "CREATE OR REPLACE TABLE __batch_files AS SELECT _source_file, _sheet, any_value(_invoice_rule) "
        "AS _invoice_rule, count(*) AS rows FROM raw_batch GROUP BY ALL"
    )
    con.execute(f"CREATE OR REPLACE TEMP TABLE sales_bounds AS {load_sql('batch_bounds')}")
    q_limit, p_limit = con.execute("SELECT qty_limit, price_limit FROM sales_bounds").fetchall()[0]
    con.execute(f"CREATE OR REPLACE TEMP VIEW sales_rules AS {load_sql('sales_rules')}")
    con.execute(f"CREATE OR REPLACE TABLE __stage_{TABLE} AS {load_sql('cleaned_sales')}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW batch_lines AS SELECT * FROM __stage_{TABLE}")
    con.execute(f"CREATE OR REPLACE TEMP VIEW published_lines AS {published}")
    con.execute(f"CREATE OR REPLACE TEMP TABLE duplicate_lines AS {load_sql('duplicate_lines')}")
    losers = con.execute("SELECT count(*) FROM duplicate_lines WHERE NOT is_new").fetchall()[0][0]
    con.execute(
        f"DELETE FROM __stage_{TABLE} AS s USING duplicate_lines AS d WHERE d.is_new AND d._source_file = "
        "s._source_file AND d._sheet IS NOT DISTINCT FROM s._sheet AND d._row_number = s._row_number"
    )
    con.execute(f"CREATE OR REPLACE TABLE __stage_{REJECTED} AS {load_sql('rejected_sales')}")
    for name in ("batch_lines", "published_lines", "sales_rules"):
        con.execute(f"DROP VIEW {name}")
    for name in ("duplicate_lines", "sales_bounds"):
        con.execute(f"DROP TABLE {name}")
    return {"bounds": f"{float(q_limit)!r},{float(p_limit)!r}", "published_losers": losers}
