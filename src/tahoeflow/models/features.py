"""Train/test splits, the tabular feature transformer and its matrix files, for the per-cell table.

Reproduces the preprocessing of seed project 000 (mean imputation, z-scoring and a
degree-2 polynomial expansion of numeric summaries; one-hot encoding of categorical
metadata) without its leak: the transformer is fitted on the training split only.

Inputs are the merged per-cell table (``cells.parquet``: one row per cell, ``cell_id``
unique) and a split table (``cell_id``, ``split`` in {"train", "test"}) made by
:func:`make_split`. A fitted transformer is saved with
:func:`tahoeflow.models.persist.save_model`. Nothing here prints or touches Snakemake.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import (
    FunctionTransformer,
    OneHotEncoder,
    PolynomialFeatures,
    StandardScaler,
)

from tahoeflow.errors import ArgumentError, InputError
from tahoeflow.io import atomic_path, write_json
from tahoeflow.models.checks import check_int, check_names

SPLIT_BY = ("random", "sample", "plate")
"""Allowed values of ``split.by``."""

SPLIT_LABELS = ("train", "test")

DEFAULT_NUMERIC = ("expr_mean", "expr_std", "expr_skew", "n_genes")
"""Seed 000's numeric summaries (mean, std, skew and length of the stored counts)."""

DEFAULT_CATEGORICAL = ("cell_line_id", "drug", "moa_fine", "dose_uM")
"""Seed 000's categorical metadata plus the dose, which is one-hot encoded as a string."""

MISSING_CATEGORY = "<NA>"
"""Category string that null categorical values are mapped to before one-hot encoding."""

SPARSE_THRESHOLD = 0.3
"""The transformer returns CSR when the overall density of its output is below this."""

CELLS = "cells table"
SPLIT = "split table"


# --------------------------------------------------------------------------- helpers


def require_columns(frame: pd.DataFrame, columns: Sequence[str], where: str = CELLS) -> None:
    """Raise :class:`InputError` naming every column of ``columns`` missing from ``frame``."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise InputError(where, f"missing column(s) {missing}; has {list(frame.columns)}")


def category_strings(values: pd.Series | np.ndarray | Sequence[Any]) -> pd.Series:
    """Map any column to the category strings that are one-hot encoded.

    Strings are kept; numbers are written with ``%g`` (``0.05`` -> ``"0.05"``, ``5.0`` ->
    ``"5"``, so float noise below 6 significant digits does not create new categories);
    nulls become :data:`MISSING_CATEGORY`. Vectorised: only the distinct values are
    formatted, so it is cheap on millions of rows.
    """
    s = values if isinstance(values, pd.Series) else pd.Series(np.asarray(values, dtype=object))
    codes, uniques = pd.factorize(s, use_na_sentinel=True)
    labels = np.array([_format_category(u) for u in uniques] + [MISSING_CATEGORY], dtype=object)
    # code -1 (null) picks the last label.
    return pd.Series(labels[codes], index=s.index, dtype=object)


def _format_category(value: Any) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        return f"{float(value):g}"
    return str(value)


def to_category_strings(X: pd.DataFrame | np.ndarray) -> np.ndarray:
    """Column-wise :func:`category_strings` of a 2-D input; an object array (for sklearn)."""
    frame = X if isinstance(X, pd.DataFrame) else pd.DataFrame(np.asarray(X, dtype=object))
    if frame.shape[1] == 0:
        return np.empty((len(frame), 0), dtype=object)
    cols = [category_strings(frame.iloc[:, j]).to_numpy() for j in range(frame.shape[1])]
    return np.column_stack(cols)


def seeded_hash(values: pd.Series, seed: int) -> np.ndarray:
    """uint64 hash of each value, keyed by ``seed`` (independent of row order)."""
    key = hashlib.sha256(f"tahoeflow-split-{seed}".encode()).hexdigest()[:16]
    strings = values.astype(str)
    return pd.util.hash_pandas_object(strings, index=False, hash_key=key).to_numpy()


def count_test(test_size: float, n: int) -> int:
    """ceil(test_size * n) (as sklearn does), kept within [1, n - 1] so no side is empty."""
    return min(max(math.ceil(test_size * n), 1), n - 1)


# --------------------------------------------------------------------------- splits


def check_split_args(by: str, test_size: float, seed: int) -> int:
    """ArgumentError for an unknown ``by``, a ``test_size`` outside (0, 1) or a bad seed;
    returns the seed."""
    if by not in SPLIT_BY:
        raise ArgumentError("by", f"must be one of {list(SPLIT_BY)}, got {by!r}")
    if (
        isinstance(test_size, bool)
        or not isinstance(test_size, Real)
        or not math.isfinite(float(test_size))
        or not 0.0 < float(test_size) < 1.0
    ):
        raise ArgumentError("test_size", f"must be a number in (0, 1), got {test_size!r}")
    return check_int(seed, "seed", 0)


def make_split(
    cells: pd.DataFrame, by: str = "random", test_size: float = 0.2, seed: int = 0
) -> pd.DataFrame:
    """Assign every cell to ``"train"`` or ``"test"``; returns ``DataFrame[cell_id, split]``.

    * ``by="random"``: a seeded permutation of the cells; the first
      ``ceil(test_size * n)`` go to test.
    * ``by="sample"`` / ``by="plate"``: like sklearn's ``GroupShuffleSplit``: a seeded
      permutation of the distinct values of that column; the first
      ``ceil(test_size * n_groups)`` *groups* go to test, so every group lies wholly on one
      side (the cell fraction in test then only approximates ``test_size``).

    The permutation orders items by a seed-keyed 64-bit hash of ``cell_id`` (or of the
    group value), so the result depends only on the ids and the seed, not on row order,
    and needs no Python loop over cells. Counts are clamped so neither side is empty.
    Rows come back in the order of ``cells``.

    Raises ArgumentError for bad settings or a grouped split with fewer than 2 groups;
    InputError for missing columns, null or duplicate ids, null group values, or fewer
    than 2 cells.
    """
    seed = check_split_args(by, test_size, seed)
    require_columns(cells, ["cell_id"] if by == "random" else ["cell_id", by])
    ids = cells["cell_id"]
    _check_ids(ids, CELLS)
    n = len(cells)
    if n < 2:
        raise InputError(CELLS, f"need at least 2 cells to split, got {n}")

    if by == "random":
        h = seeded_hash(ids, seed)
        order = np.argsort(h, kind="stable")
        is_test = np.zeros(n, dtype=bool)
        is_test[order[: count_test(float(test_size), n)]] = True
    else:
        groups = cells[by]
        if groups.isna().any():
            row = int(np.flatnonzero(groups.isna().to_numpy())[0])
            raise InputError(CELLS, f"null {by!r} value (grouped split needs it)", row=row)
        codes, uniques = pd.factorize(groups.astype(str), sort=True)
        n_groups = len(uniques)
        if n_groups < 2:
            raise ArgumentError(
                "by", f"a split by {by!r} needs at least 2 distinct values; found {n_groups}"
            )
        h = seeded_hash(pd.Series(np.asarray(uniques, dtype=object)), seed)
        order = np.argsort(h, kind="stable")
        test_group = np.zeros(n_groups, dtype=bool)
        test_group[order[: count_test(float(test_size), n_groups)]] = True
        is_test = test_group[codes]

    return pd.DataFrame(
        {
            "cell_id": ids.to_numpy(),
            "split": np.where(is_test, "test", "train").astype(object),
        }
    )


def _check_ids(ids: pd.Series, where: str) -> None:
    if ids.isna().any():
        row = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise InputError(where, "null cell_id", row=row)
    dup = ids.duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise InputError(where, f"duplicate cell_id {ids.iloc[row]!r}", row=row)


def attach_split(cells: pd.DataFrame, split: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``cells`` with a ``split`` column looked up by ``cell_id``.

    Every cell must have exactly one entry in ``split`` (extra entries are ignored) and
    both sides must be non-empty; otherwise InputError.
    """
    require_columns(cells, ["cell_id"], CELLS)
    require_columns(split, ["cell_id", "split"], SPLIT)
    _check_ids(cells["cell_id"], CELLS)
    _check_ids(split["cell_id"], SPLIT)
    bad = ~split["split"].isin(SPLIT_LABELS)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            SPLIT, f"split must be 'train' or 'test', got {split['split'].iloc[row]!r}", row=row
        )
    lookup = pd.Series(split["split"].to_numpy(), index=split["cell_id"].to_numpy())
    labels = cells["cell_id"].map(lookup)
    if labels.isna().any():
        missing = labels.isna().to_numpy()
        first = cells["cell_id"].iloc[int(np.flatnonzero(missing)[0])]
        raise InputError(SPLIT, f"{int(missing.sum())} cell(s) have no split entry, e.g. {first!r}")
    out = cells.copy()
    out["split"] = labels.astype(object).to_numpy()
    for side in SPLIT_LABELS:
        if not (out["split"] == side).any():
            raise InputError(SPLIT, f"no cell of this table is in {side!r}")
    return out


def split_frames(cells: pd.DataFrame, split: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train rows, test rows) of ``cells``, each in the original row order.

    These are exactly the rows (and order) of ``X_train`` / ``X_test`` from
    :func:`fit_transform_features`; use their ``cell_id`` for :func:`save_matrix`.
    """
    framed = attach_split(cells, split)
    is_test = (framed["split"] == "test").to_numpy()
    return cells.loc[~is_test].copy(), cells.loc[is_test].copy()


# --------------------------------------------------------------------------- transformer


def build_transformer(
    numeric: Sequence[str] = DEFAULT_NUMERIC,
    categorical: Sequence[str] = DEFAULT_CATEGORICAL,
    poly_degree: int = 2,
) -> ColumnTransformer:
    """Unfitted ColumnTransformer: seed 000's preprocessing.

    * numeric -> ``SimpleImputer(mean)`` -> ``StandardScaler`` ->
      ``PolynomialFeatures(poly_degree, include_bias=False)`` (dense block);
    * categorical -> :func:`to_category_strings` (so ``dose_uM`` is a category such as
      ``"0.05"``; nulls become ``"<NA>"``) -> ``OneHotEncoder(handle_unknown="ignore",
      sparse_output=True)``; an unseen category gives an all-zero block.

    Output is CSR when its overall density is below :data:`SPARSE_THRESHOLD` (i.e. when the
    one-hot part is wide), dense otherwise. Fit it on the training split only.
    """
    num = check_names(numeric, "numeric", allow_empty=True)
    cat = check_names(categorical, "categorical", allow_empty=True)
    both = sorted(set(num) & set(cat))
    if both:
        raise ArgumentError("categorical", f"columns {both} are also listed as numeric")
    if not num and not cat:
        raise ArgumentError("numeric", "no numeric and no categorical feature given")
    poly_degree = check_int(poly_degree, "poly_degree", 1)

    transformers: list[tuple[str, Any, list[str]]] = []
    if num:
        numeric_pipe = Pipeline(
            [
                ("impute", SimpleImputer(strategy="mean", keep_empty_features=True)),
                ("scale", StandardScaler()),
                ("poly", PolynomialFeatures(degree=int(poly_degree), include_bias=False)),
            ]
        )
        transformers.append(("num", numeric_pipe, num))
    if cat:
        categorical_pipe = Pipeline(
            [
                (
                    "as_str",
                    FunctionTransformer(to_category_strings, feature_names_out="one-to-one"),
                ),
                ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=True)),
            ]
        )
        transformers.append(("cat", categorical_pipe, cat))
    return ColumnTransformer(
        transformers,
        remainder="drop",
        sparse_threshold=SPARSE_THRESHOLD,
        verbose_feature_names_out=True,
    )


def _as_matrix(X: Any) -> np.ndarray | sp.csr_matrix:
    if sp.issparse(X):
        return sp.csr_matrix(X, dtype=np.float64)
    return np.asarray(X, dtype=np.float64)


def fit_transform_features(
    cells: pd.DataFrame,
    split: pd.DataFrame,
    numeric: Sequence[str] = DEFAULT_NUMERIC,
    categorical: Sequence[str] = DEFAULT_CATEGORICAL,
    poly_degree: int = 2,
) -> tuple[ColumnTransformer, np.ndarray | sp.csr_matrix, np.ndarray | sp.csr_matrix, list[str]]:
    """Fit :func:`build_transformer` on the training cells; transform train and test.

    Returns ``(fitted transformer, X_train, X_test, feature_names)``. Rows of ``X_train``
    and ``X_test`` follow the order of ``cells`` (see :func:`split_frames`). Matrices are
    float64, CSR when sparse. Feature names look like ``num__expr_mean``,
    ``num__expr_mean n_genes`` (a product term), ``cat__drug_Aliskiren``.
    """
    transformer = build_transformer(numeric, categorical, poly_degree)
    require_columns(cells, [*numeric, *categorical])
    train, test = split_frames(cells, split)
    cols = [*numeric, *categorical]
    X_train = _as_matrix(transformer.fit_transform(train[cols]))
    X_test = _as_matrix(transformer.transform(test[cols]))
    names = [str(n) for n in transformer.get_feature_names_out()]
    return transformer, X_train, X_test, names


# --------------------------------------------------------------------------- matrices


def matrix_names_path(path: str | os.PathLike[str]) -> Path:
    """Companion file of a matrix written by :func:`save_matrix`: ``X.npz`` -> ``X.names.json``."""
    p = Path(path)
    stem = p.name[: -len(".npz")] if p.name.endswith(".npz") else p.name
    return p.with_name(f"{stem}.names.json")


def save_matrix(
    path: str | os.PathLike[str],
    X: np.ndarray | sp.spmatrix | sp.sparray,
    names: Sequence[str],
    cell_ids: Sequence[str] | pd.Series | np.ndarray,
) -> tuple[Path, Path]:
    """Write ``X`` as CSR with ``scipy.sparse.save_npz`` to ``path`` plus its labels.

    The labels go to :func:`matrix_names_path` (``{"feature_names": [...], "cell_ids":
    [...], "shape": [n_rows, n_cols]}``, compact JSON). Both writes are atomic. Returns the
    two paths. Dense input is stored as CSR too.
    """
    matrix = sp.csr_matrix(X, dtype=np.float64)
    feature_names = [str(n) for n in names]
    ids = [str(c) for c in np.asarray(cell_ids, dtype=object)]
    if len(feature_names) != matrix.shape[1]:
        raise ArgumentError("names", f"{len(feature_names)} names for {matrix.shape[1]} columns")
    if len(ids) != matrix.shape[0]:
        raise ArgumentError("cell_ids", f"{len(ids)} cell ids for {matrix.shape[0]} rows")
    target = Path(path)
    with atomic_path(target) as tmp, open(tmp, "wb") as fh:
        # A file object, so numpy does not append ".npz" to the temporary name.
        sp.save_npz(fh, matrix, compressed=True)
    labels = matrix_names_path(target)
    payload = {"feature_names": feature_names, "cell_ids": ids, "shape": list(matrix.shape)}
    write_json(payload, labels, indent=None, sort_keys=False, separators=(",", ":"))
    return target, labels


def load_matrix(path: str | os.PathLike[str]) -> tuple[sp.csr_matrix, list[str], list[str]]:
    """Read what :func:`save_matrix` wrote: ``(X as CSR, feature_names, cell_ids)``."""
    p = Path(path)
    labels = matrix_names_path(p)
    for f in (p, labels):
        if not f.is_file():
            raise InputError(f, "no such file")
    X = sp.csr_matrix(sp.load_npz(p))
    meta = json.loads(labels.read_text())
    if list(X.shape) != meta.get("shape"):
        raise InputError(labels, f"shape {meta.get('shape')} does not match the matrix {X.shape}")
    return X, list(meta["feature_names"]), list(meta["cell_ids"])
