"""Quarters follow the data: the partitions are the quarters the loaded sales cover, from whatever year the
data starts; the quarterly refresh segments the quarter that has just ended once the data reaches it."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import click
import dagster as dg
import pandas as pd
import pytest

from seg_pipeline.cli import run_pipeline
from seg_pipeline.definitions import defs
from seg_pipeline.partitions import quarter_plan, quarterly_partitions, registered_quarters
from seg_pipeline.resources import build_resources
from seg_pipeline.sample_data import write_transactions
from seg_pipeline.schedules import TARGET_TAG
from tests.conftest import read_table, run
from tests.pipeline.helpers import ingest_and_clean, write_uci_csv

YEARS_BACK = 13  # generated data starts 2009-12-01: shifted, it starts 1996-12-01


@pytest.fixture(scope="module")
def old_source(tmp_path_factory):
    """Generated sales moved 13 years back (1996-12 .. 1998-12), as text like any export."""
    d = tmp_path_factory.mktemp("old")
    path = write_transactions(d / "gen.csv", n_customers=150, seed=11)
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    ts = pd.to_datetime(df.InvoiceDate) - pd.DateOffset(years=YEARS_BACK)
    df["InvoiceDate"] = ts.dt.strftime("%Y-%m-%d %H:%M:%S")
    out = d / "sales_1997.csv"
    df.to_csv(out, index=False)
    return out, ts.min(), ts.max()


@pytest.fixture(scope="module")
def old_run(tmp_path_factory, old_source):
    src, _, _ = old_source
    home = tmp_path_factory.mktemp("home_old")
    with dg.instance_for_test() as instance:
        done = run(home, src, instance=instance)
        yield home, done, registered_quarters(instance), instance


def test_a_source_starting_in_1997_runs_every_quarter(old_run, old_source):
    home, done, _, _ = old_run
    _, first, last = old_source
    assert first.year == 1996 and last.year == 1998
    assert done[0] == "1996-10-01" and len(done) == 8
    segmented = read_table(home, "SELECT DISTINCT quarter FROM segment_assignments ORDER BY 1").quarter.tolist()
    assert segmented == done
    history = read_table(home, "SELECT DISTINCT quarter FROM segment_migration_history ORDER BY 1").quarter.tolist()
    assert history == done


def test_partition_keys_are_exactly_the_covered_quarters(old_run):
    home, done, registered, instance = old_run
    assert registered == done  # nothing before the data, nothing after it, nothing in progress
    assert quarterly_partitions.get_partition_keys(dynamic_partitions_store=instance) == done
    lo, hi = read_table(home, "SELECT min(invoice_date) AS lo, max(invoice_date) AS hi FROM cleaned_sales").iloc[0]
    assert done[0] == f"{lo.year}-{3 * ((lo.month - 1) // 3) + 1:02d}-01"
    assert pd.Timestamp(done[-1]) + pd.DateOffset(months=3) <= hi + pd.Timedelta(days=1)


def test_the_quarterly_refresh_segments_the_quarter_that_just_ended(tmp_path, old_source):
    """The schedule's tick on 1998-10-01 asks for 1998-07-01 (ingest first); once that ingest run succeeds,
    segment_new_quarter requests the quarterly job for exactly that quarter, because the data covers it. A tick
    for a quarter the data does not reach yet ends in a skip that says so."""
    src, _, _ = old_source
    schedule = defs.resolve_schedule_def("quarterly_segmentation_schedule")
    sensor = defs.resolve_sensor_def("segment_new_quarter")
    with dg.instance_for_test() as instance:
        tick = schedule.evaluate_tick(
            dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(1998, 10, 1, tzinfo=UTC))
        )
        (request,) = tick.run_requests
        assert request.tags[TARGET_TAG] == "1998-07-01"
        job = defs.resolve_job_def("ingest_job")
        result = job.execute_in_process(
            instance=instance,
            resources=build_resources(tmp_path / "home", source=str(src), mapping=""),
            tags=request.tags,
            raise_on_error=False,
        )
        assert result.success
        success = next(e for e in result.all_events if e.event_type_value == "PIPELINE_SUCCESS")
        ctx = dg.build_run_status_sensor_context(
            sensor_name="segment_new_quarter",
            dagster_event=success,
            dagster_instance=instance,
            dagster_run=result.dagster_run,
        )
        out = sensor(ctx)
        assert isinstance(out, dg.RunRequest) and out.partition_key == "1998-07-01"

        later = job.execute_in_process(
            instance=instance,
            resources=build_resources(tmp_path / "home", source=str(src), mapping=""),
            tags={TARGET_TAG: "1999-01-01"},
            raise_on_error=False,
        )
        success = next(e for e in later.all_events if e.event_type_value == "PIPELINE_SUCCESS")
        skipped = sensor(
            dg.build_run_status_sensor_context(
                sensor_name="segment_new_quarter",
                dagster_event=success,
                dagster_instance=instance,
                dagster_run=later.dagster_run,
            )
        )
        assert isinstance(skipped, dg.SkipReason)
        assert "does not cover quarter 1999-01-01 yet (latest covered quarter: 1998-07-01)" in skipped.skip_message


# ------------------------------------------------------- where the data really is: stray rows make no quarter


def _daily(first: date, last: date, per_day: int = 100) -> dict[date, int]:
    return {first + timedelta(days=i): per_day for i in range((last - first).days + 1)}


TWO_YEARS = _daily(date(2009, 12, 1), date(2011, 12, 9))
EIGHT = ["2009-10-01", "2010-01-01", "2010-04-01", "2010-07-01", "2010-10-01", "2011-01-01", "2011-04-01", "2011-07-01"]


def test_the_quarter_plan_of_regular_data_is_the_calendar():
    plan = quarter_plan(TWO_YEARS)
    assert [q.key for q in plan.offered] == EIGHT
    assert plan.set_aside == {
        "2011-Q4": (7000, "the data stops on 2011-12-09, before the quarter's last day 2011-12-31")
    }


def test_a_stray_row_months_later_makes_no_quarter():
    plan = quarter_plan({**TWO_YEARS, date(2012, 3, 31): 1})
    assert [q.key for q in plan.offered] == EIGHT
    assert plan.set_aside == {
        "2011-Q4": (
            7000,  # 1 October .. 9 December, 100 a day
            "its last 7 days hold 0 line(s), under 25% of a typical 7 days (689): the data does not reach its end",
        ),
        "2012-Q1": (1, "under 10% of the median quarter (9,050 lines)"),
    }


def test_a_stray_row_years_earlier_makes_no_quarter():
    plan = quarter_plan({**TWO_YEARS, date(2001, 2, 3): 1})
    assert [q.key for q in plan.offered] == EIGHT
    assert plan.set_aside["2001-Q1"] == (1, "under 10% of the median quarter (9,050 lines)")


def test_one_row_on_the_last_day_does_not_complete_a_quarter():
    """The export stops on 10 September; one row dated 30 September does not make 2011-Q3 complete."""
    daily = {d: n for d, n in TWO_YEARS.items() if d <= date(2011, 9, 10)} | {date(2011, 9, 30): 1}
    plan = quarter_plan(daily)
    assert [q.key for q in plan.offered] == EIGHT[:-1]
    assert plan.set_aside == {
        "2011-Q3": (
            7201,
            "its last 7 days hold 1 line(s), under 25% of a typical 7 days (689): the data does not reach its end",
        )
    }


@pytest.fixture
def own_instance():
    """An instance of the test's own (the module's runs use instance_for_test, which the shared one must not
    outlive: sharing them broke later modules' runs)."""
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def test_a_stray_row_is_reported_and_adds_no_partition(tmp_path, old_source, own_instance):
    """The 1996-1998 sales plus one row mistyped as 1999-06-30: the partitions stay the 8 quarters of the data
    (the CLI's headline quarter is the last of them), and cleaned_sales' metadata lists what was set aside."""
    src, _, last = old_source
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    stray = df[(df["Customer ID"] != "") & ~df.Invoice.str.startswith("C")].iloc[[0]].copy()
    stray["Invoice"], stray["InvoiceDate"] = "999999", "1999-06-30 10:00:00"
    out = tmp_path / "with_stray.csv"
    pd.concat([df, stray]).to_csv(out, index=False)
    result = ingest_and_clean(tmp_path / "home", out, own_instance)
    meta = {k: v.value for k, v in result.asset_materializations_for_node("cleaned_sales")[0].metadata.items()}
    assert meta["quarter_keys"] == registered_quarters(own_instance)
    assert len(meta["quarter_keys"]) == 8 and meta["quarter_keys"][-1] == "1998-07-01"
    assert meta["quarters_set_aside"]["1999-Q2"] == {"lines": 1, "why": meta["quarters_set_aside"]["1999-Q2"]["why"]}
    assert meta["quarters_set_aside"]["1999-Q2"]["why"].startswith("under 10% of the median quarter (")
    assert meta["last_sale"] == "1999-06-30 10:00:00"


def test_the_cli_offers_no_quarter_a_stray_row_makes(tmp_path, own_instance):
    """Sales from 1 April to 21 June 2011 and one row mistyped as 5 October: by first and last date the data
    would cover 2011-Q2 and 2011-Q3 (headline 2011-Q3, a quarter without a sale). The CLI offers neither: the
    export stops inside 2011-Q2 and the stray row is set aside, and it says so."""
    start = date(2011, 4, 1)
    rows = [
        [str(550000 + i), "85123A", "WHITE HANGING HEART", "2", f"{start + timedelta(days=i // 3)} 10:00:00", "2.55",
         str(13000 + i % 40), "United Kingdom"]
        for i in range(82 * 3)
    ]  # fmt: skip
    rows.append(
        ["559999", "85123A", "WHITE HANGING HEART", "2", "2011-10-05 10:00:00", "2.55", "13001", "United Kingdom"]
    )
    src = write_uci_csv(tmp_path / "sales.csv", rows)
    with pytest.raises(click.ClickException) as err:
        run_pipeline(tmp_path / "home", source=str(src), quarters="latest", quiet=True, instance=own_instance)
    assert err.value.message == (
        "the data (2011-04-01 .. 2011-10-05) covers no complete quarter (not offered: 2011-Q2 (246 lines: its last "
        "7 days hold 0 line(s), under 25% of a typical 7 days (10): the data does not reach its end); 2011-Q4 "
        "(1 line: under 10% of the median quarter (124 lines)))"
    )
