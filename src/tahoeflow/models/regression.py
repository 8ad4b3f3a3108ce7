"""Regressions of ``delta_mean``: seed 000's Ridge (Model 1) and seed 001's tuned forest.

Both train on the training split only, leave out rows without a ``delta_mean`` (no
control cells of their line) and count them, and skip the model, saying why, when too
few rows are left. How close the Ridge comes to what any condition-only model could
reach is :mod:`tahoeflow.models.ceiling`'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_squared_error, r2_score, root_mean_squared_error
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from tahoeflow.errors import ArgumentError
from tahoeflow.io import json_number, json_value
from tahoeflow.models.checks import (
    check_alpha,
    check_cv_folds,
    check_int,
    check_max_train_cells,
    check_names,
)
from tahoeflow.models.design import TARGET, SkipModel, prepare, tabular_preprocessor
from tahoeflow.models.evaluation import (
    cross_validate,
    cv_reason,
    empty_predictions,
    null_reasons,
    predictions,
    r2_reason,
)

RIDGE_FEATURES = ("drug", "cell_line_id", "dose", "moa_fine", "drug_dose")
"""Features :func:`fit_ridge` accepts (all one-hot encoded)."""

DEFAULT_RIDGE_FEATURES = ("drug", "cell_line_id")
"""Seed 000's Ridge inputs."""

RIDGE_SOLVER = "sparse_cg"
RIDGE_TOL = 1e-10
"""The one-hot matrix stays sparse; conjugate gradients with this relative tolerance give
the exact ridge solution (tested against the dense Cholesky solve)."""

DEFAULT_REGRESSOR_FEATURES = (
    "drug",
    "dose",
    "cell_line_id",
    "expr_mean",
    "expr_std",
    "expr_skew",
    "n_genes",
)
"""Seed 001's inputs: drug metadata plus the expression summaries (mean, std, skew,
length of the stored counts). These summaries are computed from the same counts as the
target, so the forest partly reads the answer; ``mean_log_norm`` + ``control_mean``
(whose difference *is* the target) are refused together."""

DEFAULT_RF_GRID: dict[str, list[Any]] = {
    "n_estimators": [50, 100],
    "max_depth": [None, 8],
    "min_samples_leaf": [1, 5],
}
"""Default grid for :func:`fit_rf_regressor_grid` (8 candidates x ``cv_folds`` fits)."""

GRID_FIXED = ("random_state", "n_jobs", "verbose")
"""RandomForestRegressor parameters the grid may not tune (the fitter sets them)."""


# =========================================================================== Ridge


@dataclass
class RidgeResult:
    """Fitted Ridge pipeline, per-cell predictions and metrics.

    ``predictions`` has ``cell_id, split, y_true, y_pred`` for every cell with a non-null
    ``delta_mean`` (table order). ``metrics`` keys: ``train_mse, test_mse, train_r2,
    test_r2, cv_r2_mean, cv_r2_std, cv_r2_folds, cv_folds, n_train, n_test,
    n_excluded_null_target, alpha, features, n_onehot_columns``.
    """

    model: Pipeline
    predictions: pd.DataFrame
    metrics: dict[str, Any]
    features: list[str]


def ridge_pipeline(alpha: float = 1.0) -> Pipeline:
    """Unfitted ``Pipeline(OneHotEncoder(handle_unknown="ignore"), Ridge(alpha))``."""
    return Pipeline(
        [
            ("onehot", OneHotEncoder(handle_unknown="ignore")),
            ("ridge", Ridge(alpha=alpha, solver=RIDGE_SOLVER, tol=RIDGE_TOL)),
        ]
    )


def fit_ridge(
    cells: pd.DataFrame,
    split: pd.DataFrame,
    alpha: float = 1.0,
    features: Sequence[str] = DEFAULT_RIDGE_FEATURES,
    cv_folds: int = 5,
    seed: int = 0,
    n_jobs: int = 1,
    max_train_cells: int | None = None,
) -> RidgeResult:
    """Model 1: Ridge of ``delta_mean`` on one-hot ``features`` (subset of :data:`RIDGE_FEATURES`).

    ``alpha=0`` is ordinary least squares (the one-hot design is rank-deficient; CG from
    zero returns the minimum-norm solution, and predictions are unique). CV R2:
    ``KFold(cv_folds, shuffle=True, random_state=seed)`` over the training rows, encoder
    refitted per fold; ``cv_folds=0`` skips it. ``max_train_cells``: at most this many
    training rows, a sample stratified by cell line
    (:func:`~tahoeflow.models.sampling.stratified_sample`, seeded by ``seed``); when rows
    were left out the metrics add ``n_train_sampled``, ``n_train_total`` and
    ``train_sample`` (``n_train`` is then the sample). Too few rows with a ``delta_mean``:
    nothing is fitted, ``model`` is None and ``metrics`` is ``{"skipped": reason, ...}``.
    An R2 over fewer than 2 rows is None with its reason in ``metrics["null_reasons"]``.
    """
    alpha = check_alpha(alpha)
    feats = check_names(features, "features", RIDGE_FEATURES)
    seed = check_int(seed, "seed", 0)
    n_jobs = check_int(n_jobs, "n_jobs", 1)
    max_train_cells = check_max_train_cells(max_train_cells)
    check_cv_folds(cv_folds)
    try:
        data = prepare(
            cells, split, feats, target=TARGET, drop_null_target=True,
            max_train_cells=max_train_cells, seed=seed,
        )  # fmt: skip
    except SkipModel as skip:
        metrics = {"skipped": skip.reason, **skip.counts, "alpha": alpha, "features": feats}
        return RidgeResult(
            model=None, predictions=empty_predictions(np.float64), metrics=metrics, features=feats
        )
    k = check_cv_folds(cv_folds, data.n_train)
    y = data.frame[TARGET].to_numpy(dtype=np.float64)
    tr, te = data.train, data.is_test

    model = ridge_pipeline(alpha)
    cv = KFold(n_splits=k, shuffle=True, random_state=seed) if k else None
    cv_mean, cv_std, cv_scores = cross_validate(model, data.X.loc[tr], y[tr], cv, "r2", n_jobs)
    model.fit(data.X.loc[tr], y[tr])
    pred = model.predict(data.X)

    metrics = {
        "train_mse": float(mean_squared_error(y[tr], pred[tr])),
        "test_mse": float(mean_squared_error(y[te], pred[te])),
        "train_r2": json_number(r2_score(y[tr], pred[tr])) if data.n_train > 1 else None,
        "test_r2": json_number(r2_score(y[te], pred[te])) if data.n_test > 1 else None,
        "cv_r2_mean": cv_mean,
        "cv_r2_std": cv_std,
        "cv_r2_folds": cv_scores,
        "cv_folds": k,
        "n_train": data.n_train,
        "n_test": data.n_test,
        **data.sample_metrics(),
        "n_excluded_null_target": data.n_excluded,
        "alpha": alpha,
        "features": feats,
        "n_onehot_columns": int(len(model.named_steps["onehot"].get_feature_names_out())),
    }
    null_reasons(
        metrics,
        {
            "train_r2": r2_reason(data.n_train, "train"),
            "test_r2": r2_reason(data.n_test, "test"),
            "cv_r2_mean": cv_reason(k, "R2"),
            "cv_r2_std": cv_reason(k, "R2"),
        },
    )
    return RidgeResult(
        model=model, predictions=predictions(data, y, pred), metrics=metrics, features=feats
    )


# =========================================================================== seed 001


def grid_parameters() -> list[str]:
    """RandomForestRegressor parameters a grid may tune (all but :data:`GRID_FIXED`), sorted."""
    return sorted(set(RandomForestRegressor().get_params()) - set(GRID_FIXED))


def _check_grid(grid: Any) -> dict[str, list[Any]]:
    if not isinstance(grid, Mapping) or not grid:
        raise ArgumentError(
            "grid", f"must be a non-empty mapping of parameter -> values, got {grid!r}"
        )
    valid = grid_parameters()
    out: dict[str, list[Any]] = {}
    for name, values in grid.items():
        if name not in valid:
            raise ArgumentError("grid", f"unknown parameter {name!r}; allowed: {valid}")
        if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
            raise ArgumentError("grid", f"{name!r} must be a non-empty list, got {values!r}")
        out[str(name)] = list(values)
    return out


def _check_regressor_features(features: Any) -> list[str]:
    feats = check_names(features, "features")
    if TARGET in feats:
        raise ArgumentError("features", f"{TARGET!r} is the target")
    if {"mean_log_norm", "control_mean"} <= set(feats):
        raise ArgumentError(
            "features", "mean_log_norm and control_mean together determine delta_mean (target leak)"
        )
    return feats


def _skipped_regressor(skip: SkipModel, feats: list[str], grid: Mapping[str, Any]) -> dict:
    """:func:`fit_rf_regressor_grid`'s result when nothing is fitted: empty tables, the reason."""
    return {
        "model": None,
        "best_params": None,
        "metrics": {"skipped": skip.reason, **skip.counts, "features": feats},
        "cv_results": pd.DataFrame(
            {
                **{p: pd.Series(dtype=object) for p in grid},
                "mean_cv_rmse": pd.Series(dtype=np.float64),
                "std_cv_rmse": pd.Series(dtype=np.float64),
                "rank": pd.Series(dtype=np.int64),
            }
        ),
        "predictions": empty_predictions(np.float64),
    }


def fit_rf_regressor_grid(
    cells: pd.DataFrame,
    split: pd.DataFrame,
    features: Sequence[str] = DEFAULT_REGRESSOR_FEATURES,
    grid: Mapping[str, Sequence[Any]] | None = None,
    cv_folds: int = 3,
    seed: int = 0,
    n_jobs: int = 1,
    embeddings: pd.DataFrame | None = None,
    n_pcs: int | None = None,
    max_train_cells: int | None = None,
) -> dict[str, Any]:
    """Seed 001: RandomForestRegressor on ``delta_mean`` tuned by GridSearchCV.

    ``grid`` maps RandomForestRegressor parameters to candidate lists (default
    :data:`DEFAULT_RF_GRID`). The search runs on the training split only with
    ``KFold(cv_folds, shuffle=True, random_state=seed)``, scoring RMSE; the best candidate
    is refitted on the whole training split. ``n_jobs`` parallelises the search (each
    forest uses one core). ``max_train_cells``: as in
    :func:`fit_ridge`.

    Returns a dict: ``best_params`` (plain dict), ``metrics`` (``train_rmse, test_rmse,
    cv_rmse, cv_rmse_std, train_r2, test_r2, cv_folds, n_candidates, n_train, n_test,
    n_excluded_null_target, features, best_params``), ``cv_results`` (one row per
    candidate: its parameters, ``mean_cv_rmse, std_cv_rmse, rank``), ``predictions``
    (``cell_id, split, y_true, y_pred``) and ``model`` (refitted best Pipeline). Too few rows
    with a ``delta_mean``: nothing is fitted, ``metrics`` is ``{"skipped": reason, ...}``,
    ``model`` and ``best_params`` are None and the tables are empty.
    """
    feats = _check_regressor_features(features)
    param_grid = _check_grid(DEFAULT_RF_GRID if grid is None else grid)
    seed = check_int(seed, "seed", 0)
    n_jobs = check_int(n_jobs, "n_jobs", 1)
    max_train_cells = check_max_train_cells(max_train_cells)
    check_cv_folds(cv_folds, allow_zero=False)
    try:
        data = prepare(
            cells, split, feats, target=TARGET, drop_null_target=True, embeddings=embeddings,
            n_pcs=n_pcs, max_train_cells=max_train_cells, seed=seed,
        )  # fmt: skip
    except SkipModel as skip:
        return _skipped_regressor(skip, feats, param_grid)
    k = check_cv_folds(cv_folds, data.n_train, allow_zero=False)
    y = data.frame[TARGET].to_numpy(dtype=np.float64)
    tr, te = data.train, data.is_test
    pipe = Pipeline(
        [
            ("pre", tabular_preprocessor(data.categorical, data.numeric, scale=False)),
            ("rf", RandomForestRegressor(random_state=seed, n_jobs=1)),
        ]
    )
    search = GridSearchCV(
        pipe,
        param_grid={f"rf__{p}": v for p, v in param_grid.items()},
        scoring="neg_root_mean_squared_error",
        cv=KFold(n_splits=k, shuffle=True, random_state=seed),
        n_jobs=n_jobs,
        refit=True,
    )
    search.fit(data.X.loc[tr], y[tr])
    best = search.best_estimator_
    pred = best.predict(data.X)
    best_params = {p.removeprefix("rf__"): json_value(v) for p, v in search.best_params_.items()}
    res = search.cv_results_
    # One column per tuned parameter; object dtype keeps None (e.g. max_depth) as None.
    cv_table = pd.DataFrame(
        {
            p: pd.Series([json_value(ps[f"rf__{p}"]) for ps in res["params"]], dtype=object)
            for p in param_grid
        }
    )
    cv_table["mean_cv_rmse"] = -np.asarray(res["mean_test_score"], dtype=np.float64)
    cv_table["std_cv_rmse"] = np.asarray(res["std_test_score"], dtype=np.float64)
    cv_table["rank"] = np.asarray(res["rank_test_score"], dtype=np.int64)
    i = int(search.best_index_)
    metrics = {
        "train_rmse": float(root_mean_squared_error(y[tr], pred[tr])),
        "test_rmse": float(root_mean_squared_error(y[te], pred[te])),
        "cv_rmse": json_number(-search.best_score_),
        "cv_rmse_std": json_number(res["std_test_score"][i]),
        "train_r2": json_number(r2_score(y[tr], pred[tr])),
        "test_r2": json_number(r2_score(y[te], pred[te])) if data.n_test > 1 else None,
        "cv_folds": k,
        "n_candidates": len(res["params"]),
        "n_train": data.n_train,
        "n_test": data.n_test,
        **data.sample_metrics(),
        "n_excluded_null_target": data.n_excluded,
        "features": list(data.X.columns),
        "best_params": best_params,
    }
    null_reasons(
        metrics,
        {
            "train_r2": r2_reason(data.n_train, "train"),
            "test_r2": r2_reason(data.n_test, "test"),
            "cv_rmse": cv_reason(k, "RMSE"),
            "cv_rmse_std": cv_reason(k, "RMSE"),
        },
    )
    return {
        "model": best,
        "best_params": best_params,
        "metrics": metrics,
        "cv_results": cv_table,
        "predictions": predictions(data, y, pred),
    }
