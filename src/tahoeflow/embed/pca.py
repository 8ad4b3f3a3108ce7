"""Streaming PCA: per-shard Gram partials, their sum, the eigenproblem, the projection.

1. Each shard contributes ``X^T X`` and the column sums of its cells x HVG log1p(CP10k)
   matrix (:func:`gram_partial`); :func:`combine_gram` adds them up, one at a time.
2. :func:`pca_from_gram` solves the ``d x d`` eigenproblem. It reproduces sklearn's
   ``PCA(svd_solver="full")`` (``center=True``) or ``TruncatedSVD`` (``center=False``),
   including their sign convention (tested).
3. :func:`project` maps each shard's cells onto the components without densifying the shard.

The fitted :class:`PCAResult` is stored with :func:`pca_result_to_npz` (no pickles).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import numba as nb
import numpy as np
import scipy.linalg
import scipy.sparse as sp
from numpy.typing import ArrayLike, NDArray

from tahoeflow.embed._args import positive_int
from tahoeflow.errors import ArgumentError
from tahoeflow.io import atomic_path

__all__ = [
    "GramPartial",
    "PCAResult",
    "combine_gram",
    "gram_partial",
    "pca_from_gram",
    "pca_result_from_npz",
    "pca_result_to_npz",
    "project",
]

GramPartial = tuple[NDArray[np.float64], NDArray[np.float64], int]

# The "auto" method of gram_partial takes the sparse kernel when
# sum(row_nnz**2) * _SPARSE_PENALTY < n_rows * d**2: one multiply-add of the kernel (a
# scattered add into the d x d matrix) costs about as much as 60 of BLAS dsyrk's, so the
# kernel wins below ~13% density at d=2000 (benchmarks/RESULTS.md, "The Gram kernel").
_SPARSE_PENALTY = 60.0


@nb.njit(cache=True, nogil=True)
def _gram_upper_kernel(indptr, indices, data, out):  # pragma: no cover - compiled
    """out[i, j] += x_ri * x_rj for every row r and its non-zeros i <= j (sorted indices), rows
    in order: each entry is summed in the order scipy's sparse product sums it."""
    for r in range(indptr.size - 1):
        lo, hi = indptr[r], indptr[r + 1]
        for p in range(lo, hi):
            i = indices[p]
            v = data[p]
            for q in range(p, hi):
                out[i, indices[q]] += v * data[q]


def _as_csr(X: object) -> sp.csr_matrix:
    if not sp.issparse(X):
        raise TypeError(f"expected a scipy sparse matrix, got {type(X).__name__}")
    X = sp.csr_matrix(X)
    if X.ndim != 2:
        raise ValueError(f"expected a 2-D matrix, got shape {X.shape}")
    return X


def _csr_rows_float64(X: sp.csr_matrix, start: int, stop: int) -> sp.csr_matrix:
    """Rows ``start:stop`` of ``X`` as a float64 CSR. Copies only that block's values."""
    lo, hi = int(X.indptr[start]), int(X.indptr[stop])
    return sp.csr_matrix(
        (
            X.data[lo:hi].astype(np.float64),
            X.indices[lo:hi],
            X.indptr[start : stop + 1] - X.indptr[start],
        ),
        shape=(stop - start, X.shape[1]),
    )


def _column_sums(X: sp.csr_matrix) -> NDArray[np.float64]:
    return np.bincount(X.indices, weights=X.data.astype(np.float64), minlength=X.shape[1])


def gram_partial(
    X: sp.csr_matrix,
    *,
    method: Literal["auto", "dense_blocks", "sparse"] = "auto",
    block_rows: int = 1024,
) -> GramPartial:
    """One shard's contribution to the Gram matrix: ``(X^T X, column sums, n_rows)``.

    ``X`` is the shard's cells x HVG matrix (CSR, any float dtype). The sums are taken in
    float64. The Gram matrix comes back dense, symmetric and C-ordered, shape ``d x d``.

    Methods (both are exact to rounding, about 1e-15 relative):

    * ``"dense_blocks"``: ``block_rows`` rows at a time are densified into a float64 block ``B``,
      and BLAS ``dsyrk`` adds ``B^T B`` to the upper triangle. Extra memory is
      ``O(d^2 + block_rows * d)``, and ``X`` itself is never densified.
    * ``"sparse"``: each row's products of non-zeros added into the upper triangle
      (``sum(row_nnz^2) / 2`` multiply-adds; the same bits as scipy's ``(X^T X).toarray()``,
      about 4x faster). Extra memory is ``O(d^2 + nnz)``.
    * ``"auto"``: ``"sparse"`` when ``sum(row_nnz^2) * 60 < n * d^2``, i.e. below ~13% density
      at d=2000, otherwise ``"dense_blocks"`` (timings in benchmarks/RESULTS.md).
    """
    X = _as_csr(X)
    n, d = X.shape
    colsum = _column_sums(X)
    if method not in ("auto", "dense_blocks", "sparse"):
        raise ValueError(f"unknown method {method!r}")
    if block_rows < 1:
        raise ValueError(f"block_rows must be >= 1, got {block_rows}")
    if method == "auto":
        row_nnz = np.diff(X.indptr).astype(np.float64)
        sparse_cost = float(np.dot(row_nnz, row_nnz)) * _SPARSE_PENALTY
        method = "sparse" if sparse_cost < float(n) * d * d else "dense_blocks"

    if method == "sparse":
        if not X.has_canonical_format:  # the kernel needs sorted, distinct indices per row
            X = X.copy()
            X.sum_duplicates()
        upper = np.zeros((d, d), dtype=np.float64)
        _gram_upper_kernel(
            np.ascontiguousarray(X.indptr, dtype=np.int64),
            np.ascontiguousarray(X.indices, dtype=np.int32),
            np.ascontiguousarray(X.data, dtype=np.float64),
            upper,
        )
    else:
        syrk = scipy.linalg.blas.dsyrk
        upper = np.zeros((d, d), dtype=np.float64, order="F")
        for start in range(0, n, block_rows):
            stop = min(start + block_rows, n)
            block = _csr_rows_float64(X, start, stop).toarray()  # C order: block.T is F order
            # dsyrk with trans=0 computes a @ a.T: a = block.T is F-contiguous (no copy)
            upper = syrk(1.0, block.T, beta=1.0, c=upper, trans=0, lower=0, overwrite_c=1)
    gram = np.triu(upper)
    gram += np.triu(upper, 1).T
    return np.ascontiguousarray(gram), colsum, n


def combine_gram(parts: Iterable[GramPartial]) -> GramPartial:
    """Add up ``(gram, colsum, n)`` partials, taking one at a time.

    Memory is one ``d x d`` accumulator, whatever the number of shards. Pass a generator that
    loads each shard's partial on demand. Raises ``ValueError`` if ``parts`` is empty or the
    shapes disagree.
    """
    gram: NDArray[np.float64] | None = None
    colsum: NDArray[np.float64] | None = None
    n_total = 0
    for i, (g, c, n) in enumerate(parts):
        g = np.asarray(g, dtype=np.float64)
        c = np.asarray(c, dtype=np.float64)
        if g.ndim != 2 or g.shape[0] != g.shape[1] or c.shape != (g.shape[0],):
            raise ValueError(f"partial {i}: gram {g.shape} and colsum {c.shape} do not match")
        if int(n) != n or n < 0:
            raise ValueError(f"partial {i}: n must be a non-negative integer, got {n!r}")
        if gram is None or colsum is None:
            gram, colsum = g.copy(), c.copy()
        else:
            if g.shape != gram.shape:
                raise ValueError(f"partial {i}: gram shape {g.shape} differs from {gram.shape}")
            gram += g
            colsum += c
        n_total += int(n)
    if gram is None or colsum is None:
        raise ValueError("combine_gram needs at least one partial")
    return gram, colsum, n_total


@dataclass(frozen=True, eq=False)
class PCAResult:
    """A fitted linear embedding, in sklearn's attribute conventions.

    Attributes
    ----------
    components
        ``k x d`` float64, one unit-norm row per component, by decreasing variance. Sign
        convention (same as sklearn's ``svd_flip(..., u_based_decision=False)``): in each row,
        the loading with the largest absolute value is positive (the first one on ties).
    mean
        ``d`` float64 column means that are subtracted before projecting. All zero when
        ``center`` is False.
    explained_variance
        ``k`` float64. With ``center=True``: the covariance eigenvalues (ddof=1), as sklearn
        ``PCA.explained_variance_``. With ``center=False``: the ddof=0 variance of each
        projected column, as ``TruncatedSVD.explained_variance_``.
    explained_variance_ratio
        ``k`` float64. ``explained_variance`` over the total variance of the input columns
        (ddof=1 if centred, ddof=0 if not, matching sklearn).
    singular_values
        ``k`` float64 singular values of the centred (or, if ``center`` is False, raw) matrix.
    center
        Whether the data were centred (PCA) or not (truncated SVD).
    """

    components: NDArray[np.float64]
    mean: NDArray[np.float64]
    explained_variance: NDArray[np.float64]
    explained_variance_ratio: NDArray[np.float64]
    singular_values: NDArray[np.float64]
    center: bool

    @property
    def n_components(self) -> int:
        return int(self.components.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.components.shape[1])


def _flip_signs(components: NDArray[np.float64]) -> NDArray[np.float64]:
    """Make the largest-|value| entry of each row positive (sklearn's svd_flip on V)."""
    rows = np.arange(components.shape[0])
    pivot = components[rows, np.argmax(np.abs(components), axis=1)]
    signs = np.where(pivot < 0, -1.0, 1.0)
    return components * signs[:, None]


def pca_from_gram(
    gram: ArrayLike,
    colsum: ArrayLike,
    n: int,
    n_components: int,
    *,
    center: bool = True,
) -> PCAResult:
    """PCA (or uncentred truncated SVD) of a matrix known only by ``X^T X``, column sums and ``n``.

    ``center=True`` matches ``sklearn.decomposition.PCA(n_components, svd_solver="full")``.
    The covariance is ``C = (G - s s^T / n) / (n - 1)`` with ``s`` the column sums. Its top
    ``n_components`` eigenpairs (LAPACK ``syevr``, descending) give the components and
    ``explained_variance_``. ``explained_variance_ratio_`` divides by ``trace(C)``, the total
    variance. ``singular_values_ = sqrt((n - 1) * eigenvalue)``.

    ``center=False`` matches ``sklearn.decomposition.TruncatedSVD(n_components)`` with an exact
    SVD (``algorithm="arpack"``). The components are the top eigenvectors of ``G``, with
    ``singular_values_ = sqrt(eigenvalue)``. ``explained_variance_`` is the ddof=0 variance of
    the projected column ``X v``: ``sigma^2 / n - (s . v / n)^2``. The ratio divides it by
    ``sum_j var(X[:, j])`` (ddof=0): ``sum(diag(G) / n - (s / n)^2)``.

    Eigenvalues below 0 (from rounding) are clipped to 0. The sign convention is in
    :class:`PCAResult`. Centring the Gram matrix in float64 is exact enough for log1p(CP10k),
    where column means are about as large as the standard deviations. Data with means much
    larger than their spread would lose precision to cancellation.

    Raises
    ------
    ArgumentError
        ``n_components`` when it is below 1, above ``d`` or above ``n``.
    """
    G = np.asarray(gram, dtype=np.float64)
    s = np.asarray(colsum, dtype=np.float64)
    if G.ndim != 2 or G.shape[0] != G.shape[1]:
        raise ValueError(f"gram must be square, got shape {G.shape}")
    d = G.shape[0]
    if s.shape != (d,):
        raise ValueError(f"colsum has shape {s.shape}, expected ({d},)")
    if int(n) != n or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n = int(n)
    k = positive_int("n_components", n_components)
    if k > d:
        raise ArgumentError(
            "n_components",
            f"{k} is more than the {d} features (the HVGs selected: when fewer genes are "
            "expressed than asked for, all of them are taken): lower it",
        )
    if k > n:
        raise ArgumentError("n_components", f"{k} is more than the {n} cells")
    if center and n < 2:
        raise ValueError("centred PCA needs at least 2 cells (variance uses ddof=1)")

    if center:
        mean = s / n
        M = (G - np.outer(s, mean)) / (n - 1)
    else:
        mean = np.zeros(d, dtype=np.float64)
        M = G.copy()
    M = (M + M.T) * 0.5  # exact symmetry for LAPACK

    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):  # identical bits whatever the job's thread count
        evals, evecs = scipy.linalg.eigh(M, subset_by_index=[d - k, d - 1], check_finite=True)
    evals = np.maximum(evals[::-1], 0.0)
    components = _flip_signs(np.ascontiguousarray(evecs[:, ::-1].T))

    if center:
        explained_variance = evals
        total_var = float(np.trace(M))
        singular_values = np.sqrt(evals * (n - 1))
    else:
        singular_values = np.sqrt(evals)
        projected_mean = components @ s / n
        explained_variance = evals / n - projected_mean**2
        total_var = float(np.sum(np.diag(G) / n - (s / n) ** 2))
    ratio = (
        explained_variance / total_var
        if total_var > 0
        else np.zeros_like(explained_variance, dtype=np.float64)
    )
    return PCAResult(
        components=components,
        mean=mean,
        explained_variance=np.asarray(explained_variance, dtype=np.float64),
        explained_variance_ratio=np.asarray(ratio, dtype=np.float64),
        singular_values=np.asarray(singular_values, dtype=np.float64),
        center=bool(center),
    )


def project(X: sp.csr_matrix, pca: PCAResult) -> NDArray[np.float32]:
    """Project cells onto the components: ``(X - mean) @ components.T`` as ``n x k`` float32.

    Computed in float64 as ``X @ V - mean @ V``, so ``X`` is never densified (memory
    ``O(nnz + n k)``). Projecting shard by shard and stacking the rows gives the same result as
    projecting everything at once. It equals sklearn's ``PCA.transform`` /
    ``TruncatedSVD.transform`` with the same components.
    """
    X = _as_csr(X)
    if X.shape[1] != pca.n_features:
        raise ValueError(f"X has {X.shape[1]} columns but the PCA has {pca.n_features} features")
    V = np.ascontiguousarray(pca.components.T, dtype=np.float64)
    out = np.asarray(_csr_rows_float64(X, 0, X.shape[0]) @ V, dtype=np.float64)
    if pca.center:
        out -= pca.mean @ V
    return out.astype(np.float32)


_NPZ_FIELDS = (
    "components",
    "mean",
    "explained_variance",
    "explained_variance_ratio",
    "singular_values",
)


def pca_result_to_npz(path: str | os.PathLike[str], pca: PCAResult) -> None:
    """Write ``pca`` to an uncompressed ``.npz`` file, atomically. The file has no pickles."""
    arrays = {name: np.asarray(getattr(pca, name), dtype=np.float64) for name in _NPZ_FIELDS}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        # Through a file handle, so numpy does not append ".npz" to the temporary name.
        np.savez(fh, center=np.asarray(pca.center, dtype=np.bool_), **arrays)


def pca_result_from_npz(path: str | os.PathLike[str]) -> PCAResult:
    """Read a :class:`PCAResult` written by :func:`pca_result_to_npz`."""
    with np.load(path, allow_pickle=False) as z:
        missing = [name for name in (*_NPZ_FIELDS, "center") if name not in z.files]
        if missing:
            raise ValueError(f"{path}: not a PCA result file, missing {missing}")
        fields = {name: np.asarray(z[name], dtype=np.float64) for name in _NPZ_FIELDS}
        center = bool(z["center"])
    return PCAResult(center=center, **fields)
