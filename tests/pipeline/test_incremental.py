"""Incremental refresh: a source file added to a folder is read and cleaned once, on its own, and the
result is exactly what cleaning everything from scratch gives."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from tests.conftest import read_table
from tests.pipeline.helpers import ingest_and_clean, read_source_text

SPLIT = pd.Timestamp("2011-07-01")  # the new file holds the last quarters
LINEAGE_FREE = ["_loaded_at"]  # the only column that differs between two homes loaded at different times


def _step_metadata(result, asset: str) -> dict:
    mats = [m for m in result.asset_materializations_for_node(asset) if m.asset_key.to_user_string() == asset]
    assert len(mats) == 1
    return {k: v.value for k, v in mats[0].metadata.items()}


@pytest.fixture(scope="module")
def split_files(tmp_path_factory, small_csv):
    """history.csv (sales before SPLIT) and new.csv (from SPLIT on, plus an exact copy of a line of
    history.csv that cleaning keeps, and a copy of one of its own lines that cleaning keeps)."""
    d = tmp_path_factory.mktemp("incremental")
    text = read_source_text(small_csv)
    ts = pd.to_datetime(text.InvoiceDate)
    history, new = text[ts < SPLIT], text[ts >= SPLIT]

    def kept(lines: pd.DataFrame) -> pd.DataFrame:  # lines cleaning keeps: a customer's product sale
        return lines[
            (lines["Customer ID"] != "")
            & ~lines.Invoice.str.startswith("C")
            & (lines.Quantity.astype(float) > 0)
            & (lines.Price.astype(float) > 0)
            & lines.StockCode.str.match(r"^\d{5}")
        ]

    kept_line = kept(history).iloc[[0]]
    own_kept = kept(new)
    own_line = own_kept.iloc[[len(own_kept) // 2]]
    new = pd.concat([new, kept_line, own_line], ignore_index=True)
    history.to_csv(d / "history.csv", index=False)
    new.to_csv(d / "new.csv", index=False)
    return d / "history.csv", d / "new.csv", kept_line, len(history), len(new)


@pytest.fixture(scope="module")
def incremental_home(tmp_path_factory, split_files, dagster_instance):
    """history.csv loaded and cleaned; then new.csv added to the folder and the assets run again."""
    history, new, *_ = split_files
    folder = tmp_path_factory.mktemp("source_folder")
    shutil.copy(history, folder / history.name)
    home = tmp_path_factory.mktemp("home_incremental")
    ingest_and_clean(home, folder, dagster_instance)
    shutil.copy(new, folder / new.name)
    second = ingest_and_clean(home, folder, dagster_instance)
    return home, folder, second


@pytest.fixture(scope="module")
def full_home(tmp_path_factory, split_files, dagster_instance):
    """Both files in the folder from the start: everything cleaned at once."""
    history, new, *_ = split_files
    folder = tmp_path_factory.mktemp("source_folder_full")
    shutil.copy(history, folder / history.name)
    shutil.copy(new, folder / new.name)
    home = tmp_path_factory.mktemp("home_full")
    first = ingest_and_clean(home, folder, dagster_instance)
    return home, first


def _table(home, name: str) -> pd.DataFrame:
    df = read_table(
        home,
        f"SELECT * EXCLUDE ({', '.join(LINEAGE_FREE)}) FROM {name}"
        if name == "rejected_sales"
        else f"SELECT * FROM {name}",
    )
    return df.sort_values(["_source_file", "_row_number"]).reset_index(drop=True)


def test_adding_a_file_reads_and_cleans_only_that_file(incremental_home, split_files):
    _, _, second = incremental_home
    *_, new_rows = split_files
    raw = _step_metadata(second, "raw_transactions")
    assert raw["files_loaded_this_run"] == 1 and raw["files_unchanged_skipped"] == 1
    assert raw["rows_loaded_this_run"] == new_rows
    cleaned = _step_metadata(second, "cleaned_sales")
    assert cleaned["cleaning_mode"] == "append"
    assert cleaned["raw_files_cleaned_this_run"] == 1
    check = [e for e in second.get_asset_check_evaluations() if e.asset_key.to_user_string() == "cleaned_sales"][0]
    assert check.passed
    assert check.metadata["rows_validated"].value < new_rows  # only the new file's kept lines were validated


def test_incremental_cleaning_equals_cleaning_everything_at_once(incremental_home, full_home):
    home_inc, _, _ = incremental_home
    home_full, first = full_home
    assert _step_metadata(first, "cleaned_sales")["cleaning_mode"] == "full"
    for table in ("cleaned_sales", "rejected_sales"):
        pd.testing.assert_frame_equal(_table(home_inc, table), _table(home_full, table), check_dtype=False)


def test_a_new_line_copying_a_published_one_is_a_duplicate_in_the_new_file(incremental_home, split_files):
    home, _, _ = incremental_home
    _, _, kept_line, history_rows, new_rows = split_files
    dups = read_table(
        home, "SELECT _source_file, _row_number FROM rejected_sales WHERE rejection_reason = 'duplicate_line'"
    )
    # the copy of the history line is the new file's second-to-last row; its own copied line the last
    assert {("new.csv", new_rows - 1), ("new.csv", new_rows)} <= set(zip(dups._source_file, dups._row_number))
    original = read_table(
        home,
        "SELECT count(*) AS n FROM cleaned_sales WHERE _source_file = 'history.csv' AND invoice = ? AND stock_code = ?",
        [kept_line.Invoice.iloc[0].strip().upper(), kept_line.StockCode.iloc[0].strip()],
    ).n.iloc[0]
    assert original >= 1  # the published first occurrence stays
    counts = read_table(
        home, "SELECT (SELECT count(*) FROM cleaned_sales) + (SELECT count(*) FROM rejected_sales) AS n"
    )
    assert counts.n.iloc[0] == history_rows + new_rows


def test_rerun_without_new_files_cleans_nothing(incremental_home, dagster_instance):
    home, folder, _ = incremental_home
    before = _table(home, "cleaned_sales")
    third = ingest_and_clean(home, folder, dagster_instance)
    assert _step_metadata(third, "raw_transactions")["files_loaded_this_run"] == 0
    assert _step_metadata(third, "cleaned_sales")["cleaning_mode"] == "unchanged"
    pd.testing.assert_frame_equal(_table(home, "cleaned_sales"), before)


def test_removing_a_file_recleans_what_remains(tmp_path, split_files, dagster_instance):
    """Without history.csv, the new file's copy of a history line is no longer a duplicate: it is kept."""
    history, new, _, _, new_rows = split_files
    folder = tmp_path / "src"
    folder.mkdir()
    shutil.copy(history, folder / history.name)
    shutil.copy(new, folder / new.name)
    home = tmp_path / "home"
    ingest_and_clean(home, folder, dagster_instance)
    (folder / history.name).unlink()
    result = ingest_and_clean(home, folder, dagster_instance)
    assert _step_metadata(result, "raw_transactions")["stale_files_removed"] == 1
    assert _step_metadata(result, "cleaned_sales")["cleaning_mode"] == "full"
    files = read_table(
        home, "SELECT DISTINCT _source_file FROM cleaned_sales UNION SELECT DISTINCT _source_file FROM rejected_sales"
    )
    assert set(files._source_file) == {"new.csv"}
    reason = read_table(home, "SELECT rejection_reason FROM rejected_sales WHERE _row_number = ?", [new_rows - 1])
    assert reason.empty  # kept now
    kept = read_table(home, "SELECT count(*) AS n FROM cleaned_sales WHERE _row_number = ?", [new_rows - 1]).n.iloc[0]
    assert kept == 1


def test_a_new_column_mapping_reloads_and_recleans(tmp_path, small_csv, dagster_instance):
    """Same file, new mapping: raw_transactions is reloaded under it, and cleaning must not keep lines built
    under the old one (the file hash alone is unchanged)."""
    text = read_source_text(small_csv).head(3000)
    text["Region"] = "Region-" + text["Country"]
    src = tmp_path / "with_region.csv"
    text.to_csv(src, index=False)
    home = tmp_path / "home"
    ingest_and_clean(home, src, dagster_instance)
    assert set(read_table(home, "SELECT DISTINCT country FROM cleaned_sales").country) <= set(text.Country)
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("columns:\n  country: Region\n", encoding="utf-8")
    result = ingest_and_clean(home, src, dagster_instance, mapping=mapping)
    assert _step_metadata(result, "raw_transactions")["files_loaded_this_run"] == 1
    assert _step_metadata(result, "cleaned_sales")["cleaning_mode"] == "full"
    countries = set(read_table(home, "SELECT DISTINCT country FROM cleaned_sales").country)
    assert countries and all(c.startswith("Region-") for c in countries)
