"""The latest quarter's segment table and migration matrix, read from the warehouse (read-only)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd

from ..ml.naming import segment_names
from .analysis import headline_of, transition_counts


class WarehouseBusy(RuntimeError):
    pass


def latest_summary(database: Path, quarter: str | None = None):
    """(quarter, segment summary, migration counts, headline) or None if nothing is segmented yet."""
    if not Path(database).exists():
        return None
    try:
        con = duckdb.connect(str(database), read_only=True)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        raise WarehouseBusy(
            f"The warehouse {database} is in use by another process (a run is writing to it): "
            "try again when it has finished."
        ) from None
    try:
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
        if "segment_summary" not in tables:
            return None
        if quarter is None:
            quarter = con.execute("SELECT max(quarter) FROM segment_summary").fetchall()[0][0]
        summary = con.execute(
            "SELECT * FROM segment_summary WHERE quarter = ? ORDER BY share_revenue DESC", [quarter]
        ).df()
        if summary.empty:
            return None
        headline = headline_of(summary)
        hist = None
        if "segment_migration_history" in tables:
            hist = con.execute(
                "SELECT from_segment, to_segment FROM segment_migration_history WHERE quarter = ?", [quarter]
            ).df()
        summary, hist = fold_descriptive(summary, hist)
        counts = transition_counts(hist, list(summary["segment"])) if hist is not None and not hist.empty else None
        pending = _uncleaned_files(con, tables)
        if pending:
            headline += (
                f"\nNote: raw_transactions holds {', '.join(pending)}, which has not passed cleaning yet: these "
                "segments are of the sales published before it (see the last run's error)."
            )
        if (
            "_superseded_quarters" in tables
            and con.execute("SELECT count(*) FROM _superseded_quarters WHERE quarter = ?", [quarter]).fetchall()[0][0]
        ):
            headline += (
                f"\nNote: {quarter} was built from sales since replaced (a source file removed or replaced, another "
                "source or mapping) and is kept as published until `seg-pipeline run` rebuilds it."
            )
        return quarter, summary, counts, headline
    finally:
        con.close()


OTHER = "Other"
_MEANS = ("mean_recency_days", "mean_frequency", "mean_monetary")


def fold_descriptive(summary: pd.DataFrame, history: pd.DataFrame | None):
    """For the terminal: the descriptive labels (names not in the catalogue, given to the few customers no
    catalogue name fits, e.g. "Cooling repeat low-spend") folded into one row `OTHER`, and into one row and
    column of the migration history, so the summary stays readable on a terminal. Customers, shares and
    revenue are summed, the means weighted by customers. The tables, the report and the CSV files keep
    every label; with one descriptive label or none, nothing is folded."""
    names = set(segment_names())
    other = [s for s in summary["segment"] if s not in names]
    if len(other) < 2:
        return summary, history
    part = summary[summary["segment"].isin(other)]
    w = part["customers"].astype("float64")
    row = {
        "segment": f"{OTHER} ({len(other)})",
        "customers": int(w.sum()),
        "share_customers": float(part["share_customers"].sum()),
        "share_revenue": float(part["share_revenue"].sum()),
        "action": "No catalogue action: each of these small groups is in the report and cluster_profiles.csv.",
        **{m: float((part[m] * w).sum() / w.sum()) for m in _MEANS},
    }
    folded = pd.concat([summary[~summary["segment"].isin(other)], pd.DataFrame([row])], ignore_index=True).sort_values(
        "share_revenue", ascending=False, kind="mergesort"
    )
    if history is not None:
        history = history.replace({"from_segment": dict.fromkeys(other, row["segment"])}).replace(
            {"to_segment": dict.fromkeys(other, row["segment"])}
        )
    return folded.reset_index(drop=True), history


def _uncleaned_files(con, tables: set[str]) -> list[str]:
    """Source files loaded into raw_transactions since cleaned_sales was last published (a new source whose
    cleaning failed): the segments shown are then of the sales before it."""
    if not {"raw_transactions", "_pipeline_state"} <= tables:
        return []
    state = con.execute("SELECT fingerprint FROM _pipeline_state WHERE step = 'cleaned_sales'").fetchall()
    done = set(filter(None, (state[0][0] if state else "").rpartition("|")[0].split(",")))
    loads = con.execute(
        "SELECT _source_file, _source_sha256, min(_loaded_at) FROM raw_transactions GROUP BY 1, 2 ORDER BY 1"
    ).fetchall()
    return [f for f, sha, at in loads if f"{sha}@{at:%Y%m%dT%H%M%S%f}" not in done]
