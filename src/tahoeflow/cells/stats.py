"""Per-cell and per-gene statistics of a shard's CSR matrix and its pseudobulk sums: compiled
single passes over the stored values (numba), exact against scanpy/numpy (tests)."""

from __future__ import annotations

import numba as nb
import numpy as np
import scipy.sparse as sp

from tahoeflow.cells import normalize as pp

# --- per-cell and per-gene statistics ---------------------------------------------
_LOG_TABLE = 64
"""Per cell, log1p(c * scale) is computed once for each small integer count c < this."""


@nb.njit(cache=True, nogil=True)
def _reserve(out_idx, out_val, w, need):  # pragma: no cover
    """Buffers with room for ``need`` more entries after the first ``w`` (grown by half)."""
    if w + need <= out_idx.size:
        return out_idx, out_val
    cap = max(w + need, out_idx.size + out_idx.size // 2)
    new_idx = np.empty(cap, dtype=out_idx.dtype)
    new_val = np.empty(cap, dtype=out_val.dtype)
    new_idx[:w] = out_idx[:w]
    new_val[:w] = out_val[:w]
    return new_idx, new_val


@nb.njit(cache=True, nogil=True)
def _emit(acc, touched, nt, dense, out_idx, out_val, w):  # pragma: no cover
    """Append the non-zero sums of ``acc`` in column order and zero them; the new end.

    ``dense``: scan every column; else only the ``nt`` columns in ``touched`` (which may
    repeat a column: its second copy finds the sum already zeroed).
    """
    if dense:
        for c in range(acc.size):
            if acc[c] != 0.0:
                out_idx[w] = c
                out_val[w] = acc[c]
                w += 1
                acc[c] = 0.0
    else:
        cols = np.sort(touched[:nt])
        for t in range(nt):
            c = cols[t]
            if acc[c] != 0.0:
                out_idx[w] = c
                out_val[w] = acc[c]
                w += 1
                acc[c] = 0.0
    return w


@nb.njit(cache=True, nogil=True)
def _group_values(indptr, order, lo, hi):  # pragma: no cover
    n = 0
    for t in range(lo, hi):
        n += indptr[order[t] + 1] - indptr[order[t]]
    return n


@nb.njit(cache=True, nogil=True)
def _stats_kernel(
    indptr, indices, data, is_mito, target_sum, cell, gene, gene_n
):  # pragma: no cover
    """One pass over each CSR row: per-cell sums into ``cell`` (n, 5), per-gene into ``gene``.

    cell[i] = (sum x, sum x^2, sum x^3, sum of MT x, sum log1p(CP10k)) over row i's stored
    counts x (float64); gene[g] += (log1p(CP10k), its square, CP10k, its square) and gene_n[g]
    += 1 for each stored value of column g. Rows run in order and values in row order, so the
    per-gene sums add in the same order as a bincount over the stored values.
    """
    n = indptr.size - 1
    table = np.empty(_LOG_TABLE, dtype=np.float64)
    for i in range(n):
        lo = indptr[i]
        hi = indptr[i + 1]
        s1 = 0.0
        s2 = 0.0
        s3 = 0.0
        mito = 0.0
        top = 0.0
        for j in range(lo, hi):
            x = np.float64(data[j])
            x2 = x * x
            s1 += x
            s2 += x2
            s3 += x2 * x
            if is_mito[indices[j]]:
                mito += x
            if x > top:
                top = x
        scale = target_sum / s1 if s1 > 0 else 0.0
        n_table = min(_LOG_TABLE, int(top) + 1) if top < _LOG_TABLE else _LOG_TABLE
        for c in range(n_table):  # the same expression as below, so the same bits
            table[c] = np.log1p(np.float64(c) * scale)
        sl = 0.0
        for j in range(lo, hi):
            x = np.float64(data[j])
            norm = x * scale
            if 0.0 <= x < n_table and x == np.floor(x):
                lg = table[int(x)]
            else:
                lg = np.log1p(norm)
            sl += lg
            g = indices[j]
            gene_n[g] += 1
            gene[g, 0] += lg
            gene[g, 1] += lg * lg
            gene[g, 2] += norm
            gene[g, 3] += norm * norm
        cell[i, 0] = s1
        cell[i, 1] = s2
        cell[i, 2] = s3
        cell[i, 3] = mito
        cell[i, 4] = sl


@nb.njit(cache=True, nogil=True)
def _group_sums_kernel(indptr, indices, data, order, bounds, n_cols):  # pragma: no cover
    """Per group of rows (``order[bounds[g]:bounds[g+1]]``), the sum of the rows (float64).

    Returns (indptr over groups, sorted columns, sums, used length of the two buffers),
    leaving out columns whose sum is 0 (as a sparse product does). Rows add in ``order``,
    values in row order. A dense accumulator is read back in column order, or, for a group with
    few stored values, only at the columns it touched (sorted).
    """
    n_groups = bounds.size - 1
    acc = np.zeros(n_cols, dtype=np.float64)
    small = n_cols // 8
    touched = np.empty(max(small, 1), dtype=np.int64)
    out_idx = np.empty(1024 + (indptr[-1] - indptr[0]) // 8, dtype=np.int32)
    out_val = np.empty(out_idx.size, dtype=np.float64)
    out_ptr = np.zeros(n_groups + 1, dtype=np.int64)
    w = 0
    for g in range(n_groups):
        n_vals = _group_values(indptr, order, bounds[g], bounds[g + 1])
        dense = n_vals >= small
        out_idx, out_val = _reserve(out_idx, out_val, w, min(n_vals, n_cols))
        nt = 0
        for t in range(bounds[g], bounds[g + 1]):
            i = order[t]
            for j in range(indptr[i], indptr[i + 1]):
                c = indices[j]
                if not dense and acc[c] == 0.0:
                    touched[nt] = c
                    nt += 1
                acc[c] += data[j]
        w = _emit(acc, touched, nt, dense, out_idx, out_val, w)
        out_ptr[g + 1] = w
    return out_ptr, out_idx, out_val, w


def _csr_parts(X: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indptr int64, indices int32, data float32 or float64) of X, contiguous, for the kernels."""
    data = X.data if X.data.dtype in (np.float32, np.float64) else X.data.astype(np.float64)
    return (
        np.ascontiguousarray(X.indptr, dtype=np.int64),
        np.ascontiguousarray(X.indices, dtype=np.int32),
        np.ascontiguousarray(data),
    )


def _groups(group_codes: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows ordered by group, stably; each group's start in that order, and the end)."""
    codes = np.asarray(group_codes, dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    return order, np.searchsorted(codes[order], np.arange(n_groups + 1))


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
    indptr, indices, data = _csr_parts(X)
    k = np.diff(indptr)
    cell = np.empty((n, 5), dtype=np.float64)
    gene = np.zeros((G, 4), dtype=np.float64)
    gene_n = np.zeros(G, dtype=np.int64)
    _stats_kernel(
        indptr,
        indices,
        data,
        np.ascontiguousarray(is_mito, dtype=np.bool_),
        float(target_sum),
        cell,
        gene,
        gene_n,
    )
    s1, s2, s3, mito, sum_log = (np.ascontiguousarray(cell[:, j]) for j in range(5))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / k
        m2 = np.maximum(s2 / k - mean * mean, 0.0)
        m3 = s3 / k - 3.0 * mean * (s2 / k) + 2.0 * mean**3
        eps = np.finfo(np.float64).resolution * 10
        skew = np.where(m2 <= (eps * mean) ** 2, np.nan, m3 / m2**1.5)
        cells = {
            "n_genes": k.astype(np.int32),
            "total_counts": s1,
            "expr_mean": mean,
            "expr_std": np.sqrt(m2),
            "expr_skew": skew,
            "pct_mito": 100.0 * mito / s1,
            "mean_log_norm": sum_log / k,
        }
    genes = {
        "n_cells": gene_n,
        "sum_log": np.ascontiguousarray(gene[:, 0]),
        "sumsq_log": np.ascontiguousarray(gene[:, 1]),
        "sum_norm": np.ascontiguousarray(gene[:, 2]),
        "sumsq_norm": np.ascontiguousarray(gene[:, 3]),
    }
    return cells, genes


def _trim(a: np.ndarray, n: int) -> np.ndarray:
    """``a[:n]``, copied when that frees much memory."""
    return a[:n].copy() if a.size - n > max(1 << 16, n // 8) else a[:n]


def pseudobulk(X: sp.csr_matrix, group_codes: np.ndarray, n_groups: int) -> sp.csr_matrix:
    """Summed counts per group (groups x genes, float64, sorted indices, no stored zeros).

    The rows of each group are summed in row order in float64: the same sums as the product of
    a 0/1 group-indicator matrix with X, without building it.
    """
    order, bounds = _groups(group_codes, n_groups)
    indptr, indices, data = _csr_parts(X)
    ptr, cols, sums, nnz = _group_sums_kernel(indptr, indices, data, order, bounds, X.shape[1])
    out = sp.csr_matrix(
        (_trim(sums, nnz), _trim(cols, nnz), ptr), shape=(n_groups, X.shape[1]), copy=False
    )
    out.has_canonical_format = True
    return out


@nb.njit(cache=True, nogil=True)
def _keep_rows_kernel(indptr, indices, data, keep):  # pragma: no cover
    """Move the stored values of the kept rows to the front, in place; the new indptr."""
    out = np.zeros(np.count_nonzero(keep) + 1, dtype=indptr.dtype)
    w = 0
    r = 0
    for i in range(keep.size):
        if keep[i]:
            lo = indptr[i]
            hi = indptr[i + 1]
            if w != lo:
                for j in range(lo, hi):
                    indices[w + j - lo] = indices[j]
                    data[w + j - lo] = data[j]
            w += hi - lo
            r += 1
            out[r] = w
    return out


def keep_rows_inplace(X: sp.csr_matrix, keep: np.ndarray) -> sp.csr_matrix:
    """``X[keep]`` for a boolean mask, reusing X's buffers (X must not be used afterwards)."""
    indptr = _keep_rows_kernel(
        X.indptr, X.indices, X.data, np.ascontiguousarray(keep, dtype=np.bool_)
    )
    nnz = int(indptr[-1])
    out = sp.csr_matrix(
        (X.data[:nnz], X.indices[:nnz], indptr), shape=(indptr.size - 1, X.shape[1]), copy=False
    )
    out.has_canonical_format = X.has_canonical_format
    return out
