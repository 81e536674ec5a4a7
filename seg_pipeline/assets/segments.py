"""segment_assignments: every customer of the quarter with the cluster and segment name of the model in force."""

import dagster as dg
import numpy as np
import pandas as pd

from ..insights.analysis import headline_of
from ..ml.naming import segment_info
from ..ml.segment_model import SegmentModel
from ..partitions import parse_quarter, quarterly_partitions
from ..resources import PipelineHome, Warehouse
from ..storage import create_stage_from_df, publish_partition
from ..tables import ModelFileError, chosen_model_row, load_model, quarter_assignments, read_features
from .common import ANALYTICS_OWNERS, contract_spec, gate, md_table, table_metadata, table_spec

TABLE = "segment_assignments"
SUMMARY = "segment_summary"


def assign_segments(features: pd.DataFrame, model: SegmentModel) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Score every customer with the segment model (the same call as model.predict) and summarise per segment.

    Returns (assignments, summary)."""
    labels = model.predict_cluster(features)
    quarter = features["quarter"].iloc[0]
    assignments = pd.DataFrame(
        {
            "quarter": quarter,
            "customer_id": features["customer_id"].to_numpy(),
            "cluster": labels,
            "segment": [model.names[int(c)] for c in labels],
            "model_version": model.version,
        }
    )
    merged = assignments.join(features[["recency_days", "frequency", "monetary", "avg_order_value"]])
    total_rev = merged["monetary"].sum()
    info = {n: segment_info(n, model.descriptions) for n in model.segment_names}
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
            action=lambda d: d.segment.map(lambda s: info[s].action),
            description=lambda d: d.segment.map(lambda s: info[s].description),
            rank=lambda d: d.segment.map(lambda s: info[s].rank).astype("int32"),
        )
        .sort_values(["share_revenue", "segment"], ascending=[False, True], kind="mergesort")
        .reset_index(drop=True)
    )
    summary.insert(0, "quarter", quarter)
    summary["model_version"] = model.version
    cols = [
        "quarter",
        "segment",
        "cluster",
        "customers",
        "share_customers",
        "revenue",
        "share_revenue",
        "mean_recency_days",
        "mean_frequency",
        "mean_monetary",
        "mean_avg_order_value",
        "rank",
        "action",
        "description",
        "model_version",
    ]
    return assignments, summary[cols]


def retained_changes(previous: pd.DataFrame, current: pd.DataFrame) -> tuple[int, int]:
    """(customers in both quarters, of whom in another segment now)."""
    both = previous[["customer_id", "segment"]].merge(
        current[["customer_id", "segment"]], on="customer_id", suffixes=("_prev", "_now")
    )
    return len(both), int((both["segment_prev"] != both["segment_now"]).sum())


@dg.multi_asset(
    name=TABLE,  # the step is named after its main table
    partitions_def=quarterly_partitions,
    specs=[
        dg.AssetSpec(
            TABLE,
            group_name="segmentation",
            owners=ANALYTICS_OWNERS,
            kinds={"duckdb", "scikitlearn"},
            partitions_def=quarterly_partitions,
            deps=[
                "clustering_model",
                "customer_features",
            ],
            metadata={"dagster/table_name": f"warehouse.main.{TABLE}"},
            description=(
                "Every customer of the quarter with its cluster, segment name and the model_version that named it, "
                "scored by the quarter's segment model (models/<quarter>/segment_model.joblib, the same .predict a "
                "CRM team can call). Names are given by business conditions (seg_pipeline/segments.yaml) when the "
                "model is fitted and kept with it, so a customer changes segment only when their own features move. "
                "Reads its own previous quarter for the share of retained customers who changed segment."
            ),
        ),
        table_spec(
            SUMMARY,
            "One row per segment of the quarter: customers, revenue and their shares, mean recency, frequency, "
            "monetary and order value, value rank, description, recommended action and model version.",
            deps=["clustering_model", "customer_features"],
            partitions_def=quarterly_partitions,
            owners=ANALYTICS_OWNERS,
        ),
    ],
    check_specs=[contract_spec(TABLE, quarterly_partitions)],
)
def segment_assignments(context: dg.AssetExecutionContext, pipeline: PipelineHome, warehouse: Warehouse):
    q = parse_quarter(context.partition_key)
    with warehouse.get_connection() as con:
        row = chosen_model_row(con, q.key)
        if not row:
            raise dg.Failure(description=f"clustering_model has no partition {q.key}: materialise it first")
        try:
            model, model_path = load_model(pipeline.path, row)
        except ModelFileError as exc:
            raise dg.Failure(
                description=f"segment_assignments {q.key}: {exc}; materialise clustering_model {q.key} again"
            ) from None
        features = read_features(con, q.key)
        assignments, summary = assign_segments(features, model)
        previous = quarter_assignments(con, q.previous().key)
        stage = create_stage_from_df(con, TABLE, assignments)
        create_stage_from_df(con, SUMMARY, summary)
        yield from gate(
            context,
            con,
            TABLE,
            stage,
            {
                "customer_features_rows": len(features),
                "segment_names": model.segment_names,
                "model_version": model.version,
                "summary_table": f"__stage_{SUMMARY}",
            },
        )
        publish_partition(con, [TABLE, SUMMARY], "quarter", q.key)
        table_meta = table_metadata(con, TABLE, "WHERE quarter = ?", [q.key])
        summary_meta = table_metadata(con, SUMMARY, "WHERE quarter = ?", [q.key])

    retained, changed = retained_changes(previous, assignments)
    shown = summary.drop(columns=["quarter", "description", "model_version"])
    headline = headline_of(summary)
    yield dg.MaterializeResult(
        asset_key=SUMMARY,
        metadata={**summary_meta, "segments": dg.MetadataValue.md(md_table(shown, max_rows=20)), "headline": headline},
    )
    yield dg.MaterializeResult(
        asset_key=TABLE,
        metadata={
            **table_meta,
            "segments": dg.MetadataValue.md(md_table(shown, max_rows=20)),
            "headline": headline,
            "k": model.k,
            "model_version": model.version,
            "model_decision": str(row["decision"]),
            "model_fitted_quarter": model.fitted_quarter,
            "model_file": dg.MetadataValue.path(str(model_path)),
            "retained_customers": retained,
            "retained_changed_segment": changed,
            "retained_changed_share": round(changed / retained, 4) if retained else 0.0,
        },
    )
