"""Per-cell preprocessing on CSR matrices (cells x genes): normalisation and log transform.

Matches scanpy's ``pp.normalize_total(target_sum=1e4)`` followed by ``pp.log1p`` (tested).
All functions are vectorised over the stored values; none loops over cells.
"""

from __future__ import annotations

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
