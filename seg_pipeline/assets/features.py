"""customer_features: one row per customer per quarter, computed in DuckDB SQL."""

from datetime import datetime, time

import dagster as dg

from ..partitions import parse_quarter, quarterly_partitions
from ..resources import Warehouse
from ..sql import load_sql
from ..storage import create_stage, publish_partition
from .common import GROUP, OWNERS, contract_spec, gate, md_table, preview, sql_references, table_metadata

TABLE = "customer_features"


class FeatureConfig(dg.Config):
    lookback_months: int = 12
    """Length of the look-back window ending at the quarter's last day."""


def feature_params(quarter_key: str, lookback_months: int) -> dict:
    q = parse_quarter(quarter_key)
    return {
        "quarter": q.key,
        "as_of_date": q.as_of_date,
        "as_of_end": datetime.combine(q.end, time()),
        "window_start": datetime.combine(q.window_start(lookback_months), time()),
    }


@dg.asset(
    name=TABLE,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"duckdb", "sql"},
    deps=["cleaned_sales"],
    partitions_def=quarterly_partitions,
    check_specs=[contract_spec(TABLE, quarterly_partitions)],
    metadata={"dagster/table_name": f"warehouse.main.{TABLE}", **sql_references("customer_features")},
    description=(
        "Customer behaviour as of the quarter's last day (sql/customer_features.sql), over a look-back window "
        "(default 12 months), from transactions on or before the as-of date only: recency_days, frequency "
        "(distinct invoices), monetary (revenue), avg_order_value, distinct_products, purchase_span_days "
        "(first to last purchase in the window), tenure_days (since the first purchase ever), main country "
        "(and main store when the source has stores)."
    ),
)
def customer_features(context: dg.AssetExecutionContext, config: FeatureConfig, warehouse: Warehouse):
    params = feature_params(context.partition_key, config.lookback_months)
    with warehouse.get_connection() as con:
        stage = create_stage(con, TABLE, load_sql("customer_features"), params)
        n = con.execute(f"SELECT count(*) FROM {stage}").fetchall()[0][0]
        if n == 0:
            raise dg.Failure(
                description=(
                    f"customer_features {context.partition_key}: no customer bought in the look-back window "
                    f"{params['window_start']:%Y-%m-%d} .. {params['as_of_date']}: the quarter is outside the "
                    "data. Materialise only quarters the data covers (seg-pipeline run does)."
                )
            )
        yield from gate(
            context, con, TABLE, stage, {"lookback_days": (params["as_of_end"] - params["window_start"]).days}
        )
        summary = con.execute(
            f"SELECT count(*) customers, median(recency_days) median_recency_days, avg(frequency) mean_frequency, "
            f"sum(monetary) revenue, median(monetary) median_monetary, avg(avg_order_value) mean_aov, "
            f"count(*) FILTER (WHERE frequency = 1) one_time_buyers FROM {stage}"
        ).df()
        publish_partition(con, TABLE, "quarter", context.partition_key, stage)
        md_preview = preview(con, TABLE, "WHERE quarter = ? ORDER BY monetary DESC", [context.partition_key])
        table_meta = table_metadata(con, TABLE, "WHERE quarter = ?", [context.partition_key])

    s = summary.iloc[0]
    yield dg.MaterializeResult(
        metadata={
            **table_meta,
            "dagster/row_count": int(s.customers),
            "as_of_date": str(params["as_of_date"]),
            "window_start": f"{params['window_start']:%Y-%m-%d}",
            "lookback_months": config.lookback_months,
            "revenue_in_window": float(s.revenue),
            "one_time_buyers": int(s.one_time_buyers),
            "summary": dg.MetadataValue.md(md_table(summary)),
            "top_customers_by_revenue": md_preview,
        }
    )
