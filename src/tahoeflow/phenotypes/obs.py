"""Cell counts from Tahoe-100M's per-cell metadata (``metadata/obs_metadata.parquet``).

The hub's obs table has one row per cell (100,648,790 rows, 2.29 GB) with ``plate``,
``sample``, ``drug``, ``drugname_drugconc``, ``cell_line`` (Cellosaurus id), ``cell_name``,
``pass_filter`` (``full`` for the 95.6M cells of the expression files), ``S_score``,
``G2M_score``, ``phase``, .... :func:`aggregate_obs` reads only the key columns, as
dictionaries, one batch of rows at a time (``ParquetFile.iter_batches``), and counts cells per
key combination in each batch with integer codes; memory is bounded by one batch plus the
number of groups (~70,000 for the atlas), never by the rows.

:func:`write_simulated_obs` writes such a file on the real design (``obs_cell_grid``) for the
tests and the benchmark.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow.cells.doses import UNIT_TO_UM as _UNIT_TO_UM
from tahoeflow.cells.doses import parse_drugconc
from tahoeflow.errors import InputError
from tahoeflow.phenotypes.sensitivity import COUNT_SCHEMA

__all__ = [
    "OBS_KEYS",
    "aggregate_obs",
    "obs_counts",
    "doses_from_drugconc",
    "design_counts",
    "grid_conditions",
    "write_simulated_obs",
]

OBS_KEYS = ("plate", "sample", "drug", "drugname_drugconc", "cell_line")
"""The obs columns a count needs (``cell_line`` becomes ``cell_line_id``)."""
PASS_COLUMN = "pass_filter"
_REDUCE_ROWS = 2_000_000  # partial counts kept before they are summed


def _dictionary(arr: pa.Array | pa.ChunkedArray) -> pa.DictionaryArray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_encode()
    return arr


def aggregate_obs(
    path: str | Path,
    *,
    pass_filter: str | None = "full",
    keys: Sequence[str] = OBS_KEYS,
    batch_size: int = 1 << 20,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Cells per combination of ``keys`` in an obs table, streamed.

    Args:
        path: a Parquet file with one row per cell.
        pass_filter: count only rows whose ``pass_filter`` equals this (as text); None counts
            every row.
        keys: the columns to group by (e.g. add ``phase`` for phase counts).
        batch_size: rows per batch read.
        log: called with progress lines.

    Returns:
        One row per combination seen, the key columns (strings) and ``n_cells`` (int64).

    Raises:
        InputError: the file is not Parquet, lacks a column, or has a null key (names the row).
    """
    keys = list(keys)
    if not keys or batch_size < 1:
        raise ValueError("keys must not be empty and batch_size must be >= 1")
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(path, f"not a readable Parquet file: {e}") from None
    needed = keys + ([PASS_COLUMN] if pass_filter is not None else [])
    for col in needed:
        if col not in names:
            raise InputError(
                path, f"missing column '{col}' of obs_metadata (has: {', '.join(names)})"
            )
    # strings come as dictionaries: one code per row, the text once per batch
    pf = pq.ParquetFile(path, read_dictionary=needed)
    parts: list[pd.DataFrame] = []
    held = 0
    row0 = 0
    kept_total = 0
    for batch in pf.iter_batches(batch_size=batch_size, columns=needed):
        n = batch.num_rows
        dicts, codes, sizes = [], [], []
        for col in keys:
            arr = _dictionary(batch.column(col))
            if arr.null_count:
                first = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
                raise InputError(path, f"column '{col}' is null", row=row0 + first)
            dicts.append(arr.dictionary.cast(pa.string()))
            codes.append(arr.indices.to_numpy(zero_copy_only=False).astype(np.int64))
            sizes.append(max(len(arr.dictionary), 1))
        if pass_filter is not None:
            pf_arr = _dictionary(batch.column(PASS_COLUMN))
            allowed = np.asarray(pf_arr.dictionary.cast(pa.string()).to_pylist(), dtype=object)
            allowed = np.flatnonzero(allowed == str(pass_filter))
            idx = pf_arr.indices.fill_null(-1).to_numpy(zero_copy_only=False)
            keep = np.isin(idx, allowed)
        else:
            keep = None
        code = _combine(codes, sizes)
        if keep is not None:
            code = code[keep]
        kept_total += code.size
        uniq, counts = np.unique(code, return_counts=True)
        local = np.unravel_index(uniq, sizes) if len(sizes) > 1 else (uniq,)
        frame = {col: d.take(pa.array(ix)).to_numpy(zero_copy_only=False)
                 for col, d, ix in zip(keys, dicts, local, strict=True)}  # fmt: skip
        frame["n_cells"] = counts.astype(np.int64)
        parts.append(pd.DataFrame(frame))
        held += len(uniq)
        if held > _REDUCE_ROWS:
            parts = [_reduce(parts, keys)]
            held = len(parts[0])
        row0 += n
        if log is not None and row0 // batch_size % 10 == 0:
            log(f"{path}: {row0:,} of {pf.metadata.num_rows:,} rows read")
    out = _reduce(parts, keys) if parts else pd.DataFrame({**{k: [] for k in keys}, "n_cells": []})
    if log is not None:
        log(f"{path}: {row0:,} rows read, {kept_total:,} counted, {len(out):,} groups")
    return out.astype({"n_cells": np.int64}).reset_index(drop=True)


def _combine(codes: list[np.ndarray], sizes: list[int]) -> np.ndarray:
    """One int64 code per row from the per-column dictionary indices (mixed radix)."""
    if float(np.prod(np.asarray(sizes, dtype=np.float64))) >= 2**62:
        raise ValueError(f"too many key combinations in one batch ({sizes}); use a smaller batch")
    return np.ravel_multi_index(tuple(codes), sizes) if len(codes) > 1 else codes[0]


def _reduce(parts: list[pd.DataFrame], keys: list[str]) -> pd.DataFrame:
    df = pd.concat(parts, ignore_index=True)
    return df.groupby(keys, sort=True, observed=True)["n_cells"].sum().reset_index()


def doses_from_drugconc(values: pd.Series, path: object) -> pd.Series:
    """Dose in µM for each ``drugname_drugconc`` value (parsed once per distinct value)."""
    uniq = pd.unique(values.astype(str))
    dose = {}
    for text in uniq:  # a few thousand distinct values at most
        try:
            _, d, unit = parse_drugconc(text)
        except (ValueError, SyntaxError) as e:
            raise InputError(path, f"malformed drugname_drugconc {text!r}: {e}") from None
        if unit not in _UNIT_TO_UM or not (np.isfinite(d) and d >= 0):
            raise InputError(path, f"drugname_drugconc {text!r}: dose must be finite, >= 0, in "
                             f"{'/'.join(_UNIT_TO_UM)}")  # fmt: skip
        dose[text] = d * _UNIT_TO_UM[unit]
    return values.astype(str).map(dose).astype(np.float64)


def obs_counts(
    path: str | Path,
    *,
    pass_filter: str | None = "full",
    batch_size: int = 1 << 20,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """The count table (columns of :data:`~tahoeflow.phenotypes.sensitivity.COUNT_SCHEMA`) of an
    obs table: cells per (plate, sample, drug, dose_uM, cell_line_id)."""
    agg = aggregate_obs(path, pass_filter=pass_filter, batch_size=batch_size, log=log)
    agg["dose_uM"] = doses_from_drugconc(agg["drugname_drugconc"], path)
    agg = agg.rename(columns={"cell_line": "cell_line_id"})
    keys = COUNT_SCHEMA.names[:-1]
    out = agg.groupby(keys, sort=True, observed=True)["n_cells"].sum().reset_index()
    return out[COUNT_SCHEMA.names]


# --- a simulated obs table on the real design ---------------------------------------------------
def design_counts(grid: pd.DataFrame, samples: pd.DataFrame, cell_lines: pd.DataFrame,
                  scale: float = 1.0) -> pd.DataFrame:  # fmt: skip
    """Cells per (well, line) of the real design: ``obs_cell_grid``'s count per (drug, line,
    plate, dose) (times ``scale``, rounded) split over the wells of that drug-dose on the plate
    (sample_metadata), the remainder to the first wells. Columns: ``sample``, ``plate``,
    ``drug``, ``drugname_drugconc``, ``cell_line`` (Cellosaurus id), ``n_cells``."""
    s = samples[["sample", "plate", "drug", "drugname_drugconc"]].copy()
    s["conc"] = doses_from_drugconc(s["drugname_drugconc"], "sample_metadata")
    s = s.sort_values("sample", kind="stable")
    s["k"] = s.groupby(["drug", "plate", "conc"]).cumcount()
    s["n_share"] = s.groupby(["drug", "plate", "conc"])["sample"].transform("size")
    ids = cell_lines.drop_duplicates("cell_name").set_index("cell_name")["Cell_ID_Cellosaur"]
    g = grid.assign(n=np.rint(grid["n_cells"].to_numpy(np.float64) * scale).astype(np.int64))
    m = g.merge(s, on=["drug", "plate", "conc"], how="inner")
    q, r = np.divmod(m["n"].to_numpy(), m["n_share"].to_numpy())
    m["n_cells"] = q + (m["k"].to_numpy() < r)
    m["cell_line"] = m["cell_name"].map(ids)
    if m["cell_line"].isna().any():
        raise ValueError(
            f"cell names without a Cellosaurus id: {set(m.loc[m['cell_line'].isna(), 'cell_name'])}"
        )
    out = m.loc[m["n_cells"] > 0, ["sample", "plate", "drug", "drugname_drugconc", "cell_line",
                                    "n_cells"]]  # fmt: skip
    return out.sort_values(["plate", "sample", "cell_line"], kind="stable").reset_index(drop=True)


def write_simulated_obs(
    design: pd.DataFrame,
    path: str | Path,
    *,
    pass_fraction: float = 0.95,
    row_group_size: int = 1 << 20,
    seed: int = 0,
    log: Callable[[str], None] | None = None,
) -> tuple[int, int]:
    """Write one row per cell of ``design`` (:func:`design_counts`) to ``path``: the obs key
    columns, dictionary-encoded, plus ``pass_filter`` (``full`` for a random ``pass_fraction``
    of the cells, else ``minimal``), rows in plate order and shuffled within each row group.
    Returns (rows, rows with ``pass_filter`` ``full``)."""
    rng = np.random.default_rng(seed)
    cols = ["plate", "sample", "drug", "drugname_drugconc", "cell_line"]
    cat = {c: pd.Categorical(design[c].astype(str)) for c in cols}
    dictionaries = {c: pa.array(np.asarray(cat[c].categories, dtype=object), pa.string())
                    for c in cols}  # fmt: skip
    block_codes = {c: cat[c].codes.astype(np.int32) for c in cols}
    ends = np.cumsum(design["n_cells"].to_numpy(np.int64))
    total = int(ends[-1]) if len(ends) else 0
    pf_dict = pa.array(["full", "minimal"], pa.string())
    fields = [pa.field(c, pa.dictionary(pa.int32(), pa.string())) for c in [*cols, PASS_COLUMN]]
    schema = pa.schema(fields)
    n_full = 0
    with pq.ParquetWriter(str(path), schema, compression="zstd", use_dictionary=True) as w:
        for start in range(0, total, row_group_size):
            stop = min(total, start + row_group_size)
            rows = np.arange(start, stop, dtype=np.int64)
            block = np.searchsorted(ends, rows, side="right")
            block = block[rng.permutation(block.size)]
            arrays = [pa.DictionaryArray.from_arrays(pa.array(block_codes[c][block]), dictionaries[c])
                      for c in cols]  # fmt: skip
            passed = (rng.random(block.size) >= pass_fraction).astype(np.int32)
            n_full += int(block.size - passed.sum())
            arrays.append(pa.DictionaryArray.from_arrays(pa.array(passed), pf_dict))
            w.write_table(
                pa.Table.from_arrays(arrays, schema=schema), row_group_size=row_group_size
            )
            if log is not None and (start // row_group_size) % 10 == 0:
                log(f"simulated obs: {stop:,} of {total:,} rows written")
    return total, n_full


def grid_conditions(
    grid: pd.DataFrame, samples: pd.DataFrame, cell_lines: pd.DataFrame, scale: float = 1.0
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``obs_cell_grid`` (cells per drug, line, plate, dose; already summed over wells) as the
    (cond, wells) pair of :func:`~tahoeflow.phenotypes.sensitivity.condition_counts`: wells per
    (plate, drug, dose) from sample_metadata, counts times ``scale`` rounded."""
    s = samples.assign(dose_uM=doses_from_drugconc(samples["drugname_drugconc"], "sample_metadata"))
    wells = s.groupby(["plate", "drug", "dose_uM"]).size().rename("n_wells").reset_index()
    ids = cell_lines.drop_duplicates("cell_name").set_index("cell_name")["Cell_ID_Cellosaur"]
    g = grid.rename(columns={"conc": "dose_uM"})
    g = g.assign(cell_line_id=g["cell_name"].map(ids),
                 n_cells=np.rint(g["n_cells"].to_numpy(np.float64) * scale).astype(np.int64))  # fmt: skip
    cond = g.loc[g["n_cells"] > 0, ["plate", "drug", "dose_uM", "cell_line_id", "n_cells"]]
    have = cond.groupby(["plate", "drug", "dose_uM"]).size().rename("_n").reset_index()
    wells = wells.merge(have, on=["plate", "drug", "dose_uM"], how="left")
    wells["n_wells"] = np.where(wells.pop("_n").notna(), wells["n_wells"], 0).astype(np.int64)
    wells["n_empty_wells"] = np.int64(0)
    return cond.reset_index(drop=True), wells
