"""Model files are code (a joblib pickle runs what it names when loaded): the pipeline loads one only after its
bytes match the SHA-256 the warehouse recorded when the pipeline wrote it, on every path (the kept model of
the previous quarter, the quarter's own model file, the scaler, segment_assignments' model).

Each planted file would create a marker file if it were ever unpickled; every test asserts the marker is not
there afterwards, and first proves that loading the plant does create it (so a test that passes is not one
that cannot fail)."""

from __future__ import annotations

import pathlib
import shutil
import types
from pathlib import Path

import duckdb
import joblib
import pandas as pd
import pytest

from seg_pipeline.assets.model import _model_bytes
from seg_pipeline.partitions import sync_quarters
from seg_pipeline.tables import ModelFileError, file_sha256, load_verified
from tests.conftest import read_table
from tests.pipeline.helpers import failure_message, materialize


class Planted:
    """Unpickling this touches `marker`: what a hostile model file could do instead."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def plant(path: Path, marker: Path) -> str:
    """Write a hostile pickle to `path`; returns its SHA-256."""
    joblib.dump(Planted(marker), path)
    return file_sha256(path.read_bytes())


def test_the_plant_acts_when_loaded_blindly(tmp_path):
    marker = tmp_path / "marker"
    plant(tmp_path / "segment_model.joblib", marker)
    joblib.load(tmp_path / "segment_model.joblib")
    assert marker.exists()  # so the other tests' "marker does not exist" means "was not unpickled"


def test_a_file_without_a_recorded_hash_is_not_loaded(tmp_path):
    marker, path = tmp_path / "marker", tmp_path / "scaler.joblib"
    actual = plant(path, marker)
    for recorded in (None, "", float("nan"), pd.NA):
        with pytest.raises(ModelFileError) as info:
            load_verified(path, recorded, "scaled_matrix_columns", f"the scaler file {path}")
        assert str(info.value) == (
            f"the scaler file {path} has no SHA-256 recorded in scaled_matrix_columns (the file's is "
            f"{actual[:12]}...): the pipeline did not record writing it, so it was not loaded"
        )
    assert not marker.exists()


def test_a_file_whose_hash_differs_is_not_loaded_and_a_matching_one_is(tmp_path):
    marker, path = tmp_path / "marker", tmp_path / "segment_model.joblib"
    joblib.dump({"scaler": "the real one"}, path)
    recorded = file_sha256(path.read_bytes())
    assert load_verified(path, recorded, "clustering_model", "the model file") == {"scaler": "the real one"}
    actual = plant(path, marker)
    with pytest.raises(ModelFileError) as info:
        load_verified(path, recorded, "clustering_model", f"the model file {path} of quarter 2011-07-01")
    assert str(info.value) == (
        f"the model file {path} of quarter 2011-07-01 does not match the SHA-256 recorded in clustering_model "
        f"(recorded {recorded[:12]}..., file {actual[:12]}...): it was altered or is corrupt, so it was not loaded"
    )
    assert not marker.exists()


def test_the_quarters_own_file_is_replaced_unread_when_the_warehouse_does_not_vouch_for_it(tmp_path):
    """clustering_model keeps the bytes of its own earlier file only when the quarter's row records them; it
    never unpickles the file to find out (the path a planted file in the latest quarter's folder took)."""
    marker, path = tmp_path / "marker", tmp_path / "segment_model.joblib"
    model = types.SimpleNamespace(version="v1", fitted_quarter="2011-07-01")
    joblib.dump(model, tmp_path / "fresh.joblib")
    fresh = (tmp_path / "fresh.joblib").read_bytes()
    actual = plant(path, marker)
    data, notice = _model_bytes(model, path, None)
    assert data == fresh and not marker.exists()
    assert notice == (
        f"the model file {path} already there has no SHA-256 recorded in clustering_model (file {actual[:12]}...): "
        "the warehouse does not vouch for it (an interrupted run, or a file put there by hand), so it was not "
        "loaded; it is replaced by the model in force for the quarter"
    )
    row = {"artifact_sha256": "0" * 64, "model_version": "v1", "fitted_quarter": "2011-07-01"}
    data, notice = _model_bytes(model, path, row)
    assert data == fresh and not marker.exists() and "(recorded 000000000000..., file " in notice
    # the recorded file of the same model keeps its bytes (a rerun leaves the file as it was) ...
    path.write_bytes(b"recorded bytes")
    row["artifact_sha256"] = file_sha256(b"recorded bytes")
    assert _model_bytes(model, path, row) == (b"recorded bytes", "")
    # ... and the recorded file of another model of the quarter is simply replaced
    assert _model_bytes(types.SimpleNamespace(version="v2", fitted_quarter="2011-07-01"), path, row)[1] == ""


# ------------------------------------------------------------------------------------------ the pipeline


@pytest.fixture()
def home_copy(full_run, tmp_path):
    home, quarters = full_run
    copy = tmp_path / "home"
    shutil.copytree(home, copy, ignore=shutil.ignore_patterns("dagster"))
    return copy, quarters


def _chosen(home: Path, q: str) -> pd.DataFrame:
    return read_table(home, "SELECT * FROM clustering_model WHERE quarter = ? AND chosen", [q])


def _error(result) -> str:
    """The first line of the failed step's error, without the exception class."""
    return failure_message(result).splitlines()[0].removeprefix("dagster._core.definitions.events.Failure: ")


def test_planted_model_files_are_never_unpickled_on_any_path(home_copy, small_csv, dagster_instance, tmp_path):
    """The latest quarter's scaler, the previous quarter's model (the kept one) and the latest quarter's own
    model file are planted; clustering_model and segment_assignments of the latest quarter run. Nothing is
    unpickled: a foreign scaler or kept model stops the quarter with a message naming the file, both hash
    prefixes and what to do (nothing published changes); the quarter's own file is replaced, with a notice."""
    home, quarters = home_copy
    q, prev = quarters[-1], quarters[-2]
    marker = tmp_path / "marker"
    scaler, kept, own = (home / "models" / q / "scaler.joblib", home / "models" / prev / "segment_model.joblib",
                         home / "models" / q / "segment_model.joblib")  # fmt: skip
    originals = {p: p.read_bytes() for p in (scaler, kept, own)}
    planted = {p: plant(p, marker) for p in (scaler, kept, own)}
    before = read_table(home, "SELECT * FROM segment_assignments WHERE quarter = ? ORDER BY customer_id", [q])
    model_before = _chosen(home, q)

    # the session's instance is shared with other test files, whose runs register their own quarters
    sync_quarters(dagster_instance, list(quarters))

    def run_model(selection=("clustering_model",)):
        return materialize(home, small_csv, list(selection), dagster_instance, partition_key=q, raise_on_error=False)

    # 1. the scaler scaled_matrix recorded is not the file there
    result = run_model()
    assert not result.success and not marker.exists()
    recorded = read_table(home, "SELECT DISTINCT scaler_sha256 FROM scaled_matrix_columns WHERE quarter = ?", [q])
    assert recorded.scaler_sha256.tolist() == [file_sha256(originals[scaler])]
    assert _error(result) == (
        f"scaled_matrix {q}: the scaler file {scaler} does not match the SHA-256 recorded in scaled_matrix_columns "
        f"(recorded {file_sha256(originals[scaler])[:12]}..., file {planted[scaler][:12]}...): it was altered or "
        f"is corrupt, so it was not loaded. Materialise scaled_matrix {q} again: it rewrites the scaler file and "
        "records its SHA-256."
    )
    scaler.write_bytes(originals[scaler])

    # 2. the kept model of the previous quarter
    result = run_model()
    assert not result.success and not marker.exists()
    msg = _error(result)
    assert msg == (
        f"clustering_model {q}: the model file {kept} of quarter {prev} does not match the SHA-256 recorded in "
        f"clustering_model (recorded {_chosen(home, prev).artifact_sha256.iloc[0][:12]}..., file "
        f"{planted[kept][:12]}...): it was altered or is corrupt, so it was not loaded. Restore the file, or set "
        "refit_if_model_unreadable: true in the clustering_model run config to fit a new model (its names are "
        "then given afresh)."
    )
    pd.testing.assert_frame_equal(_chosen(home, q), model_before)  # nothing published changed
    kept.write_bytes(originals[kept])

    # 3. the quarter's own file: not loaded, replaced by the model in force, and said so
    result = run_model(("clustering_model", "segment_assignments", "segment_summary"))
    assert result.success and not marker.exists()
    mat = next(m for m in result.asset_materializations_for_node("clustering_model"))
    row = _chosen(home, q).iloc[0]
    assert mat.metadata["model_file_refused"].value == (
        f"the model file {own} already there does not match the SHA-256 recorded in clustering_model (recorded "
        f"{model_before.artifact_sha256.iloc[0][:12]}..., file {planted[own][:12]}...): the warehouse does not "
        "vouch for it (an interrupted run, or a file put there by hand), so it was not loaded; it is replaced by "
        "the model in force for the quarter"
    )
    assert file_sha256(own.read_bytes()) == row.artifact_sha256 != planted[own]
    assert row.model_version == model_before.model_version.iloc[0]
    after = read_table(home, "SELECT * FROM segment_assignments WHERE quarter = ? ORDER BY customer_id", [q])
    pd.testing.assert_frame_equal(before, after)  # the same model in force names the same customers

    # 4. a kept model with no recorded hash (the row's artifact_sha256 is NULL) is refused too
    plant(kept, marker)
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    con.execute("UPDATE clustering_model SET artifact_sha256 = NULL WHERE quarter = ?", [prev])
    con.close()
    result = run_model()
    assert not result.success and not marker.exists()
    assert _error(result).startswith(
        f"clustering_model {q}: the model file {kept} of quarter {prev} has no SHA-256 recorded in clustering_model "
        f"(the file's is {file_sha256(kept.read_bytes())[:12]}...): the pipeline did not record writing it, so it "
        "was not loaded. Restore the file, or set refit_if_model_unreadable: true"
    )
