"""Fixtures of the data-quality tests: one small good source, one good baseline run of the pipeline on it
(shared by every test of tests/quality), cheap copies of that home for each bad-input case, and helpers
that snapshot the warehouse so "the last good outputs are intact" can be checked table by table."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from seg_pipeline.cli import run_pipeline
from seg_pipeline.sample_data import write_transactions

# Two quarters of the generated data (about 9k lines, 200 customers): a full run takes a few seconds.
GOOD_FROM, GOOD_TO = "2011-04-01", "2011-10-01"
GOOD_QUARTERS = ["2011-04-01", "2011-07-01"]
LATEST = GOOD_QUARTERS[-1]

# The tables the brief names; every other published table is compared as well (see published_tables).
CORE_TABLES = [
    "raw_transactions",
    "cleaned_sales",
    "rejected_sales",
    "customer_features",
    "segment_assignments",
    "segment_migration_history",
]
# Published by raw_transactions itself: left as they were by a failed load, replaced when the load succeeds.
# the seven assets of the design card, in DAG order
ASSETS = [
    "raw_transactions",
    "cleaned_sales",
    "customer_features",
    "scaled_matrix",
    "clustering_model",
    "segment_assignments",
    "segment_migration_history",
]
RAW_TABLES = {"raw_transactions", "_pipeline_state"}  # what a raw_transactions run writes (its mapping state row)


@pytest.fixture(scope="session")
def good_csv(tmp_path_factory) -> Path:
    """Generated Online Retail II-shaped transactions from 2011-04-01 to 2011-09-30, as the export writes them."""
    d = tmp_path_factory.mktemp("good_source")
    full = write_transactions(d / "generated.csv", n_customers=400, seed=7)
    out = d / "good.csv"
    con = duckdb.connect()
    try:
        con.execute(
            "COPY (SELECT * FROM read_csv($p, all_varchar = true, header = true) "
            "WHERE InvoiceDate >= $lo AND InvoiceDate < $hi) TO '" + str(out).replace("'", "''") + "' (HEADER)",
            {"p": str(full), "lo": GOOD_FROM, "hi": GOOD_TO},
        )
    finally:
        con.close()
    return out


@pytest.fixture(scope="session")
def good_frame(good_csv) -> pd.DataFrame:
    """The good source as text, exactly as in the file (empty cells stay empty strings)."""
    return pd.read_csv(good_csv, dtype=str, keep_default_na=False, na_filter=False)


@pytest.fixture(scope="session")
def quality_instance():
    """The Dagster instance of these tests' runs (many of which fail on purpose), kept apart from the shared one."""
    import dagster as dg

    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture(scope="session")
def baseline_home(tmp_path_factory, good_csv, quality_instance) -> Path:
    """A home holding one complete good run (both quarters). Never modified: tests copy it."""
    home = tmp_path_factory.mktemp("baseline") / "home"
    quarters = run_pipeline(home, source=str(good_csv), quarters="all", quiet=True, instance=quality_instance)
    assert quarters == GOOD_QUARTERS
    return home


@pytest.fixture
def home_copy(baseline_home, tmp_path) -> Path:
    """A fresh copy of the baseline home: the 'last good' state a bad run starts from."""
    dst = tmp_path / "home"
    shutil.copytree(baseline_home, dst)
    return dst


def connect(home: Path, read_only: bool = True) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(Path(home) / "warehouse.duckdb"), read_only=read_only)


def tables(home: Path) -> list[str]:
    con = connect(home)
    try:
        return [
            r[0]
            for r in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' ORDER BY 1"
            ).fetchall()
        ]
    finally:
        con.close()


def published_tables(home: Path) -> list[str]:
    """Every table a run published (not the staged candidates `__stage_*` nor loading scratch `__*`)."""
    return [t for t in tables(home) if not t.startswith("__")]


def downstream_of(asset: str, all_tables: list[str]) -> list[str]:
    """The published tables a failure of `asset` must leave untouched (the asset's own included)."""
    if asset == "raw_transactions":
        return list(all_tables)
    if asset == "cleaned_sales":
        return [t for t in all_tables if t not in RAW_TABLES]
    raise ValueError(asset)


def snapshot(home: Path, names: list[str] | None = None) -> dict[str, tuple[int, int]]:
    """Per table: (row count, order-independent hash of every row's content). Fails if a table is unreadable."""
    names = published_tables(home) if names is None else names
    con = connect(home)
    try:
        return {
            t: tuple(con.execute(f'SELECT count(*), coalesce(sum(hash(x)::HUGEINT), 0) FROM "{t}" AS x').fetchall()[0])
            for t in names
        }
    finally:
        con.close()


def counts(snap: dict[str, tuple[int, int]]) -> dict[str, int]:
    return {t: v[0] for t, v in snap.items()}


def latest_check(instance, asset: str):
    """The latest evaluation of an asset's data_contract check in `instance` (an AssetCheckEvaluation)."""
    import dagster as dg

    key = dg.AssetCheckKey(dg.AssetKey(asset), "data_contract")
    records = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
    assert records, f"no data_contract evaluation of {asset}"
    return records[0].event.dagster_event.event_specific_data


def contract_rule(asset: str, column: str, severity: str, query_has: str | None = None) -> str:
    """The text of the contract rule about `column` with `severity` (whose SQL contains `query_has`), read from
    data_contracts/: tests assert that a message names the rule without copying its wording."""
    from seg_pipeline.quality.contracts import load_contract

    found = [
        r.rule
        for r in load_contract(asset).rules
        if r.subject == column and r.severity == severity and (query_has is None or query_has in (r.query or ""))
    ]
    assert len(found) == 1, (asset, column, severity, query_has, found)
    return found[0]
