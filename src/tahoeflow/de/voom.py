"""limma's ``voom`` precision weights (Law et al. 2014, Genome Biol 15:R29), with two optional
departures (``fitted="midpoint"``, ``axis="inv_sqrt"``) for contrasts with one small treated
well, off by default (their effect on the demo: README, benchmarks/RESULTS.md "DE")."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import scipy.sparse as sp

from tahoeflow.de.design import two_group_design
from tahoeflow.de.edger import as_dense_counts
from tahoeflow.de.limma import ols
from tahoeflow.de.lowess import lowess


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
    ``~ plate + treated``, :func:`tahoeflow.de.design.contrast_design`).

    ``E = log2((count + 0.5) / (lib + 1) * 1e6)`` with ``lib`` = ``lib_sizes`` (edgeR's effective
    library sizes ``lib * norm.factors``; default the row sums); unweighted two-group fit; per
    gene ``x = Amean + mean(log2(lib + 1)) - log2(1e6)`` (mean log2 count) and ``s =
    sqrt(sigma)``, all-zero genes left out; the weight of observation (i, g) is ``1 /
    trend(m_g + log2(lib_i + 1) - log2(1e6))^4`` where ``m_g`` is the fitted log-CPM.

    ``fitted="group"`` is limma's: ``m_g`` is the observation's fitted value (with the design
    ``[intercept, treated]`` its group mean). With a single treated well that is the well's own
    value, so its weight is largest exactly when its count is high by chance and the moderated t
    is right-skewed. ``fitted="midpoint"`` evaluates every observation at the midpoint of the
    two group means, ``(m_1 + m_0) / 2`` (with a general design: the fitted value with half the
    treatment coefficient, the same for treated and control rows of a plate): the variance of
    the difference is taken at the geometric-mean expression, which to first order turns the
    log-scale difference into the square-root (Poisson variance-stabilising) difference, with
    symmetric null tails. Both choices agree when the group means agree.

    ``axis="log2"`` is limma's trend: :func:`lowess` (``f=span``) of ``s`` against ``x``,
    linear interpolation, constant beyond the ends (R ``approxfun(rule=2)``).
    ``axis="inv_sqrt"`` smooths ``s`` against ``u = 2^(-x/2)`` (one over the square root of
    the mean count) instead, with the same lowess. For counts with Poisson noise plus a
    constant-CV replicate noise ``phi``, ``s^4 ~ (u^2 + phi) / ln(2)^2``: flat near ``u = 0``
    (high counts), so the local line at the high-count boundary does not extrapolate the steep
    low-count decline below the noise floor, which the log2 axis does (it underestimates the
    variance of the highest-count genes). Beyond the lowest mean count (``u > u_max``)
    the trend follows the Poisson law ``s ~ sqrt(u)``: ``trend(u_max) * sqrt(u / u_max)``; a
    single well's fitted count can lie far below every gene's mean count. On both axes the
    trend is floored at its smallest positive value so weights stay finite.
    """
    if axis not in VOOM_AXES:
        raise ValueError(f"axis must be one of {VOOM_AXES}, got {axis!r}")
    if fitted not in VOOM_FITTED:
        raise ValueError(f"fitted must be one of {VOOM_FITTED}, got {fitted!r}")
    y = as_dense_counts(counts)
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
    beta, sigma = ols(E, X)
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
