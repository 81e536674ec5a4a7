"""Segment names that are true of each customer, in absolute business terms, never by the cluster index.

The catalogue (seg_pipeline/segments.yaml) holds every name with its description, action, value rank, the
business `conditions` a customer must meet to carry the name, a `profile` that breaks ties, and optionally
`precedence: lapsing` and `max_share`. Conditions are on plain figures of the customer (days, orders, money;
`*_ratio`: the customer's figure over the median customer of the quarter, e.g. `avg_order_value_ratio:
{min: 5}` = orders five times the typical customer's).

Two levels. `name_clusters` gives each k-means cluster a name at fit time: the catalogue name that holds for at
least half of its customers with the best profile fit (one-to-one over the clusters, Hungarian,
scipy.optimize.linear_sum_assignment), else a descriptive name. `label_customers` gives each customer their
label: the cluster's name while it holds for them (within keep_tolerance), else the nearest holding name, else
catalogue order, else descriptive words from their own figures; so every published label holds for its
customer. Pure functions: no Dagster, no DuckDB, no files (but the catalogue file).
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


PRECEDENCES = ("lapsing",)
SEGMENT_KEYS = {"name", "description", "action", "profile", "conditions", "rank", "precedence", "max_share"}


def _bound_text(fig: str, bounds: dict[str, float], tolerance: float = 0.0) -> list[str]:
    out = []
    if bounds.get("min") is not None:
        out.append(f"{fig} >= {bounds['min'] * (1 - tolerance):g}")
    if bounds.get("max") is not None:
        out.append(f"{fig} <= {bounds['max'] * (1 + tolerance):g}")
    return out


@dataclass(frozen=True)
class Segment:
    name: str
    description: str
    action: str
    profile: dict[str, float] = field(default_factory=dict)
    conditions: dict[str, dict[str, float]] = field(default_factory=dict)
    rank: int = 0  # business value order for upgrade/downgrade counting (higher = more valuable; 0 = unranked)
    precedence: str | None = None  # "lapsing": beats any name that claims recent activity (a recency_days max)
    max_share: float | None = None  # the name is given to at most this share of the quarter's customers

    @property
    def claims_recency(self) -> bool:
        """The name says the customer bought lately: it has a maximum on recency_days."""
        return self.conditions.get("recency_days", {}).get("max") is not None

    def conditions_text(self, tolerance: float = 0.0) -> str:
        return ", ".join(t for fig, b in self.conditions.items() for t in _bound_text(fig, b, tolerance))

    def broken_conditions(self, figures: pd.Series, tolerance: float = 0.0) -> list[str]:
        """The conditions the figures (of one customer, or a cluster's medians) break, in words; [] = the
        name fits. A condition on a figure the data cannot compute (e.g. distinct_products of an order-level
        source) is broken: a name is never given on evidence that is not there. `tolerance`: bounds widened
        by this share (min x (1 - t), max x (1 + t)): the hysteresis under which a cluster's name is kept
        (see `keep_tolerance`)."""
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

    def holds(self, figures: pd.DataFrame, tolerance: float = 0.0) -> np.ndarray:
        """Per row of `figures` (one customer each, `customer_figures`): do all the conditions hold? A figure
        that is missing or not computable for the row fails its condition."""
        ok = np.ones(len(figures), dtype=bool)
        for fig, bounds in self.conditions.items():
            if fig not in figures.columns:
                return np.zeros(len(figures), dtype=bool)
            v = figures[fig].to_numpy(dtype="float64")
            ok &= ~np.isnan(v)
            lo, hi = bounds.get("min"), bounds.get("max")
            with np.errstate(invalid="ignore"):
                if lo is not None:
                    ok &= v >= lo * (1 - tolerance)
                if hi is not None:
                    ok &= v <= hi * (1 + tolerance)
        return ok


@dataclass(frozen=True)
class Catalogue:
    segments: tuple[Segment, ...]
    keep_tolerance: float = 0.25  # hysteresis: a customer keeps their cluster's name within bounds widened by this

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


def _number(x) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and np.isfinite(x)


@cache
def load_catalogue(path: Path = CATALOGUE_PATH) -> Catalogue:
    """Read and validate the catalogue; every error is one line naming the file, the name and the condition.
    Loaded when the definitions load, so a broken catalogue fails `dg check defs`, not a run."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogueError(f"{path}: cannot be read as YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise CatalogueError(f"{path}: expected a mapping with keep_tolerance and segments")
    unknown_top = set(data) - {"keep_tolerance", "segments"}
    if unknown_top:
        raise CatalogueError(
            f"{path}: unknown top-level key(s) {sorted(unknown_top)} (known: keep_tolerance, segments)"
        )
    tol = data.get("keep_tolerance", 0.25)
    if not _number(tol) or not 0 <= tol < 1:
        raise CatalogueError(f"{path}: keep_tolerance must be a number in [0, 1), got {tol!r}")
    segs = []
    for i, s in enumerate(data.get("segments") or []):
        if not isinstance(s, dict) or not s.get("name"):
            raise CatalogueError(f"{path}: segment #{i + 1} must be a mapping with a name")
        where = f"{path}: segment {s['name']!r}"
        unknown = set(s) - SEGMENT_KEYS
        if unknown:
            raise CatalogueError(f"{where} has unknown key(s) {sorted(unknown)} (known: {sorted(SEGMENT_KEYS)})")
        for key in ("description", "action"):
            if not isinstance(s.get(key), str) or not s[key].strip():
                raise CatalogueError(f"{where}: {key} must be a non-empty text")
        conditions = s.get("conditions") or {}
        if not isinstance(conditions, dict):
            raise CatalogueError(f"{where}: conditions must be a mapping of figure -> {{min: x, max: y}}")
        for fig, bounds in conditions.items():
            if fig not in FIGURES:
                raise CatalogueError(f"{where}: unknown figure {fig!r} in conditions (known: {', '.join(FIGURES)})")
            if not isinstance(bounds, dict) or not bounds or set(bounds) - {"min", "max"}:
                raise CatalogueError(f"{where}: condition {fig} must be {{min: x}} and/or {{max: y}}, got {bounds!r}")
            if not all(_number(v) for v in bounds.values()):
                raise CatalogueError(f"{where}: condition {fig}: bounds must be numbers, got {bounds!r}")
            if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
                raise CatalogueError(
                    f"{where}: condition {fig}: min {bounds['min']:g} is above max {bounds['max']:g} "
                    "(no customer could ever meet it)"
                )
        for fig, w in (s.get("profile") or {}).items():
            if fig not in FIGURE_FEATURES or not _number(w):
                raise CatalogueError(f"{where}: profile {fig}: must be a customer feature with a number weight")
        if s.get("precedence") is not None and s["precedence"] not in PRECEDENCES:
            raise CatalogueError(f"{where}: precedence must be one of {list(PRECEDENCES)}, got {s['precedence']!r}")
        if s.get("max_share") is not None and (not _number(s["max_share"]) or not 0 < s["max_share"] <= 1):
            raise CatalogueError(f"{where}: max_share must be a share in (0, 1], got {s['max_share']!r}")
        if s.get("rank") is not None and (not isinstance(s["rank"], int) or isinstance(s["rank"], bool)):
            raise CatalogueError(f"{where}: rank must be a whole number, got {s['rank']!r}")
        segs.append(Segment(**{**s, "conditions": conditions}))
    names = [s.name for s in segs]
    if not names:
        raise CatalogueError(f"{path}: no segments")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CatalogueError(f"{path}: segment name(s) {dup} appear more than once")
    return Catalogue(segments=tuple(segs), keep_tolerance=float(tol))


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


MIN_HOLD_SHARE = 0.5  # a cluster is given a name only when it holds exactly for at least half of its customers


def keep_share(catalogue: Catalogue) -> float:
    """Hysteresis on the share as well: a cluster keeps its name (the kept model's drift check, a refit's
    carry-over) while the name holds, within keep_tolerance, for at least MIN_HOLD_SHARE x (1 - keep_tolerance)
    of its customers (0.375 with the default 0.25)."""
    return MIN_HOLD_SHARE * (1 - catalogue.keep_tolerance)


def name_clusters(
    figures: pd.DataFrame,
    catalogue: Catalogue | None = None,
    fixed: dict[int, str] | None = None,
    shares: pd.DataFrame | None = None,
) -> tuple[dict[int, str], dict[str, Segment]]:
    """Give each cluster (rows of `cluster_figures`) a distinct name: the catalogue name whose conditions it
    meets with the best profile fit (one-to-one over all clusters), else a descriptive name. A cluster meets
    a name's conditions when they hold for at least MIN_HOLD_SHARE of its customers (`shares`, from
    `hold_shares`), or, without `shares`, for its medians. `fixed`: clusters whose names are already decided
    (carried over from a kept model); their names are not offered to the others. Returns (names by cluster,
    the descriptive segments by name). The cluster name is the first choice of its customers' labels
    (`label_customers`); each customer keeps it only while it holds for them."""
    catalogue = catalogue or load_catalogue()
    fixed = dict(fixed or {})
    shares = shares.reindex(figures.index) if shares is not None else None
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
                if shares is not None:
                    fails = seg.name not in shares.columns or shares.loc[c, seg.name] < MIN_HOLD_SHARE
                else:
                    fails = bool(seg.broken_conditions(sub.loc[c]))
                cost[i, j] = _FORBIDDEN if fails else fit[i]
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
    if name not in (descriptions or {}) and name.split() and all(w in _WORD_RANGES for w in name.split()):
        return descriptive_label(name)
    return Segment(
        name=name,
        description=(descriptions or {}).get(name, "No catalogue segment fits this group."),
        action="No catalogue action: review this group, and add a segment to seg_pipeline/segments.yaml if it recurs.",
    )


# ------------------------------------------------------------------------------------ per-customer labels

BASIS_CLUSTER = "cluster name"  # the customer's cluster name holds for them (within keep_tolerance)
BASIS_NEAREST = "nearest holding name"  # the name of the nearest other cluster that holds exactly
BASIS_CATALOGUE = "catalogue order"  # the first catalogue name that holds exactly
BASIS_DESCRIPTIVE = "descriptive"  # no catalogue name holds: words from the customer's own figures
BASIS_RULES = "rules only"  # no segment model yet (waiting for history): the first catalogue name that holds


def customer_figures(features: pd.DataFrame) -> pd.DataFrame:
    """The figures the catalogue's conditions read, one row per customer (same index as `features`): the
    plain features (recency_days, frequency, ...) and `<feature>_ratio`, the customer's figure over the
    median customer of the frame (the quarter). A feature the source cannot compute (absent or NULL for
    every customer) and its ratio are NaN."""
    out = pd.DataFrame(index=features.index)
    for f in FIGURE_FEATURES:
        out[f] = features[f].astype("float64") if f in features.columns else np.nan
    for f in RATIO_FEATURES:
        typical = out[f].median() if out[f].notna().any() else np.nan
        out[f"{f}_ratio"] = out[f] / typical if pd.notna(typical) and typical > 0 else np.nan
    return out


def _descriptive_words(figures: pd.DataFrame) -> tuple[pd.Series, dict[str, dict]]:
    """Per customer, the descriptive name built from their own figures (one _TIERS word per figure)."""
    parts = []
    for figure, tiers in _TIERS.items():
        v = figures[figure].to_numpy(dtype="float64") if figure in figures else np.full(len(figures), np.nan)
        word = np.full(len(figures), "", dtype=object)
        for w, lo, hi in tiers:
            with np.errstate(invalid="ignore"):
                m = ~np.isnan(v) & ((v > lo) if lo is not None else True) & ((v <= hi) if hi is not None else True)
            word[m & (word == "")] = w
        parts.append(word)
    names = [" ".join(w for w in ws if w) or "Unnamed group" for ws in zip(*parts)] if parts else []
    return pd.Series(names, index=figures.index, dtype=object), {}


_WORD_RANGES = {w: (fig, lo, hi) for fig, tiers in _TIERS.items() for w, lo, hi in tiers}


def descriptive_label(name: str) -> Segment:
    """The meaning of a per-customer descriptive name ("Cooling repeat mid-spend"): its words' ranges as
    conditions (lower bounds exclusive), a description saying no catalogue name fits, no action, no rank."""
    conditions = {}
    for w in name.split():
        if w in _WORD_RANGES:
            fig, lo, hi = _WORD_RANGES[w]
            conditions[fig] = {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}
    return Segment(
        name=name,
        description=f"No catalogue segment holds for these customers; the name says: {_words_text(name)}.",
        action="No catalogue action: review this group, and add a segment to seg_pipeline/segments.yaml if it recurs.",
        conditions=conditions,
    )


def _words_text(name: str) -> str:
    out = []
    for w in name.split():
        if w in _WORD_RANGES:
            fig, lo, hi = _WORD_RANGES[w]
            out += ([f"{fig} > {lo:g}"] if lo is not None else []) + ([f"{fig} <= {hi:g}"] if hi is not None else [])
    return ", ".join(out)


def descriptive_names() -> list[str]:
    """Every name a customer's own figures can give (a word per figure, a figure without a value has none)."""
    options = [[w for w, _, _ in tiers] + [""] for tiers in _TIERS.values()]
    out = {" ".join(w for w in combo if w) or "Unnamed group" for combo in _product(options)}
    return sorted(out)


def _product(options):
    if not options:
        yield ()
        return
    for head in options[0]:
        for rest in _product(options[1:]):
            yield (head, *rest)


def _profile_fit(figures: pd.DataFrame, seg: Segment) -> np.ndarray:
    """Per customer: how far their log figures (in standard deviations of the quarter) go in the direction of
    the name's profile, negated (lower = more of what the profile says: for High-Value Loyal, more orders,
    more spend, more recent). Orders the customers a capped name keeps (max_share)."""
    feats = [f for f in seg.profile if f in figures.columns and figures[f].notna().any()]
    if not feats:
        return np.zeros(len(figures))
    logged = np.log1p(figures[feats].astype("float64").clip(lower=0))
    z = (logged - logged.mean()) / logged.std(ddof=0).replace(0, 1.0)
    return -(z.fillna(0.0).to_numpy() @ np.array([seg.profile[f] for f in feats], dtype="float64"))


@dataclass
class Labels:
    label: np.ndarray  # per customer: the segment name
    basis: np.ndarray  # per customer: which rule gave it and the conditions it holds (label_basis)
    not_computable: dict[str, list[str]]  # catalogue names never given: the figures the source lacks


def label_customers(
    figures: pd.DataFrame,
    catalogue: Catalogue | None = None,
    clusters: np.ndarray | None = None,
    cluster_names: dict[int, str] | None = None,
    nearest: np.ndarray | None = None,
) -> Labels:
    """Each customer's segment name, true of their own figures (`customer_figures`). In order:
    1. their cluster's name, when its conditions hold for them with bounds widened by keep_tolerance
       (hysteresis: a customer on a boundary keeps the name of their group);
    2. else the name of the nearest other cluster (`nearest`: per customer, cluster indices by distance
       in the model's space) whose conditions hold exactly;
    3. else the first catalogue name, in catalogue order, whose conditions hold exactly;
    4. else a descriptive name from their own figures ("Cooling repeat mid-spend"), true by construction.
    Precedence: a customer who meets a `precedence: lapsing` name exactly is never given a name that claims
    recent activity (a recency_days max), by any step. `max_share`: a name given to more customers than its
    share keeps those who go furthest in the direction of its `profile` (then customer order); the others take their next
    name by the same steps. Without a model (`clusters` None) steps 1 and 2 are skipped. A pure function of
    its inputs: the same model, catalogue and customers give the same labels."""
    catalogue = catalogue or load_catalogue()
    tol = catalogue.keep_tolerance
    n = len(figures)
    segs = list(catalogue)
    by_name = catalogue.by_name()
    exact = {s.name: s.holds(figures, 0.0) for s in segs}
    lapsing = np.zeros(n, dtype=bool)
    for s in segs:
        if s.precedence == "lapsing":
            lapsing |= exact[s.name]
    blocked = {s.name: (lapsing if s.claims_recency and s.precedence != "lapsing" else np.zeros(n, bool)) for s in segs}
    not_computable = {
        s.name: [f for f in s.conditions if f not in figures.columns or figures[f].isna().all()] for s in segs
    }
    not_computable = {k: v for k, v in not_computable.items() if v}
    fit = {s.name: _profile_fit(figures, s) for s in segs if s.max_share is not None}
    basis_text = {
        (kind, s.name): f"{kind}: {s.conditions_text(tol if kind == BASIS_CLUSTER else 0.0)}"
        + (f" (keep_tolerance {tol:g})" if kind == BASIS_CLUSTER and tol else "")
        for s in segs
        for kind in (BASIS_CLUSTER, BASIS_NEAREST, BASIS_CATALOGUE, BASIS_RULES)
    }
    held_tol = {}
    if clusters is not None and cluster_names is not None:
        clusters = np.asarray(clusters)
        held_tol = {c: by_name[nm].holds(figures, tol) for c, nm in cluster_names.items() if nm in by_name}
    excluded = {s.name: np.zeros(n, dtype=bool) for s in segs}
    cut_note = np.full(n, "", dtype=object)
    while True:
        label, basis = _assign(
            figures, segs, exact, blocked, excluded, basis_text, clusters, cluster_names, held_tol, nearest
        )
        cut = False
        for s in segs:
            if s.max_share is None:
                continue
            cap = int(np.floor(s.max_share * n + 1e-9))
            held = np.flatnonzero(label == s.name)
            if len(held) > cap:
                order = held[np.lexsort((held, fit[s.name][held]))]
                drop = order[cap:]
                excluded[s.name][drop] = True
                cut_note[drop] = cut_note[drop] + f"; not {s.name}: its max_share {s.max_share:g} is full"
                cut = True
        if not cut:
            break
    basis = np.array([b + note for b, note in zip(basis, cut_note)], dtype=object) if (cut_note != "").any() else basis
    return Labels(label=label, basis=basis, not_computable=not_computable)


def _assign(figures, segs, exact, blocked, excluded, basis_text, clusters, cluster_names, held_tol, nearest):
    """One pass of the steps of `label_customers` (with the names cut by max_share excluded)."""
    n = len(figures)
    label = np.full(n, None, dtype=object)
    basis = np.full(n, None, dtype=object)
    free = np.ones(n, dtype=bool)
    has_model = clusters is not None and cluster_names is not None

    def give(mask, name, kind):
        label[mask] = name
        basis[mask] = basis_text[(kind, name)]
        free[mask] = False

    def ok(name):
        return free & ~blocked[name] & ~excluded[name]

    if has_model:
        for c, nm in cluster_names.items():
            if c in held_tol:
                give((clusters == c) & held_tol[c] & ok(nm), nm, BASIS_CLUSTER)
        if nearest is not None:
            for r in range(1, nearest.shape[1]):
                for c, nm in cluster_names.items():
                    if c in held_tol and free.any():
                        give((nearest[:, r] == c) & exact[nm] & ok(nm), nm, BASIS_NEAREST)
    for s in segs:
        if free.any():
            give(exact[s.name] & ok(s.name), s.name, BASIS_CATALOGUE if has_model else BASIS_RULES)
    if free.any():
        words, _ = _descriptive_words(figures[free])
        label[free] = words.to_numpy()
        texts = {w: f"{BASIS_DESCRIPTIVE}: {_words_text(w)}" for w in set(words)}
        basis[free] = [texts[w] for w in words]
    return label, basis


def hold_shares(
    figures: pd.DataFrame, clusters: np.ndarray, catalogue: Catalogue, tolerance: float = 0.0
) -> pd.DataFrame:
    """Per cluster (rows) and catalogue name (columns): the share of the cluster's customers for whom the
    name's conditions hold (bounds widened by `tolerance`)."""
    clusters = np.asarray(clusters)
    data = {s.name: s.holds(figures, tolerance) for s in catalogue}
    return pd.DataFrame(data, index=figures.index).groupby(clusters).mean().sort_index()
