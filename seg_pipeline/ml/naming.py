"""Name clusters by what their customers are, in absolute business terms, never by the cluster index.

The catalogue (seg_pipeline/segments.yaml) holds every name with its description, action, value rank, the
business `conditions` a cluster must meet to carry the name, and a `profile` that breaks ties. Conditions are
on plain figures of the cluster's customers (medians: days, orders, money; `*_ratio`: the cluster's median
over the median customer of the quarter, e.g. `avg_order_value_ratio: {min: 5}` = orders five times the
typical customer's). A name is given only when all its conditions hold. Among the names a cluster qualifies
for, a one-to-one assignment (Hungarian, scipy.optimize.linear_sum_assignment) picks the best profile fit. A
cluster that qualifies for no free name gets an honest descriptive name built from its figures (e.g.
"Active repeat high-spend"), never the least-bad wrong one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import linear_sum_assignment

from ..settings import PACKAGE_DIR
from .scaling import CANDIDATE_FEATURES

CATALOGUE_PATH = PACKAGE_DIR / "segments.yaml"

# the figures conditions may use: medians of the customer features, and <feature>_ratio for the relative ones
FIGURE_FEATURES = list(CANDIDATE_FEATURES)
RATIO_FEATURES = ["monetary", "avg_order_value", "distinct_products", "frequency"]
FIGURES = FIGURE_FEATURES + [f"{f}_ratio" for f in RATIO_FEATURES]
_FORBIDDEN, _DESCRIPTIVE = 1e9, 1e4  # costs: a name whose conditions fail; a descriptive name


@dataclass(frozen=True)
class Segment:
    name: str
    description: str
    action: str
    profile: dict[str, float] = field(default_factory=dict)
    conditions: dict[str, dict[str, float]] = field(default_factory=dict)
    rank: int = 0  # business value order for upgrade/downgrade counting (higher = more valuable; 0 = unranked)

    def broken_conditions(self, figures: pd.Series, tolerance: float = 0.0) -> list[str]:
        """The conditions the cluster's figures break, in words; [] = the name fits. A condition on a figure
        the data cannot compute (e.g. distinct_products of an order-level source) is broken: a name is
        never given on evidence that is not there. `tolerance`: bounds widened by this share (min x (1 - t),
        max x (1 + t)): the hysteresis under which a name, once given, is kept (see `keep_tolerance`)."""
        broken = []
        for fig, bounds in self.conditions.items():
            value = figures.get(fig, np.nan)
            if value is None or pd.isna(value):
                broken.append(f"{fig} not computable")
                continue
            lo = bounds.get("min")
            hi = bounds.get("max")
            if lo is not None and value < lo * (1 - tolerance):
                broken.append(f"{fig} {value:,.4g} < {lo * (1 - tolerance):g}")
            if hi is not None and value > hi * (1 + tolerance):
                broken.append(f"{fig} {value:,.4g} > {hi * (1 + tolerance):g}")
        return broken


@dataclass(frozen=True)
class Catalogue:
    segments: tuple[Segment, ...]
    keep_tolerance: float = 0.25  # hysteresis: a given name is kept while its bounds, widened by this, hold

    def __iter__(self):
        return iter(self.segments)

    def __len__(self):
        return len(self.segments)

    def __getitem__(self, i):
        return self.segments[i]

    def by_name(self) -> dict[str, Segment]:
        return {s.name: s for s in self.segments}


class CatalogueError(ValueError):
    pass


@cache
def load_catalogue(path: Path = CATALOGUE_PATH) -> Catalogue:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    segs = []
    for i, s in enumerate(data.get("segments") or []):
        unknown = set(s) - {"name", "description", "action", "profile", "conditions", "rank"}
        if unknown:
            raise CatalogueError(f"{path}: segment #{i + 1} has unknown key(s) {sorted(unknown)}")
        for fig, bounds in (s.get("conditions") or {}).items():
            if fig not in FIGURES:
                raise CatalogueError(
                    f"{path}: segment {s.get('name')!r}: unknown figure {fig!r} in conditions (known: {FIGURES})"
                )
            if not isinstance(bounds, dict) or not bounds or set(bounds) - {"min", "max"}:
                raise CatalogueError(
                    f"{path}: segment {s.get('name')!r}: condition {fig} must be {{min: x}} and/or {{max: y}}"
                )
        segs.append(Segment(**s))
    names = [s.name for s in segs]
    if not names or len(set(names)) != len(names):
        raise CatalogueError(f"{path}: segment names must be present and unique")
    return Catalogue(segments=tuple(segs), keep_tolerance=float(data.get("keep_tolerance", 0.25)))


def segment_names(catalogue: Catalogue | None = None) -> list[str]:
    return [s.name for s in (catalogue or load_catalogue())]


def cluster_figures(features: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Per cluster (rows: cluster index): customers, the medians of FIGURE_FEATURES, the `*_ratio` figures
    (cluster median / median of all customers given) and `z_<feature>`, the mean log1p value in standard
    deviations of all customers given (the space of the catalogue's tie-breaking profiles)."""
    labels = np.asarray(labels)
    present = [f for f in FIGURE_FEATURES if f in features.columns]
    raw = features[present].astype("float64").reset_index(drop=True)
    g = raw.groupby(labels)
    out = g.median()
    out.insert(0, "customers", g.size())
    for f in RATIO_FEATURES:
        if f in raw.columns:
            typical = raw[f].median()
            out[f"{f}_ratio"] = out[f] / typical if typical and typical > 0 else np.nan
    logged = np.log1p(raw.clip(lower=0))
    std = logged.std(ddof=0).replace(0, 1.0)
    z = ((logged - logged.mean()) / std).groupby(labels).mean()
    for f in present:
        out[f"z_{f}"] = z[f]
    return out.sort_index()


def _profile_cost(figures: pd.DataFrame, seg: Segment) -> np.ndarray:
    feats = [f for f in seg.profile if f"z_{f}" in figures.columns and figures[f"z_{f}"].notna().all()]
    if not feats:
        return np.zeros(len(figures))
    diff = figures[[f"z_{f}" for f in feats]].to_numpy() - np.array([seg.profile[f] for f in feats])
    return (diff**2).mean(axis=1)


# descriptive names: one word per figure, each word meaning a range of the figure (its condition)
_TIERS = {
    "recency_days": [("Active", None, 90), ("Cooling", 90, 180), ("Lapsing", 180, None)],
    "frequency": [("one-time", None, 1), ("repeat", 1, 3), ("frequent", 3, None)],
    "monetary_ratio": [("low-spend", None, 0.5), ("mid-spend", 0.5, 2.0), ("high-spend", 2.0, None)],
}


def descriptive_segment(fig: pd.Series) -> Segment:
    """An honest name for a cluster no catalogue name fits, built from its figures (e.g. "Cooling repeat
    mid-spend"), with the figure ranges its words stand for as its conditions, so it is held to them like
    any catalogue name."""
    words, conditions = [], {}
    for figure, tiers in _TIERS.items():
        value = fig.get(figure, np.nan)
        if value is None or pd.isna(value):
            continue
        for word, lo, hi in tiers:
            if (lo is None or value > lo) and (hi is None or value <= hi):
                words.append(word)
                conditions[figure] = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
                break
    ratio = fig.get("monetary_ratio", np.nan)
    desc = (
        f"No catalogue segment fits this group: median {fig.get('recency_days', np.nan):,.0f} days since the "
        f"last order, {fig.get('frequency', np.nan):,.1f} orders, spend {ratio:,.2f}x the typical customer's."
    )
    return Segment(
        name=" ".join(words) if words else "Unnamed group",
        description=desc,
        action="No catalogue action: review this group, and add a segment to seg_pipeline/segments.yaml if it recurs.",
        conditions=conditions,
    )


def name_clusters(
    figures: pd.DataFrame, catalogue: Catalogue | None = None, fixed: dict[int, str] | None = None
) -> tuple[dict[int, str], dict[str, Segment]]:
    """Give each cluster (rows of `cluster_figures`) a distinct name: the catalogue name whose conditions it
    meets with the best profile fit (one-to-one over all clusters), else a descriptive name. `fixed`:
    clusters whose names are already decided (carried over from a kept model); their names are not offered
    to the others. Returns (names by cluster, the descriptive segments by name)."""
    catalogue = catalogue or load_catalogue()
    fixed = dict(fixed or {})
    free = [c for c in figures.index if int(c) not in fixed]
    segs = [s for s in catalogue if s.name not in fixed.values()]
    names = {int(c): n for c, n in fixed.items()}
    descriptive: dict[str, Segment] = {}
    if free:
        sub = figures.loc[free]
        cost = np.full((len(free), len(segs) + len(free)), _DESCRIPTIVE)
        for j, seg in enumerate(segs):
            fit = _profile_cost(sub, seg)
            for i, c in enumerate(free):
                cost[i, j] = _FORBIDDEN if seg.broken_conditions(sub.loc[c]) else fit[i]
        rows, cols = linear_sum_assignment(cost)
        taken = set(names.values())
        for r, col in sorted(zip(rows, cols)):
            c = int(free[r])
            if col < len(segs) and cost[r, col] < _FORBIDDEN:
                names[c] = segs[col].name
            else:
                seg = descriptive_segment(figures.loc[c])
                name, n = seg.name, 2
                while name in taken or name in names.values():
                    name, n = f"{seg.name} ({n})", n + 1
                names[c] = name
                descriptive[name] = Segment(
                    name=name, description=seg.description, action=seg.action, conditions=seg.conditions
                )
            taken.add(names[c])
    return dict(sorted(names.items())), descriptive


def segment_info(name: str, descriptions: dict[str, str] | None = None) -> Segment:
    """The catalogue entry of a name, or an unranked entry for a descriptive name (`descriptions`: what
    the model's descriptive names mean)."""
    seg = load_catalogue().by_name().get(name)
    if seg is not None:
        return seg
    return Segment(
        name=name,
        description=(descriptions or {}).get(name, "No catalogue segment fits this group."),
        action="No catalogue action: review this group, and add a segment to seg_pipeline/segments.yaml if it recurs.",
    )
