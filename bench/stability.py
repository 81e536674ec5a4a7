"""Segment stability: how much of the migration is customers moving, and how much is the model moving.

    .venv/bin/python bench/stability.py                 # default data and a single-cohort export; writes bench/stability.md

For each data set, the pipeline runs over every quarter twice, each in a fresh home:
  kept     the product's behaviour: the segment model is fitted once and kept; refitted only on drift, the
           yearly cadence or request;
  refit    the segment model refitted every quarter (`seg-pipeline run --refit`): what the pipeline did before
           models were kept (each refit still starts from, and carries names from, the previous quarter's).
Per quarter t it reports:
  model churn   the share of t's customers whose segment name from t-1's saved model
                (models/<t-1>/segment_model.joblib, .predict) differs from segment_assignments of t: change
                that no behaviour of theirs caused;
  retained chg  the share of customers in both quarters' windows who changed segment (what migration shows);
  decision, why, the refit's adjusted Rand index and its own name-change share.
Data sets: the embedded default (5,000-customer generated retailer, 8 quarters), and a real-shaped
"single cohort" export of our own making: 2,500 customers who all first buy in January 2010, followed for 18
months with buy-till-you-die behaviour (Poisson purchases, geometric drop-out), as the CDNOW-style exports do.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def write_cohort(path: Path, n_customers: int = 2500, seed: int = 3) -> Path:
    """A single cohort in the UCI Online Retail II layout: every customer's first order in January 2010,
    later orders at a customer-specific Poisson rate until a geometric drop-out, up to 2011-06-30."""
    rng = np.random.default_rng(seed)
    start, end = pd.Timestamp("2010-01-01"), pd.Timestamp("2011-06-30 23:00")
    days = (end - start).days
    rate = np.maximum(rng.gamma(0.6, 1 / 12, n_customers), 1e-4)  # orders per day (mean ~ one every 20 days)
    p_drop = rng.beta(1.0, 3.0, n_customers)  # drop-out chance after each order
    basket = rng.lognormal(3.0, 0.8, n_customers)  # typical line value
    rows, inv = [], 500000
    for c in range(n_customers):
        t = start + pd.Timedelta(days=int(rng.integers(0, 31)), hours=int(rng.integers(8, 18)))
        while t <= end:
            inv += 1
            for _ in range(int(rng.integers(1, 6))):
                price = round(float(rng.choice([0.85, 1.25, 2.1, 2.95, 4.95, 8.5])), 2)
                qty = max(1, int(round(basket[c] * rng.lognormal(0, 0.3) / price)))
                rows.append(
                    (
                        str(inv),
                        str(20000 + int(rng.integers(0, 400))),
                        "ITEM",
                        qty,
                        t.strftime("%Y-%m-%d %H:%M:%S"),
                        price,
                        float(30000 + c),
                        "United Kingdom",
                    )
                )
            if rng.random() < p_drop[c]:
                break
            gap = rng.exponential(1 / rate[c])
            t = t + pd.Timedelta(days=min(max(1.0, gap), days + 1.0))
    df = pd.DataFrame(
        rows,
        columns=["Invoice", "StockCode", "Description", "Quantity", "InvoiceDate", "Price", "Customer ID", "Country"],
    )
    df.to_csv(path, index=False)
    return path


def stability_table(home: Path, quarters: list[str]) -> pd.DataFrame:
    import duckdb

    from seg_pipeline.tables import chosen_model_row, load_model

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        rows = []
        for prev, q in zip([None] + quarters[:-1], quarters):
            m = con.execute("SELECT * FROM clustering_model WHERE quarter = ? AND chosen", [q]).df().iloc[0]
            a = con.execute(
                "SELECT customer_id, segment FROM segment_assignments WHERE quarter = ? ORDER BY customer_id", [q]
            ).df()
            f = con.execute("SELECT * FROM customer_features WHERE quarter = ? ORDER BY customer_id", [q]).df()
            churn = retained = np.nan
            if prev is not None:
                old, _ = load_model(home, chosen_model_row(con, prev))  # verified against its SHA-256 first
                churn = float((old.predict(f) != a["segment"].to_numpy()).mean())
                pa = con.execute("SELECT customer_id, segment FROM segment_assignments WHERE quarter = ?", [prev]).df()
                both = pa.merge(a, on="customer_id", suffixes=("_p", "_n"))
                retained = float((both.segment_p != both.segment_n).mean()) if len(both) else np.nan
            rows.append(
                {
                    "quarter": q,
                    "customers": len(a),
                    "k": int(m.k),
                    "decision": m.decision,
                    "model_churn": churn,
                    "retained_changed": retained,
                    "refit_ari": m.refit_ari,
                    "refit_kept_names": (1 - m.refit_name_change_share)
                    if pd.notna(m.refit_name_change_share)
                    else np.nan,
                    "why": m.decision_reason,
                }
            )
        return pd.DataFrame(rows)
    finally:
        con.close()


def latest_matrix(home: Path, quarter: str) -> pd.DataFrame:
    import duckdb

    from seg_pipeline.insights.analysis import transition_counts

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        h = con.execute(
            "SELECT from_segment, to_segment FROM segment_migration_history WHERE quarter = ?", [quarter]
        ).df()
    finally:
        con.close()
    return transition_counts(h)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "bench" / "stability.md"))
    ap.add_argument("--datasets", default="default,cohort")
    args = ap.parse_args()

    import dagster as dg

    from seg_pipeline.cli import run_pipeline
    from seg_pipeline.sample_data import write_transactions

    work = Path(tempfile.mkdtemp(prefix="seg_stability_"))
    sources = {}
    if "default" in args.datasets:
        sources["default data (generated, 5,000 customers)"] = write_transactions(work / "default.csv")
    if "cohort" in args.datasets:
        sources["single cohort, 18 months (2,500 customers)"] = write_cohort(work / "cohort.csv")
    fmt = {"model_churn": "{:.1%}", "retained_changed": "{:.1%}", "refit_ari": "{:.3f}", "refit_kept_names": "{:.1%}"}
    out = [
        f"# Segment stability\n\nMeasured {datetime.now(UTC):%Y-%m-%d %H:%M UTC} with "
        "`.venv/bin/python bench/stability.py`.\n\n" + (__doc__.split("\n\n", 2)[2].strip()) + "\n"
    ]
    for label, src in sources.items():
        for mode in ("kept", "refit"):
            home = work / f"{Path(src).stem}_{mode}"
            with dg.DagsterInstance.ephemeral() as instance:
                quarters = run_pipeline(home, source=str(src), quiet=True, instance=instance, refit=(mode == "refit"))
            t = stability_table(home, quarters)
            shown = t.copy()
            for c, f in fmt.items():
                shown[c] = [("" if pd.isna(v) else f.format(v)) for v in shown[c]]
            churn = t["model_churn"].dropna()
            no_refit = t[(t.decision == "reused")]["model_churn"]
            summary = (
                f"model churn: median {churn.median():.1%}, max {churn.max():.1%}; refits "
                f"{int((t.decision == 'refit').sum())} of {len(t)} quarters; churn in quarters without a refit: "
                f"max {no_refit.max() if len(no_refit) else 0:.1%}"
            )
            print(f"\n== {label}, model {mode}\n{shown.drop(columns='why').to_string(index=False)}\n{summary}")
            out.append(f"\n## {label}: model {mode}\n\n{summary}.\n\n" + shown.to_markdown(index=False) + "\n")
            mat = latest_matrix(home, quarters[-1])
            out.append(
                f"\nMigration matrix of the latest quarter ({quarters[-1]}), customers (rows: from, columns: to):\n\n"
                + mat.reset_index().to_markdown(index=False)
                + "\n"
            )
    Path(args.out).write_text("".join(out))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
