"""One row range of an .h5ad file as a filtered shard (the LoadedShard every source returns):
obs columns mapped to our fields, doses parsed, counts checked, cells filtered."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from tahoeflow.cells.doses import UNIT_TO_UM, dose_unit_problem
from tahoeflow.cells.plan import check_row_range
from tahoeflow.cells.stats import keep_rows_inplace
from tahoeflow.cells.summarize import Filters, LoadedShard, filter_cells
from tahoeflow.errors import ArgumentError, InputError
from tahoeflow.sources.h5ad import (
    DEFAULT_CELL_LINE,
    DEFAULT_MOA,
    attr_str,
    matrix_node,
    matrix_shape,
    open_h5ad,
    read_obs_column,
    read_rows_csr,
    show_value,
)
from tahoeflow.sources.h5ad_settings import validate_obs_map


# --- one shard ----------------------------------------------------------------------------------
def _strings(values: np.ndarray, path: object, name: str, column: str, start: int) -> np.ndarray:
    """Non-null values as strings; a null is an error naming the config key and the row."""
    isnull = pd.isna(pd.Series(values, dtype=object)).to_numpy()
    if isnull.any():
        r = int(np.argmax(isnull))
        raise InputError(
            path,
            f"obs column '{column}' (obs_map['{name}']) is missing a value",
            row=start + r,
        )
    if values.dtype.kind == "f":  # numbers used as labels: 3.0 -> "3"
        return np.array([f"{v:g}" for v in values], dtype=object)
    return np.asarray(values.astype(str), dtype=object)


def load_h5ad_shard(
    path: str | Path,
    row_start: int,
    row_stop: int | None,
    obs_map: Mapping[str, str],
    control_value: str,
    *,
    filters: Filters | None = None,
    allow_non_integer: bool = False,
    shard_name: str = "00000",
    layer: str | None = None,
    dose_unit: str = "uM",
    warn: Callable[[str], None] | None = None,
) -> LoadedShard:
    """Read, validate and filter rows ``[row_start, row_stop)`` of an h5ad file.

    Returns the same :class:`~tahoeflow.cells.summarize.LoadedShard` as ``load_shard``: ``obs`` with
    cell_id, shard, file_row, sample, plate, drug, dose_uM, cell_line_id, moa_fine,
    is_control; CSR float32 counts; ``filter_counts`` with ``input``, ``removed_by_<filter>``
    (active filters only), ``removed_by_min_genes``, ``kept``.

    ``obs_map`` names the obs column for each of our fields (see :data:`~tahoeflow.sources.h5ad_settings.OBS_MAP_KEYS`). Unmapped
    fields get: ``cell_id`` the obs names; ``dose_uM`` 0.0; ``cell_line_id`` "NA"; ``plate``
    the file's stem; ``moa_fine`` "unclear"; ``sample`` ``"<plate>|<drug>|<dose>"`` (one
    pseudobulk group per condition and plate, as Tahoe's wells are). Control cells (``drug ==
    control_value``) get dose 0.0, as Tahoe's DMSO_TF does. A dose must otherwise be a finite,
    non-negative number in ``dose_unit``.
    """
    filters = filters or Filters()
    obs_map = validate_obs_map(obs_map)
    unit_problem = dose_unit_problem(dose_unit)
    if unit_problem:
        raise ArgumentError("dose_unit", unit_problem)
    p = Path(path)
    with open_h5ad(p) as f:
        if "obs" not in f:
            raise InputError(p, "no 'obs' group in the file")
        present = set(f["obs"].keys())
        for name, col in obs_map.items():
            if col not in present:
                cols = ", ".join(sorted(present - {"_index", "__categories"}))
                raise ArgumentError(
                    "obs_map", f"{name}: obs column {col!r} is not in {p} (obs columns: {cols})"
                )
        n_obs = matrix_shape(matrix_node(f, p, layer), p)[0]
        if "_index" in f["obs"].attrs:
            index_col = attr_str(f["obs"], "_index")
        else:
            index_col = "_index"
        check_row_range(p, int(row_start), n_obs)
        stop = n_obs if row_stop is None else min(int(row_stop), n_obs)
        start = min(int(row_start), stop)
        raw = {name: read_obs_column(f, col, start, stop, p) for name, col in obs_map.items()}
        if "cell_id" not in raw:
            if index_col not in f["obs"]:
                raise InputError(p, "obs has no index column; map obs_map['cell_id']")
            raw["cell_id"] = read_obs_column(f, index_col, start, stop, p)
    for name, values in raw.items():
        if len(values) != stop - start:
            raise InputError(
                p, f"obs column for '{name}' has {len(values)} rows in this range, expected "
                f"{stop - start} (obs shorter than X?)", row=start,
            )  # fmt: skip

    n = stop - start
    file_row = start + np.arange(n, dtype=np.int64)
    drug = _strings(raw["drug"], p, "drug", obs_map["drug"], start)
    is_control = drug == control_value
    cell_id = _strings(raw["cell_id"], p, "cell_id", obs_map.get("cell_id", "_index"), start)
    if "dose" in raw:
        dose = _doses(raw["dose"], p, obs_map["dose"], start, is_control) * UNIT_TO_UM[dose_unit]
    else:
        dose = np.zeros(n, dtype=np.float64)
    dose[is_control] = 0.0
    plate = (
        _strings(raw["plate"], p, "plate", obs_map["plate"], start)
        if "plate" in raw
        else np.full(n, p.stem, dtype=object)
    )
    cell_line = (
        _strings(raw["cell_line"], p, "cell_line", obs_map["cell_line"], start)
        if "cell_line" in raw
        else np.full(n, DEFAULT_CELL_LINE, dtype=object)
    )
    moa = (
        _strings(raw["moa_fine"], p, "moa_fine", obs_map["moa_fine"], start)
        if "moa_fine" in raw
        else np.full(n, DEFAULT_MOA, dtype=object)
    )
    if "sample" in raw:
        sample = _strings(raw["sample"], p, "sample", obs_map["sample"], start)
    else:
        sample = np.array(
            [f"{pl}|{d}|{x:g}" for pl, d, x in zip(plate, drug, dose, strict=True)], dtype=object
        )

    X = read_rows_csr(p, start, stop, layer=layer, allow_non_integer=allow_non_integer, warn=warn)

    n_genes = np.diff(X.indptr)
    keep, counts, seen = filter_cells(filters, cell_line, drug, plate, n_genes)
    idx = np.flatnonzero(keep)
    obs = pd.DataFrame(
        {
            "cell_id": cell_id[idx],
            "shard": shard_name,
            "file_row": file_row[idx],
            "sample": sample[idx],
            "plate": plate[idx],
            "drug": drug[idx],
            "dose_uM": dose[idx],
            "cell_line_id": cell_line[idx],
            "moa_fine": moa[idx],
            "is_control": is_control[idx],
        }
    )
    return LoadedShard(
        obs, keep_rows_inplace(X, keep) if idx.size < n else X, counts, seen,
        int(np.count_nonzero(n_genes == 0)),
    )  # fmt: skip


def _doses(
    values: np.ndarray, path: object, column: str, start: int, is_control: np.ndarray
) -> np.ndarray:
    """Numeric doses; a non-number, NaN or negative dose of a treated cell is an error."""
    if values.dtype.kind in "biuf":
        dose = values.astype(np.float64)
    else:
        dose = pd.to_numeric(pd.Series(values, dtype=object), errors="coerce").to_numpy(np.float64)
    bad = ~is_control & ~(np.isfinite(dose) & (dose >= 0))
    if bad.any():
        r = int(np.argmax(bad))
        raise InputError(
            path,
            f"obs column '{column}' (obs_map['dose']): dose {show_value(values[r])} is not a "
            "finite non-negative number",
            row=start + r,
        )
    return dose
