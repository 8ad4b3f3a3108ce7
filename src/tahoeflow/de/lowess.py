"""R's ``stats::lowess`` (Cleveland 1979), vectorised over anchor points: the smoother of voom's
mean-variance trend, equal to R's so that voom weights equal limma's."""

from __future__ import annotations

import numpy as np


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
