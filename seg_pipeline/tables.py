"""Readers of the warehouse tables that several stages share, and the kept segment model's files.

Asset modules read their inputs through these functions (never through another asset module), so each
asset's reads are visible in one place and match its declared dependencies.

Model files (joblib pickles: loading one runs whatever code it names) are read only through `load_verified`:
the file's bytes must match the SHA-256 the warehouse recorded when the pipeline wrote it, before anything
is unpickled.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import dagster as dg
import joblib
import pandas as pd

from .ml.scaling import ScaledMatrix
from .ml.segment_model import SegmentModel
from .storage import is_superseded, table_exists

MODEL_FILE = "segment_model.joblib"
SCALER_FILE = "scaler.joblib"


def read_features(con, quarter: str) -> pd.DataFrame:
    """customer_features of one quarter, customer_id ascending."""
    return con.execute("SELECT * FROM customer_features WHERE quarter = ? ORDER BY customer_id", [quarter]).df()


def read_matrix(con, quarter: str, scaler_path: Path) -> ScaledMatrix:
    """scaled_matrix of one quarter (customer_id ascending) with its column table and fitted scaler."""
    cols = con.execute(
        "SELECT feature, kept, log_transformed, dropped_reason FROM scaled_matrix_columns WHERE quarter = ? "
        "ORDER BY position",
        [quarter],
    ).df()
    if cols.empty:
        raise dg.Failure(description=f"scaled_matrix has no partition {quarter}: materialise it first")
    matrix = con.execute("SELECT * FROM scaled_matrix WHERE quarter = ? ORDER BY customer_id", [quarter]).df()
    features = cols["feature"].tolist()
    try:
        scaler = load_verified(
            scaler_path,
            _recorded_scaler_sha256(con, quarter),
            "scaled_matrix_columns",
            f"the scaler file {scaler_path}",
        )["scaler"]
    except (ModelFileError, TypeError, KeyError) as exc:
        raise dg.Failure(
            description=f"scaled_matrix {quarter}: {exc}. Materialise scaled_matrix {quarter} again: it rewrites "
            "the scaler file and records its SHA-256."
        ) from None
    return ScaledMatrix(
        customer_ids=matrix["customer_id"].to_numpy(),
        features=features,
        kept=cols.loc[cols["kept"], "feature"].tolist(),
        dropped={r.feature: r.dropped_reason for r in cols.itertuples() if r.dropped_reason},
        values=matrix[features].to_numpy(dtype="float64"),
        scaler=scaler,
        log_features=cols.loc[cols["log_transformed"], "feature"].tolist(),
    )


def chosen_model_row(con, quarter: str) -> dict | None:
    """The clustering_model row of the model in force for `quarter`, or None (also when that quarter was
    built from superseded sales: storage.SUPERSEDED)."""
    if not table_exists(con, "clustering_model") or is_superseded(con, "clustering_model", quarter):
        return None
    df = con.execute("SELECT * FROM clustering_model WHERE quarter = ? AND chosen", [quarter]).df()
    return None if df.empty else df.iloc[0].to_dict()


class ModelFileError(RuntimeError):
    """A model file that is not loaded: missing, not recorded, altered or unreadable; the message names it."""


def recorded_sha256(value) -> str:
    """A recorded SHA-256 as text; '' when there is none (NULL, NaN, empty)."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    return str(value).strip().lower()


def file_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def load_verified(path: Path, expected_sha256, recorded_in: str, label: str):
    """The object a model file holds, unpickled only after the file's bytes match `expected_sha256`, the
    SHA-256 that `recorded_in` (a warehouse table) recorded when the pipeline wrote the file. The pipeline's
    one way to load a pickle: a file with no recorded hash, or another hash, is refused without being
    unpickled (unpickling runs code), with a ModelFileError naming the file and both hash prefixes. The
    verified bytes themselves are unpickled (the file is not read a second time). `label` names the file in
    the messages, e.g. "the model file <path> of quarter 2011-07-01"."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{label} is missing")
    data = path.read_bytes()
    actual, expected = file_sha256(data), recorded_sha256(expected_sha256)
    if not expected:
        raise ModelFileError(
            f"{label} has no SHA-256 recorded in {recorded_in} (the file's is {actual[:12]}...): the pipeline "
            "did not record writing it, so it was not loaded"
        )
    if actual != expected:
        raise ModelFileError(
            f"{label} does not match the SHA-256 recorded in {recorded_in} (recorded {expected[:12]}..., file "
            f"{actual[:12]}...): it was altered or is corrupt, so it was not loaded"
        )
    try:
        return joblib.load(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - any unpickling error is an unreadable file
        raise ModelFileError(f"{label} cannot be read: {exc}") from None


def _recorded_scaler_sha256(con, quarter: str) -> str:
    """The SHA-256 scaled_matrix recorded for the quarter's scaler file ('' when none: an older warehouse)."""
    has = con.execute(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'scaled_matrix_columns' "
        "AND column_name = 'scaler_sha256'"
    ).fetchall()[0][0]
    if not has:
        return ""
    row = con.execute(
        "SELECT min(scaler_sha256), count(DISTINCT scaler_sha256) FROM scaled_matrix_columns WHERE quarter = ?",
        [quarter],
    ).fetchall()[0]
    return recorded_sha256(row[0]) if row[1] == 1 else ""


def load_model(home: Path, row: dict) -> tuple[SegmentModel, Path]:
    """The SegmentModel a clustering_model row points to, verified against the row's SHA-256 first."""
    path = Path(home) / row["artifact_path"]
    label = f"the model file {path} of quarter {row['quarter']}"
    model = load_verified(path, row.get("artifact_sha256"), "clustering_model", label)
    if not isinstance(model, SegmentModel):
        raise ModelFileError(f"{label} holds a {type(model).__name__}, not a SegmentModel")
    return model, path


def quarter_assignments(con, quarter: str) -> pd.DataFrame:
    """customer_id, segment, model_version of one quarter's segment_assignments (empty if none, or if that
    quarter was built from superseded sales: storage.SUPERSEDED)."""
    if not table_exists(con, "segment_assignments") or is_superseded(con, "segment_assignments", quarter):
        return pd.DataFrame(
            {
                "customer_id": pd.Series(dtype=object),
                "segment": pd.Series(dtype=object),
                "model_version": pd.Series(dtype=object),
            }
        )
    return con.execute(
        "SELECT customer_id, segment, model_version FROM segment_assignments WHERE quarter = ? ORDER BY customer_id",
        [quarter],
    ).df()


def has_sales_before(con, end) -> bool:
    if not table_exists(con, "cleaned_sales"):
        return False
    return bool(con.execute("SELECT count(*) FROM cleaned_sales WHERE invoice_date < ?", [end]).fetchall()[0][0])


__all__ = [
    "read_features",
    "read_matrix",
    "chosen_model_row",
    "load_model",
    "load_verified",
    "recorded_sha256",
    "file_sha256",
    "ModelFileError",
    "quarter_assignments",
    "has_sales_before",
    "MODEL_FILE",
    "SCALER_FILE",
]
