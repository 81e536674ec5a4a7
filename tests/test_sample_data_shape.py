"""The default data (seg_pipeline/sample_data.py at its defaults, as `bash scripts/run.sh` writes it) is shaped
like real retail, keeps the Online Retail II quirks the cleaning rules exist for, and is the same for a seed.

The shape is measured where the product measures it: the pipeline's own cleaning and customer_features for
the latest segmented quarter, 2011-Q3 (12-month look-back to 2011-09-30). Reference: a real Online Retail II
export over the 12 months to 2011-09-30 shows Gini 0.71, top 10% of customers 60% of revenue, top 20% 74%,
5.4% of customers for half of revenue, 36.8% one-order customers, p90 spend 5.3x the median. The ranges
below are those figures +-5 points (Gini 0.69-0.74 and top 20% 72-76%: tighter). About 5 s: ingest and
clean ~420k lines, then one quarter's features.
"""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from seg_pipeline import settings
from seg_pipeline.insights.analysis import shape_figures
from seg_pipeline.partitions import quarters_covered
from seg_pipeline.sample_data import LAYOUTS, write_transactions
from tests.conftest import read_table
from tests.pipeline.helpers import ingest_and_clean, materialize

LATEST = "2011-07-01"
RANGES = {
    "gini": (0.69, 0.74),
    "top_10pct_revenue_share": (0.55, 0.65),
    "top_20pct_revenue_share": (0.72, 0.76),
    "share_customers_for_50pct_revenue": (0.004, 0.104),
    "one_order_share": (0.318, 0.418),
    "p90_to_median": (4.5, 6.0),
}


@pytest.fixture(scope="module")
def default_home(tmp_path_factory, dagster_instance):
    """A home where the pipeline generated its default data (no source given) and built 2011-Q3's features."""
    home = tmp_path_factory.mktemp("default_home")
    ingest_and_clean(home, "", dagster_instance)
    materialize(home, "", ["customer_features"], dagster_instance, partition_key=LATEST)
    return home


@pytest.fixture(scope="module")
def raw(default_home) -> pd.DataFrame:
    return pd.read_csv(settings.default_sample_path(default_home), dtype=str, keep_default_na=False)


def test_latest_quarter_is_shaped_like_real_retail(default_home):
    f = read_table(default_home, "SELECT monetary, frequency FROM customer_features WHERE quarter = ?", [LATEST])
    figures = shape_figures(f["monetary"], f["frequency"])
    outside = {k: round(figures[k], 4) for k, (lo, hi) in RANGES.items() if not lo <= figures[k] <= hi}
    assert outside == {}, f"outside the real-retail ranges {RANGES}: {outside}"
    assert 3000 <= figures["customers"] <= 3700  # 5,000 customers over two years, ~2/3 active in a year


def test_default_size_and_date_range_are_kept(raw):
    assert 400_000 <= len(raw) <= 440_000
    assert raw.loc[raw["Customer ID"] != "", "Customer ID"].nunique() == 5000
    days = pd.to_datetime(raw["InvoiceDate"]).dt.date
    assert days.min() == date(2009, 12, 1) and days.max() <= date(2011, 12, 9)
    assert len(quarters_covered(days.min(), days.max())) == 8


def test_quirks_are_still_there(raw, default_home):
    code = raw["StockCode"]
    counts = {
        "C invoices": raw["Invoice"].str.startswith("C").sum(),
        "A invoices": raw["Invoice"].str.startswith("A").sum(),
        "missing customer": (raw["Customer ID"] == "").sum(),
        "POST": (code == "POST").sum(),
        "DOT": (code == "DOT").sum(),
        "M": (code == "M").sum(),
        "exact duplicates": raw.duplicated().sum(),
        "zero price": (raw["Price"].astype(float) == 0).sum(),
        "'nan' description": (raw["Description"] == "nan").sum(),
        "empty description": (raw["Description"] == "").sum(),
    }
    assert {k: v for k, v in counts.items() if v == 0} == {}
    rejected = read_table(default_home, "SELECT rejection_reason, count(*) AS n FROM rejected_sales GROUP BY 1")
    assert set(rejected["rejection_reason"]) == {
        "cancellation",
        "adjustment",
        "non_product_code",
        "non_positive_quantity",
        "non_positive_price",
        "missing_customer",
        "duplicate_line",
    }


def test_same_seed_same_file_other_seed_other_file(tmp_path):
    a = write_transactions(tmp_path / "a.csv", n_customers=300, seed=5).read_bytes()
    b = write_transactions(tmp_path / "b.csv", n_customers=300, seed=5).read_bytes()
    c = write_transactions(tmp_path / "c.csv", n_customers=300, seed=6).read_bytes()
    assert a == b and a != c


def test_older_uci_layout_names_the_columns_and_keeps_every_value(tmp_path):
    ii = write_transactions(tmp_path / "ii.csv", n_customers=300, seed=5).read_text().splitlines()
    v1 = write_transactions(tmp_path / "v1.csv", n_customers=300, seed=5, layout="online_retail_v1")
    v1 = v1.read_text().splitlines()
    assert v1[0] == "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country"
    assert ii[0] == "Invoice,StockCode,Description,Quantity,InvoiceDate,Price,Customer ID,Country"
    assert v1[1:] == ii[1:] and len(v1) > 10_000
    pq_ii = pd.read_parquet(write_transactions(tmp_path / "ii.parquet", n_customers=300, seed=5))
    pq_v1 = pd.read_parquet(
        write_transactions(tmp_path / "v1.parquet", n_customers=300, seed=5, layout="online_retail_v1")
    )
    assert list(pq_v1.columns) == LAYOUTS["online_retail_v1"]
    pd.testing.assert_frame_equal(pq_v1.set_axis(list(pq_ii.columns), axis=1), pq_ii)


def test_unknown_layout_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match=r"^unknown layout 'uci3' \(use online_retail_ii or online_retail_v1\)$"):
        write_transactions(tmp_path / "x.csv", n_customers=50, layout="uci3")
    assert list(tmp_path.iterdir()) == []


def test_cli_generate_offers_the_generator_layouts(tmp_path):
    from click.testing import CliRunner

    from seg_pipeline.cli import generate, main

    choices = next(p for p in generate.params if p.name == "layout").type.choices
    assert list(choices) == list(LAYOUTS)
    out = tmp_path / "old.csv"
    args = ["generate", "--customers", "60", "--seed", "3", "--layout", "online_retail_v1", "--out", str(out)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0] == ",".join(LAYOUTS["online_retail_v1"])
