"""Differential expression of drug-treated pseudobulks against DMSO controls.

Two methods:

* :func:`pseudobulk_de` -- limma-trend-style analysis of pseudobulk counts. Counts are turned
  into log2-CPM (:func:`log_cpm`), each contrast is fitted with the two-group linear model
  ``[intercept, treated]`` (:func:`lmfit_two_group`, limma's ``lmFit``) and moderated with
  limma's empirical Bayes (:func:`ebayes`: ``squeezeVar``/``fitFDist``, moderated t, B).
* :func:`welch_de` -- per-cell Welch t-test on log-normalised data, identical to
  ``scanpy.tl.rank_genes_groups(method="t-test", reference=control)``.

Everything is vectorised over genes; only contrasts are looped over.

Formulas (limma: Smyth 2004, Stat Appl Genet Mol Biol 3:3; limma's R sources):

* log-CPM (edgeR ``cpm(log=TRUE)``): ``prior_i = prior_count * lib_i / mean(lib)`` (or
  ``prior_count`` when ``scale_prior=False``), ``log2((count + prior_i) / (lib_i + 2 prior_i) * 1e6)``.
  voom's ``log2((count + 0.5) / (lib + 1) * 1e6)`` is ``prior_count=0.5, scale_prior=False``.
* fitFDist (moment estimation, equal residual df ``d``): ``x = max(s^2, 1e-5 median(s^2))``,
  ``e = log x - digamma(d/2) + log(d/2)``, ``evar = var(e) - mean(trigamma(d/2))``; if
  ``evar > 0``: ``d0 = 2 trigamma^-1(evar)``, ``s0^2 = exp(mean(e) + digamma(d0/2) - log(d0/2))``;
  else ``d0 = inf``, ``s0^2 = mean(x)``.
* squeezeVar: ``s_post^2 = (d s^2 + d0 s0^2) / (d + d0)`` (``s0^2`` when ``d0 = inf``).
* moderated t ``= coef / (stdev_unscaled * s_post)``, ``df_total = min(d + d0, sum_g d_g)``,
  two-sided p from ``t(df_total)``.
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
import scipy.sparse as sp
from scipy import special, stats

from tahoeflow.errors import ConfigError, InputError

CONTROL_DRUG = "DMSO_TF"
GROUP_COLUMNS = ("sample", "cell_line_id", "plate", "drug", "dose_uM", "n_cells")
CONDITION_KEYS = ["drug", "dose_uM", "cell_line_id", "plate"]
DE_COLUMNS = [
    "drug",
    "dose_uM",
    "cell_line_id",
    "plate",
    "gene",
    "logFC",
    "AveExpr",
    "t",
    "P.Value",
    "adj.P.Val",
    "B",
    "n_treated_cells",
    "n_control_cells",
]


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


def lmfit_two_group(y_treated: np.ndarray, y_control: np.ndarray) -> LmFit:
    """limma ``lmFit`` with design ``[intercept, treated]`` for every gene at once.

    ``y_treated`` (n1 x G) and ``y_control`` (n0 x G) are log-expression values. The
    coefficient is ``mean(treated) - mean(control)``, its unscaled sd ``sqrt(1/n1 + 1/n0)``;
    the residual variance pools both groups with ``n1 + n0 - 2`` df, so a single treated
    replicate works (its residual is zero and the df come from the controls).
    """
    y1 = np.atleast_2d(np.asarray(y_treated, dtype=np.float64))
    y0 = np.atleast_2d(np.asarray(y_control, dtype=np.float64))
    if y1.shape[1] != y0.shape[1]:
        raise ValueError(f"gene counts differ: treated {y1.shape[1]}, control {y0.shape[1]}")
    n1, n0 = y1.shape[0], y0.shape[0]
    if n1 < 1 or n0 < 1:
        raise ValueError("need at least one treated and one control sample")
    m1 = y1.mean(axis=0)
    m0 = y0.mean(axis=0)
    rss = ((y1 - m1) ** 2).sum(axis=0) + ((y0 - m0) ** 2).sum(axis=0)
    df = n1 + n0 - 2
    n_genes = y1.shape[1]
    sigma = np.sqrt(rss / df) if df > 0 else np.full(n_genes, np.nan)
    return LmFit(
        coefficients=m1 - m0,
        stdev_unscaled=np.full(n_genes, np.sqrt(1.0 / n1 + 1.0 / n0)),
        sigma=sigma,
        df_residual=np.full(n_genes, float(df)),
        amean=(y1.sum(axis=0) + y0.sum(axis=0)) / (n1 + n0),
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


def fit_f_dist(x: np.ndarray, df1: np.ndarray | float) -> tuple[float, float]:
    """Moment estimates ``(scale s0^2, df2 d0)`` of a scaled F distribution (limma ``fitFDist``).

    ``x`` are sample variances with ``df1`` degrees of freedom. Values that are not finite,
    negative, or have ``df1 <= 0`` are ignored; exact zeros are offset to ``1e-5 * median``.
    When the observed log-variance spread is no larger than the sampling spread, ``d0 = inf``
    and ``s0^2`` is the mean variance (limma >= 3.33).
    """
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    if n == 0:
        return float("nan"), float("nan")
    if n == 1:
        return float(x[0]), 0.0
    df1 = np.broadcast_to(np.asarray(df1, dtype=np.float64), x.shape)
    ok = np.isfinite(df1) & (df1 > 1e-15) & np.isfinite(x) & (x > -1e-15)
    nok = int(ok.sum())
    if nok == 0:
        return float("nan"), float("nan")
    if nok == 1:
        return float(x[ok][0]), 0.0
    x = np.maximum(x[ok], 0.0)
    d = df1[ok]
    m = float(np.median(x))
    if m == 0:
        warnings.warn(
            "more than half of residual variances are exactly zero: eBayes unreliable",
            RuntimeWarning,
            stacklevel=2,
        )
        m = 1.0
    x = np.maximum(x, 1e-5 * m)
    e = np.log(x) - special.digamma(d / 2) + np.log(d / 2)
    emean = float(e.mean())
    evar = float(((e - emean) ** 2).sum() / (nok - 1)) - float(special.polygamma(1, d / 2).mean())
    if evar > 0:
        df2 = 2.0 * float(trigamma_inverse(evar)[0])
        s20 = float(np.exp(emean + special.digamma(df2 / 2) - np.log(df2 / 2)))
    else:
        df2 = float("inf")
        s20 = float(x.mean())
    return s20, df2


def squeeze_var(var: np.ndarray, df: np.ndarray | float) -> tuple[np.ndarray, float, float]:
    """limma ``squeezeVar``: returns ``(var_post, var_prior, df_prior)``."""
    var = np.asarray(var, dtype=np.float64).ravel().copy()
    df = np.broadcast_to(np.asarray(df, dtype=np.float64), var.shape)
    if var.size == 0:
        raise ValueError("var is empty")
    if var.size == 1:
        return var.copy(), float(var[0]), 0.0
    var[df == 0] = 0.0
    var_prior, df_prior = fit_f_dist(var, df)
    if np.isnan(df_prior):
        raise ValueError("could not estimate prior df")
    if np.isfinite(df_prior):
        var_post = (df * var + df_prior * var_prior) / (df + df_prior)
    else:
        var_post = np.full_like(var, var_prior)
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
    s2_prior: float
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
) -> EBayes:
    """limma ``eBayes`` for one coefficient of ``fit`` (moderated t, p-values and B).

    ``df_prior``/``s2_prior`` override the fitFDist estimates (e.g. ``df_prior=0`` gives the
    ordinary t-test with ``df_residual`` df).
    """
    coef = np.asarray(fit.coefficients, dtype=np.float64)
    su = np.broadcast_to(np.asarray(fit.stdev_unscaled, dtype=np.float64), coef.shape)
    sigma = np.broadcast_to(np.asarray(fit.sigma, dtype=np.float64), coef.shape)
    df_res = np.broadcast_to(np.asarray(fit.df_residual, dtype=np.float64), coef.shape)
    if np.all(df_res == 0):
        raise ValueError("no residual degrees of freedom in linear model fits")
    if not np.any(np.isfinite(sigma)):
        raise ValueError("no finite residual standard deviations")
    s2 = sigma**2
    if df_prior is None:
        s2_post, s2_prior_est, d0 = squeeze_var(s2, df_res)
        if s2_prior is not None:
            s2_prior_est = float(s2_prior)
            s2_post = _post_var(s2, df_res, s2_prior_est, d0)
    else:
        d0 = float(df_prior)
        s2_prior_est = float(s2_prior) if s2_prior is not None else fit_f_dist(s2, df_res)[0]
        s2_post = _post_var(s2, df_res, s2_prior_est, d0)
    t = coef / su / np.sqrt(s2_post)
    df_total = np.minimum(df_res + d0, np.nansum(df_res))
    p_value = 2.0 * stats.t.sf(np.abs(t), df_total)

    lim = (
        stdev_coef_lim[0] ** 2 / s2_prior_est,
        stdev_coef_lim[1] ** 2 / s2_prior_est,
    )
    var_prior = tmixture(t, su, df_total, proportion, lim)
    if np.isnan(var_prior):
        var_prior = 1.0 / s2_prior_est
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


def _post_var(s2: np.ndarray, df: np.ndarray, s2_prior: float, d0: float) -> np.ndarray:
    if np.isinf(d0):
        return np.full_like(s2, s2_prior)
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
    """One treated condition and its plate-matched DMSO controls (row positions)."""

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
) -> tuple[list[Contrast], pd.DataFrame]:
    """Pair every treated condition with the DMSO wells of the same cell line and plate.

    A condition is (drug, dose_uM, cell_line_id, plate); its treated rows are all its wells
    (usually one). Controls are the ``control`` wells of the same cell line on the same plate
    that hold at least ``min_control_cells`` cells (default ``min_cells``). A condition is
    skipped when its treated wells hold fewer than ``min_cells`` cells in total, when it has
    fewer than ``min_control_wells`` usable control wells, or when the fit would have no
    residual df. Returns ``(contrasts, skipped)``; ``skipped`` has the condition keys,
    ``n_cells``, ``n_control_wells`` and ``reason``. Row indices are positions in
    ``groups_df`` (= rows of the count matrix). Conditions come sorted by key.
    """
    if min_cells < 0:
        raise ConfigError("min_cells", f"must be >= 0, got {min_cells}")
    if min_control_wells < 1:
        raise ConfigError("min_control_wells", f"must be >= 1, got {min_control_wells}")
    min_ctrl_cells = min_cells if min_control_cells is None else min_control_cells
    g = _check_groups(groups_df)
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
    for key, sub in treated.groupby(CONDITION_KEYS, sort=True, dropna=False):
        drug, dose, cell_line, plate = key
        rows = np.sort(sub.index.to_numpy())
        n_trt = int(sub["n_cells"].sum())
        c_rows = ctrl_rows.get((cell_line, plate), np.array([], dtype=np.int64))
        reason = None
        if n_trt < min_cells:
            reason = f"{n_trt} treated cells < min_cells={min_cells}"
        elif c_rows.size < min_control_wells:
            reason = (
                f"{c_rows.size} {control} control wells with >= {min_ctrl_cells} cells "
                f"< min_control_wells={min_control_wells}"
            )
        elif rows.size + c_rows.size - 2 < 1:
            reason = "no residual degrees of freedom (need >= 3 wells in total)"
        if reason is not None:
            skipped.append(
                dict(
                    drug=drug,
                    dose_uM=dose,
                    cell_line_id=cell_line,
                    plate=plate,
                    n_cells=n_trt,
                    n_control_wells=int(c_rows.size),
                    reason=reason,
                )
            )
            continue
        out.append(Contrast(drug, dose, cell_line, plate, rows, c_rows))
    skipped_df = pd.DataFrame(
        skipped,
        columns=[*CONDITION_KEYS, "n_cells", "n_control_wells", "reason"],
    )
    return out, skipped_df


def pseudobulk_de(
    counts: np.ndarray | sp.spmatrix,
    groups_df: pd.DataFrame,
    gene_ids: Sequence | np.ndarray,
    min_cells: int,
    *,
    min_control_wells: int = 2,
    min_total_count: float = 1.0,
    prior_count: float = 2.0,
    proportion: float = 0.01,
    stdev_coef_lim: tuple[float, float] = (0.1, 4.0),
    control: str = CONTROL_DRUG,
    return_skipped: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """limma-trend-style DE of every treated condition against its plate's DMSO wells.

    ``counts``: pseudobulk counts, one row per (sample, cell line) well (rows of
    ``groups_df``), one column per gene (``gene_ids``, token ids). Per contrast (see
    :func:`contrasts`): library sizes are the wells' total counts over all genes; genes whose
    summed count over the contrast's wells is below ``min_total_count`` are not tested (all-zero
    genes carry no information); the rest get log-CPM (``prior_count``), the two-group fit and
    eBayes; adj.P.Val is BH within the contrast. Returns the tidy table (:data:`DE_COLUMNS`),
    sorted by condition keys then gene; with ``return_skipped`` also the skipped conditions.
    """
    g = _check_groups(groups_df)
    gene_ids = np.asarray(gene_ids)
    if counts.shape[0] != len(g):
        raise ValueError(f"counts has {counts.shape[0]} rows but groups_df has {len(g)}")
    if counts.shape[1] != gene_ids.size:
        raise ValueError(f"counts has {counts.shape[1]} genes but {gene_ids.size} gene ids")
    mat = sp.csr_matrix(counts) if sp.issparse(counts) else np.asarray(counts)
    cons, skipped = contrasts(g, min_cells, min_control_wells, control=control)
    n_cells = g["n_cells"].to_numpy()
    parts = []
    for c in cons:
        rows = np.concatenate([c.treated, c.control])
        sub = mat[rows]
        sub = sub.toarray() if sp.issparse(sub) else sub
        sub = np.asarray(sub, dtype=np.float64)
        lib = sub.sum(axis=1)
        if np.any(lib <= 0):
            raise InputError(
                "pseudobulk counts",
                "a well has zero total counts",
                row=int(rows[np.argmax(lib <= 0)]),
            )
        keep = sub.sum(axis=0) >= min_total_count
        if not keep.any():
            continue
        y = log_cpm(sub[:, keep], lib, prior_count)
        n1 = c.treated.size
        fit = lmfit_two_group(y[:n1], y[n1:])
        eb = ebayes(fit, proportion, stdev_coef_lim)
        k = int(keep.sum())
        parts.append(
            pd.DataFrame(
                {
                    "drug": np.repeat(np.asarray([c.drug], dtype=object), k),
                    "dose_uM": np.full(k, c.dose_uM, dtype=np.float64),
                    "cell_line_id": np.repeat(np.asarray([c.cell_line_id], dtype=object), k),
                    "plate": np.repeat(np.asarray([c.plate], dtype=object), k),
                    "gene": gene_ids[keep],
                    "logFC": fit.coefficients,
                    "AveExpr": fit.amean,
                    "t": eb.t,
                    "P.Value": eb.p_value,
                    "adj.P.Val": bh_adjust(eb.p_value),
                    "B": eb.lods,
                    "n_treated_cells": np.full(k, int(n_cells[c.treated].sum()), dtype=np.int64),
                    "n_control_cells": np.full(k, int(n_cells[c.control].sum()), dtype=np.int64),
                }
            )
        )
    if parts:
        res = pd.concat(parts, ignore_index=True)
    else:
        res = pd.DataFrame({col: pd.Series(dtype=np.float64) for col in DE_COLUMNS})
    res = res.sort_values([*CONDITION_KEYS, "gene"], kind="mergesort").reset_index(drop=True)
    res = res[DE_COLUMNS]
    return (res, skipped) if return_skipped else res


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
    filtered out and not tested counts as missed).
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
        "power": n_true_calls / n_truly if n_truly else float("nan"),
    }
