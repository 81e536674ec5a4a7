"""From customer features to the model's input matrix: log1p, correlation pruning, scaling."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.preprocessing import RobustScaler, StandardScaler

# Candidate model features, in priority order: when two are correlated above the threshold, the later one
# is dropped. All are right-skewed counts or amounts, so all are log1p-transformed by default.
CANDIDATE_FEATURES = [
    "recency_days",
    "frequency",
    "monetary",
    "avg_order_value",
    "distinct_products",
    "purchase_span_days",
    "tenure_days",
]
SCALERS = {"standard": StandardScaler, "robust": RobustScaler}


@dataclass
class ScaledMatrix:
    customer_ids: np.ndarray
    features: list[str]  # every candidate present in the data, scaled
    kept: list[str]  # the features the model uses
    dropped: dict[str, str]  # feature -> why it was dropped
    values: np.ndarray  # shape (n_customers, len(features))
    scaler: object
    log_features: list[str]
    correlation: pd.DataFrame = field(repr=False, default=None)

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self.values, columns=self.features)
        df.insert(0, "customer_id", self.customer_ids)
        return df

    def model_input(self) -> np.ndarray:
        idx = [self.features.index(f) for f in self.kept]
        return self.values[:, idx]


def available_features(
    features: pd.DataFrame, candidates: list[str] = CANDIDATE_FEATURES
) -> tuple[list[str], dict[str, str]]:
    """Candidates the data can support; a feature whose column is absent or entirely NULL is skipped with a note."""
    present, skipped = [], {}
    for f in candidates:
        if f not in features.columns or features[f].isna().all():
            skipped[f] = "not computable from this source (its input column is missing)"
        else:
            present.append(f)
    return present, skipped


def log_transform(features: pd.DataFrame, columns: list[str], log_features: list[str]) -> pd.DataFrame:
    out = features[columns].astype("float64").copy()
    for c in columns:
        if c in log_features:
            out[c] = np.log1p(out[c].clip(lower=0))
    return out


def prune_correlated(logged: pd.DataFrame, threshold: float) -> tuple[list[str], dict[str, str], pd.DataFrame]:
    """Greedy, in column order: keep a feature unless |Pearson r| with an already kept one exceeds threshold."""
    corr = logged.corr().fillna(0.0)
    kept: list[str] = []
    dropped: dict[str, str] = {}
    for f in logged.columns:
        clash = [(k, corr.loc[f, k]) for k in kept if abs(corr.loc[f, k]) > threshold]
        if clash:
            k, r = max(clash, key=lambda kr: abs(kr[1]))
            dropped[f] = f"|r| = {abs(r):.3f} with {k} > {threshold}"
        else:
            kept.append(f)
    return kept, dropped, corr


def drop_near_constant(logged: pd.DataFrame, min_std: float) -> dict[str, str]:
    """Features whose log values hardly vary between customers (standard deviation below `min_std`): they
    carry no information about who differs from whom, and scaling would blow their noise up to full weight
    (e.g. tenure in a single cohort, where every customer started in the same month)."""
    std = logged.std(ddof=0)
    return {
        f: f"nearly constant: sd of its log values {std[f]:.3f} < {min_std}" for f in logged.columns if std[f] < min_std
    }


def build_matrix(
    features: pd.DataFrame,
    scaler: str = "standard",
    corr_threshold: float = 0.9,
    log_features: list[str] | None = None,
    candidates: list[str] = CANDIDATE_FEATURES,
    min_log_std: float = 0.15,
) -> ScaledMatrix:
    """Log-transform, leave nearly constant features and the later of correlated pairs out of the model, and
    scale. Rows are sorted by customer id first, so the result does not depend on the input's row order."""
    if scaler not in SCALERS:
        raise ValueError(f"unknown scaler {scaler!r}; choose one of {sorted(SCALERS)}")
    if features.empty:
        raise ValueError("no customers to scale: the quarter's feature table is empty")
    features = features.sort_values("customer_id", kind="mergesort").reset_index(drop=True)
    present, skipped = available_features(features, candidates)
    log_features = list(present if log_features is None else log_features)
    logged = log_transform(features, present, log_features)
    constant = drop_near_constant(logged, min_log_std)
    kept, dropped, corr = prune_correlated(logged[[f for f in present if f not in constant]], corr_threshold)
    dropped = {**constant, **dropped}
    if not kept:
        raise ValueError(f"no feature varies between the quarter's customers: {constant}")
    sc = SCALERS[scaler]()
    values = sc.fit_transform(logged.to_numpy())
    return ScaledMatrix(
        customer_ids=features["customer_id"].to_numpy(),
        features=present,
        kept=kept,
        dropped={**skipped, **dropped},
        values=values,
        scaler=sc,
        log_features=[f for f in log_features if f in present],
        correlation=corr,
    )


def standardized_profile_space(features: pd.DataFrame, columns: list[str], log_features: list[str]) -> pd.DataFrame:
    """z-scores of the log features (mean 0, sd 1 over the quarter's customers): the space segment names live in."""
    logged = log_transform(features, columns, log_features)
    std = logged.std(ddof=0).replace(0, 1.0)
    return (logged - logged.mean()) / std
