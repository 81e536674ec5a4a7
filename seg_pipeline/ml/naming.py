"""Name clusters from their centroid profiles, never from the arbitrary cluster index.

The catalogue (seg_pipeline/segments.yaml) holds every name with its description, action, a profile in
standardised log-feature space, plain business conditions, and the weights of the cost terms. Naming is
a one-to-one assignment (Hungarian, scipy.optimize.linear_sum_assignment) of clusters to names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy.optimize import linear_sum_assignment

from ..settings import PACKAGE_DIR

CATALOGUE_PATH = PACKAGE_DIR / "segments.yaml"


@dataclass(frozen=True)
class Segment:
    name: str
    description: str
    action: str
    profile: dict[str, float]
    requires: dict[str, dict[str, float]] = field(default_factory=dict)
    rank: int = 0  # business value order for upgrade/downgrade counting (higher = more valuable; 0 = unranked)

    def broken_requirements(self, means: pd.Series) -> int:
        broken = 0
        for feat, bounds in self.requires.items():
            if feat not in means.index or pd.isna(means[feat]):
                continue
            if "min" in bounds and means[feat] < bounds["min"]:
                broken += 1
            if "max" in bounds and means[feat] > bounds["max"]:
                broken += 1
        return broken


@dataclass(frozen=True)
class Catalogue:
    segments: tuple[Segment, ...]
    requirement_penalty: float = 10.0
    stability_weight: float = 1.0

    def __iter__(self):
        return iter(self.segments)

    def __len__(self):
        return len(self.segments)

    def __getitem__(self, i):
        return self.segments[i]

    def by_name(self) -> dict[str, Segment]:
        return {s.name: s for s in self.segments}


@lru_cache(maxsize=None)
def load_catalogue(path: Path = CATALOGUE_PATH) -> Catalogue:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    segs = tuple(Segment(**s) for s in data["segments"])
    names = [s.name for s in segs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: segment names must be unique")
    return Catalogue(
        segments=segs,
        requirement_penalty=float(data.get("requirement_penalty", 10.0)),
        stability_weight=float(data.get("stability_weight", 1.0)),
    )


def segment_names(catalogue: Catalogue | None = None) -> list[str]:
    return [s.name for s in (catalogue or load_catalogue())]


def cluster_profiles(z: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Mean of every column per cluster (rows: cluster index)."""
    return z.groupby(labels).mean().sort_index()


def _profile_cost(profiles: pd.DataFrame, catalogue: Catalogue) -> np.ndarray:
    cost = np.zeros((len(profiles), len(catalogue)))
    for j, seg in enumerate(catalogue):
        feats = [f for f in seg.profile if f in profiles.columns]
        if not feats:
            cost[:, j] = 1e6
            continue
        target = np.array([seg.profile[f] for f in feats])
        diff = profiles[feats].to_numpy() - target
        cost[:, j] = (diff**2).sum(axis=1) / len(feats)
    return cost


def _stability_cost(log_means: pd.DataFrame, log_scale: pd.Series, previous: pd.DataFrame, catalogue: Catalogue) -> np.ndarray:
    """Distance from each cluster to last quarter's customers of each name (log space, in units of this
    quarter's spread). Names absent last quarter get each cluster's mean distance: neither favoured nor
    penalised."""
    feats = [f for f in log_means.columns if f in previous.columns]
    cost = np.full((len(log_means), len(catalogue)), np.nan)
    scale = log_scale[feats].replace(0, 1.0).to_numpy()
    for j, seg in enumerate(catalogue):
        if seg.name in previous.index:
            diff = (log_means[feats].to_numpy() - previous.loc[seg.name, feats].to_numpy()) / scale
            cost[:, j] = (diff**2).mean(axis=1)
    known = ~np.isnan(cost)
    counts = known.sum(axis=1, keepdims=True)
    row_mean = np.where(counts > 0, np.where(known, cost, 0.0).sum(axis=1, keepdims=True) / np.maximum(counts, 1), 0.0)
    return np.where(known, cost, row_mean)


def name_clusters(
    profiles: pd.DataFrame,
    catalogue: Catalogue | None = None,
    raw_means: pd.DataFrame | None = None,
    log_means: pd.DataFrame | None = None,
    log_scale: pd.Series | None = None,
    previous: pd.DataFrame | None = None,
) -> dict[int, str]:
    """Give each cluster a distinct segment name.

    profiles:  per cluster, mean z-score of each log feature (the space of the catalogue's profiles);
    raw_means: per cluster, mean raw feature values (for the catalogue's `requires` conditions);
    log_means, log_scale, previous: per cluster mean log1p features, this quarter's standard deviation of
               each log feature, and last quarter's mean log1p features per segment name (stability term).
    """
    catalogue = catalogue or load_catalogue()
    if len(profiles) > len(catalogue):
        raise ValueError(f"{len(profiles)} clusters but only {len(catalogue)} segment names in the catalogue")
    cost = _profile_cost(profiles, catalogue)
    if raw_means is not None:
        for i, idx in enumerate(profiles.index):
            for j, seg in enumerate(catalogue):
                cost[i, j] += catalogue.requirement_penalty * seg.broken_requirements(raw_means.loc[idx])
    if previous is not None and not previous.empty and log_means is not None and log_scale is not None:
        cost += catalogue.stability_weight * _stability_cost(log_means.loc[profiles.index], log_scale, previous, catalogue)
    rows, cols = linear_sum_assignment(cost)
    return {int(profiles.index[r]): catalogue[c].name for r, c in zip(rows, cols)}
