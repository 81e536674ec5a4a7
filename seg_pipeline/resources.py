"""Resources: the pipeline home (source, mapping, artifact folders) and the DuckDB warehouse."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
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


class Warehouse(DuckDBResource):
    """dagster-duckdb's DuckDBResource on <home>/warehouse.duckdb, which waits (with backoff) while another
    process holds the file; then fails with a message that says so instead of DuckDB's lock stack trace.
    `database` empty: the warehouse of `home` (empty: the default home). The connection is closed on every
    path, the asset's failure included."""

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
                con = stack.enter_context(target.get_connection())
            except (duckdb.IOException, RuntimeError) as exc:
                if "lock" in str(exc).lower():
                    raise LockedWarehouseError(
                        description=(
                            f"The warehouse {target.database} is in use by another process (another seg_pipeline "
                            "run, a backfill or an open DuckDB shell). DuckDB allows one writer at a time: wait for "
                            "it to finish and re-run. Detail: " + str(exc).splitlines()[0]
                        )
                    ) from exc
                raise
            # dagster-duckdb closes the connection only when the block ends normally: close it on every path
            stack.callback(con.close)
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
