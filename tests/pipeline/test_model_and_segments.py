"""scaled_matrix, clustering_model, segment_assignments: reproducible, order-independent, well-formed; and
the pure functions behind them."""

from __future__ import annotations

import hashlib
import itertools
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest

from seg_pipeline.ml.clustering import KTrial, choose_k, cluster, elbow_k
from seg_pipeline.ml.naming import descriptive_label, load_catalogue
from seg_pipeline.ml.scaling import CANDIDATE_FEATURES, build_matrix, prune_correlated
from tests.conftest import read_table
from tests.pipeline.helpers import run_core

# ---------------------------------------------------------------------------------------------------------
# Reproducibility: a second run on the same file, and a run on the same rows in another order
# ---------------------------------------------------------------------------------------------------------


# The second and the shuffled run materialise the segmentation chain only (no report assets), every quarter
# of the shared full run, and are compared with it table by table.


@pytest.fixture(scope="module")
def second_run(tmp_path_factory, small_csv, dagster_instance, full_run):
    home = tmp_path_factory.mktemp("second_home")
    quarters = run_core(home, small_csv, full_run[1], dagster_instance)
    return home, quarters


@pytest.fixture(scope="module")
def shuffled_run(tmp_path_factory, small_csv, dagster_instance, full_run):
    d = tmp_path_factory.mktemp("shuffled")
    df = pd.read_csv(small_csv, dtype=str, keep_default_na=False)
    shuffled = df.sample(frac=1, random_state=20240601).reset_index(drop=True)
    assert not shuffled.equals(df)
    src = d / "shuffled.csv"
    shuffled.to_csv(src, index=False)
    home = d / "home"
    quarters = run_core(home, src, full_run[1], dagster_instance)
    return home, quarters


ASSIGNMENTS = "SELECT * FROM segment_assignments ORDER BY quarter, customer_id"
MODEL_ROWS = "SELECT * EXCLUDE (artifact_path) FROM clustering_model ORDER BY quarter, k"


@pytest.mark.slow  # second_run: another run of every quarter (~8 s)
def test_same_input_gives_identical_results(full_run, second_run):
    home_a, quarters_a = full_run
    home_b, quarters_b = second_run
    assert quarters_a == quarters_b
    a, b = read_table(home_a, ASSIGNMENTS), read_table(home_b, ASSIGNMENTS)
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b, check_exact=True)  # quarter, customer, cluster index and segment name
    ma, mb = read_table(home_a, MODEL_ROWS), read_table(home_b, MODEL_ROWS)
    assert ma[ma.decision != "waiting_for_history"].artifact_sha256.notna().all()
    pd.testing.assert_frame_equal(
        ma.drop(columns="artifact_sha256"), mb.drop(columns="artifact_sha256"), check_exact=False, rtol=1e-9
    )
    for table in (
        "segment_summary",
        "scaled_matrix",
        "scaled_matrix_columns",
        "customer_features",
        "segment_migration_history",
    ):
        sql = f"SELECT * FROM {table} ORDER BY ALL"
        pd.testing.assert_frame_equal(
            read_table(home_a, sql), read_table(home_b, sql), obj=table, check_exact=False, rtol=1e-9
        )


@pytest.mark.slow  # second_run
def test_same_input_gives_bit_identical_features_and_artifacts(full_run, second_run):
    """Money is summed exactly, so features, the model version and the artifact bytes are reproducible."""
    home_a, _ = full_run
    home_b, _ = second_run
    sql = "SELECT quarter, customer_id, monetary, avg_order_value FROM customer_features ORDER BY ALL"
    pd.testing.assert_frame_equal(read_table(home_a, sql), read_table(home_b, sql), check_exact=True)
    sql = "SELECT quarter, k, chosen, artifact_sha256, artifact_path FROM clustering_model ORDER BY ALL"
    pd.testing.assert_frame_equal(read_table(home_a, sql), read_table(home_b, sql), check_exact=True)


def test_artifacts_are_versioned_and_match_their_hash(full_run):
    home, quarters = full_run
    rows = read_table(
        home,
        "SELECT quarter, artifact_path, artifact_sha256, k, model_version, decision, fitted_quarter "
        "FROM clustering_model WHERE chosen ORDER BY quarter",
    )
    assert rows.quarter.tolist() == quarters
    # the data starts on 2009-12-01: its first quarter covers one month, so no model is fitted on it
    waiting = rows[rows.decision == "waiting_for_history"]
    assert waiting.quarter.tolist() == [quarters[0]]
    assert waiting.artifact_path.isna().all() and waiting.model_version.isna().all() and waiting.k.isna().all()
    assert not (Path(home) / "models" / quarters[0] / "segment_model.joblib").exists()
    rows = rows[rows.decision != "waiting_for_history"]
    assert rows.decision.iloc[0] == "initial_fit"
    for r in rows.itertuples():
        assert not Path(r.artifact_path).is_absolute()  # relative to the home: the home can move
        path = Path(home) / r.artifact_path
        assert path == Path(home) / "models" / r.quarter / "segment_model.joblib"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == r.artifact_sha256
        assert (path.parent / "scaler.joblib").is_file()
        model = joblib.load(path)
        assert (model.version, model.k, model.fitted_quarter) == (r.model_version, r.k, r.fitted_quarter)
        assert model.library_versions["scikit-learn"]
    # a reused quarter's model is the previous quarter's model; a fit or refit is a new version
    for prev, cur in zip(rows.itertuples(), list(rows.itertuples())[1:]):
        if cur.decision == "reused":
            assert cur.model_version == prev.model_version and cur.fitted_quarter == prev.fitted_quarter
        else:
            assert cur.model_version != prev.model_version and cur.fitted_quarter == cur.quarter


@pytest.mark.slow  # shuffled_run: another run of every quarter (~8 s)
def test_segments_do_not_depend_on_row_order(full_run, shuffled_run):
    home_a, quarters_a = full_run
    home_b, quarters_b = shuffled_run
    assert quarters_a == quarters_b
    sql = "SELECT quarter, customer_id, segment FROM segment_assignments ORDER BY quarter, customer_id"
    a, b = read_table(home_a, sql), read_table(home_b, sql)
    assert len(a) > 0
    pd.testing.assert_frame_equal(a, b)
    feats = "SELECT * FROM customer_features ORDER BY quarter, customer_id"
    pd.testing.assert_frame_equal(read_table(home_a, feats), read_table(home_b, feats))


# ---------------------------------------------------------------------------------------------------------
# Properties of the model and the assignments, on the shared full run
# ---------------------------------------------------------------------------------------------------------


def test_model_choice_per_quarter(full_run):
    """A fitted quarter tried every k of the range and took the best silhouette inside the business range (or,
    at a refit, kept the kept model's k within the margin); a reused quarter shows its model's fit-time trials
    and the drift figures that let it be reused."""
    home, quarters = full_run
    m = read_table(home, "SELECT * FROM clustering_model ORDER BY quarter, k")
    assert sorted(m.quarter.unique()) == quarters
    assert m[m.quarter == quarters[0]].decision.tolist() == ["waiting_for_history"]
    assert "waiting for history: the data starts on 2009-12-01" in m[m.quarter == quarters[0]].decision_reason.iloc[0]
    m = m[m.quarter != quarters[0]]
    by_quarter = {q: g for q, g in m.groupby("quarter")}
    assert by_quarter[quarters[1]].decision.iloc[0] == "initial_fit"
    for q, g in by_quarter.items():
        assert g.chosen.sum() == 1, q
        chosen = g[g.chosen].iloc[0]
        assert g.k.tolist() == list(range(3, 9)), q  # every k of the default range 3..8 was tried at the fit
        assert g.silhouette.between(-1, 1).all() and (g.inertia >= 0).all(), q
        best_in_range = g[g.k.between(4, 6)].silhouette.max()
        assert chosen.silhouette >= best_in_range - 0.02 - 1e-9, q
        assert f"k={chosen.k}" in chosen.reason
        # a fitted model has no empty cluster; a kept model's cluster may hold nobody in a later quarter
        assert chosen.min_cluster_share > 0 if chosen.decision != "reused" else chosen.min_cluster_share >= 0
        assert g[~g.chosen].min_cluster_share.isna().all()
        assert chosen.decision_reason
        if chosen.decision == "reused":
            fit = by_quarter[chosen.fitted_quarter]
            np.testing.assert_allclose(g.silhouette.to_numpy(), fit.silhouette.to_numpy())
            assert not np.isnan(chosen.current_silhouette)
            assert chosen.far_share <= chosen.max_far_share  # reused: no drift rule was breached
            assert chosen.silhouette_drop <= chosen.max_silhouette_drop


def test_assignments_cover_each_customer_once(full_run):
    home, quarters = full_run
    a = read_table(home, "SELECT * FROM segment_assignments")
    f = read_table(home, "SELECT quarter, customer_id FROM customer_features")
    assert not a.duplicated(["quarter", "customer_id"]).any()
    pd.testing.assert_frame_equal(
        a[["quarter", "customer_id"]].sort_values(["quarter", "customer_id"]).reset_index(drop=True),
        f.sort_values(["quarter", "customer_id"]).reset_index(drop=True),
    )
    first = a.quarter == quarters[0]  # waiting for history: labels by the rules alone, no model, no cluster
    assert a[~first].model_version.notna().all() and a[~first].cluster.notna().all()
    assert a[first].model_version.isna().all() and a[first].cluster.isna().all()
    assert a[first].label_basis.str.match(r"^(rules only|descriptive): ").all()


def test_assignments_are_the_saved_models_predictions(full_run):
    """segment_assignments of every quarter = models/<quarter>/segment_model.joblib scoring the quarter's
    customer_features with the catalogue, row for row (cluster, label and its basis), in any row order: the
    file a CRM team loads scores exactly as the pipeline did."""
    home, quarters = full_run
    for q in quarters[1:]:
        model = joblib.load(Path(home) / "models" / q / "segment_model.joblib")
        f = read_table(home, "SELECT * FROM customer_features WHERE quarter = ? ORDER BY customer_id", [q])
        a = read_table(home, "SELECT * FROM segment_assignments WHERE quarter = ? ORDER BY customer_id", [q])
        assert a.customer_id.tolist() == f.customer_id.tolist(), q
        assert model.predict(f).tolist() == a.segment.tolist(), q
        clusters, labels = model.label(f)
        assert clusters.tolist() == a.cluster.tolist() and labels.basis.tolist() == a.label_basis.tolist(), q
        shuffled = f.sample(frac=1, random_state=1)
        assert model.predict(shuffled).tolist() == a.set_index("customer_id").loc[shuffled.customer_id].segment.tolist()
        assert (a.model_version == model.version).all(), q
        # some customers only (a CRM between refreshes), with the quarter as the reference: the same labels
        some = f.iloc[::7]
        assert model.predict(some, reference=f).tolist() == a.segment.iloc[::7].tolist(), q


def test_without_a_refit_the_previous_model_names_every_customer(full_run):
    """No model churn: in a quarter that reused the model, scoring its customers with the previous quarter's
    saved model gives exactly the published names."""
    home, quarters = full_run
    decisions = read_table(home, "SELECT quarter, decision FROM clustering_model WHERE chosen")
    decisions = dict(zip(decisions.quarter, decisions.decision))
    reused = [(p, q) for p, q in zip(quarters, quarters[1:]) if decisions[q] == "reused"]
    assert reused, decisions
    for p, q in reused:
        old = joblib.load(Path(home) / "models" / p / "segment_model.joblib")
        f = read_table(home, "SELECT * FROM customer_features WHERE quarter = ? ORDER BY customer_id", [q])
        a = read_table(home, "SELECT segment FROM segment_assignments WHERE quarter = ? ORDER BY customer_id", [q])
        assert old.predict(f).tolist() == a.segment.tolist(), q


def test_every_label_holds_for_its_customer(full_run):
    """A label is a statement about the customer: read from segment_assignments alone (its figure columns), every
    catalogue label's conditions hold for the customer - exactly, or within keep_tolerance when the label is the
    customer's cluster name - and no customer who meets At-Risk exactly carries a name claiming recent activity.
    Each kept model's cluster names hold for enough of their customers (no drift on names)."""
    home, quarters = full_run
    cat = load_catalogue()
    a = read_table(home, "SELECT * FROM segment_assignments ORDER BY quarter, customer_id")
    for name, rows in a.groupby("segment"):
        seg = cat.by_name().get(name)
        if seg is None:  # descriptive: the words' ranges
            seg = descriptive_label(name)
            assert set(seg.conditions) and rows.label_basis.str.startswith("descriptive: ").all(), name
        kept = rows.label_basis.str.startswith("cluster name: ").to_numpy()
        assert seg.holds(rows[~kept]).all(), name
        assert seg.holds(rows[kept], cat.keep_tolerance).all(), name
    at_risk = cat.by_name()["At-Risk"].holds(a)
    active = {s.name for s in cat if s.claims_recency}
    assert not a[at_risk].segment.isin(active).any()
    m = read_table(home, "SELECT quarter FROM clustering_model WHERE chosen AND model_version IS NOT NULL")
    for q in m.quarter:
        model = joblib.load(Path(home) / "models" / q / "segment_model.joblib")
        f = read_table(home, "SELECT * FROM customer_features WHERE quarter = ? ORDER BY customer_id", [q])
        assert model.names_failing(f, model.predict_cluster(f)) == [], q


def test_segment_summary_agrees_with_assignments(full_run):
    home, quarters = full_run
    s = read_table(home, "SELECT * FROM segment_summary")
    a = read_table(home, "SELECT quarter, segment, count(*) AS n FROM segment_assignments GROUP BY ALL")
    rev = read_table(
        home,
        "SELECT a.quarter, a.segment, sum(f.monetary) AS revenue FROM segment_assignments a "
        "JOIN customer_features f USING (quarter, customer_id) GROUP BY ALL",
    )
    assert sorted(s.quarter.unique()) == quarters
    for q, g in s.groupby("quarter"):
        assert g.share_customers.sum() == pytest.approx(1.0, abs=1e-9), q
        assert g.share_revenue.sum() == pytest.approx(1.0, abs=1e-9), q
        assert not g.segment.duplicated().any(), q
    merged = s.merge(a, on=["quarter", "segment"], how="outer", indicator=True)
    assert (merged._merge == "both").all()
    assert (merged.customers == merged.n).all()
    merged = s.merge(rev, on=["quarter", "segment"], suffixes=("", "_check"))
    assert merged.revenue.to_numpy() == pytest.approx(merged.revenue_check.to_numpy(), rel=1e-9)
    catalogue = {seg.name: seg.action for seg in load_catalogue()}
    named = s[s.segment.isin(list(catalogue))]
    assert (named.action == named.segment.map(catalogue)).all()
    assert s[~s.segment.isin(list(catalogue))].action.str.startswith("No catalogue action").all()


def test_scaled_matrix_is_standardised(full_run):
    home, quarters = full_run
    q = quarters[-1]
    m = read_table(home, "SELECT * EXCLUDE (quarter, customer_id) FROM scaled_matrix WHERE quarter = ?", [q])
    assert np.allclose(m.mean().to_numpy(), 0, atol=1e-9)
    assert np.allclose(m.std(ddof=0).to_numpy(), 1, atol=1e-9)
    cols = read_table(home, "SELECT * FROM scaled_matrix_columns WHERE quarter = ? ORDER BY position", [q])
    assert cols.feature.tolist() == list(m.columns)
    assert cols[~cols.kept].dropped_reason.notna().all()
    assert cols[cols.kept].dropped_reason.isna().all()
    assert cols.kept.sum() >= 2


# ---------------------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------------------


def test_prune_correlated_drops_the_later_of_a_perfect_pair():
    rng = np.random.default_rng(0)
    a = rng.normal(size=200)
    df = pd.DataFrame({"a": a, "noise": rng.normal(size=200), "b": 3 * a + 1, "c": -a})
    kept, dropped, corr = prune_correlated(df, 0.9)
    assert kept == ["a", "noise"]
    assert set(dropped) == {"b", "c"}
    assert "with a" in dropped["b"] and "1.000" in dropped["b"]
    assert "with a" in dropped["c"]
    assert corr.loc["a", "b"] == pytest.approx(1.0)


def test_prune_correlated_keeps_everything_under_the_threshold():
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("wxyz"))
    kept, dropped, _ = prune_correlated(df, 0.9)
    assert kept == list("wxyz") and dropped == {}


def _feature_frame(n: int = 300, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    freq = rng.integers(1, 30, n)
    monetary = freq * rng.lognormal(4, 1, n)
    return pd.DataFrame(
        {
            "customer_id": [str(20000 + i) for i in rng.permutation(n)],
            "recency_days": rng.integers(0, 365, n),
            "frequency": freq,
            "monetary": monetary,
            "avg_order_value": monetary / freq,
            "distinct_products": rng.integers(1, 200, n),
            "purchase_span_days": rng.integers(0, 365, n),
            "tenure_days": rng.integers(365, 800, n),
        }
    )


def test_build_matrix_standard_scaling():
    df = _feature_frame()
    m = build_matrix(df, scaler="standard", corr_threshold=0.99)
    assert m.features == CANDIDATE_FEATURES
    assert m.values.shape == (len(df), len(CANDIDATE_FEATURES))
    assert np.allclose(m.values.mean(axis=0), 0, atol=1e-9)
    assert np.allclose(m.values.std(axis=0), 1, atol=1e-9)
    assert list(m.customer_ids) == sorted(df.customer_id)
    # the model input is the kept columns of the matrix
    assert m.model_input().shape == (len(df), len(m.kept))
    # row order of the input does not matter
    m2 = build_matrix(df.sample(frac=1, random_state=5), scaler="standard", corr_threshold=0.99)
    np.testing.assert_array_equal(m.values, m2.values)


def test_build_matrix_skips_missing_features_and_rejects_bad_scaler():
    df = _feature_frame().drop(columns=["tenure_days"]).assign(distinct_products=np.nan)
    m = build_matrix(df)
    assert "tenure_days" not in m.features and "distinct_products" not in m.features
    assert "not computable" in m.dropped["tenure_days"]
    with pytest.raises(ValueError, match="unknown scaler"):
        build_matrix(df, scaler="minmax")
    with pytest.raises(ValueError, match="empty"):
        build_matrix(df.iloc[:0])


def _blobs(centers: int, n: int = 240, seed: int = 0) -> np.ndarray:
    """`centers` well separated round clusters: corners of a cube of side 20, in 3-D."""
    rng = np.random.default_rng(seed)
    c = 20.0 * np.array(list(itertools.product([0, 1], repeat=3)))[:centers]
    return np.vstack([c[i] + rng.normal(scale=0.5, size=(n // centers, 3)) for i in range(centers)])


@pytest.mark.parametrize("centers", [2, 3, 5, 8])
def test_choose_k_stays_in_the_business_range(centers):
    X = _blobs(centers)
    k, trials, reason, *_ = choose_k(X, k_range=(3, 8), business_range=(4, 6), n_init=3)
    assert 4 <= k <= 6
    assert [t.k for t in trials] == list(range(3, 9))
    assert [t.in_business_range for t in trials] == [4 <= t.k <= 6 for t in trials]
    best = max((t for t in trials if t.in_business_range), key=lambda t: t.silhouette)
    assert k == best.k
    assert f"k={k}" in reason
    if centers == 5:
        assert k == 5


def test_choose_k_errors_and_small_data():
    X = _blobs(3)
    with pytest.raises(ValueError, match="do not overlap"):
        choose_k(X, k_range=(3, 4), business_range=(5, 6))
    few = np.repeat(np.array([[0.0, 0.0], [1.0, 1.0], [5.0, 5.0]]), 10, axis=0)
    with pytest.raises(ValueError, match="distinct customer profiles"):
        choose_k(few, k_range=(3, 8), business_range=(4, 6), n_init=2)
    # with only 6 distinct points, k stops below 6 (k must be < distinct points)
    six = np.repeat(np.arange(6, dtype=float).reshape(-1, 1) * [1.0, 2.0], 5, axis=0)
    k, trials, *_ = choose_k(six, k_range=(3, 8), business_range=(4, 6), n_init=2)
    assert [t.k for t in trials] == [3, 4, 5] and k in (4, 5)


def test_elbow_k():
    trials = [KTrial(k, inertia, 0.5, True) for k, inertia in zip(range(3, 8), [100, 40, 30, 25, 22])]
    assert elbow_k(trials) == 4
    assert elbow_k(trials[:2]) is None


def test_cluster_on_a_sample_then_every_customer_from_its_centroids():
    """k is chosen on a sample; the final model covers every row, one run started from the sample's best
    centroids: it finds the same five groups as the data has, each group whole under one label."""
    X = _blobs(5, n=5000, seed=3)
    truth = np.repeat(np.arange(5), 1000)
    result = cluster(X, k_range=(3, 8), business_range=(4, 6), n_init=3, selection_sample=400)
    assert result.k == 5 and len(result.labels) == len(X)
    for g in range(5):
        assert len(set(result.labels[truth == g])) == 1
    assert len(set(result.labels)) == 5
    assert result.model.n_iter_ <= 3  # started at the answer: converges at once


def test_cluster_on_all_rows_keeps_the_selection_fit():
    X = _blobs(5, n=300, seed=4)
    k, _, _, models, whole = choose_k(X, k_range=(3, 8), business_range=(4, 6), n_init=3)
    result = cluster(X, k_range=(3, 8), business_range=(4, 6), n_init=3)
    assert whole and result.k == k
    np.testing.assert_array_equal(result.labels, models[k].labels_)
