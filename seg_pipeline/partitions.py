"""Quarterly partitions: the quarters the data covers (dynamic partitions), and the quarter arithmetic."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import dagster as dg

QUARTERS = "quarters"

# The quarters the loaded data covers, and no others: cleaned_sales registers them in the Dagster instance
# (sync_quarters) each time it publishes, so the UI, a backfill over "all" and the schedule see exactly those,
# from whatever year the data starts. A key is the quarter's first day (2011-07-01); its snapshot is taken at
# the quarter's last day. A quarter is covered once the data reaches its last day: the quarter in progress
# (or a last quarter the export stops inside) is not offered until it is complete.
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
