"""What the asset modules share: group, owners, Markdown previews, the contract gate."""

from __future__ import annotations

from typing import Iterator

import dagster as dg
import duckdb
import pandas as pd

from ..quality.gate import run_contract
from ..readers import quote_ident

GROUP = "segmentation"
OWNERS = ["team:data-engineering"]
ANALYTICS_OWNERS = ["team:data-engineering", "team:marketing-analytics"]


def contract_spec(asset_name: str) -> dg.AssetCheckSpec:
    """The blocking check every asset carries: its data contract from data_contracts/<asset>.yaml."""
    from ..quality.contracts import load_contract

    contract = load_contract(asset_name)
    return dg.AssetCheckSpec(
        name="data_contract",
        asset=asset_name,
        blocking=True,
        description=contract.describe(),
    )


def md_table(df: pd.DataFrame, max_rows: int = 10, floatfmt: str = ",.2f") -> str:
    if df.empty:
        return "_(no rows)_"
    return df.head(max_rows).to_markdown(index=False, floatfmt=floatfmt)


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
    yield outcome.check_result()
    if outcome.blocking:
        raise dg.Failure(description=outcome.failure_message(), metadata=outcome.failure_metadata())
