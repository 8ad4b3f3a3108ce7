"""Differential expression of drug-treated pseudobulks against DMSO controls.

Two methods:

* :func:`pseudobulk_de` -- textbook edgeR + limma-voom analysis of pseudobulk counts, one
  contrast at a time (a (drug, dose, cell line) over every plate where it has wells, against
  the DMSO wells of the same line on those plates, design ``~ plate + treated``,
  :func:`contrasts`, :func:`contrast_design`): ``filterByExpr(y, design)``
  (:func:`filter_by_expr`), TMM (:func:`calc_norm_factors`), voom precision weights
  (:func:`voom`, with R's ``lowess``, :func:`lowess`), the weighted ``lmFit`` (:func:`lmfit`)
  and limma's empirical Bayes (:func:`ebayes`); equal to R's on the same counts to ~1e-11
  (tests/test_de_reference.py). The departures below are options, off by default.
  ``method="log"`` (values already log expression), ``"deseq2"`` (PyDESeq2,
  :mod:`tahoeflow.de.deseq2`), ``"trend"`` (limma-trend) and ``"plain"`` remain.
* :func:`welch_de` -- per-cell Welch t-test on log-normalised data, identical to
  ``scanpy.tl.rank_genes_groups(method="t-test", reference=control)``.

Everything is vectorised over genes; only contrasts are looped over.

Formulas (limma: Smyth 2004, Stat Appl Genet Mol Biol 3:3; voom: Law et al. 2014, Genome Biol
15:R29; TMM: Robinson & Oshlack 2010, Genome Biol 11:R25; the published R sources' defaults).
Per contrast, ``y_ig`` is the count of gene g in well i, ``N`` wells, ``n1`` treated:

* filterByExpr (edgeR defaults min.count 10, min.total.count 15, large.n 10, min.prop 0.7):
  ``n`` = smallest group size (``n1``, usually 1; ``n > 10`` becomes ``10 + 0.7 (n - 10)``),
  CPM cutoff ``k = 10 / median(lib) * 1e6``; keep g if ``sum_i y_ig >= 15`` and (edgeR) the
  CPM reaches ``k`` in ``>= n`` wells. With one treated well edgeR's rule (``n = 1``) passes a
  gene on the treated well alone, so it keeps the null genes whose treated count is high by
  chance (selection bias; e.g. treated 9 vs controls 3, 3 in a two-control contrast of the
  demo). The option ``gene_filter="pooled"`` (off by default) applies the rule to the pooled CPM
  instead, ``sum_i y_ig / sum_i lib_i * 1e6 >= k n / N``, which depends on the counts only
  through their total (ancillary for the treated/control split under the null: independent
  filtering, Bourgon et al. 2010). It is the conservative choice; edgeR's rule
  (``gene_filter="edgeR"``) tests fewer low-count genes and, with the midpoint voom weights
  below, also kept FDR < 5% on the demo with ~25% more power (benchmarks/bench_de_truth.py).
  Library sizes are then re-summed over the kept genes (edgeR ``keep.lib.sizes=FALSE``).
* TMM (calcNormFactors defaults logratioTrim 0.3, sumTrim 0.05, doWeighting, Acutoff -1e10):
  reference r = the well whose upper quartile of ``y / lib`` is closest to the mean upper
  quartile; for well i over genes with finite values ``M = log2((y_i/N_i) / (y_r/N_r))``,
  ``A = (log2(y_i/N_i) + log2(y_r/N_r)) / 2``, ``v = (N_i - y_i)/(N_i y_i) + (N_r - y_r)/(N_r
  y_r)``; trim genes outside the rank windows ``[floor(0.3 n) + 1, n - floor(0.3 n)]`` of M and
  ``[floor(0.05 n) + 1, n - floor(0.05 n)]`` of A (average ranks); ``log2 f_i = sum(M/v) /
  sum(1/v)``; factors divided by their geometric mean; effective library ``lib_i f_i``.
* voom: ``E = log2((y + 0.5) / (lib + 1) * 1e6)`` (effective lib); unweighted fit; trend of
  ``sqrt(sigma_g)`` against the mean log-count ``x_g = Amean_g + mean(log2(lib + 1)) -
  log2(1e6)`` by :func:`lowess` (span 0.5, 3 robustness iterations, delta = 1% of the range);
  weight of observation (i, g) ``= 1 / trend(m_g + log2(lib_i + 1) - log2(1e6))^4``. Two
  optional departures from limma, off by default (each undone alone: FDR 8-11% on simulated
  small treated wells, resp. 5.5% on the demo case; benchmarks/bench_de_truth.py): (1) the fitted log-CPM ``m_g`` is the midpoint
  ``(m_1 + m_0) / 2`` of the group means (``voom_fitted="midpoint"``) instead of the
  observation's own group mean (``"group"``, limma): with one treated well limma's choice is
  the well's own value, which makes t right-skewed for counts (the weight is largest when the
  count is high by chance); at the midpoint the statistic is to first order the square-root,
  variance-stabilised, difference with symmetric null tails. (2) The trend is smoothed against
  ``u = 2^(-x/2)`` (``voom_axis="inv_sqrt"``, 1/sqrt(mean count)) instead of ``x``
  (``"log2"``, limma): Poisson + constant-CV noise is flat in ``u`` at the high end, while on
  the log2 axis the local line extrapolates the steep low-count decline below the
  replicate-noise floor (top-1% genes got 2-4x too small variances on the demo); below the
  lowest mean count the trend follows the Poisson law ``trend(u_max) sqrt(u / u_max)``.
* weighted lmFit, design ``[intercept, treated]``: ``W_k = sum_{i in k} w_ig``, ``m_k = sum w y
  / W_k``; ``logFC = m_1 - m_0``, ``stdev.unscaled = sqrt(1/W_1 + 1/W_0)``, ``s^2 = sum_i w_ig
  (y_ig - m_k(i))^2 / (N - 2)``, ``AveExpr = Amean`` = unweighted mean of E (limma's).
* log-CPM (edgeR ``cpm(log=TRUE)``; methods "trend" and "plain"): ``prior_i = prior_count *
  lib_i / mean(lib)`` (or ``prior_count`` when ``scale_prior=False``), ``log2((count +
  prior_i) / (lib_i + 2 prior_i) * 1e6)``.
* fitFDist (moment estimation, equal residual df ``d``): ``x = max(s^2, 1e-5 median(s^2))``,
  ``e = log x - digamma(d/2) + log(d/2)``, ``evar = var(e) - mean(trigamma(d/2))``; if
  ``evar > 0``: ``d0 = 2 trigamma^-1(evar)``, ``s0^2 = exp(mean(e) + digamma(d0/2) - log(d0/2))``;
  else ``d0 = inf``, ``s0^2 = mean(x)``. limma-trend (``ebayes(trend=True)``): ``mean(e)``
  becomes the least-squares natural cubic spline in Amean (``ns(df = 1 + [G>=3] + [G>=6] +
  [G>=30])``), ``var(e)`` the residual mean square, ``s0^2`` a per-gene vector.
* squeezeVar: ``s_post^2 = (d s^2 + d0 s0^2) / (d + d0)`` (``s0^2`` when ``d0 = inf``).
* moderated t ``= coef / (stdev_unscaled * s_post)``, ``df_total = min(d + d0, sum_g d_g)``,
  two-sided p from ``t(df_total)``; adj.P.Val is BH within the contrast.
* B (log-odds, ``proportion`` p, ``stdev.coef.lim`` (a, b)): ``v0`` from limma's ``tmixture``
  clipped to ``[a^2, b^2] / median(s0^2)``; ``r = (v + v0) / v`` with ``v = stdev_unscaled^2``;
  ``B = log(p / (1 - p)) - log(r) / 2 + (1 + df_total) / 2 * log((t^2 + df_total) /
  (t^2 / r + df_total))`` (``t^2 (1 - 1/r) / 2`` for the kernel when ``d0 > 1e6``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from scipy import special, stats

from tahoeflow.errors import ConfigError, InputError

CONTROL_DRUG = "DMSO_TF"
GROUP_COLUMNS = ("sample", "cell_line_id", "plate", "drug", "dose_uM", "n_cells")
CONDITION_KEYS = ["drug", "dose_uM", "cell_line_id", "plate"]
PLATE_SEP = "+"
"""Joins the plates of a contrast pooled over plates in its ``plate`` column (``plate3+plate7``)."""
GENE_COLUMNS = ["gene", "ensembl_id", "gene_symbol"]
LIMMA_STATS = ["logFC", "AveExpr", "t", "P.Value", "adj.P.Val", "adj.P.Val.global", "B"]
DESEQ2_STATS = [
    "baseMean",
    "log2FoldChange",
    "lfcSE",
    "stat",
    "pvalue",
    "padj",
    "adj.P.Val.global",
]
COUNT_COLUMNS = ["n_treated_cells", "n_control_cells", "n_treated_wells", "n_control_wells"]
DE_COLUMNS = [*CONDITION_KEYS, *GENE_COLUMNS, *LIMMA_STATS, *COUNT_COLUMNS]
DESEQ2_COLUMNS = [*CONDITION_KEYS, *GENE_COLUMNS, *DESEQ2_STATS, *COUNT_COLUMNS]
SKIPPED_COLUMNS = [*CONDITION_KEYS, "n_cells", "n_control_wells", "what", "n_genes", "reason"]
"""``skipped.csv``: one row per skipped contrast (``what`` = "contrast", ``n_genes`` every gene)
or per group of genes a tested contrast left out (``what`` = "genes", e.g. all-zero counts),
with the reason."""
_KEY_FIELDS = [
    ("drug", pa.string()),
    ("dose_uM", pa.float64()),
    ("cell_line_id", pa.string()),
    ("plate", pa.string()),
    ("gene", pa.int64()),
    ("ensembl_id", pa.string()),
    ("gene_symbol", pa.string()),
]
_CELL_COUNT_FIELDS = [(c, pa.int64()) for c in COUNT_COLUMNS]
TOPTABLE_SCHEMA = pa.schema(
    [*_KEY_FIELDS, *((c, pa.float64()) for c in LIMMA_STATS), *_CELL_COUNT_FIELDS]
)
"""Arrow schema of ``results/de/toptable.parquet`` (limma methods), also when empty. ``gene`` is
the token id, ``ensembl_id`` and ``gene_symbol`` name it; ``adj.P.Val`` is BH within the
contrast, ``adj.P.Val.global`` BH over every row of the table."""
DESEQ2_SCHEMA = pa.schema(
    [*_KEY_FIELDS, *((c, pa.float64()) for c in DESEQ2_STATS), *_CELL_COUNT_FIELDS]
)
"""Arrow schema of the topTable of ``de.method: deseq2`` (DESeq2's column names)."""
WELCH_SCHEMA = pa.schema(
    [
        *_KEY_FIELDS,
        *((c, pa.float64()) for c in ("scores", "pvals", "pvals_adj", "logfoldchanges")),
        ("n_treated_cells", pa.int64()),
        ("n_control_cells", pa.int64()),
    ]
)
"""Arrow schema of ``results/de/welch.parquet``, also when empty."""


def table_schema(method: str) -> pa.Schema:
    """The Arrow schema of the topTable written for ``method``."""
    return DESEQ2_SCHEMA if method == "deseq2" else TOPTABLE_SCHEMA


def stat_columns(method: str) -> dict[str, str]:
    """Names of the shared quantities in ``method``'s table: logFC, P.Value, adj.P.Val."""
    if method == "deseq2":
        return {"logFC": "log2FoldChange", "P.Value": "pvalue", "adj.P.Val": "padj"}
    return {"logFC": "logFC", "P.Value": "P.Value", "adj.P.Val": "adj.P.Val"}


# --------------------------------------------------------------------------------------------
# log-CPM
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# edgeR filterByExpr and calcNormFactors (TMM)
# --------------------------------------------------------------------------------------------


def _as_dense(counts: np.ndarray | sp.spmatrix) -> np.ndarray:
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
    y = _as_dense(counts)
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
    y = _as_dense(counts)
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


# --------------------------------------------------------------------------------------------
# lowess (R's stats::lowess) and voom
# --------------------------------------------------------------------------------------------


def lowess(
    x: np.ndarray,
    y: np.ndarray,
    frac: float = 2.0 / 3.0,
    iters: int = 3,
    delta: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """R's ``lowess(x, y, f=frac, iter=iters, delta)`` (Cleveland 1979): ``(sorted x, fit)``.

    Points are sorted by ``x``. The local fit at ``x_i`` uses the ``ns = max(2, floor(frac n))``
    nearest points (R's window rule), bandwidth ``h`` = distance to the farther window end,
    tricube weights ``(1 - (|x_j - x_i| / h)^3)^3`` (1 within ``0.001 h``, 0 beyond ``0.999 h``,
    ties on the right included) times the robustness weights, and a weighted straight line
    (a weighted mean when the weighted x-spread is <= ``0.001 * range(x)``). Fits are computed
    only at anchor points: after an anchor, the next one is the last point within ``delta``
    (default ``0.01 * range(x)``) of it; points in between are linearly interpolated and ties of
    an anchor copy its value. ``iters`` robustness steps follow with bisquare weights
    ``(1 - (r / 6 MAD)^2)^2`` of the residuals (1 below ``0.001 * 6 MAD``, 0 above
    ``0.999 * 6 MAD``; stopped when ``6 MAD < 1e-7 mean|r|``). Vectorised over anchors.
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError("x and y must have the same length")
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    n = xs.size
    if n < 2:
        return xs, ys.copy()
    ns = max(2, min(n, int(frac * n + 1e-7)))
    span = xs[-1] - xs[0]
    if delta is None:
        delta = 0.01 * span
    # anchors (depend on x only)
    anchors = []
    i = 0
    while True:
        anchors.append(i)
        last = int(np.searchsorted(xs, xs[i], side="right")) - 1  # last tie of the anchor
        if last >= n - 1:
            break
        nxt = int(np.searchsorted(xs, xs[i] + delta, side="right"))
        i = max(last + 1, nxt - 1)
    a_idx = np.asarray(anchors)
    xa = xs[a_idx]
    # window: smallest nleft with x_i - x_l <= x_{l+ns} - x_i (R's sliding rule)
    if ns < n:
        pair = xs[: n - ns] + xs[ns:]
        nleft = np.minimum(np.searchsorted(pair, 2.0 * xa, side="left"), n - ns)
    else:
        nleft = np.zeros(a_idx.size, dtype=np.int64)
    nright = nleft + ns - 1
    h = np.maximum(xa - xs[nleft], xs[nright] - xa)
    h9, h1 = 0.999 * h, 0.001 * h
    nrt = np.maximum(np.searchsorted(xs, xa + h9, side="right") - 1, nright)
    width = int((nrt - nleft).max()) + 1
    cols = nleft[:, None] + np.arange(width)
    inwin = cols <= nrt[:, None]
    cols = np.minimum(cols, n - 1)
    dx = xs[cols] - xa[:, None]
    r = np.abs(dx)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = r / h[:, None]
        q = 1.0 - q * q * q
        kern = q * q * q
    kern[r <= h1[:, None]] = 1.0
    kern[~(inwin & (r <= h9[:, None]))] = 0.0
    yw = ys[cols]
    # weighted moments about the anchor, as row-wise dot products with the robustness weights
    k_dx = kern * dx
    k_dx2 = k_dx * dx
    k_y = kern * yw
    k_dxy = k_dx * yw
    rw = np.ones(n)
    fit = ys.copy()
    for it in range(iters + 1):
        if it == 0:
            s0, s1, s2 = kern.sum(axis=1), k_dx.sum(axis=1), k_dx2.sum(axis=1)
            sy, sxy = k_y.sum(axis=1), k_dxy.sum(axis=1)
        else:
            r = rw[cols]
            s0 = np.einsum("ij,ij->i", kern, r)
            s1 = np.einsum("ij,ij->i", k_dx, r)
            s2 = np.einsum("ij,ij->i", k_dx2, r)
            sy = np.einsum("ij,ij->i", k_y, r)
            sxy = np.einsum("ij,ij->i", k_dxy, r)
        ok = s0 > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            a = s1 / s0  # weighted mean of x - x_i
            ybar = sy / s0
            c = np.maximum(s2 / s0 - a * a, 0.0)  # weighted variance of x
            cov = sxy / s0 - a * ybar
            slope = (h > 0) & (np.sqrt(c) > 0.001 * span)
            line = ybar + np.where(slope, -a * cov / np.where(slope, c, 1.0), 0.0)
        fa = np.where(ok, line, ys[a_idx])
        fit = np.interp(xs, xa, fa)
        if it == iters:
            break
        res = np.abs(ys - fit)
        cmad = 6.0 * float(np.median(res))
        if cmad < 1e-7 * float(res.mean()):
            break
        rw = np.where(
            res <= 0.001 * cmad,
            1.0,
            np.where(res <= 0.999 * cmad, (1.0 - (res / cmad) ** 2) ** 2, 0.0),
        )
    return xs, fit


class Voom(NamedTuple):
    """voom output for a two-group design (samples x genes)."""

    E: np.ndarray  # log2-CPM, log2((count + 0.5) / (lib + 1) * 1e6)
    weights: np.ndarray  # precision weights
    lib_sizes: np.ndarray  # the library sizes used (with normalisation factors)
    trend_x: np.ndarray  # lowess trend, sorted: mean log2 count (axis "log2") or 2^(-x/2)
    trend_y: np.ndarray  # lowess trend: sqrt(residual sd)


VOOM_AXES = ("inv_sqrt", "log2")


VOOM_FITTED = ("group", "midpoint")


def voom(
    counts: np.ndarray | sp.spmatrix,
    n_treated: int,
    lib_sizes: np.ndarray | None = None,
    *,
    span: float = 0.5,
    axis: str = "log2",
    fitted: str = "group",
    design: np.ndarray | None = None,
) -> Voom:
    """limma ``voom`` for the design ``[intercept, treated]`` (the first ``n_treated`` rows), or
    any full-rank ``design`` (samples x coefficients) whose last column is the tested one (e.g.
    ``~ plate + treated``, :func:`contrast_design`).

    ``E = log2((count + 0.5) / (lib + 1) * 1e6)`` with ``lib`` = ``lib_sizes`` (edgeR's effective
    library sizes ``lib * norm.factors``; default the row sums); unweighted two-group fit; per
    gene ``x = Amean + mean(log2(lib + 1)) - log2(1e6)`` (mean log2 count) and ``s =
    sqrt(sigma)``, all-zero genes left out; the weight of observation (i, g) is ``1 /
    trend(m_g + log2(lib_i + 1) - log2(1e6))^4`` where ``m_g`` is the fitted log-CPM.

    ``fitted="group"`` is limma's: ``m_g`` is the observation's fitted value (with the design
    ``[intercept, treated]`` its group mean). With a single
    treated well that is the well's own value, so its weight is largest exactly when its count
    is high by chance and the moderated t is right-skewed (Poisson counts below ~30: 2-9x too
    many t > 3.29, none below -3.29; with a large treated library the noisy control mean skews
    it the other way). ``fitted="midpoint"`` evaluates every observation at the midpoint of
    the two group means, ``(m_1 + m_0) / 2`` (with a general design: the fitted value with half
    the treatment coefficient, the same for treated and control rows of a plate): the variance
    of the difference is taken at the
    geometric-mean expression, which to first order turns the log-scale difference into the
    square-root (Poisson variance-stabilising) difference, with symmetric null tails. Both
    choices agree when the group means agree.

    ``axis="log2"`` is limma's trend: :func:`lowess` (``f=span``) of ``s`` against ``x``,
    linear interpolation, constant beyond the ends (R ``approxfun(rule=2)``).
    ``axis="inv_sqrt"`` smooths ``s`` against ``u = 2^(-x/2)`` (one over the square root of
    the mean count) instead, with the same lowess. For counts with Poisson noise plus a
    constant-CV replicate noise ``phi``, ``s^4 ~ (u^2 + phi) / ln(2)^2``: flat near ``u = 0``
    (high counts), so the local line at the high-count boundary does not extrapolate the steep
    low-count decline below the noise floor, which the log2 axis does (on the demo it predicted
    2-4x too small variances for the top genes). Beyond the lowest mean count (``u > u_max``)
    the trend follows the Poisson law ``s ~ sqrt(u)``: ``trend(u_max) * sqrt(u / u_max)``; a
    single well's fitted count can lie far below every gene's mean count. On both axes the
    trend is floored at its smallest positive value so weights stay finite.
    """
    if axis not in VOOM_AXES:
        raise ValueError(f"axis must be one of {VOOM_AXES}, got {axis!r}")
    if fitted not in VOOM_FITTED:
        raise ValueError(f"fitted must be one of {VOOM_FITTED}, got {fitted!r}")
    y = _as_dense(counts)
    n, n_genes = y.shape
    if n_genes < 2:
        raise ValueError("need at least two genes to fit a mean-variance trend")
    if not 1 <= n_treated < n:
        raise ValueError("need at least one treated and one control sample")
    if np.any(y < 0) or not np.all(np.isfinite(y)):
        raise ValueError("counts must be finite and >= 0")
    lib = y.sum(axis=1) if lib_sizes is None else np.asarray(lib_sizes, dtype=np.float64)
    if lib.shape != (n,) or np.any(~(lib > 0)):
        raise ValueError("lib_sizes must be one positive value per row")
    E = np.log2((y + 0.5) / (lib[:, None] + 1.0) * 1e6)
    X = two_group_design(n_treated, n) if design is None else np.asarray(design, np.float64)
    if X.shape[0] != n:
        raise ValueError(f"design has {X.shape[0]} rows, counts {n}")
    beta, sigma = _ols(E, X)
    sx = E.mean(axis=0) + np.mean(np.log2(lib + 1.0)) - np.log2(1e6)
    sy = np.sqrt(sigma)
    nonzero = y.sum(axis=0) > 0
    tx = sx[nonzero] if axis == "log2" else 2.0 ** (-sx[nonzero] / 2.0)
    lx, ly = lowess(tx, sy[nonzero], frac=span)
    ux, first = np.unique(lx, return_index=True)  # tied x share one fitted value
    uy = ly[first]
    pos = uy[uy > 0]
    if pos.size == 0:
        return Voom(E, np.ones_like(E), lib, lx, ly)
    uy = np.maximum(uy, pos.min())
    if fitted == "midpoint":  # every observation at half the treatment effect (last column)
        m = X[:, :-1] @ beta[:-1] + 0.5 * beta[-1]
    else:
        m = X @ beta  # limma: the fitted values
    fitted_logcount = m + np.log2(lib + 1.0)[:, None] - np.log2(1e6)
    if axis == "log2":
        pred = np.interp(fitted_logcount, ux, uy)
    else:
        u = 2.0 ** (-fitted_logcount / 2.0)
        pred = np.interp(u, ux, uy)
        beyond = u > ux[-1]
        pred[beyond] = uy[-1] * np.sqrt(u[beyond] / ux[-1])
    return Voom(E, 1.0 / pred**4, lib, lx, ly)


# --------------------------------------------------------------------------------------------
# lmFit for the two-group design
# --------------------------------------------------------------------------------------------


@dataclass
class LmFit:
    """Per-gene least-squares fit of one coefficient (limma ``MArrayLM`` subset)."""

    coefficients: np.ndarray  # (G,) the tested coefficient (treated - control)
    stdev_unscaled: np.ndarray  # (G,) sqrt of the coefficient's unscaled variance
    sigma: np.ndarray  # (G,) residual standard deviation
    df_residual: np.ndarray  # (G,) residual degrees of freedom
    amean: np.ndarray | None = None  # (G,) mean log-expression over all samples


def lmfit_two_group(
    y_treated: np.ndarray,
    y_control: np.ndarray,
    w_treated: np.ndarray | None = None,
    w_control: np.ndarray | None = None,
) -> LmFit:
    """limma ``lmFit`` with design ``[intercept, treated]`` for every gene at once.

    ``y_treated`` (n1 x G) and ``y_control`` (n0 x G) are log-expression values; optional
    ``w_treated``/``w_control`` (same shapes, > 0) are precision weights (voom), for which the
    fit is weighted least squares per gene. With group weight sums ``W1 = sum_i w_1i`` and
    ``W0 = sum_i w_0i``: the coefficient is ``m1 - m0`` with weighted group means
    ``m_k = sum_i w_ki y_ki / W_k``, its unscaled sd ``sqrt(1/W1 + 1/W0)``, and the residual
    variance ``sum_ki w_ki (y_ki - m_k)^2 / (n1 + n0 - 2)`` (unweighted: ``w = 1``, so
    ``sqrt(1/n1 + 1/n0)`` and the pooled variance). A single treated replicate works (its
    residual is zero and the df come from the controls). ``amean`` is the unweighted mean over
    all samples (limma's ``Amean``).
    """
    y1 = np.atleast_2d(np.asarray(y_treated, dtype=np.float64))
    y0 = np.atleast_2d(np.asarray(y_control, dtype=np.float64))
    if y1.shape[1] != y0.shape[1]:
        raise ValueError(f"gene counts differ: treated {y1.shape[1]}, control {y0.shape[1]}")
    n1, n0 = y1.shape[0], y0.shape[0]
    if n1 < 1 or n0 < 1:
        raise ValueError("need at least one treated and one control sample")
    if (w_treated is None) != (w_control is None):
        raise ValueError("give weights for both groups or for neither")
    df = n1 + n0 - 2
    n_genes = y1.shape[1]
    amean = (y1.sum(axis=0) + y0.sum(axis=0)) / (n1 + n0)
    if w_treated is None:
        m1 = y1.mean(axis=0)
        m0 = y0.mean(axis=0)
        rss = ((y1 - m1) ** 2).sum(axis=0) + ((y0 - m0) ** 2).sum(axis=0)
        su = np.full(n_genes, np.sqrt(1.0 / n1 + 1.0 / n0))
    else:
        w1 = np.atleast_2d(np.asarray(w_treated, dtype=np.float64))
        w0 = np.atleast_2d(np.asarray(w_control, dtype=np.float64))
        if w1.shape != y1.shape or w0.shape != y0.shape:
            raise ValueError("weights must have the shapes of the expression values")
        if np.any(~(w1 > 0)) or np.any(~(w0 > 0)) or np.any(~np.isfinite(w1 + w0.sum(axis=0))):
            raise ValueError("weights must be finite and > 0")
        sw1 = w1.sum(axis=0)
        sw0 = w0.sum(axis=0)
        m1 = (w1 * y1).sum(axis=0) / sw1
        m0 = (w0 * y0).sum(axis=0) / sw0
        rss = (w1 * (y1 - m1) ** 2).sum(axis=0) + (w0 * (y0 - m0) ** 2).sum(axis=0)
        su = np.sqrt(1.0 / sw1 + 1.0 / sw0)
    sigma = np.sqrt(rss / df) if df > 0 else np.full(n_genes, np.nan)
    return LmFit(
        coefficients=m1 - m0,
        stdev_unscaled=su,
        sigma=sigma,
        df_residual=np.full(n_genes, float(df)),
        amean=amean,
    )


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


def _ols(E: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unweighted least squares of every column of ``E`` (samples x genes) on ``X``:
    ``(coefficients (p x G), sigma (G,))``; ``X`` must have full column rank and ``n > p``."""
    n, p = X.shape
    q, r = np.linalg.qr(X)
    if np.min(np.abs(np.diag(r))) < 1e-7 * np.max(np.abs(np.diag(r))):
        raise ValueError("the design matrix is not of full column rank")
    beta = np.linalg.solve(r, q.T @ E)
    resid = E - X @ beta
    df = n - p
    sigma = np.sqrt((resid * resid).sum(axis=0) / df) if df > 0 else np.full(E.shape[1], np.nan)
    return beta, sigma


def leverages(X: np.ndarray) -> np.ndarray:
    """Diagonal of the hat matrix of ``X`` (R's ``hat(design)``)."""
    q, _ = np.linalg.qr(np.asarray(X, dtype=np.float64))
    return (q * q).sum(axis=1)


def lmfit(E: np.ndarray, X: np.ndarray, weights: np.ndarray | None = None) -> LmFit:
    """limma ``lmFit(E, design, weights)`` for the LAST coefficient of a full-rank design.

    ``E`` (samples x genes) log-expression, ``X`` (samples x p), ``weights`` (samples x genes,
    > 0) or None. Per gene, weighted least squares: ``beta = (X' W X)^-1 X' W y``, the tested
    coefficient's ``stdev.unscaled = sqrt([(X' W X)^-1]_pp)``, ``sigma^2 = sum w r^2 / (n - p)``;
    ``amean`` the unweighted mean of ``E`` (limma's Amean). With two columns (intercept,
    treated; treated rows first) this is :func:`lmfit_two_group`'s closed form. Vectorised:
    the p x p systems of all genes are solved at once.
    """
    E = np.asarray(E, dtype=np.float64)
    X = np.asarray(X, dtype=np.float64)
    n, p = X.shape
    if E.shape[0] != n:
        raise ValueError(f"design has {n} rows, expression values {E.shape[0]}")
    if n <= p:
        raise ValueError("no residual degrees of freedom in the linear model")
    n1 = int(X[:, -1].sum())
    if p == 2 and np.all(X[:, 0] == 1) and np.all(X[:n1, 1] == 1) and np.all(X[n1:, 1] == 0):
        w1 = w0 = None
        if weights is not None:
            w1, w0 = weights[:n1], weights[n1:]
        return lmfit_two_group(E[:n1], E[n1:], w1, w0)
    G = E.shape[1]
    if weights is None:
        beta, sigma = _ols(E, X)
        xtx_inv = np.linalg.inv(X.T @ X)
        su = np.full(G, np.sqrt(xtx_inv[-1, -1]))
        coef = beta[-1]
    else:
        W = np.asarray(weights, dtype=np.float64)
        if W.shape != E.shape:
            raise ValueError("weights must have the shape of the expression values")
        if np.any(~(W > 0)) or not np.all(np.isfinite(W)):
            raise ValueError("weights must be finite and > 0")
        A = np.einsum("ip,ig,iq->gpq", X, W, X)
        b = np.einsum("ip,ig->gp", X, W * E)
        A_inv = np.linalg.inv(A)
        beta = np.einsum("gpq,gq->pg", A_inv, b)
        resid = E - X @ beta
        sigma = np.sqrt((W * resid * resid).sum(axis=0) / (n - p))
        su = np.sqrt(A_inv[:, -1, -1])
        coef = beta[-1]
    return LmFit(
        coefficients=coef,
        stdev_unscaled=su,
        sigma=sigma,
        df_residual=np.full(G, float(n - p)),
        amean=E.mean(axis=0),
    )


# --------------------------------------------------------------------------------------------
# Empirical Bayes (limma squeezeVar / fitFDist / eBayes)
# --------------------------------------------------------------------------------------------


def trigamma_inverse(x: np.ndarray | float) -> np.ndarray:
    """Solve ``trigamma(y) = x`` for ``y`` (limma's Newton iteration, vectorised)."""
    x = np.atleast_1d(np.asarray(x, dtype=np.float64))
    y = np.full_like(x, np.nan)
    ok = np.isfinite(x) & (x >= 0)
    big = ok & (x > 1e7)
    small = ok & (x < 1e-6)
    y[big] = 1.0 / np.sqrt(x[big])
    y[small] = 1.0 / x[small]
    mid = ok & ~big & ~small
    if mid.any():
        xm = x[mid]
        ym = 0.5 + 1.0 / xm
        for _ in range(51):
            tri = special.polygamma(1, ym)
            dif = tri * (1.0 - tri / xm) / special.polygamma(2, ym)
            ym = ym + dif
            if np.max(-dif / ym) < 1e-8:
                break
        y[mid] = ym
    return y


def natural_spline_basis(x: np.ndarray, df: int) -> np.ndarray:
    """A basis of R's ``splines::ns(x, df=df, intercept=TRUE)`` space (same column span).

    Natural cubic splines with boundary knots at ``range(x)`` and ``df - 2`` interior knots at
    the quantiles ``k / (df - 1)`` of ``x`` (R type 7), in the truncated-power form of Hastie,
    Tibshirani & Friedman (ESL eq. 5.4-5.5): ``1, x, d_k(x) - d_{K-1}(x)`` with ``d_k(x) =
    ((x - xi_k)_+^3 - (x - xi_K)_+^3) / (xi_K - xi_k)``, on ``x`` rescaled to [0, 1]. Least-squares
    fitted values are the same as with R's B-spline basis, which spans the same space.
    """
    x = np.asarray(x, dtype=np.float64)
    lo, hi = float(x.min()), float(x.max())
    z = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    n_inner = df - 2
    inner = np.quantile(z, np.arange(1, n_inner + 1) / (n_inner + 1)) if n_inner > 0 else []
    knots = np.concatenate([[0.0], inner, [1.0]])
    cols = [np.ones_like(z), z]
    K = knots.size

    def d(k: int) -> np.ndarray:
        return (np.maximum(z - knots[k], 0) ** 3 - np.maximum(z - knots[-1], 0) ** 3) / (
            knots[-1] - knots[k]
        )

    last = d(K - 2)
    for k in range(K - 2):
        cols.append(d(k) - last)
    return np.column_stack(cols)


def fit_f_dist(
    x: np.ndarray, df1: np.ndarray | float, covariate: np.ndarray | None = None
) -> tuple[float | np.ndarray, float]:
    """Moment estimates ``(scale s0^2, df2 d0)`` of a scaled F distribution (limma ``fitFDist``).

    ``x`` are sample variances with ``df1`` degrees of freedom. Values that are not finite,
    negative, or have ``df1 <= 0`` are ignored; exact zeros are offset to ``1e-5 * median``.
    When the observed log-variance spread is no larger than the sampling spread, ``d0 = inf``
    and ``s0^2`` is the mean variance (limma >= 3.33).

    With a ``covariate`` (limma-trend: the genes' average log-expression) the mean of
    ``e = log x - digamma(d/2) + log(d/2)`` is a natural cubic spline in the covariate with
    ``min(1 + [n>=3] + [n>=6] + [n>=30], #unique)`` df (:func:`natural_spline_basis`),
    ``evar = RSS / (n - rank) - mean(trigamma(d/2))``, and the returned scale is the per-value
    vector ``exp(fitted e + digamma(d0/2) - log(d0/2))`` (``exp(fitted e)`` when ``d0 = inf``;
    NaN for the ignored values).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    if covariate is not None:
        cov = np.asarray(covariate, dtype=np.float64).ravel()
        if cov.shape != x.shape:
            raise ValueError("covariate must have one value per variance")
    if n == 0:
        return float("nan"), float("nan")
    if n == 1:
        return (float(x[0]) if covariate is None else x.copy()), 0.0
    df1 = np.broadcast_to(np.asarray(df1, dtype=np.float64), x.shape)
    ok = np.isfinite(df1) & (df1 > 1e-15) & np.isfinite(x) & (x > -1e-15)
    if covariate is not None:
        ok &= np.isfinite(cov)
    nok = int(ok.sum())
    if covariate is not None:
        splinedf = 1 + (nok >= 3) + (nok >= 6) + (nok >= 30)
        splinedf = min(splinedf, np.unique(cov[ok]).size)
        if splinedf < 2:
            scale, df2 = fit_f_dist(x, df1)
            return np.full(n, scale), df2
    if nok == 0:
        return float("nan"), float("nan")
    if nok == 1:
        return (float(x[ok][0]) if covariate is None else np.where(ok, x, np.nan)), 0.0
    xo = np.maximum(x[ok], 0.0)
    d = df1[ok]
    m = float(np.median(xo))
    if m == 0:
        warnings.warn(
            "more than half of residual variances are exactly zero: eBayes unreliable",
            RuntimeWarning,
            stacklevel=2,
        )
        m = 1.0
    xo = np.maximum(xo, 1e-5 * m)
    e = np.log(xo) - special.digamma(d / 2) + np.log(d / 2)
    if covariate is None:
        emean = float(e.mean())
        evar = float(((e - emean) ** 2).sum() / (nok - 1))
    else:
        basis = natural_spline_basis(cov[ok], splinedf)
        coef, _, rank, _ = np.linalg.lstsq(basis, e, rcond=None)
        emean = basis @ coef
        evar = float(((e - emean) ** 2).sum() / (nok - rank))
    evar -= float(special.polygamma(1, d / 2).mean())
    if evar > 0:
        df2 = 2.0 * float(trigamma_inverse(evar)[0])
        s20 = np.exp(emean + special.digamma(df2 / 2) - np.log(df2 / 2))
    else:
        df2 = float("inf")
        s20 = float(xo.mean()) if covariate is None else np.exp(emean)
    if covariate is None:
        return float(s20), df2
    out = np.full(n, np.nan)
    out[ok] = s20
    return out, df2


def squeeze_var(
    var: np.ndarray, df: np.ndarray | float, covariate: np.ndarray | None = None
) -> tuple[np.ndarray, float | np.ndarray, float]:
    """limma ``squeezeVar``: returns ``(var_post, var_prior, df_prior)``.

    ``var_prior`` is a scalar, or with ``covariate`` (limma-trend) one value per gene.
    """
    var = np.asarray(var, dtype=np.float64).ravel().copy()
    df = np.broadcast_to(np.asarray(df, dtype=np.float64), var.shape)
    if var.size == 0:
        raise ValueError("var is empty")
    if var.size == 1:
        return var.copy(), (float(var[0]) if covariate is None else var.copy()), 0.0
    var[df == 0] = 0.0
    var_prior, df_prior = fit_f_dist(var, df, covariate)
    if np.isnan(df_prior):
        raise ValueError("could not estimate prior df")
    if np.isfinite(df_prior):
        var_post = (df * var + df_prior * var_prior) / (df + df_prior)
    else:
        var_post = np.broadcast_to(np.asarray(var_prior, dtype=np.float64), var.shape).copy()
    return var_post, var_prior, df_prior


def tmixture(
    tstat: np.ndarray,
    stdev_unscaled: np.ndarray,
    df: np.ndarray,
    proportion: float,
    v0_lim: tuple[float, float] | None = None,
) -> float:
    """limma ``tmixture.vector``: prior variance ``v0`` of the coefficient for DE genes."""
    tstat = np.asarray(tstat, dtype=np.float64)
    su = np.broadcast_to(np.asarray(stdev_unscaled, dtype=np.float64), tstat.shape)
    df = np.broadcast_to(np.asarray(df, dtype=np.float64), tstat.shape)
    keep = ~np.isnan(tstat)
    tstat, su, df = tstat[keep], su[keep], df[keep].copy()
    ngenes = tstat.size
    ntarget = int(np.ceil(proportion / 2 * ngenes))
    if ntarget < 1:
        return float("nan")
    p = max(ntarget / ngenes, proportion)
    tstat = np.abs(tstat)
    max_df = float(df.max())
    lower = df < max_df
    if lower.any():
        # equalise df: same upper-tail probability under t(max_df)
        tail_logp = stats.t.logsf(tstat[lower], df[lower])
        tstat[lower] = stats.t.isf(np.exp(tail_logp), max_df)
        df[lower] = max_df
    order = np.argsort(-tstat, kind="stable")[:ntarget]
    tstat = tstat[order]
    v1 = su[order] ** 2
    r = np.arange(1, ntarget + 1, dtype=np.float64)
    p0 = 2.0 * stats.t.sf(tstat, max_df)
    ptarget = ((r - 0.5) / ngenes - (1.0 - p) * p0) / p
    v0 = np.zeros(ntarget)
    pos = ptarget > p0
    if pos.any():
        qtarget = stats.t.isf(ptarget[pos] / 2, max_df)
        v0[pos] = v1[pos] * ((tstat[pos] / qtarget) ** 2 - 1.0)
    if v0_lim is not None:
        v0 = np.clip(v0, v0_lim[0], v0_lim[1])
    return float(v0.mean())


@dataclass
class EBayes:
    """limma ``eBayes`` output for one coefficient."""

    t: np.ndarray
    p_value: np.ndarray
    lods: np.ndarray  # B statistic
    s2_post: np.ndarray
    s2_prior: float | np.ndarray  # per gene with trend=True
    df_prior: float
    df_total: np.ndarray
    var_prior: float


def ebayes(
    fit: LmFit,
    proportion: float = 0.01,
    stdev_coef_lim: tuple[float, float] = (0.1, 4.0),
    *,
    df_prior: float | None = None,
    s2_prior: float | None = None,
    trend: bool = False,
) -> EBayes:
    """limma ``eBayes`` for one coefficient of ``fit`` (moderated t, p-values and B).

    ``df_prior``/``s2_prior`` override the fitFDist estimates (e.g. ``df_prior=0`` gives the
    ordinary t-test with ``df_residual`` df). ``trend=True`` is limma-trend: the prior variance
    is a smooth function of ``fit.amean`` (:func:`fit_f_dist` with a covariate), and the B
    statistic's coefficient-variance limits use ``median(s0^2)`` (as limma does).
    """
    coef = np.asarray(fit.coefficients, dtype=np.float64)
    su = np.broadcast_to(np.asarray(fit.stdev_unscaled, dtype=np.float64), coef.shape)
    sigma = np.broadcast_to(np.asarray(fit.sigma, dtype=np.float64), coef.shape)
    df_res = np.broadcast_to(np.asarray(fit.df_residual, dtype=np.float64), coef.shape)
    if np.all(df_res == 0):
        raise ValueError("no residual degrees of freedom in linear model fits")
    if not np.any(np.isfinite(sigma)):
        raise ValueError("no finite residual standard deviations")
    covariate = None
    if trend:
        if fit.amean is None:
            raise ValueError("trend=True needs fit.amean")
        covariate = np.asarray(fit.amean, dtype=np.float64)
    s2 = sigma**2
    if df_prior is None:
        s2_post, s2_prior_est, d0 = squeeze_var(s2, df_res, covariate)
        if s2_prior is not None:
            s2_prior_est = float(s2_prior)
            s2_post = _post_var(s2, df_res, s2_prior_est, d0)
    else:
        d0 = float(df_prior)
        if s2_prior is not None:
            s2_prior_est = float(s2_prior)
        else:
            s2_prior_est = fit_f_dist(s2, df_res, covariate)[0]
        s2_post = _post_var(s2, df_res, s2_prior_est, d0)
    t = coef / su / np.sqrt(s2_post)
    df_total = np.minimum(df_res + d0, np.nansum(df_res))
    p_value = 2.0 * stats.t.sf(np.abs(t), df_total)

    s2_ref = float(np.nanmedian(s2_prior_est)) if np.ndim(s2_prior_est) else s2_prior_est
    lim = (
        stdev_coef_lim[0] ** 2 / s2_ref,
        stdev_coef_lim[1] ** 2 / s2_ref,
    )
    var_prior = tmixture(t, su, df_total, proportion, lim)
    if np.isnan(var_prior):
        var_prior = 1.0 / s2_ref
        warnings.warn(
            "estimation of var.prior failed - set to default value", RuntimeWarning, stacklevel=2
        )
    r = (su**2 + var_prior) / su**2
    t2 = t**2
    if d0 > 1e6:
        kernel = t2 * (1.0 - 1.0 / r) / 2.0
    else:
        kernel = (1.0 + df_total) / 2.0 * np.log((t2 + df_total) / (t2 / r + df_total))
    lods = np.log(proportion / (1.0 - proportion)) - np.log(r) / 2.0 + kernel
    return EBayes(
        t=t,
        p_value=p_value,
        lods=lods,
        s2_post=s2_post,
        s2_prior=s2_prior_est,
        df_prior=d0,
        df_total=df_total,
        var_prior=var_prior,
    )


def _post_var(
    s2: np.ndarray, df: np.ndarray, s2_prior: float | np.ndarray, d0: float
) -> np.ndarray:
    if np.isinf(d0):
        return np.broadcast_to(np.asarray(s2_prior, dtype=np.float64), s2.shape).copy()
    s2 = np.where(df == 0, 0.0, s2)
    return (df * s2 + d0 * s2_prior) / (df + d0)


def bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (R ``p.adjust(method="BH")``); NaNs stay NaN."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    q = p[ok]
    n = q.size
    if n == 0:
        return out
    order = np.argsort(q, kind="stable")
    scaled = q[order] * n / np.arange(1, n + 1)
    adj = np.minimum.accumulate(scaled[::-1])[::-1]
    res = np.empty(n)
    res[order] = np.minimum(adj, 1.0)
    out[ok] = res
    return out


# --------------------------------------------------------------------------------------------
# Contrasts and the pseudobulk driver
# --------------------------------------------------------------------------------------------


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


def _check_groups(groups_df: pd.DataFrame) -> pd.DataFrame:
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
        raise ConfigError("min_cells", f"must be >= 0, got {min_cells}")
    if min_control_wells < 1:
        raise ConfigError("min_control_wells", f"must be >= 1, got {min_control_wells}")
    min_ctrl_cells = min_cells if min_control_cells is None else min_control_cells
    g = _check_groups(groups_df)
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


DE_METHODS = ("voom", "trend", "plain", "log", "deseq2")


def _de_contrast(
    sub: np.ndarray,
    X: np.ndarray,
    method: str,
    *,
    min_count: float,
    min_total_count: float,
    gene_filter: str,
    normalize: str,
    prior_count: float,
    span: float,
    voom_axis: str,
    voom_fitted: str,
    proportion: float,
    stdev_coef_lim: tuple[float, float],
) -> tuple[np.ndarray, LmFit, EBayes] | str:
    """One contrast (rows: the treated wells, then controls; ``X`` its design, treated last):
    ``(kept genes, fit, eBayes)``, or the reason why nothing could be tested."""
    if method == "plain":
        lib = sub.sum(axis=1)
        keep = sub.sum(axis=0) >= min_total_count
        if not keep.any():
            return f"no gene with a total count >= {min_total_count:g}"
        y = log_cpm(sub[:, keep], lib, prior_count)
        fit = lmfit(y, X)
        return keep, fit, ebayes(fit, proportion, stdev_coef_lim)
    keep = filter_by_expr(
        sub,
        sub.sum(axis=1),
        design=X,
        min_count=min_count,
        min_total_count=min_total_count,
        pooled=gene_filter == "pooled",
    )
    if keep.sum() < 2:
        return f"{int(keep.sum())} gene(s) pass filterByExpr (need >= 2)"
    yk = sub[:, keep]
    lib = yk.sum(axis=1)  # edgeR: y[keep, , keep.lib.sizes=FALSE]
    if np.any(lib <= 0):
        return "a well has no counts in the genes that pass filterByExpr"
    nf = calc_norm_factors(yk, lib) if normalize == "TMM" else np.ones(lib.size)
    eff = lib * nf
    if method == "voom":
        v = voom(yk, int(X[:, -1].sum()), eff, span=span, axis=voom_axis, fitted=voom_fitted,
                 design=X)  # fmt: skip
        fit = lmfit(v.E, X, v.weights)
        return keep, fit, ebayes(fit, proportion, stdev_coef_lim)
    y = log_cpm(yk, eff, prior_count)
    fit = lmfit(y, X)
    return keep, fit, ebayes(fit, proportion, stdev_coef_lim, trend=True)


def gene_annotation(gene_ids: np.ndarray, genes: pd.DataFrame | None) -> tuple[np.ndarray, ...]:
    """``(ensembl_id, gene_symbol)`` object arrays aligned with ``gene_ids`` (None if unknown)."""
    n = gene_ids.size
    if genes is None:
        return np.full(n, None, dtype=object), np.full(n, None, dtype=object)
    if "token_id" not in genes.columns:
        raise InputError("gene table", "missing column 'token_id'")
    idx = pd.Index(genes["token_id"]).get_indexer(gene_ids)
    out = []
    for col in ("ensembl_id", "gene_symbol"):
        vals = np.full(n, None, dtype=object)
        if col in genes.columns:
            src = genes[col].to_numpy(dtype=object)
            vals[idx >= 0] = src[idx[idx >= 0]]
        out.append(vals)
    return tuple(out)


def pseudobulk_de(
    counts: np.ndarray | sp.spmatrix,
    groups_df: pd.DataFrame,
    gene_ids: Sequence | np.ndarray,
    min_cells: int,
    *,
    min_control_wells: int = 2,
    method: str = "voom",
    min_count: float = 10.0,
    min_total_count: float | None = None,
    gene_filter: str = "edgeR",
    normalize: str = "TMM",
    prior_count: float = 2.0,
    span: float = 0.5,
    voom_axis: str = "log2",
    voom_fitted: str = "group",
    proportion: float = 0.01,
    stdev_coef_lim: tuple[float, float] = (0.1, 4.0),
    control: str = CONTROL_DRUG,
    pool_plates: bool = True,
    genes: pd.DataFrame | None = None,
    deseq2_options: dict | None = None,
    return_skipped: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """DE of every treated condition against its DMSO wells (one fit per contrast).

    ``counts``: pseudobulk counts, one row per (sample, cell line) well (rows of
    ``groups_df``), one column per gene (``gene_ids``, token ids; ``genes``, a table with
    ``token_id``, ``ensembl_id``, ``gene_symbol``, names them). Each contrast (see
    :func:`contrasts`; pooled over plates by default) is analysed on its own wells only, with
    the design ``~ plate + treated`` (``[intercept, treated]`` on one plate). ``adj.P.Val`` is
    BH within the contrast, ``adj.P.Val.global`` BH over every row of the returned table (the
    workflow recomputes it over the whole table after its per-line jobs). ``method``:

    * ``"voom"`` (default): textbook edgeR + limma-voom, equal to R's ``filterByExpr(y,
      design)``, ``y[keep, , keep.lib.sizes=FALSE]``, ``calcNormFactors``, ``voom``,
      ``lmFit``, ``eBayes``, ``topTable`` on the contrast's wells (``min_count``,
      ``min_total_count`` default 15; ``normalize="none"`` skips TMM). Departures, off by
      default: ``gene_filter="pooled"`` (the CPM rule on the pooled counts),
      ``voom_axis="inv_sqrt"`` (trend against 1/sqrt(mean count)), ``voom_fitted="midpoint"``
      (weights at half the treatment effect), see :func:`voom` and :func:`filter_by_expr`.
      AveExpr is the mean voom log-CPM.
    * ``"log"``: the values are already log expression (e.g. L1000's log2 QNORM); a well's
      value is the mean over its cells (float64); no filter, normalisation or weights;
      limma-trend eBayes (R's ``lmFit`` + ``eBayes(trend=TRUE)``).
    * ``"deseq2"``: PyDESeq2 (:mod:`tahoeflow.de.deseq2`) with the same design; DESeq2's columns.
    * ``"trend"`` (limma-trend on log-CPM) and ``"plain"`` (log-CPM, constant prior): older
      variants kept for comparison.

    Bad input never reaches the table: a contrast with a zero-library well, or whose fit fails,
    is skipped; genes with all-zero counts over the contrast's wells (and, as a safeguard, any
    non-finite statistic) are left out; each with its reason in the skipped table
    (:data:`SKIPPED_COLUMNS`). Returns the tidy table (:data:`DE_COLUMNS`, or
    :data:`DESEQ2_COLUMNS`), sorted by condition keys then gene; with ``return_skipped``
    also the skipped table.
    """
    if method not in DE_METHODS:
        raise ConfigError("method", f"must be one of {', '.join(DE_METHODS)}, got {method!r}")
    if gene_filter not in ("pooled", "edgeR"):
        raise ConfigError("gene_filter", f"must be 'pooled' or 'edgeR', got {gene_filter!r}")
    if voom_fitted not in VOOM_FITTED:
        raise ConfigError(
            "voom_fitted", f"must be one of {', '.join(VOOM_FITTED)}, got {voom_fitted!r}"
        )
    if voom_axis not in VOOM_AXES:
        raise ConfigError("voom_axis", f"must be one of {', '.join(VOOM_AXES)}, got {voom_axis!r}")
    if normalize not in ("TMM", "none"):
        raise ConfigError("normalize", f"must be 'TMM' or 'none', got {normalize!r}")
    if min_total_count is None:
        min_total_count = 1.0 if method == "plain" else 15.0
    g = _check_groups(groups_df)
    gene_ids = np.asarray(gene_ids)
    if counts.shape[0] != len(g):
        raise ValueError(f"counts has {counts.shape[0]} rows but groups_df has {len(g)}")
    if counts.shape[1] != gene_ids.size:
        raise ValueError(f"counts has {counts.shape[1]} genes but {gene_ids.size} gene ids")
    ens, sym = gene_annotation(gene_ids, genes)
    mat = sp.csr_matrix(counts) if sp.issparse(counts) else np.asarray(counts)
    cons, skipped = contrasts(
        g, min_cells, min_control_wells, control=control, pool_plates=pool_plates
    )
    n_cells = g["n_cells"].to_numpy()
    plate_of = g["plate"].astype(str).to_numpy()
    sample_of = g["sample"].astype(str).to_numpy()
    counts_method = method != "log"
    parts = []
    extra_skips = []

    def skip(c: Contrast, reason: str, n_genes: int = -1) -> None:
        extra_skips.append(
            dict(
                drug=c.drug,
                dose_uM=c.dose_uM,
                cell_line_id=c.cell_line_id,
                plate=c.plate,
                n_cells=int(n_cells[c.treated].sum()),
                n_control_wells=int(c.control.size),
                what="contrast" if n_genes < 0 else "genes",
                n_genes=n_genes,
                reason=reason,
            )
        )

    for c in cons:
        rows = np.concatenate([c.treated, c.control])
        sub = mat[rows]
        sub = sub.toarray() if sp.issparse(sub) else sub
        sub = np.asarray(sub, dtype=np.float64)
        X = contrast_design(plate_of[rows], c.treated.size)
        cols = np.arange(sub.shape[1])
        if counts_method:
            lib = sub.sum(axis=1)
            if np.any(~(lib > 0)):
                bad = [
                    f"{sample_of[r]} ({'treated' if k < c.treated.size else 'control'})"
                    for k, r in enumerate(rows)
                    if not lib[k] > 0
                ]
                skip(c, f"well(s) with zero library size: {', '.join(bad)}")
                continue
            nonzero = sub.sum(axis=0) > 0
            if not nonzero.all():
                skip(
                    c,
                    f"{int((~nonzero).sum())} gene(s) with all-zero counts across the "
                    "contrast's wells: not tested",
                    int((~nonzero).sum()),
                )
                sub, cols = sub[:, nonzero], cols[nonzero]
        try:
            if method == "deseq2":
                from tahoeflow.de.deseq2 import deseq2_contrast

                stats_cols = deseq2_contrast(
                    sub, plate_of[rows], c.treated.size, **(deseq2_options or {})
                )
                keep = np.ones(sub.shape[1], dtype=bool)
                cook = np.isnan(stats_cols["pvalue"])
                indep = ~cook & np.isnan(stats_cols["padj"])
                for mask, why in (
                    (cook, "count outliers by Cook's distance (DESeq2 pvalue NA)"),
                    (indep, "removed by DESeq2's independent filtering (padj NA)"),
                ):
                    if mask.any():
                        skip(c, f"{int(mask.sum())} gene(s) {why}: not tested", int(mask.sum()))
                keep = ~(cook | indep)
                stats_cols = {k: v[keep] for k, v in stats_cols.items()}
            elif method == "log":
                # already log expression: a well's value is the mean over its cells
                y = sub / n_cells[rows][:, None]
                fit = lmfit(y, X)
                eb = ebayes(fit, proportion=proportion, stdev_coef_lim=stdev_coef_lim, trend=True)
                keep = np.ones(y.shape[1], dtype=bool)
            else:
                out = _de_contrast(
                    sub, X, method, min_count=min_count, min_total_count=min_total_count,
                    gene_filter=gene_filter, normalize=normalize, prior_count=prior_count,
                    span=span, voom_axis=voom_axis, voom_fitted=voom_fitted,
                    proportion=proportion, stdev_coef_lim=stdev_coef_lim,
                )  # fmt: skip
                if isinstance(out, str):
                    skip(c, out)
                    continue
                keep, fit, eb = out
        except (ValueError, np.linalg.LinAlgError) as exc:
            skip(c, f"the model could not be fitted: {exc}")
            continue
        if method != "deseq2":
            stats_cols = {
                "logFC": fit.coefficients,
                "AveExpr": fit.amean,
                "t": eb.t,
                "P.Value": eb.p_value,
                "B": eb.lods,
            }
        finite = np.logical_and.reduce([np.isfinite(v) for v in stats_cols.values()])
        if not finite.all():
            skip(c, f"{int((~finite).sum())} gene(s) with a non-finite statistic: not tested",
                 int((~finite).sum()))  # fmt: skip
            stats_cols = {k: v[finite] for k, v in stats_cols.items()}
            keep = keep.copy()
            keep[np.flatnonzero(keep)[~finite]] = False
        k = int(keep.sum())
        if k == 0:
            continue
        gcol = cols[keep]
        pcol = "pvalue" if method == "deseq2" else "P.Value"
        part = {
            "drug": np.repeat(np.asarray([c.drug], dtype=object), k),
            "dose_uM": np.full(k, c.dose_uM, dtype=np.float64),
            "cell_line_id": np.repeat(np.asarray([c.cell_line_id], dtype=object), k),
            "plate": np.repeat(np.asarray([c.plate], dtype=object), k),
            "gene": gene_ids[gcol],
            "ensembl_id": ens[gcol],
            "gene_symbol": sym[gcol],
            **stats_cols,
        }
        if method != "deseq2":  # DESeq2's padj is BH over its non-NA p-values already
            part["adj.P.Val"] = bh_adjust(stats_cols[pcol])
        part.update(
            n_treated_cells=np.full(k, int(n_cells[c.treated].sum()), dtype=np.int64),
            n_control_cells=np.full(k, int(n_cells[c.control].sum()), dtype=np.int64),
            n_treated_wells=np.full(k, c.treated.size, dtype=np.int64),
            n_control_wells=np.full(k, c.control.size, dtype=np.int64),
        )
        parts.append(pd.DataFrame(part))
    columns = DESEQ2_COLUMNS if method == "deseq2" else DE_COLUMNS
    if parts:
        res = pd.concat(parts, ignore_index=True)
        res["adj.P.Val.global"] = bh_adjust(res["pvalue" if method == "deseq2" else "P.Value"])
    else:  # nothing tested: the same columns and dtypes as a non-empty table
        res = empty_toptable(gene_ids.dtype, method)
    res = res.sort_values([*CONDITION_KEYS, "gene"], kind="mergesort").reset_index(drop=True)
    res = res[columns]
    if extra_skips:
        extra = pd.DataFrame(extra_skips, columns=SKIPPED_COLUMNS)
        skipped = extra if skipped.empty else pd.concat([skipped, extra], ignore_index=True)
        skipped = skipped.sort_values(CONDITION_KEYS, kind="mergesort").reset_index(drop=True)
    whole = (skipped["what"] == "contrast").to_numpy()
    skipped["n_genes"] = np.where(whole, gene_ids.size, skipped["n_genes"]).astype(np.int64)
    return (res, skipped) if return_skipped else res


def global_adjust(table: pd.DataFrame, method: str = "voom") -> pd.DataFrame:
    """Set ``adj.P.Val.global``: BH over every row of ``table`` (all contrasts and genes)."""
    p = table["pvalue" if method == "deseq2" else "P.Value"].to_numpy(np.float64)
    return table.assign(**{"adj.P.Val.global": bh_adjust(p)})


def empty_toptable(gene_dtype: np.dtype | type = np.int64, method: str = "voom") -> pd.DataFrame:
    """A topTable with no rows: :data:`DE_COLUMNS` (or :data:`DESEQ2_COLUMNS` for ``deseq2``)
    with the dtypes of a non-empty one."""
    columns = DESEQ2_COLUMNS if method == "deseq2" else DE_COLUMNS
    dtypes = {c: np.float64 for c in columns}
    dtypes.update(drug=object, cell_line_id=object, plate=object, gene=gene_dtype)
    dtypes.update(ensembl_id=object, gene_symbol=object)
    dtypes.update({c: np.int64 for c in COUNT_COLUMNS})
    return pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in columns})


def untested_reason(
    groups_df: pd.DataFrame, skipped: pd.DataFrame, control: str = CONTROL_DRUG
) -> str:
    """Why :func:`pseudobulk_de` tested no contrast at all, in one line (for logs and metrics).

    No control wells at all (e.g. ``filters.drugs`` without the control, or a data set without
    one), no treated wells (only controls kept), or every condition skipped (the first
    skipped condition's reason is quoted; ``skipped`` has all of them).
    """
    drugs = groups_df["drug"]
    if not (drugs == control).any():
        return (
            f"no {control} control wells in the data (after the filters): there is nothing to "
            "test the treated conditions against"
        )
    if (drugs == control).all():
        return f"no treated wells: every well is a {control} control"
    if "what" in skipped.columns:
        skipped = skipped[skipped["what"] == "contrast"]
    if len(skipped):
        r = skipped.iloc[0]
        return (
            f"all {len(skipped)} conditions were skipped, e.g. {r['drug']} {r['dose_uM']:g} uM "
            f"in {r['cell_line_id']} on {r['plate']}: {r['reason']}"
        )
    return "no treated condition to test"


# --------------------------------------------------------------------------------------------
# Welch t-test per cell (scanpy rank_genes_groups "t-test")
# --------------------------------------------------------------------------------------------


def _mean_var(X: np.ndarray | sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and variance as scanpy computes them: ``(E[x^2] - E[x]^2) * n / (n - 1)``."""
    n = X.shape[0]
    if sp.issparse(X):
        s = np.asarray(X.sum(axis=0, dtype=np.float64)).ravel()
        sq = np.asarray(X.multiply(X).sum(axis=0, dtype=np.float64)).ravel()
    else:
        Xd = np.asarray(X, dtype=np.float64)
        s = Xd.sum(axis=0)
        sq = (Xd * Xd).sum(axis=0)
    mean = s / n
    var = sq / n - mean**2
    if n != 1:
        var *= n / (n - 1)
    return mean, var


def welch_de(
    X_lognorm: np.ndarray | sp.spmatrix,
    is_treated: np.ndarray,
    is_control: np.ndarray,
    gene_ids: Sequence | np.ndarray | None = None,
) -> pd.DataFrame:
    """Welch's t-test of treated vs control cells per gene on log1p-normalised data.

    Equal to ``scanpy.tl.rank_genes_groups(..., groups=[treated], reference=control,
    method="t-test")``: variances ``(E[x^2] - E[x]^2) n/(n-1)``, NaN scores set to 0 and NaN
    p-values to 1, ``logfoldchanges = log2((expm1(mean_t) + 1e-9) / (expm1(mean_c) + 1e-9))``.
    Columns: gene, scores, pvals, pvals_adj (BH), logfoldchanges; one row per gene in input order.
    """
    is_treated = np.asarray(is_treated, dtype=bool)
    is_control = np.asarray(is_control, dtype=bool)
    n_obs, n_genes = X_lognorm.shape
    if is_treated.shape != (n_obs,) or is_control.shape != (n_obs,):
        raise ValueError("is_treated and is_control must be boolean masks over the rows of X")
    if np.any(is_treated & is_control):
        raise ValueError("a cell cannot be both treated and control")
    n1, n0 = int(is_treated.sum()), int(is_control.sum())
    if n1 < 2 or n0 < 2:
        raise ValueError(f"need >= 2 treated and >= 2 control cells, got {n1} and {n0}")
    X = sp.csr_matrix(X_lognorm) if sp.issparse(X_lognorm) else np.asarray(X_lognorm)
    m1, v1 = _mean_var(X[is_treated])
    m0, v0 = _mean_var(X[is_control])
    with np.errstate(invalid="ignore", divide="ignore"):
        scores, pvals = stats.ttest_ind_from_stats(
            mean1=m1,
            std1=np.sqrt(v1),
            nobs1=n1,
            mean2=m0,
            std2=np.sqrt(v0),
            nobs2=n0,
            equal_var=False,
        )
    scores = np.where(np.isnan(scores), 0.0, scores)
    pvals = np.where(np.isnan(pvals), 1.0, pvals)
    lfc = np.log2((np.expm1(m1) + 1e-9) / (np.expm1(m0) + 1e-9))
    genes = np.arange(n_genes) if gene_ids is None else np.asarray(gene_ids)
    return pd.DataFrame(
        {
            "gene": genes,
            "scores": scores,
            "pvals": pvals,
            "pvals_adj": bh_adjust(pvals),
            "logfoldchanges": lfc,
        }
    )


# --------------------------------------------------------------------------------------------
# Scoring against a known truth (simulations)
# --------------------------------------------------------------------------------------------


def score_calls(
    de_df: pd.DataFrame,
    truth_df: pd.DataFrame,
    alpha: float = 0.05,
    *,
    padj_col: str = "adj.P.Val",
    gene_col: str = "gene",
) -> dict:
    """Empirical FDR and power of DE calls (``padj_col < alpha``) against simulated truth.

    ``truth_df`` lists the truly changed genes: drug, dose_uM, cell_line_id, token_id. Only
    conditions (drug, dose_uM, cell_line_id) present in ``de_df`` count. Every tested row of
    ``de_df`` (one per contrast, i.e. per plate, and gene) is one test: ``fdr = false calls /
    calls`` (0 when there are no calls) and ``power = true calls / truly changed``, where a
    condition tested on k plates contributes its truly changed genes k times (a gene that was
    filtered out and not tested counts as missed). When no truly changed gene was tested,
    ``power`` is None and ``null_reasons["power"]`` says why (never NaN: the dict is JSON).
    """
    need_de = ["drug", "dose_uM", "cell_line_id", gene_col, padj_col]
    miss = [c for c in need_de if c not in de_df.columns]
    if miss:
        raise ValueError(f"de_df lacks column(s) {', '.join(miss)}")
    miss = [c for c in ["drug", "dose_uM", "cell_line_id", "token_id"] if c not in truth_df.columns]
    if miss:
        raise ValueError(f"truth_df lacks column(s) {', '.join(miss)}")
    cond = ["drug", "dose_uM", "cell_line_id"]
    de = de_df[[*cond, *(["plate"] if "plate" in de_df.columns else []), gene_col, padj_col]].copy()
    if "plate" not in de.columns:
        de["plate"] = ""
    de["dose_uM"] = de["dose_uM"].astype(np.float64)
    truth = truth_df[[*cond, "token_id"]].drop_duplicates().copy()
    truth["dose_uM"] = truth["dose_uM"].astype(np.float64)
    truth = truth.rename(columns={"token_id": gene_col})
    truth["_true"] = True
    de = de.merge(truth, on=[*cond, gene_col], how="left")
    de["_true"] = de["_true"].notna()
    called = (de[padj_col] < alpha).to_numpy()
    true = de["_true"].to_numpy()
    n_calls = int(called.sum())
    n_true_calls = int((called & true).sum())
    # truly changed: per tested contrast (condition x plate), all true genes of its condition
    tested = de[[*cond, "plate"]].drop_duplicates()
    per_cond = truth.groupby(cond, dropna=False).size().rename("n_true").reset_index()
    n_truly = int(tested.merge(per_cond, on=cond, how="inner")["n_true"].sum())
    return {
        "alpha": float(alpha),
        "n_tests": int(len(de)),
        "n_calls": n_calls,
        "n_true_calls": n_true_calls,
        "n_false_calls": n_calls - n_true_calls,
        "n_truly_changed": n_truly,
        "fdr": (n_calls - n_true_calls) / n_calls if n_calls else 0.0,
        "power": n_true_calls / n_truly if n_truly else None,
        **(
            {}
            if n_truly
            else {
                "null_reasons": {
                    "power": "no truly changed gene in the tested contrasts (power is undefined)"
                }
            }
        ),
    }


# --------------------------------------------------------------------------------------------
# Parallel DE jobs: a part of the cell lines per job
# --------------------------------------------------------------------------------------------


def lines_of_part(cell_lines: Sequence[str], part: int, n_parts: int) -> list[str]:
    """The cell lines DE job ``part`` (of ``n_parts``) analyses: the sorted distinct lines dealt
    round-robin (line k goes to part k mod n_parts). A contrast never crosses cell lines (it may
    cross plates), so the parts are independent; with ``n_parts`` >= the number of lines each
    job has at most one line, and the jobs past the last line have none."""
    if not 0 <= part < n_parts:
        raise ValueError(f"part {part} is not in 0..{n_parts - 1}")
    return sorted(set(map(str, cell_lines)))[part::n_parts]


def pseudobulk_row_groups(counts_path: str, lines: Sequence[str]) -> list[int]:
    """Row groups of the long pseudobulk that can hold rows of ``lines``, by their
    ``cell_line_id`` statistics (min/max): with the merged pseudobulk written one line per row
    group (:func:`tahoeflow.merge.core.write_pseudobulk`) exactly the row groups of those lines. A
    row group without statistics is kept (the rows are filtered after the read anyway)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(counts_path).metadata
    want = sorted(set(map(str, lines)))
    if not want:
        return []
    out = []
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        col = next(
            (rg.column(j) for j in range(rg.num_columns)
             if rg.column(j).path_in_schema == "cell_line_id"),
            None,
        )  # fmt: skip
        st = None if col is None else col.statistics
        if st is None or not st.has_min_max:
            out.append(i)
            continue
        lo, hi = st.min, st.max
        lo = lo.decode() if isinstance(lo, bytes) else str(lo)
        hi = hi.decode() if isinstance(hi, bytes) else str(hi)
        k = int(np.searchsorted(want, lo))  # first wanted line >= min
        if k < len(want) and want[k] <= hi:
            out.append(i)
    return out


def read_pseudobulk_part(
    counts_path: str, groups_path: str, genes_path: str, part: int, n_parts: int
) -> tuple[sp.csr_matrix, pd.DataFrame, pd.DataFrame, list[str]]:
    """Read only the wells of part ``part``'s cell lines: ``(counts, groups, genes, lines)``.

    The groups table (one row per well) is read whole; of the long pseudobulk counts only the
    row groups that can hold the part's lines are decoded (:func:`pseudobulk_row_groups`: the
    merged pseudobulk has one cell line per row group), then filtered on ``cell_line_id`` (a
    file with mixed row groups gives the same rows). ``genes`` is the merged gene table
    (token_id, ensembl_id, gene_symbol), the columns of ``counts``.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tahoeflow.merge.conditions import pseudobulk_matrix

    groups = pd.read_parquet(groups_path)
    lines = lines_of_part(groups["cell_line_id"].astype(str), part, n_parts)
    groups = groups[groups["cell_line_id"].astype(str).isin(lines)].reset_index(drop=True)
    cols = [c for c in ("token_id", "ensembl_id", "gene_symbol")
            if c in pq.read_schema(genes_path).names]  # fmt: skip
    genes = pd.read_parquet(genes_path, columns=cols)
    pf = pq.ParquetFile(counts_path)
    columns = ["sample", "cell_line_id", "token_id", "count"]
    table = pf.read_row_groups(pseudobulk_row_groups(counts_path, lines), columns=columns)
    table = table.filter(pc.is_in(table.column("cell_line_id"), pa.array(lines, pa.string())))
    X = pseudobulk_matrix(table.to_pandas(), groups, genes["token_id"].to_numpy())
    return X, groups, genes, lines


def volcano_conditions(top: pd.DataFrame, n: int, alpha: float = 0.05) -> list[tuple]:
    """The volcano's panels: the ``n`` conditions (drug, dose_uM, cell_line_id) with the most
    calls by the table-wide FDR (``adj.P.Val.global < alpha``), ties in key order. The
    per-contrast ``adj.P.Val`` is not used: over a thousand contrasts about 5% of null ones
    carry a call by it, and would fill the panels."""
    keys = CONDITION_KEYS[:3]
    conds = top[keys].drop_duplicates().sort_values(keys, kind="mergesort")
    idx = pd.MultiIndex.from_frame(conds)
    n_glob = (
        top[top["adj.P.Val.global"] < alpha].groupby(keys).size()
        .reindex(idx, fill_value=0).to_numpy()
    )  # fmt: skip
    order = np.argsort(-n_glob, kind="stable")[: max(n, 0)]
    return [tuple(r) for r in conds.iloc[order].itertuples(index=False)]


def welch_conditions(
    top: pd.DataFrame,
    listed: Sequence[dict],
    max_conditions: int,
    alpha: float = 0.05,
    warn=None,
) -> list[tuple]:
    """Contrasts (drug, dose_uM, cell_line_id, plate) for the cell-level Welch tests.

    First every contrast of ``top`` matching an entry of ``listed`` (``de.welch.conditions``:
    ``drug`` and optionally ``dose_uM`` and ``cell_line_id``; an entry matching no contrast is
    reported through ``warn``), whether or not it has pseudobulk calls; then up to
    ``max_conditions`` more, those with the most calls by ``adj.P.Val.global < alpha``.
    """
    keys = top[CONDITION_KEYS].drop_duplicates().sort_values(CONDITION_KEYS)
    out: list[tuple] = []
    for entry in listed:
        sel = keys["drug"].astype(str).str.strip() == str(entry["drug"]).strip()
        if entry.get("dose_uM") is not None:
            sel &= np.isclose(keys["dose_uM"].to_numpy(np.float64), float(entry["dose_uM"]))
        if entry.get("cell_line_id") is not None:
            sel &= keys["cell_line_id"] == entry["cell_line_id"]
        found = [tuple(r) for r in keys[sel].itertuples(index=False)]
        if not found and warn is not None:
            warn(f"WARNING: de.welch.conditions: {dict(entry)} matches no tested contrast")
        out += [k for k in found if k not in out]
    called = top[top["adj.P.Val.global"] < alpha].groupby(CONDITION_KEYS).size()
    ranked = called.sort_values(ascending=False, kind="stable").index.tolist()
    out += [tuple(k) for k in ranked if tuple(k) not in out][:max_conditions]
    return out
