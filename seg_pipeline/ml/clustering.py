"""k-means with k chosen by silhouette inside a business range, the elbow curve recorded."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.cluster import KMeans
from sklearn.metrics import silhouette_score
from threadpoolctl import threadpool_limits


@dataclass
class KTrial:
    k: int
    inertia: float
    silhouette: float
    in_business_range: bool


@dataclass
class ClusteringResult:
    model: KMeans
    k: int
    trials: list[KTrial]
    reason: str
    labels: np.ndarray


def _sample(X: np.ndarray, size: int, seed: int) -> np.ndarray:
    if len(X) <= size:
        return X
    rng = np.random.default_rng(seed)
    return X[np.sort(rng.choice(len(X), size=size, replace=False))]


def elbow_k(trials: list[KTrial]) -> int | None:
    """The k after which inertia stops falling steeply: the largest second difference of the inertia curve."""
    if len(trials) < 3:
        return None
    inertia = np.array([t.inertia for t in trials])
    second = inertia[:-2] - 2 * inertia[1:-1] + inertia[2:]
    return trials[int(np.argmax(second)) + 1].k


def choose_k(
    X: np.ndarray,
    k_range: tuple[int, int] = (3, 8),
    business_range: tuple[int, int] = (4, 6),
    seed: int = 42,
    n_init: int = 10,
    silhouette_sample: int = 10_000,
    selection_sample: int = 50_000,
) -> tuple[int, list[KTrial], str, dict[int, KMeans], bool]:
    """Fit k-means for every k in k_range (on a sample of at most `selection_sample` customers), record
    inertia and silhouette (on at most `silhouette_sample` points), and pick the k with the best silhouette
    inside the business range. Also returns the fitted model per k and whether the sample was all of X."""
    lo, hi = k_range
    blo, bhi = business_range
    if lo > hi or blo > bhi:
        raise ValueError(f"empty k range {k_range} or business range {business_range}")
    if max(lo, blo) > min(hi, bhi):
        raise ValueError(f"k range {k_range} and business range {business_range} do not overlap")
    Xs = _sample(X, selection_sample, seed)
    max_k = len(np.unique(Xs, axis=0))
    trials: list[KTrial] = []
    models: dict[int, KMeans] = {}
    for k in range(lo, hi + 1):
        if k >= max_k:
            break
        km = models[k] = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(Xs)
        sil_idx = np.arange(len(Xs))
        if len(Xs) > silhouette_sample:
            sil_idx = np.sort(np.random.default_rng(seed).choice(len(Xs), silhouette_sample, replace=False))
        sil = float(silhouette_score(Xs[sil_idx], km.labels_[sil_idx]))
        trials.append(KTrial(k=k, inertia=float(km.inertia_), silhouette=sil, in_business_range=blo <= k <= bhi))
    allowed = [t for t in trials if t.in_business_range]
    if not allowed:
        raise ValueError(f"cannot fit {blo}..{bhi} clusters: only {max_k} distinct customer profiles in the data")
    best = max(allowed, key=lambda t: (round(t.silhouette, 6), -t.k))
    overall = max(trials, key=lambda t: t.silhouette)
    elbow = elbow_k(trials)
    reason = f"k={best.k}: best silhouette ({best.silhouette:.3f}) within the business range {blo}-{bhi}"
    if overall.k != best.k:
        reason += f"; k={overall.k} outside the range scored {overall.silhouette:.3f}"
    if elbow is not None:
        reason += f"; the elbow of the inertia curve is at k={elbow}"
    return best.k, trials, reason, models, len(Xs) == len(X)


def fit_kmeans(X: np.ndarray, k: int, seed: int = 42, n_init: int = 10, init: np.ndarray | None = None) -> KMeans:
    """k-means on all of X: `n_init` random restarts, or one run started from the centroids `init`."""
    if init is not None:
        return KMeans(n_clusters=k, init=init, n_init=1, random_state=seed).fit(X)
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(X)


def cluster(X: np.ndarray, **kwargs) -> ClusteringResult:
    """Choose k, then the model on every customer. When k was chosen on all of X, its fit is the model;
    on a sample, the model is one k-means run over all of X started from the sample's best centroids (the
    restarts already happened on the sample; the cost then no longer grows with restarts x customers)."""
    seed = kwargs.get("seed", 42)
    # small fits are faster on one thread than paying OpenMP's synchronisation on a busy machine
    with threadpool_limits(limits=1 if len(X) < 20_000 else None, user_api="openmp"):
        k, trials, reason, models, whole = choose_k(X, **kwargs)
        model = models[k] if whole else fit_kmeans(X, k, seed=seed, init=models[k].cluster_centers_)
    return ClusteringResult(model=model, k=k, trials=trials, reason=reason, labels=model.labels_)
