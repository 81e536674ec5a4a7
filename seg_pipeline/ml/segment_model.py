"""The kept segment model: log transform + scaler + k-means + segment names, as one object with a life cycle.

A `SegmentModel` is fitted once on a reference quarter and then *kept*: later quarters score their customers
with it, so a customer's segment changes only when their own features cross a boundary. It is refitted only
when `decide` says so (forced in the run config, a cadence that came due, or drift: the kept model no
longer fits the quarter's customers). A refit starts from the kept clusters and carries their names over
(`refit`), so only genuinely new clusters get new names.

The object is what the pipeline saves per quarter as models/<quarter>/segment_model.joblib and what
segment_assignments itself uses; outside the pipeline, loaded as the pipeline loads it (the file's SHA-256
checked against clustering_model first: unpickling runs code):

    model, _ = seg_pipeline.tables.load_model(home, seg_pipeline.tables.chosen_model_row(con, "2011-07-01"))
    model.predict(frame)        # frame: one quarter's customer_features -> segment labels, one per row
    model.label(frame)          # the clusters, labels and label_basis (which rule gave each label)

A label is a statement about the customer: the clusters give each customer a first choice of name, and the
name is kept only while its conditions hold for the customer's own figures (seg_pipeline/ml/naming.py,
`label_customers`). `<feature>_ratio` figures are taken against the median customer of the frame, so
`frame` is one whole quarter of customers.

Pure code: no Dagster, no DuckDB, no files.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score, silhouette_score

from .clustering import KTrial, choose_k
from .naming import (
    Labels,
    Segment,
    cluster_figures,
    customer_figures,
    hold_shares,
    keep_share,
    label_customers,
    load_catalogue,
    name_clusters,
)
from .scaling import ScaledMatrix, log_transform

WAITING = "waiting_for_history"  # the decision of a quarter before the data covers enough history for a first fit
FAR_QUANTILE = 0.99  # a customer is "far" beyond the 99th percentile of the fit's distances to a centroid


class ModelInputError(ValueError):
    """A frame the model cannot score (missing or non-numeric feature columns)."""


@dataclass
class SegmentModel:
    version: str
    fitted_quarter: str  # the reference quarter the model was fitted on
    features: list[str]  # customer_features columns the scaler takes, in order
    log_features: list[str]  # of those, the ones log1p-transformed
    kept: list[str]  # of those, the k-means input columns
    scaler: object
    kmeans: KMeans
    names: dict[int, str]  # cluster index -> segment name
    descriptive: dict[str, Segment]  # the descriptive (non-catalogue) names, with the conditions their words mean
    trials: list[dict]  # the k trials of the fit
    reason: str  # why this k
    fit_silhouette: float  # silhouette of the fit (sampled on large data)
    far_distance: float  # FAR_QUANTILE of the fit's distances to the nearest centroid
    fit_customers: int
    fit_figures: pd.DataFrame = field(repr=False, default=None)  # per cluster: medians and ratios at fit
    parent_version: str | None = None  # the model this one was refitted from
    config: dict = field(default_factory=dict)
    library_versions: dict = field(default_factory=dict)

    # ------------------------------------------------------------------------------------------ scoring

    @property
    def k(self) -> int:
        return int(self.kmeans.n_clusters)

    @property
    def segment_names(self) -> list[str]:
        return [self.names[i] for i in range(self.k)]

    @property
    def descriptions(self) -> dict[str, str]:
        return {n: s.description for n, s in self.descriptive.items()}

    def segment(self, name: str) -> Segment | None:
        """A name's definition: the catalogue's entry (as the catalogue file says now) or the descriptive one."""
        return load_catalogue().by_name().get(name) or self.descriptive.get(name)

    def names_failing(self, features: pd.DataFrame, labels: np.ndarray) -> list[str]:
        """Cluster names that no longer hold (bounds widened by the catalogue's keep_tolerance) for at least
        `keep_share` of the customers the model puts in the cluster, each with the share they hold for."""
        catalogue = load_catalogue()
        shares = hold_shares(customer_figures(features), labels, catalogue, catalogue.keep_tolerance)
        floor = keep_share(catalogue)
        out = []
        for c in shares.index:
            name = self.names[int(c)]
            if name in shares.columns and shares.loc[c, name] < floor:
                out.append(f"{name} (holds for {shares.loc[c, name]:.0%} of its cluster, < {floor:.1%})")
        return out

    def _check(self, frame: pd.DataFrame) -> None:
        missing = [f for f in self.features if f not in frame.columns]
        if missing:
            raise ModelInputError(
                f"segment model {self.version} (fitted on {self.fitted_quarter}) needs the customer_features "
                f"column(s) {missing}; the frame has {list(frame.columns)}"
            )
        values = frame[self.features]
        bad = [f for f in self.features if values[f].isna().any()]
        if bad:
            counts = {f: int(values[f].isna().sum()) for f in bad}
            raise ModelInputError(
                f"segment model {self.version} cannot score rows with empty features: {counts} "
                "(a feature the model uses is not computable for them)"
            )

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """The model input: log1p where the model logs, the kept scaler, the kept columns."""
        self._check(frame)
        scaled = self.scaler.transform(log_transform(frame, self.features, self.log_features).to_numpy())
        idx = [self.features.index(f) for f in self.kept]
        return np.ascontiguousarray(scaled[:, idx])

    def predict_cluster(self, frame: pd.DataFrame) -> np.ndarray:
        return self.kmeans.predict(self.transform(frame)).astype("int32")

    def nearest_clusters(self, X: np.ndarray) -> np.ndarray:
        """Per row of the model input X: the cluster indices, nearest first (ties: lower index)."""
        d = ((X[:, None, :] - self.kmeans.cluster_centers_[None, :, :]) ** 2).sum(axis=2)
        return np.argsort(d, axis=1, kind="stable").astype("int32")

    def label(self, frame: pd.DataFrame, reference: pd.DataFrame | None = None) -> tuple[np.ndarray, Labels]:
        """(cluster, labels) of every row of `frame`, one quarter's customer_features: the cluster is the
        model's; the label is the customer's segment name by `label_customers` (true of their own figures)
        with its basis. A pure function of the model, the catalogue and the frame. The quarter matters (the
        `*_ratio` figures are against its median customer, `max_share` counts its customers): to label some
        customers only, pass the quarter's customer_features as `reference`; they are labelled as part of it
        (their rows replacing theirs there, customer_id ascending, as the pipeline orders them)."""
        if reference is not None:
            ids = set(frame["customer_id"])
            whole = pd.concat([reference[~reference["customer_id"].isin(ids)], frame], ignore_index=True)
            whole = whole.sort_values("customer_id", kind="mergesort").reset_index(drop=True)
            clusters, labels = self.label(whole)
            pos = pd.Series(np.arange(len(whole)), index=whole["customer_id"]).loc[frame["customer_id"]].to_numpy()
            return clusters[pos], Labels(labels.label[pos], labels.basis[pos], labels.not_computable)
        X = self.transform(frame)
        clusters = self.kmeans.predict(X).astype("int32")
        nearest = self.nearest_clusters(X)
        labels = label_customers(
            customer_figures(frame.reset_index(drop=True)),
            load_catalogue(),
            clusters=clusters,
            cluster_names=self.names,
            nearest=nearest,
        )
        return clusters, labels

    def predict(self, frame: pd.DataFrame, reference: pd.DataFrame | None = None) -> np.ndarray:
        """Segment label of every row of `frame` (one quarter's customer_features; or some customers, with the
        quarter's customer_features as `reference`, see `label`)."""
        return self.label(frame, reference)[1].label

    def distances(self, X: np.ndarray) -> np.ndarray:
        """Distance of every row of the model input X to its nearest centroid."""
        return np.sqrt(((X[:, None, :] - self.kmeans.cluster_centers_[None, :, :]) ** 2).sum(axis=2).min(axis=1))

    def log_centroids(self) -> pd.DataFrame:
        """The centroids in log-feature space (kept columns): scaled = (log - center) / scale, inverted."""
        idx = [self.features.index(f) for f in self.kept]
        center = np.asarray(getattr(self.scaler, "mean_", getattr(self.scaler, "center_", None)))[idx]
        scale = np.asarray(self.scaler.scale_)[idx]
        return pd.DataFrame(self.kmeans.cluster_centers_ * scale + center, columns=self.kept)

    def log_scale(self) -> pd.Series:
        idx = [self.features.index(f) for f in self.kept]
        return pd.Series(np.asarray(self.scaler.scale_)[idx], index=self.kept)


# ---------------------------------------------------------------------------------------------- fitting


def _version(model: KMeans, scaler, kept: list[str], names: dict[int, str]) -> str:
    center = np.asarray(getattr(scaler, "mean_", getattr(scaler, "center_", None)), dtype="float64")
    h = hashlib.sha256()
    for arr in (model.cluster_centers_, center, np.asarray(scaler.scale_, dtype="float64")):
        h.update(np.ascontiguousarray(arr, dtype="float64").round(12).tobytes())
    h.update(json.dumps([kept, sorted(names.items())]).encode())
    return h.hexdigest()[:12]


def sampled_silhouette(X: np.ndarray, labels: np.ndarray, sample: int, seed: int) -> float | None:
    """Silhouette on at most `sample` rows; None when it is undefined (fewer than 2 clusters or rows)."""
    idx = np.arange(len(X))
    if len(X) > sample:
        idx = np.sort(np.random.default_rng(seed).choice(len(X), sample, replace=False))
    n_labels = len(np.unique(labels[idx]))
    if n_labels < 2 or n_labels >= len(idx):
        return None
    return float(silhouette_score(X[idx], labels[idx]))


def _finish(
    features: pd.DataFrame,
    m: ScaledMatrix,
    km: KMeans,
    trials: list[KTrial],
    reason: str,
    quarter: str,
    names: dict[int, str],
    descriptive: dict[str, Segment],
    config: dict,
    parent: str | None,
    silhouette_sample: int,
    seed: int,
    libraries: dict,
) -> SegmentModel:
    X = m.model_input()
    labels = km.labels_ if len(km.labels_) == len(X) else km.predict(X)
    d = np.sqrt(((X - km.cluster_centers_[labels]) ** 2).sum(axis=1))
    chosen = next((t for t in trials if t.k == km.n_clusters), None)
    sil = chosen.silhouette if chosen is not None else sampled_silhouette(X, labels, silhouette_sample, seed)
    model = SegmentModel(
        version="",
        fitted_quarter=quarter,
        features=list(m.features),
        log_features=list(m.log_features),
        kept=list(m.kept),
        scaler=m.scaler,
        kmeans=km,
        names=names,
        descriptive=descriptive,
        trials=[t.__dict__ for t in trials],
        reason=reason,
        fit_silhouette=float(sil if sil is not None else 0.0),
        far_distance=float(np.quantile(d, FAR_QUANTILE)) if len(d) else 0.0,
        fit_customers=len(X),
        fit_figures=cluster_figures(features, labels),
        parent_version=parent,
        config=dict(config),
        library_versions=dict(libraries),
    )
    model.version = _version(km, m.scaler, m.kept, names)
    return model


def fit_new(
    features: pd.DataFrame,
    m: ScaledMatrix,
    quarter: str,
    *,
    k_range,
    business_range,
    seed: int,
    n_init: int,
    silhouette_sample: int,
    selection_sample: int,
    config: dict | None = None,
    libraries: dict | None = None,
) -> SegmentModel:
    """The first fit (no kept model): k by silhouette within the business range (elbow recorded), k-means on
    every customer, names from the catalogue's conditions. `features` and `m` hold the same customers in the
    same order (customer_id ascending)."""
    from .clustering import cluster

    X = m.model_input()
    result = cluster(
        X,
        k_range=k_range,
        business_range=business_range,
        seed=seed,
        n_init=n_init,
        silhouette_sample=silhouette_sample,
        selection_sample=selection_sample,
    )
    figs = customer_figures(features.reset_index(drop=True))
    names, descriptive = name_clusters(
        cluster_figures(features, result.labels), shares=hold_shares(figs, result.labels, load_catalogue())
    )
    return _finish(
        features,
        m,
        result.model,
        result.trials,
        result.reason,
        quarter,
        names,
        descriptive,
        config or {},
        None,
        silhouette_sample,
        seed,
        libraries or {},
    )


def _warm_centroids(X: np.ndarray, old_labels: np.ndarray, k: int) -> np.ndarray:
    """Initial centroids for a refit with k clusters, from the kept model's clusters: the mean (in the new
    space) of the customers the kept model puts in each of its clusters. k larger: the rows farthest from
    every centroid so far are added one by one (deterministic); k smaller: the largest kept clusters."""
    ids, counts = np.unique(old_labels, return_counts=True)
    order = ids[np.argsort(-counts, kind="mergesort")]
    cents = [X[old_labels == c].mean(axis=0) for c in order]
    cents = cents[:k]
    while len(cents) < k:
        C = np.asarray(cents)
        d = ((X[:, None, :] - C[None, :, :]) ** 2).sum(axis=2).min(axis=1)
        cents.append(X[int(np.argmax(d))])
    return np.asarray(cents, dtype="float64")


def match_clusters(old: SegmentModel, new_log: pd.DataFrame) -> list[tuple[int, int, float]]:
    """Hungarian assignment of new clusters to the kept ones in the kept model's log-feature space (the
    features both use, in units of the kept scaler's scale): [(new cluster, old cluster, distance)]."""
    old_log = old.log_centroids()
    feats = [f for f in old.kept if f in new_log.columns]
    if not feats:
        return []
    scale = old.log_scale()[feats].replace(0, 1.0).to_numpy()
    a = new_log[feats].to_numpy() / scale
    b = old_log[feats].to_numpy() / scale
    cost = np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2) / len(feats))
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c), float(cost[r, c])) for r, c in zip(rows, cols)]


@dataclass
class RefitResult:
    model: SegmentModel
    carried: dict[int, str]  # new cluster -> name carried over from the kept model
    renamed: dict[int, str]  # new cluster -> name given afresh (genuinely new clusters)
    ari: float | None  # adjusted Rand index of the kept and the new model on the quarter's customers
    name_change_share: float  # share of the quarter's customers whose label the refit changed


def refit(
    old: SegmentModel,
    features: pd.DataFrame,
    m: ScaledMatrix,
    quarter: str,
    *,
    k_range,
    business_range,
    seed: int,
    n_init: int,
    silhouette_sample: int,
    selection_sample: int,
    match_max_distance: float,
    config: dict | None = None,
    libraries: dict | None = None,
    old_labels: np.ndarray | None = None,
    k_margin: float = 0.02,
) -> RefitResult:
    """Refit on this quarter, starting from the kept clusters. k is chosen again (silhouette within the
    business range); the final k-means run starts from the kept clusters' positions in the new space. New
    clusters are matched to the kept ones (Hungarian, log-feature space); a match within
    `match_max_distance` whose name's conditions still hold carries the name over, every other cluster is
    named afresh from the catalogue (names already carried are not reused). `old_labels`: the kept model's
    clusters for these customers, when the kept model could score them (None: a cold start). `k_margin`:
    the kept k is preferred while its silhouette is within this of the best k's (a split or merge of
    clusters must pay for itself)."""
    X = m.model_input()
    k, trials, reason, models, _ = choose_k(
        X,
        k_range=k_range,
        business_range=business_range,
        seed=seed,
        n_init=n_init,
        silhouette_sample=silhouette_sample,
        selection_sample=selection_sample,
    )
    by_k = {t.k: t for t in trials}
    best = by_k[k].silhouette
    if k != old.k and old.k in by_k and by_k[old.k].in_business_range and by_k[old.k].silhouette >= best - k_margin:
        reason = (
            f"k={old.k}: the kept model's k, whose silhouette ({by_k[old.k].silhouette:.3f}) is within "
            f"{k_margin} of the best (k={k}, {best:.3f}) inside the business range"
        )
        k = old.k
    if old_labels is not None:
        init = _warm_centroids(X, old_labels, k)
        km = KMeans(n_clusters=k, init=init, n_init=1, random_state=seed).fit(X)
        reason += "; the final fit started from the kept model's clusters"
    else:
        km = KMeans(n_clusters=k, init=models[k].cluster_centers_, n_init=1, random_state=seed).fit(X)
    labels = km.labels_
    figures = cluster_figures(features, labels)
    # the new centroids in log space (scaler of this fit), for matching in the kept model's log space
    idx = [m.features.index(f) for f in m.kept]
    center = np.asarray(getattr(m.scaler, "mean_", getattr(m.scaler, "center_", None)))[idx]
    new_log = pd.DataFrame(km.cluster_centers_ * np.asarray(m.scaler.scale_)[idx] + center, columns=m.kept)
    catalogue = load_catalogue()
    figs = customer_figures(features.reset_index(drop=True))
    kept_shares = hold_shares(figs, labels, catalogue, catalogue.keep_tolerance)
    carried: dict[int, str] = {}
    for new_c, old_c, dist in match_clusters(old, new_log):
        name = old.names[old_c]
        if name in kept_shares.columns:
            holds = new_c in kept_shares.index and kept_shares.loc[new_c, name] >= keep_share(catalogue)
        else:  # a descriptive cluster name: its words' ranges must hold for the cluster's medians
            seg = old.segment(name)
            holds = seg is not None and not seg.broken_conditions(figures.loc[new_c], catalogue.keep_tolerance)
        if dist <= match_max_distance and holds:
            carried[new_c] = name
    names, descriptive = name_clusters(figures, fixed=carried, shares=hold_shares(figs, labels, catalogue))
    descriptive = {**{n: d for n, d in old.descriptive.items() if n in carried.values()}, **descriptive}
    model = _finish(
        features,
        m,
        km,
        trials,
        reason,
        quarter,
        names,
        descriptive,
        config or {},
        old.version,
        silhouette_sample,
        seed,
        libraries or {},
    )
    ari = name_change = None
    if old_labels is not None:
        ari = float(adjusted_rand_score(old_labels, labels))
        # labels, not cluster names: the share of customers whose published label the refit changes
        old_names = old.predict(features)
        new_names = model.predict(features)
        name_change = float((old_names != new_names).mean()) if len(labels) else 0.0
    renamed = {c: n for c, n in names.items() if c not in carried}
    return RefitResult(
        model=model,
        carried=carried,
        renamed=renamed,
        ari=ari,
        name_change_share=1.0 if name_change is None else name_change,
    )


# ---------------------------------------------------------------------------------------------- drift


@dataclass
class Drift:
    """How well the kept model fits a new quarter's customers, against the configured thresholds."""

    customers: int
    silhouette: float | None  # the kept model's silhouette on this quarter (None: undefined)
    silhouette_drop: float | None  # fit silhouette - this quarter's
    far_share: float  # share of customers beyond the fit's FAR_QUANTILE distance to the nearest centroid
    clusters_used: int
    names_failing: list[str]  # cluster names that no longer hold (within keep_tolerance) for keep_share of the cluster
    breaches: list[str]  # plain-language reasons to refit; empty = the kept model still fits


def measure_drift(
    model: SegmentModel,
    features: pd.DataFrame,
    X: np.ndarray,
    labels: np.ndarray,
    *,
    max_silhouette_drop: float,
    max_far_share: float,
    check_names: bool,
    silhouette_sample: int,
    seed: int,
    min_silhouette: float | None = None,
) -> Drift:
    """The drift rule. The kept model stops fitting a quarter when any of these holds:
    - its silhouette on the quarter's customers is more than `max_silhouette_drop` below its fit silhouette,
      or below `min_silhouette` (the clusters overlap too much to act on);
    - more than `max_far_share` of the customers lie farther from every centroid than 99% of the fit's
      customers did (new kinds of customers the model has no cluster for);
    - every customer falls into one cluster (the model no longer separates anyone);
    - (with `check_names`) a cluster's name no longer holds, even with the bounds widened by the catalogue's
      keep_tolerance, for `keep_share` (37.5%) of the cluster's customers (hysteresis: a name given when it
      holds exactly for half of them is not lost by a hair)."""
    used = len(np.unique(labels))
    sil = sampled_silhouette(X, labels, silhouette_sample, seed)
    drop = None if sil is None else model.fit_silhouette - sil
    far = float((model.distances(X) > model.far_distance).mean()) if len(X) else 0.0
    breaches = []
    if used <= 1 and len(X) > 1:
        breaches.append(f"all {len(X):,} customers fall into one cluster of the kept model")
    if drop is not None and drop > max_silhouette_drop:
        breaches.append(
            f"silhouette fell from {model.fit_silhouette:.3f} to {sil:.3f} (drop {drop:.3f} > {max_silhouette_drop})"
        )
    elif sil is not None and min_silhouette is not None and sil < min_silhouette:
        breaches.append(f"silhouette {sil:.3f} is below the floor {min_silhouette}")
    if far > max_far_share:
        breaches.append(f"{far:.1%} of customers are far from every centroid (> {max_far_share:.0%})")
    failing = model.names_failing(features, labels) if check_names else []
    if failing:
        breaches.append("the conditions of " + ", ".join(failing) + " no longer hold")
    return Drift(
        customers=len(X),
        silhouette=sil,
        silhouette_drop=drop,
        far_share=far,
        clusters_used=used,
        names_failing=failing,
        breaches=breaches,
    )


def quarters_between(a: str, b: str) -> int:
    """Whole quarters from quarter key a to quarter key b (b later)."""
    ya, ma = int(a[:4]), int(a[5:7])
    yb, mb = int(b[:4]), int(b[5:7])
    return (yb - ya) * 4 + (mb - ma) // 3
