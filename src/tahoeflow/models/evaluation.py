"""Cross-validation scores, per-cell prediction tables and the reasons a metric is null.

Metric dicts never hold NaN: an undefined value is None and ``null_reasons[key]`` says why,
so a reader of ``metrics.json`` never has to guess.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import cross_val_score

from tahoeflow.io import json_number
from tahoeflow.models.design import ModelData


def null_reasons(metrics: dict[str, Any], reasons: Mapping[str, str]) -> dict[str, Any]:
    """Add ``null_reasons`` for the metrics in ``reasons`` that are None (only those)."""
    why = {k: r for k, r in reasons.items() if k in metrics and metrics[k] is None}
    if why:
        metrics["null_reasons"] = {**metrics.get("null_reasons", {}), **why}
    return metrics


def r2_reason(n: int, side: str) -> str:
    """Why an R2 on ``n`` rows of ``side`` is undefined."""
    if n < 2:
        return f"{n} {side} row(s): R2 needs at least 2"
    return f"R2 undefined on the {side} rows (constant target)"


def cv_reason(k: int, metric: str, why: str | None = None) -> str:
    """Why a CV ``metric`` with ``k`` folds is undefined (``why`` when the caller knows)."""
    if not k:
        return "no CV (models.cv_folds: 0)"  # the wording of the metrics files, kept as it was
    return why or f"CV {metric} undefined (a fold's score could not be computed)"


def cross_validate(
    estimator: Any, X: pd.DataFrame, y: np.ndarray, cv: Any, scoring: str, n_jobs: int
) -> tuple[float | None, float | None, list[float | None]]:
    """(mean, std, per-fold scores) of a fresh clone of ``estimator``; all None/[] when ``cv`` is None."""
    if cv is None:
        return None, None, []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        scores = cross_val_score(clone(estimator), X, y, cv=cv, scoring=scoring, n_jobs=n_jobs)
    folds = [json_number(s) for s in scores]  # a fold whose score is undefined: None, not NaN
    return json_number(np.mean(scores)), json_number(np.std(scores)), folds


def predictions(data: ModelData, y_true: Any, y_pred: Any) -> pd.DataFrame:
    """``cell_id, split, y_true, y_pred`` for every row of the fit, in table order."""
    return pd.DataFrame(
        {
            "cell_id": data.cell_ids,
            "split": np.where(data.is_test, "test", "train").astype(object),
            "y_true": np.asarray(y_true),
            "y_pred": np.asarray(y_pred),
        }
    )


def empty_predictions(y_dtype: Any) -> pd.DataFrame:
    """The predictions table of a model that was not fitted: no rows, the usual columns."""
    dt = {"cell_id": object, "split": object, "y_true": y_dtype, "y_pred": y_dtype}
    return pd.DataFrame({c: pd.Series(dtype=t) for c, t in dt.items()})
