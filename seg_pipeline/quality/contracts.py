"""Data contracts: the YAML files in data_contracts/, one per asset, loaded into GX expectation suites.

A contract file lists expectations in Great Expectations' own vocabulary:

    asset: cleaned_sales
    description: ...
    expectations:
      - rule: quantity is positive                          # plain-language rule, shown in the UI
        type: expect_column_values_to_be_between            # any GX 1.x expectation type ...
        kwargs: {column: quantity, min_value: 0, strict_min: true}
        severity: error                                     # error blocks everything downstream; warn does not
      - rule: line_revenue = quantity x price
        type: unexpected_rows                               # ... or a SQL rule: rows returned are violations
        query: SELECT * FROM {batch} WHERE abs(line_revenue - quantity * price) > 1e-6
        column: line_revenue                                # optional: the column shown with examples

Values may refer to run parameters as ${name} (for example ${lookback_days} or ${rejected_table}); the
asset supplies them. `{batch}` is the table under validation.
"""

from __future__ import annotations

import importlib.util
import string
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

from ..settings import CONTRACTS_DIR

SEVERITIES = {"error", "warn"}


class ContractError(ValueError):
    """A contract file that cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Rule:
    rule: str
    type: str
    kwargs: dict = field(default_factory=dict)
    query: str | None = None
    severity: str = "error"
    column: str | None = None  # the column a SQL rule is about (shown with its examples)

    @property
    def subject(self) -> str | None:
        return self.kwargs.get("column") or self.column

    def render(self, params: dict, where: str = "") -> Rule:
        try:
            return self._render(params)
        except KeyError as exc:
            raise ContractError(
                f"data contract {where}, rule {self.rule!r} uses ${{{exc.args[0]}}}, which the asset does not "
                f"supply (it supplies: {sorted(params)})"
            ) from None

    def _render(self, params: dict) -> Rule:
        def sub(v):
            if isinstance(v, str):
                t = string.Template(v)
                if v.startswith("${") and v.endswith("}") and v.count("$") == 1:
                    return params[v[2:-1]]  # a whole-value reference keeps its type (number, list)
                return t.substitute(params)
            if isinstance(v, list):
                return [sub(x) for x in v]
            if isinstance(v, dict):
                return {k: sub(x) for k, x in v.items()}
            return v

        return Rule(
            rule=self.rule,
            type=self.type,
            kwargs=sub(self.kwargs),
            query=sub(self.query) if self.query else None,
            severity=self.severity,
            column=self.column,
        )


@dataclass(frozen=True)
class Contract:
    asset: str
    description: str
    rules: tuple[Rule, ...]
    path: Path

    def describe(self) -> str:
        lines = [f"Data contract {self.path.name} (Great Expectations; ERROR rules block downstream):"]
        for r in self.rules:
            lines.append(f"- [{r.severity.upper()}] {r.rule}")
        return "\n".join(lines)


def contract_path(asset: str, directory: Path = CONTRACTS_DIR) -> Path:
    return directory / f"{asset}.yaml"


@cache
def known_expectation_types() -> frozenset[str]:
    """GX's core expectation types, read from the names of its modules (one per expectation) without
    importing GX, which takes seconds: contracts are loaded whenever the Dagster definitions are."""
    spec = importlib.util.find_spec("great_expectations")
    core = Path(spec.origin).parent / "expectations" / "core"
    return frozenset(p.stem for p in core.glob("expect_*.py"))


@cache
def load_contract(asset: str, directory: Path = CONTRACTS_DIR) -> Contract:
    path = contract_path(asset, directory)
    if not path.is_file():
        raise ContractError(f"no data contract for asset {asset}: {path} is missing")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ContractError(f"data contract {path} is not valid YAML: {exc}") from exc
    rules = []
    for i, e in enumerate(data.get("expectations") or [], start=1):
        where = f"data contract {path}, expectation #{i}"
        if not isinstance(e, dict) or "type" not in e or "rule" not in e:
            raise ContractError(f"{where}: each expectation needs `rule` and `type`")
        sev = str(e.get("severity", "error")).lower()
        if sev not in SEVERITIES:
            raise ContractError(f"{where}: severity {sev!r} is not one of {sorted(SEVERITIES)}")
        if e["type"] != "unexpected_rows" and e["type"] not in known_expectation_types():
            raise ContractError(
                f"{where}: type {e['type']!r} is neither a Great Expectations core expectation nor unexpected_rows"
            )
        if e["type"] == "unexpected_rows" and not e.get("query"):
            raise ContractError(f"{where}: an unexpected_rows rule needs a `query`")
        rules.append(
            Rule(
                rule=str(e["rule"]),
                type=str(e["type"]),
                kwargs=dict(e.get("kwargs") or {}),
                query=e.get("query"),
                severity=sev,
                column=e.get("column"),
            )
        )
    if not rules:
        raise ContractError(f"data contract {path} has no expectations")
    return Contract(
        asset=data.get("asset", asset), description=data.get("description", ""), rules=tuple(rules), path=path
    )
