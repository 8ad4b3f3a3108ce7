"""Per-shard summaries: one row per cell, plus per-shard statistics that merge exactly.

All statistics are computed from the CSR arrays with ``np.bincount`` over row or column ids:
no Python loop per cell or per gene.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from . import pp
from .errors import InputError
from .schema import CONTROL_DRUG
from .shards import Shard, Vocab, obs_arrays, read_rows, to_csr

CELL_COLUMNS = {
    "cell_id": pa.string(),
    "shard": pa.string(),
    "file_row": pa.int64(),
    "sample": pa.string(),
    "plate": pa.string(),
    "drug": pa.string(),
    "dose_uM": pa.float64(),
    "cell_line_id": pa.string(),
    "moa_fine": pa.string(),
    "is_control": pa.bool_(),
    "n_genes": pa.int32(),
    "total_counts": pa.float64(),
    "expr_mean": pa.float64(),
    "expr_std": pa.float64(),
    "expr_skew": pa.float64(),
    "pct_mito": pa.float64(),
    "mean_log_norm": pa.float64(),
}
GENE_STAT_COLUMNS = ["n_cells", "sum_log", "sumsq_log", "sum_norm", "sumsq_norm"]


# --- sample metadata -----------------------------------------------------------
def parse_drugconc(text: str) -> tuple[str, float, str]:
    """``"[('Drug', 0.5, 'uM')]"`` -> ("Drug", 0.5, "uM"). Raises ValueError when malformed."""
    value = ast.literal_eval(text)
    if (
        not isinstance(value, list)
        or len(value) < 1
        or not isinstance(value[0], tuple)
        or len(value[0]) != 3
        or not isinstance(value[0][0], str)
        or isinstance(value[0][1], bool)
        or not isinstance(value[0][1], int | float)
        or not isinstance(value[0][2], str)
    ):
        raise ValueError(f"expected [('name', dose, 'unit')], got {text!r}")
    name, dose, unit = value[0]
    return name, float(dose), unit


_UNIT_TO_UM = {"uM": 1.0, "µM": 1.0, "nM": 1e-3, "mM": 1e3}


def sample_doses(sample_metadata: pd.DataFrame, path: object) -> pd.Series:
    """Dose in µM per sample, parsed from ``drugname_drugconc``; errors name the row."""
    for col in ("sample", "drugname_drugconc"):
        if col not in sample_metadata.columns:
            raise InputError(path, f"missing column '{col}'")
    doses = np.empty(len(sample_metadata))
    for i, text in enumerate(sample_metadata["drugname_drugconc"].astype(str)):  # ~1.3k rows
        try:
            _, dose, unit = parse_drugconc(text)
        except (ValueError, SyntaxError) as e:
            raise InputError(path, f"malformed drugname_drugconc: {e}", row=i) from None
        if unit not in _UNIT_TO_UM:
            raise InputError(path, f"unknown dose unit {unit!r} in drugname_drugconc", row=i)
        doses[i] = dose * _UNIT_TO_UM[unit]
    s = pd.Series(doses, index=sample_metadata["sample"].astype(str).to_numpy())
    if s.index.has_duplicates:
        raise InputError(path, f"duplicated sample {s.index[s.index.duplicated()][0]!r}")
    return s


# --- per-cell and per-gene statistics ---------------------------------------------
def _segment_sum(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Sum of each CSR row's stored values (sequential reduceat; empty rows give 0)."""
    n = indptr.size - 1
    out = np.zeros(n, dtype=np.float64)
    nonempty = np.flatnonzero(np.diff(indptr) > 0)
    if nonempty.size:
        out[nonempty] = np.add.reduceat(values, indptr[nonempty])
    return out


def shard_stats(
    X: sp.csr_matrix, is_mito: np.ndarray, target_sum: float = pp.TARGET_SUM
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """(per-cell summaries, per-gene sufficient statistics) in one pass over the stored counts.

    Per cell, over the stored (non-zero) counts: n_genes, total_counts, expr_mean, expr_std
    (population, ddof=0) and expr_skew (Fisher, ``scipy.stats.skew`` with bias=True; NaN for a
    constant row), as seed 000 computed them over its expression arrays; pct_mito; and
    mean_log_norm, the mean of log1p(count / total * target_sum) over the stored genes.

    Per gene: cells expressing it, and sum / sum of squares of CP10k and of log1p(CP10k).
    Summed over shards these give the exact mean and variance over all cells (zeros
    included), which is what HVG selection needs.
    """
    n, G = X.shape
    indptr = X.indptr.astype(np.int64)
    k = np.diff(indptr)
    x = X.data.astype(np.float64)
    x2 = x * x
    s1 = _segment_sum(x, indptr)
    s2 = _segment_sum(x2, indptr)
    s3 = _segment_sum(x2 * x, indptr)
    del x2
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / k
        m2 = np.maximum(s2 / k - mean * mean, 0.0)
        m3 = s3 / k - 3.0 * mean * (s2 / k) + 2.0 * mean**3
        eps = np.finfo(np.float64).resolution * 10
        skew = np.where(m2 <= (eps * mean) ** 2, np.nan, m3 / m2**1.5)
        scale = np.where(s1 > 0, target_sum / s1, 0.0)
    norm = x * np.repeat(scale, k)
    del x
    logn = np.log1p(norm)
    mito_pos = np.flatnonzero(is_mito[X.indices])
    mito = np.bincount(np.searchsorted(indptr, mito_pos, side="right") - 1, weights=X.data[mito_pos], minlength=n)
    with np.errstate(divide="ignore", invalid="ignore"):
        cells = {
            "n_genes": k.astype(np.int32),
            "total_counts": s1,
            "expr_mean": mean,
            "expr_std": np.sqrt(m2),
            "expr_skew": skew,
            "pct_mito": 100.0 * mito / s1,
            "mean_log_norm": _segment_sum(logn, indptr) / k,
        }
    idx = X.indices
    genes = {
        "n_cells": np.bincount(idx, minlength=G).astype(np.int64),
        "sum_log": np.bincount(idx, weights=logn, minlength=G),
        "sumsq_log": np.bincount(idx, weights=logn * logn, minlength=G),
        "sum_norm": np.bincount(idx, weights=norm, minlength=G),
        "sumsq_norm": np.bincount(idx, weights=norm * norm, minlength=G),
    }
    return cells, genes


def pseudobulk(X: sp.csr_matrix, group_codes: np.ndarray, n_groups: int) -> sp.csr_matrix:
    """Summed counts per group: one sparse indicator matrix times X (groups x genes, float64)."""
    n = X.shape[0]
    ind = sp.csr_matrix((np.ones(n), (group_codes, np.arange(n))), shape=(n_groups, n))
    out = (ind @ X.astype(np.float64)).tocsr()
    out.sort_indices()
    return out


# --- one shard end to end ---------------------------------------------------------
@dataclass(frozen=True)
class Filters:
    cell_lines: Sequence[str] = ()
    drugs: Sequence[str] = ()
    plates: Sequence[str] = ()
    min_genes: int = 10


@dataclass
class LoadedShard:
    obs: pd.DataFrame  # cells kept, in file order
    X: sp.csr_matrix  # counts of those cells
    filter_counts: dict[str, int] = field(default_factory=dict)  # cells removed by each filter, in order


def load_shard(
    path: str | Path,
    shard: Shard,
    vocab: Vocab,
    doses: pd.Series,
    filters: Filters,
    *,
    control_drug: str = CONTROL_DRUG,
    allow_non_integer: bool = False,
    warn: Callable[[str], None] | None = None,
) -> LoadedShard:
    """Read, validate and filter one shard. The same function feeds every per-shard job."""
    table = read_rows(path, shard.row_start, shard.row_stop)
    obs = obs_arrays(table, path, ["drug", "sample", "BARCODE_SUB_LIB_ID", "cell_line_id", "moa-fine", "plate"], row_offset=shard.row_start)
    X = to_csr(table, vocab, path, row_offset=shard.row_start, allow_non_integer=allow_non_integer, warn=warn)
    n = X.shape[0]
    file_row = shard.row_start + np.arange(n, dtype=np.int64)
    sample = obs["sample"]
    known = pd.Index(doses.index).get_indexer(sample)
    if (known < 0).any():
        r = int(np.flatnonzero(known < 0)[0])
        raise InputError(path, f"sample {sample[r]!r} is not in sample_metadata", row=int(file_row[r]))
    keep = np.ones(n, dtype=bool)
    counts = {"input": n}
    for name, col, allowed in (
        ("cell_lines", "cell_line_id", filters.cell_lines),
        ("drugs", "drug", filters.drugs),
        ("plates", "plate", filters.plates),
    ):
        if allowed:
            ok = np.isin(obs[col], np.asarray(list(allowed), dtype=object))
            counts[f"removed_by_{name}"] = int((keep & ~ok).sum())
            keep &= ok
    ok = np.diff(X.indptr) >= filters.min_genes
    counts["removed_by_min_genes"] = int((keep & ~ok).sum())
    keep &= ok
    counts["kept"] = int(keep.sum())
    idx = np.flatnonzero(keep)
    df = pd.DataFrame(
        {
            "cell_id": obs["BARCODE_SUB_LIB_ID"][idx],
            "shard": shard.name,
            "file_row": file_row[idx],
            "sample": sample[idx],
            "plate": obs["plate"][idx],
            "drug": obs["drug"][idx],
            "dose_uM": doses.to_numpy()[known[idx]],
            "cell_line_id": obs["cell_line_id"][idx],
            "moa_fine": obs["moa-fine"][idx],
            "is_control": obs["drug"][idx] == control_drug,
        }
    )
    return LoadedShard(df, X[idx] if idx.size < n else X, counts)


def summarize(loaded: LoadedShard, vocab: Vocab) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(cells, gene_stats, pseudobulk) Arrow tables of one loaded shard (schemas: data contract)."""
    X, obs = loaded.X, loaded.obs
    cs, gs = shard_stats(X, vocab.is_mito)
    cells = obs.assign(**cs)
    cells_t = pa.Table.from_pandas(cells, schema=pa.schema(list(CELL_COLUMNS.items())), preserve_index=False)
    genes_t = pa.table({"token_id": vocab.token_ids, **gs})
    key = pd.MultiIndex.from_arrays([obs["sample"].to_numpy(), obs["cell_line_id"].to_numpy()])
    codes, uniq = pd.factorize(key, sort=True)
    pb = pseudobulk(X, codes, len(uniq)).tocoo()
    samples = uniq.get_level_values(0).to_numpy(dtype=object) if len(uniq) else np.array([], dtype=object)
    lines = uniq.get_level_values(1).to_numpy(dtype=object) if len(uniq) else np.array([], dtype=object)
    pb_t = pa.table(
        {
            "sample": pa.array(samples[pb.row], pa.string()),
            "cell_line_id": pa.array(lines[pb.row], pa.string()),
            "token_id": pa.array(vocab.token_ids[pb.col], pa.int64()),
            "count": pa.array(pb.data, pa.float64()),
        }
    )
    return cells_t, genes_t, pb_t
