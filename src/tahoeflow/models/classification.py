"""Model 2 (seed 000): a random forest predicting ``cell_line_id`` from per-cell features.

Inputs are drug one-hot plus ``mean_log_norm``, ``delta_mean``, ``n_genes`` (and
optionally PCs). A classifier that would be meaningless is not fitted: with one class in
the training split (one cell line left after the filters) the metrics say why and the
tables are empty. :mod:`tahoeflow.models.baselines` runs simpler classifiers on the same
inputs, split and CV folds (:func:`classifier_inputs`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import LabelEncoder

from tahoeflow.errors import ArgumentError
from tahoeflow.models import checks
from tahoeflow.models.design import CLASS_TARGET, ModelData, prepare, tabular_preprocessor
from tahoeflow.models.evaluation import (
    cross_validate,
    cv_reason,
    empty_predictions,
    null_reasons,
    predictions,
)
from tahoeflow.models.features import category_strings

DEFAULT_RF_FEATURES = ("drug", "mean_log_norm", "delta_mean", "n_genes")
"""Seed 000's Model 2 inputs: drug one-hot plus three numeric per-cell summaries."""


@dataclass
class ClassifierInputs:
    """Checked settings and the rows of one classifier fit (shared by the forest and the
    baselines, so they see the same rows, sample and CV folds)."""

    data: ModelData
    encoder: LabelEncoder
    y: np.ndarray
    k: int
    n_estimators: int
    max_depth: int | None
    max_samples: int | float | None
    seed: int
    n_jobs: int
    skip: str | None
    """Why no classifier can be fitted on these rows (None when one can)."""
    max_leaf_nodes: int | None = None
    """The leaf bound given to each tree: None when unbounded or when it cannot bind
    (:func:`~tahoeflow.models.checks.leaf_bound`)."""

    def forest(self) -> RandomForestClassifier:
        """Seed 000's forest with these settings (unfitted)."""
        return RandomForestClassifier(
            n_estimators=self.n_estimators,
            max_depth=self.max_depth,
            max_leaf_nodes=self.max_leaf_nodes,
            max_samples=self.max_samples,
            random_state=self.seed,
            n_jobs=self.n_jobs,
        )

    def cv(self) -> tuple[Any, str, str | None]:
        """The training rows' CV splitter, its kind and why there is none (see :func:`_class_cv`)."""
        return _class_cv(self.y[self.data.train], self.k, self.seed)


def classifier_inputs(
    cells: pd.DataFrame,
    split: pd.DataFrame,
    features: Sequence[str],
    n_estimators: int,
    max_depth: int | None,
    seed: int,
    cv_folds: int,
    n_jobs: int,
    embeddings: pd.DataFrame | None,
    n_pcs: int | None,
    max_samples: int | float | None,
    max_train_cells: int | None,
    max_leaf_nodes: int | None = None,
) -> ClassifierInputs:
    """Check the settings and prepare the rows of a classifier of :data:`CLASS_TARGET`.

    An int ``max_samples`` is capped at the training size; ``max_leaf_nodes`` is dropped
    where a tree's rows cannot reach it (:func:`~tahoeflow.models.checks.leaf_bound`).
    Raises ArgumentError for a bad
    setting, or for ``cv_folds`` above the training rows and ``n_pcs`` above the PCs of
    ``embeddings``.
    """
    n_estimators, max_depth = checks.check_forest(n_estimators, max_depth)
    max_samples = checks.check_max_samples(max_samples)
    max_leaf_nodes = checks.check_max_leaf_nodes(max_leaf_nodes)
    seed = checks.check_int(seed, "seed", 0)
    n_jobs = checks.check_int(n_jobs, "n_jobs", 1)
    max_train_cells = checks.check_max_train_cells(max_train_cells)
    checks.check_cv_folds(cv_folds)
    feats = checks.check_names(features, "features")
    if CLASS_TARGET in feats:
        raise ArgumentError("features", f"{CLASS_TARGET!r} is the target and cannot be a feature")
    data = prepare(
        cells, split, feats, target=CLASS_TARGET, drop_null_target=False, embeddings=embeddings,
        n_pcs=n_pcs, max_train_cells=max_train_cells, seed=seed,
    )  # fmt: skip
    labels = category_strings(data.frame[CLASS_TARGET]).to_numpy()
    encoder = LabelEncoder().fit(labels)
    y = encoder.transform(labels)
    k = checks.check_cv_folds(cv_folds, data.n_train)
    if isinstance(max_samples, int):
        max_samples = min(max_samples, data.n_train)
    skip = _one_class_reason(encoder, y, data.train)
    leaves = checks.leaf_bound(max_leaf_nodes, checks.rows_per_tree(data.n_train, max_samples))
    return ClassifierInputs(
        data, encoder, y, k, n_estimators, max_depth, max_samples, seed, n_jobs, skip, leaves
    )


def _class_cv(y_train: np.ndarray, k: int, seed: int) -> tuple[Any, str, str | None]:
    """StratifiedKFold when every training class has >= k members, else shuffled KFold.

    Returns ``(cv, kind, reason)``: no CV (``None, "none"``) with the reason when ``k`` is 0
    or when a fold would train on a single class (a class with very few training rows and
    only two classes): an accuracy of such a fold is not a classifier's.
    """
    if k == 0:
        return None, "none", cv_reason(0, "accuracy")
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


def _skipped_classifier(inp: ClassifierInputs, extra: Mapping[str, Any]) -> dict[str, Any]:
    """:func:`fit_rf_classifier`'s result for a classifier that is not fitted: the metrics say
    why; the tables are empty with their usual columns."""
    data, encoder = inp.data, inp.encoder
    confusion = pd.DataFrame(index=pd.Index([], name="true", dtype=object))
    confusion.columns = pd.Index([], name="predicted", dtype=object)
    return {
        "model": None,
        "label_encoder": encoder,
        "metrics": {
            "skipped": inp.skip,
            "classes": [str(c) for c in encoder.classes_],
            "n_classes": len(encoder.classes_),
            "n_train": data.n_train,
            "n_test": data.n_test,
            **data.sample_metrics(),
            "cv_folds": inp.k,
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
        "predictions": empty_predictions(object),
    }


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
    max_leaf_nodes: int | None = None,
) -> dict[str, Any]:
    """Model 2: RandomForestClassifier predicting ``cell_line_id`` (LabelEncoder classes).

    Pipeline: one-hot for categorical features, median imputation for numeric ones (nulls
    such as a missing ``delta_mean`` are imputed from the training rows), then the forest.
    With ``embeddings`` (``cell_id`` + ``pc1..pcK``), the first ``n_pcs`` PCs (all if
    None) are added; cells without an embedding row get imputed PCs. ``max_samples``
    (RandomForest's: rows drawn per tree, an int capped at the training size or a fraction)
    bounds the cost per tree on large tables; None = seed 000's setting (all rows).
    ``max_leaf_nodes`` bounds each tree's leaves, hence the forest's memory (at most
    ``n_estimators x (2 max_leaf_nodes - 1)`` nodes of ``64 + 8 x classes`` bytes); None =
    seed 000's unpruned trees, whose nodes grow with the rows per tree. ``max_train_cells``: at most this many training rows, stratified by cell line (as in
    :func:`~tahoeflow.models.regression.fit_ridge`).

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

    With a single class in the training split nothing is fitted: ``metrics`` is
    ``{"skipped": reason, "classes", "n_classes", "n_train", "n_test", ...}``, ``model`` is
    None and the tables are empty. When a CV fold would train on one class, CV is skipped
    (``cv_kind`` "none") and ``metrics["null_reasons"]`` says why.
    """
    inp = classifier_inputs(
        cells, split, features, n_estimators, max_depth, seed, cv_folds, n_jobs, embeddings,
        n_pcs, max_samples, max_train_cells, max_leaf_nodes,
    )  # fmt: skip
    data, encoder, y, k = inp.data, inp.encoder, inp.y, inp.k
    forest = {"n_estimators": inp.n_estimators, "max_depth": inp.max_depth,
              "max_samples": inp.max_samples, "max_leaf_nodes": inp.max_leaf_nodes}  # fmt: skip
    if inp.skip is not None:
        return _skipped_classifier(inp, forest)
    tr, te = data.train, data.is_test
    model = Pipeline(
        [
            ("pre", tabular_preprocessor(data.categorical, data.numeric, scale=False)),
            ("rf", inp.forest()),
        ]
    )
    cv, cv_kind, cv_why = inp.cv()
    cv_mean, cv_std, cv_scores = cross_validate(model, data.X.loc[tr], y[tr], cv, "accuracy", 1)
    model.fit(data.X.loc[tr], y[tr])
    pred = model.predict(data.X)

    classes = [str(c) for c in encoder.classes_]
    all_codes = np.arange(len(classes))
    train_acc = float(accuracy_score(y[tr], pred[tr]))
    test_acc = float(accuracy_score(y[te], pred[te]))
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
        **data.sample_metrics(),
        "n_classes": len(classes),
        "n_missing_embeddings": data.extra["n_missing_embeddings"],
        "features": list(data.X.columns),
        **forest,
    }
    cv_note = cv_why or cv_reason(k, "accuracy")
    null_reasons(metrics, {"cv_accuracy_mean": cv_note, "cv_accuracy_std": cv_note})
    labels = encoder.inverse_transform
    return {
        "model": model,
        "label_encoder": encoder,
        "metrics": metrics,
        "report": _classification_table(y[te], pred[te], all_codes, classes),
        "confusion": cm,
        "importances": importances,
        "predictions": predictions(data, labels(y), labels(pred)),
    }


def _classification_table(
    y_true: np.ndarray, y_pred: np.ndarray, codes: np.ndarray, classes: list[str]
) -> pd.DataFrame:
    """Per-class precision, recall, f1 and support, then the macro and weighted averages."""
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
