"""Customer value (BG/NBD + Gamma-Gamma, pymc-marketing): import cost, fit and scoring time, and the asset's
time at 1M customers.

    .venv/bin/python bench/clv.py                     # everything below; writes bench/clv.md
    .venv/bin/python bench/clv.py --sizes 5000 100000 # only some sizes (the asset section still runs at 1M)
    .venv/bin/python bench/clv.py --recovery 30       # also the repeated-simulation check of the standard errors

Sections:
  import     `from pymc_marketing import clv` in a fresh interpreter (median of 3), and whether importing the
             Dagster definitions loads pymc (it must not: the asset imports it when it runs);
  fit        inputs generated directly as frames from the BG/NBD process (r=0.25, alpha=4, a=0.8, b=2.5 per
             week; Gamma-Gamma p=6, q=4, v=15) at each size: the BG/NBD fit, the Gamma-Gamma fit (repeat
             buyers only) on everyone, and the scoring of everyone (P(alive), 13/52-week purchases, 52-week CLV
             in 4-week steps); medians of 3 up to 100k, one run at 1M;
  asset      the customer_value asset end to end (dg.materialize: SQL inputs from cleaned_sales, fit on its
             default 250,000-customer sample, scoring of everyone, the GX contract, publication) on a synthetic
             warehouse of 1M customers (their purchase days from the same process, one line per day);
  recovery   (--recovery N) N simulated data sets of 4,000 customers: how often the truth lies within 2
             standard errors, the z-scores' mean and spread (the justification of the tests' tolerance).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seg_pipeline.ml import customer_value as cv  # noqa: E402

TRUE_BG = {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.5}
TRUE_GG = {"p": 6.0, "q": 4.0, "v": 15.0}


def _py(code: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT, env=os.environ
    ).stdout.strip()


def bench_import() -> dict:
    code = "import time; t = time.perf_counter(); from pymc_marketing import clv; print(time.perf_counter() - t)"
    runs = [float(_py(code).splitlines()[-1]) for _ in range(3)]
    loaded = _py(
        "import sys, seg_pipeline.definitions; print(sorted(m for m in sys.modules if m.split('.')[0] in ('pymc', 'pymc_marketing', 'pytensor', 'arviz')))"
    )
    defs = [
        float(
            _py(
                "import time; t = time.perf_counter(); import seg_pipeline.definitions; print(time.perf_counter() - t)"
            ).splitlines()[-1]
        )
        for _ in range(3)
    ]
    return {"clv_import_s": runs, "definitions_import_s": defs, "pymc_loaded_by_definitions": loaded}


def simulate(n: int, seed: int = 0) -> pd.DataFrame:
    d = cv.simulate_bgnbd(n, **TRUE_BG, seed=seed)
    d["monetary_value"] = cv.simulate_gamma_gamma(d["frequency"], **TRUE_GG, seed=seed + 1)
    return d


def bench_fit(n: int, repeat: int) -> dict:
    data = simulate(n)
    bg_s, gg_s, sc_s = [], [], []
    for _ in range(repeat):
        bg = cv.fit_bgnbd(data)
        gg = cv.fit_gamma_gamma(data)
        t = time.perf_counter()
        cv.score(bg, gg, data, unit_days=7.0)
        sc_s.append(time.perf_counter() - t)
        bg_s.append(bg.seconds)
        gg_s.append(gg.seconds)
    return {
        "n": n,
        "runs": repeat,
        "repeat_buyers": int((data["frequency"] > 0).sum()),
        "bgnbd_s": statistics.median(bg_s),
        "gamma_gamma_s": statistics.median(gg_s),
        "score_s": statistics.median(sc_s),
        "bgnbd": bg.params,
        "gamma_gamma": gg.params,
        "converged": bg.converged and gg.converged,
    }


def synthetic_warehouse(home: Path, n: int, seed: int = 5, lines_per_day: int = 1) -> int:
    """cleaned_sales with n customers: `lines_per_day` lines per purchase day (the day's value split evenly),
    days from the BG/NBD process (weeks x 7), each customer's first purchase between 2010-01-01 and the as-of
    date 2011-09-30."""
    import duckdb

    rng = np.random.default_rng(seed)
    as_of = pd.Timestamp("2011-09-30")
    T_days = rng.uniform(1, 638, n)  # ~ 2010-01-01 .. 2011-09-30
    lam = rng.gamma(TRUE_BG["r"], 1.0 / TRUE_BG["alpha"], n) / 7.0  # per day
    p = rng.beta(TRUE_BG["a"], TRUE_BG["b"], n)
    cust, day = [np.arange(n)], [np.zeros(n)]  # the first purchase, at day 0 of each customer's life
    t, idx = np.zeros(n), np.arange(n)
    while len(idx):
        t[idx] += rng.exponential(1.0 / np.maximum(lam[idx], 1e-300))
        idx = idx[t[idx] <= T_days[idx]]
        cust.append(idx)
        day.append(t[idx].copy())
        idx = idx[rng.random(len(idx)) >= p[idx]]
    c, d = np.concatenate(cust), np.concatenate(day)
    first = as_of - pd.to_timedelta(np.floor(T_days), unit="D")
    when = first.values[c] + pd.to_timedelta(np.floor(d), unit="D").values + np.timedelta64(12, "h")
    value = rng.gamma(TRUE_GG["p"], 1.0, len(c)) / rng.gamma(TRUE_GG["q"], 1.0 / TRUE_GG["v"], n)[c]
    df = pd.DataFrame(
        {
            "customer_id": pd.Series(c).astype(str).radd("c"),
            "invoice": np.arange(len(c)).astype(str),
            "invoice_date": when,
            "line_revenue": value.round(2) + 0.01,
        }
    )
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    con.register("df", df)
    k = int(lines_per_day)
    con.execute(
        "CREATE OR REPLACE TABLE cleaned_sales AS SELECT customer_id, invoice || '-' || i AS invoice, invoice_date, "
        f"line_revenue / {k} AS line_revenue FROM df, range({k}) AS t(i)"
    )
    rows = con.execute("SELECT count(*) FROM cleaned_sales").fetchall()[0][0]
    con.close()
    return rows


def bench_asset(n: int, lines_per_day: int = 1) -> dict:
    import dagster as dg

    from seg_pipeline.assets.customer_value import customer_value
    from seg_pipeline.partitions import quarterly_partitions
    from seg_pipeline.resources import build_resources

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        t = time.perf_counter()
        rows = synthetic_warehouse(home, n, lines_per_day=lines_per_day)
        gen = time.perf_counter() - t
        with dg.instance_for_test() as instance:
            if isinstance(quarterly_partitions, dg.DynamicPartitionsDefinition):
                instance.add_dynamic_partitions(quarterly_partitions.name, ["2011-07-01"])
            t = time.perf_counter()
            res = dg.materialize(
                [customer_value],
                partition_key="2011-07-01",
                resources=build_resources(home, None, None),
                instance=instance,
                run_config={"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}},
            )
            wall = time.perf_counter() - t
        mat = next(
            m for m in res.asset_materializations_for_node("customer_value") if m.asset_key.path == ["customer_value"]
        )
        md = mat.metadata
        return {
            "customers": n,
            "lines": rows,
            "generate_s": gen,
            "asset_s": wall,
            "steps_s": md["seconds"].value,
            "state": md["model_state"].value,
            "fit_customers": md["fit_customers"].value if "fit_customers" in md else None,
            "params": {
                k: md[k].value
                for k in md
                if k.startswith(("bgnbd_", "gamma_gamma_")) and "log" not in k and "customers" not in k
            },
        }


def bench_recovery(n_sets: int, n: int = 4000) -> dict:
    zb, zg = [], []
    for seed in range(n_sets):
        d = simulate(n, seed=100 + 2 * seed)
        bg, gg = cv.fit_bgnbd(d), cv.fit_gamma_gamma(d)
        zb.append([(bg.params[k] - TRUE_BG[k]) / bg.std_errors[k] for k in cv.BGNBD_PARAMS])
        zg.append([(gg.params[k] - TRUE_GG[k]) / gg.std_errors[k] for k in cv.GG_PARAMS])
    out = {}
    for model, names, z in (("bgnbd", cv.BGNBD_PARAMS, np.array(zb)), ("gamma_gamma", cv.GG_PARAMS, np.array(zg))):
        for i, k in enumerate(names):
            out[(model, k)] = {
                "within_2se": float((np.abs(z[:, i]) < 2).mean()),
                "mean_z": float(z[:, i].mean()),
                "sd_z": float(z[:, i].std()),
                "max_abs_z": float(np.abs(z[:, i]).max()),
            }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[5000, 100_000, 1_000_000])
    ap.add_argument("--asset-customers", type=int, default=1_000_000)
    ap.add_argument("--lines-per-day", type=int, nargs="*", default=[1], help="asset runs: lines per purchase day")
    ap.add_argument("--skip-fit", action="store_true", help="skip the fit section")
    ap.add_argument("--recovery", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "clv.md"))
    args = ap.parse_args()
    started = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Customer value benchmark",
        "",
        f"Written by `bench/clv.py` ({' '.join(['.venv/bin/python bench/clv.py'] + sys.argv[1:])}), started {started}, on this "
        f"{os.cpu_count()}-core machine. Versions: {cv.library_versions()}.",
        "",
    ]

    def emit(text: str = "") -> None:
        print(text, flush=True)
        lines.append(text)

    imp = bench_import()
    emit("## Import")
    emit("")
    emit(
        f"- `from pymc_marketing import clv`, fresh interpreter: median {statistics.median(imp['clv_import_s']):.2f} s "
        f"(runs {', '.join(f'{x:.2f}' for x in imp['clv_import_s'])})"
    )
    emit(
        f"- `import seg_pipeline.definitions`: median {statistics.median(imp['definitions_import_s']):.2f} s; pymc modules "
        f"it loads: {imp['pymc_loaded_by_definitions']}"
    )
    emit("")
    if not args.skip_fit:
        emit("## Fit and scoring from frames")
        emit("")
        emit(
            "| customers | runs | repeat buyers | BG/NBD fit s | Gamma-Gamma fit s | scoring s | BG/NBD r, alpha, a, b | Gamma-Gamma p, q, v |"
        )
        emit("|--:|--:|--:|--:|--:|--:|---|---|")
    for n in args.sizes if not args.skip_fit else []:
        r = bench_fit(n, 3 if n <= 100_000 else 1)
        emit(
            f"| {n:,} | {r['runs']} | {r['repeat_buyers']:,} | {r['bgnbd_s']:.2f} | {r['gamma_gamma_s']:.2f} | "
            f"{r['score_s']:.2f} | {', '.join(f'{v:.3f}' for v in r['bgnbd'].values())} | "
            f"{', '.join(f'{v:.3f}' for v in r['gamma_gamma'].values())} |"
        )
    emit("")
    emit(f"## The asset at {args.asset_customers:,} customers")
    emit("")
    emit(
        "customer_value end to end (dg.materialize, in process, default config: fit on a 250,000-customer sample, "
        "everyone scored) on a synthetic warehouse; the time to write the warehouse is not counted. pymc is already "
        "imported in this process (the fit section): a fresh process adds the import above, and the first fit on a "
        "machine also compiles pytensor's C code (about 10 s here, then cached in ~/.pytensor)."
    )
    emit("")
    emit("| lines | customers | asset s | read | fit | score | contract | publish | state | fitted on |")
    emit("|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|")
    estimates = []
    for k in args.lines_per_day:
        a = bench_asset(args.asset_customers, lines_per_day=k)
        st = a["steps_s"]
        emit(
            f"| {a['lines']:,} | {a['customers']:,} | **{a['asset_s']:.1f}** | {st['read']:.2f} | {st['fit']:.2f} | "
            f"{st['score']:.2f} | {st['contract']:.2f} | {st['publish']:.2f} | {a['state']} | {a['fit_customers']:,} |"
        )
        estimates.append(a["params"])
    emit("")
    emit(
        f"Estimates (truth r 0.25, alpha 4, a 0.8, b 2.5; p 6, q 4, v 15): {', '.join(f'{k} {v:.3f}' for k, v in estimates[0].items())}."
    )
    emit("")
    if args.recovery:
        emit(f"## Recovery: {args.recovery} simulated data sets of 4,000 customers")
        emit("")
        emit("| model | parameter | truth | within 2 SE | mean z | sd z | max abs z |")
        emit("|---|---|--:|--:|--:|--:|--:|")
        truth = {**{("bgnbd", k): v for k, v in TRUE_BG.items()}, **{("gamma_gamma", k): v for k, v in TRUE_GG.items()}}
        for (model, k), s in bench_recovery(args.recovery).items():
            emit(
                f"| {model} | {k} | {truth[(model, k)]} | {s['within_2se']:.0%} | {s['mean_z']:+.2f} | {s['sd_z']:.2f} | {s['max_abs_z']:.2f} |"
            )
        emit("")
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
