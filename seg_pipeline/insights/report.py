"""The executive summary of a quarter: plain-language findings, tables and plots, as one self-contained HTML
file (plots embedded as base64 PNG data URIs, so it opens anywhere, offline, mailed or archived) and as
Markdown (plots referenced as the PNG files next to it).

Templates: seg_pipeline/insights/templates/report.html.j2 and report.md.j2. The findings are computed here
once (`key_findings`) and shared by both files and by the Dagster materialisation metadata.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import jinja2
import markupsafe
import pandas as pd

from .. import escaping
from .analysis import Concentration, Stability

TEMPLATES = Path(__file__).resolve().parent / "templates"
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
PLOTS_DIR = "plots"


@dataclass(frozen=True)
class Plot:
    name: str  # file stem: plots/<name>.png
    title: str
    caption: str
    png: bytes

    @property
    def filename(self) -> str:
        return f"{PLOTS_DIR}/{self.name}.png"

    @property
    def data_uri(self) -> str:
        return "data:image/png;base64," + base64.b64encode(self.png).decode("ascii")

    def markdown_image(self) -> str:
        """The plot as a Markdown image with its data URI (Dagster's metadata), the title escaped."""
        return f"![{escaping.markdown(self.title)}]({self.data_uri})"


@dataclass
class ReportData:
    quarter: str  # partition key, 2011-07-01
    quarter_label: str  # 2011-Q3
    as_of_date: str
    previous_label: str
    unit: str  # "store" or "country": what the concentration per store is computed over
    lookback_months: int
    concentration: Concentration
    headline: str
    profile: pd.DataFrame
    stores: pd.DataFrame
    store_threshold: float
    min_store_customers: int
    winback: pd.DataFrame
    winback_threshold: float
    winback_rule: str  # how the revenue threshold was set, in words
    winback_min_days: int
    moves: dict[str, int]
    biggest_moves: pd.DataFrame
    first_quarter: bool
    trials: pd.DataFrame
    k: int
    k_reason: str
    stability: Stability | None = None
    plots: list[Plot] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)  # label -> file name in the report folder
    # customer value (customer_value): the quarter's model state, why when not fitted, and the parameters
    value_state: str = ""
    value_note: str = ""
    value_parameters: pd.DataFrame | None = None
    clv_horizon_weeks: int = 52
    value_share_active: float | None = None  # share of the quarter's customers with P(alive) >= 0.5
    generated_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"))

    @property
    def plot_map(self) -> dict[str, Plot]:
        return {p.name: p for p in self.plots}

    @property
    def flagged(self) -> pd.DataFrame:
        return self.stores[self.stores["flagged"]]

    @property
    def winback_revenue(self) -> float:
        return float(self.winback["revenue_at_risk"].sum()) if len(self.winback) else 0.0

    @property
    def total_revenue(self) -> float:
        return self.concentration.revenue


def _money(x: float) -> str:
    return f"{x:,.0f}"


def _list(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def store_sentence(d: ReportData) -> str:
    units = f"{d.unit}s" if d.unit == "store" else "countries"
    assessed = d.stores[d.stores["assessed"]]
    small = len(d.stores) - len(assessed)
    small_txt = (
        f" {small} of the {len(d.stores)} {units} have fewer than {d.min_store_customers} customers and are not "
        f"assessed (their 10 largest customers are nearly all of their customers)."
        if small
        else ""
    )
    if d.flagged.empty:
        return (
            f"No {d.unit} depends on its 10 largest customers for more than {d.store_threshold:.0%} of its "
            f"revenue ({len(assessed)} {units} assessed).{small_txt}"
        )
    parts = [
        f"{r.store} ({r.top10_revenue_share:.0%} from its top 10 of {r.customers:,} customers; the largest alone "
        f"{r.largest_customer_share:.0%})"
        for r in d.flagged.itertuples()
    ]
    n = len(d.flagged)
    return (
        f"{n} of {len(assessed)} {units} assessed depend{'s' if n == 1 else ''} on {'its' if n == 1 else 'their'} "
        f"10 largest customers for more than {d.store_threshold:.0%} of revenue: {_list(parts)}. Losing a few "
        f"accounts there would cut that {d.unit}'s revenue sharply.{small_txt}"
    )


def winback_sentence(d: ReportData) -> str:
    if d.winback.empty:
        return (
            f"No high-value customer ({d.winback_rule}) has gone {d.winback_min_days} days or more without "
            "buying: nothing to win back."
        )
    top = d.winback.iloc[0]
    share = d.winback_revenue / d.total_revenue if d.total_revenue else 0.0
    txt = (
        f"{len(d.winback):,} high-value customers ({d.winback_rule}) have not bought for {d.winback_min_days} days "
        f"or more: {_money(d.winback_revenue)} of revenue at risk ({share:.1%} of the last "
        f"{d.lookback_months} months' revenue)."
    )
    if "ranked_by" in d.winback and top.ranked_by == "value_at_risk":
        value = float(d.winback["value_at_risk"].sum())
        return txt + (
            f" Ranked by value at risk ({_money(value)} expected to be lost over the next {d.clv_horizon_weeks} "
            f"weeks if none comes back), the first is customer {top.customer_id} (P(alive) {top.p_alive:.0%}, "
            f"value at risk {_money(top.value_at_risk)}, last order {int(top.recency_days)} days ago, {top.segment})."
        )
    return txt + (
        f" Ranked by past revenue (no customer-value fit this quarter), the largest is customer {top.customer_id} "
        f"({_money(top.revenue_at_risk)}, last order {int(top.recency_days)} days ago, {top.segment})."
    )


def value_sentence(d: ReportData) -> str:
    """What the buy-till-you-die models say about the quarter's customers, or plainly why there is no fit."""
    if d.value_state != "fitted":
        why = d.value_note or "customer_value has no fit for the quarter"
        return (
            f"No customer-value fit for {d.quarter_label}: {why.rstrip('.')}. P(alive) and CLV are left empty and "
            "the win-back list is ranked by past revenue (revenue at risk)."
        )
    alive = d.value_share_active or 0.0
    top = d.profile.sort_values(["mean_p_alive", "segment"], ascending=[True, True]).iloc[0]
    return (
        f"By the BG/NBD and Gamma-Gamma models (full purchase history to {d.as_of_date}), {alive:.0%} of this "
        f"quarter's customers are more likely than not still active; together they are expected to bring "
        f"{_money(float(d.profile['total_clv'].sum()))} over the next {d.clv_horizon_weeks} weeks (discounted CLV). "
        f"{top.segment} has the lowest mean P(alive) ({top.mean_p_alive:.0%}). The win-back list is ranked by "
        "value at risk: (1 - P(alive)) x the customer's CLV if still active."
    )


def migration_sentence(d: ReportData) -> str:
    m = d.moves
    if d.first_quarter:
        return (
            f"{d.quarter_label} is the first quarter segmented: all {m['new'] + m['returning']:,} customers are "
            "new, there is no migration yet."
        )
    txt = (
        f"Since {d.previous_label}: {m['upgraded']:,} customers moved up to a more valuable segment and "
        f"{m['downgraded']:,} moved down; {m['stayed']:,} stayed, {m['new']:,} are new (first purchase ever), "
        f"{m['returning']:,} came back after a gap and {m['lapsed']:,} lapsed "
        f"(no purchase in the last {d.lookback_months} months)."
    )
    if m.get("sideways"):
        txt += f" {m['sideways']:,} moved between segments of equal value."
    big = d.biggest_moves[~d.biggest_moves["move"].isin(["new", "returning"])].head(2)
    if not big.empty:
        flows = [f"{r.from_segment} to {r.to_segment} ({r.customers:,} customers)" for r in big.itertuples()]
        txt += " Largest moves: " + _list(flows) + "."
    return txt


def concentration_sentence(d: ReportData) -> str:
    c = d.concentration
    return (
        f"Revenue is concentrated (Gini {c.gini:.2f}): the top 10% of customers bring {c.top_10pct_share:.0%} of "
        f"revenue and the top 20% bring {c.top_20pct_share:.0%}; half of all revenue comes from "
        f"{c.customers_for_50pct:,} customers ({c.share_customers_for_50pct:.1%}) and 80% from "
        f"{c.customers_for_80pct:,} ({c.share_customers_for_80pct:.1%})."
    )


def stability_sentence(d: ReportData) -> str:
    s = d.stability
    if s is None:
        return ""
    if s.decision == "initial_fit":
        return f"The segment model was fitted on {d.quarter_label} ({s.reason}); later quarters keep it."
    if s.decision == "reused":
        return (
            f"The segment model fitted on {s.fitted_label} was kept ({s.reason}): every move above is a "
            f"customer's own behaviour; {s.retained_changed_share:.1%} of retained customers changed segment."
        )
    txt = f"The segment model was refitted on {d.quarter_label}: {s.reason}."
    if s.refit_name_change_share is not None:
        txt += (
            f" On the same customers the old and new models agree with adjusted Rand index {s.refit_ari:.2f}; "
            f"the refit itself renamed {s.refit_name_change_share:.1%} of them, so that part of the moves is "
            "the model, not behaviour."
        )
    return txt


def k_sentence(d: ReportData) -> str:
    if not d.k:  # waiting for history: no model yet
        return "No segment model yet: each customer is labelled by the catalogue's rules alone."
    why = d.k_reason.rstrip(".")
    return f"The customers were split into {d.k} clusters" + (f" ({why})." if why else ".")


def key_findings(d: ReportData) -> list[str]:
    return [
        d.headline,
        concentration_sentence(d),
        store_sentence(d),
        winback_sentence(d),
        migration_sentence(d),
        k_sentence(d),
        stability_sentence(d),
        value_sentence(d),
    ]


def _filters(env: jinja2.Environment) -> jinja2.Environment:
    env.filters["pct"] = lambda x, d=1: "" if pd.isna(x) else f"{x:.{d}%}"
    env.filters["num"] = lambda x, d=0: "" if pd.isna(x) else f"{x:,.{d}f}"
    return env


def _markdown_value(value):
    """The Markdown template's finalize hook: every `{{ value }}` is escaped as Markdown text
    (escaping.markdown), except Markup: a macro's output or a fragment of our own marked `| safe`."""
    if isinstance(value, markupsafe.Markup):
        return value
    return markupsafe.Markup(escaping.markdown(value))


@lru_cache(maxsize=1)
def _env() -> dict[str, jinja2.Environment]:
    """One environment per output, per process (templates are compiled once). Both escape every value by
    default, so a template cannot forget to: HTML through Jinja's autoescape, Markdown through a finalize hook
    on top of it (Markdown viewers also render raw HTML). `| safe` marks our own fragments only, never data."""
    common = {
        "loader": jinja2.FileSystemLoader(str(TEMPLATES)),
        "autoescape": True,
        "trim_blocks": True,
        "lstrip_blocks": True,
        "undefined": jinja2.StrictUndefined,
    }
    return {
        "html": _filters(jinja2.Environment(**common)),
        "md": _filters(jinja2.Environment(**common, finalize=_markdown_value)),
    }


def render(d: ReportData) -> tuple[str, str]:
    """(HTML, Markdown) of the report."""
    env = _env()
    ctx = {"d": d, "findings": key_findings(d), "c": d.concentration}
    return env["html"].get_template("report.html.j2").render(**ctx), env["md"].get_template("report.md.j2").render(
        **ctx
    )
