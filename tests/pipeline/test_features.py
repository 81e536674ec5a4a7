"""customer_features: exact values on a hand-made dataset, and no look-ahead on the shared full run."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from seg_pipeline.partitions import parse_quarter
from tests.conftest import read_table
from tests.pipeline.helpers import ingest_and_clean, materialize, write_uci_csv

QUARTER = "2011-07-01"  # as of 2011-09-30; 12-month window from 2010-10-01 00:00 to 2011-10-01 00:00 (excl.)
UK, FR, DE, ES = "United Kingdom", "France", "Germany", "Spain"


def line(invoice, code, qty, ts, price, customer, country=UK):
    return [invoice, code, f"desc {code}", str(qty), ts, str(price), customer, country]


ROWS = [
    # A: three invoices in the window; the last at 23:59 on the as-of date itself counts
    line("500001", "P1", 2, "2011-03-15 10:00:00", 5.0, "10001.0"),
    line("500001", "P2", 1, "2011-03-15 10:00:00", 20.0, "10001.0"),
    line("500002", "P1", 4, "2011-06-01 09:30:00", 5.0, "10001.0"),
    line("500003", "P3", 10, "2011-09-30 23:59:00", 1.5, "10001.0"),
    # B: a single invoice of two lines
    line("500004", "P4", 3, "2011-08-20 14:00:00", 4.0, "10002.0", FR),
    line("500004", "P5", 1, "2011-08-20 14:00:00", 8.0, "10002.0", FR),
    # C: one purchase in the window; a big one at 2011-10-01 00:00, just after the as-of date: ignored
    line("500005", "P1", 1, "2011-05-05 12:00:00", 5.0, "10003.0"),
    line("500006", "P2", 100, "2011-10-01 00:00:00", 20.0, "10003.0", DE),
    # D: a big purchase one hour before the window (tenure only), one exactly at the window start
    line("500007", "P5", 100, "2010-09-30 23:00:00", 8.0, "10004.0", ES),
    line("500008", "P3", 2, "2010-10-01 00:00:00", 1.5, "10004.0", DE),
    line("500009", "P4", 5, "2011-02-10 08:00:00", 4.0, "10004.0", FR),
    line("500009", "P3", 2, "2011-02-10 08:00:00", 1.5, "10004.0", FR),
    # E: buys only after the as-of date: not a customer of this quarter
    line("500010", "P1", 1, "2011-11-15 10:00:00", 5.0, "10005.0"),
    # F: bought only before the window: not active in this quarter's window
    line("500011", "P1", 1, "2010-06-15 10:00:00", 5.0, "10006.0"),
    # rejected lines of A never count: a cancellation and a zero-price line
    line("C500012", "P1", -2, "2011-04-01 10:00:00", 5.0, "10001.0"),
    line("500013", "P6", 1, "2011-04-02 10:00:00", 0.0, "10001.0"),
]

# computed by hand from the rows above (days between calendar dates)
EXPECTED = pd.DataFrame(
    [
        # customer, recency, frequency, monetary, aov, distinct, span, tenure, main_country
        ("10001", 0, 3, 65.0, 65.0 / 3, 3, 199, 199, UK),
        ("10002", 41, 1, 20.0, 20.0, 2, 0, 41, FR),
        ("10003", 148, 1, 5.0, 5.0, 1, 0, 148, UK),
        ("10004", 232, 2, 26.0, 13.0, 2, 132, 365, FR),
    ],
    columns=[
        "customer_id",
        "recency_days",
        "frequency",
        "monetary",
        "avg_order_value",
        "distinct_products",
        "purchase_span_days",
        "tenure_days",
        "main_country",
    ],
)


@pytest.fixture(scope="module")
def features_home(tmp_path_factory, dagster_instance):
    d = tmp_path_factory.mktemp("features")
    src = write_uci_csv(d / "features.csv", ROWS)
    home = d / "home"
    ingest_and_clean(home, src, dagster_instance)
    materialize(home, src, ["customer_features"], dagster_instance, partition_key=QUARTER)
    return home


def test_window_parameters_of_the_quarter():
    q = parse_quarter(QUARTER)
    assert q.as_of_date == date(2011, 9, 30)
    assert q.end == date(2011, 10, 1)
    assert q.window_start(12) == date(2010, 10, 1)


def test_exact_features_on_hand_made_data(features_home):
    got = read_table(
        features_home,
        "SELECT customer_id, recency_days, frequency, monetary, avg_order_value, distinct_products, "
        "purchase_span_days, tenure_days, main_country FROM customer_features WHERE quarter = ? ORDER BY customer_id",
        [QUARTER],
    )
    for c in ("recency_days", "frequency", "distinct_products", "purchase_span_days", "tenure_days"):
        got[c] = got[c].astype("int64")
    pd.testing.assert_frame_equal(got, EXPECTED, check_exact=False, rtol=1e-12)


def test_as_of_and_window_columns(features_home):
    got = read_table(
        features_home,
        "SELECT customer_id, as_of_date, first_purchase, last_purchase, quarter FROM customer_features ORDER BY 1",
    )
    assert set(got.quarter) == {QUARTER}
    assert set(pd.to_datetime(got.as_of_date).dt.date) == {date(2011, 9, 30)}
    first = dict(zip(got.customer_id, pd.to_datetime(got.first_purchase)))
    last = dict(zip(got.customer_id, pd.to_datetime(got.last_purchase)))
    assert first["10004"] == pd.Timestamp("2010-10-01 00:00:00")  # the window start is inclusive
    assert last["10001"] == pd.Timestamp("2011-09-30 23:59:00")  # the whole as-of day counts
    assert last["10003"] == pd.Timestamp("2011-05-05 12:00:00")  # 2011-10-01 00:00 is after the as-of date


# ---------------------------------------------------------------------------------------------------------
# No look-ahead, on the shared full run
# ---------------------------------------------------------------------------------------------------------


def test_no_transaction_after_the_as_of_date_is_used(full_run):
    home, quarters = full_run
    got = read_table(
        home,
        "SELECT quarter, max(last_purchase) AS last, min(first_purchase) AS first, any_value(as_of_date) AS as_of, "
        "count(DISTINCT as_of_date) AS n_as_of, min(recency_days) AS min_recency "
        "FROM customer_features GROUP BY quarter ORDER BY quarter",
    )
    assert got.quarter.tolist() == quarters
    for r in got.itertuples():
        q = parse_quarter(r.quarter)
        assert r.n_as_of == 1 and pd.Timestamp(r.as_of).date() == q.as_of_date
        assert pd.Timestamp(r.last) < pd.Timestamp(q.end), r.quarter
        assert pd.Timestamp(r.first) >= pd.Timestamp(q.window_start(12)), r.quarter
        assert r.min_recency >= 0


def _independent_features(sales: pd.DataFrame, quarter: str) -> pd.DataFrame:
    q = parse_quarter(quarter)
    end, start = pd.Timestamp(q.end), pd.Timestamp(q.window_start(12))
    hist = sales[sales.invoice_date < end]
    win = hist[hist.invoice_date >= start]
    g = win.groupby("customer_id")
    out = pd.DataFrame(
        {
            "frequency": g.invoice.nunique(),
            "monetary": g.line_revenue.sum(),
            "distinct_products": g.stock_code.nunique(),
            "recency_days": (pd.Timestamp(q.as_of_date) - g.invoice_date.max().dt.normalize()).dt.days,
            "purchase_span_days": (g.invoice_date.max().dt.normalize() - g.invoice_date.min().dt.normalize()).dt.days,
        }
    )
    first_ever = hist.groupby("customer_id").invoice_date.min().dt.normalize()
    out["tenure_days"] = (pd.Timestamp(q.as_of_date) - first_ever.loc[out.index]).dt.days
    return out.sort_index()


@pytest.mark.parametrize("position", [0, 3, -1])
def test_features_match_an_independent_computation(full_run, position):
    home, quarters = full_run
    quarter = quarters[position]
    sales = read_table(home, "SELECT customer_id, invoice, invoice_date, stock_code, line_revenue FROM cleaned_sales")
    expected = _independent_features(sales, quarter)
    got = read_table(
        home,
        "SELECT customer_id, frequency, monetary, distinct_products, recency_days, purchase_span_days, tenure_days "
        "FROM customer_features WHERE quarter = ? ORDER BY customer_id",
        [quarter],
    ).set_index("customer_id")
    assert got.index.tolist() == expected.index.tolist()
    for c in ("frequency", "distinct_products", "recency_days", "purchase_span_days", "tenure_days"):
        assert (got[c].astype("int64") == expected[c].astype("int64")).all(), c
    assert got.monetary.to_numpy() == pytest.approx(expected.monetary.to_numpy(), rel=1e-9)


def test_one_customer_monetary_from_cleaned_sales(full_run):
    home, quarters = full_run
    quarter = quarters[-1]
    q = parse_quarter(quarter)
    top = read_table(
        home,
        "SELECT customer_id, monetary, frequency FROM customer_features WHERE quarter = ? "
        "ORDER BY frequency DESC, customer_id LIMIT 1",
        [quarter],
    ).iloc[0]
    recomputed = read_table(
        home,
        "SELECT sum(line_revenue) AS monetary, count(DISTINCT invoice) AS frequency FROM cleaned_sales "
        "WHERE customer_id = ? AND invoice_date >= ? AND invoice_date < ?",
        [top.customer_id, q.window_start(12), q.end],
    ).iloc[0]
    assert top.frequency > 1
    assert recomputed.monetary == pytest.approx(top.monetary, rel=1e-12)
    assert recomputed.frequency == top.frequency
    # the same customer's lines after the as-of date exist in cleaned_sales but are not counted
    later = read_table(home, "SELECT count(*) AS n FROM cleaned_sales WHERE invoice_date >= ?", [q.end]).n.iloc[0]
    assert later > 0
