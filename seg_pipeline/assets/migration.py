"""segment_migration_history: how customers moved between segments since the previous quarter."""

import dagster as dg
import pandas as pd

from ..insights.analysis import LAPSED, NEW, RETURNING, transition_counts
from ..partitions import parse_quarter, quarterly_partitions
from ..resources import Warehouse
from ..storage import create_stage_from_df, publish_partition
from ..tables import chosen_model_row, has_sales_before, quarter_assignments
from .common import ANALYTICS_OWNERS, GROUP, contract_spec, gate, md_table, table_metadata

TABLE = "segment_migration_history"


def migrate(
    previous: pd.DataFrame,
    current: pd.DataFrame,
    quarter: str,
    previous_quarter: str,
    quarter_start,
    from_version: str | None = None,
    to_version: str | None = None,
) -> pd.DataFrame:
    """One row per customer seen in either quarter.

    from_segment: the customer's segment last quarter; 'new' when their first purchase ever falls in this
    quarter; 'returning' when they bought before but were not in last quarter's look-back window.
    to_segment: the segment this quarter, or 'lapsed' for a customer who left the look-back window.
    `current` needs customer_id, segment and first_purchase_ever; `previous` customer_id and segment.
    from/to_model_version: the model versions that named each side (None for a previous quarter before the
    data)."""
    merged = previous[["customer_id", "segment"]].merge(
        current[["customer_id", "segment", "first_purchase_ever"]],
        on="customer_id",
        how="outer",
        suffixes=("_from", "_to"),
    )
    first = pd.to_datetime(merged["first_purchase_ever"])
    arrived = merged["segment_from"].isna()
    new = arrived & (first >= pd.Timestamp(quarter_start))
    from_segment = merged["segment_from"].astype(object)
    from_segment[arrived & new] = NEW
    from_segment[arrived & ~new] = RETURNING
    out = pd.DataFrame(
        {
            "quarter": quarter,
            "previous_quarter": previous_quarter,
            "customer_id": merged["customer_id"],
            "from_segment": from_segment,
            "to_segment": merged["segment_to"].fillna(LAPSED),
            "from_model_version": pd.Series(from_version, index=merged.index, dtype="string"),
            "to_model_version": pd.Series(to_version, index=merged.index, dtype="string"),
        }
    )
    return out.sort_values("customer_id", kind="mergesort").reset_index(drop=True)


@dg.asset(
    name=TABLE,
    group_name=GROUP,
    owners=ANALYTICS_OWNERS,
    kinds={"duckdb", "pandas"},
    deps=[
        "segment_assignments",
        "customer_features",
        "clustering_model",
    ],
    partitions_def=quarterly_partitions,
    check_specs=[contract_spec(TABLE, quarterly_partitions)],
    metadata={"dagster/table_name": f"warehouse.main.{TABLE}"},
    description=(
        "For the quarter against the previous one: one row per customer with from_segment and to_segment. "
        "from_segment is 'new' when the customer's first purchase ever falls in this quarter, 'returning' when "
        "they bought before but not in the previous quarter's look-back window; to_segment is 'lapsed' for "
        "customers no longer in the window. Each row carries the model version of both quarters, and the "
        "metadata says whether this quarter's model was reused or refitted, so a refit's moves can be told "
        "apart from behaviour. Re-running a quarter rewrites that quarter's rows only. Reads segment_assignments "
        "of this quarter and the previous one (the previous partition is not drawn as an edge: Dagster cannot "
        "map a dynamic partition to the one before it)."
    ),
)
def segment_migration_history(context: dg.AssetExecutionContext, warehouse: Warehouse):
    q = parse_quarter(context.partition_key)
    prev = q.previous()
    with warehouse.get_connection() as con:
        current = con.execute(
            "SELECT a.customer_id, a.segment, a.model_version, f.first_purchase_ever FROM segment_assignments a "
            "JOIN customer_features f USING (quarter, customer_id) WHERE quarter = ?",
            [q.key],
        ).df()
        if current.empty:
            raise dg.Failure(description=f"segment_assignments has no partition {q.key}: materialise it first")
        previous = quarter_assignments(con, prev.key)
        if previous.empty:
            if has_sales_before(con, prev.end):
                raise dg.Failure(
                    description=(
                        f"segment_migration_history {q.key}: the previous quarter {prev.key} has sales but no "
                        f"segment_assignments. Materialise {prev.key} first (a backfill over every quarter "
                        "does this in order)."
                    )
                )
            context.log.info(f"{prev.key} precedes the data: every customer of {q.key} counts as new")
        model_row = chosen_model_row(con, q.key) or {}
        from_version = previous["model_version"].iloc[0] if not previous.empty else None
        to_version = current["model_version"].iloc[0]
        # a quarter waiting for history has labels but no model (model_version NULL)
        from_version = None if from_version is None or pd.isna(from_version) else str(from_version)
        to_version = None if to_version is None or pd.isna(to_version) else str(to_version)
        history = migrate(previous, current, q.key, prev.key, q.start, from_version, to_version)
        stage = create_stage_from_df(con, TABLE, history)
        yield from gate(
            context,
            con,
            TABLE,
            stage,
            {
                "from_segments": sorted(set(previous["segment"])) + [NEW, RETURNING],
                "to_segments": sorted(set(current["segment"])) + [LAPSED],
                "previous_customers": len(previous),
                "current_customers": len(current),
                "quarter_start": q.start.isoformat(),
                "features_table": "customer_features",
                "quarter": q.key,
                "to_model_version": to_version or "",
            },
        )
        publish_partition(con, TABLE, "quarter", q.key, stage)
        table_meta = table_metadata(con, TABLE, "WHERE quarter = ?", [q.key])

    counts = transition_counts(history)
    shares = counts.div(counts.sum(axis=1), axis=0)
    retained = history[~history.from_segment.isin([NEW, RETURNING]) & (history.to_segment != LAPSED)]
    changed = int((retained.from_segment != retained.to_segment).sum())
    refit = from_version is not None and from_version != to_version
    yield dg.MaterializeResult(
        metadata={
            **table_meta,
            "previous_quarter": prev.key,
            "model_decision": str(model_row.get("decision", "")),
            "model_changed": refit,
            "from_model_version": from_version or "none",
            "to_model_version": to_version or "none",
            "new_customers": int((history.from_segment == NEW).sum()),
            "returning_customers": int((history.from_segment == RETURNING).sum()),
            "lapsed_customers": int((history.to_segment == LAPSED).sum()),
            "retained_customers": len(retained),
            "stayed_in_segment": len(retained) - changed,
            "changed_segment": changed,
            "retained_changed_share": round(changed / len(retained), 4) if len(retained) else 0.0,
            # segment names are the rows and columns: escaped as Markdown by md_table
            "transition_counts": dg.MetadataValue.md(
                md_table(counts.reset_index(), max_rows=len(counts), floatfmt=",.0f")
            ),
            "transition_row_shares": dg.MetadataValue.md(
                md_table(shares.round(3).reset_index(), max_rows=len(shares), floatfmt=".3f")
            ),
        }
    )
