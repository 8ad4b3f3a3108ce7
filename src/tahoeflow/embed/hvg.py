"""Highly variable genes from per-gene sums merged over all shards (scanpy's flavors).

Per-gene sums of the normalised values (CP10k) and of their log1p, merged across shards, give
the means and variances :func:`highly_variable_genes_from_stats` needs; the selection equals
``scanpy.pp.highly_variable_genes`` on the same cells (tested). The matrix is never read.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray

from tahoeflow.embed._args import positive_int
from tahoeflow.errors import ArgumentError

__all__ = ["HVGFlavor", "highly_variable_genes_from_stats", "hvg_indices"]

HVGFlavor = Literal["seurat", "cell_ranger"]

# Value scanpy substitutes for a mean that is exactly zero before dividing by it.
_ZERO_MEAN = 1e-12
# Normal-consistency constant of the MAD: the 0.75 quantile of the standard normal.
# statsmodels.robust.mad uses the same value, and scanpy's cell_ranger flavor calls that.
_MAD_C = 0.6744897501960817


def _as_gene_vector(name: str, values: ArrayLike, n_genes: int | None) -> NDArray[np.float64]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if n_genes is not None and arr.size != n_genes:
        raise ValueError(f"{name} has {arr.size} genes, expected {n_genes}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values")
    return arr


def _mean_var(
    n_obs: int, total: NDArray[np.float64], total_sq: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Per-gene mean and unbiased variance (ddof=1) from sums over ``n_obs`` cells (float64)."""
    mean = total / n_obs
    var = (total_sq - total * mean) / (n_obs - 1)
    # Rounding can make the variance of a (nearly) constant gene slightly negative.
    np.maximum(var, 0.0, out=var)
    return mean, var


def _mad(values: NDArray[np.float64]) -> float:
    """Median absolute deviation from the median, scaled to the normal's standard deviation.

    Same definition and order of operations as ``statsmodels.robust.mad`` (what scanpy calls):
    ``median(|a - median(a)| / c)`` with ``c = Phi^-1(3/4)``. NaN in, NaN out.
    """
    if values.size == 0:
        return float("nan")
    return float(np.median(np.abs(values - np.median(values)) / _MAD_C))


def highly_variable_genes_from_stats(
    n_obs: int,
    sum_norm: ArrayLike,
    sumsq_norm: ArrayLike,
    *,
    sum_log: ArrayLike | None = None,
    sumsq_log: ArrayLike | None = None,
    n_top: int = 2000,
    flavor: str = "seurat",
    n_bins: int = 20,
    var_names: Sequence[str] | None = None,
    warn: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Select highly variable genes from per-gene sums merged over all shards.

    Gives the same result as ``scanpy.pp.highly_variable_genes(adata, flavor=flavor,
    n_top_genes=n_top, n_bins=n_bins)`` on ``log1p(normalize_total(counts, 1e4))`` of the same
    cells (scanpy 1.11.5, single batch). Only the per-gene sums are needed, never the matrix.

    Parameters
    ----------
    n_obs
        Number of cells the sums run over (all cells, including those where a gene is 0).
    sum_norm, sumsq_norm
        Per gene: sum and sum of squares of the CP10k values ``counts / total * 1e4``. These
        are what the ``"seurat"`` flavor uses. It works on ``expm1`` of the log data, which is
        CP10k.
    sum_log, sumsq_log
        Per gene: sum and sum of squares of ``log1p(CP10k)``. Required for ``"cell_ranger"``.
        That flavor works on the log data itself, with no ``expm1``. Not used by ``"seurat"``.
    n_top
        Number of genes to select (scanpy's ``n_top_genes``).
    flavor
        ``"seurat"`` or ``"cell_ranger"``.
    n_bins
        Number of equal-width mean bins for ``"seurat"``. Ignored by ``"cell_ranger"``, which
        bins by percentiles (as scanpy does).
    var_names
        Optional gene names to use as the index; otherwise a ``RangeIndex``.
    warn
        Called with a one-line message (about ``n_top``) when ``n_top`` is more than the
        genes that have a normalised dispersion (default: :func:`warnings.warn`).

    Returns
    -------
    DataFrame in gene order with columns ``means``, ``dispersions``, ``dispersions_norm``
    (float64) and ``highly_variable`` (bool). These are scanpy's columns and values. For
    ``"seurat"``, ``means`` is ``log1p(mean)`` and ``dispersions`` is ``log(var / mean)``.

    Notes
    -----
    The rules below are scanpy's, reproduced step by step:

    * The mean and variance come from float64 sums. The variance is unbiased (ddof=1):
      ``(sumsq - sum * mean) / (n - 1)``, clipped at 0.
    * A mean of exactly 0 is replaced by ``1e-12``. Then ``dispersion = var / mean``.
    * ``"seurat"``: a dispersion of exactly 0 becomes NaN. Then ``dispersion = log(dispersion)``
      and ``mean = log1p(mean)``. Genes go into ``n_bins`` equal-width bins of that mean, using
      ``pandas.cut``: right-closed bins, with the lowest edge moved down by 0.1% of the range.
      Each bin has a mean and a standard deviation (ddof=1) of its dispersions, skipping NaN.
      If the standard deviation is NaN (a bin with only one non-NaN dispersion), it is set to
      the bin's mean and the bin's mean is set to 0. So a gene alone in its bin gets a
      normalised dispersion of 1.
    * ``"cell_ranger"``: the bin edges are ``[-inf, percentiles 10, 15, ..., 100 of the means,
      +inf]`` (right-closed). Each bin has a median and a MAD (``median(|d - median(d)| /
      0.6745)``). Duplicate edges are dropped. Scanpy raises an error on them instead, but the
      intervals they would make are empty, so the bins are the same either way.
    * ``dispersions_norm = (dispersion - bin centre) / bin scale``.
    * Selection: the cutoff is the ``n_top``-th highest non-NaN ``dispersions_norm``, counting
      ties. A gene is highly variable when its value is ``>= cutoff``, after NaN -> -inf and
      +-inf -> +-float max (``np.nan_to_num``). Ties at the cutoff can therefore select more
      than ``n_top`` genes, exactly as scanpy does. :func:`hvg_indices` takes exactly ``n_top``.
    * ``n_top`` above the number of genes with a defined (non-NaN) normalised dispersion:
      all of those genes are selected and ``warn`` is called, as scanpy does (it warns
      "n_top_genes > number of normalized dispersions, returning all genes with normalized
      dispersions").

    Raises
    ------
    ArgumentError
        ``flavor`` unknown; ``n_top`` or ``n_bins`` not a positive integer.
    ValueError
        For inconsistent inputs (shapes, ``n_obs < 2``, missing log sums for cell_ranger).
    """
    if flavor not in ("seurat", "cell_ranger"):
        raise ArgumentError("flavor", f"must be 'seurat' or 'cell_ranger', got {flavor!r}")
    positive_int("n_bins", n_bins)
    if int(n_obs) != n_obs or n_obs < 2:
        raise ValueError(f"n_obs must be an integer >= 2 (variance uses ddof=1), got {n_obs!r}")
    n_obs = int(n_obs)
    s_norm = _as_gene_vector("sum_norm", sum_norm, None)
    n_genes = s_norm.size
    ss_norm = _as_gene_vector("sumsq_norm", sumsq_norm, n_genes)

    positive_int("n_top", n_top)

    if flavor == "seurat":
        mean, var = _mean_var(n_obs, s_norm, ss_norm)
    else:
        if sum_log is None or sumsq_log is None:
            raise ValueError(
                "flavor 'cell_ranger' works on the log1p data: pass sum_log and sumsq_log"
            )
        mean, var = _mean_var(
            n_obs,
            _as_gene_vector("sum_log", sum_log, n_genes),
            _as_gene_vector("sumsq_log", sumsq_log, n_genes),
        )

    mean[mean == 0] = _ZERO_MEAN
    dispersion = var / mean
    if flavor == "seurat":
        dispersion[dispersion == 0] = np.nan
        dispersion = np.log(dispersion)
        mean = np.log1p(mean)
        bins: int | NDArray[np.float64] = int(n_bins)
        mean_bin = pd.cut(pd.Series(mean), bins=bins)
    else:
        edges = np.r_[-np.inf, np.percentile(mean, np.arange(10, 105, 5)), np.inf]
        mean_bin = pd.cut(pd.Series(mean), bins=edges, duplicates="drop")
    codes = np.asarray(mean_bin.cat.codes, dtype=np.int64)

    # Per-bin centre and scale. pandas' groupby reductions are the same ones scanpy uses, so the
    # values are bit-for-bit equal.
    grouped = pd.Series(dispersion).groupby(codes)
    if flavor == "seurat":
        centre = grouped.mean()
        scale = grouped.std()
        lonely = scale.isna()
        scale[lonely] = centre[lonely]
        centre[lonely] = 0.0
    else:
        centre = grouped.median()
        scale = grouped.agg(lambda s: _mad(s.to_numpy(dtype=np.float64)))
    centre_g = centre.reindex(codes).to_numpy(dtype=np.float64)
    scale_g = scale.reindex(codes).to_numpy(dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        disp_norm = (dispersion - centre_g) / scale_g

    finite_or_inf = disp_norm[~np.isnan(disp_norm)]
    if finite_or_inf.size == 0:
        raise ValueError("no gene has a defined normalised dispersion; cannot select HVGs")
    n_take = min(int(n_top), finite_or_inf.size)
    if n_take < n_top:
        message = (
            f"{n_top} genes asked for but only {finite_or_inf.size} of {n_genes} genes have a "
            f"normalised dispersion (expressed, not constant); all {finite_or_inf.size} are taken"
        )
        if warn is None:
            warnings.warn(f"argument 'n_top': {message}", UserWarning, stacklevel=2)
        else:
            warn(message)
    cutoff = np.sort(finite_or_inf)[::-1][n_take - 1]
    highly_variable = np.nan_to_num(disp_norm, nan=-np.inf) >= cutoff

    index = pd.RangeIndex(n_genes) if var_names is None else pd.Index(list(var_names))
    if len(index) != n_genes:
        raise ValueError(f"var_names has {len(index)} names, expected {n_genes}")
    return pd.DataFrame(
        {
            "means": mean,
            "dispersions": dispersion,
            "dispersions_norm": disp_norm,
            "highly_variable": highly_variable.astype(bool),
        },
        index=index,
    )


def hvg_indices(df: pd.DataFrame, n_top: int) -> NDArray[np.int64]:
    """Positions (0-based, ascending) of the selected genes in ``df``, at most ``n_top`` of them.

    Usually these are just the rows where ``highly_variable`` is true. If ties at the cutoff
    made scanpy's rule select more than ``n_top`` genes, the ``n_top`` with the highest
    ``dispersions_norm`` are kept, and ties are broken by gene position (the lower one wins).
    The result is the same on every run.
    """
    positive_int("n_top", n_top)
    selected = np.flatnonzero(df["highly_variable"].to_numpy(dtype=bool))
    if selected.size > n_top:
        values = np.nan_to_num(
            df["dispersions_norm"].to_numpy(dtype=np.float64)[selected], nan=-np.inf
        )
        order = np.argsort(-values, kind="stable")
        selected = np.sort(selected[order[: int(n_top)]])
    return selected.astype(np.int64)
