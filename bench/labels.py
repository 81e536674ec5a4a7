"""Are the labels true of their customers? Reads a pipeline home's warehouse and a segment catalogue.

    .venv/bin/python bench/labels.py [--home .seg_home] [--catalogue seg_pipeline/segments.yaml] [--out bench/labels.md]

Per quarter:
  customers       customers in segment_assignments;
  contradicted    share of customers whose own figures break a condition of their own label, with the
                  catalogue's keep_tolerance (bounds widened) and exactly. The figures are the customer's own
                  customer_features; `<feature>_ratio` = the customer's figure / the quarter's median customer's.
                  A descriptive label ("Cooling repeat mid-spend") is held to the ranges its words stand for;
  at-risk as active  customers who meet At-Risk's conditions exactly but carry a name claiming recent activity
                  (a name with a recency_days max);
  max share of a "small" name: the largest share of customers held by a name whose description says "small";
  decision        the clustering_model decision;
  model churn     share of the quarter's customers whose label from the previous quarter's saved model
                  (models/<t-1>/segment_model.joblib, .predict) differs from segment_assignments;
  refit agreement for a refit, 1 - refit_name_change_share as recorded by clustering_model;
  retained chg    share of the customers in both quarters' windows whose label changed.
And the latest quarter's migration matrix. Written to bench/labels.md (or --out).
The check is written out here on purpose (independent of seg_pipeline's own naming code).
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import yaml

from seg_pipeline.tables import chosen_model_row, load_model

ROOT = Path(__file__).resolve().parent.parent
SMALL = "largest 'small' name"
RATIO = ["monetary", "avg_order_value", "distinct_products", "frequency"]
# the words of descriptive names and the ranges they stand for (lo < value <= hi)
WORDS = {
    "Active": ("recency_days", None, 90),
    "Cooling": ("recency_days", 90, 180),
    "Lapsing": ("recency_days", 180, None),
    "one-time": ("frequency", None, 1),
    "repeat": ("frequency", 1, 3),
    "frequent": ("frequency", 3, None),
    "low-spend": ("monetary_ratio", None, 0.5),
    "mid-spend": ("monetary_ratio", 0.5, 2.0),
    "high-spend": ("monetary_ratio", 2.0, None),
}


def figures(features: pd.DataFrame) -> pd.DataFrame:
    out = features.copy()
    for f in RATIO:
        med = out[f].astype("float64").median()
        out[f"{f}_ratio"] = out[f].astype("float64") / med if med and med > 0 else np.nan
    return out


def broken(fig: pd.DataFrame, conditions: dict, tol: float) -> pd.Series:
    """Per customer: does any condition fail (a figure not there fails)?"""
    bad = pd.Series(False, index=fig.index)
    for name, b in conditions.items():
        v = fig[name].astype("float64") if name in fig else pd.Series(np.nan, index=fig.index)
        fail = v.isna()
        if b.get("min") is not None:
            fail |= v < b["min"] * (1 - tol)
        if b.get("max") is not None:
            fail |= v > b["max"] * (1 + tol)
        bad |= fail
    return bad


def descriptive_broken(fig: pd.DataFrame, label: str) -> bool | None:
    words = re.sub(r" \(\d+\)$", "", label).split()
    if not words or any(w not in WORDS for w in words):
        return None
    for w in words:
        col, lo, hi = WORDS[w]
        v = fig[col]
        if pd.isna(v) or (lo is not None and v <= lo) or (hi is not None and v > hi):
            return True
    return False


def contradicted(fig: pd.DataFrame, labels: pd.Series, catalogue: dict, tol: float) -> pd.Series:
    out = pd.Series(False, index=fig.index)
    for label, idx in labels.groupby(labels).groups.items():
        seg = catalogue.get(label)
        if seg is not None:
            out[idx] = broken(fig.loc[idx], seg.get("conditions") or {}, tol)
        else:
            out[idx] = [bool(descriptive_broken(fig.loc[i], label)) for i in idx]
    return out


def measure(home: Path, catalogue_path: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    cat = yaml.safe_load(catalogue_path.read_text())
    tol = float(cat.get("keep_tolerance", 0.25))
    catalogue = {s["name"]: s for s in cat["segments"]}
    small = [n for n, s in catalogue.items() if "small" in s.get("description", "").lower()]
    active = [n for n, s in catalogue.items() if "max" in (s.get("conditions") or {}).get("recency_days", {})]
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    rows = []
    try:
        quarters = [r[0] for r in con.execute("SELECT DISTINCT quarter FROM segment_assignments ORDER BY 1").fetchall()]
        prev = None
        for q in quarters:
            f = con.execute("SELECT * FROM customer_features WHERE quarter = ? ORDER BY customer_id", [q]).df()
            a = con.execute("SELECT * FROM segment_assignments WHERE quarter = ? ORDER BY customer_id", [q]).df()
            m = con.execute("SELECT * FROM clustering_model WHERE quarter = ? AND chosen", [q]).df()
            fig = figures(f)
            labels = a["segment"].reset_index(drop=True)
            c_tol = contradicted(fig, labels, catalogue, tol)
            c_exact = contradicted(fig, labels, catalogue, 0.0)
            at_risk = (
                ~broken(fig, catalogue["At-Risk"]["conditions"], 0.0)
                if "At-Risk" in catalogue
                else pd.Series(False, index=fig.index)
            )
            shares = labels.value_counts(normalize=True)
            churn = np.nan
            prev_row = chosen_model_row(con, prev) if prev is not None else None
            if prev_row is not None and isinstance(prev_row.get("artifact_path"), str):
                old, _ = load_model(home, prev_row)  # verified against its recorded SHA-256 first
                churn = float((np.asarray(old.predict(f)) != labels.to_numpy()).mean())
            retained = np.nan
            if prev is not None:
                pa = con.execute("SELECT customer_id, segment FROM segment_assignments WHERE quarter = ?", [prev]).df()
                both = pa.merge(a[["customer_id", "segment"]], on="customer_id", suffixes=("_p", "_n"))
                retained = float((both.segment_p != both.segment_n).mean()) if len(both) else np.nan
            decision = m.decision.iloc[0] if len(m) else "(none)"
            agree = np.nan
            if decision == "refit" and len(m) and pd.notna(m.refit_name_change_share.iloc[0]):
                agree = 1 - float(m.refit_name_change_share.iloc[0])
            rows.append(
                {
                    "quarter": q,
                    "customers": len(a),
                    "contradicted (tolerance)": float(c_tol.mean()),
                    "contradicted (exact)": float(c_exact.mean()),
                    "at-risk as active": int((at_risk & labels.isin(active)).sum()),
                    SMALL: max((float(shares.get(n, 0.0)) for n in small), default=0.0),
                    "decision": decision,
                    "model churn": churn,
                    "refit agreement": agree,
                    "retained changed": retained,
                }
            )
            prev = q
        last = quarters[-1]
        per_label = (
            pd.DataFrame({"label": labels, "contradicted": c_tol})
            .groupby("label")
            .agg(customers=("contradicted", "size"), contradicted=("contradicted", "mean"))
            .assign(share=lambda d: d.customers / d.customers.sum())
            .sort_values("customers", ascending=False)
        )
        from seg_pipeline.insights.analysis import transition_counts

        h = con.execute("SELECT from_segment, to_segment FROM segment_migration_history WHERE quarter = ?", [last]).df()
        matrix = transition_counts(h)
    finally:
        con.close()
    return pd.DataFrame(rows), per_label.reset_index(), matrix.reset_index().to_markdown(index=False), last


def main() -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--home", default=str(ROOT / ".seg_home"))
    ap.add_argument("--catalogue", default=str(ROOT / "seg_pipeline" / "segments.yaml"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "labels.md"))
    ap.add_argument("--title", default="")
    ap.add_argument("--note", default="", help="a paragraph written under the title (e.g. where the other run is)")
    args = ap.parse_args()
    t, per_label, matrix, last = measure(Path(args.home), Path(args.catalogue))
    shown = t.copy()
    for c in ("contradicted (tolerance)", "contradicted (exact)", SMALL, "model churn"):
        shown[c] = [f"{v:.1%}" if pd.notna(v) else "" for v in shown[c]]
    for c in ("refit agreement", "retained changed"):
        shown[c] = [f"{v:.1%}" if pd.notna(v) else "" for v in shown[c]]
    pl = per_label.assign(
        share=per_label["share"].map("{:.1%}".format), contradicted=per_label["contradicted"].map("{:.1%}".format)
    )
    refits = int((t.decision == "refit").sum())
    reused = t[t.decision == "reused"]["model churn"].dropna()
    agree = t["refit agreement"].dropna()
    summary = (
        f"worst quarter contradicted (tolerance): {t['contradicted (tolerance)'].max():.1%}; refits: {refits} of "
        f"{len(t)} quarters; model churn in reused quarters: max {reused.max() if len(reused) else 0:.1%}; "
        f"refit label agreement: min {agree.min() if len(agree) else float('nan'):.1%}; largest 'small' name: "
        f"{t[SMALL].max():.1%}; at-risk customers labelled as active: {int(t['at-risk as active'].sum())}"
    )
    text = (
        f"# Labels true of their customers{(' - ' + args.title) if args.title else ''}\n\n"
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M UTC} with `.venv/bin/python bench/labels.py` on "
        f"`{args.home}`.\n\n"
        + (f"{args.note}\n\n" if args.note else "")
        + f"{summary}.\n\n"
        + shown.to_markdown(index=False)
        + f"\n\nLabels of the latest quarter ({last}), share contradicted with tolerance:\n\n"
        + pl.to_markdown(index=False)
        + f"\n\nMigration matrix of the latest quarter ({last}), customers (rows: from, columns: to):\n\n"
        + matrix
        + "\n"
    )
    print(text)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
