"""Name clusters from their centroid profiles, never from the arbitrary cluster index."""

from __future__ import annotations

from dataclasses import dataclass
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


@lru_cache(maxsize=None)
def load_catalogue(path: Path = CATALOGUE_PATH) -> tuple[Segment, ...]:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return tuple(Segment(**s) for s in data["segments"])


def segment_names(catalogue: tuple[Segment, ...] | None = None) -> list[str]:
    return [s.name for s in (catalogue or load_catalogue())]


def cluster_profiles(z: pd.DataFrame, labels: np.ndarray) -> pd.DataFrame:
    """Mean z-score of every feature per cluster (rows: cluster index)."""
    return z.groupby(labels).mean().sort_index()


def name_clusters(profiles: pd.DataFrame, catalogue: tuple[Segment, ...] | None = None) -> dict[int, str]:
    """Assign each cluster a distinct segment name: the one-to-one assignment that minimises the total
    squared distance between cluster profiles and segment profiles (only features in both count;
    normalised by the number of features a segment profile specifies)."""
    catalogue = catalogue or load_catalogue()
    if len(profiles) > len(catalogue):
        raise ValueError(f"{len(profiles)} clusters but only {len(catalogue)} segment names in the catalogue")
    cost = np.zeros((len(profiles), len(catalogue)))
    for j, seg in enumerate(catalogue):
        feats = [f for f in seg.profile if f in profiles.columns]
        if not feats:
            cost[:, j] = 1e6
            continue
        target = np.array([seg.profile[f] for f in feats])
        diff = profiles[feats].to_numpy() - target
        cost[:, j] = (diff**2).sum(axis=1) / len(feats)
    rows, cols = linear_sum_assignment(cost)
    return {int(profiles.index[r]): catalogue[c].name for r, c in zip(rows, cols)}
