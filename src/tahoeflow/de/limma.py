"""limma's linear model and empirical Bayes: ``lmFit`` (weighted least squares for the tested
coefficient), ``fitFDist``/``squeezeVar``/``eBayes`` (moderated t, p-values, B); BH is
:func:`tahoeflow.multitest.bh_adjust`.

Formulas of Smyth 2004 (Stat Appl Genet Mol Biol 3:3) and the defaults of limma's R sources;
equal to R's on the same input (tests/test_de_reference.py). Vectorised over genes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy import special, stats


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


def ols(E: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
        beta, sigma = ols(E, X)
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

    Moderated ``t = coef / (stdev_unscaled * s_post)`` with ``s_post^2`` from
    :func:`squeeze_var`, ``df_total = min(d + d0, sum_g d_g)``, two-sided p from
    ``t(df_total)``. ``B = log(p / (1 - p)) - log(r) / 2 + (1 + df_total) / 2 * log((t^2 +
    df_total) / (t^2 / r + df_total))`` with ``p = proportion``, ``r = (v + v0) / v``, ``v =
    stdev_unscaled^2`` and ``v0`` from :func:`tmixture` clipped to ``stdev_coef_lim^2 /
    median(s0^2)`` (kernel ``t^2 (1 - 1/r) / 2`` when ``d0 > 1e6``).
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
