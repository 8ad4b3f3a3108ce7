"""Per-cell preprocessing on CSR matrices (cells x genes): normalisation and log transform.

Matches scanpy's ``pp.normalize_total(target_sum=1e4)`` followed by ``pp.log1p`` (tested).
All functions are vectorised over the stored values (or one compiled pass); none loops over
cells in Python.
"""

from __future__ import annotations

import numba as nb
import numpy as np
import scipy.sparse as sp

TARGET_SUM = 1e4


def row_sums(X: sp.csr_matrix) -> np.ndarray:
    """Total counts per cell, float64."""
    return np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()


def row_ids(indptr: np.ndarray) -> np.ndarray:
    """Row index of every stored value of a CSR matrix with this ``indptr``."""
    return np.repeat(np.arange(indptr.size - 1, dtype=np.int64), np.diff(indptr))


def normalize_total(X: sp.csr_matrix, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """Scale each cell to ``target_sum`` counts (cells with zero counts stay zero). float64 output."""
    totals = row_sums(X)
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    data = X.data.astype(np.float64) * np.repeat(scale, np.diff(X.indptr))
    return sp.csr_matrix((data, X.indices, X.indptr), shape=X.shape)


def log1p(X: sp.csr_matrix) -> sp.csr_matrix:
    """Elementwise log1p of the stored values (zeros stay zero)."""
    return sp.csr_matrix((np.log1p(X.data), X.indices, X.indptr), shape=X.shape)


def log_normalize(X: sp.csr_matrix, target_sum: float = TARGET_SUM) -> sp.csr_matrix:
    """log1p(counts / total * target_sum): scanpy's normalize_total + log1p in one step."""
    return log1p(normalize_total(X, target_sum))


_LOG_TABLE = 64
"""Per cell, log1p(c * scale) is computed once for each small integer count c below this."""


@nb.njit(cache=True, nogil=True)
def _log_normalize_columns_kernel(
    indptr, indices, data, position, target_sum, out_ptr, out_idx, out_val
):  # pragma: no cover - compiled
    """Per row: total over all stored values, then log1p(x * target / total) of the kept ones.

    Small integer counts (raw UMIs) look their value up in a per-row table filled with the same
    expression, so they get the same bits as the direct call.
    """
    table = np.empty(_LOG_TABLE, dtype=np.float64)
    w = 0
    for i in range(indptr.size - 1):
        lo = indptr[i]
        hi = indptr[i + 1]
        total = 0.0
        top = 0.0
        for j in range(lo, hi):
            x = np.float64(data[j])
            total += x
            if x > top:
                top = x
        scale = target_sum / total if total > 0 else 0.0
        n_table = min(_LOG_TABLE, int(top) + 1) if top < _LOG_TABLE else _LOG_TABLE
        for c in range(n_table):
            table[c] = np.log1p(np.float64(c) * scale)
        for j in range(lo, hi):
            p = position[indices[j]]
            if p >= 0:
                x = np.float64(data[j])
                out_idx[w] = p
                if 0.0 <= x < n_table and x == np.floor(x):
                    out_val[w] = table[int(x)]
                else:
                    out_val[w] = np.log1p(x * scale)
                w += 1
        out_ptr[i + 1] = w
    return w


def _column_positions(n_genes: int, columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``columns`` checked (1-D, strictly increasing, below ``n_genes``) and every gene's
    position among them (-1: not kept)."""
    cols = np.asarray(columns, dtype=np.int64)
    if cols.ndim != 1 or (cols.size and (cols[0] < 0 or cols[-1] >= n_genes)):
        raise ValueError(f"columns must be a 1-D array of indices below {n_genes}")
    if np.any(np.diff(cols) <= 0):
        raise ValueError("columns must be strictly increasing")
    position = np.full(n_genes, -1, dtype=np.int32)
    position[cols] = np.arange(cols.size, dtype=np.int32)
    return cols, position


@nb.njit(cache=True, nogil=True)
def _count_kept(indices, position):  # pragma: no cover - compiled
    """How many stored values fall in kept columns (without an nnz-sized temporary)."""
    n = 0
    for j in range(indices.size):
        if position[indices[j]] >= 0:
            n += 1
    return n


def log_normalize_columns(
    X: sp.csr_matrix, columns: np.ndarray, target_sum: float = TARGET_SUM
) -> sp.csr_matrix:
    """``log_normalize(X)[:, columns]`` without normalising the columns that are dropped.

    Each cell is scaled by its total over *all* genes (as scanpy does before subsetting to the
    highly variable genes); only the stored values of ``columns`` (strictly increasing) are
    converted, in one compiled pass (numba) over the stored values, so no full-size float64
    copy is made. float64 output with sorted indices; equal to the two-step result to rounding
    (the total is summed in row order; tested against scanpy).
    """
    cols, position = _column_positions(X.shape[1], columns)
    indptr = np.ascontiguousarray(X.indptr, dtype=np.int64)
    indices = np.ascontiguousarray(X.indices, dtype=np.int32)
    data = X.data if X.data.dtype in (np.float32, np.float64) else X.data.astype(np.float64)
    n_kept = _count_kept(indices, position) if cols.size < X.shape[1] else X.nnz
    out_ptr = np.zeros(X.shape[0] + 1, dtype=np.int64)
    out_idx = np.empty(n_kept, dtype=np.int32)
    out_val = np.empty(n_kept, dtype=np.float64)
    _log_normalize_columns_kernel(
        indptr, indices, np.ascontiguousarray(data), position, float(target_sum),
        out_ptr, out_idx, out_val,
    )  # fmt: skip
    out = sp.csr_matrix((out_val, out_idx, out_ptr), shape=(X.shape[0], cols.size), copy=False)
    out.has_sorted_indices = True
    return out


@nb.njit(cache=True, nogil=True)
def _select_columns_kernel(
    indptr, indices, data, position, out_ptr, out_idx, out_val, out_total
):  # pragma: no cover - compiled
    """Per row: the total over all stored values (summed in row order, as the kernel above)
    and the raw stored values of the kept columns, renumbered by ``position``."""
    w = 0
    for i in range(indptr.size - 1):
        total = 0.0
        for j in range(indptr[i], indptr[i + 1]):
            total += np.float64(data[j])
            p = position[indices[j]]
            if p >= 0:
                out_idx[w] = p
                out_val[w] = data[j]
                w += 1
        out_total[i] = total
        out_ptr[i + 1] = w
    return w


@nb.njit(cache=True, nogil=True)
def _log_scale_kernel(indptr, data, totals, target_sum, out_val):  # pragma: no cover - compiled
    """log1p(x * target / total) per stored value, with the same expressions (and so the same
    bits) as :func:`_log_normalize_columns_kernel`."""
    table = np.empty(_LOG_TABLE, dtype=np.float64)
    for i in range(indptr.size - 1):
        lo = indptr[i]
        hi = indptr[i + 1]
        total = totals[i]
        scale = target_sum / total if total > 0 else 0.0
        top = 0.0
        for j in range(lo, hi):
            x = np.float64(data[j])
            if x > top:
                top = x
        n_table = min(_LOG_TABLE, int(top) + 1) if top < _LOG_TABLE else _LOG_TABLE
        for c in range(n_table):
            table[c] = np.log1p(np.float64(c) * scale)
        for j in range(lo, hi):
            x = np.float64(data[j])
            if 0.0 <= x < n_table and x == np.floor(x):
                out_val[j] = table[int(x)]
            else:
                out_val[j] = np.log1p(x * scale)


def select_columns(X: sp.csr_matrix, columns: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """The raw values of ``columns`` (strictly increasing) and every cell's total over all genes.

    Returns ``(counts, totals)``: ``counts`` is ``X[:, columns]`` (CSR, ``X``'s value dtype,
    sorted indices), ``totals`` the float64 row totals summed in row order. Together they are
    what :func:`log_normalize_selected` needs to give exactly :func:`log_normalize_columns`'s
    values, so a later pass can normalise the selected columns without the other genes.
    """
    cols, position = _column_positions(X.shape[1], columns)
    indptr = np.ascontiguousarray(X.indptr, dtype=np.int64)
    indices = np.ascontiguousarray(X.indices, dtype=np.int32)
    data = np.ascontiguousarray(X.data)
    n_kept = _count_kept(indices, position)
    out_ptr = np.zeros(X.shape[0] + 1, dtype=np.int64)
    out_idx = np.empty(n_kept, dtype=np.int32)
    out_val = np.empty(n_kept, dtype=data.dtype)
    totals = np.empty(X.shape[0], dtype=np.float64)
    _select_columns_kernel(indptr, indices, data, position, out_ptr, out_idx, out_val, totals)
    out = sp.csr_matrix((out_val, out_idx, out_ptr), shape=(X.shape[0], cols.size), copy=False)
    out.has_sorted_indices = True
    return out, totals


def log_normalize_selected(
    counts: sp.csr_matrix, totals: np.ndarray, target_sum: float = TARGET_SUM
) -> sp.csr_matrix:
    """log1p(counts / total * target_sum) with each cell's ``totals`` over all genes.

    ``log_normalize_selected(*select_columns(X, cols))`` equals ``log_normalize_columns(X,
    cols)`` bit for bit (tested). float64 output, ``counts``' structure.
    """
    totals = np.ascontiguousarray(totals, dtype=np.float64)
    if totals.shape != (counts.shape[0],):
        raise ValueError(f"totals has shape {totals.shape}; need ({counts.shape[0]},)")
    indptr = np.ascontiguousarray(counts.indptr, dtype=np.int64)
    out_val = np.empty(counts.nnz, dtype=np.float64)
    _log_scale_kernel(indptr, np.ascontiguousarray(counts.data), totals, float(target_sum), out_val)
    out = sp.csr_matrix((out_val, counts.indices, counts.indptr), shape=counts.shape, copy=False)
    out.has_sorted_indices = True
    return out
