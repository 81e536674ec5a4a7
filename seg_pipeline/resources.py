"""Resources: the pipeline home (source, mapping, artifact folders) and the DuckDB warehouse."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from . import settings
from .readers import ColumnMapping


class LockedWarehouseError(dg.Failure):
    pass


class PipelineHome(dg.ConfigurableResource):
    """Where the pipeline reads its source and writes artifacts. Empty `source` = the generated sample;
    empty `home` = the default home (settings.home_dir(), resolved when a run uses it, not at import)."""

    home: str = ""
    source: str = ""
    column_mapping: str = ""

    @property
    def path(self) -> Path:
        return Path(self.home).expanduser().resolve() if self.home else settings.home_dir()

    @property
    def database(self) -> Path:
        return self.path / "warehouse.duckdb"

    def source_path(self) -> Path:
        """The configured source, or the sample file (generated on first use)."""
        if self.source:
            return Path(self.source).expanduser()
        sample = settings.default_sample_path(self.path)
        if not sample.exists():
            from .sample_data import write_transactions

            write_transactions(sample)
        return sample

    def mapping(self) -> ColumnMapping:
        return ColumnMapping.from_yaml(self.column_mapping or None)

    def models_dir(self, quarter: str) -> Path:
        return self.path / "models" / quarter

    def reports_dir(self, quarter: str) -> Path:
        return self.path / "reports" / quarter


LOCK_DELAYS = tuple(0.1 * 2**i for i in range(10))
"""Seconds between attempts to open a locked warehouse (dagster-duckdb's backoff: 0.1 s doubling, 10 retries,
about 102 s in all)."""


@dataclass(frozen=True)
class LockWait:
    """A wait for the warehouse lock: `event` is "waiting" (the first attempt found it locked) or "acquired"
    (a later attempt got it). `pid`: the holder's process id, from DuckDB's message, if it names one."""

    event: str
    database: str
    pid: int | None
    max_wait: float
    waited: float = 0.0

    @property
    def message(self) -> str:
        if self.event == "acquired":
            return f"got the warehouse {self.database} after waiting {self.waited:.1f}s"
        holder = f" (PID {self.pid})" if self.pid is not None else ""
        return (
            f"waiting for the warehouse {self.database}: it is locked by another process{holder}; "
            f"retrying for up to {self.max_wait:.0f}s"
        )


lock_wait_listeners: list[Callable[[LockWait], None]] = []
"""Called when a connection starts waiting for the lock and when it gets it (the CLI adds one that prints
to the console, where the Dagster log it also goes to is hidden)."""


def _notify_lock_wait(wait: LockWait) -> None:
    dg.get_dagster_logger().warning(wait.message)
    for listener in list(lock_wait_listeners):
        listener(wait)


def _is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, (duckdb.IOException, RuntimeError)) and "lock" in str(exc).lower()


def connect_waiting(database: str, config: dict) -> duckdb.DuckDBPyConnection:
    """duckdb.connect, retried while another process holds the file's lock (LOCK_DELAYS), telling the
    lock_wait_listeners when the wait starts and when it ends. Other errors (a read-only or full disk) are
    raised at once: waiting would not help."""
    config = {"custom_user_agent": "dagster", **config}
    started = None
    for delay in (*LOCK_DELAYS, None):
        try:
            con = duckdb.connect(database, read_only=False, config=config)
        except (duckdb.IOException, RuntimeError) as exc:
            if delay is None or not _is_lock_error(exc):
                raise
            if started is None:
                started = time.monotonic()
                pid = re.search(r"\(PID (\d+)\)", str(exc))
                _notify_lock_wait(LockWait("waiting", database, int(pid.group(1)) if pid else None, sum(LOCK_DELAYS)))
            time.sleep(delay)
        else:
            if started is not None:
                _notify_lock_wait(LockWait("acquired", database, None, sum(LOCK_DELAYS), time.monotonic() - started))
            return con
    raise AssertionError("unreachable")


class Warehouse(DuckDBResource):
    """dagster-duckdb's DuckDBResource on <home>/warehouse.duckdb, which waits while another process holds the
    file (connect_waiting: dagster-duckdb's delays, and it says so through lock_wait_listeners and the Dagster
    log); then fails with a message that says so instead of DuckDB's lock stack trace. `database` empty: the
    warehouse of `home` (empty: the default home). The connection is closed on every path, the asset's failure
    included."""

    database: str = ""
    home: str = ""
    memory_limit: str = "2GB"
    """DuckDB's memory limit before it spills to <home>/duckdb_tmp."""

    def _resolved(self) -> DuckDBResource:
        home = Path(self.home).expanduser().resolve() if self.home else settings.home_dir()
        database = self.database or str(home / "warehouse.duckdb")
        config = {
            "memory_limit": self.memory_limit or "2GB",
            "temp_directory": str(Path(database).parent / "duckdb_tmp"),
            **(self.connection_config or {}),
        }
        return DuckDBResource(database=database, connection_config=config)

    @contextlib.contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        target = self._resolved()
        Path(target.database).parent.mkdir(parents=True, exist_ok=True)
        with contextlib.ExitStack() as stack:
            try:
                con = connect_waiting(target.database, target.connection_config)
            except (duckdb.IOException, RuntimeError) as exc:
                if _is_lock_error(exc):
                    raise LockedWarehouseError(
                        description=(
                            f"The warehouse {target.database} is in use by another process (another seg_pipeline "
                            "run, a backfill or an open DuckDB shell). DuckDB allows one writer at a time: wait for "
                            "it to finish and re-run. Detail: " + str(exc).splitlines()[0]
                        )
                    ) from exc
                raise
            stack.callback(con.close)  # on every path, the asset's failure included
            yield con


def build_resources(home: str | Path | None = None, source: str | None = None, mapping: str | None = None) -> dict:
    """Resources with explicit values (the CLI, the benchmark, the tests): the home, source and mapping given,
    else read from the environment now, when a run is being prepared."""
    home_path = Path(home).expanduser().resolve() if home else settings.home_dir()
    return {
        "pipeline": PipelineHome(
            home=str(home_path),
            source=str(source if source is not None else settings.configured_source()),
            column_mapping=str(mapping if mapping is not None else settings.configured_mapping()),
        ),
        "warehouse": Warehouse(home=str(home_path), memory_limit=settings.duckdb_memory_limit()),
    }


def env_resources() -> dict:
    """The code location's resources, configured the Dagster way: dg.EnvVar values, resolved by Dagster when
    a run starts (nothing is read at import). scripts/ui.sh exports every variable (empty = default)."""
    return {
        "pipeline": PipelineHome(
            home=dg.EnvVar("SEG_PIPELINE_HOME"),
            source=dg.EnvVar("SEG_PIPELINE_SOURCE"),
            column_mapping=dg.EnvVar("SEG_PIPELINE_COLUMN_MAPPING"),
        ),
        "warehouse": Warehouse(
            home=dg.EnvVar("SEG_PIPELINE_HOME"), memory_limit=dg.EnvVar("SEG_PIPELINE_DUCKDB_MEMORY")
        ),
    }
