"""The CLI under faults: one line instead of a traceback, SIGINT/SIGTERM stop at a safe point, an unwritable
home or a full disk named with its path, a wait for the warehouse lock announced, rejections summarised.

The subprocess tests (marked slow) run the real CLI on the two small histories of test_faults.py; the
others run in process (click's CliRunner, a tiny Dagster run, or faults.py directly).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from click.testing import CliRunner

from seg_pipeline import cli, faults
from seg_pipeline.readers import SourceError

from .test_faults import CLI, ROOT, TABLES, homes, run_cli, snapshot, sources  # noqa: F401 (fixtures)

UNPARTITIONED = ["raw_transactions", "cleaned_sales", "rejected_sales"]
QUARTERLY = [t for t in TABLES if t not in UNPARTITIONED]
Q_FIRST = "2011-04-01"
INTERRUPTED = re.compile(
    r"seg-pipeline: interrupted by (SIGTERM|SIGINT) (before|during|after) "
    r"(ingest and cleaning|quarter \d{4}-\d\d-\d\d)(, step \w+)?; tables are at their last published version"
)


# -- helpers -----------------------------------------------------------------------------------------------


def _env(home: Path, **extra) -> dict:
    return {**os.environ, "GX_ANALYTICS_ENABLED": "false", "DAGSTER_HOME": str(home / "dagster"), **extra}


class _Proc:
    """The CLI in a subprocess, its stdout and stderr read line by line as they come."""

    def __init__(self, args: list[str], env: dict):
        self.p = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.out: list[str] = []
        self.err: list[str] = []
        self._threads = [
            threading.Thread(target=self._read, args=(self.p.stdout, self.out), daemon=True),
            threading.Thread(target=self._read, args=(self.p.stderr, self.err), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _read(stream, lines: list[str]) -> None:
        for line in stream:
            lines.append(line.rstrip("\n"))

    def wait_for(self, lines: list[str], text: str, timeout: float = 120) -> None:
        end = time.monotonic() + timeout
        while not any(text in line for line in lines):
            if self.p.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"never printed {text!r}:\n" + "\n".join(self.out + self.err)[-3000:])
            time.sleep(0.02)

    def finish(self, timeout: float = 300) -> int:
        rc = self.p.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=10)
        return rc


def _run_proc(home: Path, source: Path, *args, **env_extra) -> _Proc:
    return _Proc(CLI + ["run", "--home", str(home), "--source", str(source), *args], _env(home, **env_extra))


def _rows(home: Path, sql: str, params=None) -> list[tuple]:
    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        return con.execute(sql, params or []).fetchall()
    finally:
        con.close()


def _by_quarter(home: Path, table: str) -> dict[str, list[tuple]]:
    at = [c[0] for c in _rows(home, f'DESCRIBE "{table}"')].index("quarter")
    out: dict[str, list[tuple]] = {}
    for row in _rows(home, f'SELECT * FROM "{table}" ORDER BY ALL'):
        out.setdefault(row[at], []).append(row)
    return out


def _assert_every_table_old_or_new(home: Path, homes) -> None:  # noqa: F811
    """Each unpartitioned table is wholly at the old or the new version; each quarter of each quarterly table
    holds the old run's rows of that quarter or the new run's, complete (never a mix, never a part)."""
    good_old, good_new, snap_old, snap_new = homes
    after = snapshot(home)  # also: the file opens cleanly, read-only
    for t in UNPARTITIONED:
        assert after[t] in (snap_old[t], snap_new[t]), f"{t} is neither its old nor its new version"
    for t in QUARTERLY:
        old, new, got = _by_quarter(good_old, t), _by_quarter(good_new, t), _by_quarter(home, t)
        for q, rows in got.items():
            assert rows in (old.get(q), new.get(q)), f"{t} {q} is neither its old nor its new version: a part"


# -- 1. one line, never a traceback ------------------------------------------------------------------------


def test_an_unexpected_error_is_one_line_naming_the_command_and_cause_with_the_trace_in_a_log(tmp_path, monkeypatch):
    from seg_pipeline.insights import summary

    def broken(*a, **k):
        raise RuntimeError("the summary query hit something odd\nsecond line")

    monkeypatch.setattr(summary, "latest_summary", broken)
    home = tmp_path / "home"
    r = CliRunner().invoke(cli.main, ["summary", "--home", str(home)])
    assert r.exit_code == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    m = re.fullmatch(
        r"seg-pipeline: unexpected error in seg-pipeline summary: RuntimeError: the summary query hit something "
        r"odd \(full trace in (.+)\)",
        lines[0],
    )
    assert m, lines[0]
    log = Path(m.group(1))
    assert log.parent == home / "logs" and re.fullmatch(r"seg-pipeline-\d{8}T\d{6}\.\d{6}Z\.log", log.name)
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "second line" in text and "in broken" in text


def test_the_log_goes_to_the_temp_folder_when_the_home_cannot_take_it(tmp_path):
    home = tmp_path / "not_a_folder"
    home.write_text("a file where the home should be")  # <home>/logs cannot be created, even by root
    line = faults.unexpected_error_line(ValueError("bad"), "during quarter 2011-07-01, step clustering_model", home)
    m = re.fullmatch(
        r"seg-pipeline: unexpected error during quarter 2011-07-01, step clustering_model: ValueError: bad "
        rf"\(the home {re.escape(str(home))} is not writable, so the log is in the temp folder: full trace in (.+)\)",
        line,
    )
    assert m, line
    assert Path(m.group(1)).parent == Path(os.environ.get("TMPDIR", "/tmp")).resolve() / "seg-pipeline-logs"
    assert "ValueError: bad" in Path(m.group(1)).read_text()


@pytest.mark.slow
def test_an_unexpected_error_in_a_quarter_names_the_quarter(tmp_path, sources, monkeypatch):  # noqa: F811
    """An exception out of Dagster itself (not a step's failure) during a quarter: one line with the quarter,
    exit 1, the run history of the home intact for the next run."""
    real = dg.materialize

    def flaky(*a, partition_key=None, **k):
        if partition_key:
            raise RuntimeError("run storage went away")
        return real(*a, partition_key=partition_key, **k)

    monkeypatch.setattr(dg, "materialize", flaky)
    home = tmp_path / "home"
    r = CliRunner().invoke(cli.main, ["run", "--home", str(home), "--source", str(sources[0])])
    assert r.exit_code == 1, r.output
    last = r.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"seg-pipeline: unexpected error during quarter {Q_FIRST}: RuntimeError: run storage went away "
        rf"\(full trace in {re.escape(str(home / 'logs'))}/seg-pipeline-\S+\.log\)",
        last,
    ), last
    assert "Traceback" not in r.output
    assert signal.getsignal(signal.SIGTERM) is not None and faults.state.watch is None  # handlers given back


def _one_asset_result(fn):
    with dg.DagsterInstance.ephemeral() as instance:
        return dg.materialize([dg.asset(name="failing")(fn)], instance=instance, raise_on_error=False)


def test_a_dagster_interruption_is_reported_in_plain_words_without_its_class_path():
    from dagster._core.errors import DagsterExecutionInterruptedError

    def interrupted():
        raise DagsterExecutionInterruptedError()

    assert cli._failure_message(_one_asset_result(interrupted)) == "step failing: interrupted"

    def framework():  # a class path inside the text goes; a file name that looks like one stays
        raise RuntimeError("dagster._core.errors.DagsterInvariantViolationError: bad state of /h/warehouse.duckdb.wal")

    assert cli._failure_message(_one_asset_result(framework)) == (
        "step failing: DagsterInvariantViolationError: bad state of /h/warehouse.duckdb.wal"
    )


def test_a_full_disk_in_ingest_names_the_file_being_written_not_the_source(tmp_path):
    """DuckDB's ENOSPC is an IO error naming the file it writes; the reader words it as a load failure of
    the source. The CLI says which file of the home could not be written."""
    home = tmp_path / "home"
    wal = home / "warehouse.duckdb.wal"

    def load():
        try:
            raise duckdb.IOException(f'IO Error: Could not write file "{wal}": No space left on device')
        except duckdb.IOException as exc:
            raise SourceError(f"source /data/sales.csv could not be read: {exc}") from exc

    assert cli._failure_message(_one_asset_result(load), home) == (
        f"step failing: no space left on device while writing {wal}"
    )

    def spill():  # no path in the text: the warehouse and its spill folder are named
        raise duckdb.IOException("IO Error: No space left on device")

    assert cli._failure_message(_one_asset_result(spill), home) == (
        f"step failing: no space left on device while writing the warehouse {home / 'warehouse.duckdb'} "
        f"(or DuckDB's temp folder {home / 'duckdb_tmp'})"
    )


def test_a_full_disk_under_dagsters_run_history_is_named(tmp_path):
    exc = RuntimeError("(sqlite3.OperationalError) database or disk is full")
    assert faults.no_space_message(exc, tmp_path, tmp_path / "dagster") == (
        f"no space left on device while writing Dagster's run history in {tmp_path / 'dagster'}"
    )
    assert faults.no_space_message(OSError(errno.ENOSPC, "No space left on device", "/h/m/scaler.joblib")) == (
        "no space left on device while writing /h/m/scaler.joblib"
    )
    assert faults.no_space_message(RuntimeError("IO Error: permission denied"), tmp_path) is None


# -- 2. SIGINT and SIGTERM ---------------------------------------------------------------------------------


def test_a_signal_during_dagsters_capture_window_is_not_lost():
    """Dagster's in-process execution captures SIGINT (and maps SIGTERM to it) while a run executes, outside
    steps only into a flag that it clears when the run ends: the in-process executor never reads it. The
    watch records the signal anyway (set_wakeup_fd), and keeps its handler on both signals afterwards."""
    from dagster._utils.interrupts import capture_interrupts, check_captured_interrupt

    with faults.SignalWatch() as watch:
        with capture_interrupts():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)
        assert not check_captured_interrupt()  # what Dagster drops
        assert watch.received() == signal.SIGTERM
        with pytest.raises(faults.Interrupted) as exc:
            watch.check("during quarter 2010-04-01")
        assert exc.value.exit_code == 143
        assert exc.value.message == (
            "seg-pipeline: interrupted by SIGTERM during quarter 2010-04-01; tables are at their last published version"
        )
        assert signal.getsignal(signal.SIGTERM) == signal.getsignal(signal.SIGINT) == watch._record


def test_a_second_signal_outside_dagster_stops_at_once():
    """The first SIGINT is only recorded (the CLI stops at its next safe point); a second one, e.g. while the
    CLI itself waits for the warehouse lock, raises there."""
    with faults.SignalWatch() as watch:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert watch.received() == signal.SIGINT
        with pytest.raises(faults.Interrupted) as exc:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        assert exc.value.exit_code == 130
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.slow
def test_sigterm_inside_a_publishing_step_rolls_it_back_and_exits_143(tmp_path, sources, homes):  # noqa: F811
    """SIGTERM while segment_assignments of the first quarter is written but not committed (a failpoint that
    waits there): that quarter's publication rolls back, the run stops, and a plain re-run finishes."""
    _, new_src = sources
    good_old, _, _, snap_new = homes
    home = tmp_path / "home"
    shutil.copytree(good_old, home)
    proc = _run_proc(home, new_src, SEG_PIPELINE_FAILPOINT="wait:before_commit:segment_assignments")
    proc.wait_for(proc.err, "failpoint before_commit:segment_assignments: waiting")
    proc.p.send_signal(signal.SIGTERM)
    assert proc.finish(timeout=60) == 143
    errors = [line for line in proc.err if not line.startswith("failpoint ")]
    assert errors == [
        f"seg-pipeline: interrupted by SIGTERM during quarter {Q_FIRST}, step segment_assignments; "
        "tables are at their last published version"
    ]
    assert "Traceback" not in "\n".join(proc.out + proc.err)
    after = snapshot(home)
    assert {t: after[t] for t in UNPARTITIONED} == {t: snap_new[t] for t in UNPARTITIONED}  # ingest published
    # the interrupted quarter's assignments rolled back: the old rows (or none, where the new history cleared
    # the quarterly tables when ingest published it), never the new ones
    interrupted = _by_quarter(home, "segment_assignments").get(Q_FIRST)
    assert interrupted in (_by_quarter(good_old, "segment_assignments")[Q_FIRST], None)
    _assert_every_table_old_or_new(home, homes)

    r = run_cli(home, new_src)
    assert r.returncode == 0, r.stderr[-2000:]
    assert snapshot(home) == snap_new


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig, delay",
    [(signal.SIGTERM, 0.0), (signal.SIGTERM, 3.5), (signal.SIGINT, 2.5)],
    ids=["term-at-start", "term-3.5s", "int-2.5s"],
)
def test_a_signal_at_any_moment_stops_the_run_with_every_table_old_or_new(
    tmp_path,
    sources,  # noqa: F811
    homes,  # noqa: F811
    sig,
    delay,
):
    _, new_src = sources
    good_old = homes[0]
    home = tmp_path / "home"
    shutil.copytree(good_old, home)
    proc = _run_proc(home, new_src)
    proc.wait_for(proc.out, "seg_pipeline home")
    time.sleep(delay)
    assert proc.p.poll() is None, "the run ended before the signal: lengthen the data or shorten the delay"
    proc.p.send_signal(sig)
    assert proc.finish(timeout=120) == 128 + sig
    assert len(proc.err) == 1 and INTERRUPTED.fullmatch(proc.err[0]), proc.err
    assert signal.Signals(sig).name in proc.err[0]
    assert "Traceback" not in "\n".join(proc.out)
    _assert_every_table_old_or_new(home, homes)


# -- 3. an unwritable home, a full disk --------------------------------------------------------------------


@contextlib.contextmanager
def _small_filesystem(path: Path, size: str, read_only: bool = False):
    """A tmpfs of `size` at `path` (root with mount permitted); skips the test otherwise."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small file system here: {r.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _make_read_only(path: Path) -> str:
    """Make `path` unwritable; returns the cause the CLI should name."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        return "permission denied"
    r = subprocess.run(["mount", "-o", "remount,ro", str(path.parent)], capture_output=True)
    assert r.returncode == 0, r.stderr
    return "read-only file system"


def test_a_read_only_home_is_one_line_naming_the_path_and_the_cause(tmp_path):
    mount = tmp_path / "fs"
    with _small_filesystem(mount, "4m") if os.geteuid() == 0 else contextlib.nullcontext(mount):
        mount.mkdir(exist_ok=True)
        home = mount / "home"
        home.mkdir()
        con = duckdb.connect(str(home / "warehouse.duckdb"))
        con.execute("CREATE TABLE cleaned_sales AS SELECT 1 AS x")
        con.close()
        before = (home / "warehouse.duckdb").read_bytes()
        cause = _make_read_only(home)
        try:
            r = CliRunner().invoke(cli.main, ["run", "--home", str(home), "--source", "/nowhere.csv"])
        finally:
            if os.geteuid() != 0:
                home.chmod(0o755)
        assert r.exit_code == 1
        errno_ = errno.EROFS if cause == "read-only file system" else errno.EACCES
        assert r.stderr == (
            f"Error: the pipeline home {home} is not writable ({cause}): a file cannot be created in it "
            f"[Errno {errno_}]\n"
        )
        assert (home / "warehouse.duckdb").read_bytes() == before
        assert not (home / "dagster").exists()


@pytest.mark.slow
def test_a_full_disk_names_the_file_being_written(tmp_path, sources):  # noqa: F811
    old_src, _ = sources
    with _small_filesystem(tmp_path / "small", "1m") as mount:
        home = mount / "home"
        r = subprocess.run(
            CLI + ["run", "--home", str(home), "--source", str(old_src)],
            cwd=ROOT,
            env={**_env(home), "DAGSTER_HOME": str(tmp_path / "dagster")},  # the run history elsewhere
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 1
        assert re.fullmatch(
            r"Error: (ingest and cleaning|quarter \S+) failed: step \w+: no space left on device while writing "
            + re.escape(str(home / "warehouse.duckdb"))
            + r"(\.wal)?\n",
            r.stderr,
        ), r.stderr
        assert "Traceback" not in r.stdout


# -- 4. waiting for the lock, 5. the rejected rows -----------------------------------------------------------


@pytest.fixture(scope="module")
def locked_run(tmp_path_factory, sources, homes):  # noqa: F811
    """`seg-pipeline run --quarters latest` on a copy of the v1 home while another process holds the warehouse
    until the run says it is waiting (+1 s)."""
    old_src, _ = sources
    home = tmp_path_factory.mktemp("locked") / "home"
    shutil.copytree(homes[0], home)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys; c = duckdb.connect({str(home / 'warehouse.duckdb')!r}); "
            "print('locked', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    proc = _run_proc(home, old_src, "--quarters", "latest")
    try:
        proc.wait_for(proc.err, "waiting for the warehouse")
        time.sleep(1)
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    rc = proc.finish()
    return home, holder.pid, rc, proc.out, proc.err


@pytest.mark.slow
def test_a_run_waiting_for_the_warehouse_lock_says_so_and_when_it_gets_in(locked_run):
    home, holder_pid, rc, out, err = locked_run
    assert rc == 0, "\n".join(err)[-2000:]
    db = home / "warehouse.duckdb"
    assert err[0] == (
        f"seg-pipeline: waiting for the warehouse {db}: it is locked by another process (PID {holder_pid}); "
        "retrying for up to 102s"
    )
    m = re.fullmatch(rf"seg-pipeline: got the warehouse {re.escape(str(db))} after waiting (\d+\.\d)s", err[1])
    assert m and float(m.group(1)) >= 1.0, err
    assert len(err) == 2, err


@pytest.mark.slow
def test_the_closing_summary_counts_rejected_rows_per_reason(locked_run):
    home, _, rc, out, _ = locked_run
    assert rc == 0
    counts = _rows(home, "SELECT rejection_reason, count(*) FROM rejected_sales GROUP BY 1 ORDER BY 2 DESC, 1")
    assert len(counts) >= 3 and sum(n for _, n in counts) > 0
    expected = f"rejected {sum(n for _, n in counts):,} rows: " + " · ".join(f"{r} {n:,}" for r, n in counts)
    lines = [line for line in out if line.startswith("rejected ")]
    assert lines == [expected]
    assert out.index(expected) == next(i for i, line in enumerate(out) if line.startswith("finished ")) + 1
