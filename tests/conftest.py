"""Shared fixtures: small generated data, a pipeline home under tmp_path, one full run shared by the
content tests, and helpers to read tables back."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import pandas as pd
import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

from seg_pipeline.cli import run_pipeline  # noqa: E402
from seg_pipeline.sample_data import write_transactions  # noqa: E402

SMALL_CUSTOMERS = 400  # ~32k lines over two years; the thinnest quarter (2009-Q4) has ~50 customers


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "slow: runs the pipeline end to end in subprocesses or more times than the shared runs "
        "(deselect with -m 'not slow' for a quick loop)",
    )


@pytest.fixture(scope="session")
def dagster_instance():
    import dagster as dg

    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture(scope="session")
def small_csv(tmp_path_factory) -> Path:
    """Generated Online Retail II-shaped data, CSV, ~400 customers."""
    path = tmp_path_factory.mktemp("data") / "small.csv"
    write_transactions(path, n_customers=SMALL_CUSTOMERS, seed=7)
    return path


@pytest.fixture(scope="session")
def full_run(tmp_path_factory, small_csv, dagster_instance):
    """One complete run over every quarter of the small data; tests read its warehouse (read-only)."""
    home = tmp_path_factory.mktemp("home")
    quarters = run_pipeline(home, source=str(small_csv), quarters="all", quiet=True, instance=dagster_instance)
    return home, quarters


def read_table(home: Path, sql: str, params=None) -> pd.DataFrame:
    con = duckdb.connect(str(Path(home) / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or []).df()
    finally:
        con.close()


def run(home: Path, source, quarters: str = "all", mapping=None, instance=None):
    """Run the pipeline in process (quietly) on `source` with home `home`."""
    return run_pipeline(
        Path(home), source=str(source), mapping=mapping, quarters=quarters, quiet=True, instance=instance
    )
