"""scaled_matrix and clustering_model: the model input and the fitted k-means, per quarter."""

import io

import dagster as dg
import joblib
import numpy as np
import pandas as pd
import scipy
import sklearn

from ..ml import segment_model as sm
from ..ml.scaling import build_matrix
from ..partitions import add_months, parse_quarter, quarterly_partitions
from ..resources import PipelineHome, Warehouse
from ..storage import atomic_write_bytes, create_stage_from_df, publish_partition, table_exists
from ..tables import (
    MODEL_FILE,
    SCALER_FILE,
    ModelFileError,
    chosen_model_row,
    file_sha256,
    has_sales_before,
    load_model,
    read_features,
    read_matrix,
    recorded_sha256,
)
from .common import GROUP, OWNERS, contract_spec, gate, md_table, table_metadata, table_spec

MATRIX = "scaled_matrix"
MATRIX_COLUMNS = "scaled_matrix_columns"
MODEL = "clustering_model"


class MatrixConfig(dg.Config):
    scaler: str = "standard"
    """'standard' (StandardScaler) or 'robust' (RobustScaler)."""
    corr_threshold: float = 0.9
    """Drop the later feature of any pair whose log values correlate above this (absolute Pearson r)."""
    min_log_std: float = 0.15
    """Leave out of the model a feature whose log values vary less than this (standard deviation): it cannot
    tell customers apart (e.g. tenure when every customer started in the same month)."""


class ModelConfig(dg.Config):
    k_min: int = 3
    k_max: int = 8
    business_k_min: int = 4
    business_k_max: int = 6
    seed: int = 42
    n_init: int = 10
    silhouette_sample: int = 4_000
    """Silhouette is O(n^2): it is computed on at most this many customers."""
    selection_sample: int = 50_000
    """k is chosen on at most this many customers; the final model is fitted on all of them."""
    silhouette_floor: float = 0.2
    """Below this silhouette the contract warns (does not block): clusters overlap heavily."""
    min_cluster_share: float = 0.01
    """A cluster with fewer than this share of customers makes the contract warn."""
    # ---- the kept model's life cycle (see README, "Segments that stay put")
    refit: bool = False
    """Force a refit of the segment model in this run (it starts from the kept clusters and keeps their names)."""
    refit_every_quarters: int = 4
    """Cadence: refit when the kept model was fitted this many quarters ago or more (4 = yearly; 0 = never)."""
    max_silhouette_drop: float = 0.15
    """Drift: refit when the kept model's silhouette on the quarter is more than this below its fit silhouette
    (or below silhouette_floor)."""
    max_far_share: float = 0.10
    """Drift: refit when more than this share of customers lie farther from every centroid than 99% of the
    fit's customers did (1% is expected when nothing changed)."""
    refit_when_names_fail: bool = True
    """Drift: refit when a cluster's name no longer holds (within keep_tolerance) for 37.5% of its customers."""
    match_max_distance: float = 1.0
    """A refit's cluster carries a kept cluster's name when their centroids are at most this far apart (root
    mean square, in standard deviations of the kept model's log features) and the name still holds (within
    keep_tolerance) for 37.5% of the new cluster's customers."""
    refit_k_margin: float = 0.02
    """A refit keeps the kept model's k while its silhouette is within this of the best k's."""
    min_history_quarters: int = 1
    """No model from a sliver of history: the first fit waits until the data covers this many whole quarters
    up to the quarter's end (its first sale on or before the first day of the quarter min_history_quarters - 1
    before). Until then the decision is waiting_for_history: no model file, and segment_assignments labels
    every customer by the catalogue's rules alone (cluster NULL). 0: fit on the first quarter, whatever it
    covers."""
    refit_if_model_unreadable: bool = False
    """When the previous quarter's model file is missing or corrupt: refit from scratch (true) or stop (false)."""


@dg.multi_asset(
    name=MATRIX,  # the step is named after its main table
    partitions_def=quarterly_partitions,
    specs=[
        table_spec(
            MATRIX,
            "The clustering input, keyed by customer: log1p of the skewed features, then StandardScaler "
            "(RobustScaler selectable). A feature whose log values hardly vary (sd < 0.15) and the later of any "
            "pair whose log values correlate above the threshold (default 0.9) are left out of the model. The "
            "fitted scaler is saved under models/<quarter>/scaler.joblib, its SHA-256 in scaled_matrix_columns.",
            deps=["customer_features"],
            partitions_def=quarterly_partitions,
            kinds=("duckdb", "scikitlearn"),
        ),
        table_spec(
            MATRIX_COLUMNS,
            "Per quarter and feature of scaled_matrix: whether it is log-transformed and kept by the model, why "
            "it was left out, and the fitted scaler's center and scale.",
            deps=["customer_features"],
            partitions_def=quarterly_partitions,
            kinds=("duckdb", "scikitlearn"),
        ),
    ],
    check_specs=[contract_spec(MATRIX, quarterly_partitions)],
)
def scaled_matrix(
    context: dg.AssetExecutionContext, config: MatrixConfig, pipeline: PipelineHome, warehouse: Warehouse
):
    q = context.partition_key
    with warehouse.get_connection() as con:
        features = read_features(con, q)
        if features.empty:
            raise dg.Failure(description=f"customer_features has no rows for {q}: materialise it first")
        try:
            m = build_matrix(
                features, scaler=config.scaler, corr_threshold=config.corr_threshold, min_log_std=config.min_log_std
            )
        except ValueError as exc:
            raise dg.Failure(description=f"scaled_matrix {q}: {exc}") from None
        df = m.frame()
        df.insert(0, "quarter", q)
        center = getattr(m.scaler, "mean_", getattr(m.scaler, "center_", None))
        cols = pd.DataFrame(
            {
                "quarter": q,
                "feature": m.features,
                "position": range(len(m.features)),
                "log_transformed": [f in m.log_features for f in m.features],
                "kept": [f in m.kept for f in m.features],
                "dropped_reason": pd.array([m.dropped.get(f) for f in m.features], dtype="string"),
                "center": center,
                "scale": m.scaler.scale_,
            }
        )
        buf = io.BytesIO()
        joblib.dump({"scaler": m.scaler, "features": m.features, "log_features": m.log_features}, buf)
        cols["scaler_sha256"] = file_sha256(buf.getvalue())  # what clustering_model verifies before loading it
        stage = create_stage_from_df(con, MATRIX, df)
        create_stage_from_df(con, MATRIX_COLUMNS, cols)
        yield from gate(
            context,
            con,
            MATRIX,
            stage,
            {
                "customer_features_rows": len(features),
                # StandardScaler centres every column; RobustScaler centres medians, so means may be anywhere
                "mean_tolerance": 1e-6 if config.scaler == "standard" else 1e12,
            },
        )
        scaler_path = atomic_write_bytes(pipeline.models_dir(q) / SCALER_FILE, buf.getvalue())
        _add_scaler_sha256_column(con)
        publish_partition(con, [MATRIX, MATRIX_COLUMNS], "quarter", q)
        matrix_meta = table_metadata(con, MATRIX, "WHERE quarter = ?", [q])
        columns_meta = table_metadata(con, MATRIX_COLUMNS, "WHERE quarter = ?", [q])

    corr = m.correlation.round(3).reset_index(names="feature")
    skipped = {f: why for f, why in m.dropped.items() if f not in m.features}
    yield dg.MaterializeResult(
        asset_key=MATRIX, metadata={**matrix_meta, "features_kept": ", ".join(m.kept), "scaler": config.scaler}
    )
    yield dg.MaterializeResult(
        asset_key=MATRIX_COLUMNS,
        metadata={
            **columns_meta,
            "features_kept": ", ".join(m.kept),
            "features_dropped": dg.MetadataValue.json({f: why for f, why in m.dropped.items() if f in m.features}),
            "features_not_computable": dg.MetadataValue.json(skipped) if skipped else "none",
            "scaler": config.scaler,
            "scaler_file": dg.MetadataValue.path(str(scaler_path)),
            "columns": dg.MetadataValue.md(md_table(cols.drop(columns="quarter"), floatfmt=".3f")),
            "log_feature_correlation": dg.MetadataValue.md(md_table(corr, floatfmt=".3f")),
        },
    )


def _add_scaler_sha256_column(con) -> None:
    """A warehouse written before scaled_matrix_columns recorded the scaler's SHA-256 gets the column (its
    older quarters have none recorded: their scaler is refused until scaled_matrix runs for them again)."""
    if (
        table_exists(con, MATRIX_COLUMNS)
        and not con.execute(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = ? AND column_name = 'scaler_sha256'",
            [MATRIX_COLUMNS],
        ).fetchall()[0][0]
    ):
        con.execute(f"ALTER TABLE {MATRIX_COLUMNS} ADD COLUMN scaler_sha256 VARCHAR")


def _fit_kwargs(config: "ModelConfig") -> dict:
    return dict(
        k_range=(config.k_min, config.k_max),
        business_range=(config.business_k_min, config.business_k_max),
        seed=config.seed,
        n_init=config.n_init,
        silhouette_sample=config.silhouette_sample,
        selection_sample=config.selection_sample,
    )


def _model_bytes(model: sm.SegmentModel, path, recorded: dict | None) -> tuple[bytes, str]:
    """The model file's bytes, and a notice when a file already there was refused ('' otherwise).

    A pickle's bytes depend on object identity as well as content (a string shared by two fields is written
    once), so the same model can pickle differently in two processes: when the quarter's clustering_model row
    (`recorded`) is this model (same version and fitted quarter) and the file still has the SHA-256 recorded
    there, the file's bytes are kept, and a rerun leaves the file and its SHA-256 exactly as they were. The
    file is never unpickled here: one the row does not vouch for (no SHA-256 recorded, or another one) is not
    loaded and is replaced by this model, and the notice names it."""
    fresh = io.BytesIO()
    joblib.dump(model, fresh)
    if not path.is_file():
        return fresh.getvalue(), ""
    data = path.read_bytes()
    actual = file_sha256(data)
    expected = recorded_sha256(recorded.get("artifact_sha256")) if recorded else ""
    if actual == expected:
        if recorded["model_version"] == model.version and recorded["fitted_quarter"] == model.fitted_quarter:
            return data, ""
        return fresh.getvalue(), ""  # the quarter's earlier model, as recorded: replaced by this one
    why = (
        f"does not match the SHA-256 recorded in clustering_model (recorded {expected[:12]}..., file {actual[:12]}...)"
        if expected
        else f"has no SHA-256 recorded in clustering_model (file {actual[:12]}...)"
    )
    return fresh.getvalue(), (
        f"the model file {path} already there {why}: the warehouse does not vouch for it (an interrupted run, or "
        "a file put there by hand), so it was not loaded; it is replaced by the model in force for the quarter"
    )


LIBRARIES = {"scikit-learn": sklearn.__version__, "numpy": np.__version__, "scipy": scipy.__version__}
INITIAL, REUSED, REFIT, WAITING = "initial_fit", "reused", "refit", sm.WAITING


def _history_wait(con, q, config: "ModelConfig") -> str:
    """Why the first fit must wait for more history ('' = it need not)."""
    if config.min_history_quarters <= 0:
        return ""
    first = con.execute("SELECT min(invoice_date) FROM cleaned_sales").fetchall()[0][0]
    need = add_months(q.start, -3 * (config.min_history_quarters - 1))
    if first is None or first.date() <= need:
        return ""
    return (
        f"waiting for history: the data starts on {first:%Y-%m-%d}, so it covers less than "
        f"{config.min_history_quarters} whole quarter(s) up to the end of {q.label} (min_history_quarters = "
        f"{config.min_history_quarters}); no model is fitted on a sliver of history. Customers are labelled by "
        "the catalogue's rules alone (cluster NULL); the first quarter with enough history fits the model."
    )


def _waiting_table(q, n_customers: int, why: str, config: "ModelConfig") -> pd.DataFrame:
    """The clustering_model row of a quarter that waits for history: chosen, no k, no model file."""
    return pd.DataFrame(
        {
            "k": pd.array([None], dtype="Int64"),
            "inertia": pd.array([None], dtype="Float64"),
            "silhouette": pd.array([None], dtype="Float64"),
            "in_business_range": pd.array([None], dtype="boolean"),
            "quarter": q.key,
            "chosen": True,
            "min_cluster_share": pd.array([None], dtype="Float64"),
            "n_customers": n_customers,
            "artifact_path": pd.array([None], dtype="string"),
            "artifact_sha256": pd.array([None], dtype="string"),
            "reason": "no model yet",
            "model_version": pd.array([None], dtype="string"),
            "fitted_quarter": pd.array([None], dtype="string"),
            "parent_version": pd.array([None], dtype="string"),
            "decision": WAITING,
            "decision_reason": why,
            "current_silhouette": pd.array([None], dtype="Float64"),
            "far_share": pd.array([None], dtype="Float64"),
            "silhouette_drop": pd.array([None], dtype="Float64"),
            "max_silhouette_drop": config.max_silhouette_drop,
            "max_far_share": config.max_far_share,
            "refit_every_quarters": config.refit_every_quarters,
            "refit_ari": pd.array([None], dtype="Float64"),
            "refit_name_change_share": pd.array([None], dtype="Float64"),
        }
    )


def _kept_model(con, pipeline: PipelineHome, q, config: "ModelConfig"):
    """(kept model or None, why not). The kept model is the one in force for the previous quarter."""
    prev = q.previous()
    row = chosen_model_row(con, prev.key)
    if row is None:
        if has_sales_before(con, prev.end):
            raise dg.Failure(
                description=(
                    f"clustering_model {q.key}: the previous quarter {prev.key} has sales but no segment model. "
                    f"Materialise {prev.key} first (a run over every quarter does this in order): each quarter "
                    "keeps the previous quarter's model."
                )
            )
        return None, f"no earlier quarter: the data starts in {q.label}"
    if row["decision"] == WAITING:
        return None, f"the first quarter with enough history (min_history_quarters = {config.min_history_quarters})"
    try:
        model, _ = load_model(pipeline.path, row)
    except ModelFileError as exc:
        if not config.refit_if_model_unreadable:
            raise dg.Failure(
                description=(
                    f"clustering_model {q.key}: {exc}. Restore the file, or set refit_if_model_unreadable: true in "
                    "the clustering_model run config to fit a new model (its names are then given afresh)."
                )
            ) from None
        return None, f"{exc}; refitted from scratch (refit_if_model_unreadable)"
    return model, ""


def _wait_for_history(context, con, q, features, why: str, config: "ModelConfig"):
    """Publish the waiting row of a quarter without enough history for a first fit."""
    stage = create_stage_from_df(con, MODEL, _waiting_table(q, len(features), why, config))
    yield from gate(
        context,
        con,
        MODEL,
        stage,
        {
            "business_k_min": config.business_k_min,
            "business_k_max": config.business_k_max,
            "silhouette_floor": config.silhouette_floor,
            "min_cluster_share": config.min_cluster_share,
        },
    )
    publish_partition(con, MODEL, "quarter", q.key, stage)
    yield dg.MaterializeResult(
        metadata={
            **table_metadata(con, MODEL, "WHERE quarter = ?", [q.key]),
            "decision": WAITING,
            "decision_reason": why,
            "model_version": "none",
        }
    )


@dg.asset(
    name=MODEL,
    group_name=GROUP,
    owners=OWNERS,
    kinds={"scikitlearn", "duckdb"},
    deps=[
        "scaled_matrix",
        "customer_features",
    ],
    partitions_def=quarterly_partitions,
    check_specs=[contract_spec(MODEL, quarterly_partitions)],
    metadata={"dagster/table_name": f"warehouse.main.{MODEL}"},
    description=(
        "The segment model in force for the quarter: log transform + scaler + k-means + segment names, kept "
        "from quarter to quarter. The first quarter with a whole quarter of history fits it (earlier quarters: one "
        "row, decision waiting_for_history, no model; k by silhouette within the business range 4..6, the "
        "inertia elbow recorded); later quarters reuse the previous quarter's model, so a customer changes "
        "segment only when their own features move. It is refitted only when forced (run config refit), when "
        "the cadence comes due (default yearly) or when it drifts (its silhouette falls, many customers lie far "
        "from every centroid, or a cluster no longer meets its name's conditions); a refit starts from the kept "
        "clusters and carries their names over. Saved as models/<quarter>/segment_model.joblib (loadable with "
        "joblib; .predict(one quarter's customer_features) gives the labels), its SHA-256 in artifact_sha256: a "
        "model or scaler file is loaded only when its bytes match the SHA-256 recorded when it was written. The "
        "table has one row per k tried at "
        "the fit, the decision and the drift figures on the chosen row. Reads the previous quarter's model "
        "(its own previous partition: not drawn as an edge, Dagster cannot map a dynamic partition to the one "
        "before it) and refuses to run before that quarter is segmented."
    ),
)
def clustering_model(
    context: dg.AssetExecutionContext, config: ModelConfig, pipeline: PipelineHome, warehouse: Warehouse
):
    q = parse_quarter(context.partition_key)
    with warehouse.get_connection() as con:
        features = read_features(con, q.key)
        m = read_matrix(con, q.key, pipeline.models_dir(q.key) / SCALER_FILE)
        if list(m.customer_ids) != list(features["customer_id"]):
            raise dg.Failure(
                description=f"clustering_model {q.key}: scaled_matrix and customer_features hold "
                "different customers: materialise scaled_matrix again"
            )
        kept, why_none = _kept_model(con, pipeline, q, config)
        wait = _history_wait(con, q, config) if kept is None else ""
        if wait:
            yield from _wait_for_history(context, con, q, features, wait, config)
            return
        kwargs = _fit_kwargs(config)
        drift, old_labels, score_error, refit_result = None, None, "", None
        if kept is not None:
            try:
                Xk = kept.transform(features)
                old_labels = kept.kmeans.predict(Xk)
            except sm.ModelInputError as exc:
                score_error = str(exc)
            else:
                drift = sm.measure_drift(
                    kept,
                    features,
                    Xk,
                    old_labels,
                    max_silhouette_drop=config.max_silhouette_drop,
                    max_far_share=config.max_far_share,
                    check_names=config.refit_when_names_fail,
                    silhouette_sample=config.silhouette_sample,
                    seed=config.seed,
                    min_silhouette=config.silhouette_floor,
                )
        age = sm.quarters_between(kept.fitted_quarter, q.key) if kept is not None else 0
        if kept is None:
            decision, why = INITIAL, why_none
        elif config.refit:
            decision, why = REFIT, "forced in the run config (refit: true)"
        elif score_error:
            decision, why = REFIT, f"the kept model cannot score this quarter: {score_error}"
        elif config.refit_every_quarters and age >= config.refit_every_quarters:
            decision, why = (
                REFIT,
                (
                    f"cadence: the kept model was fitted on {parse_quarter(kept.fitted_quarter).label}, "
                    f"{age} quarters ago (refit_every_quarters = {config.refit_every_quarters})"
                ),
            )
        elif drift.breaches:
            decision, why = REFIT, "drift: " + "; ".join(drift.breaches)
        else:
            decision, why = (
                REUSED,
                (
                    f"the kept model (fitted on {parse_quarter(kept.fitted_quarter).label}) still fits: "
                    "no drift rule breached"
                ),
            )
        try:
            if decision == INITIAL:
                model = sm.fit_new(features, m, q.key, config=config.model_dump(), libraries=LIBRARIES, **kwargs)
            elif decision == REFIT:
                refit_result = sm.refit(
                    kept,
                    features,
                    m,
                    q.key,
                    match_max_distance=config.match_max_distance,
                    config=config.model_dump(),
                    libraries=LIBRARIES,
                    old_labels=old_labels,
                    k_margin=config.refit_k_margin,
                    **kwargs,
                )
                model = refit_result.model
            else:
                model = kept
        except ValueError as exc:
            raise dg.Failure(description=f"clustering_model {q.key}: {exc}") from exc
        labels = model.predict_cluster(features)
        sizes = np.bincount(labels, minlength=model.k)
        X = model.transform(features)
        current_sil = sm.sampled_silhouette(X, labels, config.silhouette_sample, config.seed)
        path = pipeline.models_dir(q.key) / MODEL_FILE
        data, refused = _model_bytes(model, path, chosen_model_row(con, q.key))
        if refused:
            context.log.warning(f"clustering_model {q.key}: {refused}")
        trials = pd.DataFrame(model.trials)
        chosen = trials["k"] == model.k
        table = trials.assign(
            quarter=q.key,
            chosen=chosen,
            min_cluster_share=[float(sizes.min() / sizes.sum()) if c else None for c in chosen],
            n_customers=len(features),
            artifact_path=str(path.relative_to(pipeline.path)),  # relative: the home can move
            artifact_sha256=file_sha256(data),
            reason=model.reason,
            model_version=model.version,
            fitted_quarter=model.fitted_quarter,
            parent_version=model.parent_version,
            decision=decision,
            decision_reason=why,
            current_silhouette=[current_sil if c else None for c in chosen],
            far_share=[drift.far_share if (c and drift) else None for c in chosen],
            silhouette_drop=[drift.silhouette_drop if (c and drift) else None for c in chosen],
            max_silhouette_drop=config.max_silhouette_drop,
            max_far_share=config.max_far_share,
            refit_every_quarters=config.refit_every_quarters,
            refit_ari=[refit_result.ari if (c and refit_result) else None for c in chosen],
            refit_name_change_share=[
                refit_result.name_change_share if (c and refit_result and refit_result.ari is not None) else None
                for c in chosen
            ],
        )
        table = table.astype(
            {
                "parent_version": "string",
                "current_silhouette": "Float64",
                "far_share": "Float64",
                "silhouette_drop": "Float64",
                "refit_ari": "Float64",
                "refit_name_change_share": "Float64",
                "min_cluster_share": "Float64",
            }
        )
        stage = create_stage_from_df(con, MODEL, table)
        fit_cfg = model.config or config.model_dump()
        yield from gate(
            context,
            con,
            MODEL,
            stage,
            {
                # the k range the model was fitted under (a kept model keeps its k when the config changes)
                "business_k_min": fit_cfg.get("business_k_min", config.business_k_min),
                "business_k_max": fit_cfg.get("business_k_max", config.business_k_max),
                "silhouette_floor": config.silhouette_floor,
                "min_cluster_share": config.min_cluster_share,
            },
        )
        atomic_write_bytes(path, data)
        publish_partition(con, MODEL, "quarter", q.key, stage)
        table_meta = table_metadata(con, MODEL, "WHERE quarter = ?", [q.key])

    centroids = pd.DataFrame(model.kmeans.cluster_centers_, columns=model.kept).round(3)
    centroids.insert(0, "segment", model.segment_names)
    centroids.insert(1, "customers", sizes)
    thresholds = pd.DataFrame(
        {
            "rule": ["silhouette drop", "share far from every centroid", "name conditions", "cadence (quarters)"],
            "this quarter": [
                "n/a" if drift is None or drift.silhouette_drop is None else f"{drift.silhouette_drop:.3f}",
                "n/a" if drift is None else f"{drift.far_share:.1%}",
                "n/a" if drift is None else ("hold" if not drift.names_failing else "; ".join(drift.names_failing)),
                str(age) if kept is not None else "n/a",
            ],
            "threshold": [
                f"{config.max_silhouette_drop:.3f}",
                f"{config.max_far_share:.0%}",
                "checked" if config.refit_when_names_fail else "not checked",
                str(config.refit_every_quarters or "never"),
            ],
        }
    )
    metadata = {
        **table_meta,
        "decision": decision,
        "decision_reason": why,
        "model_version": model.version,
        "fitted_quarter": model.fitted_quarter,
        "parent_version": model.parent_version or "none",
        "k": model.k,
        "why_this_k": model.reason,
        "silhouette": float(current_sil) if current_sil is not None else float("nan"),
        "fit_silhouette": float(model.fit_silhouette),
        "drift_rules": dg.MetadataValue.md(thresholds.to_markdown(index=False)),
        "k_trials": dg.MetadataValue.md(md_table(trials, floatfmt=".4f")),
        "centroids_scaled": dg.MetadataValue.md(md_table(centroids, floatfmt=".3f")),
        "artifact": dg.MetadataValue.path(str(path)),
        "dagster/row_count": len(table),
    }
    if refused:
        metadata["model_file_refused"] = refused
    if refit_result is not None:
        metadata["names_carried_over"] = ", ".join(sorted(set(refit_result.carried.values()))) or "none"
        metadata["names_given_afresh"] = ", ".join(sorted(set(refit_result.renamed.values()))) or "none"
        if refit_result.ari is not None:
            metadata["refit_adjusted_rand_index"] = round(refit_result.ari, 4)
            metadata["refit_name_change_share"] = round(refit_result.name_change_share, 4)
    yield dg.MaterializeResult(metadata=metadata)
