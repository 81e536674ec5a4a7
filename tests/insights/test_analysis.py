"""The insight figures against hand-computed examples (seg_pipeline/insights/analysis.py).

Worked example used throughout: five customers with revenue 100, 50, 25, 15 and 10 (total 200).
- Gini: sorted ascending 10, 15, 25, 50, 100; sum(i * x_i) = 10 + 30 + 75 + 200 + 500 = 815;
  G = 2 * 815 / (5 * 200) - 6 / 5 = 1.63 - 1.20 = 0.43. Cross-check with the mean absolute difference:
  the 10 unordered pair differences sum to 430, G = 2 * 430 / (2 * 5^2 * 40) = 0.43.
- Top 10% of customers = ceil(0.5) = 1 customer = 100 / 200 = 50%; top 20% = ceil(1.0) = 1 customer = 50%.
- 50% of revenue: the largest customer alone (100 = 50%) -> 1 customer = 20% of customers.
- 80% of revenue: 100 + 50 = 75% is not enough, + 25 = 87.5% -> 3 customers = 60% of customers.
- Lorenz points: (0, 0), (.2, .05), (.4, .125), (.6, .25), (.8, .5), (1, 1).
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd
import pytest

from seg_pipeline.insights import analysis as A

REVENUE = [100, 50, 25, 15, 10]


# ------------------------------------------------------------------------------------------ concentration


def test_concentration_of_the_worked_example():
    c = A.concentration(REVENUE)
    assert c.customers == 5 and c.revenue == 200
    assert c.gini == pytest.approx(0.43)
    assert c.top_10pct_share == pytest.approx(0.5)
    assert c.top_20pct_share == pytest.approx(0.5)
    assert c.customers_for_50pct == 1 and c.share_customers_for_50pct == pytest.approx(0.2)
    assert c.customers_for_80pct == 3 and c.share_customers_for_80pct == pytest.approx(0.6)
    assert c.lorenz["share_customers"].tolist() == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert c.lorenz["share_revenue"].tolist() == pytest.approx([0, 0.05, 0.125, 0.25, 0.5, 1.0])


def test_order_of_the_input_does_not_matter():
    assert A.concentration(REVENUE[::-1]).as_dict() == A.concentration(sorted(REVENUE)).as_dict()


def test_gini_equals_one_minus_twice_the_area_under_the_lorenz_curve():
    c = A.concentration(REVENUE)
    x, y = c.lorenz["share_customers"].to_numpy(), c.lorenz["share_revenue"].to_numpy()
    area = float(((y[1:] + y[:-1]) / 2 * (x[1:] - x[:-1])).sum())  # trapezoids: 0.285 by hand
    assert area == pytest.approx(0.285)
    assert c.gini == pytest.approx(1 - 2 * area)


def test_ten_customers_1_to_10():
    # revenue 1..10, total 55: top 10% = 1 customer (10), top 20% = 2 customers (10 + 9);
    # Gini = 2 * sum(i^2) / (10 * 55) - 11/10 = 770 / 550 - 1.1 = 0.3
    # 50% of 55 = 27.5: 10 + 9 + 8 = 27 < 27.5, + 7 = 34 -> 4 customers; 80% = 44: 10+9+8+7+6 = 40, +5 = 45 -> 6
    c = A.concentration(range(1, 11))
    assert c.gini == pytest.approx(0.3)
    assert c.top_10pct_share == pytest.approx(10 / 55)
    assert c.top_20pct_share == pytest.approx(19 / 55)
    assert (c.customers_for_50pct, c.customers_for_80pct) == (4, 6)


def test_gini_extremes():
    assert A.gini([7, 7, 7, 7]) == pytest.approx(0.0)
    assert A.gini([0, 0, 0, 100]) == pytest.approx(0.75)  # (n - 1) / n: one customer has everything
    assert A.customers_for_share([0, 0, 0, 100], 0.8) == 1


def test_concentration_refuses_empty_or_negative_revenue():
    with pytest.raises(ValueError):
        A.concentration([])
    with pytest.raises(ValueError):
        A.concentration([10, -1])


def test_shape_figures_of_the_worked_example():
    # frequency 5, 2, 1, 1, 3: two of five customers placed one order; p90 of 10, 15, 25, 50, 100 (linear):
    # position 0.9 x 4 = 3.6 -> 50 + 0.6 x 50 = 80, median 25 -> 80 / 25 = 3.2
    f = A.shape_figures(pd.Series(REVENUE), pd.Series([5, 2, 1, 1, 3]))
    assert f == pytest.approx(
        {
            "customers": 5,
            "gini": 0.43,
            "top_10pct_revenue_share": 0.5,
            "top_20pct_revenue_share": 0.5,
            "share_customers_for_50pct_revenue": 0.2,
            "one_order_share": 0.4,
            "p90_to_median": 3.2,
        }
    )


def test_shape_figures_refuses_negative_revenue():
    with pytest.raises(ValueError):
        A.shape_figures(pd.Series([10.0, -1.0]), pd.Series([1, 1]))


def _customers() -> pd.DataFrame:
    """Five customers in two segments: 'High-Value Loyal' = the 100 and 50 customers, 'Dormant' the rest."""
    return pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d", "e"],
            "cluster": [0, 0, 1, 1, 1],
            "segment": ["High-Value Loyal", "High-Value Loyal", "Dormant", "Dormant", "Dormant"],
            "monetary": [100.0, 50.0, 25.0, 15.0, 10.0],
            "recency_days": [10, 30, 200, 250, 300],
            "frequency": [6, 3, 1, 1, 2],
            "avg_order_value": [100 / 6, 50 / 3, 25.0, 15.0, 5.0],
            "distinct_products": [20, 10, 2, 3, 1],
        }
    )


def test_segment_profile_and_headline():
    p = A.segment_profile(_customers())
    assert p["segment"].tolist() == ["High-Value Loyal", "Dormant"]  # largest revenue first
    top, low = p.iloc[0], p.iloc[1]
    assert (top.customers, top.revenue) == (2, 150.0)
    assert top.share_customers == pytest.approx(0.4) and top.share_revenue == pytest.approx(0.75)
    assert top.mean_recency_days == pytest.approx(20) and top.median_monetary == pytest.approx(75)
    assert low.median_recency_days == pytest.approx(250) and low.mean_frequency == pytest.approx(4 / 3)
    assert low.median_distinct_products == pytest.approx(2)
    assert p["share_customers"].sum() == pytest.approx(1) and p["share_revenue"].sum() == pytest.approx(1)
    assert top.action.startswith("Protect margin") and top["rank"] > low["rank"] > 0
    assert A.headline_of(p) == "40.0% of customers generate 75.0% of revenue: the 2 High-Value Loyal customers."


# ----------------------------------------------------------------------------------------------- stores


def _store(name: str, revenues: list[float], prefix: str) -> pd.DataFrame:
    return pd.DataFrame(
        {"store": name, "customer_id": [f"{prefix}{i}" for i in range(len(revenues))], "revenue": revenues}
    )


def test_store_with_one_dominant_customer_is_flagged_and_a_balanced_store_is_not():
    sales = pd.concat(
        [
            # 30 customers: one buys 1,000, 29 buy 10 each -> 1,290; top 10 = 1,000 + 9 x 10 = 1,090
            _store("Dominant", [1000.0] + [10.0] * 29, "d"),
            # 40 customers of 25 each -> 1,000; top 10 = 250
            _store("Balanced", [25.0] * 40, "b"),
            # 5 customers: its top 10 are all of them (share 1), but too few customers to judge
            _store("Tiny", [5.0, 4.0, 3.0, 2.0, 1.0], "t"),
        ]
    )
    r = A.store_risk(sales, threshold_top10_share=0.5, min_customers=30).set_index("store")
    d, b, t = r.loc["Dominant"], r.loc["Balanced"], r.loc["Tiny"]
    assert d.customers == 30 and d.revenue == pytest.approx(1290)
    assert d.top10_revenue_share == pytest.approx(1090 / 1290)
    assert d.top10pct_customers == 3 and d.top10pct_revenue_share == pytest.approx(1020 / 1290)
    assert d.largest_customer_share == pytest.approx(1000 / 1290)
    assert bool(d.flagged) and bool(d.assessed)
    assert b.top10_revenue_share == pytest.approx(0.25) and b.top10pct_customers == 4
    assert b.top10pct_revenue_share == pytest.approx(0.1)
    assert not bool(b.flagged) and bool(b.assessed)
    assert t.top10_revenue_share == pytest.approx(1.0)
    assert not bool(t.assessed) and not bool(t.flagged)
    assert r["share_of_total_revenue"].sum() == pytest.approx(1)
    assert r.index.tolist() == ["Dominant", "Balanced", "Tiny"]  # by revenue


def test_store_threshold_is_configurable_and_strict():
    sales = _store("S", [25.0] * 40, "s")  # top 10 share exactly 0.25
    assert not A.store_risk(sales, threshold_top10_share=0.25, min_customers=1)["flagged"].iloc[0]
    assert A.store_risk(sales, threshold_top10_share=0.24, min_customers=1)["flagged"].iloc[0]
    assert not A.store_risk(sales, threshold_top10_share=0.24, min_customers=41)["flagged"].iloc[0]


def test_store_lines_of_one_customer_are_summed_and_segment_mix_is_reported():
    sales = pd.DataFrame(
        {"store": ["X", "X", "X", "Y"], "customer_id": ["a", "a", "b", "a"], "revenue": [60.0, 20.0, 20.0, 5.0]}
    )
    segs = pd.DataFrame({"customer_id": ["a", "b"], "segment": ["High-Value Loyal", "Dormant"]})
    r = A.store_risk(sales, 0.5, 1, segments=segs).set_index("store")
    assert r.loc["X", "customers"] == 2 and r.loc["X", "largest_customer_share"] == pytest.approx(0.8)
    assert r.loc["X", "segment_mix"] == "Dormant 50%, High-Value Loyal 50%"
    assert r.loc["Y", "segment_mix"] == "High-Value Loyal 100%"


def test_store_unit_is_the_store_column_when_the_source_has_one_else_the_country():
    from datetime import datetime

    from seg_pipeline.assets.insights import read_store_sales

    con = duckdb.connect()
    con.execute(
        "CREATE TABLE cleaned_sales AS SELECT * FROM (VALUES "
        "('c1', TIMESTAMP '2011-08-01', 10.0, 'UK', 'S1'), ('c1', TIMESTAMP '2011-08-02', 5.0, 'UK', 'S2'), "
        "('c2', TIMESTAMP '2011-08-03', 7.0, 'UK', NULL), ('c2', TIMESTAMP '2009-01-01', 99.0, 'UK', 'S1')"
        ") AS t(customer_id, invoice_date, line_revenue, country, store)"
    )
    window = (datetime(2010, 10, 1), datetime(2011, 10, 1))
    sales, unit = read_store_sales(con, *window)
    assert unit == "store"
    got = {(r.store, r.customer_id): r.revenue for r in sales.itertuples()}
    assert got == {("S1", "c1"): 10.0, ("S2", "c1"): 5.0, ("(unknown)", "c2"): 7.0}  # 2009 line outside the window
    con.execute("UPDATE cleaned_sales SET store = NULL")
    sales, unit = read_store_sales(con, *window)
    assert unit == "country" and sales.set_index("customer_id")["revenue"].to_dict() == {"c1": 15.0, "c2": 7.0}


# ------------------------------------------------------------------------------------------------ win-back


def _winback_customers() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": ["A", "B", "C", "D", "E", "F"],
            "segment": ["High-Value Loyal", "At-Risk", "High-Value Loyal", "Dormant", "At-Risk", "At-Risk"],
            "monetary": [5000.0, 3000.0, 8000.0, 50.0, 3000.0, 4000.0],
            "recency_days": [200, 95, 10, 300, 90, 89],
        }
    )


def test_winback_ranks_by_revenue_at_risk_and_excludes_recent_or_low_value_customers():
    wb, threshold = A.winback(_winback_customers(), min_days=90, min_revenue=1000)
    assert threshold == 1000
    # C bought 10 days ago, F 89 days ago (recent); D spent 50 (low value). B and E tie: customer id decides.
    assert wb["customer_id"].tolist() == ["A", "B", "E"]
    assert wb["rank"].tolist() == [1, 2, 3]
    assert wb["revenue_at_risk"].tolist() == [5000.0, 3000.0, 3000.0]


def test_winback_days_threshold_is_configurable():
    wb, _ = A.winback(_winback_customers(), min_days=150, min_revenue=1000)
    assert wb["customer_id"].tolist() == ["A"]
    wb, _ = A.winback(_winback_customers(), min_days=0, min_revenue=1000)
    assert wb["customer_id"].tolist() == ["C", "A", "F", "B", "E"]


def test_winback_default_threshold_is_the_revenue_quantile():
    df = pd.DataFrame(
        {"customer_id": list("vwxyz"), "monetary": [100.0, 200.0, 300.0, 400.0, 500.0], "recency_days": [100] * 5}
    )
    # 80th percentile, linear interpolation: position 0.8 x 4 = 3.2 -> 400 + 0.2 x 100 = 420
    wb, threshold = A.winback(df, min_days=90, revenue_quantile=0.8)
    assert threshold == pytest.approx(420) and wb["customer_id"].tolist() == ["z"]
    wb, threshold = A.winback(df, min_days=90, revenue_quantile=0.5)
    assert threshold == pytest.approx(300) and wb["customer_id"].tolist() == ["z", "y", "x"]


def test_winback_ranks_by_value_at_risk_when_the_quarter_has_customer_value():
    """A hand-built quarter: value at risk = (1 - P(alive)) x CLV if still active (= CLV / P(alive)). A, the
    largest past spender, is almost surely still a customer (P(alive) 0.95): little is at risk. B spent less but
    has probably gone (0.2) while being worth much if still there: B comes first."""
    df = _winback_customers()
    df["p_alive"] = [0.95, 0.2, 0.9, 0.1, 0.5, 0.6]
    df["clv"] = [4000.0, 500.0, 6000.0, 5.0, 1000.0, 900.0]
    df["value_at_risk"] = (1 - df["p_alive"]) * df["clv"] / df["p_alive"]  # A 210.5, B 2000, E 1000
    wb, _ = A.winback(df, min_days=90, min_revenue=1000)
    assert wb["customer_id"].tolist() == ["B", "E", "A"]
    assert wb["rank"].tolist() == [1, 2, 3]
    assert set(wb["ranked_by"]) == {"value_at_risk"}
    assert wb["value_at_risk"].tolist() == pytest.approx([2000.0, 1000.0, 4000 * 0.05 / 0.95])
    assert wb["revenue_at_risk"].tolist() == [3000.0, 3000.0, 5000.0]  # past revenue still shown


def test_winback_falls_back_to_revenue_at_risk_without_a_customer_value_fit():
    df = _winback_customers()
    df["p_alive"] = df["clv"] = df["value_at_risk"] = np.nan  # customer_value published NULL (insufficient data)
    wb, _ = A.winback(df, min_days=90, min_revenue=1000)
    assert wb["customer_id"].tolist() == ["A", "B", "E"]
    assert set(wb["ranked_by"]) == {"revenue_at_risk"}


def test_segment_profile_has_mean_p_alive_and_clv():
    df = pd.DataFrame(
        {
            "customer_id": list("abcd"),
            "segment": ["Top", "Top", "Low", "Low"],
            "cluster": [0, 0, 1, 1],
            "recency_days": [1, 2, 3, 4],
            "frequency": [5, 6, 1, 1],
            "monetary": [500.0, 600.0, 10.0, 20.0],
            "avg_order_value": [100.0, 100.0, 10.0, 20.0],
            "distinct_products": [3, 4, 1, 1],
            "p_alive": [0.9, 0.7, 0.2, 0.4],
            "clv": [300.0, 100.0, 1.0, 3.0],
        }
    )
    prof = A.segment_profile(df).set_index("segment")
    assert prof.loc["Top", "mean_p_alive"] == pytest.approx(0.8) and prof.loc["Low", "mean_p_alive"] == pytest.approx(
        0.3
    )
    assert prof.loc["Top", "mean_clv"] == pytest.approx(200.0) and prof.loc["Low", "total_clv"] == pytest.approx(4.0)


def test_empty_winback_list():
    wb, _ = A.winback(_winback_customers(), min_days=400, min_revenue=0)
    assert wb.empty and "rank" in wb.columns


# ----------------------------------------------------------------------------------------------- migration

RANKS = {"Top": 3, "Mid": 2, "Mid2": 2, "Low": 1, "Unranked": 0}


def test_upgrades_and_downgrades_by_rank_with_new_and_lapsed_apart():
    history = pd.DataFrame(
        [
            ("Top", "Top"),  # stayed
            ("Top", "Mid"),  # downgraded
            ("Top", "Low"),  # downgraded
            ("Low", "Top"),  # upgraded
            ("Mid", "Mid2"),  # sideways: same rank
            ("new", "Low"),  # new, whatever segment it lands in
            ("new", "Top"),
            ("Mid", "lapsed"),  # lapsed, not a downgrade
            ("Unranked", "Top"),  # no rank: neither
            ("Low", "Nonexistent"),  # unknown segment: no rank
        ],
        columns=["from_segment", "to_segment"],
    )
    assert A.classify_moves(history, RANKS).tolist() == [
        "stayed",
        "downgraded",
        "downgraded",
        "upgraded",
        "sideways",
        "new",
        "new",
        "lapsed",
        "unranked",
        "unranked",
    ]
    assert A.count_moves(history, RANKS) == {
        "stayed": 1,
        "upgraded": 1,
        "downgraded": 2,
        "sideways": 1,
        "new": 2,
        "returning": 0,
        "lapsed": 1,
        "unranked": 2,
    }


def test_catalogue_ranks_order_the_segments_by_value():
    from seg_pipeline.ml.naming import load_catalogue

    ranks = {s.name: s.rank for s in load_catalogue()}
    assert all(r > 0 for r in ranks.values())
    assert ranks["High-Value Loyal"] > ranks["Steady Mid-Value"] > ranks["At-Risk"] > ranks["Dormant"]
    moves = A.count_moves(
        pd.DataFrame({"from_segment": ["High-Value Loyal", "At-Risk"], "to_segment": ["At-Risk", "High-Value Loyal"]}),
        ranks,
    )
    assert (moves["downgraded"], moves["upgraded"]) == (1, 1)


def test_transition_counts_put_new_and_lapsed_last():
    history = pd.DataFrame({"from_segment": ["new", "B", "A", "A"], "to_segment": ["A", "lapsed", "B", "A"]})
    counts = A.transition_counts(history, order=["A", "B"])
    assert counts.index.tolist() == ["A", "B", "new"] and counts.columns.tolist() == ["A", "B", "lapsed"]
    assert counts.loc["A", "B"] == 1 and counts.loc["new", "A"] == 1 and counts.loc["B", "lapsed"] == 1
    big = A.biggest_moves(history, {"A": 2, "B": 1})
    assert set(big["move"]) == {"new", "lapsed", "downgraded"} and big["customers"].sum() == 3


def test_the_terminal_summary_folds_descriptive_labels_into_one_row_and_column():
    """Descriptive labels (not in the catalogue) are one 'Other (n)' row of the terminal summary and one row
    and column of its migration matrix: counts summed, means weighted by customers; catalogue names stay."""
    from seg_pipeline.insights.summary import fold_descriptive

    summary = pd.DataFrame(
        {
            "segment": ["High-Value Loyal", "Cooling repeat low-spend", "Active frequent low-spend"],
            "customers": [10, 3, 1],
            "share_customers": [10 / 14, 3 / 14, 1 / 14],
            "share_revenue": [0.9, 0.07, 0.03],
            "mean_recency_days": [10.0, 100.0, 20.0],
            "mean_frequency": [5.0, 2.0, 6.0],
            "mean_monetary": [900.0, 50.0, 60.0],
            "action": ["Protect margin", "No catalogue action", "No catalogue action"],
        }
    )
    history = pd.DataFrame(
        {
            "from_segment": ["new", "Cooling repeat low-spend", "Active frequent low-spend", "High-Value Loyal"],
            "to_segment": ["Active frequent low-spend", "Cooling repeat low-spend", "lapsed", "High-Value Loyal"],
        }
    )
    folded, hist = fold_descriptive(summary, history)
    assert folded["segment"].tolist() == ["High-Value Loyal", "Other (2)"]
    other = folded.iloc[1]
    assert other.customers == 4 and other.share_revenue == pytest.approx(0.10)
    assert other.mean_recency_days == pytest.approx((3 * 100 + 20) / 4)
    assert other.mean_frequency == pytest.approx((3 * 2 + 6) / 4)
    assert hist["from_segment"].tolist() == ["new", "Other (2)", "Other (2)", "High-Value Loyal"]
    assert hist["to_segment"].tolist() == ["Other (2)", "Other (2)", "lapsed", "High-Value Loyal"]
    one = summary.iloc[:2]
    assert fold_descriptive(one, history)[0] is one  # a single descriptive label is shown as it is
