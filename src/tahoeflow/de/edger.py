"""edgeR's count preprocessing: log-CPM (``cpm(log=TRUE)``), ``filterByExpr`` and TMM
normalisation (``calcNormFactors``), vectorised over genes (Robinson & Oshlack 2010, Genome Biol
11:R25; edgeR's defaults)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from tahoeflow.de.design import leverages


def log_cpm(
    counts: np.ndarray | sp.spmatrix,
    lib_sizes: np.ndarray | None = None,
    prior_count: float = 2.0,
    *,
    scale_prior: bool = True,
) -> np.ndarray:
    """log2 counts-per-million of a (samples x genes) count matrix, edgeR style.

    ``prior_i = prior_count * lib_i / mean(lib)`` when ``scale_prior`` (edgeR's ``cpm(log=TRUE,
    prior.count=...)``), else ``prior_count``; then ``log2((count + prior_i) / (lib_i +
    2 prior_i) * 1e6)``. ``lib_sizes`` defaults to the row sums. Returns dense float64.
    """
    if sp.issparse(counts):
        counts = counts.toarray()
    y = np.asarray(counts, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"counts must be 2-D (samples x genes), got shape {y.shape}")
    lib = y.sum(axis=1) if lib_sizes is None else np.asarray(lib_sizes, dtype=np.float64)
    if lib.shape != (y.shape[0],):
        raise ValueError(f"lib_sizes must have one entry per row ({y.shape[0]}), got {lib.shape}")
    if np.any(~np.isfinite(lib)) or np.any(lib <= 0):
        raise ValueError("every library size must be finite and > 0")
    if prior_count < 0:
        raise ValueError("prior_count must be >= 0")
    prior = prior_count * lib / lib.mean() if scale_prior else np.full_like(lib, prior_count)
    lib_adj = lib + 2.0 * prior
    return np.log2((y + prior[:, None]) / lib_adj[:, None] * 1e6)


def as_dense_counts(counts: np.ndarray | sp.spmatrix) -> np.ndarray:
    if sp.issparse(counts):
        counts = counts.toarray()
    y = np.asarray(counts, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"counts must be 2-D (samples x genes), got shape {y.shape}")
    return y


def filter_by_expr(
    counts: np.ndarray | sp.spmatrix,
    lib_sizes: np.ndarray | None = None,
    *,
    min_sample_size: float | None = None,
    group_sizes: Sequence[int] | None = None,
    design: np.ndarray | None = None,
    min_count: float = 10.0,
    min_total_count: float = 15.0,
    large_n: int = 10,
    min_prop: float = 0.7,
    pooled: bool = False,
) -> np.ndarray:
    """edgeR ``filterByExpr``: boolean mask of the genes (columns) worth testing.

    ``n`` is ``min_sample_size`` if given, else the smallest of ``group_sizes``, else ``1 /
    max(hat(design))`` (edgeR's rule for a design: the smallest group of a two-group design),
    else the number of samples; if ``n > large_n`` it becomes ``large_n + (n - large_n) * min_prop``. With the
    CPM cutoff ``k = min_count / median(lib) * 1e6``, a gene is kept when its total count
    reaches ``min_total_count`` and (edgeR) its CPM ``count / lib * 1e6`` reaches ``k`` in at
    least ``n`` samples (tolerance 1e-14).

    ``pooled=True`` replaces the per-sample rule by one on the pooled CPM of all ``N`` samples,
    ``sum(count) / sum(lib) * 1e6 >= k * n / N`` (as much expression as ``n`` samples at the
    cutoff). It depends on the counts only through their total, which under the null is
    ancillary for how the total splits between groups (Poisson: conditionally binomial), so the
    filter does not select genes *because* one group is high (independent filtering, Bourgon et
    al. 2010 PNAS 107:9546). edgeR's rule does: with one treated well ``n = 1`` and a gene
    passes on the treated well alone, which keeps exactly the null genes whose treated count is
    high by chance. ``lib_sizes`` default to the row sums.
    """
    y = as_dense_counts(counts)
    lib = y.sum(axis=1) if lib_sizes is None else np.asarray(lib_sizes, dtype=np.float64)
    if lib.shape != (y.shape[0],) or np.any(~(lib > 0)):
        raise ValueError("lib_sizes must be one positive value per row")
    if min_sample_size is not None:
        n = float(min_sample_size)
    elif group_sizes is not None:
        sizes = [int(s) for s in group_sizes if int(s) > 0]
        if not sizes:
            raise ValueError("group_sizes has no non-empty group")
        n = float(min(sizes))
    elif design is not None:
        n = 1.0 / float(leverages(design).max())
    else:
        n = float(y.shape[0])
    if n > large_n:
        n = large_n + (n - large_n) * min_prop
    cutoff = min_count / float(np.median(lib)) * 1e6
    tol = 1e-14
    if pooled:
        keep = y.sum(axis=0) / lib.sum() * 1e6 >= cutoff * n / y.shape[0] * (1 - tol)
    else:
        cpm = y / lib[:, None] * 1e6
        keep = (cpm >= cutoff).sum(axis=0) >= n - tol
    return keep & (y.sum(axis=0) >= min_total_count - tol)


def _average_ranks(v: np.ndarray) -> np.ndarray:
    """Row-wise ranks (1-based, ties get their average rank, R's ``rank``) of a 2-D array."""
    order = np.argsort(v, axis=1, kind="stable")
    s = np.take_along_axis(v, order, axis=1)
    m = s.shape[1]
    pos = np.broadcast_to(np.arange(m), s.shape)
    new_run = np.ones(s.shape, dtype=bool)
    new_run[:, 1:] = s[:, 1:] != s[:, :-1]
    run_start = np.maximum.accumulate(np.where(new_run, pos, 0), axis=1)
    end_run = np.ones(s.shape, dtype=bool)
    end_run[:, :-1] = new_run[:, 1:]
    run_end = np.minimum.accumulate(np.where(end_run, pos, m - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty(s.shape)
    np.put_along_axis(ranks, order, (run_start + run_end) / 2.0 + 1.0, axis=1)
    return ranks


def calc_norm_factors(
    counts: np.ndarray | sp.spmatrix,
    lib_sizes: np.ndarray | None = None,
    *,
    ref_column: int | None = None,
    logratio_trim: float = 0.3,
    sum_trim: float = 0.05,
    do_weighting: bool = True,
    a_cutoff: float = -1e10,
) -> np.ndarray:
    """edgeR ``calcNormFactors(method="TMM")`` for a (samples x genes) count matrix.

    Genes that are zero in every sample are dropped. The reference sample is ``ref_column``,
    else the one whose upper quartile of ``count / lib`` is closest to the mean upper quartile
    (edgeR >= 3.32 falls back to the largest ``sum(sqrt(count))`` when the median upper quartile
    is < 1e-20). For sample ``i`` against reference ``r``, over genes with finite values:
    ``M = log2((y_i / N_i) / (y_r / N_r))``, ``A = (log2(y_i / N_i) + log2(y_r / N_r)) / 2``,
    ``v = (N_i - y_i) / (N_i y_i) + (N_r - y_r) / (N_r y_r)``, ``A > a_cutoff``; keep genes whose
    rank of ``M`` is in ``[floor(n * logratio_trim) + 1, n - floor(n * logratio_trim)]`` and
    rank of ``A`` in ``[floor(n * sum_trim) + 1, n - floor(n * sum_trim)]`` (average ranks for
    ties, ``n`` = finite genes); ``log2 f_i = sum(M / v) / sum(1 / v)`` over them (the plain
    mean when not ``do_weighting``; 1 when ``max |M| < 1e-6``). Factors are divided by their
    geometric mean. All samples are handled at once (no per-sample loop).
    """
    y = as_dense_counts(counts)
    lib = y.sum(axis=1) if lib_sizes is None else np.asarray(lib_sizes, dtype=np.float64)
    if lib.shape != (y.shape[0],) or np.any(~(lib > 0)):
        raise ValueError("lib_sizes must be one positive value per row")
    if np.any(y < 0) or not np.all(np.isfinite(y)):
        raise ValueError("counts must be finite and >= 0")
    y = y[:, (y > 0).any(axis=0)]
    n_samples = y.shape[0]
    if y.shape[1] == 0 or n_samples == 1:
        return np.ones(n_samples)
    p = y / lib[:, None]
    if ref_column is None:
        f75 = np.quantile(p, 0.75, axis=1)
        if np.median(f75) < 1e-20:
            ref_column = int(np.argmax(np.sqrt(y).sum(axis=1)))
        else:
            ref_column = int(np.argmin(np.abs(f75 - f75.mean())))
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = np.log2(p)
        logr = np.log2(p / p[ref_column])  # as edgeR: log of the ratio (ties as in R)
        abs_e = (logp + logp[ref_column]) / 2.0
        v = (lib[:, None] - y) / lib[:, None] / y
        v = v + v[ref_column]
    fin = np.isfinite(logr) & np.isfinite(abs_e) & (abs_e > a_cutoff)
    n_fin = fin.sum(axis=1)
    rank_m = _average_ranks(np.where(fin, logr, np.inf))
    rank_a = _average_ranks(np.where(fin, abs_e, np.inf))
    lo_l = np.floor(n_fin * logratio_trim) + 1
    hi_l = n_fin + 1 - lo_l
    lo_s = np.floor(n_fin * sum_trim) + 1
    hi_s = n_fin + 1 - lo_s
    keep = (
        fin
        & (rank_m >= lo_l[:, None])
        & (rank_m <= hi_l[:, None])
        & (rank_a >= lo_s[:, None])
        & (rank_a <= hi_s[:, None])
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        if do_weighting:
            inv_v = np.where(keep, 1.0 / np.where(keep, v, 1.0), 0.0)
            log_f = (np.where(keep, logr, 0.0) * inv_v).sum(axis=1) / inv_v.sum(axis=1)
        else:
            log_f = np.where(keep, logr, 0.0).sum(axis=1) / keep.sum(axis=1)
    log_f = np.where(np.isnan(log_f), 0.0, log_f)
    max_abs = np.where(fin, np.abs(np.where(fin, logr, 0.0)), 0.0).max(axis=1)
    log_f = np.where((n_fin == 0) | (max_abs < 1e-6), 0.0, log_f)
    f = 2.0**log_f
    return f / np.exp(np.mean(np.log(f)))
