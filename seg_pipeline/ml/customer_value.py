"""Customer value with buy-till-you-die models: BG/NBD (Fader, Hardie & Lee 2005) for whether a customer is
still active and how often they will buy, Gamma-Gamma (Fader & Hardie 2013) for what they spend per order.

Pure functions: no Dagster, no DuckDB, no files. The models are pymc-marketing's `clv` module, fitted by MAP
with flat priors (HalfFlat on every parameter), so the estimates are the maximum-likelihood ones of the
literature, not prior-shrunk. pymc-marketing (and pymc, pytensor, arviz) is imported inside the functions
that need it: importing this module costs nothing.

Inputs per customer, in `time_unit`s at day resolution (weeks = days / 7):
- frequency: repeat purchase occasions (distinct purchase days after the first);
- recency: first to last purchase; T: first purchase to the as-of date;
- monetary_value: mean value of the repeat purchase days (0 when there is none).

The log-likelihoods are also written here in numpy, from the papers: they give the fit's log-likelihood, an
independent convergence check (the gradient at the optimum) and the asymptotic standard errors (the observed
information, a numerical Hessian).
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.special import gammaln

BGNBD, GAMMA_GAMMA = "bgnbd", "gamma_gamma"
BGNBD_PARAMS = ("r", "alpha", "a", "b")
GG_PARAMS = ("p", "q", "v")
TIME_UNITS = {"days": 1.0, "weeks": 7.0, "months": 365.25 / 12}
FITTED, INSUFFICIENT, NOT_CONVERGED = "fitted", "insufficient_data", "not_converged"
# a parameter beyond these has run off to infinity or to 0 (e.g. a, b when nobody seems to drop out): the
# optimum is at the edge of the parameter space; published only when the limit still predicts (fit_state)
MAX_PARAMETER, MIN_PARAMETER = 1e6, 1e-6
# beyond this an estimate is absurd, not a limit: float64 keeps 15-16 significant digits, so the data's
# counts added to it (r + x, b + x, p x + q) no longer change the log-likelihood: the optimiser ran off
ABSURD_PARAMETER = 1e15
# the largest |d mean log-likelihood / d log(parameter)| accepted at the optimum
MAX_GRADIENT = 1e-3


# ------------------------------------------------------------------------------------- log-likelihoods


def bgnbd_loglik(theta, x, t_x, T) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood (Fader, Hardie & Lee 2005, eq. 6); theta = (r, alpha, a, b)."""
    r, alpha, a, b = theta
    x, t_x, T = (np.asarray(v, dtype="float64") for v in (x, t_x, T))
    a1 = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(a + b + x)
    a3 = -(r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        a4 = np.log(a) - np.log(b + np.maximum(x, 1) - 1) - (r + x) * np.log(alpha + t_x)
    return a1 + a2 + np.where(x > 0, np.logaddexp(a3, a4), a3)


def gamma_gamma_loglik(theta, x, m) -> np.ndarray:
    """Per-customer Gamma-Gamma log-likelihood of the mean repeat-purchase value m over x > 0 purchases
    (Fader & Hardie 2013, eq. 1a; the same expression as pymc-marketing's GammaGammaModel); theta = (p, q, v)."""
    p, q, v = theta
    x, m = np.asarray(x, dtype="float64"), np.asarray(m, dtype="float64")
    return (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(v)
        + (p * x - 1) * np.log(m)
        + p * x * np.log(x)
        - (p * x + q) * np.log(x * m + v)
    )


def _mean_ll_log(f, log_theta) -> float:
    return float(np.mean(f(np.exp(log_theta))))


def gradient_and_hessian(f, theta, h: float = 1e-4) -> tuple[np.ndarray, np.ndarray]:
    """Central-difference gradient and Hessian of the *mean* log-likelihood f(theta) in log-parameter space."""
    z = np.log(np.asarray(theta, dtype="float64"))
    k = len(z)
    f0 = _mean_ll_log(f, z)
    grad, hess = np.zeros(k), np.zeros((k, k))
    e = np.eye(k) * h
    fp = [_mean_ll_log(f, z + e[i]) for i in range(k)]
    fm = [_mean_ll_log(f, z - e[i]) for i in range(k)]
    for i in range(k):
        grad[i] = (fp[i] - fm[i]) / (2 * h)
        hess[i, i] = (fp[i] - 2 * f0 + fm[i]) / h**2
        for j in range(i + 1, k):
            fpp = _mean_ll_log(f, z + e[i] + e[j])
            fpm = _mean_ll_log(f, z + e[i] - e[j])
            fmp = _mean_ll_log(f, z - e[i] + e[j])
            fmm = _mean_ll_log(f, z - e[i] - e[j])
            hess[i, j] = hess[j, i] = (fpp - fpm - fmp + fmm) / (4 * h * h)
    return grad, hess


def standard_errors(theta, hess_mean_log: np.ndarray, n: int) -> np.ndarray | None:
    """Asymptotic standard errors from the observed information: the inverse of -n x the mean log-likelihood's
    Hessian in log space, mapped back by the delta method (se(theta) = theta x se(log theta)). None when the
    Hessian is not negative definite (no proper maximum)."""
    info = -hess_mean_log * n
    if not np.all(np.isfinite(info)) or np.any(np.linalg.eigvalsh((info + info.T) / 2) <= 0):
        return None
    cov = np.linalg.inv(info)
    return np.asarray(theta) * np.sqrt(np.diag(cov))


# ------------------------------------------------------------------------------------------------- fits


@dataclass
class Fit:
    """One model's fit: estimates, their standard errors, the log-likelihood and whether it converged."""

    model: str  # bgnbd / gamma_gamma
    params: dict[str, float]
    std_errors: dict[str, float | None]
    log_likelihood: float  # total, over the customers fitted
    customers: int  # customers the fit used (a sample of the quarter on large data)
    converged: bool  # the optimiser reached a maximum (a stationary point with finite estimates)
    identified: bool  # ... inside the parameter space: the data pin the model down
    message: str  # what is wrong, or "ok"
    max_gradient: float
    seconds: float
    library: object = field(default=None, repr=False)  # the fitted pymc-marketing model


def _quiet():
    """Silence pymc's and pytensor's logs and warnings during a fit (the caller reports the outcome)."""
    import contextlib

    @contextlib.contextmanager
    def cm():
        loggers = [logging.getLogger(n) for n in ("pymc", "pytensor", "pymc_marketing", "pymc_extras")]
        levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield
        finally:
            for lg, lv in zip(loggers, levels):
                lg.setLevel(lv)

    return cm()


def _assess(model: str, names, theta, f, n: int, t0: float, library) -> Fit:
    """Check a fit: `converged` needs finite, positive estimates with a zero gradient (the optimiser reached a
    stationary point) and a proper maximum there; `identified` is False when the optimum lies at the edge of
    the parameter space (a parameter running off to infinity, a flat log-likelihood, or q <= 1 for
    Gamma-Gamma): the optimiser did its job but the data do not pin the model down."""
    theta = np.asarray(theta, dtype="float64")
    total = float(np.sum(f(theta))) if np.all(np.isfinite(theta)) and np.all(theta > 0) else float("nan")
    failed, unidentified = [], []
    se, max_grad = None, float("nan")
    if not np.all(np.isfinite(theta)) or np.any(theta <= 0) or not np.isfinite(total):
        failed.append(f"the estimates or their log-likelihood are not finite ({dict(zip(names, theta.round(6)))})")
    elif np.any(theta > ABSURD_PARAMETER):
        big = [f"{k}={v:.3g}" for k, v in zip(names, theta) if v > ABSURD_PARAMETER]
        failed.append(f"{', '.join(big)}: beyond {ABSURD_PARAMETER:.0e}, the optimiser ran off instead of converging")
    elif np.any(theta > MAX_PARAMETER) or np.any(theta < MIN_PARAMETER):
        big = [f"{k}={v:.3g}" for k, v in zip(names, theta) if v > MAX_PARAMETER]
        small = [f"{k}={v:.3g}" for k, v in zip(names, theta) if v < MIN_PARAMETER]
        unidentified += [f"{', '.join(big)} ran off towards infinity"] if big else []
        unidentified += [f"{', '.join(small)} ran off towards 0"] if small else []
    else:
        grad, hess = gradient_and_hessian(f, theta)
        max_grad = float(np.max(np.abs(grad)))
        if not max_grad < MAX_GRADIENT:
            failed.append(f"the gradient at the estimate is not zero (max {max_grad:.2g}): the optimiser stopped early")
        se = standard_errors(theta, hess, n)
        if se is None and not failed:
            unidentified.append("the log-likelihood is flat or not curved downwards at the estimate")
        if model == GAMMA_GAMMA and not failed and theta[1] <= 1:
            unidentified.append(f"q = {theta[1]:.3f} <= 1: the mean spend per order would be infinite")
    msg = "; ".join(failed + unidentified)
    return Fit(
        model=model,
        params={k: float(v) for k, v in zip(names, theta)},
        std_errors={k: (float(s) if se is not None else None) for k, s in zip(names, se if se is not None else theta)},
        log_likelihood=total,
        customers=n,
        converged=not failed,
        identified=not failed and not unidentified,
        message=msg or "ok",
        max_gradient=max_grad,
        seconds=time.perf_counter() - t0,
        library=library,
    )


def _clv():
    """pymc-marketing's clv module; its first import (pymc, pytensor: ~2 s) loads outside the collector's
    reach (seg_pipeline/runtime.py)."""
    from .. import runtime

    with runtime.importing():
        from pymc_marketing import clv
    return clv


def _flat(names) -> dict:
    _clv()  # pymc_extras is imported with it
    from pymc_extras.prior import Prior

    return {k: Prior("HalfFlat") for k in names}


def _estimates(model, names) -> np.ndarray:
    post = model.fit_result
    return np.array([float(post[k].values.reshape(-1)[0]) for k in names])


def fit_bgnbd(data: pd.DataFrame) -> Fit:
    """BG/NBD by MAP with flat priors (= maximum likelihood) on customer_id, frequency, recency, T."""
    clv = _clv()
    t0 = time.perf_counter()
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(len(data)),
            "frequency": data["frequency"].to_numpy("float64"),
            "recency": data["recency"].to_numpy("float64"),
            "T": data["T"].to_numpy("float64"),
        }
    )
    with _quiet():
        model = clv.BetaGeoModel(model_config=_flat(BGNBD_PARAMS))
        model.fit(frame, method="map", progressbar=False)
    theta = _estimates(model, BGNBD_PARAMS)
    x, t_x, T = frame["frequency"].to_numpy(), frame["recency"].to_numpy(), frame["T"].to_numpy()
    return _assess(BGNBD, BGNBD_PARAMS, theta, lambda th: bgnbd_loglik(th, x, t_x, T), len(frame), t0, model)


def fit_gamma_gamma(data: pd.DataFrame) -> Fit:
    """Gamma-Gamma by MAP with flat priors on the repeat buyers (frequency > 0, monetary_value > 0)."""
    clv = _clv()
    t0 = time.perf_counter()
    rep = data[(data["frequency"] > 0) & (data["monetary_value"] > 0)]
    frame = pd.DataFrame(
        {
            "customer_id": np.arange(len(rep)),
            "frequency": rep["frequency"].to_numpy("float64"),
            "monetary_value": rep["monetary_value"].to_numpy("float64"),
        }
    )
    with _quiet():
        model = clv.GammaGammaModel(model_config=_flat(GG_PARAMS))
        model.fit(frame, method="map", progressbar=False)
    theta = _estimates(model, GG_PARAMS)
    x, m = frame["frequency"].to_numpy(), frame["monetary_value"].to_numpy()
    return _assess(GAMMA_GAMMA, GG_PARAMS, theta, lambda th: gamma_gamma_loglik(th, x, m), len(frame), t0, model)


# ------------------------------------------------------------------------------- did the fit converge?


def prediction_problems(scores: pd.DataFrame, columns=None) -> str | None:
    """Why a fit's predictions cannot be published (the customer_value contract's rules on them), or None:
    values that are not finite, negative, P(alive) outside [0, 1], fewer purchases expected in 52 weeks than in
    13. `columns`: the prediction columns checked (default: those of `score` but clv_if_active)."""
    cols = list(columns or ["p_alive", "expected_purchases_13w", "expected_purchases_52w",
                            "expected_avg_order_value", "clv", "value_at_risk"])  # fmt: skip
    values = scores[cols].to_numpy("float64")
    n = len(scores)
    out = []
    bad = ~np.isfinite(values)
    if bad.any():
        which = [c for c, b in zip(cols, bad.any(axis=0)) if b]
        out.append(f"not finite for {int(bad.any(axis=1).sum()):,} of {n:,} customers ({', '.join(which)})")
    with np.errstate(invalid="ignore"):
        negative = int((values < 0).any(axis=1).sum())
        p = scores["p_alive"].to_numpy("float64")
        outside = int(((p < 0) | (p > 1)).sum())
        e13, e52 = (scores[c].to_numpy("float64") for c in ("expected_purchases_13w", "expected_purchases_52w"))
        fewer = int((e52 < e13 - 1e-9 * np.maximum(1.0, e13)).sum())
    if negative:
        out.append(f"negative for {negative:,} customers")
    if outside:
        out.append(f"P(alive) outside [0, 1] for {outside:,} customers")
    if fewer:
        out.append(f"fewer purchases expected in 52 weeks than in 13 for {fewer:,} customers")
    return "; ".join(out) or None


def fit_state(bg: Fit | None, gg: Fit | None, scores: pd.DataFrame | None = None, error: str = "") -> tuple[str, str]:
    """The quarter's model state and why, for a fit that ran: not_converged when the optimiser failed
    (`error`), when either fit did not converge (estimates or log-likelihood not finite, an absurd estimate,
    a gradient that is not zero) or when the predictions (`scores`, when given) cannot be published (not
    finite, negative, inconsistent); fitted otherwise, with what limits it (an estimate at the edge of the
    parameter space whose limit still predicts, e.g. a, b -> infinity: one dropout probability for everyone).
    A not_converged note starts with "the fit did not converge"."""
    if error:
        return NOT_CONVERGED, f"the fit did not converge: it failed ({error})"
    if bg is None or gg is None:
        return NOT_CONVERGED, "the fit did not converge: a model is missing"
    failed = [f"{f.model}: {f.message}" for f in (bg, gg) if not f.converged]
    if failed:
        return NOT_CONVERGED, "the fit did not converge: " + "; ".join(failed)
    loose = [f"{f.model}: {f.message}" for f in (bg, gg) if not f.identified]
    problem = prediction_problems(scores) if scores is not None else None
    if problem:
        return NOT_CONVERGED, (
            "the fit did not converge: " + "".join(f"{x}; " for x in loose) + f"the predictions are {problem}"
        )
    return FITTED, ("; ".join(loose) + " (predictions are the limit)") if loose else "ok"


@dataclass
class QuarterFit:
    """customer_value's fit of a quarter: the state, why, the two fits and the scores (only when fitted)."""

    state: str
    note: str
    bg: Fit | None
    gg: Fit | None
    scores: pd.DataFrame | None


def fit_and_score(
    inputs: pd.DataFrame, fit_data: pd.DataFrame, unit_days: float, clock=None, **score_kwargs
) -> QuarterFit:
    """Fit BG/NBD and Gamma-Gamma on `fit_data` (inputs or a sample of them), score every customer of `inputs`
    (score's keyword arguments), and judge the outcome (fit_state). Never raises for a fit that goes wrong: the
    state says so. Call it only on data assess_data accepts. `clock`: called with "fit" once the fits are done
    (the step's timing)."""
    bg = gg = None
    try:
        bg = fit_bgnbd(fit_data)
        gg = fit_gamma_gamma(fit_data)
    except Exception as exc:  # noqa: BLE001 - reported as a fit that did not converge, not as a traceback
        return QuarterFit(*fit_state(bg, gg, error=f"{type(exc).__name__}: {str(exc)[:300]}"), bg, gg, None)
    finally:
        if clock is not None:
            clock("fit")
    state, note = fit_state(bg, gg)
    if state != FITTED:
        return QuarterFit(state, note, bg, gg, None)
    try:
        scores = score(bg, gg, inputs, unit_days, **score_kwargs)
    except Exception as exc:  # noqa: BLE001 - the limit the estimates stand for cannot be evaluated
        return QuarterFit(*fit_state(bg, gg, error=f"scoring: {type(exc).__name__}: {str(exc)[:300]}"), bg, gg, None)
    state, note = fit_state(bg, gg, scores)
    return QuarterFit(state, note, bg, gg, scores if state == FITTED else None)


def library_versions() -> dict[str, str]:
    import pymc
    import pymc_marketing

    return {"pymc_marketing": pymc_marketing.__version__, "pymc": pymc.__version__}


# ------------------------------------------------------------------------------------- can the data fit?


def assess_data(inputs: pd.DataFrame, min_customers: int, min_repeat_buyers: int) -> str | None:
    """Why the quarter's data cannot support a fit, in words, or None when it can."""
    n = len(inputs)
    repeat = int((inputs["frequency"] > 0).sum()) if n else 0
    if n == 0:
        return "no customer has bought by the as-of date"
    if float(inputs["T"].max()) <= 0 and float(inputs["recency"].max()) <= 0:
        return f"the data cover a single day: all {n:,} customers first bought on the as-of date"
    if repeat == 0:
        return f"each of the {n:,} customers bought on one day only: nothing shows how often customers come back"
    if n < min_customers:
        return f"only {n:,} customers (at least {min_customers:,} needed)"
    if repeat < min_repeat_buyers:
        return (
            f"only {repeat:,} of {n:,} customers ({repeat / n:.1%}) bought on more than one day (at least "
            f"{min_repeat_buyers:,} repeat buyers needed)"
        )
    return None


def sample_rows(n: int, size: int | None, seed: int) -> np.ndarray | None:
    """Row positions of a fit sample of `size` of n rows (sorted), or None to fit on everyone."""
    if not size or n <= size:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, size=size, replace=False))


# --------------------------------------------------------------------------------------------- scoring


def _values(xr) -> np.ndarray:
    return np.asarray(xr.values, dtype="float64").reshape(-1)


def expected_purchases(bg: Fit, inputs: pd.DataFrame, t) -> np.ndarray:
    """Expected purchases in the next t time units, per customer (pymc-marketing's BetaGeoModel)."""
    data = _bg_frame(inputs)
    with _quiet():
        return _values(bg.library.expected_purchases(data=data, future_t=float(t)))


def _bg_frame(inputs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": np.arange(len(inputs)),
            "frequency": inputs["frequency"].to_numpy("float64"),
            "recency": inputs["recency"].to_numpy("float64"),
            "T": inputs["T"].to_numpy("float64"),
        }
    )


def score(
    bg: Fit,
    gg: Fit,
    inputs: pd.DataFrame,
    unit_days: float,
    horizon_weeks: int = 52,
    annual_discount_rate: float = 0.10,
    step_weeks: int = 4,
    extra_days: tuple[int, ...] = (),
) -> pd.DataFrame:
    """Per customer: p_alive, expected_purchases_13w / _52w, expected_avg_order_value, clv (discounted value of
    the purchases expected within `horizon_weeks`, in steps of `step_weeks`, each step's purchases x expected
    order value discounted at `annual_discount_rate` from the step's end), clv_if_active (= clv / p_alive)
    and value_at_risk = (1 - p_alive) x clv_if_active: what is lost if the customer has in fact gone.
    `extra_days`: further horizons (in days) whose expected purchases are returned as expected_purchases_<d>d."""
    data = _bg_frame(inputs)
    gg_data = pd.DataFrame(
        {
            "customer_id": data["customer_id"],
            "frequency": data["frequency"],
            "monetary_value": np.where(data["frequency"] > 0, inputs["monetary_value"].to_numpy("float64"), 0.0),
        }
    )

    def weeks(w: float) -> float:
        return w * 7.0 / unit_days

    out = pd.DataFrame(index=inputs.index)
    with _quiet():
        p_alive = np.clip(_values(bg.library.expected_probability_alive(data=data)), 0.0, 1.0)
        spend = _values(gg.library.expected_customer_spend(data=gg_data))
        ep = {w: _values(bg.library.expected_purchases(data=data, future_t=weeks(w))) for w in (13, 52)}
        steps = sorted(set(range(step_weeks, horizon_weeks, step_weeks)) | {horizon_weeks})
        clv, prev = np.zeros(len(data)), np.zeros(len(data))
        for s in steps:
            cum = ep[s] if s in ep else _values(bg.library.expected_purchases(data=data, future_t=weeks(s)))
            clv += spend * np.maximum(cum - prev, 0.0) / (1.0 + annual_discount_rate) ** (s / 52.0)
            prev = cum
        extra = {d: _values(bg.library.expected_purchases(data=data, future_t=d / unit_days)) for d in extra_days}
    out["p_alive"] = p_alive
    out["expected_purchases_13w"] = np.maximum(ep[13], 0.0)
    out["expected_purchases_52w"] = np.maximum(ep[52], 0.0)
    out["expected_avg_order_value"] = spend
    out["clv"] = clv
    out["clv_if_active"] = np.where(p_alive > 1e-12, clv / np.maximum(p_alive, 1e-12), 0.0)
    out["value_at_risk"] = (1.0 - p_alive) * out["clv_if_active"]
    for d, v in extra.items():
        out[f"expected_purchases_{d}d"] = np.maximum(v, 0.0)
    return out


# ----------------------------------------------------------------------------------------- calibration

BUCKETS = [0, 1, 2, 3, 4, 5, 6, 7]  # the last bucket is "7+"


@dataclass
class Calibration:
    """Predicted against actual purchases in the period after the as-of date (the holdout)."""

    holdout_days: int
    customers: int
    predicted: float  # total expected purchases
    actual: int  # total purchase days observed
    correlation: float  # per customer, Pearson
    mae: float  # mean absolute error per customer
    by_frequency: pd.DataFrame  # bucket, customers, mean_predicted, mean_actual

    @property
    def relative_error(self) -> float:
        return (self.predicted - self.actual) / self.actual if self.actual else float("nan")


def calibration(frequency, predicted, actual, holdout_days: int) -> Calibration:
    """Compare each customer's expected purchases over the holdout with the purchase days observed in it,
    also per calibration-period frequency bucket (0, 1, ..., 6, 7+), as the field's tools plot it."""
    f = np.asarray(frequency, dtype="int64")
    pred, act = np.asarray(predicted, dtype="float64"), np.asarray(actual, dtype="float64")
    bucket = np.minimum(f, BUCKETS[-1])
    df = pd.DataFrame({"bucket": bucket, "predicted": pred, "actual": act})
    g = df.groupby("bucket")
    table = pd.DataFrame(
        {"customers": g.size(), "mean_predicted": g["predicted"].mean(), "mean_actual": g["actual"].mean()}
    ).reset_index()
    table["bucket"] = [f"{b}+" if b == BUCKETS[-1] else str(b) for b in table["bucket"]]
    corr = float(np.corrcoef(pred, act)[0, 1]) if len(pred) > 1 and act.std() > 0 and pred.std() > 0 else 0.0
    return Calibration(
        holdout_days=holdout_days,
        customers=len(pred),
        predicted=float(pred.sum()),
        actual=int(act.sum()),
        correlation=corr,
        mae=float(np.mean(np.abs(pred - act))) if len(pred) else 0.0,
        by_frequency=table,
    )


# ----------------------------------------------------------------------------------------- simulation


def simulate_bgnbd(
    n: int, r: float, alpha: float, a: float, b: float, T_min: float = 26, T_max: float = 104, seed: int = 0
) -> pd.DataFrame:
    """Purchase histories from the BG/NBD process: each customer buys at Poisson rate lambda ~ Gamma(r, alpha)
    and after each repeat purchase drops out with probability p ~ Beta(a, b); observed for T ~ U(T_min, T_max)
    time units after the first purchase. Returns frequency, recency, T (plus the true lam, p, alive)."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    T = rng.uniform(T_min, T_max, n)
    t, x, t_x = np.zeros(n), np.zeros(n, dtype="int64"), np.zeros(n)
    active = np.ones(n, dtype=bool)
    idx = np.arange(n)
    while len(idx):
        t[idx] += rng.exponential(1.0 / np.maximum(lam[idx], 1e-300))
        buys = t[idx] <= T[idx]
        idx = idx[buys]
        x[idx] += 1
        t_x[idx] = t[idx]
        drop = rng.random(len(idx)) < p[idx]
        active[idx[drop]] = False
        idx = idx[~drop]
    return pd.DataFrame({"frequency": x, "recency": t_x, "T": T, "lam": lam, "p": p, "alive": active})


def simulate_gamma_gamma(frequency, p: float, q: float, v: float, seed: int = 0) -> np.ndarray:
    """Mean order value of each customer's `frequency` repeat purchases: nu ~ Gamma(q, rate v), each order's
    value ~ Gamma(p, rate nu) (so the mean of x orders ~ Gamma(p x, rate nu x)); 0 where frequency is 0."""
    rng = np.random.default_rng(seed)
    x = np.asarray(frequency, dtype="float64")
    nu = rng.gamma(q, 1.0 / v, len(x))
    m = rng.gamma(np.maximum(p * x, 1e-12), 1.0 / (nu * np.maximum(x, 1)))
    return np.where(x > 0, m, 0.0)
