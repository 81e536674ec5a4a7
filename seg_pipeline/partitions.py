"""Quarterly partitions: the quarters the data covers (dynamic partitions), and the quarter arithmetic."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import dagster as dg

QUARTERS = "quarters"

# The quarters the loaded data covers, and no others: cleaned_sales registers them in the Dagster instance
# (sync_quarters) each time it publishes, so the UI, a backfill over "all" and the schedule see exactly those,
# from whatever year the data starts. A key is the quarter's first day (2011-07-01); its snapshot is taken at
# the quarter's last day. Where the data really is decides, not its first and last dates (quarter_plan): a
# few stray rows dated far before or after the rest make no quarter, and the last quarter is offered only
# once the data, at its usual density, reaches that quarter's last weeks.
#
# Dynamic partitions cannot be mapped to their predecessor in Dagster (TimeWindowPartitionMapping needs time
# window partitions), so the reads of the previous quarter (the kept segment model, last quarter's segments)
# are not edges of the asset graph: the assets that make them say so in their descriptions, and refuse to run
# when the previous covered quarter has not been segmented yet.
quarterly_partitions = dg.DynamicPartitionsDefinition(name=QUARTERS)


def registered_quarters(instance: dg.DagsterInstance) -> list[str]:
    return list(instance.get_dynamic_partitions(QUARTERS))


def sync_quarters(instance: dg.DagsterInstance, covered: list[str]) -> tuple[list[str], list[str]]:
    """Make the registered quarters exactly `covered` (sorted keys), listed in time order. Returns the keys
    added and removed. A quarter no longer covered (the source changed) is removed; its materialisations stay
    in the run history."""
    existing = registered_quarters(instance)
    if existing == covered:
        return [], []
    removed = [k for k in existing if k not in covered]
    kept = [k for k in existing if k in covered]
    added = [k for k in covered if k not in existing]
    if kept != sorted(kept) or (kept and added and min(added) < kept[-1]):
        # an earlier quarter appears (data going further back): register all again, so the UI lists them in order
        removed, added = existing, covered
    for k in removed:
        instance.delete_dynamic_partition(QUARTERS, k)
    if added:
        instance.add_dynamic_partitions(QUARTERS, added)
    return [k for k in added if k not in existing], [k for k in removed if k not in covered]


@dataclass(frozen=True)
class Quarter:
    key: str  # "2011-07-01"
    start: date
    end: date  # exclusive: the next quarter's first day

    @property
    def as_of_date(self) -> date:
        return self.end - timedelta(days=1)

    @property
    def label(self) -> str:
        return f"{self.start.year}-Q{(self.start.month - 1) // 3 + 1}"

    def previous(self) -> Quarter:
        return quarter_of(self.start - timedelta(days=1))

    def window_start(self, lookback_months: int) -> date:
        return add_months(self.end, -lookback_months)


def add_months(d: date, months: int) -> date:
    m = d.month - 1 + months
    y = d.year + m // 12
    return date(y, m % 12 + 1, 1) if d.day == 1 else date(y, m % 12 + 1, min(d.day, 28))


def quarter_of(d: date | datetime) -> Quarter:
    start = date(d.year, 3 * ((d.month - 1) // 3) + 1, 1)
    return Quarter(key=start.isoformat(), start=start, end=add_months(start, 3))


def parse_quarter(key: str) -> Quarter:
    d = date.fromisoformat(key)
    q = quarter_of(d)
    if q.start != d:
        raise ValueError(f"{key!r} is not a quarter start (expected e.g. 2011-07-01)")
    return q


def quarters_covered(first_day: date, last_day: date) -> list[Quarter]:
    """Quarters whose snapshot date falls inside the data: from the first transaction's quarter to the
    last quarter that ended on or before the last transaction (+1 day tolerance for a last day's data)."""
    out = []
    q = quarter_of(first_day)
    while q.as_of_date <= last_day + timedelta(days=1):
        out.append(q)
        q = quarter_of(q.end)
    return out


# quarter_plan's thresholds (README, Configuration, "Quarters")
MIN_QUARTER_SHARE = 0.10  # a quarter at the data's edge with fewer lines than 10% of the median quarter: set aside
END_WINDOW_DAYS = 7  # the last week of a quarter must hold sales for it to count as reached at its end
MIN_END_DENSITY = 0.25  # ... at least 25% of the lines of a typical 7 days (the median quarter's, per day)


@dataclass(frozen=True)
class QuarterPlan:
    offered: list[Quarter]  # the quarters offered as partitions, in order
    set_aside: dict[str, tuple[int, str]] = field(default_factory=dict)  # label -> (sales lines, why)
    median_lines: float = 0.0

    def set_aside_text(self) -> str:
        return "; ".join(f"{label} ({n:,} line{'s' * (n != 1)}: {why})" for label, (n, why) in self.set_aside.items())


def quarter_plan(daily: dict[date, int]) -> QuarterPlan:
    """The quarters the sales really cover, from the sales lines per day. Calendar quarters run from the first
    sale's quarter to the last sale's; the median quarter is the median of those with sales. Then:
    - at either edge, a quarter with fewer lines than MIN_QUARTER_SHARE of the median quarter is set aside
      (a stray row dated months or years away from the rest; quarters between it and the data are empty);
    - the last quarter offered must be reached at its end: the data runs to its last day (one day's
      tolerance) and either its last END_WINDOW_DAYS days hold at least MIN_END_DENSITY of a typical such
      window or the next quarter holds a substantial share (the data goes on past it at volume). A quarter an
      export stops inside, or reaches with one row on its last day, is not offered until the data gets there.
    Quarters between the first and the last offered are all offered (a quiet quarter inside the data stays)."""
    if not daily:
        return QuarterPlan([])
    days = sorted(daily)
    first, last = days[0], days[-1]
    quarters = quarters_covered(first, quarter_of(last).as_of_date)  # every calendar quarter of the span
    lines = {q.key: 0 for q in quarters}
    tail = {q.key: 0 for q in quarters}  # lines in the quarter's last END_WINDOW_DAYS days
    for d, n in daily.items():
        q = quarter_of(d)
        lines[q.key] += n
        if d > q.as_of_date - timedelta(days=END_WINDOW_DAYS):
            tail[q.key] += n
    median = statistics.median(n for n in lines.values() if n > 0)
    substantial = {k: n >= MIN_QUARTER_SHARE * median for k, n in lines.items()}

    def end_reached(i: int) -> str | None:
        """None when quarter i is reached at its end, else why not."""
        q = quarters[i]
        if q.as_of_date > last + timedelta(days=1):
            return f"the data stops on {last.isoformat()}, before the quarter's last day {q.as_of_date.isoformat()}"
        if i + 1 < len(quarters) and substantial[quarters[i + 1].key]:
            return None
        typical = median * END_WINDOW_DAYS / ((q.end - q.start).days)
        if tail[q.key] >= MIN_END_DENSITY * typical:
            return None
        return (
            f"its last {END_WINDOW_DAYS} days hold {tail[q.key]:,} line(s), under {MIN_END_DENSITY:.0%} of a "
            f"typical {END_WINDOW_DAYS} days ({typical:,.0f}): the data does not reach its end"
        )

    lo = next((i for i, q in enumerate(quarters) if substantial[q.key]), None)
    hi = None
    why_not: dict[int, str] = {}
    for i in range(len(quarters) - 1, -1, -1):
        if lo is None or i < lo:
            break
        if not substantial[quarters[i].key]:
            continue
        reason = end_reached(i)
        if reason is None:
            hi = i
            break
        why_not[i] = reason
    offered = quarters[lo : hi + 1] if lo is not None and hi is not None else []
    kept = {q.key for q in offered}
    set_aside = {}
    for i, q in enumerate(quarters):
        if q.key in kept or lines[q.key] == 0:
            continue
        why = why_not.get(i) or (
            f"under {MIN_QUARTER_SHARE:.0%} of the median quarter ({median:,.0f} lines)"
            if not substantial[q.key]
            else "beyond the last quarter the data reaches the end of"
        )
        set_aside[q.label] = (lines[q.key], why)
    return QuarterPlan(offered, set_aside, float(median))


DAILY_SALES_SQL = "SELECT CAST(invoice_date AS DATE) AS day, count(*) AS n FROM {table} GROUP BY 1"


def sales_quarter_plan(con, table: str = "cleaned_sales") -> QuarterPlan:
    """quarter_plan over the published cleaned_sales, or over `table` holding the same columns (the staged
    sales about to be published); one aggregate query: sales lines per day."""
    return quarter_plan(dict(con.execute(DAILY_SALES_SQL.format(table=table)).fetchall()))
