"""How much of the R2 that any condition-only model could reach a Ridge reaches.

A model that sees only condition keys (drug, dose, cell line, plate) predicts one value
per key combination, so no such model beats the per-group means: their R2 is the ceiling,
and the Ridge's R2 divided by it says how much of the reachable signal the Ridge finds.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import r2_score

from tahoeflow.errors import ArgumentError, InputError
from tahoeflow.io import json_number
from tahoeflow.models.checks import check_names
from tahoeflow.models.evaluation import null_reasons, r2_reason
from tahoeflow.models.features import CELLS, require_columns
from tahoeflow.models.regression import RidgeResult


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
        raise ArgumentError("y_true", "contains NaN; drop those rows first")
    if isinstance(condition_keys, pd.DataFrame):
        keys = condition_keys.reset_index(drop=True)
    elif isinstance(condition_keys, pd.Series):
        keys = condition_keys.reset_index(drop=True).to_frame()
    else:
        arr = np.asarray(condition_keys, dtype=object)
        keys = pd.DataFrame(arr.reshape(len(arr), -1) if arr.ndim == 1 else arr)
    if len(keys) != len(y):
        raise ArgumentError("condition_keys", f"{len(keys)} rows for {len(y)} values")
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
        base = check_names(keys, "keys")
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
        r2 = json_number(r2_score(yt, yp)) if m.sum() > 1 else None
        ceiling = json_number(r2_ceiling(yt, key_frame.loc[m])) if m.sum() > 1 else None
        frac = r2 / ceiling if r2 is not None and ceiling is not None and ceiling > 0 else None
        adj = json_number(r2_ceiling(yt, key_frame.loc[m], adjusted=True)) if m.sum() > 1 else None
        frac_adj = r2 / adj if r2 is not None and adj is not None and adj > 0 else None
        out[f"{side}_n_groups"] = int(len(key_frame.loc[m].drop_duplicates()))
        out[f"{side}_r2"] = r2
        out[f"{side}_r2_ceiling"] = ceiling
        out[f"{side}_fraction_of_ceiling"] = json_number(frac)
        out[f"{side}_r2_ceiling_adjusted"] = adj
        out[f"{side}_fraction_of_adjusted_ceiling"] = json_number(frac_adj)
        n_side = int(m.sum())
        few = f"{n_side} {side} row(s): needs at least 2"
        flat = f"delta_mean is constant on the {side} rows" if n_side > 1 else few
        groups = f"as many condition groups as {side} rows: no within-group variance"
        null_reasons(
            out,
            {
                f"{side}_r2": r2_reason(n_side, side),
                f"{side}_r2_ceiling": flat,
                f"{side}_r2_ceiling_adjusted": flat if ceiling is None else groups,
                f"{side}_fraction_of_ceiling": "R2 or its ceiling is undefined or <= 0",
                f"{side}_fraction_of_adjusted_ceiling": (
                    "R2 or its adjusted ceiling is undefined or <= 0"
                ),
            },
        )
    return out
