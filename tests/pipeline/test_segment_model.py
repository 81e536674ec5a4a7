"""The kept segment model: names by business conditions, drift, refits that carry names, scoring outside the
pipeline, and the edge cases (few customers, one cluster, features gone, a corrupt model file)."""

from __future__ import annotations

import shutil
from pathlib import Path

import click
import joblib
import numpy as np
import pandas as pd
import pytest

from seg_pipeline.ml import segment_model as sm
from seg_pipeline.ml.naming import Segment, cluster_figures, descriptive_segment, load_catalogue, name_clusters
from seg_pipeline.ml.scaling import build_matrix
from tests.conftest import read_table, run

FIT = dict(k_range=(3, 8), business_range=(4, 6), seed=42, n_init=4, silhouette_sample=2000, selection_sample=50_000)
DRIFT = dict(max_silhouette_drop=0.10, max_far_share=0.10, check_names=True, silhouette_sample=2000, seed=42)


def consumers(n: int = 1600, seed: int = 0, first_id: int = 10000) -> pd.DataFrame:
    """Customer features of a consumer retailer: four behaviour groups, no trade buyers (order values within a
    few times of each other)."""
    rng = np.random.default_rng(seed)
    group = rng.choice(4, n, p=[0.25, 0.3, 0.25, 0.2])
    # loyal, one-time ordinary, one-time small, new
    freq = np.select([group == 0], [rng.integers(4, 15, n)], default=1)
    recency = np.select(
        [group == 0, group == 3], [rng.integers(1, 40, n), rng.integers(1, 30, n)], default=rng.integers(150, 330, n)
    )
    aov = np.select([group == 2], [rng.lognormal(3.0, 0.3, n)], default=rng.lognormal(5.5, 0.3, n))
    tenure = np.select([group == 3], [recency + rng.integers(0, 20, n)], default=recency + rng.integers(200, 500, n))
    span = np.where(freq > 1, np.minimum(tenure - recency, 300), 0)
    return pd.DataFrame(
        {
            "quarter": "2011-07-01",
            "customer_id": [str(first_id + i) for i in range(n)],
            "recency_days": recency,
            "frequency": freq,
            "monetary": freq * aov,
            "avg_order_value": aov,
            "distinct_products": np.maximum(1, (freq * rng.integers(3, 12, n))),
            "purchase_span_days": span,
            "tenure_days": tenure,
        }
    )


def trade_buyers(n: int = 300, seed: int = 1) -> pd.DataFrame:
    """Trade buyers: one to three very large orders each (order value ~ 40x a consumer's)."""
    rng = np.random.default_rng(seed)
    freq = rng.integers(1, 4, n)
    aov = rng.lognormal(9.2, 0.3, n)
    recency = rng.integers(5, 60, n)
    tenure = recency + rng.integers(100, 400, n)
    return pd.DataFrame(
        {
            "quarter": "2011-07-01",
            "customer_id": [str(90000 + i) for i in range(n)],
            "recency_days": recency,
            "frequency": freq,
            "monetary": freq * aov,
            "avg_order_value": aov,
            "distinct_products": rng.integers(5, 40, n),
            "purchase_span_days": np.minimum(tenure - recency, 200),
            "tenure_days": tenure,
        }
    )


def fit(features: pd.DataFrame, quarter: str = "2011-04-01") -> sm.SegmentModel:
    features = features.sort_values("customer_id").reset_index(drop=True)
    return sm.fit_new(features, build_matrix(features), quarter, **FIT)


def drift(model: sm.SegmentModel, features: pd.DataFrame) -> sm.Drift:
    X = model.transform(features)
    return sm.measure_drift(model, features, X, model.kmeans.predict(X), **DRIFT)


def do_refit(model, features, **kw):
    features = features.sort_values("customer_id").reset_index(drop=True)
    labels = model.predict_cluster(features)
    args = {**FIT, **kw}
    return sm.refit(
        model, features, build_matrix(features), "2011-07-01", match_max_distance=1.0, old_labels=labels, **args
    ), features


# ------------------------------------------------------------------------------------------ names


def test_names_are_given_only_when_their_conditions_hold():
    """Hand-built cluster figures: each gets the catalogue name whose conditions it meets; a cluster that fits
    none gets a descriptive name, never the least-bad catalogue name."""
    figures = pd.DataFrame(
        {
            "recency_days": [20, 250, 30, 10, 100],
            "frequency": [6, 1, 3, 1, 1],
            "monetary": [6000, 600, 90000, 500, 40],
            "tenure_days": [500, 400, 300, 20, 400],
            "monetary_ratio": [6.0, 1.0, 90.0, 0.9, 0.05],
            "avg_order_value_ratio": [1.2, 1.0, 30.0, 0.9, 0.08],
        },
        index=[0, 1, 2, 3, 4],
    )
    names, descriptive = name_clusters(figures)
    assert names[0] == "High-Value Loyal"
    assert names[2] == "Bulk/Wholesale"
    assert names[3] == "New Customers"
    assert names[4] == "Low-Value One-Time"
    assert names[1] in {"One-Time Buyers", "Dormant"}
    assert descriptive == {}
    # a cluster no name fits: recent, repeat, tiny spend, old account (breaks every condition set)
    odd = pd.DataFrame(
        {
            "recency_days": [100],
            "frequency": [2],
            "monetary": [30],
            "tenure_days": [900],
            "monetary_ratio": [0.05],
            "avg_order_value_ratio": [0.05],
        },
        index=[7],
    )
    names, descriptive = name_clusters(odd)
    assert names == {7: "Cooling repeat low-spend"}
    seg = descriptive["Cooling repeat low-spend"]
    assert seg.conditions == {
        "recency_days": {"min": 90, "max": 180},
        "frequency": {"min": 1, "max": 3},
        "monetary_ratio": {"max": 0.5},
    }
    assert seg.broken_conditions(odd.loc[7]) == []


def test_names_are_distinct_even_when_several_clusters_qualify():
    """Two clusters both meet High-Value Loyal's conditions: the better profile fit gets it, the other the next
    name it qualifies for (or a descriptive one) - never the same name twice."""
    two = pd.DataFrame(
        {
            "recency_days": [10, 40],
            "frequency": [12, 4],
            "monetary": [20000, 4000],
            "tenure_days": [700, 600],
            "monetary_ratio": [20.0, 4.0],
            "avg_order_value_ratio": [1.5, 1.0],
            "z_frequency": [2.0, 0.9],
            "z_monetary": [2.0, 0.8],
            "z_recency_days": [-1.2, -0.5],
        },
        index=[0, 1],
    )
    names, _ = name_clusters(two)
    assert names[0] == "High-Value Loyal"
    assert names[1] != "High-Value Loyal"
    assert names[1] in {"Steady Mid-Value", "Growing Repeat"} or names[1][0].isupper()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_trade_buyers_no_bulk_wholesale(seed):
    model = fit(consumers(seed=seed))
    assert "Bulk/Wholesale" not in model.segment_names
    assert len(set(model.segment_names)) == model.k


def test_a_missing_figure_breaks_a_condition():
    seg = Segment(name="x", description="", action="", conditions={"distinct_products": {"min": 5}})
    assert seg.broken_conditions(pd.Series({"frequency": 3.0})) == ["distinct_products not computable"]


def test_keep_tolerance_is_hysteresis():
    seg = load_catalogue().by_name()["Dormant"]  # recency_days >= 150
    fig = pd.Series({"recency_days": 130.0})
    assert seg.broken_conditions(fig) and not seg.broken_conditions(fig, tolerance=0.25)
    assert (
        descriptive_segment(pd.Series({"recency_days": 20.0, "frequency": 5.0, "monetary_ratio": 3.0})).name
        == "Active frequent high-spend"
    )


# ------------------------------------------------------------------------------------------ life cycle


def test_near_identical_quarters_keep_the_model_and_every_name():
    a = consumers(seed=5)
    model = fit(a)
    rng = np.random.default_rng(9)
    b = a.assign(monetary=a.monetary * rng.uniform(0.99, 1.01, len(a)))  # the same customers, a hair apart
    b = b.assign(avg_order_value=b.monetary / b.frequency)
    d = drift(model, b)
    assert d.breaches == []  # the kept model is reused
    assert d.far_share <= 0.02
    assert (model.predict(a) == model.predict(b)).mean() >= 0.995
    # even a forced refit on the same customers renames nobody
    res, bs = do_refit(model, b)
    assert res.name_change_share == 0.0
    assert sorted(res.carried.values()) == sorted(model.segment_names)
    assert res.model.parent_version == model.version and res.model.version != model.version


def test_a_regime_change_triggers_a_refit_that_keeps_the_old_names():
    """A new group of trade buyers appears: the kept model has no cluster for them (far from every centroid),
    the drift rule calls for a refit, the refit keeps the old groups' names and gives the newcomers Bulk/Wholesale."""
    a = consumers(seed=11)
    model = fit(a)
    assert "Bulk/Wholesale" not in model.segment_names
    b = pd.concat([consumers(seed=12), trade_buyers()], ignore_index=True)
    d = drift(model, b)
    assert any("far from every centroid" in x for x in d.breaches), d.breaches
    # five groups now; on these synthetic groups the silhouette alone would merge two consumer groups to make
    # room for the newcomers (k=4 scores 0.648, k=5 0.553), so the business range asks for at least five
    res, bs = do_refit(model, b, business_range=(5, 6))
    new = res.model
    assert "Bulk/Wholesale" in new.segment_names
    trade = bs.customer_id.astype(int) >= 90000
    named = new.predict(bs)
    assert (named[trade] == "Bulk/Wholesale").mean() >= 0.95
    # the consumers keep the names the kept model gives them
    assert (named[~trade] == model.predict(bs[~trade])).mean() >= 0.9
    assert set(model.segment_names) & set(res.carried.values())


def test_a_k_range_change_keeps_the_names_of_unchanged_customers():
    """The business range moves from 4..6 to 5..6 at a refit: clusters that survive keep their names, so most
    customers keep theirs."""
    a = consumers(seed=21)
    model = fit(a)
    res, fa = do_refit(model, a, business_range=(5, 6), k_range=(5, 8))
    assert res.model.k >= 5
    assert 1 - res.name_change_share >= 0.75
    assert set(res.carried.values()) <= set(model.segment_names)


def test_drift_when_everyone_falls_into_one_cluster():
    model = fit(consumers(seed=2))
    loyal = consumers(seed=3)
    loyal = loyal[loyal.frequency > 3].head(50)
    d = drift(model, loyal)
    assert f"all {len(loyal):,} customers fall into one cluster of the kept model" in d.breaches
    assert d.silhouette is None


def test_scoring_a_frame_without_a_model_feature_says_which():
    model = fit(consumers(seed=4))
    frame = consumers(seed=5).drop(columns=["distinct_products"])
    with pytest.raises(sm.ModelInputError, match=r"needs the customer_features column\(s\) \['distinct_products'\]"):
        model.predict(frame)
    with pytest.raises(sm.ModelInputError, match="cannot score rows with empty features"):
        model.predict(consumers(seed=5).assign(distinct_products=np.nan))


def test_fewer_customers_than_clusters_is_a_clear_error():
    few = consumers(n=3, seed=1)
    with pytest.raises(ValueError, match="cannot fit 4..6 clusters: only 3 distinct customer profiles"):
        fit(few)


def test_the_model_file_scores_in_one_call(tmp_path):
    model = fit(consumers(seed=8))
    joblib.dump(model, tmp_path / "segment_model.joblib")
    frame = consumers(seed=9)
    loaded = joblib.load(tmp_path / "segment_model.joblib")
    assert loaded.predict(frame).tolist() == model.predict(frame).tolist()
    assert set(loaded.predict(frame)) <= set(model.segment_names)
    figures = cluster_figures(frame, loaded.predict_cluster(frame))
    assert figures.customers.sum() == len(frame)


# ------------------------------------------------------------------------------------------ the pipeline


@pytest.fixture()
def copied_home(full_run, tmp_path):
    home, quarters = full_run
    copy = tmp_path / "home"
    shutil.copytree(home, copy, ignore=shutil.ignore_patterns("dagster"))
    return copy, quarters


@pytest.mark.slow  # reruns the pipeline on a copy of the full run's home
def test_rerun_with_another_k_range_keeps_every_name(copied_home, small_csv, dagster_instance):
    """A kept model keeps its k and names when the k range in the config changes: rerunning the latest quarter
    with business range 5..6 changes no customer's segment."""
    from seg_pipeline.cli import run_pipeline

    home, quarters = copied_home
    before = read_table(
        home, "SELECT customer_id, segment FROM segment_assignments WHERE quarter = ? ORDER BY 1", [quarters[-1]]
    )
    decision = read_table(home, "SELECT decision FROM clustering_model WHERE quarter = ? AND chosen", [quarters[-1]])
    if decision.decision.iloc[0] != "reused":
        pytest.skip("the latest quarter of the small data refitted")
    run_pipeline(
        home,
        str(small_csv),
        quarters=quarters[-1],
        quiet=True,
        instance=dagster_instance,
        model_config={"business_k_min": 5, "business_k_max": 6, "k_min": 5},
    )
    after = read_table(
        home, "SELECT customer_id, segment FROM segment_assignments WHERE quarter = ? ORDER BY 1", [quarters[-1]]
    )
    pd.testing.assert_frame_equal(before, after)


@pytest.mark.slow  # reruns the pipeline on a copy of the full run's home
def test_forced_refit_is_recorded_and_carries_names(copied_home, small_csv, dagster_instance):
    from seg_pipeline.cli import run_pipeline

    home, quarters = copied_home
    q = quarters[-1]
    before = read_table(home, "SELECT customer_id, segment FROM segment_assignments WHERE quarter = ? ORDER BY 1", [q])
    run_pipeline(home, str(small_csv), quarters=q, quiet=True, instance=dagster_instance, refit=True)
    row = read_table(home, "SELECT * FROM clustering_model WHERE quarter = ? AND chosen", [q]).iloc[0]
    assert row.decision == "refit" and "forced in the run config" in row.decision_reason
    assert row.fitted_quarter == q and row.parent_version
    after = read_table(
        home, "SELECT customer_id, segment, model_version FROM segment_assignments WHERE quarter = ? ORDER BY 1", [q]
    )
    assert (after.model_version == row.model_version).all()
    kept = (before.segment.to_numpy() == after.segment.to_numpy()).mean()
    assert kept == pytest.approx(1 - row.refit_name_change_share, abs=1e-9)
    assert kept >= 0.6
    h = read_table(
        home,
        "SELECT DISTINCT from_model_version, to_model_version FROM segment_migration_history WHERE quarter = ?",
        [q],
    )
    assert len(h) == 1 and h.to_model_version.iloc[0] == row.model_version != h.from_model_version.iloc[0]


@pytest.mark.slow  # two reruns of the pipeline on a copy of the full run's home
def test_a_corrupt_model_file_names_the_file(copied_home, small_csv, dagster_instance):
    home, quarters = copied_home
    q, prev = quarters[-1], quarters[-2]
    path = Path(home) / "models" / prev / "segment_model.joblib"
    path.write_bytes(b"not a model")
    before = read_table(home, "SELECT * FROM segment_assignments WHERE quarter = ? ORDER BY customer_id", [q])
    with pytest.raises(click.ClickException) as info:
        run(home, small_csv, quarters=q, instance=dagster_instance)
    msg = info.value.message
    assert str(path) in msg and "does not match the SHA-256" in msg and "refit_if_model_unreadable" in msg
    after = read_table(home, "SELECT * FROM segment_assignments WHERE quarter = ? ORDER BY customer_id", [q])
    pd.testing.assert_frame_equal(before, after)  # the last good outputs stay
    path.unlink()
    from seg_pipeline.cli import run_pipeline

    run_pipeline(
        home,
        str(small_csv),
        quarters=q,
        quiet=True,
        instance=dagster_instance,
        model_config={"refit_if_model_unreadable": True},
    )
    row = read_table(home, "SELECT decision, decision_reason FROM clustering_model WHERE quarter = ? AND chosen", [q])
    assert row.decision.iloc[0] == "initial_fit"
    assert "is missing" in row.decision_reason.iloc[0] and "refit_if_model_unreadable" in row.decision_reason.iloc[0]
