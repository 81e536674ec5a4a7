"""customer_value: what each customer will be worth and whether they are still a customer, per quarter.

BG/NBD (P(alive), expected purchases) and Gamma-Gamma (expected order value) from pymc-marketing's clv module,
fitted by MAP with flat priors (= maximum likelihood) on every customer's full purchase history up to the
quarter's as-of date (sql/customer_value_inputs.sql). The pure code is seg_pipeline/ml/customer_value.py;
pymc-marketing is imported only when the asset runs.

Tables: customer_value (one row per customer who bought by the as-of date) and customer_value_parameters
(one row per model parameter per quarter, with log-likelihood and convergence). A JSON model artifact in
models/<quarter>/ records the estimates and the library versions. When a later quarter of data exists, the
metadata also shows the calibration: predicted against actual purchases in the following quarter.
"""

import json
from datetime import datetime, time

import dagster as dg
import numpy as np
import pandas as pd

from ..ml import customer_value as cv
from ..partitions import parse_quarter, quarter_of, quarterly_partitions, sales_quarter_plan
from ..resources import PipelineHome, Warehouse
from ..sql import load_sql
from ..storage import atomic_write_text, create_stage_from_df, publish_partition, table_exists
from .common import (
    ANALYTICS_OWNERS,
    GROUP,
    contract_spec,
    gate,
    md_table,
    sql_references,
    step_clock,
    table_metadata,
    table_spec,
)

TABLE = "customer_value"
PARAMS = "customer_value_parameters"
ARTIFACT = "customer_value.json"
PREDICTIONS = [
    "p_alive",
    "expected_purchases_13w",
    "expected_purchases_52w",
    "expected_avg_order_value",
    "clv",
    "value_at_risk",
]
DOWNSTREAM_WITHOUT_FIT = (
    "Downstream, segment_insights runs as before: P(alive) and CLV are left empty in the segment profiles and "
    "the CSV files, and the win-back list is ranked by past revenue (revenue at risk), as it says."
)


class CustomerValueConfig(dg.Config):
    time_unit: str = "weeks"
    """Time unit of frequency/recency/T and of the parameters: days, weeks (default) or months; always measured
    at day resolution (weeks = days / 7)."""
    clv_horizon_weeks: int = 52
    """CLV horizon, in weeks."""
    annual_discount_rate: float = 0.10
    """Discount rate per year applied to the expected purchases of the CLV horizon (0: no discounting)."""
    fit_sample_size: int = 250_000
    """Fit on a random sample of this many customers when the quarter has more (everyone is scored); 0: all."""
    min_customers: int = 30
    """Fewer customers than this: no fit (the quarter is reported as insufficient_data)."""
    min_repeat_buyers: int = 20
    """Fewer customers with a repeat purchase day than this: no fit."""
    seed: int = 0
    """Seed of the fit sample."""


def value_params(quarter_key: str, unit_days: float) -> dict:
    q = parse_quarter(quarter_key)
    return {
        "quarter": q.key,
        "as_of_date": q.as_of_date,
        "as_of_end": datetime.combine(q.end, time()),
        "unit_days": unit_days,
    }


def _parameter_rows(
    q: str, unit: str, state: str, note: str, fits: list[cv.Fit | None], versions: dict, horizon_weeks: int
):
    rows = []
    for model, names, fit in ((cv.BGNBD, cv.BGNBD_PARAMS, fits[0]), (cv.GAMMA_GAMMA, cv.GG_PARAMS, fits[1])):
        for name in names:
            ok = fit is not None and state == cv.FITTED
            rows.append(
                {
                    "quarter": q,
                    "model": model,
                    "parameter": name,
                    "value": fit.params[name] if ok else None,
                    "std_error": fit.std_errors[name] if ok else None,
                    "time_unit": unit,
                    "log_likelihood": fit.log_likelihood if ok else None,
                    "converged": bool(fit.converged) if fit is not None else False,
                    "customers_fitted": fit.customers if fit is not None else 0,
                    "state": state,
                    "note": fit.message if ok else note,  # without a fit: the quarter's reason on every row
                    "library_version": versions.get("pymc_marketing", ""),
                    "clv_horizon_weeks": horizon_weeks,
                }
            )
    df = pd.DataFrame(rows)
    return df.astype({"value": "Float64", "std_error": "Float64", "log_likelihood": "Float64"}).astype(
        {c: "string" for c in ("quarter", "model", "parameter", "time_unit", "state", "note", "library_version")}
    )


def _calibration_window(con, q) -> tuple[datetime, datetime, int] | None:
    """The following quarter as a holdout period, when it is a quarter the data covers (partitions.quarter_plan:
    a stray row dated after the data does not make one)."""
    nxt = quarter_of(q.end)
    if nxt.key not in {o.key for o in sales_quarter_plan(con).offered}:
        return None
    start, end = datetime.combine(q.end, time()), datetime.combine(nxt.end, time())
    return start, end, (nxt.end - q.end).days


@dg.multi_asset(
    name=TABLE,
    partitions_def=quarterly_partitions,
    specs=[
        dg.AssetSpec(
            TABLE,
            group_name=GROUP,
            owners=ANALYTICS_OWNERS,
            kinds={"duckdb", "sql", "pymc"},
            deps=["cleaned_sales"],
            partitions_def=quarterly_partitions,
            metadata={
                "dagster/table_name": f"warehouse.main.{TABLE}",
                **sql_references("customer_value_inputs", "customer_value_holdout"),
            },
            description=(
                "Per customer who bought by the quarter's as-of date, from the full purchase history "
                "(sql/customer_value_inputs.sql): frequency (repeat purchase days), recency, T and the mean repeat "
                "value, in weeks at day resolution; P(alive), expected purchases in the next 13 and 52 weeks "
                "(BG/NBD), expected order value (Gamma-Gamma), CLV over a configurable horizon (default 52 weeks, "
                "discounted) and value at risk = (1 - P(alive)) x the CLV if still active. Models: pymc-marketing's "
                "clv module, MAP with flat priors (= maximum likelihood). A quarter the data cannot support is "
                "published with model_state insufficient_data, one whose fit does not converge (the optimiser "
                "fails, absurd estimates, predictions not finite) with not_converged; either way with no "
                "predictions, the metadata saying why, and everything downstream running (the win-back list "
                "ranked by past revenue)."
            ),
        ),
        table_spec(
            PARAMS,
            "The quarter's fitted parameters: one row per model (bgnbd, gamma_gamma) and parameter (r, alpha, a, "
            "b; p, q, v) with its value, asymptotic standard error, time unit, the fit's log-likelihood, "
            "convergence, state and the pymc-marketing version.",
            deps=["cleaned_sales"],
            partitions_def=quarterly_partitions,
            owners=ANALYTICS_OWNERS,
            sql=("customer_value_inputs",),
        ),
    ],
    check_specs=[contract_spec(TABLE, quarterly_partitions)],
)
def customer_value(
    context: dg.AssetExecutionContext, config: CustomerValueConfig, pipeline: PipelineHome, warehouse: Warehouse
):
    if config.time_unit not in cv.TIME_UNITS:
        raise dg.Failure(description=f"time_unit must be one of {sorted(cv.TIME_UNITS)}, not {config.time_unit!r}")
    if config.clv_horizon_weeks < 1 or config.annual_discount_rate < 0:
        raise dg.Failure(description="clv_horizon_weeks must be at least 1 and annual_discount_rate at least 0")
    q = parse_quarter(context.partition_key)
    unit, unit_days = config.time_unit, cv.TIME_UNITS[config.time_unit]
    params = value_params(q.key, unit_days)
    seconds, lap = step_clock()

    with warehouse.get_connection() as con:
        if not table_exists(con, "cleaned_sales"):
            raise dg.Failure(description=f"{TABLE} {q.key}: table cleaned_sales does not exist: materialise it first")
        inputs = con.execute(load_sql("customer_value_inputs"), params).df()
        window = _calibration_window(con, q)
        holdout = (
            con.execute(load_sql("customer_value_holdout"), {"as_of_end": window[0], "holdout_end": window[1]}).df()
            if window
            else None
        )
        lap("read")
        if inputs.empty:
            raise dg.Failure(
                description=f"{TABLE} {q.key}: no customer bought on or before {q.as_of_date}: the quarter is "
                "outside the data. Materialise only quarters the data covers (seg-pipeline run does)."
            )

        # ---- fit and score (or say plainly why not)
        reason = cv.assess_data(inputs, config.min_customers, config.min_repeat_buyers)
        bg = gg = scores = None
        versions: dict = {}
        state, note = cv.INSUFFICIENT, reason or ""
        sample = None
        if reason is None:
            versions = cv.library_versions()
            sample = cv.sample_rows(len(inputs), config.fit_sample_size, config.seed)
            fit_data = inputs if sample is None else inputs.iloc[sample]
            outcome = cv.fit_and_score(
                inputs,
                fit_data,
                unit_days,
                clock=lap,
                horizon_weeks=config.clv_horizon_weeks,
                annual_discount_rate=config.annual_discount_rate,
                extra_days=(window[2],) if window else (),
            )
            state, note, bg, gg, scores = outcome.state, outcome.note, outcome.bg, outcome.gg, outcome.scores
        else:
            lap("fit")

        # ---- every customer: the predictions when fitted, NULL (never NaN) with the state otherwise
        out = inputs.copy()
        out.insert(3, "time_unit", unit)
        out["model_state"] = state
        calib = None
        if state == cv.FITTED:
            for c in PREDICTIONS:
                out[c] = scores[c].to_numpy()
            if window:
                actual = inputs[["customer_id"]].merge(holdout, on="customer_id", how="left")["holdout_purchases"]
                calib = cv.calibration(
                    inputs["frequency"],
                    scores[f"expected_purchases_{window[2]}d"],
                    actual.fillna(0).to_numpy("int64"),
                    window[2],
                )
        else:
            for c in PREDICTIONS:
                out[c] = pd.Series([None] * len(out), dtype="Float64")  # NULL in DuckDB, never NaN
        lap("score")

        param_rows = _parameter_rows(q.key, unit, state, note, [bg, gg], versions, config.clv_horizon_weeks)
        create_stage_from_df(con, TABLE, out.astype({"quarter": "string", "customer_id": "string"}))
        create_stage_from_df(con, PARAMS, param_rows)
        yield from gate(
            context,
            con,
            TABLE,
            f"__stage_{TABLE}",
            {"as_of_end": params["as_of_end"].isoformat(sep=" "), "parameters_table": f"__stage_{PARAMS}"},
            note=f"Fit state: {state} ({note}).",
        )
        lap("contract")

        artifact = {
            "quarter": q.key,
            "as_of_date": q.as_of_date.isoformat(),
            "state": state,
            "note": note,
            "time_unit": unit,
            "config": config.model_dump(),
            "libraries": versions,
            "customers": len(inputs),
            "models": {
                f.model: {
                    "parameters": f.params,
                    "std_errors": f.std_errors,
                    "log_likelihood": f.log_likelihood,
                    "customers_fitted": f.customers,
                    "converged": f.converged,
                    "identified": f.identified,
                    "message": f.message,
                }
                for f in (bg, gg)
                if f is not None
            },
            "calibration": None if calib is None else _calibration_dict(calib),
        }
        artifact_path = atomic_write_text(pipeline.models_dir(q.key) / ARTIFACT, json.dumps(artifact, indent=2))
        publish_partition(con, [TABLE, PARAMS], "quarter", q.key)
        meta_main = table_metadata(con, TABLE, "WHERE quarter = ?", [q.key])
        meta_params = table_metadata(con, PARAMS, "WHERE quarter = ?", [q.key])
        lap("publish")

    metadata = {
        **meta_main,
        "model_state": state,
        "as_of_date": q.as_of_date.isoformat(),
        "customers": len(inputs),
        "repeat_buyers": int((inputs["frequency"] > 0).sum()),
        "time_unit": unit,
        "artifact": dg.MetadataValue.path(str(artifact_path)),
        "seconds": dg.MetadataValue.json(seconds),
    }
    if state != cv.FITTED:
        what = (
            "The data cannot support a customer-value fit"
            if state == cv.INSUFFICIENT
            else "The customer-value fit did not converge"
        )
        metadata["fit_outcome"] = dg.MetadataValue.md(
            f"**{what} for {q.label}: {note}.** No P(alive), expected purchases or CLV are published for this "
            f"quarter (NULL, model_state = {state}). " + DOWNSTREAM_WITHOUT_FIT
        )
    else:
        metadata.update(_fit_metadata(bg, gg, out, param_rows, versions, sample, config, calib))
    yield dg.MaterializeResult(asset_key=TABLE, metadata=metadata)
    yield dg.MaterializeResult(
        asset_key=PARAMS,
        metadata={
            **meta_params,
            "model_state": state,
            "parameters": dg.MetadataValue.md(md_table(param_rows.drop(columns=["quarter"]), floatfmt=",.4f")),
        },
    )


def _calibration_dict(c: cv.Calibration) -> dict:
    return {
        "holdout_days": c.holdout_days,
        "customers": c.customers,
        "predicted_purchases": round(c.predicted, 2),
        "actual_purchases": c.actual,
        "relative_error": None if np.isnan(c.relative_error) else round(c.relative_error, 4),
        "correlation": round(c.correlation, 4),
        "mae": round(c.mae, 4),
        "by_frequency": c.by_frequency.round(4).to_dict("records"),
    }


def _fit_metadata(bg, gg, out, param_rows, versions, sample, config, calib) -> dict:
    meta = {
        "parameters": dg.MetadataValue.md(
            md_table(
                param_rows[["model", "parameter", "value", "std_error", "time_unit", "log_likelihood"]],
                floatfmt=",.4f",
            )
        ),
        **{f"bgnbd_{k}": round(v, 6) for k, v in bg.params.items()},
        **{f"gamma_gamma_{k}": round(v, 6) for k, v in gg.params.items()},
        "bgnbd_log_likelihood": round(bg.log_likelihood, 3),
        "gamma_gamma_log_likelihood": round(gg.log_likelihood, 3),
        "converged": bool(bg.converged and gg.converged),
        "fit_customers": bg.customers,
        "fit_on_sample": sample is not None,
        "gamma_gamma_customers": gg.customers,
        "fit_seconds": round(bg.seconds + gg.seconds, 3),
        "pymc_marketing_version": versions.get("pymc_marketing", ""),
        "mean_p_alive": round(float(out["p_alive"].mean()), 4),
        "share_p_alive_below_0_5": round(float((out["p_alive"] < 0.5).mean()), 4),
        "expected_purchases_13w": round(float(out["expected_purchases_13w"].sum()), 2),
        f"total_clv_{config.clv_horizon_weeks}w": round(float(out["clv"].sum()), 2),
        "total_value_at_risk": round(float(out["value_at_risk"].sum()), 2),
        "top_customers_by_clv": dg.MetadataValue.md(
            md_table(
                out.sort_values(["clv", "customer_id"], ascending=[False, True])[
                    ["customer_id", "frequency", "recency", "T", "p_alive", "expected_purchases_52w", "clv"]
                ],
                floatfmt=",.3f",
            )
        ),
    }
    if calib is None:
        meta["calibration"] = "not available: no later quarter of data to compare the predictions with"
    else:
        meta.update(
            {
                "calibration_holdout_days": calib.holdout_days,
                "calibration_predicted_purchases": round(calib.predicted, 2),
                "calibration_actual_purchases": calib.actual,
                "calibration_relative_error": None
                if np.isnan(calib.relative_error)
                else round(calib.relative_error, 4),
                "calibration_correlation": round(calib.correlation, 4),
                "calibration_mae": round(calib.mae, 4),
                "calibration": dg.MetadataValue.md(
                    "Predicted against actual purchase days in the next quarter, by repeat purchases up to the "
                    "as-of date:\n\n" + md_table(calib.by_frequency, max_rows=20, floatfmt=",.3f")
                ),
            }
        )
    return meta
