"""seg_pipeline/ml/customer_value.py: the BG/NBD and Gamma-Gamma fits recover known parameters from simulated
histories, and the predictions behave as the models say they must.

Tolerance of the recovery tests: each estimate must lie within 4 asymptotic standard errors of the true value
(the standard errors come from the observed information at the optimum, ml.customer_value.standard_errors).
If the estimator is unbiased and normal with that spread, 4 SE miss with probability 6e-5 per parameter. That
the standard errors are right was checked by repeated simulation, twice (2026-12-01; 30 data sets of 4,000
customers each, the parameters below; the second is `bench/clv.py --recovery 30`, in bench/clv.md): over the
seven parameters the z-scores (estimate - truth) / SE had means -0.25..+0.31 and sds 0.85..1.14, 90-100% of
them were within 2 SE, and none was beyond 2.7 SE. The tests also bound the relative error, so a huge standard
error cannot make them pass vacuously.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from seg_pipeline.ml import customer_value as cv

TRUE_BG = {"r": 0.25, "alpha": 4.0, "a": 0.8, "b": 2.5}
TRUE_GG = {"p": 6.0, "q": 4.0, "v": 15.0}  # near the CDNOW estimates of Fader & Hardie (p 6.25, q 3.74, v 15.45)
N = 4000


@pytest.fixture(scope="module")
def simulated():
    data = cv.simulate_bgnbd(N, **TRUE_BG, T_min=26, T_max=104, seed=11)
    data["monetary_value"] = cv.simulate_gamma_gamma(data["frequency"], **TRUE_GG, seed=12)
    return data


@pytest.fixture(scope="module")
def fits(simulated):
    return cv.fit_bgnbd(simulated), cv.fit_gamma_gamma(simulated)


def test_bgnbd_recovers_the_simulated_parameters(fits):
    bg, _ = fits
    assert bg.converged and bg.identified, bg.message
    for name, true in TRUE_BG.items():
        est, se = bg.params[name], bg.std_errors[name]
        assert abs(est - true) <= 4 * se, (name, est, se)
        assert se < 0.25 * true, (name, se)  # the data pin the parameter down: the check above is not vacuous


def test_gamma_gamma_recovers_the_simulated_parameters(fits, simulated):
    _, gg = fits
    assert gg.converged and gg.identified, gg.message
    assert gg.customers == int((simulated["frequency"] > 0).sum())  # fitted on the repeat buyers only
    for name, true in TRUE_GG.items():
        est, se = gg.params[name], gg.std_errors[name]
        assert abs(est - true) <= 4 * se, (name, est, se)
        assert se < 0.35 * true, (name, se)


def test_the_fit_is_the_maximum_likelihood_one(fits, simulated):
    """Flat priors: the MAP is the MLE. A scipy optimisation of our own numpy log-likelihood (written from the
    paper, independently of pymc-marketing) lands on the same point and the same log-likelihood."""
    from scipy.optimize import minimize

    bg, _ = fits
    x, t_x, T = (simulated[c].to_numpy() for c in ("frequency", "recency", "T"))
    res = minimize(
        lambda z: -cv.bgnbd_loglik(np.exp(z), x, t_x, T).sum(),
        np.zeros(4),
        method="Nelder-Mead",
        options={"xatol": 1e-8, "fatol": 1e-8, "maxiter": 20000, "maxfev": 20000},
    )
    assert -res.fun == pytest.approx(bg.log_likelihood, abs=1e-3)
    for name, value in zip(cv.BGNBD_PARAMS, np.exp(res.x)):
        assert bg.params[name] == pytest.approx(value, rel=1e-3), name


def _customers(**cols) -> pd.DataFrame:
    return pd.DataFrame(cols)


def test_a_long_silence_lowers_p_alive(fits):
    bg, gg = fits
    # the same history (8 repeat purchases over 40 weeks of a 100-week life) except when the last one was
    d = _customers(
        customer_id=["regular", "silent"],
        frequency=[8, 8],
        recency=[98.0, 40.0],
        T=[100.0, 100.0],
        monetary_value=[30.0, 30.0],
    )
    s = cv.score(bg, gg, d, unit_days=7.0)
    assert s["p_alive"].iloc[1] < s["p_alive"].iloc[0]
    assert s["p_alive"].iloc[0] > 0.9 and s["p_alive"].iloc[1] < 0.5
    assert s["clv"].iloc[1] < s["clv"].iloc[0]
    assert s["value_at_risk"].iloc[1] > s["value_at_risk"].iloc[0]  # the silent one is the one at risk


def test_clv_grows_with_the_horizon_and_falls_with_the_discount_rate(fits):
    bg, gg = fits
    d = _customers(
        customer_id=["a", "b", "c"],
        frequency=[0, 3, 12],
        recency=[0.0, 20.0, 60.0],
        T=[30.0, 50.0, 62.0],
        monetary_value=[0.0, 25.0, 80.0],
    )
    by_h = [
        cv.score(bg, gg, d, 7.0, horizon_weeks=h, annual_discount_rate=0.1)["clv"].to_numpy() for h in (13, 52, 104)
    ]
    assert np.all(by_h[0] < by_h[1]) and np.all(by_h[1] < by_h[2])
    by_r = [cv.score(bg, gg, d, 7.0, horizon_weeks=52, annual_discount_rate=r)["clv"].to_numpy() for r in (0, 0.1, 0.5)]
    assert np.all(by_r[0] > by_r[1]) and np.all(by_r[1] > by_r[2])
    # undiscounted, the CLV is the expected purchases times the expected order value
    s = cv.score(bg, gg, d, 7.0, horizon_weeks=52, annual_discount_rate=0.0)
    assert s["clv"].to_numpy() == pytest.approx(
        (s["expected_purchases_52w"] * s["expected_avg_order_value"]).to_numpy()
    )


def test_the_time_unit_changes_the_scale_not_the_fit(simulated):
    """alpha is a rate per time unit: the same histories in days have their likelihood maximum at alpha x 7 (the
    log-likelihood only shifts by the constant -x log 7, the Jacobian of the time change), so the fit is the
    same model whatever the unit."""
    x, t_x, T = (simulated[c].to_numpy() for c in ("frequency", "recency", "T"))
    for theta in ([0.25, 4.0, 0.8, 2.5], [1.3, 30.0, 2.0, 9.0]):
        r, alpha, a, b = theta
        weeks = cv.bgnbd_loglik(theta, x, t_x, T)
        days = cv.bgnbd_loglik([r, 7 * alpha, a, b], x, 7 * t_x, 7 * T)
        assert days == pytest.approx(weeks - x * np.log(7), abs=1e-9)


@pytest.mark.parametrize(
    "frame, words",
    [
        (_customers(frequency=[0] * 50, recency=[0.0] * 50, T=[0.0] * 50), "single day"),
        (_customers(frequency=[0] * 50, recency=[0.0] * 50, T=[5.0] * 50), "one day only"),
        (_customers(frequency=[1] * 5 + [0] * 95, recency=[3.0] * 5 + [0.0] * 95, T=[9.0] * 100), "5 of 100"),
        (_customers(frequency=[1] * 10, recency=[3.0] * 10, T=[9.0] * 10), "only 10 customers"),
    ],
)
def test_data_that_cannot_support_a_fit_is_named(frame, words):
    reason = cv.assess_data(frame, min_customers=30, min_repeat_buyers=20)
    assert reason is not None and words in reason


def test_enough_data_passes_the_check(simulated):
    assert cv.assess_data(simulated, min_customers=30, min_repeat_buyers=20) is None


def test_calibration_by_frequency_bucket():
    c = cv.calibration([0, 0, 1, 9, 12], [0.1, 0.3, 1.0, 5.0, 7.0], [0, 1, 1, 4, 8], holdout_days=91)
    assert c.by_frequency["bucket"].tolist() == ["0", "1", "7+"]
    assert c.by_frequency["customers"].tolist() == [2, 1, 2]
    assert c.by_frequency["mean_actual"].tolist() == [0.5, 1.0, 6.0]
    assert c.predicted == pytest.approx(13.4) and c.actual == 14
    assert c.relative_error == pytest.approx(-0.6 / 14)
    assert 0.9 < c.correlation <= 1


def test_the_sample_is_reproducible_and_only_on_large_data():
    assert cv.sample_rows(100, 250, seed=0) is None
    a, b = cv.sample_rows(10_000, 500, seed=3), cv.sample_rows(10_000, 500, seed=3)
    assert len(a) == 500 and np.array_equal(a, b) and len(set(a)) == 500


# ------------------------------------------------------------------------- a fit that does not converge


def thin_history(n: int = 300, seed: int = 3) -> pd.DataFrame:
    """Most customers bought once or twice (frequency 0 or 1 repeat day), within half a year, the second
    purchase late: the shape on which the BG/NBD estimates run off instead of converging."""
    rng = np.random.default_rng(seed)
    freq = rng.choice([0, 1], n, p=[0.3, 0.7])
    T = rng.uniform(1, 26, n)
    recency = np.where(freq > 0, (0.9 + 0.1 * rng.uniform(0, 1, n)) * T, 0.0)
    value = np.where(freq > 0, rng.uniform(5, 50, n), 0.0)
    return pd.DataFrame({"frequency": freq, "recency": recency, "T": T, "monetary_value": value})


def _fit(model: str, converged: bool = True, identified: bool = True, message: str = "ok") -> cv.Fit:
    names = cv.BGNBD_PARAMS if model == cv.BGNBD else cv.GG_PARAMS
    return cv.Fit(model, dict.fromkeys(names, 1.0), dict.fromkeys(names), -1.0, 10, converged, identified,
                  message, 0.0, 0.0)  # fmt: skip


def _scores(**change) -> pd.DataFrame:
    base = {
        "p_alive": [0.5, 0.9],
        "expected_purchases_13w": [0.2, 1.0],
        "expected_purchases_52w": [0.6, 3.0],
        "expected_avg_order_value": [20.0, 30.0],
        "clv": [10.0, 80.0],
        "value_at_risk": [5.0, 8.0],
    }
    return pd.DataFrame({**base, **change})


def test_thin_data_gives_a_fit_that_did_not_converge_as_a_state_with_the_reason():
    """The pipeline's own function on thin data: nothing raises, the state is not_converged, no scores are
    returned, and the note says which estimates ran off and what that did to the predictions."""
    data = thin_history()
    assert cv.assess_data(data, min_customers=30, min_repeat_buyers=20) is None  # enough data to try a fit
    out = cv.fit_and_score(data, data, unit_days=7.0)
    assert out.state == cv.NOT_CONVERGED and out.scores is None
    assert out.bg.params["r"] > cv.MAX_PARAMETER and out.bg.params["alpha"] > cv.MAX_PARAMETER
    assert re.fullmatch(
        r"the fit did not converge: bgnbd: r=\S+, alpha=\S+ ran off towards infinity; gamma_gamma: q=\S+, v=\S+ "
        r"ran off towards infinity; the predictions are not finite for 300 of 300 customers "
        r"\(expected_purchases_13w, expected_purchases_52w, clv, value_at_risk\)",
        out.note,
    ), out.note


def test_absurd_estimates_did_not_converge():
    """Estimates around 1e33 (the file of the issue): the log-likelihood cannot see the data any more (here it
    comes out as 0.0), so this is an optimiser that ran off, not a limit that still predicts."""
    x, t_x, T = np.array([0, 1, 2, 0, 1.0]), np.array([0, 3, 5, 0, 2.0]), np.array([6, 7, 8, 9, 10.0])
    theta = [1e33, 3e33, 0.8, 2.5]
    fit = cv._assess(cv.BGNBD, cv.BGNBD_PARAMS, theta, lambda th: cv.bgnbd_loglik(th, x, t_x, T), 5, 0.0, None)
    assert not fit.converged and not fit.identified
    assert fit.message == "r=1e+33, alpha=3e+33: beyond 1e+15, the optimiser ran off instead of converging"
    assert cv.fit_state(fit, _fit(cv.GAMMA_GAMMA)) == (
        cv.NOT_CONVERGED,
        "the fit did not converge: bgnbd: r=1e+33, alpha=3e+33: beyond 1e+15, the optimiser ran off instead of "
        "converging",
    )
    tiny = cv._assess(cv.BGNBD, cv.BGNBD_PARAMS, [0.5, 2.0, 1e-9, 2.5], lambda th: cv.bgnbd_loglik(th, x, t_x, T),
                      5, 0.0, None)  # fmt: skip
    assert tiny.converged and not tiny.identified and tiny.message == "a=1e-09 ran off towards 0"


@pytest.mark.parametrize(
    "bg, gg, scores, error, expected",
    [
        (None, None, None, "RuntimeError: optimisation failed",
         (cv.NOT_CONVERGED, "the fit did not converge: it failed (RuntimeError: optimisation failed)")),
        (_fit(cv.BGNBD, converged=False, identified=False, message="the gradient at the estimate is not zero (max 0.2)"),
         _fit(cv.GAMMA_GAMMA), None, "",
         (cv.NOT_CONVERGED, "the fit did not converge: bgnbd: the gradient at the estimate is not zero (max 0.2)")),
        (_fit(cv.BGNBD, identified=False, message="a=8e+10, b=1e+12 ran off towards infinity"),
         _fit(cv.GAMMA_GAMMA), _scores(), "",
         (cv.FITTED, "bgnbd: a=8e+10, b=1e+12 ran off towards infinity (predictions are the limit)")),
        (_fit(cv.BGNBD), _fit(cv.GAMMA_GAMMA), _scores(clv=[np.nan, 1.0], value_at_risk=[np.inf, 1.0]), "",
         (cv.NOT_CONVERGED, "the fit did not converge: the predictions are not finite for 1 of 2 customers "
                            "(clv, value_at_risk)")),
        (_fit(cv.BGNBD), _fit(cv.GAMMA_GAMMA),
         _scores(p_alive=[1.5, 0.5], expected_purchases_52w=[0.1, 3.0], clv=[-1.0, 2.0]), "",
         (cv.NOT_CONVERGED, "the fit did not converge: the predictions are negative for 1 customers; P(alive) "
                            "outside [0, 1] for 1 customers; fewer purchases expected in 52 weeks than in 13 for 1 "
                            "customers")),
        (_fit(cv.BGNBD), _fit(cv.GAMMA_GAMMA), _scores(), "", (cv.FITTED, "ok")),
    ],
    ids=["optimiser_failed", "gradient_not_zero", "limit_that_predicts", "predictions_not_finite",
         "predictions_inconsistent", "fitted"],
)  # fmt: skip
def test_fit_state_names_the_state_and_the_reason(bg, gg, scores, error, expected):
    assert cv.fit_state(bg, gg, scores, error=error) == expected
