"""Readers of the warehouse tables that several stages share, and the kept segment model's files.

Asset modules read their inputs through these functions (never through another asset module), so each
asset's reads are visible in one place and match its declared dependencies.
"""

from __future__ import annotations

import hashlib
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
    scaler = joblib.load(scaler_path)["scaler"]
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
    """The saved model of a quarter is missing, altered or unreadable; the message names the file."""


def load_model(home: Path, row: dict) -> tuple[SegmentModel, Path]:
    """The SegmentModel a clustering_model row points to, verified against the row's SHA-256."""
    path = Path(home) / row["artifact_path"]
    if not path.is_file():
        raise ModelFileError(f"the model file {path} of quarter {row['quarter']} is missing")
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != row["artifact_sha256"]:
        raise ModelFileError(
            f"the model file {path} of quarter {row['quarter']} does not match the SHA-256 recorded in "
            "clustering_model: it was altered or is corrupt"
        )
    try:
        model = joblib.load(path)
    except Exception as exc:  # noqa: BLE001 - any unpickling error is an unreadable file
        raise ModelFileError(f"the model file {path} of quarter {row['quarter']} cannot be read: {exc}") from None
    if not isinstance(model, SegmentModel):
        raise ModelFileError(f"the model file {path} holds a {type(model).__name__}, not a SegmentModel")
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
    "ModelFileError",
    "quarter_assignments",
    "has_sales_before",
    "MODEL_FILE",
    "SCALER_FILE",
]
