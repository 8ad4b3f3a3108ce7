"""Leakage check: the same models on a random and a grouped split, side by side.

Cells of one well (sample) or plate share more than their condition; a random split puts
such cells on both sides, so a model can score by recognising the well. A grouped split
keeps each group on one side: a drop in test score from the random to the grouped split,
or a large train/test gap, shows the leak.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from tahoeflow.errors import ArgumentError
from tahoeflow.models.ceiling import ridge_fraction_of_ceiling
from tahoeflow.models.classification import DEFAULT_RF_FEATURES, fit_rf_classifier
from tahoeflow.models.features import make_split, require_columns
from tahoeflow.models.regression import DEFAULT_RIDGE_FEATURES, fit_ridge


def comparison_splits(
    cells: pd.DataFrame, group_by: str = "sample", test_size: float = 0.2, seed: int = 0
) -> dict[str, pd.DataFrame | str]:
    """The random split and the split grouped by ``group_by`` (``"sample"`` or ``"plate"``).

    A grouped split needs at least 2 groups; with one (e.g. the filters kept a single well)
    its entry is the reason instead of a table, and :func:`split_comparison` reports its
    rows as skipped rather than stopping the whole comparison.
    """
    if group_by not in ("sample", "plate"):
        raise ArgumentError("group_by", f"must be 'sample' or 'plate', got {group_by!r}")
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
    max_samples: int | float | None = None,
    embeddings: pd.DataFrame | None = None,
    n_pcs: int | None = None,
    cv_folds: int = 0,
    n_jobs: int = 1,
    max_train_cells: int | None = None,
    max_leaf_nodes: int | None = None,
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
        raise ArgumentError("splits", "must be a non-empty mapping name -> split table")
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
        # only the metrics are kept: one forest in memory at a time
        m = fit_rf_classifier(
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
            max_leaf_nodes,
        )["metrics"]
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
