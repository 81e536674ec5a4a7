"""Run a data contract with Great Expectations on a DuckDB table, in place, and turn the result into a
Dagster asset check result.

GX 1.x validates the table through its SQL data source (SQLAlchemy + duckdb-engine) on the pipeline's own
DuckDB connection: every expectation is a SQL query over the whole table, nothing is pulled into pandas.
See `gx_duckdb.py` for the one compatibility fix this needs in GX 1.24.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import dagster as dg
import duckdb

from .. import escaping
from .contracts import Contract, Rule, load_contract
from .gx_duckdb import validate_table
from .outcome import MAX_EXAMPLES, RuleOutcome, _short


@dataclass
class ContractOutcome:
    contract: Contract
    table: str
    rows: int
    outcomes: list[RuleOutcome]
    seconds: float
    source: str = ""

    @property
    def failed(self) -> list[RuleOutcome]:
        return [o for o in self.outcomes if not o.success]

    @property
    def blocking(self) -> bool:
        return any(o.severity == "error" for o in self.failed)

    def summary_md(self) -> str:
        lines = ["| rule | column | severity | result | unexpected | % | examples |", "|---|---|---|---|---|---|---|"]
        for o in self.outcomes:
            result = "pass" if o.success else ("ERROR" if o.error else "FAIL")
            ex = ", ".join(escaping.markdown(_short(x, 40)) for x in o.examples[:3])  # values from the data
            pct = "" if o.unexpected_percent is None else f"{o.unexpected_percent:.2f}"
            cnt = "" if o.unexpected_count is None else f"{o.unexpected_count:,}"
            lines.append(f"| {o.rule} | {o.column or ''} | {o.severity} | {result} | {cnt} | {pct} | {ex} |")
        return "\n".join(lines)

    def check_result(self, asset_key: str | None = None) -> dg.AssetCheckResult:
        passed = not self.failed
        if passed:
            desc = f"All {len(self.outcomes)} rules of {self.contract.path.name} passed on {self.rows:,} rows."
        else:
            desc = self.failure_message()
        return dg.AssetCheckResult(
            check_name="data_contract",
            asset_key=asset_key,
            passed=passed,
            severity=dg.AssetCheckSeverity.ERROR if self.blocking else dg.AssetCheckSeverity.WARN,
            description=desc[:2000],
            metadata={
                "contract": dg.MetadataValue.path(str(self.contract.path)),
                "rows_validated": self.rows,
                "rules": len(self.outcomes),
                "rules_failed": len(self.failed),
                "validation_seconds": round(self.seconds, 3),
                "results": dg.MetadataValue.md(self.summary_md()),
                "failed_rules": dg.MetadataValue.json(
                    [
                        {
                            "rule": o.rule,
                            "expectation": o.type,
                            "column": o.column,
                            "severity": o.severity,
                            "unexpected_count": o.unexpected_count,
                            "unexpected_percent": o.unexpected_percent,
                            "examples": [str(x) for x in o.examples[:MAX_EXAMPLES]],
                            "error": o.error,
                        }
                        for o in self.failed
                    ]
                ),
            },
        )

    note: str = ""

    def failure_message(self) -> str:
        src = f" from {self.source}" if self.source else ""
        head = f"{self.contract.asset}: data contract {self.contract.path.name} failed on {self.rows:,} rows{src}" + (
            " - nothing downstream runs; the published table is unchanged." if self.blocking else " (warnings only)."
        )
        return "\n".join([head] + [o.sentence() for o in self.failed] + ([self.note] if self.note else []))

    def failure_metadata(self) -> dict:
        return {"staged_table": self.table, "contract": str(self.contract.path)}


def _add_sql_rule_detail(con, table: str, rows: int, rule: Rule, o: RuleOutcome) -> None:
    """GX reports only a count for SQL rules (examples only in its COMPLETE format, which would also return
    every unexpected value of the other rules): fetch three violating rows and a percentage ourselves."""
    query = rule.query.replace("{batch}", f'"{table}"')
    try:
        cur = con.cursor()
        df = cur.execute(f"SELECT * FROM ({query}) AS violations LIMIT 3").df()
        cur.close()
        recs = df.to_dict("records")
        col = rule.subject
        if col and col in df.columns:

            def where(r):
                if "_row_number" in r:
                    return f"data row {r['_row_number']}" + (f" of sheet {r['_sheet']}" if r.get("_sheet") else "")
                return f"customer {r['customer_id']}" if "customer_id" in r else ""

            o.examples = [f"{where(r)}: {col}={r[col]!r}".lstrip(": ") for r in recs]
        else:
            o.examples = [
                {k: v for k, v in r.items() if not str(k).startswith("_") or k in ("_row_number", "_sheet")}
                for r in recs
            ]
    except duckdb.Error:
        pass
    row_level = " ".join(rule.query.split()).upper().startswith("SELECT * FROM {BATCH}")
    if row_level and o.unexpected_count is not None and rows:
        o.unexpected_percent = 100.0 * o.unexpected_count / rows
    elif not row_level and o.examples and isinstance(o.examples[0], dict):
        # a summary query (one row of figures, e.g. rows_out_of_range=177): report what it observed
        o.observed = ", ".join(f"{k}={_short(v, 40)}" for k, v in o.examples[0].items())
        o.unexpected_count, o.examples = None, []


def run_contract(
    con: duckdb.DuckDBPyConnection,
    asset: str,
    table: str,
    params: dict,
    context: dg.AssetExecutionContext | None = None,
    contract: Contract | None = None,
    note: str = "",
) -> ContractOutcome:
    contract = contract or load_contract(asset)
    rules: list[Rule] = [r.render(params, contract.path.name) for r in contract.rules]
    rows = con.execute(f'SELECT count(*) FROM "{table}"').fetchall()[0][0]
    source = ""
    if "_source_file" in [c[0] for c in con.execute(f'DESCRIBE "{table}"').fetchall()]:
        files = [r[0] for r in con.execute(f'SELECT DISTINCT _source_file FROM "{table}" LIMIT 5').fetchall()]
        source = ", ".join(str(f) for f in files)
    t0 = time.perf_counter()
    outcomes = validate_table(con, table, rules, suite_name=f"{asset}_contract")
    for rule, o in zip(rules, outcomes):
        if rule.type == "unexpected_rows" and not o.success and not o.error:
            _add_sql_rule_detail(con, table, rows, rule, o)
    outcome = ContractOutcome(contract, table, rows, outcomes, time.perf_counter() - t0, source, note)
    if context is not None:
        log = context.log.error if outcome.blocking else context.log.warning if outcome.failed else context.log.info
        log(
            outcome.failure_message()
            if outcome.failed
            else f"{asset}: contract passed ({rows:,} rows, {outcome.seconds:.2f}s)"
        )
    return outcome
