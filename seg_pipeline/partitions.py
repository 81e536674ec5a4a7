"""Quarterly partitions: a partition key is the quarter's first day; its snapshot is taken at the quarter's last day."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import dagster as dg

from .settings import first_quarter

# There is no quarterly partitions class: a time window partition on the first day of every third month.
quarterly_partitions = dg.TimeWindowPartitionsDefinition(
    cron_schedule="0 0 1 */3 *",
    start=first_quarter(),
    fmt="%Y-%m-%d",
    timezone="UTC",
)


def previous_quarters(asset: str, include_this: bool = False) -> dg.AssetDep:
    """A dependency on `asset`'s previous quarter (and, with include_this, the same quarter too). The first
    quarter of the data has no previous one: allowed."""
    return dg.AssetDep(
        asset,
        partition_mapping=dg.TimeWindowPartitionMapping(
            start_offset=-1, end_offset=0 if include_this else -1, allow_nonexistent_upstream_partitions=True
        ),
    )


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
