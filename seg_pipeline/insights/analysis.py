"""Pure analysis functions behind the segment insights: no Dagster, no DuckDB, no files.

- segment_profile: one row per segment (counts, shares, mean and median features, description, action);
- concentration: Lorenz curve, Gini, top-10%/20% revenue shares, the smallest share of customers that
  brings 50% / 80% of revenue; headline: "X% of customers generate Y% of revenue" for the top segment;
- shape_figures: those concentration figures plus the one-order share and p90/median spend of a quarter's
  customers (how the default data is compared with a real export);
- store_risk: per store (or country), the share of its revenue from its top 10 customers and from its top
  10% of customers, its customer count and segment mix, flagged above a threshold;
- winback: high-value customers who have not bought for a while, ranked by revenue at risk;
- classify_moves / count_moves: upgrades and downgrades between segments by the catalogue's `rank`.

Conventions: "the top p of customers" is the ceil(p x n) customers with the largest revenue; "the smallest
share of customers that brings t of revenue" is the fewest whole customers, largest first, whose revenue
reaches t of the total, divided by n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

# the pseudo-segments of segment_migration_history: first purchase ever this quarter; bought before but not in
# the previous quarter's look-back window; left the look-back window
NEW, RETURNING, LAPSED = "new", "returning", "lapsed"
ARRIVALS = (NEW, RETURNING)
PROFILE_FEATURES = ["recency_days", "frequency", "monetary", "avg_order_value", "distinct_products"]
VALUE_FEATURES = ["p_alive", "clv"]  # from customer_value, when the quarter has a fit
_EPS = 1e-12


# ------------------------------------------------------------------------------------------ concentration


@dataclass(frozen=True)
class Concentration:
    customers: int
    revenue: float
    gini: float
    top_10pct_share: float  # share of revenue of the top 10% of customers
    top_20pct_share: float
    customers_for_50pct: int  # fewest customers (largest first) bringing >= 50% of revenue
    customers_for_80pct: int
    lorenz: pd.DataFrame  # share_customers, share_revenue: (0, 0) .. (1, 1), customers by ascending revenue

    @property
    def share_customers_for_50pct(self) -> float:
        return self.customers_for_50pct / self.customers

    @property
    def share_customers_for_80pct(self) -> float:
        return self.customers_for_80pct / self.customers

    def as_dict(self) -> dict[str, float]:
        return {
            "customers": self.customers,
            "revenue": self.revenue,
            "gini": self.gini,
            "top_10pct_revenue_share": self.top_10pct_share,
            "top_20pct_revenue_share": self.top_20pct_share,
            "customers_for_50pct_revenue": self.customers_for_50pct,
            "share_customers_for_50pct_revenue": self.share_customers_for_50pct,
            "customers_for_80pct_revenue": self.customers_for_80pct,
            "share_customers_for_80pct_revenue": self.share_customers_for_80pct,
        }


def gini(revenue) -> float:
    """Gini coefficient of non-negative values: 0 = everyone spends the same, -> 1 = one customer has it all.
    G = 2 * sum(i * x_(i)) / (n * sum(x)) - (n + 1) / n, x sorted ascending, i = 1..n (= 1 - 2 x the area
    under the Lorenz curve drawn through the customers)."""
    x = np.sort(np.asarray(revenue, dtype="float64"))
    n, total = len(x), x.sum()
    if n == 0 or total <= 0:
        return 0.0
    i = np.arange(1, n + 1)
    return float(2.0 * (i * x).sum() / (n * total) - (n + 1) / n)


def top_share(revenue, fraction: float) -> float:
    """Share of total revenue brought by the top ceil(fraction x n) customers."""
    x = np.sort(np.asarray(revenue, dtype="float64"))[::-1]
    total = x.sum()
    if len(x) == 0 or total <= 0:
        return 0.0
    k = max(1, math.ceil(fraction * len(x) - 1e-9))
    return float(x[:k].sum() / total)


def customers_for_share(revenue, target: float) -> int:
    """The fewest customers, largest revenue first, whose revenue reaches `target` (0..1) of the total."""
    x = np.sort(np.asarray(revenue, dtype="float64"))[::-1]
    total = x.sum()
    if len(x) == 0 or total <= 0:
        return 0
    cum = np.cumsum(x) / total
    return int(np.searchsorted(cum, target - 1e-12) + 1)


def lorenz_points(revenue) -> pd.DataFrame:
    """The Lorenz curve through every customer: cumulative share of customers (ascending revenue) against
    cumulative share of revenue, from (0, 0) to (1, 1)."""
    x = np.sort(np.asarray(revenue, dtype="float64"))
    n, total = len(x), x.sum()
    share_c = np.arange(0, n + 1) / max(n, 1)
    share_r = np.concatenate([[0.0], np.cumsum(x) / total]) if total > 0 else share_c.copy()
    return pd.DataFrame({"share_customers": share_c, "share_revenue": share_r})


def concentration(revenue) -> Concentration:
    x = np.asarray(revenue, dtype="float64")
    if len(x) == 0:
        raise ValueError("concentration of no customers")
    if (x < 0).any():
        raise ValueError("concentration needs non-negative revenue")
    return Concentration(
        customers=len(x),
        revenue=float(x.sum()),
        gini=gini(x),
        top_10pct_share=top_share(x, 0.10),
        top_20pct_share=top_share(x, 0.20),
        customers_for_50pct=customers_for_share(x, 0.50),
        customers_for_80pct=customers_for_share(x, 0.80),
        lorenz=lorenz_points(x),
    )


def shape_figures(monetary: pd.Series, frequency: pd.Series) -> dict[str, float]:
    """How a quarter's customer base is shaped, from customer_features' monetary and frequency (one value per
    customer): Gini, the revenue shares of the top 10% / 20% of customers, the smallest share of customers
    bringing half of revenue, the share of customers with one order, and the 90th-percentile spend over the
    median (pandas' linear quantile). The figures README and tests/test_sample_data_shape.py compare the
    default data with a real Online Retail II export by."""
    m = pd.Series(monetary, dtype="float64")
    c = concentration(m)
    return {
        "customers": c.customers,
        "gini": c.gini,
        "top_10pct_revenue_share": c.top_10pct_share,
        "top_20pct_revenue_share": c.top_20pct_share,
        "share_customers_for_50pct_revenue": c.share_customers_for_50pct,
        "one_order_share": float((pd.Series(frequency) == 1).mean()),
        "p90_to_median": float(m.quantile(0.9) / m.median()),
    }


def headline_of(profile: pd.DataFrame) -> str:
    """'X% of customers generate Y% of revenue: the N <segment> customers.' for the segment with the largest
    revenue share (a frame with segment, customers, share_customers, share_revenue). The one headline of the
    product: asset metadata, the report and the CLI all use it."""
    top = profile.sort_values(["share_revenue", "segment"], ascending=[False, True], kind="mergesort").iloc[0]
    return (
        f"{top.share_customers:.1%} of customers generate {top.share_revenue:.1%} of revenue: "
        f"the {int(top.customers):,} {top.segment} customers."
    )


# -------------------------------------------------------------------------------------------- segments


def segment_profile(
    customers: pd.DataFrame, catalogue=None, descriptions: dict[str, str] | None = None
) -> pd.DataFrame:
    """One row per segment from one row per customer (customer_id, segment, cluster and PROFILE_FEATURES):
    customers and their share, revenue (sum of monetary) and its share, mean and median of every profile
    feature, the segment's rank, description and action. Sorted by revenue, largest first. `descriptions`:
    the model's descriptive (non-catalogue) names and what they mean."""
    from ..ml.naming import load_catalogue, segment_info

    by_name = (catalogue or load_catalogue()).by_name()
    info = {s: by_name.get(s) or segment_info(s, descriptions) for s in customers["segment"].unique()}
    g = customers.groupby("segment", sort=False)
    out = g.agg(cluster=("cluster", "min"), customers=("customer_id", "size"), revenue=("monetary", "sum"))
    for f in PROFILE_FEATURES:
        out[f"mean_{f}"] = g[f].mean()
        out[f"median_{f}"] = g[f].median()
    for f in VALUE_FEATURES:  # customer value (customer_value): NULL for a quarter without a fit
        values = customers[f] if f in customers else pd.Series(np.nan, index=customers.index)
        out[f"mean_{f}"] = pd.to_numeric(values, errors="coerce").groupby(customers["segment"], sort=False).mean()
    out["total_clv"] = (
        pd.to_numeric(customers["clv"], errors="coerce").groupby(customers["segment"], sort=False).sum(min_count=1)
        if "clv" in customers
        else np.nan
    )
    out = out.reset_index()
    total_c, total_r = out["customers"].sum(), out["revenue"].sum()
    out.insert(3, "share_customers", out["customers"] / total_c)
    out.insert(5, "share_revenue", out["revenue"] / total_r if total_r > 0 else 0.0)
    out.insert(2, "rank", [info[s].rank for s in out["segment"]])
    out["description"] = [info[s].description for s in out["segment"]]
    out["action"] = [info[s].action for s in out["segment"]]
    # catalogue names only (a descriptive name holds for all its customers by construction)
    out["conditions_met"] = [
        conditions_met(customers[customers["segment"] == s], info[s]) if s in by_name else "" for s in out["segment"]
    ]
    out = out.astype({"cluster": "Int32", "rank": "int32", "customers": "int64"})  # cluster: NULL without a model
    return out.sort_values(["revenue", "segment"], ascending=[False, True], kind="mergesort").reset_index(drop=True)


def conditions_met(customers: pd.DataFrame, seg) -> str:
    """Per condition of the segment's name, the share of its customers who meet it exactly, in words
    ("frequency >= 2: 100%, recency_days <= 90: 84%"); a customer kept under keep_tolerance counts as not
    meeting it. '' when the name has no conditions or the figures are not in `customers`."""
    parts = []
    for fig, bounds in seg.conditions.items():
        if fig not in customers:
            return ""
        v = pd.to_numeric(customers[fig], errors="coerce").astype("float64")
        for op, bound in (("min", ">="), ("max", "<=")):
            if bounds.get(op) is not None:
                met = v >= bounds[op] if op == "min" else v <= bounds[op]
                parts.append(f"{fig} {bound} {bounds[op]:g}: {met.mean():.0%}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------- stores


def store_risk(
    sales: pd.DataFrame,
    threshold_top10_share: float = 0.5,
    min_customers: int = 30,
    top_n: int = 10,
    top_fraction: float = 0.10,
    segments: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Customer concentration per store.

    sales: one row per (store, customer_id) with `revenue` (several rows per pair are summed);
    segments: optional customer_id -> segment, for the segment mix.
    Per store: customers, revenue, share of all revenue, top10_revenue_share (its `top_n` largest customers),
    top10pct_customers / top10pct_revenue_share (its top ceil(top_fraction x customers) customers),
    largest_customer_share, the segment mix (customers per segment, largest first), and `flagged`: the
    top-`top_n` share is above `threshold_top10_share` and the store has at least `min_customers` customers
    (below that the top-`top_n` share is near 1 by construction and says nothing). Sorted by revenue."""
    per = sales.groupby(["store", "customer_id"], as_index=False, sort=False)["revenue"].sum()
    per = per.sort_values(["store", "revenue", "customer_id"], ascending=[True, False, True], kind="mergesort")
    per["pos"] = per.groupby("store", sort=False).cumcount()  # 0 = the store's largest customer
    g = per.groupby("store", sort=False)
    out = g.agg(customers=("customer_id", "size"), revenue=("revenue", "sum"))
    out["top10pct_customers"] = np.maximum(1, np.ceil(out["customers"] * top_fraction - 1e-9)).astype("int64")
    per = per.merge(out[["top10pct_customers"]], left_on="store", right_index=True)
    out["top10_revenue"] = per[per["pos"] < top_n].groupby("store")["revenue"].sum()
    out["top10pct_revenue"] = per[per["pos"] < per["top10pct_customers"]].groupby("store")["revenue"].sum()
    out["largest_customer_revenue"] = per[per["pos"] == 0].groupby("store")["revenue"].sum()
    rev = out["revenue"].where(out["revenue"] > 0)
    out["share_of_total_revenue"] = out["revenue"] / out["revenue"].sum() if out["revenue"].sum() > 0 else 0.0
    out["top10_revenue_share"] = (out["top10_revenue"] / rev).fillna(0.0)
    out["top10pct_revenue_share"] = (out["top10pct_revenue"] / rev).fillna(0.0)
    out["largest_customer_share"] = (out["largest_customer_revenue"] / rev).fillna(0.0)
    out["assessed"] = out["customers"] >= min_customers
    out["flagged"] = out["assessed"] & (out["top10_revenue_share"] > threshold_top10_share)
    if segments is not None:
        mix = per[["store", "customer_id"]].merge(segments[["customer_id", "segment"]], on="customer_id", how="left")
        mix["segment"] = mix["segment"].fillna("(unassigned)")
        counts = mix.groupby(["store", "segment"]).size().rename("n").reset_index()
        counts = counts.sort_values(["store", "n", "segment"], ascending=[True, False, True], kind="mergesort")
        counts = counts.merge(out[["customers"]], left_on="store", right_index=True)
        counts["txt"] = [f"{s} {n / c:.0%}" for s, n, c in zip(counts["segment"], counts["n"], counts["customers"])]
        out["segment_mix"] = counts.groupby("store", sort=False)["txt"].agg(", ".join)
    else:
        out["segment_mix"] = ""
    out = out.reset_index()
    cols = [
        "store",
        "customers",
        "revenue",
        "share_of_total_revenue",
        "top10_revenue_share",
        "top10pct_customers",
        "top10pct_revenue_share",
        "largest_customer_share",
        "assessed",
        "flagged",
        "segment_mix",
    ]
    out = out[cols].astype({"customers": "int64", "top10pct_customers": "int64", "assessed": bool, "flagged": bool})
    return out.sort_values(["revenue", "store"], ascending=[False, True], kind="mergesort").reset_index(drop=True)


def store_segment_revenue(sales: pd.DataFrame, segments: pd.DataFrame, max_stores: int = 15) -> pd.DataFrame:
    """Revenue per store (rows, largest first; beyond `max_stores` summed as 'other (n)') and segment."""
    df = sales.merge(segments[["customer_id", "segment"]], on="customer_id", how="left")
    df["segment"] = df["segment"].fillna("(unassigned)")
    m = df.pivot_table(index="store", columns="segment", values="revenue", aggfunc="sum", fill_value=0.0)
    m = m.loc[m.sum(axis=1).sort_values(ascending=False, kind="mergesort").index]
    if len(m) > max_stores:
        rest = m.iloc[max_stores - 1 :]
        m = pd.concat([m.iloc[: max_stores - 1], rest.sum().to_frame(f"other ({len(rest)})").T])
    return m[m.sum().sort_values(ascending=False, kind="mergesort").index]


# ------------------------------------------------------------------------------------------------ win-back


def revenue_threshold(monetary: pd.Series, min_revenue: float | None = None, quantile: float = 0.8) -> float:
    """The revenue a customer needs to count as high-value: `min_revenue` if given, else the `quantile` of
    the quarter's customer revenue (0.8: the top 20%)."""
    if min_revenue is not None:
        return float(min_revenue)
    return float(monetary.quantile(quantile)) if len(monetary) else 0.0


VALUE_AT_RISK, REVENUE_AT_RISK = "value_at_risk", "revenue_at_risk"


def winback(
    customers: pd.DataFrame, min_days: int = 90, min_revenue: float | None = None, revenue_quantile: float = 0.8
) -> tuple[pd.DataFrame, float]:
    """Customers whose past revenue is high (monetary >= the threshold, see revenue_threshold) and who have
    not bought for at least `min_days` days (recency_days >= min_days), ranked 1..n by value at risk: the
    value expected to be lost if the customer has gone and is not won back, (1 - P(alive)) x their CLV if
    still active (customer_value's value_at_risk). A quarter without a customer-value fit (no value_at_risk)
    falls back to revenue at risk: their revenue over the look-back window. Ties: revenue, then customer id.
    `ranked_by` says which. Returns (the ranked list, the revenue threshold used)."""
    threshold = revenue_threshold(customers["monetary"], min_revenue, revenue_quantile)
    sel = customers[(customers["recency_days"] >= min_days) & (customers["monetary"] >= threshold - _EPS)].copy()
    sel["revenue_at_risk"] = sel["monetary"].astype("float64")
    for c in ("p_alive", "clv", VALUE_AT_RISK):
        sel[c] = pd.to_numeric(sel[c], errors="coerce").astype("float64") if c in sel else np.nan
    by_value = bool(len(sel)) and bool(sel[VALUE_AT_RISK].notna().all())
    sel["ranked_by"] = VALUE_AT_RISK if by_value else REVENUE_AT_RISK
    keys = ([VALUE_AT_RISK] if by_value else []) + ["revenue_at_risk", "customer_id"]
    sel = sel.sort_values(keys, ascending=[False] * (len(keys) - 1) + [True], kind="mergesort")
    sel.insert(0, "rank", np.arange(1, len(sel) + 1, dtype="int64"))
    return sel.reset_index(drop=True), threshold


# ----------------------------------------------------------------------------------------------- migration

MOVE_KINDS = ["stayed", "upgraded", "downgraded", "sideways", "new", "returning", "lapsed", "unranked"]


def classify_moves(history: pd.DataFrame, ranks: dict[str, int]) -> pd.Series:
    """Per migration row: 'new' / 'returning' (from 'new' / 'returning'), 'lapsed' (to 'lapsed'), 'stayed'
    (same segment), 'upgraded' /
    'downgraded' (to a segment of higher / lower rank), 'sideways' (another segment of equal rank),
    'unranked' (either segment has no rank, i.e. rank 0 or unknown)."""
    f, t = history["from_segment"].astype(str), history["to_segment"].astype(str)
    rf = f.map(ranks).fillna(0).astype(int)
    rt = t.map(ranks).fillna(0).astype(int)
    kind = np.select(
        [f == NEW, f == RETURNING, t == LAPSED, f == t, (rf <= 0) | (rt <= 0), rt > rf, rt < rf],
        ["new", "returning", "lapsed", "stayed", "unranked", "upgraded", "downgraded"],
        default="sideways",
    )
    return pd.Series(kind, index=history.index, name="move")


def count_moves(history: pd.DataFrame, ranks: dict[str, int]) -> dict[str, int]:
    counts = classify_moves(history, ranks).value_counts()
    return {k: int(counts.get(k, 0)) for k in MOVE_KINDS}


def transition_counts(history: pd.DataFrame, order: list[str] | None = None) -> pd.DataFrame:
    """The transition matrix: customers per (from_segment, to_segment). Segments in `order` first (default:
    alphabetical), then 'returning' and 'new' last among rows and 'lapsed' last among columns. The one
    definition of the matrix (metadata, report, plots and the CLI use it)."""
    counts = pd.crosstab(history["from_segment"], history["to_segment"])
    order = list(order or [])
    rows = [s for s in order if s in counts.index] + sorted(
        s for s in counts.index if s not in order and s not in ARRIVALS
    )
    cols = [s for s in order if s in counts.columns] + sorted(
        s for s in counts.columns if s not in order and s != LAPSED
    )
    rows += [s for s in (RETURNING, NEW) if s in counts.index]
    cols += [LAPSED] if LAPSED in counts.columns else []
    counts = counts.loc[rows, cols]
    counts.index.name, counts.columns.name = "from_segment", "to_segment"
    return counts


def biggest_moves(history: pd.DataFrame, ranks: dict[str, int], n: int = 3) -> pd.DataFrame:
    """The largest flows between two different segments (new/lapsed included), with their kind."""
    moved = history[history["from_segment"] != history["to_segment"]]
    if moved.empty:
        return pd.DataFrame(columns=["from_segment", "to_segment", "customers", "move"])
    flows = moved.groupby(["from_segment", "to_segment"], as_index=False).size().rename(columns={"size": "customers"})
    flows["move"] = classify_moves(flows, ranks)
    return (
        flows.sort_values(["customers", "from_segment", "to_segment"], ascending=[False, True, True], kind="mergesort")
        .head(n)
        .reset_index(drop=True)
    )


# ------------------------------------------------------------------------------------------ stability


@dataclass(frozen=True)
class Stability:
    """Whether the quarter's segment model was fitted, reused or refitted, why, and how much of the migration
    is customers moving rather than the model."""

    decision: str  # initial_fit / reused / refit
    reason: str
    model_version: str
    fitted_label: str  # the quarter the model in force was fitted on, e.g. 2010-Q4
    retained: int  # customers in both quarters' windows
    retained_changed: int  # of whom in another segment now
    current_silhouette: float | None
    fit_silhouette: float | None
    silhouette_drop: float | None
    max_silhouette_drop: float | None
    far_share: float | None
    max_far_share: float | None
    refit_ari: float | None
    refit_name_change_share: float | None

    @property
    def retained_changed_share(self) -> float:
        return self.retained_changed / self.retained if self.retained else 0.0

    def rows(self) -> list[tuple[str, str, str]]:
        """(figure, this quarter, threshold) for the report's table."""

        def f(x, fmt):
            return "n/a" if x is None or pd.isna(x) else format(x, fmt)

        out = [
            (
                "silhouette of the model on this quarter",
                f(self.current_silhouette, ".3f"),
                f"fit: {f(self.fit_silhouette, '.3f')}",
            ),
            (
                "silhouette drop since the fit",
                f(self.silhouette_drop, ".3f"),
                f"refit above {f(self.max_silhouette_drop, '.3f')}",
            ),
            (
                "customers far from every centroid",
                f(self.far_share, ".1%"),
                f"refit above {f(self.max_far_share, '.0%')}",
            ),
            (
                "retained customers who changed segment",
                f"{self.retained_changed_share:.1%}",
                f"{self.retained_changed:,} of {self.retained:,}",
            ),
        ]
        if self.refit_ari is not None and not pd.isna(self.refit_ari):
            out += [
                ("agreement of old and new model (adjusted Rand index)", f(self.refit_ari, ".3f"), "1 = identical"),
                ("customers renamed by the refit itself", f(self.refit_name_change_share, ".1%"), ""),
            ]
        return out


def _text(x) -> str:
    return "" if x is None or pd.isna(x) else str(x)


def _num(x):
    return None if x is None or pd.isna(x) else float(x)


def stability(chosen: dict, history: pd.DataFrame, quarter_label: str) -> Stability:
    """Stability figures of a quarter from its chosen clustering_model row and its migration rows."""
    fitted = chosen.get("fitted_quarter")
    fitted = "" if fitted is None or pd.isna(fitted) else str(fitted)  # none while waiting for history
    fitted_label = f"{fitted[:4]}-Q{(int(fitted[5:7]) - 1) // 3 + 1}" if fitted else quarter_label
    retained = history[~history["from_segment"].isin(ARRIVALS) & (history["to_segment"] != LAPSED)]
    fit_sil = chosen.get("silhouette")
    return Stability(
        decision=_text(chosen.get("decision")),
        reason=_text(chosen.get("decision_reason")),
        model_version=_text(chosen.get("model_version")),
        fitted_label=fitted_label,
        retained=len(retained),
        retained_changed=int((retained["from_segment"] != retained["to_segment"]).sum()),
        current_silhouette=_num(chosen.get("current_silhouette")),
        fit_silhouette=_num(fit_sil),
        silhouette_drop=_num(chosen.get("silhouette_drop")),
        max_silhouette_drop=_num(chosen.get("max_silhouette_drop")),
        far_share=_num(chosen.get("far_share")),
        max_far_share=_num(chosen.get("max_far_share")),
        refit_ari=_num(chosen.get("refit_ari")),
        refit_name_change_share=_num(chosen.get("refit_name_change_share")),
    )


# ---------------------------------------------------------------------------------------- k selection


def k_selection(trials: pd.DataFrame) -> pd.DataFrame:
    """The k-selection evidence of one quarter from clustering_model rows: k, inertia, silhouette, whether
    k is in the business range and whether it was chosen."""
    cols = [c for c in ["k", "inertia", "silhouette", "in_business_range", "chosen"] if c in trials.columns]
    return trials[cols].sort_values("k").reset_index(drop=True)
