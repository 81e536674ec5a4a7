"""Where the pipeline keeps its state, and the knobs that come from the environment.

Everything the pipeline writes lives under one *home* folder:

    <home>/warehouse.duckdb        every table (one per asset, plus rejected_sales and helpers)
    <home>/models/<quarter>/       versioned model artifacts (joblib) per quarterly partition
    <home>/reports/<quarter>/      plots and reports
    <home>/data/                   the generated default source (when no source is configured)
    <home>/dagster/                the Dagster instance (run history shown by `dagster dev`)

Environment variables:
    SEG_PIPELINE_HOME            the home folder (default: `.seg_home` inside the checkout, which git ignores;
                                 for an installed wheel, `.seg_home` in the current directory)
    SEG_PIPELINE_SOURCE          a transactions file or a folder of files (default: the generated sample)
    SEG_PIPELINE_COLUMN_MAPPING  a YAML file mapping another export's columns (see README, "Configuration")
    SEG_PIPELINE_DUCKDB_MEMORY   DuckDB's memory limit before it spills to disk (default 2GB)
    SEG_PIPELINE_GC              `python`: keep the interpreter's garbage collection settings (seg_pipeline/runtime.py)
"""

from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path


def package_folder(package: str) -> Path:
    """The folder of a package's files, found with importlib.resources: in a checkout (editable install) the
    top-level sql/ and data_contracts/ folders, in an installed wheel seg_pipeline/sql_files/ and
    seg_pipeline/contracts_files/ (pyproject.toml maps them). Always a real folder: DuckDB, Jinja and the
    Dagster code references read the files by path, so the package must be installed as plain files."""
    folder = files(package)
    if not isinstance(folder, Path):
        raise RuntimeError(f"{package} is not installed as plain files ({folder!r}): install the wheel unzipped")
    return folder


PACKAGE_DIR = package_folder("seg_pipeline")
SQL_DIR = package_folder("seg_pipeline.sql_files")
CONTRACTS_DIR = package_folder("seg_pipeline.contracts_files")
# the checkout holding the package (editable install), or site-packages when the wheel is installed
PROJECT_ROOT = PACKAGE_DIR.parent
IN_CHECKOUT = (PROJECT_ROOT / "pyproject.toml").is_file()

# in a checkout the README's commands use <checkout>/.seg_home; an installed wheel has no checkout, so the
# default is .seg_home in the current directory (relative: home_dir() resolves it when called)
DEFAULT_HOME = PROJECT_ROOT / ".seg_home" if IN_CHECKOUT else Path(".seg_home")
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
