"""The outcome of one contract rule: shared by the GX runner (gx_duckdb) and the gate that reports it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

MAX_EXAMPLES = 5


@dataclass
class RuleOutcome:
    rule: str
    type: str
    column: str | None
    severity: str
    success: bool
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    observed: object = None
    examples: list = field(default_factory=list)
    error: str | None = None

    def sentence(self) -> str:
        where = f" (column {self.column})" if self.column else ""
        if self.error:
            return f"[{self.severity.upper()}] {self.rule}{where}: could not be evaluated: {self.error}"
        if self.success:
            return f"[{self.severity.upper()}] {self.rule}{where}: passed"
        what = []
        if self.unexpected_count is not None:
            pct = f" ({self.unexpected_percent:.2f}%)" if self.unexpected_percent is not None else ""
            what.append(f"{self.unexpected_count:,} row(s) break it{pct}")
        elif self.observed is not None:
            what.append(f"observed {self.observed}")
        if self.examples and any(x is not None for x in self.examples):
            what.append(f"e.g. {', '.join(_short(x) for x in self.examples[:MAX_EXAMPLES])}")
        return f"[{self.severity.upper()}] {self.rule}{where}: FAILED: " + "; ".join(what)


def _short(x, n: int = 80) -> str:
    s = json.dumps(x, default=str) if not isinstance(x, str) else repr(x)
    return s if len(s) <= n else s[: n - 3] + "..."
