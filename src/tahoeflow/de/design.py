"""Contrasts and their design matrices: each treated condition paired with the control wells of
the same cell line on the same plates, tested with ``~ plate + treated``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import pandas as pd

from tahoeflow.de.tables import SKIPPED_COLUMNS
from tahoeflow.errors import ArgumentError, InputError

CONTROL_DRUG = "DMSO_TF"
GROUP_COLUMNS = ("sample", "cell_line_id", "plate", "drug", "dose_uM", "n_cells")
PLATE_SEP = "+"
"""Joins the plates of a contrast pooled over plates in its ``plate`` column (``plate3+plate7``)."""


def two_group_design(n_treated: int, n: int) -> np.ndarray:
    """``model.matrix(~ treated)`` with the treated samples first: columns intercept, treated."""
    X = np.ones((n, 2))
    X[n_treated:, 1] = 0.0
    return X


def contrast_design(plates: Sequence[str] | np.ndarray, n_treated: int) -> np.ndarray:
    """``model.matrix(~ plate + treated)`` for one contrast (the first ``n_treated`` rows treated):
    intercept, one indicator per plate but the first (sorted), treated last. One plate gives
    :func:`two_group_design`."""
    plates = np.asarray(plates, dtype=object).astype(str)
    levels = np.unique(plates)
    X = np.column_stack(
        [np.ones(plates.size), *(plates == lv for lv in levels[1:]), np.zeros(plates.size)]
    ).astype(np.float64)
    X[:n_treated, -1] = 1.0
    return X


def leverages(X: np.ndarray) -> np.ndarray:
    """Diagonal of the hat matrix of ``X`` (R's ``hat(design)``)."""
    q, _ = np.linalg.qr(np.asarray(X, dtype=np.float64))
    return (q * q).sum(axis=1)


class Contrast(NamedTuple):
    """One treated condition and its plate-matched DMSO controls (row positions).

    ``plate`` is the plate, or for a condition pooled over plates the plates joined by
    :data:`PLATE_SEP` (sorted); the design is ``~ plate + treated`` (:func:`contrast_design`).
    """

    drug: str
    dose_uM: float
    cell_line_id: str
    plate: str
    treated: np.ndarray
    control: np.ndarray


def check_groups(groups_df: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in GROUP_COLUMNS if c not in groups_df.columns]
    if missing:
        raise InputError("groups table", f"missing column(s) {', '.join(missing)}")
    g = groups_df.reset_index(drop=True)
    n_cells = pd.to_numeric(g["n_cells"], errors="coerce")
    bad = np.flatnonzero(n_cells.isna().to_numpy() | (n_cells.to_numpy() < 0))
    if bad.size:
        raise InputError("groups table", "n_cells must be a count >= 0", row=int(bad[0]))
    return g


def contrasts(
    groups_df: pd.DataFrame,
    min_cells: int,
    min_control_wells: int = 2,
    *,
    control: str = CONTROL_DRUG,
    min_control_cells: int | None = None,
    pool_plates: bool = True,
) -> tuple[list[Contrast], pd.DataFrame]:
    """Pair every treated condition with the DMSO wells of the same cell line and plates.

    With ``pool_plates`` (default) a condition is (drug, dose_uM, cell_line_id) over every plate
    where it has wells: its treated rows are those wells, its controls the ``control`` wells of
    the same cell line on the same plates, and the design ``~ plate + treated`` blocks on the
    plate (a plate without a usable control well is left out: it carries no information on the
    treatment). Without it, a condition is (drug, dose_uM, cell_line_id, plate), as before. A
    control well is usable when it holds at least ``min_control_cells`` cells (default
    ``min_cells``). A condition is skipped when its treated wells hold fewer than ``min_cells``
    cells in total, when it has fewer than ``min_control_wells`` usable control wells (over its
    plates), or when the design leaves no residual df (wells - plates - 1 < 1). Returns
    ``(contrasts, skipped)``; ``skipped`` has :data:`SKIPPED_COLUMNS`. Row indices are
    positions in ``groups_df`` (= rows of the count matrix). Conditions come sorted by key.
    """
    if min_cells < 0:
        raise ArgumentError("min_cells", f"must be >= 0, got {min_cells}")
    if min_control_wells < 1:
        raise ArgumentError("min_control_wells", f"must be >= 1, got {min_control_wells}")
    min_ctrl_cells = min_cells if min_control_cells is None else min_control_cells
    g = check_groups(groups_df)
    g = g.assign(plate=g["plate"].astype(str))
    is_ctrl = (g["drug"] == control).to_numpy()
    n_cells = g["n_cells"].to_numpy()
    ctrl = g.loc[is_ctrl & (n_cells >= min_ctrl_cells)]
    ctrl_rows: dict[tuple, np.ndarray] = {
        key: np.sort(sub.index.to_numpy())
        for key, sub in ctrl.groupby(["cell_line_id", "plate"], sort=False)
    }
    out: list[Contrast] = []
    skipped: list[dict] = []
    treated = g.loc[~is_ctrl]
    by = ["drug", "dose_uM", "cell_line_id"] + ([] if pool_plates else ["plate"])
    none = np.array([], dtype=np.int64)
    for key, sub in treated.groupby(by, sort=True, dropna=False):
        drug, dose, cell_line = key[:3]
        all_plates = sorted(sub["plate"].unique())
        used = [p for p in all_plates if ctrl_rows.get((cell_line, p), none).size]
        plates = used or all_plates
        label = PLATE_SEP.join(plates)
        rows = np.sort(sub.index.to_numpy()[sub["plate"].isin(plates).to_numpy()])
        n_trt = int(n_cells[rows].sum())
        c_rows = np.sort(
            np.concatenate([none, *(ctrl_rows.get((cell_line, p), none) for p in used)])
        )
        df_resid = rows.size + c_rows.size - len(plates) - 1
        reason = None
        if n_trt < min_cells:
            reason = f"{n_trt} treated cells < min_cells={min_cells}"
        elif c_rows.size < min_control_wells:
            reason = (
                f"{c_rows.size} {control} control wells with >= {min_ctrl_cells} cells "
                f"< min_control_wells={min_control_wells}"
            )
        elif df_resid < 1:
            reason = (
                f"no residual degrees of freedom after pooling {len(plates)} plate(s): "
                f"{rows.size + c_rows.size} wells for {len(plates) + 1} coefficients "
                "(~ plate + treated)"
            )
        if reason is not None:
            skipped.append(
                dict(
                    drug=drug,
                    dose_uM=dose,
                    cell_line_id=cell_line,
                    plate=label,
                    n_cells=n_trt,
                    n_control_wells=int(c_rows.size),
                    what="contrast",
                    n_genes=0,
                    reason=reason,
                )
            )
            continue
        out.append(Contrast(drug, dose, cell_line, label, rows, c_rows))
    return out, pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)
