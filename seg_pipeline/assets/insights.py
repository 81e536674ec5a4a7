"""segment_insights: what the business can act on, per quarter: segment profiles, revenue concentration,
concentration risk per store (or country), the win-back list, the k-selection evidence and the migration,
as warehouse tables, CRM-ready CSV files, plots and an executive summary (HTML and Markdown).

The numbers come from the pure functions of seg_pipeline/insights/analysis.py, the plots from
insights/plots.py, the report from insights/report.py and its templates.
"""

from dataclasses import dataclass
from datetime import datetime, time

import dagster as dg
import pandas as pd

from .. import escaping
from ..insights import analysis, plots
from ..insights.report import PLOTS_DIR, REPORT_HTML, REPORT_MD, Plot, ReportData, key_findings, render
from ..ml.naming import load_catalogue
from ..partitions import parse_quarter, quarterly_partitions
from ..resources import PipelineHome, Warehouse
from ..storage import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_text,
    create_stage_from_df,
    failpoint,
    publish_partition,
    table_exists,
)
from .common import ANALYTICS_OWNERS, GROUP, contract_spec, gate, md_table, step_clock, table_metadata, table_spec

ASSET = "segment_insights"
PROFILE = "segment_profile"
STORES = "store_concentration"
WINBACK = "winback_list"
DEFAULT_LOOKBACK_MONTHS = 12

CLUSTER_PROFILES_CSV = "cluster_profiles.csv"
CLUSTER_SUMMARY_CSV = "cluster_summary.csv"
WINBACK_CSV = "winback_list.csv"
STORES_CSV = "store_concentration.csv"


class InsightsConfig(dg.Config):
    store_dependence_threshold: float = 0.5
    """Flag a store (or country) when its 10 largest customers bring more than this share of its revenue."""
    min_store_customers: int = 30
    """Stores with fewer customers are listed but not flagged: their top 10 are nearly all their customers."""
    winback_min_days: int = 90
    """A win-back candidate has not bought for at least this many days (recency_days)."""
    winback_revenue_quantile: float = 0.8
    """High-value = 12-month revenue at or above this quantile of the quarter's customers (0.8: the top 20%)."""
    winback_min_revenue: float | None = None
    """A fixed revenue threshold instead of the quantile (same currency as the data)."""
    lookback_months: int | None = None
    """The look-back window of the store figures. Empty: the one customer_features was materialised with for
    the quarter (from its metadata), else 12. It must match customer_features (the contract checks it)."""
    max_plot_stores: int = 15
    """Rows of the store x segment heatmap; smaller stores are summed as 'other'."""


def _features_lookback(context: dg.AssetExecutionContext, quarter: str) -> int | None:
    """lookback_months of the latest customer_features materialisation of the quarter, if the instance has it."""
    try:
        res = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("customer_features"), asset_partitions=[quarter]), limit=1
        )
        for rec in res.records:
            mat = rec.asset_materialization
            value = mat.metadata.get("lookback_months") if mat is not None else None
            if value is not None:
                return int(value.value)
    except Exception:  # noqa: BLE001 - any instance without the record: fall back to the default
        return None
    return None


def read_customers(con, quarter: str) -> pd.DataFrame:
    """Every assigned customer of the quarter with its features."""
    return con.execute(
        """
        SELECT a.customer_id, a.cluster, a.segment, a.label_basis, a.monetary_ratio, a.avg_order_value_ratio,
               a.distinct_products_ratio, a.frequency_ratio, f.recency_days, f.frequency, f.monetary, f.avg_order_value,
               f.distinct_products, f.purchase_span_days, f.tenure_days, f.main_country, f.main_store,
               f.first_purchase, f.last_purchase, f.as_of_date,
               v.p_alive, v.expected_purchases_13w, v.clv, v.value_at_risk
        FROM segment_assignments AS a JOIN customer_features AS f USING (quarter, customer_id)
        LEFT JOIN customer_value AS v USING (quarter, customer_id)
        WHERE a.quarter = ? ORDER BY a.customer_id
        """,
        [quarter],
    ).df()


def read_store_sales(con, start: datetime, end: datetime) -> tuple[pd.DataFrame, str]:
    """Revenue per (store, customer) in the window; the unit is the store column when the source has one in
    the window, else the country."""
    has_store = (
        con.execute(
            "SELECT count(store) FROM cleaned_sales WHERE invoice_date >= ? AND invoice_date < ?", [start, end]
        ).fetchall()[0][0]
        > 0
    )
    col, unit = ("store", "store") if has_store else ("country", "country")
    sales = con.execute(
        # summed as DECIMAL (like sql/customer_features.sql): exact, whatever order DuckDB's threads add in
        f"SELECT coalesce(CAST({col} AS VARCHAR), '(unknown)') AS store, customer_id, "
        "CAST(sum(CAST(line_revenue AS DECIMAL(38, 6))) AS DOUBLE) AS revenue "
        "FROM cleaned_sales WHERE invoice_date >= ? AND invoice_date < ? GROUP BY ALL ORDER BY store, customer_id",
        [start, end],
    ).df()
    return sales, unit


def cluster_profiles_frame(
    customers: pd.DataFrame, winback: pd.DataFrame, quarter: str, unit: str, profile: pd.DataFrame
) -> pd.DataFrame:
    """One row per assigned customer, ready for a CRM / POS import: id, segment, cluster, action, key features.
    Actions come from the segment profile (catalogue actions, or the note of a descriptive name)."""
    actions = dict(zip(profile["segment"], profile["action"]))
    wb_rank = dict(zip(winback["customer_id"], winback["rank"]))
    out = pd.DataFrame(
        {
            "customer_id": customers["customer_id"],
            "segment": customers["segment"],
            "cluster": customers["cluster"],
            "recommended_action": customers["segment"].map(actions),
            "recency_days": customers["recency_days"],
            "frequency": customers["frequency"],
            "monetary": customers["monetary"].round(2),
            "avg_order_value": customers["avg_order_value"].round(2),
            "distinct_products": customers["distinct_products"],
            "tenure_days": customers["tenure_days"],
            "first_purchase": pd.to_datetime(customers["first_purchase"]),  # written as dates
            "last_purchase": pd.to_datetime(customers["last_purchase"]),
            "main_country": customers["main_country"],
        }
    )
    for c, digits in (("p_alive", 4), ("expected_purchases_13w", 3), ("clv", 2)):  # empty without a fit
        out[c] = pd.to_numeric(customers[c], errors="coerce").astype("float64").round(digits)
    if unit == "store":
        out["main_store"] = customers["main_store"]
    out["winback_rank"] = customers["customer_id"].map(wb_rank).astype("Int64")
    # why the label: the rule and conditions, and the relative figures they read (the plain ones are above)
    out["label_basis"] = customers["label_basis"]
    for c in ("monetary_ratio", "avg_order_value_ratio", "distinct_products_ratio", "frequency_ratio"):
        out[c] = pd.to_numeric(customers[c], errors="coerce").astype("float64").round(4)
    out["quarter"] = quarter
    out["as_of_date"] = pd.to_datetime(customers["as_of_date"])
    return out


def _string_columns(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """Text columns as pandas strings, so DuckDB types them VARCHAR even when empty or all NULL."""
    return df.astype({c: "string" for c in cols if c in df.columns})


@dataclass
class InsightsInputs:
    """What segment_insights reads, for one quarter."""

    customers: pd.DataFrame  # every assigned customer with features
    sales: pd.DataFrame  # revenue per (store or country, customer) in the window
    unit: str  # "store" or "country"
    trials: pd.DataFrame  # clustering_model rows of the quarter
    history: pd.DataFrame  # segment_migration_history rows of the quarter
    descriptions: dict  # segment -> description (segment_summary; descriptive names included)
    value_state: str = ""  # customer_value's model state for the quarter (fitted / insufficient_data / not_converged)
    value_note: str = ""  # why, when not fitted
    value_parameters: pd.DataFrame | None = None  # customer_value_parameters rows of the quarter
    clv_horizon_weeks: int = 52


def read_inputs(con, q, start: datetime, end: datetime) -> InsightsInputs:
    """Read the quarter's inputs; a missing or inconsistent input is a Failure that says what to materialise."""
    for t in (
        "segment_assignments",
        "customer_features",
        "clustering_model",
        "segment_migration_history",
        "customer_value",
        "customer_value_parameters",
    ):
        if not table_exists(con, t):
            raise dg.Failure(description=f"{ASSET} {q.key}: table {t} does not exist: materialise it first")
    customers = read_customers(con, q.key)
    assigned = con.execute("SELECT count(*) FROM segment_assignments WHERE quarter = ?", [q.key]).fetchall()[0][0]
    if customers.empty or len(customers) != assigned:
        raise dg.Failure(
            description=(
                f"{ASSET} {q.key}: {assigned:,} customers in segment_assignments but {len(customers):,} with "
                "features: materialise customer_features and segment_assignments for the quarter first"
            )
        )
    sales, unit = read_store_sales(con, start, end)
    trials = con.execute("SELECT * FROM clustering_model WHERE quarter = ? ORDER BY k", [q.key]).df()
    history = con.execute(
        "SELECT from_segment, to_segment, from_model_version, to_model_version FROM segment_migration_history "
        "WHERE quarter = ?",
        [q.key],
    ).df()
    descriptions = dict(
        con.execute("SELECT segment, description FROM segment_summary WHERE quarter = ?", [q.key]).fetchall()
    )
    if trials.empty or history.empty:
        raise dg.Failure(
            description=f"{ASSET} {q.key}: clustering_model or segment_migration_history has no partition "
            f"{q.key}: materialise them first"
        )
    value_parameters = con.execute(
        "SELECT * FROM customer_value_parameters WHERE quarter = ? ORDER BY model, parameter", [q.key]
    ).df()
    if value_parameters.empty:
        raise dg.Failure(description=f"{ASSET} {q.key}: customer_value has no partition {q.key}: materialise it first")
    first = value_parameters.iloc[0]
    return InsightsInputs(
        customers,
        sales,
        unit,
        trials,
        history,
        descriptions,
        value_state=str(first["state"]),
        value_note=str(first["note"]) if first["state"] != "fitted" else "",
        value_parameters=value_parameters,
        clv_horizon_weeks=int(first["clv_horizon_weeks"]),
    )


@dataclass
class Insights:
    """The quarter's figures, from pure functions of insights/analysis.py (no DuckDB, no files)."""

    profile: pd.DataFrame
    conc: analysis.Concentration
    headline: str
    stores: pd.DataFrame
    wb: pd.DataFrame
    wb_threshold: float
    order: list
    moves: dict
    counts: pd.DataFrame
    big_moves: pd.DataFrame
    first_quarter: bool
    k: int
    reason: str
    stability: analysis.Stability


def analyse(inp: InsightsInputs, config: "InsightsConfig", q, catalogue) -> Insights:
    ranks = {s.name: s.rank for s in catalogue}
    profile = analysis.segment_profile(inp.customers, catalogue, inp.descriptions)
    stores = analysis.store_risk(
        inp.sales, config.store_dependence_threshold, config.min_store_customers, segments=inp.customers
    )
    wb, wb_threshold = analysis.winback(
        inp.customers, config.winback_min_days, config.winback_min_revenue, config.winback_revenue_quantile
    )
    order = list(profile["segment"])
    chosen = inp.trials[inp.trials["chosen"]]
    return Insights(
        profile=profile,
        conc=analysis.concentration(inp.customers["monetary"]),
        headline=analysis.headline_of(profile),
        stores=stores,
        wb=wb,
        wb_threshold=wb_threshold,
        order=order,
        moves=analysis.count_moves(inp.history, ranks),
        counts=analysis.transition_counts(inp.history, order),
        big_moves=analysis.biggest_moves(inp.history, ranks),
        first_quarter=bool(inp.history["from_segment"].isin(analysis.ARRIVALS).all()),
        k=int(chosen["k"].iloc[0]) if not chosen.empty and pd.notna(chosen["k"].iloc[0]) else 0,  # 0: no model yet
        reason=str(inp.trials["reason"].iloc[0] or ""),
        stability=analysis.stability(chosen.iloc[0].to_dict(), inp.history, q.label),
    )


def draw_plots(inp: InsightsInputs, r: Insights, config: "InsightsConfig", q, lookback: int) -> list[Plot]:
    """The report's plots (PNG bytes with title and caption), from the quarter's inputs and figures."""
    unit, sales, customers, trials = inp.unit, inp.sales, inp.customers, inp.trials
    profile, conc, order, counts, reason, stability = r.profile, r.conc, r.order, r.counts, r.reason, r.stability
    qlabel, plabel = q.label, q.previous().label
    units = "stores" if unit == "store" else "countries"
    return [
        Plot(
            "segment_shares",
            "Share of customers vs share of revenue",
            "Solid bars: share of revenue; pale bars: share of customers. A segment whose revenue bar is longer "
            "than its customer bar is worth more than its size.",
            plots.share_bars(profile),
        ),
        Plot(
            "lorenz",
            "Revenue concentration (Lorenz curve)",
            f"Customers ordered from the smallest to the largest spender. The further the curve sags below the "
            f"diagonal, the more revenue depends on a few customers (Gini {conc.gini:.2f}).",
            plots.lorenz(conc),
        ),
        Plot(
            "store_segment_revenue",
            f"Revenue by {unit} and segment",
            f"Each row: a {unit}'s revenue over the last {lookback} months (in brackets) split by segment. The "
            f"largest {units} by revenue; the rest summed as 'other'.",
            plots.store_segment_heatmap(analysis.store_segment_revenue(sales, customers, config.max_plot_stores), unit),
        ),
        Plot(
            "recency_by_segment",
            "Days since last purchase, by segment",
            f"Box: the middle half of each segment's customers; line: the median. High-value customers right "
            f"of the red line ({config.winback_min_days} days) are on the win-back list.",
            plots.recency_by_segment(customers, order, config.winback_min_days),
        ),
        Plot(
            "migration_flow",
            f"Where customers went, {plabel} to {qlabel}",
            f"Left: customers of {plabel} by segment (and customers new in {qlabel}); right: the same customers "
            f"in {qlabel} (and those who lapsed). Band thickness: number of customers.",
            plots.migration_flow(counts, plabel, qlabel, title=f"Where customers went, {plabel} to {qlabel}"),
        ),
        Plot(
            "migration_matrix",
            f"Migration matrix, {plabel} to {qlabel}",
            "Rows: segment last quarter ('new': first seen this quarter); columns: segment now ('lapsed': no "
            "purchase in the look-back window). Cells: customers and share of the row.",
            plots.migration_heatmap(counts, title=f"Migration matrix, {plabel} to {qlabel}"),
        ),
        Plot(
            "k_selection",
            "Choosing k: elbow and silhouette",
            "Left: inertia falls as k grows; the bend (elbow) is where more clusters stop paying off. Right: "
            "silhouette, higher = better separated clusters. Green: the range allowed by the business; star: "
            f"the chosen k. Why: {reason}."
            + (
                f" These are the trials of the model's fit on {stability.fitted_label}; {qlabel} reuses that model."
                if stability.decision == "reused"
                else ""
            ),
            plots.k_selection(
                trials.loc[trials["k"].notna(), ["k", "inertia", "silhouette", "in_business_range", "chosen", "reason"]]
            ),
        ),
        Plot(
            "p_alive_by_segment",
            "Probability still active (P(alive)), by segment",
            (
                "Box: the middle half of each segment's customers by P(alive), the BG/NBD model's probability "
                "that the customer has not gone for good, from their whole purchase history; right: the "
                f"segment's mean CLV over the next {inp.clv_horizon_weeks} weeks."
                if inp.value_state == "fitted"
                else f"No customer-value fit this quarter ({inp.value_note}); the win-back list is ranked by past "
                "revenue."
            ),
            plots.p_alive_by_segment(customers, order, None if inp.value_state == "fitted" else inp.value_note),
        ),
    ]


def write_report_files(
    con,
    out,
    data: ReportData,
    customers: pd.DataFrame,
    winback: pd.DataFrame,
    profile_t: pd.DataFrame,
    stores_t: pd.DataFrame,
):
    """Render the report from its one data object and write it, the plots and the CSV files (each atomically,
    every CSV through storage.atomic_write_csv, which neutralises spreadsheet formulas) to the quarter's report
    folder; returns the HTML report's path."""
    html, md = render(data)
    for p in data.plots:
        atomic_write_bytes(out / p.filename, p.png)
    atomic_write_csv(
        con,
        cluster_profiles_frame(customers, winback, data.quarter, data.unit, data.profile),
        out / CLUSTER_PROFILES_CSV,
        dates=("first_purchase", "last_purchase", "as_of_date"),
    )
    atomic_write_csv(con, profile_t, out / CLUSTER_SUMMARY_CSV)
    winback_csv = data.winback if data.unit == "store" else data.winback.drop(columns=["main_store"])
    atomic_write_csv(con, winback_csv, out / WINBACK_CSV, dates=("last_purchase",))
    atomic_write_csv(con, stores_t, out / STORES_CSV)
    atomic_write_text(out / REPORT_MD, md)
    report_path = atomic_write_text(out / REPORT_HTML, html)
    return report_path


INSIGHTS_DEPS = [
    "segment_assignments",
    "segment_summary",
    "segment_migration_history",
    "clustering_model",
    "customer_features",
    "cleaned_sales",
    "customer_value",
    "customer_value_parameters",
]


@dg.multi_asset(
    name=ASSET,
    partitions_def=quarterly_partitions,
    specs=[
        dg.AssetSpec(
            ASSET,
            group_name=GROUP,
            owners=ANALYTICS_OWNERS,
            kinds={"duckdb", "pandas", "matplotlib"},
            deps=INSIGHTS_DEPS,
            partitions_def=quarterly_partitions,
            description=(
                "What the business can act on, per quarter. Tables (one partition per quarter): segment_profile (per "
                "segment: customers, revenue and their shares, mean and median recency, frequency, monetary, order value, "
                "product variety, description, action), store_concentration (per store, or per country when the source "
                "has no store: share of revenue from its top 10 customers and its top 10% of customers, segment mix, "
                "flag above a configurable threshold) and winback_list (high-value customers silent for a configurable "
                "number of days, ranked by value at risk from customer_value, or by revenue at risk when the quarter "
                "has no customer-value fit). Files in reports/<quarter>/: cluster_profiles.csv (one row "
                "per customer, CRM-ready), cluster_summary.csv (one row per segment), winback_list.csv, "
                "store_concentration.csv, plots/*.png and the executive summary report.html (plots embedded) and "
                "report.md. The metadata shows the headline, the tables and every plot."
            ),
        ),
        table_spec(
            PROFILE,
            "Per segment of the quarter: customers, revenue and their shares, mean and median "
            "recency, frequency, monetary, order value and product variety, rank, description and action.",
            deps=INSIGHTS_DEPS,
            partitions_def=quarterly_partitions,
            owners=ANALYTICS_OWNERS,
        ),
        table_spec(
            STORES,
            "Per store (or country, when the source has no store): revenue, customers, the share of "
            "its revenue from its 10 largest customers and from its top 10%, segment mix, and whether it is "
            "flagged above the dependence threshold.",
            deps=INSIGHTS_DEPS,
            partitions_def=quarterly_partitions,
            owners=ANALYTICS_OWNERS,
        ),
        table_spec(
            WINBACK,
            "High-value customers silent for at least winback_min_days, ranked by value at risk ((1 - P(alive)) x "
            "CLV if still active), or by revenue at risk when the quarter has no customer-value fit (ranked_by).",
            deps=INSIGHTS_DEPS,
            partitions_def=quarterly_partitions,
            owners=ANALYTICS_OWNERS,
        ),
    ],
    check_specs=[contract_spec(ASSET, quarterly_partitions)],
)
def segment_insights(
    context: dg.AssetExecutionContext, config: InsightsConfig, pipeline: PipelineHome, warehouse: Warehouse
):
    q = parse_quarter(context.partition_key)
    if not 0 < config.store_dependence_threshold <= 1 or not 0 <= config.winback_revenue_quantile <= 1:
        raise dg.Failure(
            description="store_dependence_threshold must be in (0, 1] and winback_revenue_quantile in [0, 1]"
        )
    lookback = config.lookback_months or _features_lookback(context, q.key) or DEFAULT_LOOKBACK_MONTHS
    start = datetime.combine(q.window_start(lookback), time())
    end = datetime.combine(q.end, time())
    catalogue = load_catalogue()
    seconds, lap = step_clock()

    with warehouse.get_connection() as con:
        inp = read_inputs(con, q, start, end)
        customers, unit, trials = inp.customers, inp.unit, inp.trials
        assigned = len(customers)
        lap("read")
        r = analyse(inp, config, q, catalogue)
        profile, conc, headline, stores, wb, wb_threshold = (
            r.profile,
            r.conc,
            r.headline,
            r.stores,
            r.wb,
            r.wb_threshold,
        )
        moves, big_moves = r.moves, r.big_moves
        first_quarter, k, reason, stability = r.first_quarter, r.k, r.reason, r.stability

        lap("analysis")
        # ---- staged tables
        profile_t = profile.copy()
        profile_t.insert(0, "quarter", q.key)
        stores_t = stores.copy()
        stores_t.insert(0, "quarter", q.key)
        stores_t.insert(2, "unit", unit)
        wb_cols = [
            "rank",
            "customer_id",
            "segment",
            "revenue_at_risk",
            "recency_days",
            "frequency",
            "monetary",
            "avg_order_value",
            "last_purchase",
            "main_country",
            "main_store",
            "p_alive",
            "clv",
            "value_at_risk",
            "ranked_by",
        ]
        wb_t = wb[wb_cols].copy()
        wb_t.insert(0, "quarter", q.key)
        create_stage_from_df(con, PROFILE, _string_columns(profile_t, ["quarter", "segment", "description", "action"]))
        create_stage_from_df(con, STORES, _string_columns(stores_t, ["quarter", "store", "unit", "segment_mix"]))
        create_stage_from_df(
            con,
            WINBACK,
            _string_columns(wb_t, ["quarter", "customer_id", "segment", "main_country", "main_store", "ranked_by"]),
        )
        yield from gate(
            context,
            con,
            ASSET,
            f"__stage_{PROFILE}",
            {
                "segment_names": sorted(set(customers["segment"])),
                "assigned_customers": assigned,
                "assigned_revenue": float(customers["monetary"].sum()),
                "store_table": f"__stage_{STORES}",
                "winback_table": f"__stage_{WINBACK}",
                "store_threshold": config.store_dependence_threshold,
                "min_store_customers": config.min_store_customers,
                "winback_min_days": config.winback_min_days,
                "winback_min_revenue": wb_threshold,
                "quarter": q.key,
            },
        )

        lap("contract")
        # ---- plots, files and report (written only once the contract has passed)
        qlabel, plabel = q.label, q.previous().label
        first_sale = con.execute("SELECT min(invoice_date) FROM cleaned_sales").fetchall()[0][0]
        if first_sale is not None and first_sale.date() > q.start:
            # the data starts inside its first quarter: offered, and said so wherever the report names it
            qlabel = f"{q.label} (partial quarter: sales from {first_sale:%Y-%m-%d})"
        plot_list = draw_plots(inp, r, config, q, lookback)
        lap("plots")
        rule = (
            f"{lookback}-month revenue of at least {config.winback_min_revenue:,.0f}"
            if config.winback_min_revenue is not None
            else f"{lookback}-month revenue of at least {wb_threshold:,.0f}, the top "
            f"{1 - config.winback_revenue_quantile:.0%}"
        )
        files = {
            "this report, plots embedded": REPORT_HTML,
            "this report as Markdown (plots in plots/)": REPORT_MD,
            "one row per customer: segment, cluster, action and key features, ready for a CRM or POS import": CLUSTER_PROFILES_CSV,
            "one row per segment: the profile above, means and medians": CLUSTER_SUMMARY_CSV,
            "the full win-back list, ranked by value at risk (by revenue at risk without a customer-value fit)": WINBACK_CSV,
            f"concentration per {unit}, every {unit}": STORES_CSV,
        }
        data = ReportData(
            quarter=q.key,
            quarter_label=qlabel,
            as_of_date=q.as_of_date.isoformat(),
            previous_label=plabel,
            unit=unit,
            lookback_months=lookback,
            concentration=conc,
            headline=headline,
            profile=profile,
            stores=stores,
            store_threshold=config.store_dependence_threshold,
            min_store_customers=config.min_store_customers,
            winback=wb_t.assign(last_purchase=pd.to_datetime(wb_t["last_purchase"]).dt.date),
            winback_threshold=wb_threshold,
            winback_rule=rule,
            winback_min_days=config.winback_min_days,
            moves=moves,
            biggest_moves=big_moves,
            first_quarter=first_quarter,
            trials=trials[trials["k"].notna()],  # none while waiting for history
            k=k,
            k_reason=reason,
            stability=stability,
            value_state=inp.value_state,
            value_note=inp.value_note,
            value_parameters=inp.value_parameters,
            clv_horizon_weeks=inp.clv_horizon_weeks,
            value_share_active=float((customers["p_alive"] >= 0.5).mean()) if inp.value_state == "fitted" else None,
            plots=plot_list,
            files=files,
        )
        out = pipeline.reports_dir(q.key)
        failpoint(f"{ASSET}:{q.key}")  # fault injection (tests): fail here, before anything is written
        report_path = write_report_files(con, out, data, customers, r.wb, profile_t, stores_t)
        publish_partition(con, [PROFILE, STORES, WINBACK], "quarter", q.key)
        companions = {t: table_metadata(con, t, "WHERE quarter = ?", [q.key]) for t in (PROFILE, STORES, WINBACK)}
        lap("report_files_publish")

    flagged = stores[stores["flagged"]]
    profile_md = profile[
        [
            "segment",
            "customers",
            "share_customers",
            "share_revenue",
            "median_recency_days",
            "median_frequency",
            "median_monetary",
            "median_avg_order_value",
            "action",
        ]
    ]
    conc_md = pd.DataFrame(
        {
            "measure": [
                "revenue share of the top 10% of customers",
                "revenue share of the top 20% of customers",
                "smallest share of customers bringing 50% of revenue",
                "smallest share of customers bringing 80% of revenue",
                "Gini coefficient",
            ],
            "value": [
                f"{conc.top_10pct_share:.1%}",
                f"{conc.top_20pct_share:.1%}",
                f"{conc.share_customers_for_50pct:.1%} ({conc.customers_for_50pct:,} customers)",
                f"{conc.share_customers_for_80pct:.1%} ({conc.customers_for_80pct:,} customers)",
                f"{conc.gini:.3f}",
            ],
        }
    )
    metadata = {
        "dagster/row_count": len(profile),
        "headline": headline,
        "key_findings": dg.MetadataValue.md("\n".join(f"- {escaping.markdown(f)}" for f in key_findings(data))),
        "segment_profile": dg.MetadataValue.md(md_table(profile_md, max_rows=20, floatfmt=",.3f")),
        "concentration": dg.MetadataValue.md(md_table(conc_md)),
        "gini": round(conc.gini, 4),
        "top_10pct_revenue_share": round(conc.top_10pct_share, 4),
        "top_20pct_revenue_share": round(conc.top_20pct_share, 4),
        "share_customers_for_50pct_revenue": round(conc.share_customers_for_50pct, 4),
        "share_customers_for_80pct_revenue": round(conc.share_customers_for_80pct, 4),
        "store_unit": unit,
        "stores_flagged": len(flagged),
        "flagged_stores": dg.MetadataValue.md(
            md_table(flagged.drop(columns=["assessed", "flagged"]), max_rows=50, floatfmt=",.3f")
            if not flagged.empty
            else f"_No {unit} above the threshold ({config.store_dependence_threshold:.0%} of "
            f"revenue from its top 10 customers)._"
        ),
        "winback_customers": len(wb),
        "winback_revenue_at_risk": round(data.winback_revenue, 2),
        "winback_ranked_by": str(wb_t["ranked_by"].iloc[0]) if len(wb_t) else "",
        "customer_value_state": inp.value_state,
        "winback_top": dg.MetadataValue.md(md_table(wb_t.drop(columns=["quarter"]), max_rows=10)),
        "upgrades": moves["upgraded"],
        "downgrades": moves["downgraded"],
        "new_customers": moves["new"],
        "lapsed_customers": moves["lapsed"],
        "returning_customers": moves["returning"],
        "model_decision": stability.decision,
        "model_decision_reason": stability.reason,
        "retained_changed_share": round(stability.retained_changed_share, 4),
        "k_selection": dg.MetadataValue.md(
            md_table(trials[["k", "inertia", "silhouette", "in_business_range", "chosen"]], floatfmt=",.4f")
        ),
        "why_this_k": reason,
        "lookback_months": lookback,
        "report_html": dg.MetadataValue.path(str(report_path)),
        "report_markdown": dg.MetadataValue.path(str(out / REPORT_MD)),
        "cluster_profiles_csv": dg.MetadataValue.path(str(out / CLUSTER_PROFILES_CSV)),
        "cluster_summary_csv": dg.MetadataValue.path(str(out / CLUSTER_SUMMARY_CSV)),
        "winback_list_csv": dg.MetadataValue.path(str(out / WINBACK_CSV)),
        "plots_dir": dg.MetadataValue.path(str(out / PLOTS_DIR)),
        "seconds": dg.MetadataValue.json(seconds),
    }
    if inp.value_state == "fitted":
        metadata["winback_value_at_risk"] = round(float(wb_t["value_at_risk"].sum()), 2)
    for p in plot_list:
        metadata[f"plot_{p.name}"] = dg.MetadataValue.md(
            f"{p.markdown_image()}\n\n*{escaping.markdown(p.title)}.* {escaping.markdown(p.caption)}"
        )
    yield dg.MaterializeResult(asset_key=ASSET, metadata=metadata)
    yield dg.MaterializeResult(
        asset_key=PROFILE,
        metadata={**companions[PROFILE], "segment_profile": metadata["segment_profile"], "headline": headline},
    )
    yield dg.MaterializeResult(
        asset_key=STORES,
        metadata={
            **companions[STORES],
            "store_unit": unit,
            "stores_flagged": len(flagged),
            "flagged_stores": metadata["flagged_stores"],
        },
    )
    yield dg.MaterializeResult(
        asset_key=WINBACK,
        metadata={
            **companions[WINBACK],
            "winback_revenue_at_risk": metadata["winback_revenue_at_risk"],
            "winback_top": metadata["winback_top"],
        },
    )
