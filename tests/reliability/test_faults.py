"""Reliability: kills mid-run, reruns, concurrent runs, hostile paths, unreadable sources.

A run is killed with SIGKILL (no cleanup) at chosen points through the SEG_PIPELINE_FAILPOINT hook of
seg_pipeline/storage.py, in a subprocess running the real CLI. Afterwards every table must be either at its
previous good version or at its new version (never partial), the DuckDB file must open cleanly, and a
plain re-run must finish the job.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from seg_pipeline.sample_data import generate_transactions

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "seg_pipeline.cli"]
TABLES = [
    "raw_transactions",
    "cleaned_sales",
    "rejected_sales",
    "customer_features",
    "scaled_matrix",
    "clustering_model",
    "segment_assignments",
    "segment_summary",
    "segment_migration_history",
]
Q_LAST = "2011-07-01"
EMPTY = hashlib.sha256(repr([]).encode()).hexdigest()  # the content hash of a table without rows

# every test here runs the real CLI in subprocesses (a complete run takes 5-20 s): not in the quick loop
pytestmark = pytest.mark.slow


def _frame(seed: int) -> pd.DataFrame:
    """Two quarters of data (2011-Q2 and Q3 snapshots) from ~150 customers: small and quick."""
    df = generate_transactions(n_customers=150, seed=seed)
    return df[(df["InvoiceDate"] >= "2011-04-01") & (df["InvoiceDate"] < "2011-10-01")]


def _write(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    out["InvoiceDate"] = out["InvoiceDate"].dt.strftime("%Y-%m-%d %H:%M:%S")
    out.to_csv(path, index=False)
    return path


def run_cli(home: Path, source: Path, *args, env_extra: dict | None = None, timeout: int = 300):
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "DAGSTER_HOME": str(home / "dagster"), **(env_extra or {})}
    return subprocess.run(
        CLI + ["run", "--home", str(home), "--source", str(source), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def snapshot(home: Path) -> dict[str, str]:
    """Content hash of every table (rows sorted), opened read-only: fails if the file is not clean."""
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        out = {}
        for t in TABLES:
            cols = [c[0] for c in con.execute(f'DESCRIBE "{t}"').fetchall() if c[0] not in ("_loaded_at",)]
            sel = ", ".join(f'"{c}"' for c in cols)
            rows = con.execute(f'SELECT {sel} FROM "{t}" ORDER BY ALL').fetchall()
            out[t] = hashlib.sha256(repr(rows).encode()).hexdigest()
        return out
    finally:
        con.close()


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    d = tmp_path_factory.mktemp("src")
    # seeds whose customer_value fits converge in both quarters (seed 11 of the current generator gives 66
    # customers in 2011-Q3 on which BG/NBD returns NaN estimates: the contract blocks that quarter)
    old = _write(_frame(seed=13), d / "v1" / "sales.csv")
    new = _write(_frame(seed=12), d / "v2" / "sales.csv")  # a different history: every table changes
    return old, new


@pytest.fixture(scope="module")
def homes(tmp_path_factory, sources):
    """A home holding a good run of v1, and a home holding the good run of v2 that follows it."""
    old_src, new_src = sources
    base = tmp_path_factory.mktemp("homes")
    good_old = base / "good_old"
    r = run_cli(good_old, old_src)
    assert r.returncode == 0, r.stderr[-2000:]
    good_new = base / "good_new"
    shutil.copytree(good_old, good_new)
    r = run_cli(good_new, new_src)
    assert r.returncode == 0, r.stderr[-2000:]
    return good_old, good_new, snapshot(good_old), snapshot(good_new)


# (failpoint, tables already published with the new data when the process dies)
KILL_POINTS = [
    ("before_commit:raw_transactions", []),
    ("before_commit:cleaned_sales", ["raw_transactions"]),
    ("before_rename:scaler.joblib", ["raw_transactions", "cleaned_sales", "rejected_sales"]),
    ("before_commit:segment_assignments", ["raw_transactions", "cleaned_sales", "rejected_sales"]),
]


@pytest.mark.parametrize("point, published", KILL_POINTS, ids=[p for p, _ in KILL_POINTS])
def test_kill_mid_run_leaves_every_table_old_or_new_and_a_rerun_completes(tmp_path, sources, homes, point, published):
    _, new_src = sources
    good_old, _, snap_old, snap_new = homes
    home = tmp_path / "home"
    shutil.copytree(good_old, home)
    r = run_cli(home, new_src, env_extra={"SEG_PIPELINE_FAILPOINT": point})
    assert r.returncode == -9, f"the failpoint {point} was not reached:\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}"

    after = snapshot(home)  # opens cleanly, read-only
    for t in TABLES:
        # the first quarter of v2 may have been fully published before the kill: a table is allowed to be
        # new for the tables listed, old for the rest, except that quarterly tables can hold a complete
        # earlier quarter of the new run; compare the last quarter's rows then
        if t in published:
            assert after[t] == snap_new[t], f"{t} should hold the new data after a kill at {point}"
        elif t in ("raw_transactions", "cleaned_sales", "rejected_sales"):
            # once the new raw data is published, the tables derived from the old data are cleared with it
            cleared = "raw_transactions" in published and after[t] == EMPTY
            assert after[t] == snap_old[t] or cleared, f"{t} should be at its previous version after a kill at {point}"
    _assert_last_quarter_old_or_new(home, homes)

    r = run_cli(home, new_src)  # recovery: a plain re-run
    assert r.returncode == 0, r.stderr[-2000:]
    assert snapshot(home) == snap_new


def _quarter_rows(home: Path, table: str, quarter: str) -> str:
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        rows = con.execute(f'SELECT * FROM "{table}" WHERE quarter = ? ORDER BY ALL', [quarter]).fetchall()
        return hashlib.sha256(repr(rows).encode()).hexdigest()
    finally:
        con.close()


def _assert_last_quarter_old_or_new(home: Path, homes) -> None:
    """The last quarter of each quarterly table holds the previous run's rows or the new run's; or none once
    the new raw data is published (a changed source clears every derived output in that transaction)."""
    good_old, good_new, _, snap_new = homes
    cleared = snapshot(home)["raw_transactions"] == snap_new["raw_transactions"]
    for t in (
        "customer_features",
        "scaled_matrix",
        "clustering_model",
        "segment_assignments",
        "segment_summary",
        "segment_migration_history",
    ):
        got = _quarter_rows(home, t, Q_LAST)
        allowed = [_quarter_rows(good_old, t, Q_LAST), _quarter_rows(good_new, t, Q_LAST)]
        if cleared:
            allowed.append(EMPTY)
        assert got in allowed, f"{t} {Q_LAST} is neither the previous nor the new version: a partial write"


def test_rerun_with_unchanged_input_gives_identical_tables_and_model(tmp_path, sources, homes):
    old_src, _ = sources
    good_old, _, snap_old, _ = homes
    home = tmp_path / "home"
    shutil.copytree(good_old, home)
    models_before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (home / "models").rglob("*.joblib")}
    r = run_cli(home, old_src, "--quarters", Q_LAST)
    assert r.returncode == 0, r.stderr[-2000:]
    assert snapshot(home) == snap_old  # same rows in every table: nothing duplicated, nothing changed
    models_after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (home / "models").rglob("*.joblib")}
    assert models_after == models_before  # the same model version, byte for byte


def test_rerunning_an_old_quarter_rewrites_only_that_quarter(tmp_path, sources, homes):
    old_src, _ = sources
    good_old, _, _, _ = homes
    home = tmp_path / "home"
    shutil.copytree(good_old, home)
    con = duckdb.connect(str(home / "warehouse.duckdb"))
    quarters = [
        r[0] for r in con.execute("SELECT DISTINCT quarter FROM segment_migration_history ORDER BY 1").fetchall()
    ]
    first = quarters[0]
    # mark the other quarters' history: a rerun of `first` must not touch them
    con.execute("UPDATE segment_migration_history SET previous_quarter = 'marker' WHERE quarter <> ?", [first])
    marked = con.execute("SELECT count(*) FROM segment_migration_history WHERE quarter <> ?", [first]).fetchall()[0][0]
    con.close()
    r = run_cli(home, old_src, "--quarters", first)
    assert r.returncode == 0, r.stderr[-2000:]
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    assert (
        con.execute("SELECT count(*) FROM segment_migration_history WHERE previous_quarter = 'marker'").fetchall()[0][0]
        == marked
    )
    assert (
        con.execute(
            "SELECT count(*) FROM segment_migration_history WHERE quarter = ? AND previous_quarter <> 'marker'", [first]
        ).fetchall()[0][0]
        > 0
    )
    con.close()


def test_two_runs_at_once_do_not_corrupt_anything(tmp_path, sources, homes):
    old_src, _ = sources
    good_old, _, snap_old, _ = homes
    home = tmp_path / "home"
    shutil.copytree(good_old, home)
    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false", "DAGSTER_HOME": str(home / "dagster")}
    args = CLI + ["run", "--home", str(home), "--source", str(old_src)]
    procs = [
        subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert 0 in codes, f"neither run finished: {outs}"
    for code, (_out, err) in zip(codes, outs):
        if code != 0:  # the loser says why, in one sentence, without DuckDB's stack trace
            assert "in use by another process" in err, err[-2000:]
            assert "Traceback" not in err
    assert snapshot(home) == snap_old


def test_source_path_with_quotes_and_semicolons_loads(tmp_path, sources):
    old_src, _ = sources
    weird = tmp_path / 'it\'s a "tricky"; name; DROP TABLE x.csv'
    shutil.copy(old_src, weird)
    home = tmp_path / "home"
    r = run_cli(home, weird, "--quarters", "latest")
    assert r.returncode == 0, r.stderr[-2000:]
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    assert con.execute("SELECT DISTINCT _source_file FROM raw_transactions").fetchall() == [(weird.name,)]
    con.close()
    # nothing was written beside the source
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([weird.name, "home"])


def test_missing_and_unreadable_sources_name_the_path(tmp_path, sources, homes, monkeypatch):
    good_old, _, snap_old, _ = homes
    home = tmp_path / "home"
    shutil.copytree(good_old, home)
    r = run_cli(home, tmp_path / "nowhere.csv")
    assert r.returncode != 0 and "nowhere.csv does not exist" in r.stderr
    # permission denied: root reads anything, so the reader's open() is made to fail in process
    from seg_pipeline import readers

    src = tmp_path / "locked.csv"
    shutil.copy(sources[0], src)
    real_open = open

    def deny(path, *a, **k):
        if str(path) == str(src):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", deny)
    with pytest.raises(readers.SourceError, match=r"locked\.csv cannot be read: Permission denied"):
        readers.source_files(src)
    monkeypatch.undo()
    assert snapshot(home) == snap_old


def test_source_file_is_never_modified(tmp_path, sources):
    old_src, _ = sources
    before = (hashlib.sha256(old_src.read_bytes()).hexdigest(), old_src.stat().st_mtime_ns)
    r = run_cli(tmp_path / "home", old_src, "--quarters", "latest")
    assert r.returncode == 0, r.stderr[-2000:]
    assert (hashlib.sha256(old_src.read_bytes()).hexdigest(), old_src.stat().st_mtime_ns) == before


def test_disk_full_while_writing_a_model_file_names_the_path_and_keeps_the_last_good_state(
    tmp_path, sources, homes, monkeypatch
):
    """A file write that fails (ENOSPC at the rename of the scaler) fails the run with the path in the
    message; no temporary file is left behind and every table keeps its previous version."""
    import click
    import dagster as dg

    from seg_pipeline import storage
    from seg_pipeline.cli import run_pipeline

    old_src, new_src = sources
    good_old, _, snap_old, _ = homes
    home = tmp_path / "home"
    shutil.copytree(good_old, home)
    real_replace = os.replace

    def full(src, dst, *a, **k):
        if str(dst).endswith("scaler.joblib"):
            raise OSError(28, "No space left on device", str(dst))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(storage.os, "replace", full)
    with dg.DagsterInstance.ephemeral() as instance, pytest.raises(click.ClickException) as exc:
        run_pipeline(home, source=str(old_src), quarters=Q_LAST, quiet=True, instance=instance)
    msg = exc.value.message
    assert "step scaled_matrix: no space left on device while writing " in msg and msg.endswith("scaler.joblib")
    assert not list((home / "models").rglob("*.tmp"))
    monkeypatch.undo()
    assert snapshot(home) == snap_old
