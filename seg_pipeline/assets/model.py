"""scaled_matrix and clustering_model: the model input and the fitted k-means, per quarter."""


import hashlib
import io
import json

import dagster as dg
import joblib
import numpy as np
import pandas as pd
import sklearn

from ..ml.clustering import cluster
from ..ml.scaling import build_matrix
from ..partitions import quarterly_partitions
from ..resources import PipelineHome, Warehouse
from ..storage import atomic_write_bytes, create_stage_from_df, publish_partition
from .common import GROUP, OWNERS, contract_spec, gate, md_table

MATRIX = "scaled_matrix"
MATRIX_COLUMNS = "scaled_matrix_columns"
MODEL = "clustering_model"


class MatrixConfig(dg.Config):
    scaler: str = "standard"
    """'standard' (StandardScaler) or 'robust' (RobustScaler)."""
    corr_threshold: float = 0.9
    """Drop the later feature of any pair whose log values correlate above this (absolute Pearson r)."""


class ModelConfig(dg.Config):
    k_min: int = 3
    k_max: int = 8
    business_k_min: int = 4
    business_k_max: int = 6
    seed: int = 42
    n_init: int = 10
    silhouette_sample: int = 4_000
    """Silhouette is O(n^2): it is computed on at most this many customers."""
    selection_sample: int = 50_000
    """k is chosen on at most this many customers; the final model is fitted on all of them."""
    silhouette_floor: float = 0.2
    """Below this silhouette the contract warns (does not block): clusters overlap heavily."""
    min_cluster_share: float = 0.01
    """A cluster with fewer than this share of customers makes the contract warn."""


def read_features(con, quarter: str) -> pd.DataFrame:
    return con.execute("SELECT * FROM customer_features WHERE quarter = ? ORDER BY customer_id", [quarter]).df()


def read_matrix(con, quarter: str) -> tuple[pd.DataFrame, list[str]]:
    cols = con.execute(
        f"SELECT feature, kept FROM {MATRIX_COLUMNS} WHERE quarter = ? ORDER BY position", [quarter]
    ).fetchall()
    if not cols:
        raise dg.Failure(description=f"scaled_matrix has no partition {quarter}: materialise it first")
    matrix = con.execute(f"SELECT * FROM {MATRIX} WHERE quarter = ? ORDER BY customer_id", [quarter]).df()
    return matrix, [f for f, kept in cols if kept]


@dg.asset(
    name=MATRIX,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "scikitlearn"},
    deps=["customer_features"],
    partitions_def=quarterly_partitions,
    check_specs=[contract_spec(MATRIX)],
    description=(
        "The clustering input, keyed by customer: log1p of the skewed features, then StandardScaler "
        "(RobustScaler selectable). Of any pair of features whose log values correlate above the threshold "
        "(default 0.9) the later one is left out of the model. The table scaled_matrix_columns records, per "
        "feature, whether it is log-transformed and kept, why it was dropped, and the fitted scaler's "
        "center and scale; the scaler itself is saved under models/<quarter>/."
    ),
)
def scaled_matrix(context: dg.AssetExecutionContext, config: MatrixConfig, pipeline: PipelineHome, warehouse: Warehouse):
    q = context.partition_key
    with warehouse.get_connection() as con:
        features = read_features(con, q)
        if features.empty:
            raise dg.Failure(description=f"customer_features has no rows for {q}: materialise it first")
        m = build_matrix(features, scaler=config.scaler, corr_threshold=config.corr_threshold)
        df = m.frame()
        df.insert(0, "quarter", q)
        center = getattr(m.scaler, "mean_", getattr(m.scaler, "center_", None))
        cols = pd.DataFrame(
            {
                "quarter": q,
                "feature": m.features,
                "position": range(len(m.features)),
                "log_transformed": [f in m.log_features for f in m.features],
                "kept": [f in m.kept for f in m.features],
                "dropped_reason": [m.dropped.get(f) for f in m.features],
                "center": center,
                "scale": m.scaler.scale_,
            }
        )
        stage = create_stage_from_df(con, MATRIX, df)
        create_stage_from_df(con, MATRIX_COLUMNS, cols)
        yield from gate(
            context, con, MATRIX, stage,
            {
                "customer_features_rows": len(features),
                # StandardScaler centres every column; RobustScaler centres medians, so means may be anywhere
                "mean_tolerance": 1e-6 if config.scaler == "standard" else 1e12,
            },
        )
        buf = io.BytesIO()
        joblib.dump({"scaler": m.scaler, "features": m.features, "log_features": m.log_features}, buf)
        scaler_path = atomic_write_bytes(pipeline.models_dir(q) / "scaler.joblib", buf.getvalue())
        publish_partition(con, [MATRIX, MATRIX_COLUMNS], "quarter", q)

    corr = m.correlation.round(3).reset_index(names="feature")
    skipped = {f: why for f, why in m.dropped.items() if f not in m.features}
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(df),
            "features_kept": ", ".join(m.kept),
            "features_dropped": dg.MetadataValue.json({f: why for f, why in m.dropped.items() if f in m.features}),
            "features_not_computable": dg.MetadataValue.json(skipped) if skipped else "none",
            "scaler": config.scaler,
            "scaler_file": dg.MetadataValue.path(str(scaler_path)),
            "columns": dg.MetadataValue.md(md_table(cols.drop(columns="quarter"), floatfmt=".3f")),
            "log_feature_correlation": dg.MetadataValue.md(md_table(corr, floatfmt=".3f")),
        }
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dg.asset(
    name=MODEL,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"scikitlearn", "duckdb"},
    deps=["scaled_matrix"],
    partitions_def=quarterly_partitions,
    check_specs=[contract_spec(MODEL)],
    description=(
        "scikit-learn KMeans on the kept features of scaled_matrix. Every k in the configured range "
        "(default 3..8) is fitted; inertia (elbow) and silhouette (sampled on large data) are recorded per k, "
        "and k is the best silhouette inside the business range (default 4..6). Fixed seed: the same input "
        "gives the same model. The model, scaler and feature list are saved as a versioned artifact "
        "models/<quarter>/clustering_model-<version>.joblib; the table holds one row per k tried."
    ),
)
def clustering_model(context: dg.AssetExecutionContext, config: ModelConfig, pipeline: PipelineHome, warehouse: Warehouse):
    q = context.partition_key
    with warehouse.get_connection() as con:
        matrix, kept = read_matrix(con, q)
        X = matrix[kept].to_numpy(dtype="float64")
        try:
            result = cluster(
                X,
                k_range=(config.k_min, config.k_max),
                business_range=(config.business_k_min, config.business_k_max),
                seed=config.seed,
                n_init=config.n_init,
                silhouette_sample=config.silhouette_sample,
                selection_sample=config.selection_sample,
            )
        except ValueError as exc:
            raise dg.Failure(description=f"clustering_model {q}: {exc}") from exc
        scaler_art = joblib.load(pipeline.models_dir(q) / "scaler.joblib")
        version = _sha256(np.ascontiguousarray(X).tobytes() + json.dumps(config.model_dump(), sort_keys=True).encode())[:12]
        artifact = {
            "quarter": q,
            "version": version,
            "model": result.model,
            "k": result.k,
            "features": kept,
            "scaler": scaler_art["scaler"],
            "scaler_features": scaler_art["features"],
            "log_features": scaler_art["log_features"],
            "trials": [t.__dict__ for t in result.trials],
            "reason": result.reason,
            "config": config.model_dump(),
            "sklearn_version": sklearn.__version__,
        }
        buf = io.BytesIO()
        joblib.dump(artifact, buf)
        path = pipeline.models_dir(q) / f"clustering_model-{version}.joblib"
        sizes = np.bincount(result.labels, minlength=result.k)
        trials = pd.DataFrame([t.__dict__ for t in result.trials])
        table = trials.assign(
            quarter=q,
            chosen=trials["k"] == result.k,
            min_cluster_share=[float(sizes.min() / sizes.sum()) if k == result.k else None for k in trials["k"]],
            n_customers=len(X),
            artifact_path=str(path.relative_to(pipeline.path)),  # relative: the home can move
            artifact_sha256=_sha256(buf.getvalue()),
            reason=result.reason,
        )
        stage = create_stage_from_df(con, MODEL, table)
        yield from gate(
            context, con, MODEL, stage,
            {
                "business_k_min": config.business_k_min,
                "business_k_max": config.business_k_max,
                "silhouette_floor": config.silhouette_floor,
                "min_cluster_share": config.min_cluster_share,
            },
        )
        atomic_write_bytes(path, buf.getvalue())
        publish_partition(con, MODEL, "quarter", q, stage)

    centroids = pd.DataFrame(result.model.cluster_centers_, columns=kept).round(3)
    centroids.insert(0, "cluster", range(result.k))
    centroids.insert(1, "customers", sizes)
    yield dg.MaterializeResult(
        metadata={
            "k": result.k,
            "why_this_k": result.reason,
            "silhouette": float(trials.loc[trials.k == result.k, "silhouette"].iloc[0]),
            "inertia": float(result.model.inertia_),
            "k_trials": dg.MetadataValue.md(md_table(trials, floatfmt=".4f")),
            "centroids_scaled": dg.MetadataValue.md(md_table(centroids, floatfmt=".3f")),
            "artifact": dg.MetadataValue.path(str(path)),
            "model_version": version,
            "dagster/row_count": len(table),
        }
    )
