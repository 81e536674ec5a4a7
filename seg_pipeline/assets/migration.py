"""segment_migration_history: how customers moved between segments since the previous quarter."""


import dagster as dg
import pandas as pd

from ..ml.naming import segment_names
from ..partitions import parse_quarter, quarterly_partitions
from ..resources import Warehouse
from ..storage import create_stage_from_df, publish_partition, table_exists
from .common import ANALYTICS_OWNERS, GROUP, contract_spec, gate, md_table

TABLE = "segment_migration_history"
NEW, LAPSED = "new", "lapsed"


def migrate(previous: pd.DataFrame, current: pd.DataFrame, quarter: str, previous_quarter: str) -> pd.DataFrame:
    """One row per customer seen in either quarter: from-segment (or 'new') and to-segment (or 'lapsed')."""
    merged = previous[["customer_id", "segment"]].merge(
        current[["customer_id", "segment"]], on="customer_id", how="outer", suffixes=("_from", "_to")
    )
    out = pd.DataFrame(
        {
            "quarter": quarter,
            "previous_quarter": previous_quarter,
            "customer_id": merged["customer_id"],
            "from_segment": merged["segment_from"].fillna(NEW),
            "to_segment": merged["segment_to"].fillna(LAPSED),
        }
    )
    return out.sort_values("customer_id", kind="mergesort").reset_index(drop=True)


def transition_matrix(history: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    counts = pd.crosstab(history["from_segment"], history["to_segment"])
    shares = counts.div(counts.sum(axis=1), axis=0)
    return counts, shares


@dg.asset(
    name=TABLE,
    group_name=GROUP,
    owners=ANALYTICS_OWNERS,
    kinds={"duckdb", "pandas"},
    deps=[
        dg.AssetDep(
            "segment_assignments",
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True
            ),
        )
    ],
    partitions_def=quarterly_partitions,
    check_specs=[contract_spec(TABLE)],
    description=(
        "For the quarter against the previous one: one row per customer with from_segment and to_segment "
        "('new' for customers first seen this quarter, 'lapsed' for customers no longer in the look-back "
        "window). The transition matrix (counts and row shares) is in the metadata. Re-running a quarter "
        "rewrites that quarter's rows only."
    ),
)
def segment_migration_history(context: dg.AssetExecutionContext, warehouse: Warehouse):
    q = parse_quarter(context.partition_key)
    prev = q.previous()
    with warehouse.get_connection() as con:
        current = con.execute(
            "SELECT customer_id, segment FROM segment_assignments WHERE quarter = ?", [q.key]
        ).df()
        if current.empty:
            raise dg.Failure(description=f"segment_assignments has no partition {q.key}: materialise it first")
        previous = con.execute(
            "SELECT customer_id, segment FROM segment_assignments WHERE quarter = ?", [prev.key]
        ).df()
        if previous.empty:
            earlier_sales = con.execute(
                "SELECT count(*) FROM cleaned_sales WHERE invoice_date < ?", [prev.end]
            ).fetchall()[0][0] if table_exists(con, "cleaned_sales") else 0
            if earlier_sales:
                raise dg.Failure(
                    description=(
                        f"segment_migration_history {q.key}: the previous quarter {prev.key} has sales but no "
                        f"segment_assignments. Materialise {prev.key} first (a backfill over every quarter "
                        "does this in order)."
                    )
                )
            context.log.info(f"{prev.key} precedes the data: every customer of {q.key} counts as new")
        history = migrate(previous, current, q.key, prev.key)
        stage = create_stage_from_df(con, TABLE, history)
        yield from gate(
            context,
            con,
            TABLE,
            stage,
            {
                "from_segments": segment_names() + [NEW],
                "to_segments": segment_names() + [LAPSED],
                "previous_customers": len(previous),
                "current_customers": len(current),
            },
        )
        publish_partition(con, TABLE, "quarter", q.key, stage)

    counts, shares = transition_matrix(history)
    moved = int((history.from_segment != history.to_segment).sum())
    yield dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(history),
            "previous_quarter": prev.key,
            "new_customers": int((history.from_segment == NEW).sum()),
            "lapsed_customers": int((history.to_segment == LAPSED).sum()),
            "stayed_in_segment": int((history.from_segment == history.to_segment).sum()),
            "changed_segment": moved,
            "transition_counts": dg.MetadataValue.md(counts.reset_index().to_markdown(index=False)),
            "transition_row_shares": dg.MetadataValue.md(shares.round(3).reset_index().to_markdown(index=False)),
        }
    )
