"""Where a run's time goes, statement by statement: every SQL statement the assets send to DuckDB, timed.

    .venv/bin/python bench/profile.py bench/data/retail_10M.parquet            # ingest + cleaning
    .venv/bin/python bench/profile.py bench/data/retail_10M.parquet --quarters 2   # and the last 2 quarters

Runs the pipeline (seg_pipeline.cli.run_pipeline) in a fresh temporary home with the warehouse connection
wrapped so that each `execute` is timed, then prints the Dagster step times and the statements that took
longest (seconds, the step's share, the statement's first characters). Statements GX runs go through its
own cursors and are not listed one by one; the contract's validation_seconds (step metadata) covers them.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TIMINGS: list[tuple[str, float, str]] = []  # (step, seconds, statement)


def current_step() -> str:
    import dagster as dg

    try:
        ctx = dg.OpExecutionContext.get()
    except Exception:  # noqa: BLE001 - outside a step
        return "?"
    return ctx.op.name if ctx is not None else "?"


class TimedConnection:
    """A DuckDB connection whose execute() records its wall time; everything else is the connection's."""

    def __init__(self, con):
        self._con = con

    def execute(self, query, parameters=None):
        t0 = time.perf_counter()
        self._con.execute(query, parameters) if parameters is not None else self._con.execute(query)
        TIMINGS.append((current_step(), time.perf_counter() - t0, " ".join(str(query).split())))
        return self

    def __getattr__(self, name):
        return getattr(self._con, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._con.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("source")
    ap.add_argument("--quarters", type=int, default=0, help="also run the last N quarters (0: ingest and cleaning)")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()

    import dagster as dg

    from seg_pipeline import cli, resources
    from seg_pipeline.definitions import ALL_ASSETS, PARTITIONED, UNPARTITIONED
    from seg_pipeline.partitions import quarters_covered

    real_connect = resources.connect_waiting
    resources.connect_waiting = lambda database, config: TimedConnection(real_connect(database, config))

    home = Path(tempfile.mkdtemp(prefix="segprofile_"))
    instance = dg.DagsterInstance.ephemeral()
    res = resources.build_resources(home, args.source, "")
    quiet = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}

    def run(selection, key=None, label=""):
        r = dg.materialize(
            ALL_ASSETS, selection=selection, partition_key=key, resources=res, instance=instance, run_config=quiet
        )
        for ev in r.get_asset_check_evaluations():
            sec = ev.metadata.get("validation_seconds")
            if sec:
                TIMINGS.append(
                    (ev.asset_key.to_user_string(), 0.0, f"(GX contract, in the step's time: {sec.value:.2f}s)")
                )
        return {f"{k}{label}": v for k, v in cli.step_seconds(instance, r.run_id).items()}

    steps = run(list(UNPARTITIONED))
    if args.quarters:
        import duckdb

        con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
        lo, hi = con.execute("SELECT min(invoice_date), max(invoice_date) FROM cleaned_sales").fetchall()[0]
        con.close()
        qs = quarters_covered(lo.date(), hi.date())
        kept = list(TIMINGS)  # the earlier quarters are run untimed
        if len(qs) > args.quarters:
            earlier = ",".join(q.key for q in qs[: -args.quarters])
            cli.run_pipeline(home, source=args.source, quarters=earlier, quiet=True, instance=instance)
        TIMINGS[:] = kept
        for q in qs[-args.quarters :]:
            steps.update(run(list(PARTITIONED), q.key, f" [{q.key}]"))

    print("\nstep seconds")
    for k, v in steps.items():
        print(f"  {v:7.2f}  {k}")
    by_step = defaultdict(float)
    for step, sec, _ in TIMINGS:
        by_step[step] += sec
    print(f"\ntop {args.top} statements")
    for step, sec, q in sorted(TIMINGS, key=lambda t: -t[1])[: args.top]:
        print(f"  {sec:7.2f}  {step:<26} {q[:150]}")
    for step, _, q in TIMINGS:
        if q.startswith("(GX"):
            print(f"  {step:<26} {q}")


if __name__ == "__main__":
    main()
