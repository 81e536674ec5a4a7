"""Resources: the pipeline home (source, mapping, artifact folders) and the DuckDB warehouse."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from . import settings
from .readers import ColumnMapping


class LockedWarehouseError(dg.Failure):
    pass


class PipelineHome(dg.ConfigurableResource):
    """Where the pipeline reads its source and writes artifacts. Empty `source` = the generated sample."""

    home: str
    source: str = ""
    column_mapping: str = ""

    @property
    def path(self) -> Path:
        return Path(self.home)

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
    """dagster-duckdb's DuckDBResource, which waits (with backoff) while another process holds the file;
    then fails with a message that says so instead of DuckDB's lock stack trace. The connection is closed
    even when the asset fails."""

    @contextlib.contextmanager
    def get_connection(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.database).parent.mkdir(parents=True, exist_ok=True)
        cm = super().get_connection()
        try:
            con = cm.__enter__()
        except (duckdb.IOException, RuntimeError) as exc:
            if "lock" in str(exc).lower():
                raise LockedWarehouseError(
                    description=(
                        f"The warehouse {self.database} is in use by another process (another seg_pipeline run, "
                        "a backfill or an open DuckDB shell). DuckDB allows one writer at a time: wait for it "
                        "to finish and re-run. Detail: " + str(exc).splitlines()[0]
                    )
                ) from exc
            raise
        try:
            yield con
        finally:
            con.close()


def build_resources(home: str | Path | None = None, source: str | None = None, mapping: str | None = None) -> dict:
    home_path = Path(home).expanduser().resolve() if home else settings.home_dir()
    return {
        "pipeline": PipelineHome(
            home=str(home_path),
            source=str(source if source is not None else settings.configured_source()),
            column_mapping=str(mapping if mapping is not None else settings.configured_mapping()),
        ),
        "warehouse": Warehouse(
            database=str(home_path / "warehouse.duckdb"),
            connection_config={
                # DuckDB spills to disk beyond this, so large histories stay within a modest machine's memory
                "memory_limit": settings.duckdb_memory_limit(),
                "temp_directory": str(home_path / "duckdb_tmp"),
            },
        ),
    }
