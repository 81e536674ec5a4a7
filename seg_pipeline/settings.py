"""Where the pipeline keeps its state, and the knobs that come from the environment.

Everything the pipeline writes lives under one *home* folder:

    <home>/warehouse.duckdb        every table (one per asset, plus rejected_sales and helpers)
    <home>/models/<quarter>/       versioned model artifacts (joblib) per quarterly partition
    <home>/reports/<quarter>/      plots and reports
    <home>/data/                   the generated default source (when no source is configured)
    <home>/dagster/                the Dagster instance (run history shown by `dagster dev`)

Environment variables:
    SEG_PIPELINE_HOME            the home folder (default: `.seg_home` inside the checkout; git ignores it)
    SEG_PIPELINE_SOURCE          a transactions file or a folder of files (default: the generated sample)
    SEG_PIPELINE_COLUMN_MAPPING  a YAML file mapping another export's columns (see README, "Configuration")
    SEG_PIPELINE_FIRST_QUARTER   first quarter of the partition set, as its start date (default 2009-10-01)
    SEG_PIPELINE_DUCKDB_MEMORY   DuckDB's memory limit before it spills to disk (default 2GB)
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SQL_DIR = PROJECT_ROOT / "sql"
CONTRACTS_DIR = PROJECT_ROOT / "data_contracts"
PACKAGE_DIR = Path(__file__).resolve().parent

DEFAULT_HOME = PROJECT_ROOT / ".seg_home"
DEFAULT_FIRST_QUARTER = "2009-10-01"
SAMPLE_FILE_NAME = "online_retail_II_sample.csv"


def home_dir() -> Path:
    """The pipeline home, from SEG_PIPELINE_HOME or the default inside the checkout."""
    return Path(os.environ.get("SEG_PIPELINE_HOME") or DEFAULT_HOME).expanduser().resolve()


def default_sample_path(home: Path | None = None) -> Path:
    return (home or home_dir()) / "data" / SAMPLE_FILE_NAME


def configured_source() -> str:
    """The source from SEG_PIPELINE_SOURCE, or '' for the generated default."""
    return os.environ.get("SEG_PIPELINE_SOURCE", "")


def configured_mapping() -> str:
    return os.environ.get("SEG_PIPELINE_COLUMN_MAPPING", "")


def duckdb_memory_limit() -> str:
    return os.environ.get("SEG_PIPELINE_DUCKDB_MEMORY", "2GB")


def first_quarter() -> str:
    return os.environ.get("SEG_PIPELINE_FIRST_QUARTER", DEFAULT_FIRST_QUARTER)
