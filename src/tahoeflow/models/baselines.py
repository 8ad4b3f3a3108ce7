"""Seed 000's next step: simpler classifiers of ``cell_line_id`` beside the forest.

Same features, rows, training sample and CV folds as
:func:`~tahoeflow.models.classification.fit_rf_classifier`, so the table compares models
and nothing else; the majority class is the floor any classifier must beat.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.dummy import DummyClassifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from tahoeflow.models.checks import check_names
from tahoeflow.models.classification import DEFAULT_RF_FEATURES, classifier_inputs
from tahoeflow.models.design import tabular_preprocessor
from tahoeflow.models.evaluation import cross_validate, cv_reason

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


def fit_classifier_baselines(
    cells: pd.DataFrame,
    split: pd.DataFrame,
    *,
    models: Sequence[str] = BASELINE_MODELS,
    seed: int = 0,
    cv_folds: int = 5,
    n_jobs: int = 1,
    features: Sequence[str] = DEFAULT_RF_FEATURES,
    embeddings: pd.DataFrame | None = None,
    n_pcs: int | None = None,
    n_estimators: int = 100,
    max_depth: int | None = None,
    max_samples: int | float | None = None,
    max_train_cells: int | None = None,
    max_leaf_nodes: int | None = None,
) -> pd.DataFrame:
    """Simpler classifiers on the forest's features, split and CV folds, one row each.

    * ``majority_class``: DummyClassifier(most_frequent), the floor;
    * ``logistic_regression``: one-hot + z-scored numbers, LogisticRegression(lbfgs,
      max_iter=:data:`LOGREG_MAX_ITER`);
    * ``linear_svm``: same inputs, LinearSVC(max_iter=:data:`SVM_MAX_ITER`);
    * ``random_forest``: exactly the forest of
      :func:`~tahoeflow.models.classification.fit_rf_classifier` (same settings and seed).

    Columns: :data:`BASELINE_COLUMNS` (``converged``: the final fit stopped before its
    iteration cap, None for non-iterative models; ``note``: why values are null, empty when
    none is). With a single class in the training split nothing is fitted: every row has
    null metrics and ``note`` "skipped: <reason>".
    """
    chosen = check_names(models, "models", BASELINE_MODELS)
    inp = classifier_inputs(
        cells, split, features, n_estimators, max_depth, seed, cv_folds, n_jobs, embeddings,
        n_pcs, max_samples, max_train_cells, max_leaf_nodes,
    )  # fmt: skip
    data, y, k = inp.data, inp.y, inp.k
    tr, te = data.train, data.is_test
    order = [m for m in BASELINE_MODELS if m in chosen]
    if inp.skip is not None:
        return pd.DataFrame(
            [
                {"model": name, **dict.fromkeys(BASELINE_COLUMNS[1:-1]),
                 "note": f"skipped: {inp.skip}"}
                for name in order
            ],
            columns=BASELINE_COLUMNS,
        )  # fmt: skip
    cv, cv_kind, cv_why = inp.cv()

    def pipeline(est: Any, scale: bool) -> Pipeline:
        pre = tabular_preprocessor(data.categorical, data.numeric, scale=scale)
        return Pipeline([("pre", pre), ("clf", est)])

    candidates = {
        "majority_class": lambda: pipeline(DummyClassifier(strategy="most_frequent"), False),
        "logistic_regression": lambda: pipeline(
            LogisticRegression(max_iter=LOGREG_MAX_ITER, random_state=inp.seed), True
        ),
        "linear_svm": lambda: pipeline(
            LinearSVC(max_iter=SVM_MAX_ITER, random_state=inp.seed), True
        ),
        "random_forest": lambda: pipeline(inp.forest(), False),
    }
    rows = []
    for name in order:
        est = candidates[name]()
        cv_mean, cv_std, _ = cross_validate(est, data.X.loc[tr], y[tr], cv, "accuracy", 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            est.fit(data.X.loc[tr], y[tr])
        pred = est.predict(data.X)
        train_acc = float(accuracy_score(y[tr], pred[tr]))
        test_acc = float(accuracy_score(y[te], pred[te]))
        converged: bool | None = None
        if name in ("logistic_regression", "linear_svm"):
            cap = LOGREG_MAX_ITER if name == "logistic_regression" else SVM_MAX_ITER
            converged = bool(np.max(est.named_steps["clf"].n_iter_) < cap)
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
                "note": "" if cv_mean is not None else (cv_why or cv_reason(k, "accuracy")),
            }
        )
    return pd.DataFrame(rows, columns=BASELINE_COLUMNS)
