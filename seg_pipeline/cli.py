"""`seg-pipeline`: run the whole segmentation in process, generate data, print the latest summary."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import faults, runtime
from .escaping import terminal as _t
from .escaping import terminal_plain

# piped output (CI logs, `| tee`) gets a fixed width wide enough for the tables instead of rich's 80 columns.
# Every value printed through it is data (paths, file names, segments, countries): it goes into the markup
# through _t (escaping.terminal: markup escaped, control characters shown as \xNN) or into a table as
# _cell (rich Text, never parsed as markup).
console = Console(highlight=False, width=None if sys.stdout.isatty() else 132)


def _cell(value) -> Text:
    """A table cell or title from data: plain text, control characters made visible."""
    return Text(terminal_plain(value))


def dagster_home_for(home: Path) -> Path:
    """The Dagster instance folder: DAGSTER_HOME if set, else <home>/dagster (what `dagster dev` is given)."""
    return Path(os.environ.get("DAGSTER_HOME") or home / "dagster")


INSTANCE_CONFIG = """\
# Written by seg_pipeline. DuckDB has one writer at a time: runs (a backfill's quarters, the schedule, a
# manual run) queue and execute one after another, in submission order.
telemetry:
  enabled: false
concurrency:
  runs:
    max_concurrent_runs: 1
"""


def write_instance_config(dagster_home: Path | None = None) -> Path:
    """Create <DAGSTER_HOME>/dagster.yaml if absent (one run at a time; no telemetry)."""
    from . import settings

    dagster_home = Path(dagster_home or dagster_home_for(settings.home_dir()))
    dagster_home.mkdir(parents=True, exist_ok=True)
    cfg = dagster_home / "dagster.yaml"
    if not cfg.exists():
        cfg.write_text(INSTANCE_CONFIG)
    return cfg


def _prepare_instance(home: Path):
    """A persistent Dagster instance, so `dagster dev` on the same home shows the CLI's runs."""
    import dagster as dg

    dagster_home = dagster_home_for(home)
    write_instance_config(dagster_home)
    return dg.DagsterInstance.from_config(str(dagster_home))


def run_pipeline(
    home: Path,
    source: str | None = None,
    mapping: str | None = None,
    quarters: str = "all",
    quiet: bool = False,
    instance=None,
    refit: bool = False,
    model_config: dict | None = None,
) -> list[str]:
    """Materialise raw and cleaned sales, then every quarterly asset for the chosen quarters (all the data
    covers, the latest, or a comma-separated list of quarter keys). Returns the quarters run. Raises
    click.ClickException with the failing step's message on failure. `instance`: a Dagster instance
    (default: the persistent one of the home). `refit`: force a refit of the segment model in every quarter
    run; `model_config`: further clustering_model run config (e.g. {"refit_every_quarters": 0})."""
    with contextlib.ExitStack() as stack:
        if instance is None:  # the home's persistent instance: created here, so closed here
            instance = _prepare_instance(home)
            stack.callback(instance.dispose)
        return _run_quarters(home, source, mapping, quarters, quiet, instance, refit, model_config)


def _run_quarters(home, source, mapping, quarters, quiet, instance, refit, model_config) -> list[str]:
    import dagster as dg

    from .definitions import ALL_ASSETS, PARTITIONED, UNPARTITIONED
    from .partitions import parse_quarter, sales_quarter_plan
    from .resources import build_resources
    from .storage import superseded_quarters, table_exists

    resources = build_resources(home, source, mapping)
    quiet_logs = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
    model_cfg = {**(model_config or {}), **({"refit": True} if refit else {})}
    quarterly_config = {**quiet_logs, **({"ops": {"clustering_model": {"config": model_cfg}}} if model_cfg else {})}

    def step(selection: list[str], partition_key: str | None, label: str):
        # a safe point: a SIGINT/SIGTERM received so far stops the run here (faults.SignalWatch)
        faults.state.check(f"before {label}")
        faults.state.where = f"during {label}"
        t0 = time.perf_counter()
        try:
            result = dg.materialize(
                ALL_ASSETS,
                selection=selection,
                partition_key=partition_key,
                resources=resources,
                instance=instance,
                run_config=quarterly_config if partition_key else quiet_logs,
                raise_on_error=False,
                tags={"seg_pipeline/launched_by": "cli"},
            )
        except Exception:
            running = _running_step(instance)
            faults.state.where = f"during {label}" + (f", step {running}" if running else "")
            raise
        _check_interrupted(result, label)
        if not result.success:
            raise click.ClickException(f"{label} failed: {_failure_message(result, home)}")
        faults.state.where = f"after {label}"
        return result, time.perf_counter() - t0

    if not quiet:
        console.print(f"[bold]seg_pipeline[/] home {_t(home)}")
    res, dt = step(UNPARTITIONED, None, "ingest and cleaning")
    _report_steps(instance, res, dt, "history", quiet)
    cleaned = _step_metadata(res, "cleaned_sales")
    if not quiet:
        console.print(_files_line(res))
        suspicious = cleaned.get("rules_rejecting_most_of_a_file")
        for line in suspicious if isinstance(suspicious, list) else []:
            console.print(f"[bold yellow]warning:[/] {_t(line)}", soft_wrap=True)

    warehouse = resources["warehouse"]
    with _connect(warehouse) as con:
        lo, hi = con.execute("SELECT min(invoice_date), max(invoice_date) FROM cleaned_sales").fetchall()[0]
        plan = sales_quarter_plan(con)
    covered = [q.key for q in plan.offered]
    if not quiet and plan.set_aside:
        console.print(f"quarters not offered: {_t(plan.set_aside_text())}", soft_wrap=True)
    if not covered:
        raise click.ClickException(
            f"the data ({lo:%Y-%m-%d} .. {hi:%Y-%m-%d}) covers no complete quarter"
            + (f" (not offered: {plan.set_aside_text()})" if plan.set_aside else "")
        )
    if quarters == "all":
        todo = covered
    elif quarters == "latest":
        # the latest quarter, preceded by any earlier quarter not segmented yet (migration needs Q-1), or
        # with any table still built from sales since replaced (storage.SUPERSEDED)
        with _connect(warehouse) as con:
            done = (
                {r[0] for r in con.execute("SELECT DISTINCT quarter FROM segment_assignments").fetchall()}
                if table_exists(con, "segment_assignments")
                else set()
            )
            done -= superseded_quarters(con)
        todo = [covered[-1]]
        for q in reversed(covered[:-1]):
            if q in done:
                break
            todo.insert(0, q)
    else:
        todo = [q.strip() for q in quarters.split(",")]
    unknown = [q for q in todo if q not in covered]
    if unknown:
        raise click.ClickException(f"quarter(s) {unknown} not covered by the data; covered: {covered}")
    stale = [q for q in cleaned.get("stale_quarters") or [] if q not in todo and q in covered]
    if not quiet:
        console.print(
            f"data {_t(f'{lo:%Y-%m-%d}')} .. {_t(f'{hi:%Y-%m-%d}')}: {len(covered)} quarters "
            f"({_t(_label(covered[0]))} .. {_t(_label(covered[-1]))}); running {len(todo)}"
        )
        if stale:
            console.print(
                f"[bold yellow]warning:[/] {_t(cleaned['late_sales'])}. Not refreshed by this run: "
                f"{', '.join(parse_quarter(q).label for q in stale)}.",
                soft_wrap=True,
            )
    for i, q in enumerate(todo, 1):
        res, dt = step(PARTITIONED, q, f"quarter {q}")
        _report_steps(instance, res, dt, f"[{i}/{len(todo)}] {_label(q)}", quiet)
    return todo


@contextlib.contextmanager
def _connect(warehouse):
    """The warehouse connection, with the lock message as a CLI error rather than a stack trace."""
    from .resources import LockedWarehouseError

    try:
        with warehouse.get_connection() as con:
            yield con
    except LockedWarehouseError as exc:
        raise click.ClickException(exc.description) from None


def _check_interrupted(result, label: str) -> None:
    """Raise faults.Interrupted if a SIGINT/SIGTERM arrived during the Dagster run just ended: the step
    Dagster interrupted (its transaction rolled back), or the whole run if it finished and published."""
    signum = faults.state.received()
    if signum is None:
        return
    interrupted = [
        ev.step_key
        for ev in result.all_events
        if ev.event_type_value == "STEP_FAILURE" and "Interrupt" in (ev.event_specific_data.error.cls_name or "")
    ]
    if interrupted:
        where = f"during {label}, step {interrupted[0]}"
    else:
        where = f"after {label}" if result.success else f"during {label}"
    raise faults.Interrupted(signum, where)


def _running_step(instance) -> str | None:
    """The step the latest run had started and not finished (for an exception out of dg.materialize)."""
    with contextlib.suppress(Exception):
        runs = instance.get_runs(limit=1)
        if not runs:
            return None
        started: list[str] = []
        for entry in instance.all_logs(runs[0].run_id):
            ev = entry.dagster_event
            if ev is None or not ev.step_key:
                continue
            if ev.event_type_value == "STEP_START":
                started.append(ev.step_key)
            elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED") and ev.step_key in started:
                started.remove(ev.step_key)
        return started[-1] if started else None
    return None


def _label(q: str) -> str:
    from .partitions import parse_quarter

    return parse_quarter(q).label


# what to say for an exception that has no message of its own (Dagster's interruption is only a class path)
_PLAIN_ERRORS = {"DagsterExecutionInterruptedError": "interrupted", "KeyboardInterrupt": "interrupted"}
# a class path in a message ("dagster._core.errors.DagsterInvariantViolationError"), not a file name
_CLASS_PATH = re.compile(
    r"(?<![\w./\\-])(?:dagster|_duckdb|duckdb|seg_pipeline|great_expectations)(?:\.\w+)*\.([A-Z]\w*)"
)


def _failure_message(result, home: Path | None = None) -> str:
    """The first failed step's own message: without exception class paths, and a full disk (however the
    step words it) as "no space left on device while writing <path>"."""
    for ev in result.all_events:
        if ev.event_type_value == "STEP_FAILURE":
            err = ev.event_specific_data.error
            while err is not None and err.cause is not None and "DagsterExecutionStepExecutionError" in err.cls_name:
                err = err.cause  # the user code's own exception
            msg = err.message.strip() if err else (ev.message or "")
            # show our message without the exception's class path ("seg_pipeline.readers.SourceError: ...")
            head, sep, rest = msg.partition(": ")
            if err is not None and sep and head.rsplit(".", 1)[-1] == err.cls_name:
                msg = rest
            elif err is not None and msg.rsplit(".", 1)[-1] == err.cls_name:  # a class path and no message
                msg = _PLAIN_ERRORS.get(err.cls_name, err.cls_name)
            msg = _CLASS_PATH.sub(r"\1", msg)
            texts, e = [], err
            while e is not None:  # the causes too: a SourceError may hide DuckDB's "No space left on device"
                texts.append(e.message)
                e = e.cause or e.context
            full = faults.no_space_message("\n".join(texts), home)
            return f"step {ev.step_key}: {full or msg}"
    return "unknown error (see the Dagster run log)"


def step_seconds(instance, run_id: str) -> dict[str, float]:
    """Wall time of every step of a run, from the run's event log (STEP_START to STEP_SUCCESS/FAILURE)."""
    start, out = {}, {}
    for entry in instance.all_logs(run_id):
        ev = entry.dagster_event
        if ev is None or not ev.step_key:
            continue
        if ev.event_type_value == "STEP_START":
            start[ev.step_key] = entry.timestamp
        elif ev.event_type_value in ("STEP_SUCCESS", "STEP_FAILURE") and ev.step_key in start:
            out[ev.step_key] = entry.timestamp - start[ev.step_key]
    return out


def _report_steps(instance, result, seconds: float, label: str, quiet: bool) -> None:
    if quiet:
        return
    durations = step_seconds(instance, result.run_id)
    parts, notices = [], []
    for mat in result.get_asset_materialization_events():
        m = mat.event_specific_data.materialization
        rows = m.metadata.get("dagster/row_count")
        name = m.asset_key.to_user_string()
        took = durations.get(mat.step_key)
        decision = m.metadata.get("decision")
        parts.append(
            (
                f"{_t(name)} {_t(f'{rows.value:,}')}" + (f" ({took:.1f}s)" if took is not None else "")
                if rows is not None
                else _t(name)
            )
            + (f" {_t(f'[model {decision.value}]')}" if decision is not None else "")
        )
        refused = m.metadata.get("model_file_refused")  # a model file not loaded: it did not match its record
        if refused is not None:
            notices.append(f"{name}: {refused.value}")
    console.print(f"{_t(f'{label:<14}')} [green]ok[/] {seconds:5.1f}s  " + " · ".join(parts))
    for n in notices:
        console.print(f"{'':<14} [yellow]warning[/] {_t(n)}")


def print_summary(home: Path, quarter: str | None = None) -> None:
    from .insights.summary import WarehouseBusy, latest_summary

    try:
        data = latest_summary(home / "warehouse.duckdb", quarter)
    except WarehouseBusy as exc:
        raise click.ClickException(str(exc)) from None
    if data is None:
        raise click.ClickException(f"no segmentation in {home}: run `seg-pipeline run` first")
    q, summary, counts, headline = data
    t = Table(title=_cell(f"Segments, {_label(q)} (as of quarter end)"), title_justify="left")
    for col in ("segment", "customers", "% customers", "% revenue", "recency (d)", "frequency", "monetary"):
        t.add_column(col, justify="left" if col == "segment" else "right", no_wrap=True)
    for r in summary.itertuples():
        t.add_row(
            *map(
                _cell,
                (
                    r.segment,
                    f"{r.customers:,}",
                    f"{r.share_customers:.1%}",
                    f"{r.share_revenue:.1%}",
                    f"{r.mean_recency_days:.0f}",
                    f"{r.mean_frequency:.1f}",
                    f"{r.mean_monetary:,.0f}",
                ),
            )
        )
    console.print(t)
    console.print("(recency, frequency, monetary: segment means over the 12-month look-back window)")
    first, *notes = headline.split("\n")  # the headline, then any note of summary.latest_summary
    console.print(f"[bold]{_t(first)}[/]")
    for note in notes:
        console.print(_t(note))
    console.print()
    console.print("[bold]Recommended actions[/]")
    for r in summary.itertuples():
        console.print(f"  {_t(r.segment)}: {_t(r.action)}")
    console.print()
    if counts is not None and not counts.empty:
        m = Table(
            title=_cell(f"Migration {_label(q)} vs previous quarter (customers; rows: from, columns: to)"),
            title_justify="left",
        )
        m.add_column(_cell("from \\ to"), no_wrap=True)
        for c in counts.columns:
            # a header word per line (names break after '-' and '/' too), so 10+ labels fit a 132-column terminal
            words = re.split(r"(?<=[-/])|\s+", str(c))
            m.add_column(Text("\n").join(_cell(w) for w in words if w), justify="right", overflow="fold")
        for idx, row in counts.iterrows():
            m.add_row(_cell(idx), *[_cell(f"{v:,}") for v in row])
        console.print(m)


class _OneLineErrors(click.Group):
    """Every command's faults as one line on stderr, never a traceback: click's own errors as click shows
    them (exit 1 or 2); an interruption (faults.Interrupted) with where it stopped (exit 128 + the signal);
    anything else with where it happened, its cause and the log file holding the full trace (exit 1)."""

    def invoke(self, ctx: click.Context):
        faults.state.where, faults.state.home, faults.state.dagster_home = "", None, None
        try:
            return super().invoke(ctx)
        except click.ClickException as exc:
            # its message names files, paths and values from the data: no control character reaches the terminal
            exc.message = terminal_plain(exc.message, keep_newlines=True)
            raise
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except faults.Interrupted as exc:
            click.echo(terminal_plain(exc.message), err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:  # SIGINT outside `run`'s watch (another command, or before it started)
            exc = faults.Interrupted(signal.SIGINT, faults.state.where or f"in seg-pipeline {ctx.invoked_subcommand}")
            click.echo(terminal_plain(exc.message), err=True)
            ctx.exit(exc.exit_code)
        except Exception as exc:
            from .ml.naming import CatalogueError

            if isinstance(exc, CatalogueError):  # segments.yaml is invalid: checked when the definitions load
                click.echo(terminal_plain(f"seg-pipeline: invalid segment catalogue: {exc}"), err=True)
                ctx.exit(1)
            where = faults.state.where or f"in seg-pipeline {ctx.invoked_subcommand}"
            line = faults.unexpected_error_line(exc, where, faults.state.home, faults.state.dagster_home)
            click.echo(terminal_plain(line), err=True)
            ctx.exit(1)


def _print_lock_wait(wait) -> None:
    click.echo(terminal_plain(f"seg-pipeline: {wait.message}"), err=True)


def _step_metadata(result, asset: str) -> dict:
    """The metadata values of `asset`'s materialisation in a run result ({} if it did not materialise)."""
    for m in result.get_asset_materialization_events():
        mat = m.event_specific_data.materialization
        if mat.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in mat.metadata.items()}
    return {}


def _files_line(result) -> str:
    """What the load read and what it ignored, from raw_transactions' metadata:
    "source: 2 file(s): 1 loaded, 1 unchanged since the last load; ignored: notes.md (not a data file type ...)"."""
    meta = next(
        (
            m.event_specific_data.materialization.metadata
            for m in result.get_asset_materialization_events()
            if m.event_specific_data.materialization.asset_key.to_user_string() == "raw_transactions"
        ),
        {},
    )
    new = meta["files_loaded_this_run"].value if "files_loaded_this_run" in meta else 0
    same = meta["files_unchanged_skipped"].value if "files_unchanged_skipped" in meta else 0
    ignored = meta.get("files_ignored")
    ignored = ignored.value if ignored is not None and isinstance(ignored.value, dict) else {}
    line = f"source: {new + same} file(s): {new} loaded, {same} unchanged since the last load"
    if ignored:
        line += "; ignored: " + ", ".join(f"{_t(name)} ({_t(why)})" for name, why in ignored.items())
    return line


def _rejected_line(home: Path) -> str | None:
    """The line "rejected 1,234 rows: cancellation 800 · missing_customer 400 · ..." from rejected_sales
    (None if the warehouse cannot be read now: another process holds it)."""
    import duckdb

    try:
        con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    except duckdb.Error:
        return None
    try:
        rows = con.execute(
            "SELECT rejection_reason, count(*) AS n FROM rejected_sales GROUP BY ALL ORDER BY n DESC, rejection_reason"
        ).fetchall()
    except duckdb.Error:
        return None
    finally:
        con.close()
    total = sum(n for _, n in rows)
    if not total:
        return "rejected 0 rows"
    return f"rejected {total:,} rows: " + " · ".join(f"{_t(reason)} {n:,}" for reason, n in rows)


@click.group(cls=_OneLineErrors)
def main() -> None:
    """Customer segmentation for retailers: Dagster assets over DuckDB, gated by data contracts."""
    # before scikit-learn loads OpenMP: its threads spin while waiting by default, which on a small shared
    # machine competes with DuckDB's threads and slows small k-means fits 10x; sleep instead
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    try:
        runtime.tune_gc()  # fewer full garbage collections (seg_pipeline/runtime.py)
    except ValueError as exc:  # SEG_PIPELINE_GC holds no known setting
        raise click.ClickException(str(exc)) from None
    import warnings

    # Dagster marks partitioned checks and self-dependent partition mappings as beta; users need not see it
    warnings.filterwarnings("ignore", message=r".* is currently in (beta|preview)")


@main.command()
@click.option(
    "--source",
    type=click.Path(dir_okay=True),
    default=None,
    help="Transactions file (.csv, .csv.gz, .parquet, .xlsx) or folder. Default: SEG_PIPELINE_SOURCE, else the generated sample.",
)
@click.option(
    "--mapping",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="YAML column mapping for exports with other column names.",
)
@click.option(
    "--home",
    type=click.Path(file_okay=False),
    default=None,
    help="Pipeline home (default SEG_PIPELINE_HOME or .seg_home).",
)
@click.option(
    "--quarters", default="all", show_default=True, help="all, latest, or comma-separated quarter keys (2011-07-01)."
)
@click.option(
    "--refit",
    is_flag=True,
    default=False,
    help="Refit the segment model in the quarters run instead of keeping it (names carry over to matching "
    "clusters). Usually with --quarters latest.",
)
def run(source, mapping, home, quarters, refit) -> None:
    """Materialise every asset for every quarter the data covers, then print the latest summary."""
    from . import settings

    # first: SIGINT/SIGTERM from here on stop the run at the next safe point (see faults.SignalWatch)
    with faults.SignalWatch() as watch, contextlib.ExitStack() as stack:
        faults.state.watch = watch
        stack.callback(setattr, faults.state, "watch", None)
        home_path = Path(home).resolve() if home else settings.home_dir()
        faults.state.home, faults.state.dagster_home = home_path, dagster_home_for(home_path)
        try:  # up front: Dagster's run history (SQLite) would otherwise fail with a long trace
            faults.check_writable(home_path, "the pipeline home")
            faults.check_writable(faults.state.dagster_home, "the Dagster folder")
        except faults.NotWritable as exc:
            raise click.ClickException(str(exc)) from None
        from . import resources

        resources.lock_wait_listeners.append(_print_lock_wait)
        stack.callback(resources.lock_wait_listeners.remove, _print_lock_wait)
        t0 = time.perf_counter()
        done = run_pipeline(home_path, source, mapping, quarters, refit=refit)
        faults.state.where = "after the last quarter was published"
        console.print(f"finished {len(done)} quarter(s) in {time.perf_counter() - t0:.1f}s")
        rejected = _rejected_line(home_path)
        if rejected:
            console.print(rejected, soft_wrap=True)
        console.print()
        print_summary(home_path, done[-1])
        # one line whatever its length: a path to copy
        console.print(f"Report: {_t(home_path / 'reports' / done[-1] / 'report.html')}", soft_wrap=True)
        watch.check("after the last quarter was published")


@main.command()
@click.option(
    "--rows", type=int, default=None, help="Approximate number of lines (default: a ~5,000-customer retailer)."
)
@click.option("--customers", type=int, default=None)
@click.option("--seed", type=int, default=42, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), required=True, help=".csv, .csv.gz, .parquet or .xlsx")
@click.option(
    "--layout",
    type=click.Choice(["online_retail_ii", "online_retail_v1"]),
    default="online_retail_ii",
    show_default=True,
    help="Column names: UCI Online Retail II, or the older UCI Online Retail (InvoiceNo, UnitPrice, CustomerID).",
)
def generate(rows, customers, seed, out, layout) -> None:
    """Write generated Online Retail II-shaped transactions."""
    from .sample_data import write_transactions

    t0 = time.perf_counter()
    path = write_transactions(out, rows=rows, n_customers=customers, seed=seed, layout=layout)
    console.print(f"wrote {_t(path)} in {time.perf_counter() - t0:.1f}s")


@main.command()
@click.option("--home", type=click.Path(file_okay=False), default=None)
@click.option("--quarter", default=None, help="Quarter key; default the latest segmented quarter.")
def summary(home, quarter) -> None:
    """Print the segment table and migration matrix of a quarter already materialised."""
    from . import settings

    faults.state.home = Path(home).resolve() if home else settings.home_dir()
    print_summary(faults.state.home, quarter)


if __name__ == "__main__":
    sys.exit(main())
