"""segment_assignments: every customer of the quarter gets a cluster and a named segment with an action."""


import dagster as dg
import joblib
import numpy as np
import pandas as pd

from ..ml.naming import cluster_profiles, load_catalogue, name_clusters, segment_names
from ..ml.scaling import log_transform, standardized_profile_space
from ..partitions import parse_quarter, quarterly_partitions
from ..resources import PipelineHome, Warehouse
from ..storage import create_stage_from_df, publish_partition, table_exists
from .common import ANALYTICS_OWNERS, GROUP, contract_spec, gate, md_table
from .model import read_features, read_matrix

TABLE = "segment_assignments"
SUMMARY = "segment_summary"


def segment_log_means(features: pd.DataFrame, segments: pd.Series, columns: list[str], log_features: list[str]) -> pd.DataFrame:
    """Mean log1p feature values per segment name (the stability anchor for next quarter's naming)."""
    logged = log_transform(features, columns, log_features)
    return logged.groupby(segments.to_numpy()).mean()


def assign_segments(
    features: pd.DataFrame, matrix: pd.DataFrame, artifact: dict, previous: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Label every customer with its cluster and name each cluster from its centroid profile.

    Returns (assignments, summary). Names come from the clusters' profiles (see ml/naming.py), so they do
    not depend on the arbitrary cluster index. `previous`: last quarter's customers with their segment
    and features, which keeps names stable from quarter to quarter."""
    model = artifact["model"]
    labels = model.predict(matrix[artifact["features"]].to_numpy(dtype="float64"))
    feats = features.set_index("customer_id").loc[matrix["customer_id"]].reset_index()
    cols, log_feats = artifact["scaler_features"], artifact["log_features"]
    z = standardized_profile_space(feats, cols, log_feats)
    logged = log_transform(feats, cols, log_feats)
    prev_means = None
    if previous is not None and not previous.empty:
        prev_means = segment_log_means(previous, previous["segment"], cols, log_feats)
    names = name_clusters(
        cluster_profiles(z, labels),
        raw_means=cluster_profiles(feats[cols].astype("float64"), labels),
        log_means=cluster_profiles(logged, labels),
        log_scale=logged.std(ddof=0),
        previous=prev_means,
    )
    catalogue = load_catalogue().by_name()
    assignments = pd.DataFrame(
        {
            "quarter": features["quarter"].iloc[0],
            "customer_id": matrix["customer_id"].to_numpy(),
            "cluster": labels.astype("int32"),
            "segment": [names[int(c)] for c in labels],
        }
    )
    merged = assignments.merge(feats, on="customer_id", suffixes=("", "_f"))
    total_rev = merged["monetary"].sum()
    summary = (
        merged.groupby(["segment", "cluster"], as_index=False)
        .agg(
            customers=("customer_id", "size"),
            revenue=("monetary", "sum"),
            mean_recency_days=("recency_days", "mean"),
            mean_frequency=("frequency", "mean"),
            mean_monetary=("monetary", "mean"),
            mean_avg_order_value=("avg_order_value", "mean"),
        )
        .assign(
            share_customers=lambda d: d.customers / d.customers.sum(),
            share_revenue=lambda d: d.revenue / total_rev if total_rev else np.nan,
            action=lambda d: d.segment.map(lambda s: catalogue[s].action),
            description=lambda d: d.segment.map(lambda s: catalogue[s].description),
        )
        .sort_values("share_revenue", ascending=False)
        .reset_index(drop=True)
    )
    summary.insert(0, "quarter", assignments["quarter"].iloc[0])
    cols = ["quarter", "segment", "cluster", "customers", "share_customers", "revenue", "share_revenue",
            "mean_recency_days", "mean_frequency", "mean_monetary", "mean_avg_order_value", "action", "description"]
    return assignments, summary[cols]


@dg.asset(
    name=TABLE,
    group_name=GROUP,
    owners=ANALYTICS_OWNERS,
    kinds={"duckdb", "scikitlearn"},
    deps=["clustering_model", "customer_features"],
    partitions_def=quarterly_partitions,
    check_specs=[contract_spec(TABLE)],
    description=(
        "Every customer of the quarter with its cluster and segment name (High-Value Loyal, Bulk/Wholesale, "
        "Growing Repeat, New Customers, At-Risk, Low-Value One-Time, Steady Mid-Value, Dormant). Names come "
        "from each cluster's centroid profile matched one-to-one to the segment catalogue "
        "(seg_pipeline/segments.yaml), never from the cluster index, so they stay stable across refits. "
        "The companion table segment_summary holds one row per segment: customers, revenue shares, mean "
        "recency/frequency/monetary and the recommended action."
    ),
)
def segment_assignments(context: dg.AssetExecutionContext, pipeline: PipelineHome, warehouse: Warehouse):
    q = context.partition_key
    with warehouse.get_connection() as con:
        row = next(iter(con.execute(
            "SELECT artifact_path FROM clustering_model WHERE quarter = ? AND chosen", [q]
        ).fetchall()), None)
        if not row:
            raise dg.Failure(description=f"clustering_model has no partition {q}: materialise it first")
        artifact = joblib.load(pipeline.path / row[0])
        features = read_features(con, q)
        matrix, _ = read_matrix(con, q)
        previous = con.execute(
            "SELECT f.*, a.segment FROM customer_features f JOIN segment_assignments a USING (quarter, customer_id) "
            "WHERE quarter = ?",
            [parse_quarter(q).previous().key],
        ).df() if table_exists(con, TABLE) else None
        assignments, summary = assign_segments(features, matrix, artifact, previous)
        stage = create_stage_from_df(con, TABLE, assignments)
        create_stage_from_df(con, SUMMARY, summary)
        yield from gate(
            context, con, TABLE, stage,
            {
                "customer_features_rows": len(features),
                "segment_names": segment_names(),
                "summary_table": f"__stage_{SUMMARY}",
            },
        )
        publish_partition(con, [TABLE, SUMMARY], "quarter", q)

    shown = summary.drop(columns=["quarter", "description"])
    top = summary.iloc[0]
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(assignments),
            "segments": dg.MetadataValue.md(md_table(shown, max_rows=20)),
            "headline": (
                f"{top.segment}: {top.share_customers:.1%} of customers bring {top.share_revenue:.1%} of revenue"
            ),
            "k": int(artifact["k"]),
            "model_version": artifact["version"],
        }
    )
