"""What the asset modules share: group, owners, Markdown previews, the contract gate."""

from __future__ import annotations

import time
from collections.abc import Iterator

import dagster as dg
import duckdb
import pandas as pd

from .. import escaping
from ..quality.gate import run_contract
from ..readers import quote_ident

GROUP = "segmentation"
OWNERS = ["team:data-engineering"]
ANALYTICS_OWNERS = ["team:data-engineering", "team:marketing-analytics"]


def contract_spec(asset_name: str, partitions_def: dg.PartitionsDefinition | None = None) -> dg.AssetCheckSpec:
    """The blocking check every asset carries: its data contract from data_contracts/<asset>.yaml. A
    partitioned asset's check is partitioned too, so the UI's check history shows the quarter."""
    from ..quality.contracts import load_contract

    contract = load_contract(asset_name)
    return dg.AssetCheckSpec(
        name="data_contract",
        asset=asset_name,
        blocking=True,
        description=contract.describe(),
        partitions_def=partitions_def,
    )


def sql_references(*names: str) -> dict:
    """Code references to the SQL files an asset runs (the Python source is added by
    dg.with_source_code_references in definitions.py)."""
    from ..settings import SQL_DIR

    if not names:
        return {}
    return {
        "dagster/code_references": dg.CodeReferencesMetadataValue(
            code_references=[
                dg.LocalFileCodeReference(file_path=str(SQL_DIR / f"{n}.sql"), label=f"sql/{n}.sql") for n in names
            ]
        )
    }


def table_spec(
    name: str,
    description: str,
    deps=(),
    partitions_def=None,
    owners=OWNERS,
    kinds=("duckdb",),
    sql: tuple[str, ...] = (),
) -> dg.AssetSpec:
    """The spec of a companion table written by the same step as its main asset."""
    return dg.AssetSpec(
        name,
        description=description,
        deps=list(deps),
        group_name=GROUP,
        owners=owners,
        kinds=set(kinds),
        partitions_def=partitions_def,
        metadata={"dagster/table_name": f"warehouse.main.{name}", **sql_references(*sql)},
    )


def table_metadata(con: duckdb.DuckDBPyConnection, table: str, where: str = "", params=None) -> dict:
    """What the UI shows for every table asset: its column schema (types and short descriptions), its table
    name and its row count (of the partition, with `where`)."""
    from ..schema import describe

    cols = con.execute(f"DESCRIBE {quote_ident(table)}").fetchall()
    rows = con.execute(f"SELECT count(*) FROM {quote_ident(table)} {where}", params or []).fetchall()[0][0]
    return {
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=c[0], type=str(c[1]), description=describe(table, c[0])) for c in cols]
        ),
        "dagster/table_name": f"warehouse.main.{table}",
        "dagster/row_count": int(rows),
    }


def md_table(df: pd.DataFrame, max_rows: int = 10, floatfmt: str = ",.2f") -> str:
    """The first rows of `df` as a Markdown table for Dagster's metadata. Column names and every text cell
    are escaped (escaping.markdown: values from a source file never become markup); numbers are formatted."""
    if df.empty:
        return "_(no rows)_"
    head = df.head(max_rows)
    text = [c for c in head.columns if escaping.is_text(head[c])]
    head = head.assign(**{c: head[c].map(lambda v: v if pd.isna(v) else escaping.markdown(v)) for c in text})
    head.columns = [escaping.markdown(c) for c in head.columns]
    return head.to_markdown(index=False, floatfmt=floatfmt)


def preview(con: duckdb.DuckDBPyConnection, table: str, where: str = "", params=None, n: int = 5) -> dg.MetadataValue:
    df = con.execute(f"SELECT * FROM {quote_ident(table)} {where} LIMIT {int(n)}", params or []).df()
    return dg.MetadataValue.md(md_table(df))


def gate(
    context: dg.AssetExecutionContext,
    con: duckdb.DuckDBPyConnection,
    asset_name: str,
    table: str,
    params: dict | None = None,
    note: str = "",
) -> Iterator[dg.AssetCheckResult]:
    """Validate the staged output against the asset's contract and yield the check result. On a failed
    ERROR-severity expectation, raise: the stage is kept for inspection, the published table is untouched
    and nothing downstream runs. `note`: context added to a failure message (e.g. where the rows went)."""
    outcome = run_contract(con, asset_name, table, params or {}, context=context, note=note)
    yield outcome.check_result(asset_key=asset_name)
    if outcome.blocking:
        raise dg.Failure(description=outcome.failure_message(), metadata=outcome.failure_metadata())


def step_clock():
    """Seconds per phase of a step, for its metadata: `seconds, lap = step_clock()`, then `lap("read")` after
    each phase records the time since the previous lap."""
    seconds: dict[str, float] = {}
    last = [time.perf_counter()]

    def lap(name: str) -> None:
        now = time.perf_counter()
        seconds[name] = round(now - last[0], 3)
        last[0] = now

    return seconds, lap
