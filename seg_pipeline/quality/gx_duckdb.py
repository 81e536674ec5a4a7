"""Great Expectations 1.x over a DuckDB table, in place, on the pipeline's own DuckDB connection.

Why this module exists: in GX 1.24 the SQL data source over DuckDB returns empty results
(`SqlAlchemyExecutionEngine.execute_query` hands back a result after its connection has been released, and
duckdb-engine results are empty once the connection they came from is closed or rolled back; GX issues
#11579 and #10738). We give GX a SQLAlchemy engine whose DBAPI connections are cursors of our own DuckDB
connection (`creator=`), each query running on its own cursor, so releasing the SQLAlchemy connection
cannot discard a pending result. tests/quality/test_gx_duckdb.py fails if a GX upgrade changes this.

Everything else is plain GX: an ephemeral context, a SQL data source, one table asset per validated table,
a whole-table batch and an ExpectationSuite built from the contract's rules. SQL rules use a subclass of
GX's UnexpectedRowsExpectation that needs one query, not two (_counted_rows_class).
"""

from __future__ import annotations

import contextlib
import io
import os
import threading

import duckdb

_LOCK = threading.Lock()
_IMPORT_LOCK = threading.Lock()
_gx = None
_counted_rows = None  # the SQL-rule expectation class, defined once GX is imported (_counted_rows_class)


def _import_gx():
    global _gx
    with _IMPORT_LOCK:  # an importing_beside() thread may be importing it: wait for it
        if _gx is None:
            # no usage analytics from the pipeline's validations (set before GX reads it, at its import)
            os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
            from .. import runtime

            with runtime.importing():  # not walked by the collector afterwards (seg_pipeline/runtime.py)
                import great_expectations as gx  # ~2 s on this machine

            _gx = gx
    return _gx


@contextlib.contextmanager
def importing_beside():
    """Import Great Expectations on a thread while the caller runs DuckDB work (DuckDB releases the GIL),
    and wait for the import when the block ends. Only around code that imports nothing itself: two threads
    importing the same packages at once can see each other's half-initialised modules (a run's SQLAlchemy
    import beside GX's did exactly that), so no other Python work runs beside it. The raw load uses it:
    GX's import (~2.4 s) then overlaps the load instead of delaying the contract."""
    if _gx is not None:
        yield
        return
    thread = threading.Thread(target=_import_gx, name="gx-import", daemon=True)
    thread.start()
    try:
        yield
    finally:
        thread.join()


def _engine_kwargs(con: duckdb.DuckDBPyConnection) -> dict:
    import duckdb_engine

    class CursorPerQuery(duckdb_engine.ConnectionWrapper):
        """Each DBAPI cursor is its own cursor of the pipeline's connection (same database instance, same
        committed data), so a result stays readable after SQLAlchemy releases the connection."""

        def __init__(self, c):
            super().__init__(c)
            self._base = c

        def cursor(self):
            return duckdb_engine.CursorWrapper(self._base.cursor(), self)

    return {"creator": lambda: CursorPerQuery(con.cursor())}


def _counted_rows_class(gx):
    """GX's UnexpectedRowsExpectation, judged on its count alone.

    GX's own class depends on two metrics, `unexpected_rows_query.table` (up to 200 violating rows) and
    `unexpected_rows_query.row_count`, and computes each with its own query: every SQL rule ran twice, and a
    rule like the duplicate-line check (a GROUP BY over every line hash) is most of a contract's time. The
    rows were never used: in the SUMMARY result format GX returns only the count, and the gate fetches three
    example rows itself when a rule fails (gate._add_sql_rule_detail). This subclass depends on the count
    only, so a rule is one query; success, the observed value and everything else are GX's."""
    global _counted_rows
    if _counted_rows is None:
        from typing import ClassVar

        base = gx.expectations.UnexpectedRowsExpectation

        class UnexpectedRowsCountExpectation(base):
            metric_dependencies: ClassVar[tuple[str, ...]] = ("unexpected_rows_query.row_count",)

            def _validate(self, metrics: dict, runtime_configuration=None, execution_engine=None):
                count = metrics["unexpected_rows_query.row_count"]
                return {"success": count == 0, "result": {"observed_value": count}}

        _counted_rows = UnexpectedRowsCountExpectation
    return _counted_rows


def build_expectation(gx, rule, index: int = 0):
    """A GX expectation object for a contract rule."""
    meta = {"rule": rule.rule, "index": index}
    severity = "critical" if rule.severity == "error" else "warning"
    if rule.type == "unexpected_rows":
        return _counted_rows_class(gx)(
            unexpected_rows_query=rule.query, description=rule.rule, meta=meta, severity=severity
        )
    cls_name = "".join(p.capitalize() for p in rule.type.split("_"))
    cls = getattr(gx.expectations, cls_name, None)
    if cls is None:
        raise ValueError(f"unknown Great Expectations expectation type {rule.type!r} ({cls_name})")
    return cls(**rule.kwargs, meta=meta, severity=severity)


def validate_table(con: duckdb.DuckDBPyConnection, table: str, rules: list, suite_name: str) -> list:
    """Validate every rule on the whole table; one RuleOutcome per rule, in order."""
    from .outcome import RuleOutcome

    gx = _import_gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    with _LOCK:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        ds = context.data_sources.add_sql(
            "warehouse", connection_string="duckdb:///:memory:", kwargs=_engine_kwargs(con)
        )
        asset = ds.add_table_asset(name=table, table_name=table)
        batch = asset.add_batch_definition_whole_table("all_rows").get_batch()
        expectations, outcomes = [], {}
        for i, rule in enumerate(rules):
            try:
                with contextlib.redirect_stdout(io.StringIO()):  # see below
                    expectations.append((i, build_expectation(gx, rule, i)))
            except Exception as exc:  # a contract entry GX cannot build: reported, counts as failed
                # a contract entry GX cannot build is a broken contract: it blocks, whatever its severity
                outcomes[i] = RuleOutcome(
                    rule.rule, rule.type, rule.subject, "error", False, error=f"{type(exc).__name__}: {exc}"
                )
        suite = gx.ExpectationSuite(name=suite_name, expectations=[e for _, e in expectations])
        # GX prints a notice for SQL rules that read another table than {batch} (cross-table rules): expected here
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                result = batch.validate(
                    suite, result_format={"result_format": "SUMMARY", "partial_unexpected_count": 5}
                )
        finally:
            # close the engine's pooled cursors now, not whenever the garbage collector gets to them
            with contextlib.suppress(Exception):
                ds.get_engine().dispose()
        for res in result.results:  # GX may reorder results: match them by the index kept in meta
            i = int(res.expectation_config.meta["index"])
            rule = rules[i]
            r = res.result or {}
            err = None
            exc_info = res.exception_info or {}
            raised = [v for v in exc_info.values() if isinstance(v, dict) and v.get("raised_exception")]
            if exc_info.get("raised_exception"):
                raised.append(exc_info)
            if raised:
                err = str(raised[0].get("exception_message"))[:300]
            examples = r.get("partial_unexpected_list") or []
            if rule.type == "unexpected_rows":
                examples = r.get("observed_value") or examples  # the count: the gate adds example rows on failure
                if not isinstance(examples, list):
                    examples = [examples]
            count = r.get("unexpected_count")
            if rule.type == "unexpected_rows" and count is None and isinstance(r.get("observed_value"), int):
                count = r["observed_value"]
            outcomes[i] = RuleOutcome(
                rule=rule.rule,
                type=rule.type,
                column=rule.subject,
                severity=rule.severity,
                success=bool(res.success) and err is None,
                unexpected_count=count,
                unexpected_percent=r.get("unexpected_percent"),
                observed=r.get("observed_value"),
                examples=list(examples)[:5],
                error=err,
            )
    return [outcomes[i] for i in range(len(rules))]
