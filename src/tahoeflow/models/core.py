"""The seed projects' models, reproduced with honest evaluation.

* Model 1 (seed 000): :func:`fit_ridge`, Ridge regression of ``delta_mean`` on one-hot
  condition features, with train/test MSE and R2 and k-fold CV R2 on the training split;
  :func:`r2_ceiling` / :func:`ridge_fraction_of_ceiling` say how much of the R2 that any
  condition-only model could reach the Ridge reaches.
* Model 2 (seed 000): :func:`fit_rf_classifier`, a random forest predicting
  ``cell_line_id`` from drug one-hot + ``mean_log_norm``, ``delta_mean``, ``n_genes``
  (+ optional PCs); :func:`fit_classifier_baselines` adds the simpler models seed 000
  asked for (logistic regression, linear SVM) and a majority-class floor on the same
  split and CV folds.
* Seed 001's model: :func:`fit_rf_regressor_grid`, a RandomForestRegressor on
  ``delta_mean`` tuned by GridSearchCV.
* :func:`split_comparison`: the same models on a random and a grouped split side by side,
  so leakage between wells or plates shows up as a train/test gap.
* Figures: :func:`plot_pred_vs_true`, :func:`plot_confusion`, :func:`plot_importances`.

Every fitter takes the per-cell table and a split table (``cell_id``, ``split``) from
:func:`tahoeflow.models.features.make_split`; all preprocessing (one-hot encoding, imputation,
scaling) lives inside the fitted pipeline and is refitted inside every CV fold, so no
statistic of the test split or of a held-out fold leaks into training. Functions return
plain dicts / DataFrames; metric dicts hold only JSON-ready values (``None`` where a value
is undefined or not computed, and then ``null_reasons[key]`` says why) and never print.

A model that would be meaningless is not fitted: its metrics are ``{"skipped": "<reason>",
...counts}`` and its tables are empty (same columns). That happens when no row has a
``delta_mean`` (no control cells: the regressions), and when the training split holds a
single class (one cell line left after the filters: the classifiers).

Feature names understood by the fitters: any column of the cells table (numeric dtypes
are used as numbers, everything else as categories), ``"dose"`` (``dose_uM`` as a
category string), ``"drug_dose"`` (the drug x dose interaction as one category), and the
``pc1..pcK`` columns of an optional embeddings table.

Config keys named in ConfigError messages: ``models.cv_folds``, ``models.seed``,
``models.n_jobs``, ``models.max_train_cells``, ``models.ridge.alpha``, ``models.ridge.features``,
``models.rf.features``, ``models.rf.n_estimators``, ``models.rf.max_depth``,
``models.rf.max_samples``, ``models.rf.n_pcs``, ``models.grouped_split_by``,
``models.baselines.models``, ``models.rf_regressor.features``,
``models.rf_regressor.grid``, and ``split.*`` (via :func:`make_split`).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.compose import ColumnTransformer
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    mean_squared_error,
    precision_recall_fscore_support,
    r2_score,
    root_mean_squared_error,
)
from sklearn.model_selection import (
    GridSearchCV,
    KFold,
    StratifiedKFold,
    cross_val_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder, OneHotEncoder, StandardScaler
from sklearn.svm import LinearSVC

from tahoeflow.errors import ConfigError, InputError
from tahoeflow.io import atomic_path
from tahoeflow.models.features import (
    CELLS,
    attach_split,
    category_strings,
    make_split,
    require_columns,
)

TARGET = "delta_mean"
"""Regression target of Model 1 and of seed 001's forest."""

CLASS_TARGET = "cell_line_id"
"""Classification target of Model 2 and its baselines."""

RIDGE_FEATURES = ("drug", "cell_line_id", "dose", "moa_fine", "drug_dose")
"""Features :func:`fit_ridge` accepts (all one-hot encoded)."""

DEFAULT_RIDGE_FEATURES = ("drug", "cell_line_id")
"""Seed 000's Ridge inputs."""

RIDGE_SOLVER = "sparse_cg"
RIDGE_TOL = 1e-10
"""The one-hot matrix stays sparse; conjugate gradients with this relative tolerance give
the exact ridge solution to ~1e-9 (tested against the dense Cholesky solve)."""

DEFAULT_RF_FEATURES = ("drug", "mean_log_norm", "delta_mean", "n_genes")
"""Seed 000's Model 2 inputs: drug one-hot plus three numeric per-cell summaries."""

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

BASELINE_MODELS = ("majority_class", "logistic_regression", "linear_svm", "random_forest")
"""Models :func:`fit_classifier_baselines` can run, in table order."""

BASELINE_COLUMNS = [
    "model",
    "train_acc",
    "test_acc",
    "gap",
    "cv_acc_mean",
    "cv_acc_std",
    "cv_kind",
    "converged",
    "note",
]
"""Columns of ``results/models/baselines.csv``."""

LOGREG_MAX_ITER = 2000
SVM_MAX_ITER = 10000

_PC = re.compile(r"^pc(\d+)$")

DEFAULT_MAX_TRAIN_CELLS = 200_000
"""Default cap on the training rows of every model (``models.max_train_cells``)."""


# =========================================================================== checks


def _check_int(value: Any, key: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(key, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_cv_folds(cv_folds: Any, n_train: int | None = None, allow_zero: bool = True) -> int:
    """0 disables CV (where allowed); otherwise at least 2 and at most ``n_train``."""
    if isinstance(cv_folds, bool) or not isinstance(cv_folds, Integral):
        raise ConfigError("models.cv_folds", f"must be an integer, got {cv_folds!r}")
    k = int(cv_folds)
    if k == 0 and allow_zero:
        return 0
    if k < 2:
        need = "0 (no CV) or >= 2" if allow_zero else ">= 2"
        raise ConfigError("models.cv_folds", f"must be {need}, got {k}")
    if n_train is not None and k > n_train:
        raise ConfigError("models.cv_folds", f"{k} folds but only {n_train} training rows")
    return k


def _check_features(features: Any, key: str, allowed: Sequence[str] | None = None) -> list[str]:
    if isinstance(features, str) or not isinstance(features, Sequence) or not features:
        raise ConfigError(key, f"must be a non-empty list of feature names, got {features!r}")
    feats = list(features)
    if not all(isinstance(f, str) and f for f in feats):
        raise ConfigError(key, f"must be a list of non-empty strings, got {feats!r}")
    if len(set(feats)) != len(feats):
        raise ConfigError(key, f"has duplicate names: {feats!r}")
    if allowed is not None:
        bad = [f for f in feats if f not in allowed]
        if bad:
            raise ConfigError(key, f"unknown feature(s) {bad}; allowed: {list(allowed)}")
    return feats


def _json_number(x: Any) -> float | None:
    """Plain float, or None for NaN / missing (keeps metric dicts valid JSON)."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def _json_value(v: Any) -> Any:
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return _json_number(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


class SkipModel(Exception):  # noqa: N818 - a decision, not an error
    """A model that would be meaningless on these rows; ``reason`` says why (one line)."""

    def __init__(self, reason: str, **counts: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.counts = counts


def _null_reasons(metrics: dict[str, Any], reasons: Mapping[str, str]) -> dict[str, Any]:
    """Add ``null_reasons`` for the metrics in ``reasons`` that are None (only those)."""
    why = {k: r for k, r in reasons.items() if k in metrics and metrics[k] is None}
    if why:
        metrics["null_reasons"] = {**metrics.get("null_reasons", {}), **why}
    return metrics


def _r2_reason(n: int, side: str) -> str:
    if n < 2:
        return f"{n} {side} row(s): R2 needs at least 2"
    return f"R2 undefined on the {side} rows (constant target)"


def _cv_reason(k: int, metric: str, why: str | None = None) -> str:
    if not k:
        return "no CV (models.cv_folds: 0)"
    return why or f"CV {metric} undefined (a fold's score could not be computed)"


_EMPTY_PREDICTIONS = {"cell_id": object, "split": object, "y_true": object, "y_pred": object}


def _empty_predictions(y_dtype: Any) -> pd.DataFrame:
    dt = {**_EMPTY_PREDICTIONS, "y_true": y_dtype, "y_pred": y_dtype}
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dt.items()})


# =========================================================================== design


@dataclass
class _Data:
    """Design frame of one fit: rows of the cells table that take part, in table order."""

    cell_ids: np.ndarray
    is_test: np.ndarray
    X: pd.DataFrame
    categorical: list[str]
    numeric: list[str]
    frame: pd.DataFrame
    n_excluded: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> np.ndarray:
        return ~self.is_test

    @property
    def n_train(self) -> int:
        return int((~self.is_test).sum())

    @property
    def n_test(self) -> int:
        return int(self.is_test.sum())


def _pc_columns(embeddings: pd.DataFrame, n_pcs: int | None) -> list[str]:
    pcs = sorted(
        (c for c in embeddings.columns if isinstance(c, str) and _PC.match(c)),
        key=lambda c: int(_PC.match(c).group(1)),  # type: ignore[union-attr]
    )
    if not pcs:
        raise InputError("embeddings table", "has no pc1..pcK columns")
    if n_pcs is not None:
        n_pcs = _check_int(n_pcs, "models.rf.n_pcs", 1)
        if n_pcs > len(pcs):
            raise ConfigError("models.rf.n_pcs", f"{n_pcs} requested but the table has {len(pcs)}")
        pcs = pcs[:n_pcs]
    return pcs


def _with_embeddings(
    cells: pd.DataFrame, embeddings: pd.DataFrame | None, n_pcs: int | None
) -> tuple[pd.DataFrame, list[str], int]:
    """cells left-joined with the embedding PCs; (frame, pc names, cells lacking a PC row)."""
    if embeddings is None:
        if n_pcs is not None:
            raise ConfigError("models.rf.n_pcs", "set but no embeddings table was given")
        return cells, [], 0
    require_columns(embeddings, ["cell_id"], "embeddings table")
    dup = embeddings["cell_id"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError("embeddings table", "duplicate cell_id", row=row)
    pcs = _pc_columns(embeddings, n_pcs)
    clash = [c for c in pcs if c in cells.columns]
    base = cells.drop(columns=clash)
    emb = embeddings[["cell_id", *pcs]].set_index("cell_id")
    joined = base.join(emb, on="cell_id")
    n_missing = int((~base["cell_id"].isin(emb.index)).sum())
    return joined, pcs, n_missing


def _design(
    frame: pd.DataFrame, features: Sequence[str]
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Model inputs: categorical features as category strings, numeric ones as float64."""
    cols: dict[str, pd.Series] = {}
    cat: list[str] = []
    num: list[str] = []
    for f in features:
        if f == "dose":
            require_columns(frame, ["dose_uM"])
            cols[f] = category_strings(frame["dose_uM"])
            cat.append(f)
        elif f == "drug_dose":
            require_columns(frame, ["drug", "dose_uM"])
            cols[f] = _pair_strings(frame["drug"], frame["dose_uM"])
            cat.append(f)
        else:
            require_columns(frame, [f])
            s = frame[f]
            if pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s):
                values = s.to_numpy(dtype=np.float64, na_value=np.nan)
                if np.isinf(values).any():
                    row = int(frame.index[np.flatnonzero(np.isinf(values))[0]])
                    raise InputError(CELLS, f"infinite value in {f!r}", row=row)
                cols[f] = pd.Series(values, index=frame.index)
                num.append(f)
            else:
                cols[f] = category_strings(s)
                cat.append(f)
    return pd.DataFrame(cols, index=frame.index), cat, num


def _pair_strings(a: pd.Series, b: pd.Series) -> pd.Series:
    """``"<a>|<b>"`` category strings, formatting only the distinct pairs."""
    pairs = pd.MultiIndex.from_arrays([category_strings(a), category_strings(b)])
    codes, uniques = pd.factorize(pairs)
    labels = np.array([f"{x}|{y}" for x, y in uniques], dtype=object)
    return pd.Series(labels[codes], index=a.index, dtype=object)


def _check_max_train_cells(value: Any) -> int | None:
    return None if value is None else _check_int(value, "models.max_train_cells", 2)


def stratified_sample(labels: Any, n: int, seed: int = 0) -> np.ndarray:
    """Positions (sorted) of ``n`` of ``labels``' rows, stratified by label, seeded.

    Each class c of size ``n_c`` (of ``N`` rows) gets ``floor(n * n_c / N)`` rows, and the
    ``n - sum`` rows left over go one each to the classes with the largest fractional
    parts (largest remainder; ties to the class seen first), so every class's share differs
    from ``n * n_c / N`` by less than one row. The rows of a class are drawn uniformly
    without replacement (one ``default_rng(seed)`` key per row). ``n >= N`` returns every
    position. Vectorised: one sort, no loop over rows or classes.
    """
    codes, _ = pd.factorize(pd.Series(np.asarray(labels, dtype=object)), use_na_sentinel=False)
    N = codes.size
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
        raise ValueError(f"n must be an integer >= 0, got {n!r}")
    if n >= N:
        return np.arange(N)
    counts = np.bincount(codes)
    quota = n * counts / N
    take = np.floor(quota).astype(np.int64)
    left = int(n - take.sum())
    if left:
        order = np.argsort(-(quota - take), kind="stable")
        take[order[:left]] += 1
    keys = np.random.default_rng(seed).random(N)
    order = np.lexsort((keys, codes))  # by class, then random key
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_codes = codes[order]
    rank = np.arange(N) - starts[sorted_codes]
    return np.sort(order[rank < take[sorted_codes]])


def _sample_train(
    framed: pd.DataFrame, is_test: np.ndarray, max_train_cells: int | None, seed: int
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Keep every test row and at most ``max_train_cells`` training rows, stratified by
    :data:`CLASS_TARGET`; the counts for the metrics (empty when nothing was left out)."""
    train_pos = np.flatnonzero(~is_test)
    if max_train_cells is None or train_pos.size <= max_train_cells:
        return framed, is_test, {}
    require_columns(framed, [CLASS_TARGET])
    labels = framed[CLASS_TARGET].to_numpy()[train_pos]
    keep = np.flatnonzero(is_test)
    keep = np.sort(
        np.concatenate([keep, train_pos[stratified_sample(labels, max_train_cells, seed)]])
    )
    info = {
        "n_train_sampled": int(max_train_cells),
        "n_train_total": int(train_pos.size),
        "train_sample": f"stratified by {CLASS_TARGET}, seed {seed} (models.max_train_cells)",
    }
    return framed.iloc[keep], is_test[keep], info


def _sample_metrics(data: _Data) -> dict[str, Any]:
    return dict(data.extra.get("train_sample", {}))


def _prepare(
    cells: pd.DataFrame,
    split: pd.DataFrame,
    features: Sequence[str],
    *,
    target: str,
    drop_null_target: bool,
    embeddings: pd.DataFrame | None = None,
    n_pcs: int | None = None,
    max_train_cells: int | None = None,
    seed: int = 0,
) -> _Data:
    require_columns(cells, ["cell_id", target])
    # Index = position in the cells table, so error rows stay file rows after filtering.
    framed = attach_split(cells, split).reset_index(drop=True)
    framed, pcs, n_missing_pc = _with_embeddings(framed, embeddings, n_pcs)
    feats = list(features) + [p for p in pcs if p not in features]
    y = framed[target]
    n_excluded = 0
    if drop_null_target:
        if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
            raise InputError(CELLS, f"target {target!r} must be numeric, has dtype {y.dtype}")
        yv = y.to_numpy(dtype=np.float64, na_value=np.nan)
        if np.isinf(yv).any():
            row = int(np.flatnonzero(np.isinf(yv))[0])
            raise InputError(CELLS, f"infinite {target!r}", row=row)
        keep = ~np.isnan(yv)
        n_excluded = int((~keep).sum())
        framed = framed.loc[keep]
    elif y.isna().any():
        row = int(np.flatnonzero(y.isna().to_numpy())[0])
        raise InputError(CELLS, f"null {target!r}", row=row)
    is_test = (framed["split"] == "test").to_numpy()
    n_train, n_test = int((~is_test).sum()), int(is_test.sum())
    if n_train < 2 or n_test < 1:
        n_all = len(framed) + n_excluded
        if not drop_null_target:
            raise InputError(CELLS, f"{n_train} train and {n_test} test rows (need >= 2 and >= 1)")
        if n_excluded == n_all:
            reason = (
                f"{target} is null for all {n_all} cells (no control cells of their cell "
                "line; see results/merged/control_qc.csv)"
            )
        else:
            reason = (
                f"after dropping {n_excluded} rows with null {target!r}: {n_train} train "
                f"and {n_test} test rows (need >= 2 and >= 1)"
            )
        raise SkipModel(reason, n_train=n_train, n_test=n_test, n_excluded_null_target=n_excluded)
    framed, is_test, sample = _sample_train(framed, is_test, max_train_cells, seed)
    X, cat, num = _design(framed, feats)
    data = _Data(
        cell_ids=framed["cell_id"].to_numpy(),
        is_test=is_test,
        X=X,
        categorical=cat,
        numeric=num,
        frame=framed,
        n_excluded=n_excluded,
        extra={"pcs": pcs, "n_missing_embeddings": n_missing_pc, "train_sample": sample},
    )
    return data


def _tabular_preprocessor(cat: list[str], num: list[str], scale: bool) -> ColumnTransformer:
    """One-hot for categories; median imputation (+ optional z-scoring) for numbers."""
    parts: list[tuple[str, Any, list[str]]] = []
    if cat:
        parts.append(("cat", OneHotEncoder(handle_unknown="ignore"), cat))
    if num:
        steps: list[tuple[str, Any]] = [
            ("impute", SimpleImputer(strategy="median", keep_empty_features=True))
        ]
        if scale:
            steps.append(("scale", StandardScaler()))
        parts.append(("num", Pipeline(steps), num))
    return ColumnTransformer(parts, remainder="drop", verbose_feature_names_out=False)


def _cv(
    estimator: Any,
    X: pd.DataFrame,
    y: np.ndarray,
    cv: Any,
    scoring: str,
    n_jobs: int,
) -> tuple[float | None, float | None, list[float]]:
    if cv is None:
        return None, None, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(clone(estimator), X, y, cv=cv, scoring=scoring, n_jobs=n_jobs)
    folds = [_json_number(s) for s in scores]  # a fold whose score is undefined: None, not NaN
    return _json_number(np.mean(scores)), _json_number(np.std(scores)), folds


def _predictions(data: _Data, y_true: Any, y_pred: Any) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cell_id": data.cell_ids,
            "split": np.where(data.is_test, "test", "train").astype(object),
            "y_true": np.asarray(y_true),
            "y_pred": np.asarray(y_pred),
        }
    )


# =========================================================================== Model 1


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
    zero returns the minimum-norm solution, and predictions are unique). Fitted on the
    training split; rows with null ``delta_mean`` (e.g. no DMSO control of
    that line on that plate) are left out and counted. CV R2: ``KFold(cv_folds,
    shuffle=True, random_state=seed)`` over the training rows, encoder refitted per fold;
    ``cv_folds=0`` skips it. ``max_train_cells``: at most this many training rows, a
    sample stratified by cell line (:func:`stratified_sample`, seeded by ``seed``); when
    rows were left out the metrics add ``n_train_sampled``, ``n_train_total`` and
    ``train_sample`` (``n_train`` is then the sample). Too few rows with a ``delta_mean`` (e.g. no control cells at
    all): nothing is fitted, ``model`` is None and ``metrics`` is ``{"skipped": reason, ...}``.
    An R2 over fewer than 2 rows is None with its reason in ``metrics["null_reasons"]``.
    """
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, Real)
        or not math.isfinite(float(alpha))
        or float(alpha) < 0
    ):
        raise ConfigError("models.ridge.alpha", f"must be a finite number >= 0, got {alpha!r}")
    feats = _check_features(features, "models.ridge.features", RIDGE_FEATURES)
    seed = _check_int(seed, "models.seed", 0)
    n_jobs = _check_int(n_jobs, "models.n_jobs", 1)
    max_train_cells = _check_max_train_cells(max_train_cells)
    _check_cv_folds(cv_folds)
    try:
        data = _prepare(
            cells, split, feats, target=TARGET, drop_null_target=True,
            max_train_cells=max_train_cells, seed=seed,
        )  # fmt: skip
    except SkipModel as skip:
        metrics = {"skipped": skip.reason, **skip.counts, "alpha": float(alpha), "features": feats}
        return RidgeResult(
            model=None, predictions=_empty_predictions(np.float64), metrics=metrics, features=feats
        )
    k = _check_cv_folds(cv_folds, data.n_train)
    y = data.frame[TARGET].to_numpy(dtype=np.float64)
    tr, te = data.train, data.is_test

    model = ridge_pipeline(float(alpha))
    cv = KFold(n_splits=k, shuffle=True, random_state=seed) if k else None
    cv_mean, cv_std, cv_scores = _cv(model, data.X.loc[tr], y[tr], cv, "r2", n_jobs)
    model.fit(data.X.loc[tr], y[tr])
    pred = model.predict(data.X)

    metrics = {
        "train_mse": float(mean_squared_error(y[tr], pred[tr])),
        "test_mse": float(mean_squared_error(y[te], pred[te])),
        "train_r2": _json_number(r2_score(y[tr], pred[tr])) if data.n_train > 1 else None,
        "test_r2": _json_number(r2_score(y[te], pred[te])) if data.n_test > 1 else None,
        "cv_r2_mean": cv_mean,
        "cv_r2_std": cv_std,
        "cv_r2_folds": cv_scores,
        "cv_folds": k,
        "n_train": data.n_train,
        "n_test": data.n_test,
        **_sample_metrics(data),
        "n_excluded_null_target": data.n_excluded,
        "alpha": float(alpha),
        "features": feats,
        "n_onehot_columns": int(len(model.named_steps["onehot"].get_feature_names_out())),
    }
    _null_reasons(
        metrics,
        {
            "train_r2": _r2_reason(data.n_train, "train"),
            "test_r2": _r2_reason(data.n_test, "test"),
            "cv_r2_mean": _cv_reason(k, "R2"),
            "cv_r2_std": _cv_reason(k, "R2"),
        },
    )
    return RidgeResult(
        model=model, predictions=_predictions(data, y, pred), metrics=metrics, features=feats
    )


def r2_ceiling(y_true: Any, condition_keys: Any, adjusted: bool = False) -> float:
    """Best R2 any model using only the condition keys can reach on these rows.

    With ``adjusted=True`` the in-sample optimism of the group means is removed
    (epsilon-squared: ``(SS_between - (G - 1) * MS_within) / SS_total``, with
    ``MS_within = SS_within / (n - G)``): an unbiased estimate of the share of variance
    the *true* condition means explain, which is what an ideal model with these inputs
    would reach on new cells. The raw value is an upper bound on these rows but grows
    with the number of groups even when conditions have no effect.

    Such a model predicts one value per distinct key combination; the squared error is
    smallest when that value is the group mean, so the ceiling is the R2 of the per-group
    means on the same rows: ``SS_between / SS_total`` (= ``1 - SS_within / SS_total``).
    ``condition_keys``: a DataFrame (one column per key, e.g. drug, dose_uM, cell_line_id,
    plate), a Series / 1-D array, or a 2-D array; nulls form their own group. Returns NaN
    when ``y_true`` is constant. Vectorised (bincount), fine for millions of rows.
    """
    y = np.asarray(y_true, dtype=np.float64).ravel()
    if np.isnan(y).any():
        raise ValueError("y_true contains NaN; drop those rows first")
    if isinstance(condition_keys, pd.DataFrame):
        keys = condition_keys.reset_index(drop=True)
    elif isinstance(condition_keys, pd.Series):
        keys = condition_keys.reset_index(drop=True).to_frame()
    else:
        arr = np.asarray(condition_keys, dtype=object)
        keys = pd.DataFrame(arr.reshape(len(arr), -1) if arr.ndim == 1 else arr)
    if len(keys) != len(y):
        raise ValueError(f"{len(keys)} condition keys for {len(y)} values")
    if len(y) == 0:
        return float("nan")
    codes = keys.groupby(list(keys.columns), dropna=False, sort=False).ngroup().to_numpy()
    counts = np.bincount(codes)
    means = np.bincount(codes, weights=y) / counts
    ss_total = float(np.sum((y - y.mean()) ** 2))
    if ss_total == 0.0:
        return float("nan")
    ss_within = float(np.sum((y - means[codes]) ** 2))
    if not adjusted:
        return 1.0 - ss_within / ss_total
    n_groups = counts.size
    if len(y) <= n_groups:
        return float("nan")
    ms_within = ss_within / (len(y) - n_groups)
    return (ss_total - ss_within - (n_groups - 1) * ms_within) / ss_total


_RIDGE_SOURCE = {
    "drug": ["drug"],
    "cell_line_id": ["cell_line_id"],
    "dose": ["dose_uM"],
    "moa_fine": ["moa_fine"],
    "drug_dose": ["drug", "dose_uM"],
}
CEILING_KEYS = ("drug", "dose_uM", "cell_line_id", "plate")
"""Default condition keys of the ceiling (the Ridge's own inputs are always added)."""


def ridge_fraction_of_ceiling(
    result: RidgeResult, cells: pd.DataFrame, keys: Sequence[str] | None = None
) -> dict[str, Any]:
    """Ridge R2 as a fraction of :func:`r2_ceiling`, per split.

    ``keys`` (default :data:`CEILING_KEYS` present in ``cells``) always get the columns
    the Ridge used added, so the Ridge is one of the condition-only models and
    ``r2 <= ceiling`` holds on each split. The ceiling is computed in-sample on each split,
    so it is optimistic when groups are small (a singleton group is fitted exactly); the
    ``*_n_groups`` values let a reader judge that.

    Returns ``{"keys", "train_n_groups", "train_r2", "train_r2_ceiling",
    "train_fraction_of_ceiling", and the same for test}`` (``None`` where undefined, with the
    reason in ``null_reasons``); ``{"skipped": reason}`` when the Ridge itself was skipped.
    """
    if "skipped" in result.metrics:
        return {"skipped": result.metrics["skipped"]}
    used = [c for f in result.features for c in _RIDGE_SOURCE.get(f, [f])]
    if keys is None:
        base = [k for k in CEILING_KEYS if k in cells.columns]
    else:
        base = _check_features(keys, "models.ridge.ceiling_keys")
    key_list = list(dict.fromkeys([*base, *used]))
    require_columns(cells, ["cell_id", *key_list])
    pred = result.predictions
    lookup = cells[["cell_id", *key_list]].set_index("cell_id")
    missing = ~pred["cell_id"].isin(lookup.index)
    if missing.any():
        raise InputError(CELLS, f"{int(missing.sum())} predicted cell(s) are not in the table")
    key_frame = lookup.loc[pred["cell_id"].to_numpy()].reset_index(drop=True)
    out: dict[str, Any] = {"keys": key_list}
    for side in ("train", "test"):
        m = (pred["split"] == side).to_numpy()
        yt = pred["y_true"].to_numpy(dtype=np.float64)[m]
        yp = pred["y_pred"].to_numpy(dtype=np.float64)[m]
        r2 = _json_number(r2_score(yt, yp)) if m.sum() > 1 else None
        ceiling = _json_number(r2_ceiling(yt, key_frame.loc[m])) if m.sum() > 1 else None
        frac = r2 / ceiling if r2 is not None and ceiling is not None and ceiling > 0 else None
        adj = _json_number(r2_ceiling(yt, key_frame.loc[m], adjusted=True)) if m.sum() > 1 else None
        frac_adj = r2 / adj if r2 is not None and adj is not None and adj > 0 else None
        out[f"{side}_n_groups"] = int(len(key_frame.loc[m].drop_duplicates()))
        out[f"{side}_r2"] = r2
        out[f"{side}_r2_ceiling"] = ceiling
        out[f"{side}_fraction_of_ceiling"] = _json_number(frac)
        out[f"{side}_r2_ceiling_adjusted"] = adj
        out[f"{side}_fraction_of_adjusted_ceiling"] = _json_number(frac_adj)
        n_side = int(m.sum())
        few = f"{n_side} {side} row(s): needs at least 2"
        flat = f"delta_mean is constant on the {side} rows" if n_side > 1 else few
        groups = f"as many condition groups as {side} rows: no within-group variance"
        _null_reasons(
            out,
            {
                f"{side}_r2": _r2_reason(n_side, side),
                f"{side}_r2_ceiling": flat,
                f"{side}_r2_ceiling_adjusted": flat if ceiling is None else groups,
                f"{side}_fraction_of_ceiling": "R2 or its ceiling is undefined or <= 0",
                f"{side}_fraction_of_adjusted_ceiling": (
                    "R2 or its adjusted ceiling is undefined or <= 0"
                ),
            },
        )
    return out


# =========================================================================== Model 2


def _class_data(
    cells: pd.DataFrame,
    split: pd.DataFrame,
    features: Sequence[str],
    key: str,
    embeddings: pd.DataFrame | None,
    n_pcs: int | None,
    max_train_cells: int | None = None,
    seed: int = 0,
) -> tuple[_Data, LabelEncoder, np.ndarray]:
    feats = _check_features(features, key)
    if CLASS_TARGET in feats:
        raise ConfigError(key, f"{CLASS_TARGET!r} is the target and cannot be a feature")
    data = _prepare(
        cells,
        split,
        feats,
        target=CLASS_TARGET,
        drop_null_target=False,
        embeddings=embeddings,
        n_pcs=n_pcs,
        max_train_cells=max_train_cells,
        seed=seed,
    )
    labels = category_strings(data.frame[CLASS_TARGET]).to_numpy()
    encoder = LabelEncoder().fit(labels)
    return data, encoder, encoder.transform(labels)


def _class_cv(y_train: np.ndarray, k: int, seed: int) -> tuple[Any, str, str | None]:
    """StratifiedKFold when every training class has >= k members, else shuffled KFold.

    Returns ``(cv, kind, reason)``: no CV (``None, "none"``) with the reason when ``k`` is 0
    or when a fold would train on a single class (a class with very few training rows and
    only two classes): an accuracy of such a fold is not a classifier's.
    """
    if k == 0:
        return None, "none", _cv_reason(0, "accuracy")
    sizes = np.bincount(y_train)[np.unique(y_train)]
    if sizes.min() >= k:
        return (
            StratifiedKFold(n_splits=k, shuffle=True, random_state=seed),
            "StratifiedKFold",
            None,
        )
    cv = KFold(n_splits=k, shuffle=True, random_state=seed)
    for i, (fold_train, _) in enumerate(cv.split(y_train)):
        if np.unique(y_train[fold_train]).size < 2:
            return (
                None,
                "none",
                f"CV skipped: fold {i + 1} of {k} would train on one class (the rarest "
                f"training class has {int(sizes.min())} row(s), fewer than models.cv_folds={k})",
            )
    return cv, "KFold", None


def _one_class_reason(encoder: LabelEncoder, y: np.ndarray, train: np.ndarray) -> str | None:
    """Why a classifier of ``cell_line_id`` would be meaningless here (None if it is not)."""
    classes = [str(c) for c in encoder.classes_]
    if len(classes) < 2:
        return (
            f"only one class (cell line {classes[0] if classes else 'none'}) after filters: a "
            f"classifier of {CLASS_TARGET} needs at least 2"
        )
    in_train = np.unique(y[train])
    if in_train.size < 2:
        return (
            f"the training split holds one class (cell line {classes[int(in_train[0])]}) of the "
            f"{len(classes)} in the data: a classifier needs at least 2 to learn from"
        )
    return None


def _skipped_classifier(
    reason: str, data: _Data, encoder: LabelEncoder, k: int, extra: Mapping[str, Any]
) -> dict[str, Any]:
    """:func:`fit_rf_classifier`'s result for a classifier that is not fitted: the metrics say
    why; the tables are empty with their usual columns."""
    confusion = pd.DataFrame(index=pd.Index([], name="true", dtype=object))
    confusion.columns = pd.Index([], name="predicted", dtype=object)
    return {
        "model": None,
        "label_encoder": encoder,
        "metrics": {
            "skipped": reason,
            "classes": [str(c) for c in encoder.classes_],
            "n_classes": len(encoder.classes_),
            "n_train": data.n_train,
            "n_test": data.n_test,
            **_sample_metrics(data),
            "cv_folds": k,
            "n_missing_embeddings": data.extra["n_missing_embeddings"],
            "features": list(data.X.columns),
            **extra,
        },
        "report": pd.DataFrame(
            {
                "label": pd.Series(dtype=object),
                **{c: pd.Series(dtype=np.float64) for c in ("precision", "recall", "f1")},
                "support": pd.Series(dtype=np.int64),
            }
        ),
        "confusion": confusion,
        "importances": pd.DataFrame(
            {"feature": pd.Series(dtype=object), "importance": pd.Series(dtype=np.float64)}
        ),
        "predictions": _empty_predictions(object),
    }


def _rf_classifier(
    n_estimators: int, max_depth: int | None, seed: int, n_jobs: int, max_samples: Any
) -> Any:
    return RandomForestClassifier(
        n_estimators=n_estimators,
        max_depth=max_depth,
        max_samples=max_samples,
        random_state=seed,
        n_jobs=n_jobs,
    )


def _check_rf(n_estimators: Any, max_depth: Any) -> tuple[int, int | None]:
    n = _check_int(n_estimators, "models.rf.n_estimators", 1)
    d = None if max_depth is None else _check_int(max_depth, "models.rf.max_depth", 1)
    return n, d


def _check_max_samples(value: Any) -> int | float | None:
    """None (bootstrap n rows per tree), an int >= 1, or a fraction in (0, 1]."""
    key = "models.rf.max_samples"
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(
            key, f"must be null, an integer >= 1 or a fraction in (0, 1], got {value!r}"
        )
    if isinstance(value, Integral):
        return _check_int(value, key, 1)
    v = float(value)
    if not 0.0 < v <= 1.0:
        raise ConfigError(key, f"a fraction must lie in (0, 1], got {value!r}")
    return v


def fit_rf_classifier(
    cells: pd.DataFrame,
    split: pd.DataFrame,
    features: Sequence[str] = DEFAULT_RF_FEATURES,
    n_estimators: int = 100,
    max_depth: int | None = None,
    seed: int = 0,
    cv_folds: int = 5,
    n_jobs: int = 1,
    embeddings: pd.DataFrame | None = None,
    n_pcs: int | None = None,
    max_samples: int | float | None = None,
    max_train_cells: int | None = None,
) -> dict[str, Any]:
    """Model 2: RandomForestClassifier predicting ``cell_line_id`` (LabelEncoder classes).

    Pipeline: one-hot for categorical features, median imputation for numeric ones (nulls
    such as a missing ``delta_mean`` are imputed from the training rows), then the forest.
    With ``embeddings`` (``cell_id`` + ``pc1..pcK``), the first ``n_pcs`` PCs (all if
    None) are added; cells without an embedding row get imputed PCs. ``max_samples``
    (RandomForest's: rows drawn per tree, an int capped at the training size or a fraction)
    bounds the cost per tree on large tables; None = seed 000's setting (all rows).
    ``max_train_cells``: the forest trains on at most this many training rows, a sample
    stratified by cell line (see :func:`fit_ridge`; ``n_train`` is then the sample and the
    metrics add ``n_train_sampled``, ``n_train_total``, ``train_sample``).

    Returns a dict:

    * ``metrics``: ``train_accuracy, test_accuracy, gap, cv_accuracy_mean,
      cv_accuracy_std, cv_accuracy_folds, cv_kind, cv_folds, n_train, n_test, n_classes,
      n_missing_embeddings, features``;
    * ``report``: per-class ``label, precision, recall, f1, support`` on the test split,
      then ``macro avg`` and ``weighted avg`` rows (zero_division=0);
    * ``confusion``: test-split counts, index = true label (``true``), columns =
      predicted label (``predicted``), all classes in LabelEncoder order;
    * ``importances``: ``feature, importance`` sorted descending (impurity-based);
    * ``predictions``: ``cell_id, split, y_true, y_pred`` (label strings);
    * ``model`` (fitted Pipeline), ``label_encoder``.

    With a single class in the training split (e.g. one cell line left after the filters)
    nothing is fitted: ``metrics`` is ``{"skipped": reason, "classes", "n_classes",
    "n_train", "n_test", ...}``, ``model`` is None and the tables are empty. When a CV fold
    would train on one class, CV is skipped (``cv_kind`` "none") and
    ``metrics["null_reasons"]`` says why.
    """
    n_estimators, max_depth = _check_rf(n_estimators, max_depth)
    max_samples = _check_max_samples(max_samples)
    seed = _check_int(seed, "models.seed", 0)
    n_jobs = _check_int(n_jobs, "models.n_jobs", 1)
    max_train_cells = _check_max_train_cells(max_train_cells)
    _check_cv_folds(cv_folds)
    data, encoder, y = _class_data(
        cells, split, features, "models.rf.features", embeddings, n_pcs, max_train_cells, seed
    )
    k = _check_cv_folds(cv_folds, data.n_train)
    if isinstance(max_samples, int):
        max_samples = min(max_samples, data.n_train)
    tr, te = data.train, data.is_test
    skip = _one_class_reason(encoder, y, tr)
    if skip is not None:
        extra = {"n_estimators": n_estimators, "max_depth": max_depth, "max_samples": max_samples}
        return _skipped_classifier(skip, data, encoder, k, extra)
    model = Pipeline(
        [
            ("pre", _tabular_preprocessor(data.categorical, data.numeric, scale=False)),
            ("rf", _rf_classifier(n_estimators, max_depth, seed, n_jobs, max_samples)),
        ]
    )
    cv, cv_kind, cv_why = _class_cv(y[tr], k, seed)
    cv_mean, cv_std, cv_scores = _cv(model, data.X.loc[tr], y[tr], cv, "accuracy", 1)
    model.fit(data.X.loc[tr], y[tr])
    pred = model.predict(data.X)

    classes = [str(c) for c in encoder.classes_]
    all_codes = np.arange(len(classes))
    train_acc = float(accuracy_score(y[tr], pred[tr]))
    test_acc = float(accuracy_score(y[te], pred[te]))
    report = _classification_table(y[te], pred[te], all_codes, classes)
    cm = pd.DataFrame(
        confusion_matrix(y[te], pred[te], labels=all_codes),
        index=pd.Index(classes, name="true"),
        columns=pd.Index(classes, name="predicted"),
    )
    names = [str(n) for n in model.named_steps["pre"].get_feature_names_out()]
    importances = (
        pd.DataFrame({"feature": names, "importance": model.named_steps["rf"].feature_importances_})
        .sort_values(["importance", "feature"], ascending=[False, True], kind="stable")
        .reset_index(drop=True)
    )
    metrics = {
        "train_accuracy": train_acc,
        "test_accuracy": test_acc,
        "gap": train_acc - test_acc,
        "cv_accuracy_mean": cv_mean,
        "cv_accuracy_std": cv_std,
        "cv_accuracy_folds": cv_scores,
        "cv_kind": cv_kind,
        "cv_folds": k,
        "n_train": data.n_train,
        "n_test": data.n_test,
        **_sample_metrics(data),
        "n_classes": len(classes),
        "n_missing_embeddings": data.extra["n_missing_embeddings"],
        "features": list(data.X.columns),
        "n_estimators": n_estimators,
        "max_depth": max_depth,
        "max_samples": max_samples,
    }
    cv_note = cv_why or _cv_reason(k, "accuracy")
    _null_reasons(metrics, {"cv_accuracy_mean": cv_note, "cv_accuracy_std": cv_note})
    labels = encoder.inverse_transform
    return {
        "model": model,
        "label_encoder": encoder,
        "metrics": metrics,
        "report": report,
        "confusion": cm,
        "importances": importances,
        "predictions": _predictions(data, labels(y), labels(pred)),
    }


def _classification_table(
    y_true: np.ndarray, y_pred: np.ndarray, codes: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=codes, zero_division=0)
    rows = pd.DataFrame({"label": classes, "precision": p, "recall": r, "f1": f, "support": s})
    avgs = []
    for avg in ("macro", "weighted"):
        ap, ar, af, _ = precision_recall_fscore_support(
            y_true, y_pred, labels=codes, average=avg, zero_division=0
        )
        avgs.append(
            {
                "label": f"{avg} avg",
                "precision": ap,
                "recall": ar,
                "f1": af,
                "support": int(s.sum()),
            }
        )
    out = pd.concat([rows, pd.DataFrame(avgs)], ignore_index=True)
    out["support"] = out["support"].astype(np.int64)
    return out


def fit_classifier_baselines(
    cells: pd.DataFrame,
    split: pd.DataFrame,
    features: Sequence[str] = DEFAULT_RF_FEATURES,
    models: Sequence[str] = BASELINE_MODELS,
    seed: int = 0,
    cv_folds: int = 5,
    n_jobs: int = 1,
    n_estimators: int = 100,
    max_depth: int | None = None,
    embeddings: pd.DataFrame | None = None,
    n_pcs: int | None = None,
    max_samples: int | float | None = None,
    max_train_cells: int | None = None,
) -> pd.DataFrame:
    """Seed 000's next step: simpler classifiers on the same features, split and CV folds.

    * ``majority_class``: DummyClassifier(most_frequent), the floor;
    * ``logistic_regression``: one-hot + z-scored numbers, LogisticRegression(lbfgs,
      max_iter=:data:`LOGREG_MAX_ITER`);
    * ``linear_svm``: same inputs, LinearSVC(max_iter=:data:`SVM_MAX_ITER`);
    * ``random_forest``: exactly :func:`fit_rf_classifier`'s pipeline (same
      ``n_estimators``, ``max_depth``, ``max_samples``, seed).

    Returns one row per model: ``model, train_acc, test_acc, gap, cv_acc_mean,
    cv_acc_std, cv_kind, converged, note`` (``converged``: the final fit stopped before its
    iteration cap; None for non-iterative models; ``note``: why values are null, empty when
    none is). With a single class in the training split nothing is fitted: every row has
    null metrics and ``note`` "skipped: <reason>".
    """
    n_estimators, max_depth = _check_rf(n_estimators, max_depth)
    max_samples = _check_max_samples(max_samples)
    seed = _check_int(seed, "models.seed", 0)
    n_jobs = _check_int(n_jobs, "models.n_jobs", 1)
    chosen = _check_features(models, "models.baselines.models", BASELINE_MODELS)
    max_train_cells = _check_max_train_cells(max_train_cells)
    _check_cv_folds(cv_folds)
    data, encoder, y = _class_data(
        cells, split, features, "models.rf.features", embeddings, n_pcs, max_train_cells, seed
    )
    k = _check_cv_folds(cv_folds, data.n_train)
    if isinstance(max_samples, int):
        max_samples = min(max_samples, data.n_train)
    tr, te = data.train, data.is_test
    order = [m for m in BASELINE_MODELS if m in chosen]
    skip = _one_class_reason(encoder, y, tr)
    if skip is not None:
        return pd.DataFrame(
            [
                {
                    "model": name,
                    **dict.fromkeys(BASELINE_COLUMNS[1:-1]),
                    "note": f"skipped: {skip}",
                }
                for name in order
            ],
            columns=BASELINE_COLUMNS,
        )
    cv, cv_kind, cv_why = _class_cv(y[tr], k, seed)

    def scaled(est: Any) -> Pipeline:
        pre = _tabular_preprocessor(data.categorical, data.numeric, scale=True)
        return Pipeline([("pre", pre), ("clf", est)])

    candidates = {
        "majority_class": Pipeline(
            [
                ("pre", _tabular_preprocessor(data.categorical, data.numeric, scale=False)),
                ("clf", DummyClassifier(strategy="most_frequent")),
            ]
        ),
        "logistic_regression": scaled(
            LogisticRegression(max_iter=LOGREG_MAX_ITER, random_state=seed)
        ),
        "linear_svm": scaled(LinearSVC(max_iter=SVM_MAX_ITER, random_state=seed)),
        "random_forest": Pipeline(
            [
                ("pre", _tabular_preprocessor(data.categorical, data.numeric, scale=False)),
                ("clf", _rf_classifier(n_estimators, max_depth, seed, n_jobs, max_samples)),
            ]
        ),
    }
    rows = []
    for name in order:
        est = candidates[name]
        cv_mean, cv_std, _ = _cv(est, data.X.loc[tr], y[tr], cv, "accuracy", 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(data.X.loc[tr], y[tr])
        pred = est.predict(data.X)
        train_acc = float(accuracy_score(y[tr], pred[tr]))
        test_acc = float(accuracy_score(y[te], pred[te]))
        clf = est.named_steps["clf"]
        converged: bool | None = None
        if name in ("logistic_regression", "linear_svm"):
            cap = LOGREG_MAX_ITER if name == "logistic_regression" else SVM_MAX_ITER
            converged = bool(np.max(clf.n_iter_) < cap)
        rows.append(
            {
                "model": name,
                "train_acc": train_acc,
                "test_acc": test_acc,
                "gap": train_acc - test_acc,
                "cv_acc_mean": cv_mean,
                "cv_acc_std": cv_std,
                "cv_kind": cv_kind,
                "converged": converged,
                "note": "" if cv_mean is not None else (cv_why or _cv_reason(k, "accuracy")),
            }
        )
    return pd.DataFrame(rows, columns=BASELINE_COLUMNS)


# =========================================================================== seed 001


def _check_grid(grid: Any) -> dict[str, list[Any]]:
    key = "models.rf_regressor.grid"
    if not isinstance(grid, Mapping) or not grid:
        raise ConfigError(key, f"must be a non-empty mapping of parameter -> values, got {grid!r}")
    valid = set(RandomForestRegressor().get_params()) - {"random_state", "n_jobs", "verbose"}
    out: dict[str, list[Any]] = {}
    for name, values in grid.items():
        if name not in valid:
            raise ConfigError(key, f"unknown parameter {name!r}; allowed: {sorted(valid)}")
        if isinstance(values, str) or not isinstance(values, Sequence) or len(values) == 0:
            raise ConfigError(key, f"{name!r} must be a non-empty list, got {values!r}")
        out[str(name)] = list(values)
    return out


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

    ``grid`` maps RandomForestRegressor parameters to candidate lists; default
    :data:`DEFAULT_RF_GRID` (``n_estimators [50, 100]``, ``max_depth [None, 8]``,
    ``min_samples_leaf [1, 5]``). The search runs on the training split only with
    ``KFold(cv_folds, shuffle=True, random_state=seed)``, scoring RMSE; the best candidate
    is refitted on the whole training split. Rows with null ``delta_mean`` are left out.
    ``n_jobs`` parallelises the search (each forest uses one core). ``max_train_cells``:
    the search and refit see at most this many training rows, stratified by cell line
    (see :func:`fit_ridge`).

    Returns a dict: ``best_params`` (plain dict), ``metrics`` (``train_rmse, test_rmse,
    cv_rmse, cv_rmse_std, train_r2, test_r2, cv_folds, n_candidates, n_train, n_test,
    n_excluded_null_target, features, best_params``), ``cv_results`` (one row per
    candidate: its parameters, ``mean_cv_rmse, std_cv_rmse, rank``), ``predictions``
    (``cell_id, split, y_true, y_pred``) and ``model`` (refitted best Pipeline). Too few rows
    with a ``delta_mean`` (no control cells): nothing is fitted, ``metrics`` is ``{"skipped":
    reason, ...}``, ``model`` and ``best_params`` are None and the tables are empty.
    """
    feats = _check_features(features, "models.rf_regressor.features")
    if TARGET in feats:
        raise ConfigError("models.rf_regressor.features", f"{TARGET!r} is the target")
    if {"mean_log_norm", "control_mean"} <= set(feats):
        raise ConfigError(
            "models.rf_regressor.features",
            "mean_log_norm and control_mean together determine delta_mean (target leak)",
        )
    param_grid = _check_grid(DEFAULT_RF_GRID if grid is None else grid)
    seed = _check_int(seed, "models.seed", 0)
    n_jobs = _check_int(n_jobs, "models.n_jobs", 1)
    max_train_cells = _check_max_train_cells(max_train_cells)
    _check_cv_folds(cv_folds, allow_zero=False)
    try:
        data = _prepare(
            cells,
            split,
            feats,
            target=TARGET,
            drop_null_target=True,
            embeddings=embeddings,
            n_pcs=n_pcs,
            max_train_cells=max_train_cells,
            seed=seed,
        )
    except SkipModel as skip:
        return {
            "model": None,
            "best_params": None,
            "metrics": {"skipped": skip.reason, **skip.counts, "features": feats},
            "cv_results": pd.DataFrame(
                {
                    **{p: pd.Series(dtype=object) for p in param_grid},
                    "mean_cv_rmse": pd.Series(dtype=np.float64),
                    "std_cv_rmse": pd.Series(dtype=np.float64),
                    "rank": pd.Series(dtype=np.int64),
                }
            ),
            "predictions": _empty_predictions(np.float64),
        }
    k = _check_cv_folds(cv_folds, data.n_train, allow_zero=False)
    y = data.frame[TARGET].to_numpy(dtype=np.float64)
    tr, te = data.train, data.is_test
    pipe = Pipeline(
        [
            ("pre", _tabular_preprocessor(data.categorical, data.numeric, scale=False)),
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
    best_params = {p.removeprefix("rf__"): _json_value(v) for p, v in search.best_params_.items()}
    res = search.cv_results_
    # One column per tuned parameter; object dtype keeps None (e.g. max_depth) as None.
    cv_table = pd.DataFrame(
        {
            p: pd.Series([_json_value(ps[f"rf__{p}"]) for ps in res["params"]], dtype=object)
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
        "cv_rmse": _json_number(-search.best_score_),
        "cv_rmse_std": _json_number(res["std_test_score"][i]),
        "train_r2": _json_number(r2_score(y[tr], pred[tr])),
        "test_r2": _json_number(r2_score(y[te], pred[te])) if data.n_test > 1 else None,
        "cv_folds": k,
        "n_candidates": len(res["params"]),
        "n_train": data.n_train,
        "n_test": data.n_test,
        **_sample_metrics(data),
        "n_excluded_null_target": data.n_excluded,
        "features": list(data.X.columns),
        "best_params": best_params,
    }
    _null_reasons(
        metrics,
        {
            "train_r2": _r2_reason(data.n_train, "train"),
            "test_r2": _r2_reason(data.n_test, "test"),
            "cv_rmse": _cv_reason(k, "RMSE"),
            "cv_rmse_std": _cv_reason(k, "RMSE"),
        },
    )
    return {
        "model": best,
        "best_params": best_params,
        "metrics": metrics,
        "cv_results": cv_table,
        "predictions": _predictions(data, y, pred),
    }


# =========================================================================== leakage


def comparison_splits(
    cells: pd.DataFrame, group_by: str = "sample", test_size: float = 0.2, seed: int = 0
) -> dict[str, pd.DataFrame | str]:
    """The random split and the split grouped by ``group_by`` (``"sample"`` or ``"plate"``).

    A grouped split needs at least 2 groups; with one (e.g. the filters kept a single well)
    its entry is the reason instead of a table, and :func:`split_comparison` reports its
    rows as skipped rather than stopping the whole comparison.
    """
    if group_by not in ("sample", "plate"):
        raise ConfigError(
            "models.grouped_split_by",
            f"grouped split must be 'sample' or 'plate', got {group_by!r}",
        )
    out: dict[str, pd.DataFrame | str] = {"random": make_split(cells, "random", test_size, seed)}
    require_columns(cells, [group_by])
    n_groups = int(cells[group_by].nunique(dropna=True))
    if n_groups < 2:
        out[group_by] = (
            f"a split grouped by {group_by!r} needs at least 2 distinct values; the cells "
            f"have {n_groups}"
        )
    else:
        out[group_by] = make_split(cells, group_by, test_size, seed)
    return out


def split_comparison(
    cells: pd.DataFrame,
    splits: Mapping[str, pd.DataFrame] | None = None,
    *,
    group_by: str = "plate",
    test_size: float = 0.2,
    seed: int = 0,
    ridge_features: Sequence[str] = DEFAULT_RIDGE_FEATURES,
    alpha: float = 1.0,
    rf_features: Sequence[str] = DEFAULT_RF_FEATURES,
    n_estimators: int = 100,
    max_depth: int | None = None,
    cv_folds: int = 0,
    n_jobs: int = 1,
    embeddings: pd.DataFrame | None = None,
    n_pcs: int | None = None,
    max_samples: int | float | None = None,
    max_train_cells: int | None = None,
) -> pd.DataFrame:
    """Ridge (R2) and the RF classifier (accuracy) on several splits, one row each.

    ``splits`` maps a name to a split table; default: ``{"random": random 80/20,
    group_by: grouped split}`` built with :func:`make_split` (``group_by`` is "sample"
    or "plate"; see :func:`comparison_splits`; a split given as a string is that split's
    skip reason). Columns: ``split, model, metric, train, test, gap`` (train - test;
    a large gap, or a drop in ``test`` from the random to the grouped split, means the
    random split leaks), ``cv_mean, cv_std, n_train, n_test, test_r2_ceiling`` (Ridge
    rows only, see :func:`ridge_fraction_of_ceiling`), ``note`` (why a row's values are
    null: "skipped: <reason>" for a model or split that was not fitted; empty otherwise).
    """
    if splits is None:
        splits = comparison_splits(cells, group_by, test_size, seed)
    elif not isinstance(splits, Mapping) or not splits:
        raise ConfigError(
            "models.grouped_split_by", "splits must be a non-empty mapping name -> split table"
        )
    rows = []
    for name, split in splits.items():
        if isinstance(split, str):
            for model, metric in (("ridge", "r2"), ("rf_classifier", "accuracy")):
                rows.append(_skipped_row(name, model, metric, split))
            continue
        ridge = fit_ridge(
            cells, split, alpha, ridge_features, cv_folds, seed, n_jobs, max_train_cells
        )
        m = ridge.metrics
        if "skipped" in m:
            rows.append(_skipped_row(name, "ridge", "r2", m["skipped"], m))
        else:
            ceiling = ridge_fraction_of_ceiling(ridge, cells)
            rows.append(
                _comparison_row(
                    name,
                    "ridge",
                    "r2",
                    m["train_r2"],
                    m["test_r2"],
                    m["cv_r2_mean"],
                    m["cv_r2_std"],
                    m["n_train"],
                    m["n_test"],
                    ceiling["test_r2_ceiling"],
                    _note(m, ceiling, keys=("train_r2", "test_r2", "test_r2_ceiling")),
                )
            )
        rf = fit_rf_classifier(
            cells,
            split,
            rf_features,
            n_estimators,
            max_depth,
            seed,
            cv_folds,
            n_jobs,
            embeddings,
            n_pcs,
            max_samples,
            max_train_cells,
        )
        m = rf["metrics"]
        if "skipped" in m:
            rows.append(_skipped_row(name, "rf_classifier", "accuracy", m["skipped"], m))
            continue
        rows.append(
            _comparison_row(
                name,
                "rf_classifier",
                "accuracy",
                m["train_accuracy"],
                m["test_accuracy"],
                m["cv_accuracy_mean"],
                m["cv_accuracy_std"],
                m["n_train"],
                m["n_test"],
                None,
            )
        )
    return pd.DataFrame(rows, columns=COMPARISON_COLUMNS)


COMPARISON_COLUMNS = [
    "split",
    "model",
    "metric",
    "train",
    "test",
    "gap",
    "cv_mean",
    "cv_std",
    "n_train",
    "n_test",
    "test_r2_ceiling",
    "note",
]
"""Columns of ``results/models/split_comparison.csv``."""


def _note(*parts: Mapping[str, Any], keys: Sequence[str] | None = None) -> str:
    """The null reasons of ``keys`` (all when None) in metric dicts, as one "key: reason; ..." line."""
    out = [
        f"{k}: {why}"
        for part in parts
        for k, why in part.get("null_reasons", {}).items()
        if keys is None or k in keys
    ]
    return "; ".join(out)


def _skipped_row(
    split: str, model: str, metric: str, reason: str, counts: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    row = _comparison_row(split, model, metric, None, None, None, None, None, None, None)
    row.update(
        n_train=(counts or {}).get("n_train"),
        n_test=(counts or {}).get("n_test"),
        note=f"skipped: {reason}",
    )
    return row


def _comparison_row(
    split: str,
    model: str,
    metric: str,
    train: float | None,
    test: float | None,
    cv_mean: float | None,
    cv_std: float | None,
    n_train: int | None,
    n_test: int | None,
    ceiling: float | None,
    note: str = "",
) -> dict[str, Any]:
    gap = None if train is None or test is None else train - test
    return {
        "split": split,
        "model": model,
        "metric": metric,
        "train": train,
        "test": test,
        "gap": gap,
        "cv_mean": cv_mean,
        "cv_std": cv_std,
        "n_train": n_train,
        "n_test": n_test,
        "test_r2_ceiling": ceiling,
        "note": note,
    }


# =========================================================================== persistence


def save_model(model: Any, path: str | os.PathLike[str]) -> None:
    """Pickle a fitted model (or a result dict) with joblib, atomically."""
    import joblib

    with atomic_path(path) as tmp:
        joblib.dump(model, tmp)


# =========================================================================== figures

DPI = 110
MAX_POINTS_PER_SPLIT = 20000
"""pred-vs-true scatter shows at most this many points per split (seeded subsample)."""


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig: Any, path: str | os.PathLike[str]) -> None:
    target = Path(path)
    fmt = target.suffix.lstrip(".").lower() or "png"
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format=fmt, dpi=DPI)


def plot_pred_vs_true(
    pred_df: pd.DataFrame,
    path: str | os.PathLike[str],
    target: str = TARGET,
    title: str | None = None,
) -> None:
    """Scatter of ``y_pred`` against ``y_true`` per split, with the y = x line and R2.

    ``pred_df``: ``y_true, y_pred`` and optionally ``split`` (e.g.
    ``RidgeResult.predictions``). Large splits are subsampled (seeded) to
    :data:`MAX_POINTS_PER_SPLIT` points; R2 uses every row. Format from the suffix.
    """
    require_columns(pred_df, ["y_true", "y_pred"], "predictions table")
    fig = _new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    groups = (
        sorted(
            ((str(s), g) for s, g in pred_df.groupby("split", sort=True)),
            key=lambda item: (item[0] != "train", item[0] != "test", item[0]),
        )
        if "split" in pred_df.columns
        else [("all", pred_df)]
    )
    rng = np.random.default_rng(0)
    colors = {"train": "tab:blue", "test": "tab:orange"}
    lo, hi = np.inf, -np.inf
    for name, g in groups:
        yt = g["y_true"].to_numpy(dtype=np.float64)
        yp = g["y_pred"].to_numpy(dtype=np.float64)
        if len(yt) == 0:
            continue
        r2 = r2_score(yt, yp) if len(yt) > 1 else float("nan")
        idx = np.arange(len(yt))
        if len(idx) > MAX_POINTS_PER_SPLIT:
            idx = np.sort(rng.choice(len(idx), MAX_POINTS_PER_SPLIT, replace=False))
        shown = "" if len(idx) == len(yt) else f", {len(idx):,} of {len(yt):,} shown"
        ax.scatter(
            yt[idx],
            yp[idx],
            s=6,
            alpha=0.4,
            color=colors.get(name),
            label=f"{name} (n={len(yt):,}, R²={r2:.3f}{shown})",
            rasterized=True,
        )
        lo = min(lo, yt.min(), yp.min())
        hi = max(hi, yt.max(), yp.max())
    if np.isfinite(lo):
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, linestyle="--", label="y = x")
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"true {target}")
    ax.set_ylabel(f"predicted {target}")
    ax.set_title(title or f"Predicted vs true {target}")
    _save_figure(fig, path)


def plot_confusion(
    cm_df: pd.DataFrame, path: str | os.PathLike[str], title: str | None = None
) -> None:
    """Heat map of a confusion matrix (rows true, columns predicted, e.g. ``fit_rf_classifier``'s).

    Colours are row-normalised (recall per true class) so rare classes stay visible;
    counts are written in the cells when there are at most 20 classes.
    """
    counts = cm_df.to_numpy(dtype=np.float64)
    n_rows, n_cols = counts.shape
    size = min(max(4.5, 0.28 * max(n_rows, n_cols) + 2.5), 20.0)
    fig = _new_figure(size + 1.0, size)
    ax = fig.add_subplot()
    totals = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(im, ax=ax, label="fraction of true class")
    font = 8 if max(n_rows, n_cols) <= 20 else 6
    ax.set_xticks(np.arange(n_cols), [str(c) for c in cm_df.columns], rotation=90, fontsize=font)
    ax.set_yticks(np.arange(n_rows), [str(i) for i in cm_df.index], fontsize=font)
    if max(n_rows, n_cols) <= 20:
        for i in range(n_rows):
            for j in range(n_cols):
                ax.text(
                    j,
                    i,
                    f"{int(counts[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if frac[i, j] > 0.5 else "black",
                )
    ax.set_xlabel(str(cm_df.columns.name or "predicted"))
    ax.set_ylabel(str(cm_df.index.name or "true"))
    total = counts.sum()
    acc = np.trace(counts) / total if total > 0 and n_rows == n_cols else float("nan")
    ax.set_title(title or f"Confusion matrix (n={int(total):,}, accuracy={acc:.3f})")
    _save_figure(fig, path)


def plot_importances(
    imp_df: pd.DataFrame, path: str | os.PathLike[str], top: int = 20, title: str | None = None
) -> None:
    """Horizontal bars of the ``top`` largest ``importance`` values (``feature`` labels)."""
    require_columns(imp_df, ["feature", "importance"], "importances table")
    top = _check_int(top, "plots.top", 1)
    best = imp_df.sort_values("importance", ascending=False, kind="stable").head(top)
    fig = _new_figure(7.0, max(2.5, 0.3 * len(best) + 1.2))
    ax = fig.add_subplot()
    ax.barh(
        np.arange(len(best))[::-1], best["importance"].to_numpy(dtype=np.float64), color="tab:green"
    )
    ax.set_yticks(np.arange(len(best))[::-1], [str(f) for f in best["feature"]], fontsize=8)
    ax.set_xlabel("importance")
    ax.set_ylabel("feature")
    ax.set_title(title or f"Top {len(best)} feature importances")
    _save_figure(fig, path)
