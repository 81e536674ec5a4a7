"""Tables and files written all-or-nothing.

Every asset builds its output in a staging table (`__stage_<table>`), validates it against its data
contract, and only then publishes it: inside one DuckDB transaction it replaces the whole table
(unpartitioned assets) or the rows of its partition (quarterly assets). A failed contract, an exception
or a killed process therefore leaves the previously published table as it was.

Files (model artifacts, reports) are written to a temporary name in the target folder and renamed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb

from .escaping import csv_frame
from .readers import quote_ident


def stage_name(table: str) -> str:
    return f"__stage_{table}"


def table_exists(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    return bool(
        con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = ? AND table_schema = 'main'",
            [table],
        ).fetchall()[0][0]
    )


def create_stage(con: duckdb.DuckDBPyConnection, table: str, select_sql: str, params=None) -> str:
    """(Re)build the staging table of `table` from a SELECT; returns the staging table name."""
    stage = stage_name(table)
    con.execute(f"CREATE OR REPLACE TABLE {quote_ident(stage)} AS {select_sql}", params or {})
    return stage


def create_stage_from_df(con: duckdb.DuckDBPyConnection, table: str, df) -> str:
    stage = stage_name(table)
    con.register("__df_to_stage", df)
    try:
        con.execute(f"CREATE OR REPLACE TABLE {quote_ident(stage)} AS SELECT * FROM __df_to_stage")
    finally:
        con.unregister("__df_to_stage")
    return stage


FAILPOINT_ENV = "SEG_PIPELINE_FAILPOINT"


class FailpointError(RuntimeError):
    """The error a `fail:<point>` failpoint raises: an ordinary step failure."""


def failpoint(name: str) -> None:
    """Fault injection for the reliability tests: when SEG_PIPELINE_FAILPOINT names this point, the process
    kills itself (SIGKILL: no cleanup, no rollback handler), as a power cut or an OOM kill would; when it is
    `wait:<point>`, the process says so on stderr and sleeps there (up to 60 s) for a test to signal it; when
    it is `fail:<point>`, the step raises FailpointError there (a step that fails the ordinary way).
    Points: `before_commit:<table>` (everything written, not committed), `before_rename:<file name>`,
    `segment_insights:<quarter>` (the quarter's figures computed, nothing written or published yet)."""
    value = os.environ.get(FAILPOINT_ENV)
    if value == name:
        os.kill(os.getpid(), signal.SIGKILL)
    elif value == f"wait:{name}":
        print(f"failpoint {name}: waiting", file=sys.stderr, flush=True)
        time.sleep(60)
    elif value == f"fail:{name}":
        raise FailpointError(f"failpoint {name}")


@contextlib.contextmanager
def transaction(con: duckdb.DuckDBPyConnection, label: str = "") -> Iterator[duckdb.DuckDBPyConnection]:
    """One DuckDB transaction: everything inside is published together or not at all."""
    con.execute("BEGIN TRANSACTION")
    try:
        yield con
        failpoint(f"before_commit:{label}")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    else:
        con.execute("COMMIT")


def publish_tables(
    con: duckdb.DuckDBPyConnection,
    tables: list[str],
    state: tuple[str, str] | None = None,
    append: bool = False,
    also=None,
) -> None:
    """Replace each table by its staging table (renamed, not copied), or with `append` add the staging
    table's rows to it, all in one transaction. `state` = (step, fingerprint) is recorded in the same
    transaction, and `also(con)` runs inside it."""
    with transaction(con, tables[0]):
        if also is not None:
            also(con)
        for t in tables:
            if append:
                con.execute(f"INSERT INTO {quote_ident(t)} BY NAME SELECT * FROM {quote_ident(stage_name(t))}")
                con.execute(f"DROP TABLE {quote_ident(stage_name(t))}")
            else:
                con.execute(f"DROP TABLE IF EXISTS {quote_ident(t)}")
                con.execute(f"ALTER TABLE {quote_ident(stage_name(t))} RENAME TO {quote_ident(t)}")
        if state:
            set_state_sql(con, *state)


def publish_partition(
    con: duckdb.DuckDBPyConnection, table: str | list[str], key_column: str, key: str, stage: str | None = None
) -> None:
    """Replace the rows of one partition of `table` (or of several tables, together) by their staging
    tables' rows, in one transaction. The first publication creates a table with its stage's schema. A
    quarter rebuilt this way is no longer superseded (see SUPERSEDED)."""
    tables = [table] if isinstance(table, str) else list(table)
    with transaction(con, tables[0]):
        for t in tables:
            st = stage if (stage and len(tables) == 1) else stage_name(t)
            if not table_exists(con, t):
                con.execute(f"CREATE TABLE {quote_ident(t)} AS SELECT * FROM {quote_ident(st)} LIMIT 0")
            con.execute(f"DELETE FROM {quote_ident(t)} WHERE {quote_ident(key_column)} = ?", [key])
            con.execute(f"INSERT INTO {quote_ident(t)} BY NAME SELECT * FROM {quote_ident(st)}")
            con.execute(f"DROP TABLE {quote_ident(st)}")
            if key_column == "quarter" and table_exists(con, SUPERSEDED):
                con.execute(f"DELETE FROM {SUPERSEDED} WHERE table_name = ? AND quarter = ?", [t, key])


# The quarters of each quarterly table that were built from sales since replaced (a source file removed or
# replaced, another source or mapping). They stay published, as they were, until their quarter is rebuilt
# from the new sales (publish_partition takes them off this list): a quarterly step that fails on the new
# sales never removes a quarter published before. Readers of a previous quarter (tables.py) treat a
# superseded quarter as absent, so nothing new is built on the old sales.
SUPERSEDED = "_superseded_quarters"
SUPERSEDED_DDL = (
    f"CREATE TABLE IF NOT EXISTS {SUPERSEDED} (table_name VARCHAR, quarter VARCHAR, superseded_at TIMESTAMP, "
    "PRIMARY KEY (table_name, quarter))"
)


def superseded_quarters(con: duckdb.DuckDBPyConnection) -> set[str]:
    """The quarters with any table still built from superseded sales."""
    if not table_exists(con, SUPERSEDED):
        return set()
    return {r[0] for r in con.execute(f"SELECT DISTINCT quarter FROM {SUPERSEDED}").fetchall()}


def is_superseded(con: duckdb.DuckDBPyConnection, table: str, quarter: str) -> bool:
    """Whether `table`'s rows of `quarter` were built from sales that have since been replaced."""
    if not table_exists(con, SUPERSEDED):
        return False
    return bool(
        con.execute(
            f"SELECT count(*) FROM {SUPERSEDED} WHERE table_name = ? AND quarter = ?", [table, quarter]
        ).fetchall()[0][0]
    )


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def _atomic_target(path: Path) -> Iterator[str]:
    """A temporary file beside `path` to write to; on success it is fsynced and renamed over `path`, on any
    error removed. Readers see the old file or the new one, never a part."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
        failpoint(f"before_rename:{path.name}")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    with _atomic_target(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_csv(con: duckdb.DuckDBPyConnection, df, path: Path, dates: tuple[str, ...] = ()) -> Path:
    """Write a DataFrame as CSV (header, quotes only where needed) through DuckDB's writer: about 4x faster
    than pandas' to_csv on a million rows. `dates`: timestamp columns written as plain dates. Every CSV the
    pipeline writes goes through here: text cells that a spreadsheet would run as a formula (= + - @ tab CR
    first) are written with a leading `'` (escaping.csv_frame); numbers stay numbers."""
    df = csv_frame(df)
    replace = ", ".join(f"CAST({quote_ident(c)} AS DATE) AS {quote_ident(c)}" for c in dates if c in df.columns)
    con.register("__df_to_csv", df)
    try:
        with _atomic_target(path) as tmp:
            con.execute(
                f"COPY (SELECT * {f'REPLACE ({replace})' if replace else ''} FROM __df_to_csv) TO $path "
                "(FORMAT csv, HEADER true)",
                {"path": tmp},
            )
    finally:
        con.unregister("__df_to_csv")
    return path


# Small key/value table recording what each unpartitioned step last consumed, so unchanged inputs are skipped.
STATE_DDL = (
    "CREATE TABLE IF NOT EXISTS _pipeline_state (step VARCHAR PRIMARY KEY, fingerprint VARCHAR, updated_at TIMESTAMP)"
)


def get_state(con: duckdb.DuckDBPyConnection, step: str) -> str | None:
    con.execute(STATE_DDL)
    row = next(iter(con.execute("SELECT fingerprint FROM _pipeline_state WHERE step = ?", [step]).fetchall()), None)
    return row[0] if row else None


def set_state_sql(con: duckdb.DuckDBPyConnection, step: str, fingerprint: str) -> None:
    """Record a step's fingerprint (call inside the publishing transaction)."""
    con.execute(STATE_DDL)
    con.execute("INSERT OR REPLACE INTO _pipeline_state VALUES (?, ?, now()::TIMESTAMP)", [step, fingerprint])
