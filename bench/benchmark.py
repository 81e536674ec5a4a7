"""Benchmark: the pipeline against two baselines on generated Online Retail II-shaped data.

    .venv/bin/python bench/benchmark.py --sizes 1M,10M --runs 3            # writes bench/results.md
    .venv/bin/python bench/benchmark.py --sizes 100M --runs 1 --append
    .venv/bin/python bench/benchmark.py --sizes 1M,10M --formats parquet --scenarios quarter \
        --baseline-env SEG_PIPELINE_GC=python   # each run also without the pipeline's GC settings: the ratio

Every measurement runs in a fresh subprocess (so peak RSS is that scenario's own) on the same file:
  quarter   cold start, one quarter end to end: raw_transactions + cleaned_sales + the quarterly assets of
            the latest quarter (every earlier quarter's assets are materialised in between, untimed: each
            quarter keeps the previous quarter's model, and migration needs its segments). Checks (GX contracts) included. Per-asset and per-check times.
  backfill  cold start, `seg-pipeline run`: every asset for every quarter the data covers.
  load      raw_transactions alone (read, parse, validate, publish), for comparing source formats.
  refresh   after a backfill, the quarterly refresh of the latest quarter with an unchanged source:
            ingest and cleaning are skipped (file hash and SQL unchanged), the quarter is recomputed.
  increment the source as a folder: a backfill over every quarter but the last (untimed), then the last
            quarter's sales (and any later days) arrive as a new file and the quarterly refresh runs. Only the new file is read,
            parsed, validated and cleaned (rows read this run are reported); then the new quarter.
  floor     a bare script: load the file into a DuckDB table, the same basic cleaning and customer features
            (recency, frequency, monetary, AOV, distinct products, purchase span, tenure) for the same quarter
            in one SQL query, one scikit-learn KMeans. No orchestration, checks, reports or rejected rows.
  pandas    the usual notebook approach, same cleaning and features: pandas read, boolean filters,
            drop_duplicates, groupby per invoice and per customer, sklearn.
Medians over --runs, and ratios against the baselines measured in the same invocation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / "data"
RESULTS = ROOT / "bench" / "results.md"
SIZES = {"100k": 100_000, "1M": 1_000_000, "10M": 10_000_000, "100M": 100_000_000}


def peak_rss_gib() -> float:
    """This process's peak resident set size. VmHWM, not getrusage's ru_maxrss: Linux keeps ru_maxrss across
    exec, so a worker would report its parent's peak (the driver's, after it generated a large file)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024**2
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


# ----------------------------------------------------------------------------------------------- workers
def worker_pipeline(scenario: str, source: str, home: str) -> dict:
    t_start = time.perf_counter()
    import dagster as dg

    from seg_pipeline.cli import run_pipeline, step_seconds
    from seg_pipeline.definitions import ALL_ASSETS, PARTITIONED, UNPARTITIONED
    from seg_pipeline.partitions import quarters_covered
    from seg_pipeline.resources import build_resources

    t_import = time.perf_counter() - t_start
    instance = dg.DagsterInstance.ephemeral()
    resources = build_resources(home, source, "")
    out: dict = {"import_s": t_import, "steps": {}, "checks": {}}

    def materialize(selection, partition_key=None):
        t0 = time.perf_counter()
        r = dg.materialize(
            ALL_ASSETS,
            selection=selection,
            partition_key=partition_key,
            resources=resources,
            instance=instance,
            run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
        )
        dt = time.perf_counter() - t0
        for ev in r.get_asset_check_evaluations():
            sec = ev.metadata.get("validation_seconds")
            out["checks"][ev.asset_key.to_user_string()] = sec.value if sec else None
        return dt, step_seconds(instance, r.run_id)

    partitioned = PARTITIONED
    if scenario == "quarter":
        dt_hist, steps = materialize(UNPARTITIONED)
        out["steps"].update(steps)
        import duckdb

        con = duckdb.connect(str(Path(home) / "warehouse.duckdb"), read_only=True)
        lo, hi = con.execute("SELECT min(invoice_date), max(invoice_date) FROM cleaned_sales").fetchall()[0]
        con.close()
        qs = quarters_covered(lo.date(), hi.date())
        # untimed: every earlier quarter, in order (each quarter keeps the previous quarter's model, and the
        # latest quarter's migration needs the previous quarter's segments)
        for key in [x.key for x in qs[:-1]]:
            materialize(partitioned, key)
        out["checks"] = {k: v for k, v in out["checks"].items() if k in ("raw_transactions", "cleaned_sales")}
        dt_q, steps = materialize(partitioned, qs[-1].key)
        out["steps"].update(steps)
        out["quarter"] = qs[-1].key
        out["total_s"] = dt_hist + dt_q + t_import
    elif scenario == "load":
        dt, steps = materialize(["raw_transactions"])
        out["steps"].update(steps)
        out["total_s"] = dt + t_import
    elif scenario == "backfill":
        t0 = time.perf_counter()
        qs = run_pipeline(Path(home), source=source, quiet=True, instance=instance)
        out["total_s"] = time.perf_counter() - t0 + t_import
        out["quarters"] = len(qs)
        for run in instance.get_runs():  # per asset: seconds summed over every quarter's run
            for step, sec in step_seconds(instance, run.run_id).items():
                out["steps"][step] = out["steps"].get(step, 0.0) + sec
    elif scenario == "increment":
        history, new = split_last_quarter(source, Path(home))
        folder = Path(home) / "source"
        folder.mkdir()
        history.rename(folder / history.name)
        run_pipeline(Path(home), source=str(folder), quiet=True, instance=instance)
        new.rename(folder / new.name)
        t0 = time.perf_counter()
        run_pipeline(Path(home), source=str(folder), quarters="latest", quiet=True, instance=instance)
        out["total_s"] = time.perf_counter() - t0
        for asset, key in (("raw_transactions", "rows_loaded_this_run"), ("cleaned_sales", "cleaning_mode")):
            ev = instance.get_latest_materialization_event(dg.AssetKey(asset))
            out[key] = ev.asset_materialization.metadata[key].value
        out["rows_loaded_this_run"] = int(out["rows_loaded_this_run"])
    elif scenario == "refresh":
        run_pipeline(Path(home), source=source, quiet=True, instance=instance)
        t0 = time.perf_counter()
        run_pipeline(Path(home), source=source, quarters="latest", quiet=True, instance=instance)
        out["total_s"] = time.perf_counter() - t0
    out["peak_rss_gib"] = peak_rss_gib()
    return out


def split_last_quarter(source: str, where: Path) -> tuple[Path, Path]:
    """The source as two files of its own format: every sale before the last quarter, and the last quarter."""
    import duckdb

    q, _, _ = _quarter_bounds(source)
    parquet = source.endswith(".parquet")
    reader = "read_parquet($src)" if parquet else "read_csv($src, all_varchar = true)"
    ts = "InvoiceDate" if parquet else "CAST(InvoiceDate AS TIMESTAMP)"
    fmt = "(FORMAT parquet)" if parquet else "(FORMAT csv, HEADER)"
    ext = ".parquet" if parquet else ".csv"
    out = []
    for name, cond in (("history", f"{ts} < $start"), ("last_quarter", f"{ts} >= $start")):
        path = where / f"{name}{ext}"
        duckdb.execute(
            f"COPY (SELECT * FROM {reader} WHERE {cond}) TO '{path}' {fmt}",
            {"src": source, "start": datetime.combine(q.start, datetime.min.time())},
        )
        out.append(path)
    return out[0], out[1]


def _quarter_bounds(source: str):
    """The latest complete quarter of the file, as the pipeline would choose it (for the baselines)."""
    import duckdb

    from seg_pipeline.partitions import quarters_covered

    reader = "read_parquet(?)" if source.endswith(".parquet") else "read_csv(?)"
    lo, hi = duckdb.sql(f"SELECT min(InvoiceDate), max(InvoiceDate) FROM {reader}", params=[source]).fetchall()[0]
    q = quarters_covered(lo.date(), hi.date())[-1]
    from datetime import datetime as dt
    from datetime import time as tm

    return q, dt.combine(q.end, tm()), dt.combine(q.window_start(12), tm())


# The baselines apply the same basic cleaning (customer present, no cancellation/adjustment invoice, quantity
# and price > 0, no service/fee stock code, exact duplicate lines once) and compute the same customer
# features as sql/customer_features.sql, so the three compute the same thing, differently.
NON_PRODUCT = [
    "POST",
    "DOT",
    "M",
    "D",
    "C2",
    "S",
    "B",
    "BANK CHARGES",
    "AMAZONFEE",
    "ADJUST",
    "ADJUST2",
    "PADS",
    "CRUK",
    "CARRIAGE",
    "DISCOUNT",
]
FEATURES = ["recency", "frequency", "monetary", "aov", "distinct_products", "purchase_span", "tenure"]


def worker_floor(source: str, home: str) -> dict:
    t0 = time.perf_counter()
    import duckdb
    import numpy as np
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    q, as_of_end, window_start = _quarter_bounds(source)
    con = duckdb.connect(str(Path(home) / "floor.duckdb"))
    reader = "read_parquet($src)" if source.endswith(".parquet") else "read_csv($src)"
    con.execute(f"CREATE TABLE sales AS SELECT * FROM {reader}", {"src": source})
    feats = con.execute(
        """
        WITH lines AS (
            SELECT DISTINCT "Customer ID" AS customer_id, Invoice AS invoice, StockCode AS sku, Description,
                   Quantity, InvoiceDate AS ts, Price, Country
            FROM sales
            WHERE "Customer ID" IS NOT NULL AND Quantity > 0 AND Price > 0 AND NOT starts_with(Invoice, 'C')
              AND NOT starts_with(Invoice, 'A') AND upper(StockCode) NOT IN (SELECT unnest($codes))
              AND InvoiceDate < $end
        ),
        first_seen AS (SELECT customer_id, min(ts) AS first_ever FROM lines GROUP BY ALL),
        w AS (SELECT * FROM lines WHERE ts >= $start),
        inv AS (SELECT customer_id, invoice, min(ts) ts, sum(Quantity * Price) revenue FROM w GROUP BY ALL),
        products AS (SELECT customer_id, count(DISTINCT sku) AS distinct_products FROM w GROUP BY ALL)
        SELECT customer_id, date_diff('day', max(ts), $end) recency, count(*) frequency, sum(revenue) monetary,
               sum(revenue) / count(*) aov, any_value(distinct_products) distinct_products,
               date_diff('day', min(ts), max(ts)) purchase_span, date_diff('day', any_value(first_ever), $end) tenure
        FROM inv JOIN products USING (customer_id) JOIN first_seen USING (customer_id) GROUP BY customer_id
        """,
        {"end": as_of_end, "start": window_start, "codes": NON_PRODUCT},
    ).df()
    X = StandardScaler().fit_transform(np.log1p(feats[FEATURES].clip(lower=0)))
    KMeans(n_clusters=5, n_init=10, random_state=42).fit(X)
    return {"total_s": time.perf_counter() - t0, "customers": len(feats), "peak_rss_gib": peak_rss_gib()}


def worker_pandas(source: str, home: str) -> dict:
    t0 = time.perf_counter()
    import numpy as np
    import pandas as pd
    from sklearn.cluster import KMeans
    from sklearn.preprocessing import StandardScaler

    q, as_of_end, window_start = _quarter_bounds(source)
    df = pd.read_parquet(source) if source.endswith(".parquet") else pd.read_csv(source, parse_dates=["InvoiceDate"])
    df = df.dropna(subset=["Customer ID"])
    df = df[~df["Invoice"].astype(str).str.startswith(("C", "A"))]
    df = df[(df["Quantity"] > 0) & (df["Price"] > 0)]
    df = df[~df["StockCode"].astype(str).str.upper().isin(NON_PRODUCT)]
    df = df[df["InvoiceDate"] < as_of_end].drop_duplicates()
    first_seen = df.groupby("Customer ID")["InvoiceDate"].min()
    df = df[df["InvoiceDate"] >= window_start].copy()
    df["Revenue"] = df["Quantity"] * df["Price"]
    invoices = df.groupby(["Customer ID", "Invoice"]).agg(ts=("InvoiceDate", "min"), revenue=("Revenue", "sum"))
    rfm = invoices.groupby("Customer ID").agg(
        first=("ts", "min"), last=("ts", "max"), frequency=("revenue", "size"), monetary=("revenue", "sum")
    )
    rfm["distinct_products"] = df.groupby("Customer ID")["StockCode"].nunique()
    end = pd.Timestamp(as_of_end)
    rfm["recency"] = (end - rfm["last"]).dt.days
    rfm["aov"] = rfm["monetary"] / rfm["frequency"]
    rfm["purchase_span"] = (rfm["last"] - rfm["first"]).dt.days
    rfm["tenure"] = (end - first_seen.loc[rfm.index]).dt.days
    X = StandardScaler().fit_transform(np.log1p(rfm[FEATURES].clip(lower=0)))
    KMeans(n_clusters=5, n_init=10, random_state=42).fit(X)
    return {"total_s": time.perf_counter() - t0, "customers": len(rfm), "peak_rss_gib": peak_rss_gib()}


# ------------------------------------------------------------------------------------------------ driver
def ensure_data(size: str, fmt: str) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"retail_{size}.{fmt}"
    if not path.exists():
        from seg_pipeline.sample_data import write_transactions

        t0 = time.perf_counter()
        write_transactions(path, rows=SIZES[size])
        print(f"  generated {path.name} in {time.perf_counter() - t0:.1f}s", flush=True)
    return path


def run_worker(kind: str, source: Path, scratch: Path, env: dict | None = None) -> dict:
    home = scratch / f"home_{kind}_{time.time_ns()}"
    home.mkdir(parents=True)
    cmd = [sys.executable, __file__, "--worker", kind, str(source), str(home)]
    t0 = time.perf_counter()
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    shutil.rmtree(home, ignore_errors=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} on {source.name} failed:\n{proc.stderr[-3000:]}")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["process_wall_s"] = wall
    return res


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def versions() -> str:
    import importlib.metadata as md

    pk = ["dagster", "duckdb", "great-expectations", "pandas", "scikit-learn", "numpy", "pyarrow"]
    return ", ".join(f"{p} {md.version(p)}" for p in pk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1M,10M")
    ap.add_argument("--formats", default="parquet,csv")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--scenarios", default="floor,pandas,quarter,backfill,refresh")
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--append", action="store_true", help="append to the results file instead of replacing it")
    ap.add_argument("--scratch", default=None, help="folder for temporary homes (default: a temp dir)")
    ap.add_argument(
        "--baseline-env",
        default=None,
        metavar="KEY=VALUE[,KEY=VALUE]",
        help="also run each pipeline scenario with these environment variables, alternating with the plain run "
        "(e.g. SEG_PIPELINE_GC=python: the interpreter's garbage collection), and report the ratio",
    )
    ap.add_argument("--worker", nargs=3, metavar=("KIND", "SOURCE", "HOME"), help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.worker:
        kind, source, home = args.worker
        sys.path.insert(0, str(ROOT))
        res = {"floor": lambda: worker_floor(source, home), "pandas": lambda: worker_pandas(source, home)}.get(
            kind, lambda: worker_pipeline(kind, source, home)
        )()
        print(json.dumps(res, default=str))
        return

    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="segbench_"))
    base_env = dict(kv.split("=", 1) for kv in args.baseline_env.split(",")) if args.baseline_env else {}
    base_label = ",".join(f"{k}={v}" for k, v in base_env.items())
    rows_md = []
    detail_md = []
    started = datetime.now(UTC)
    for size in args.sizes.split(","):
        for fmt in args.formats.split(","):
            src = ensure_data(size, fmt)
            results: dict[str, list[dict]] = {}
            for run in range(args.runs):
                for kind in args.scenarios.split(","):
                    if kind == "pandas" and size == "100M":
                        continue  # would need ~30+ GB: the notebook approach does not scale there
                    print(f"{size} {fmt} run {run + 1}/{args.runs}: {kind} ...", flush=True)
                    r = run_worker(kind, src, scratch)
                    results.setdefault(kind, []).append(r)
                    print(f"    {r['total_s']:.1f}s, peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)
                    if base_env and kind not in ("floor", "pandas"):
                        print(f"{size} {fmt} run {run + 1}/{args.runs}: {kind} with {base_label} ...", flush=True)
                        r = run_worker(kind, src, scratch, base_env)
                        results.setdefault(f"{kind} ({base_label})", []).append(r)
                        print(f"    {r['total_s']:.1f}s, peak RSS {r['peak_rss_gib']:.2f} GiB", flush=True)
            m = {k: med([r["total_s"] for r in v]) for k, v in results.items()}
            rss = {k: max(r["peak_rss_gib"] for r in v) for k, v in results.items()}
            floor, pandas_t = m.get("floor"), m.get("pandas")

            def ratio(a, b):
                return f"{a / b:.2f}x" if a and b else "-"

            for k in results:
                rows_md.append(
                    f"| {size} | {fmt} | {k} | {m[k]:.1f} | {rss[k]:.2f} | {ratio(m[k], floor)} | "
                    f"{ratio(m[k], pandas_t)} | {len(results[k])} |"
                )
            # the issue-15 ratios, from this invocation's medians
            ratios = []
            if m.get("quarter") and floor:
                ratios.append(f"quarter / floor {m['quarter'] / floor:.2f}x")
            if m.get("quarter") and pandas_t:
                ratios.append(f"pandas / quarter {pandas_t / m['quarter']:.2f}x (above 1: the pipeline is faster)")
            if m.get("backfill") and m.get("quarter"):
                ratios.append(f"backfill / quarter {m['backfill'] / m['quarter']:.2f}x")
            if m.get("increment") and m.get("backfill"):
                ratios.append(f"increment / backfill {m['increment'] / m['backfill']:.2f}")
            for k in [k for k in results if k.endswith(f" ({base_label})")]:
                plain = m.get(k.split(" (")[0])
                if plain and m[k]:
                    ratios.append(f"{k.split(' (')[0]} / the same with {base_label} {plain / m[k]:.2f}x")
            if ratios:
                detail_md.append(f"\n**{size} {fmt}, ratios**: " + "; ".join(ratios) + ".\n")
            if "increment" in results:
                r0 = results["increment"][0]
                detail_md.append(
                    f"\n**{size} {fmt}, increment**: the refresh read {r0['rows_loaded_this_run']:,} new rows (the new "
                    f"file) of {SIZES[size]:,}; cleaning mode `{r0['cleaning_mode']}` (only the new file's rows were "
                    f"cleaned); median {m['increment']:.1f} s.\n"
                )
            if "backfill" in results:
                steps = sorted({s for r in results["backfill"] for s in r["steps"]})
                detail_md.append(
                    f"\n**{size} {fmt}, full backfill ({results['backfill'][0]['quarters']} quarters): "
                    f"median seconds per asset, summed over the quarters**\n"
                )
                detail_md.append("| asset | seconds |\n|---|---:|")
                for s in steps:
                    detail_md.append(f"| {s} | {med([r['steps'].get(s) for r in results['backfill']]):.2f} |")
            if "quarter" in results:
                steps = sorted({s for r in results["quarter"] for s in r["steps"]})
                checks = {s: med([r["checks"].get(s) for r in results["quarter"]]) for s in steps}
                detail_md.append(
                    f"\n**{size} {fmt}, one quarter ({results['quarter'][0]['quarter']}): "
                    f"median seconds per asset (step wall time, contract included) and its GX check**\n"
                )
                detail_md.append("| asset | step s | of which GX check s | check share |\n|---|---:|---:|---:|")
                for s in steps:
                    st = med([r["steps"].get(s) for r in results["quarter"]])
                    ck = checks.get(s)
                    share = f"{ck / st:.0%}" if ck and st else "-"
                    detail_md.append(f"| {s} | {st:.2f} | {ck if ck is None else f'{ck:.2f}'} | {share} |")
                imp = med([r["import_s"] for r in results["quarter"]])
                detail_md.append(f"| (imports: dagster, pipeline, sklearn) | {imp:.2f} | | |")

    header = [
        f"## Run of {started:%Y-%m-%d %H:%M} UTC",
        "",
        f"Command: `.venv/bin/python bench/benchmark.py --sizes {args.sizes} --formats {args.formats} "
        f"--runs {args.runs} --scenarios {args.scenarios}"
        + (f" --baseline-env {args.baseline_env}" if args.baseline_env else "")
        + "`  ",
        f"Machine: {os.cpu_count()} cores, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1024**3:.0f} GiB RAM, "
        f"{platform.platform()}, Python {platform.python_version()}  ",
        f"Versions: {versions()}",
        "",
        "Seconds are medians over the runs (whole scenario, in its own process, imports included); peak RSS is "
        "the largest of the runs; ratios divide the median by the floor's / the pandas baseline's median "
        "measured in this same invocation on the same file.",
        "",
        "| rows | format | scenario | median s | peak RSS GiB | vs floor | vs pandas | runs |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    text = "\n".join(header + rows_md + detail_md) + "\n"
    out = Path(args.out)
    if args.append and out.exists():
        out.write_text(out.read_text() + "\n" + text)
    else:
        out.write_text(
            "# Benchmark results\n\nWritten by `bench/benchmark.py` (see its docstring for the scenarios).\n\n" + text
        )
    print("\n" + text)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
