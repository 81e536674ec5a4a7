"""segment_assignments: every customer of the quarter with the model's cluster and a label true of their own figures."""

import dagster as dg
import numpy as np
import pandas as pd

from ..insights.analysis import headline_of
from ..ml.naming import (
    FIGURES,
    Catalogue,
    Labels,
    customer_figures,
    descriptive_names,
    label_customers,
    load_catalogue,
    segment_info,
)
from ..ml.segment_model import WAITING, SegmentModel
from ..partitions import parse_quarter, quarterly_partitions
from ..resources import PipelineHome, Warehouse
from ..storage import create_stage_from_df, publish_partition
from ..tables import ModelFileError, chosen_model_row, load_model, quarter_assignments, read_features
from .common import ANALYTICS_OWNERS, contract_spec, gate, md_table, table_metadata, table_spec

TABLE = "segment_assignments"
SUMMARY = "segment_summary"


ASSIGNMENT_FIGURES = FIGURES  # every figure a catalogue condition can read, on every row


def assign_segments(
    features: pd.DataFrame, model: SegmentModel | None, catalogue: Catalogue | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, Labels]:
    """Label every customer (the same call as model.label; without a model, a quarter waiting for history,
    by the catalogue's rules alone) and summarise per label.

    Each row carries the cluster (the model's; NULL without a model), the label (`segment`), `label_basis`
    (which rule gave it and the conditions that hold) and every figure a condition reads, so a label can be
    checked row by row from the table alone. Returns (assignments, summary, labels)."""
    catalogue = catalogue or load_catalogue()
    features = features.reset_index(drop=True)
    figs = customer_figures(features)
    if model is not None:
        clusters, labels = model.label(features)
        cluster_col = pd.array(clusters, dtype="Int32")
    else:
        labels = label_customers(figs, catalogue)
        cluster_col = pd.array([None] * len(features), dtype="Int32")
    quarter = features["quarter"].iloc[0]
    assignments = pd.DataFrame(
        {
            "quarter": quarter,
            "customer_id": features["customer_id"].to_numpy(),
            "cluster": cluster_col,
            "segment": labels.label,
            "label_basis": labels.basis,
            "model_version": pd.array([model.version if model is not None else None] * len(features), dtype="string"),
        }
    )
    for f in ASSIGNMENT_FIGURES:
        assignments[f] = figs[f].to_numpy(dtype="float64")
    merged = assignments[["customer_id", "segment"]].join(
        features[["recency_days", "frequency", "monetary", "avg_order_value"]]
    )
    total_rev = merged["monetary"].sum()
    descriptions = model.descriptions if model is not None else {}
    info = {n: segment_info(n, descriptions) for n in merged["segment"].unique()}
    named = {n: c for c, n in model.names.items()} if model is not None else {}
    summary = (
        merged.groupby(["segment"], as_index=False)
        .agg(
            customers=("customer_id", "size"),
            revenue=("monetary", "sum"),
            mean_recency_days=("recency_days", "mean"),
            mean_frequency=("frequency", "mean"),
            mean_monetary=("monetary", "mean"),
            mean_avg_order_value=("avg_order_value", "mean"),
        )
        .assign(
            # the model cluster whose name the label is (NULL: a name no cluster carries, or no model)
            cluster=lambda d: pd.array([named.get(s) for s in d.segment], dtype="Int32"),
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
    summary["model_version"] = pd.array([model.version if model is not None else None] * len(summary), dtype="string")
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
    return assignments, summary[cols], labels


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
                "Every customer of the quarter with the cluster of the quarter's segment model "
                "(models/<quarter>/segment_model.joblib), a label true of the customer's own figures (segment), "
                "label_basis (which rule gave it: the cluster's name within keep_tolerance, the nearest holding "
                "name, catalogue order or a descriptive name, and the conditions that hold), every figure a "
                "condition reads (plain and *_ratio against the quarter's median customer) and the model_version. "
                "model.label / .predict on the quarter's customer_features reproduce it row for row. While the "
                "quarter waits for history (no model yet) labels come from the catalogue's rules alone and cluster "
                "and model_version are NULL. Reads its own previous quarter for the share of retained customers "
                "who changed label."
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
        model, model_path = None, None
        if row["decision"] != WAITING:
            try:
                model, model_path = load_model(pipeline.path, row)
            except ModelFileError as exc:
                raise dg.Failure(
                    description=f"segment_assignments {q.key}: {exc}; materialise clustering_model {q.key} again"
                ) from None
        features = read_features(con, q.key)
        catalogue = load_catalogue()
        assignments, summary, labels = assign_segments(features, model, catalogue)
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
                "segment_names": sorted({s.name for s in catalogue} | set(descriptive_names())),
                "model_version": model.version if model is not None else "",
                "summary_table": f"__stage_{SUMMARY}",
            },
        )
        publish_partition(con, [TABLE, SUMMARY], "quarter", q.key)
        table_meta = table_metadata(con, TABLE, "WHERE quarter = ?", [q.key])
        summary_meta = table_metadata(con, SUMMARY, "WHERE quarter = ?", [q.key])

    retained, changed = retained_changes(previous, assignments)
    basis_counts = (
        assignments["label_basis"].str.split(":").str[0].value_counts().rename_axis("label basis").reset_index()
    )
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
            "k": model.k if model is not None else 0,
            "model_version": model.version if model is not None else "none",
            "model_decision": str(row["decision"]),
            "model_fitted_quarter": model.fitted_quarter if model is not None else "none",
            "model_file": dg.MetadataValue.path(str(model_path)) if model_path else "none (waiting for history)",
            "label_basis": dg.MetadataValue.md(md_table(basis_counts)),
            "names_not_computable": (
                "; ".join(
                    f"{n}: never given, {', '.join(figs)} not computable from this source"
                    for n, figs in labels.not_computable.items()
                )
                or "none"
            ),
            "retained_customers": retained,
            "retained_changed_segment": changed,
            "retained_changed_share": round(changed / retained, 4) if retained else 0.0,
        },
    )
