"""Model inputs: the rows of the cells table that take part in one fit and their features.

Feature names understood by the fitters: any column of the cells table (numeric dtypes
are used as numbers, everything else as categories), ``"dose"`` (``dose_uM`` as a
category string), ``"drug_dose"`` (the drug x dose interaction as one category), and the
``pc1..pcK`` columns of an optional embeddings table. All preprocessing (one-hot encoding,
imputation, scaling) goes into the fitted pipeline, so it is refitted inside every CV fold
and nothing of the test split or of a held-out fold leaks into training.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from tahoeflow.errors import ArgumentError, InputError
from tahoeflow.models.checks import check_int
from tahoeflow.models.features import CELLS, attach_split, category_strings, require_columns
from tahoeflow.models.sampling import sample_train

TARGET = "delta_mean"
"""Regression target of Model 1 and of seed 001's forest."""

CLASS_TARGET = "cell_line_id"
"""Classification target of Model 2 and its baselines (and the strata of the training sample)."""

_PC = re.compile(r"^pc(\d+)$")


class SkipModel(Exception):  # noqa: N818 - a decision, not an error
    """A model that would be meaningless on these rows; ``reason`` says why (one line)."""

    def __init__(self, reason: str, **counts: Any) -> None:
        super().__init__(reason)
        self.reason = reason
        self.counts = counts


@dataclass
class ModelData:
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

    def sample_metrics(self) -> dict[str, Any]:
        """The training-sample counts for the metrics (empty when every row was used)."""
        return dict(self.extra.get("train_sample", {}))


def _pc_columns(embeddings: pd.DataFrame, n_pcs: int | None) -> list[str]:
    pcs = sorted(
        (c for c in embeddings.columns if isinstance(c, str) and _PC.match(c)),
        key=lambda c: int(_PC.match(c).group(1)),  # type: ignore[union-attr]
    )
    if not pcs:
        raise InputError("embeddings table", "has no pc1..pcK columns")
    if n_pcs is not None:
        n_pcs = check_int(n_pcs, "n_pcs", 1)
        if n_pcs > len(pcs):
            raise ArgumentError("n_pcs", f"{n_pcs} requested but the table has {len(pcs)}")
        pcs = pcs[:n_pcs]
    return pcs


def _with_embeddings(
    cells: pd.DataFrame, embeddings: pd.DataFrame | None, n_pcs: int | None
) -> tuple[pd.DataFrame, list[str], int]:
    """cells left-joined with the embedding PCs; (frame, pc names, cells lacking a PC row)."""
    if embeddings is None:
        if n_pcs is not None:
            raise ArgumentError("n_pcs", "set but no embeddings table was given")
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


def prepare(
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
) -> ModelData:
    """The rows and features of one fit.

    ``drop_null_target``: rows with a null (numeric) target are left out and counted, and
    too few rows left raises :class:`SkipModel` with the reason; otherwise a null target is
    an :class:`InputError`. Training rows beyond ``max_train_cells`` are subsampled by
    :func:`~tahoeflow.models.sampling.sample_train`, stratified by :data:`CLASS_TARGET`.
    """
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
    framed, is_test, sample = sample_train(framed, is_test, max_train_cells, seed, CLASS_TARGET)
    X, cat, num = _design(framed, feats)
    return ModelData(
        cell_ids=framed["cell_id"].to_numpy(),
        is_test=is_test,
        X=X,
        categorical=cat,
        numeric=num,
        frame=framed,
        n_excluded=n_excluded,
        extra={"pcs": pcs, "n_missing_embeddings": n_missing_pc, "train_sample": sample},
    )


def tabular_preprocessor(cat: list[str], num: list[str], scale: bool) -> ColumnTransformer:
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
