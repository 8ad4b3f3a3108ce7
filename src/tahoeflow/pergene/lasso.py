"""Seed 003: one regression model per gene (Lasso and LinearRegression), fitted all at once.

For every gene, a LinearRegression and a Lasso whose alpha is chosen by K-fold CV, stored
as the seed stored them: ``{"gene", "model", "std", "r2", "rmse", "kind"}`` dictionaries.

Speed: the p features are shared by all G genes, so everything is computed from the Gram
matrix ``Xc^T Xc`` (p x p) and ``Xc^T Yc`` (p x G) of the centred data. The Lasso is a
covariance-form cyclic coordinate descent that updates coordinate j of *all* genes at once
(one (p,) @ (p, G) product per coordinate), walks a per-gene alpha path with warm starts and
drops each gene from the working set as soon as it has converged. Its objective, intercept
handling and stopping rule are sklearn's ``Lasso(fit_intercept=True)``:
``(1 / 2n) ||y - Xw - b||^2 + alpha ||w||_1`` on centred data (no feature scaling unless
``standardize=True``), stop when ``max|dw| / max|w| <= tol`` and the duality gap is
``<= tol * ||y - mean(y)||^2``. The alpha grid per gene is LassoCV's: ``n_alphas`` values
geometrically spaced from ``alpha_max = max|Xc^T yc| / n`` down to ``eps * alpha_max``.

Evaluation (documented choice): the rows are split once into a training part and a held-out
test part (``test_size``, seeded). Alpha is chosen by K-fold CV *inside the training part*
(minimum mean fold MSE, as LassoCV), both models are fitted on the whole training part, and

* ``r2``, ``rmse``: on the held-out test rows (sklearn ``r2_score`` convention). With
  ``test_size=0`` they are out-of-fold CV values instead (pooled over the K folds).
* ``std``: the standard deviation over the K folds of the per-fold R^2 (what
  ``numpy.std(cross_val_score(model, X, y, cv=K))`` gives for a regressor), at the chosen
  alpha for the Lasso.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext

import numpy as np
import pandas as pd
from sklearn.linear_model import Lasso, LinearRegression
from sklearn.model_selection import KFold, train_test_split
from threadpoolctl import threadpool_limits

from tahoeflow.errors import InputError
from tahoeflow.io import numeric_columns

KINDS = ("lasso", "linear")
#: genes per coordinate-descent block (bounds the (p, block) working arrays)
GENE_BLOCK = 4096


# --------------------------------------------------------------------------------------------
# Splits and alpha grid
# --------------------------------------------------------------------------------------------


def split_indices(
    n: int, *, test_size: float, cv: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    """``(train, test, folds)``: the held-out split and the K folds (positions within train)."""
    idx = np.arange(n)
    if test_size and test_size > 0:
        train, test = train_test_split(idx, test_size=test_size, random_state=seed)
        train, test = np.sort(train), np.sort(test)
    else:
        train, test = idx, np.array([], dtype=np.int64)
    if cv < 2 or cv > train.size:
        raise ValueError(f"cv must be in [2, {train.size}], got {cv}")
    folds = list(KFold(n_splits=cv, shuffle=True, random_state=seed).split(train))
    return train, test, folds


def alpha_grid(
    X: np.ndarray, Y: np.ndarray, *, n_alphas: int = 30, eps: float = 1e-3
) -> np.ndarray:
    """Per-gene LassoCV alpha grid, shape (G, n_alphas), descending (fit_intercept=True)."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    Xc = X - X.mean(axis=0)
    Yc = Y - Y.mean(axis=0)
    return _alpha_grid_from_xty(Xc.T @ Yc, X.shape[0], n_alphas, eps)


def _alpha_grid_from_xty(xty: np.ndarray, n: int, n_alphas: int, eps: float) -> np.ndarray:
    amax = np.abs(xty).max(axis=0) / n
    res = np.finfo(np.float64).resolution
    grid = amax[:, None] * np.geomspace(1.0, eps, num=n_alphas)[None, :]
    grid[amax <= res] = res
    return grid


# --------------------------------------------------------------------------------------------
# Vectorised covariance-form coordinate descent
# --------------------------------------------------------------------------------------------


def _duality_gap(
    gram: np.ndarray, B: np.ndarray, Q: np.ndarray, yty: np.ndarray, l1: np.ndarray
) -> np.ndarray:
    """sklearn's Lasso duality gap (formulation A, unscaled objective) for each column."""
    QB = gram @ B
    xta = Q - QB
    dual_norm = np.abs(xta).max(axis=0)
    bq = np.einsum("ij,ij->j", B, Q)
    r_norm2 = yty + np.einsum("ij,ij->j", B, QB) - 2.0 * bq
    ry = yty - bq
    primal = 0.5 * r_norm2 + l1 * np.abs(B).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(dual_norm > l1, l1 / dual_norm, 1.0)
    dual = -0.5 * scale**2 * r_norm2 + scale * ry
    return primal - dual


def lasso_cd_gram(
    gram: np.ndarray,
    xty: np.ndarray,
    yty: np.ndarray,
    alphas: np.ndarray,
    n_samples: int,
    *,
    tol: float = 1e-4,
    max_iter: int = 1000,
    B0: np.ndarray | None = None,
    block: int = GENE_BLOCK,
) -> tuple[np.ndarray, np.ndarray]:
    """Solve G Lassos sharing one Gram matrix, all genes at once.

    ``gram`` = Xc^T Xc (p, p); ``xty`` = Xc^T Yc (p, G); ``yty`` = ||Yc||^2 per gene (G,);
    ``alphas`` (G,) in sklearn's scaling (objective ``(1/2n)||r||^2 + alpha ||w||_1``).
    ``B0`` warm-starts. Returns ``(B (p, G), n_iter (G,))`` (n_iter = coordinate sweeps).

    One sweep updates coordinate j = 0..p-1 of every working gene:
    ``rho = xty[j] - sum_{k != j} gram[j, k] B[k]``, ``B[j] = S(rho, n alpha) / gram[j, j]``.
    A gene leaves the working set once sklearn's stopping rule holds for it (max coefficient
    change / max coefficient <= tol, then duality gap <= tol ||yc||^2). Genes are processed
    in blocks of ``block`` so that the (p, block) working arrays stay small.
    """
    p, n_genes = xty.shape
    if n_genes > block:
        B = np.empty((p, n_genes))
        n_iter = np.empty(n_genes, dtype=np.int64)
        alphas = np.asarray(alphas)
        for s in range(0, n_genes, block):
            sl = slice(s, min(s + block, n_genes))
            B[:, sl], n_iter[sl] = lasso_cd_gram(
                gram,
                np.ascontiguousarray(xty[:, sl]),
                yty[sl],
                alphas[sl],
                n_samples,
                tol=tol,
                max_iter=max_iter,
                B0=None if B0 is None else np.ascontiguousarray(B0[:, sl]),
                block=block,
            )
        return B, n_iter
    B = np.zeros((p, n_genes)) if B0 is None else np.array(B0, dtype=np.float64, copy=True)
    l1 = np.asarray(alphas, dtype=np.float64) * n_samples
    tol_gap = tol * yty
    diag = np.diag(gram).copy()
    inv_diag = np.divide(1.0, diag, out=np.zeros_like(diag), where=diag != 0)
    gram_off = gram - np.diag(diag)
    coords = np.flatnonzero(diag != 0)
    n_iter = np.zeros(n_genes, dtype=np.int64)
    act = np.arange(n_genes)
    Bs, Qs, ls = B, xty, l1
    it = 0
    while act.size and it < max_iter:
        prev = Bs.copy()
        rho = np.empty(act.size)
        thr = np.empty(act.size)
        for j in coords:
            np.matmul(gram_off[j], Bs, out=rho)
            np.subtract(Qs[j], rho, out=rho)
            np.clip(rho, -ls, ls, out=thr)  # soft threshold: rho - clip(rho, -l, l)
            np.subtract(rho, thr, out=rho)
            np.multiply(rho, inv_diag[j], out=Bs[j])
        it += 1
        n_iter[act] = it
        np.subtract(Bs, prev, out=prev)
        np.abs(prev, out=prev)
        d_max = prev.max(axis=0)
        w_max = np.abs(Bs).max(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            cand = (w_max == 0.0) | (d_max / w_max <= tol) | (it == max_iter)
        if not cand.any():
            continue
        ci = np.flatnonzero(cand)
        done = np.zeros(act.size, dtype=bool)
        done[ci] = (
            _duality_gap(gram, Bs[:, ci], Qs[:, ci], yty[act[ci]], ls[ci]) <= tol_gap[act[ci]]
        )
        n_done = int(done.sum())
        if n_done == 0:
            continue
        if Bs is not B:
            B[:, act] = Bs
        if n_done == act.size:
            break
        # shrink the working set (copies) only when it pays off
        if n_done >= 0.1 * act.size or act.size < n_genes:
            act = act[~done]
            Bs = B[:, act]
            Qs = xty[:, act]
            ls = l1[act]
    if Bs is not B and act.size:
        B[:, act] = Bs
    return B, n_iter


def _path(
    gram: np.ndarray,
    xty: np.ndarray,
    yty: np.ndarray,
    grid: np.ndarray,
    n_samples: int,
    tol: float,
    max_iter: int,
):
    """Yield ``(k, B_k)`` along the per-gene alpha path (column k of ``grid``), warm-started."""
    B = None
    for k in range(grid.shape[1]):
        B, _ = lasso_cd_gram(
            gram, xty, yty, grid[:, k], n_samples, tol=tol, max_iter=max_iter, B0=B
        )
        yield k, B


def _centred_stats(X: np.ndarray, Y: np.ndarray):
    xm = X.mean(axis=0)
    ym = Y.mean(axis=0)
    Xc = X - xm
    Yc = Y - ym
    return xm, ym, Xc, Yc, Xc.T @ Xc, Xc.T @ Yc, np.einsum("ij,ij->j", Yc, Yc)


def _sse(gram_te, xty_te, yty_te, B):
    """||Yte_c - Xte_c B||^2 per gene from test-fold cross products."""
    return yty_te - 2.0 * np.einsum("ij,ij->j", B, xty_te) + np.einsum("ij,ij->j", B, gram_te @ B)


def _r2(sse: np.ndarray, sst: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r2 = 1.0 - sse / sst
    const = sst <= 0
    r2[const] = np.where(sse[const] <= 0, 1.0, 0.0)
    return r2


def _cv_fold(
    X: np.ndarray,
    Y: np.ndarray,
    tr: np.ndarray,
    te: np.ndarray,
    grid: np.ndarray,
    tol: float,
    max_iter: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One CV fold: (SSE along the alpha path (n_alphas, G), SST of the test fold, SSE of OLS)."""
    fxm, fym, Xc, Yc, fgram, fxty, fyty = _centred_stats(X[tr], Y[tr])
    Xte = X[te] - fxm
    Yte = Y[te] - fym
    gram_te, xty_te = Xte.T @ Xte, Xte.T @ Yte
    yty_te = np.einsum("ij,ij->j", Yte, Yte)
    Yraw = Y[te]
    sst = ((Yraw - Yraw.mean(axis=0)) ** 2).sum(axis=0)
    sse = np.empty((grid.shape[1], Y.shape[1]))
    for k, B in _path(fgram, fxty, fyty, grid, len(tr), tol, max_iter):
        sse[k] = _sse(gram_te, xty_te, yty_te, B)
    W = np.linalg.lstsq(Xc, Yc, rcond=None)[0]
    return sse, sst, _sse(gram_te, xty_te, yty_te, W)


# --------------------------------------------------------------------------------------------
# Public driver
# --------------------------------------------------------------------------------------------


def fit_pergene(
    X: np.ndarray | pd.DataFrame,
    Y: np.ndarray | pd.DataFrame,
    gene_names: Sequence[str] | None = None,
    *,
    cv: int = 5,
    n_alphas: int = 30,
    eps: float = 1e-3,
    seed: int = 0,
    test_size: float = 0.2,
    standardize: bool = False,
    tol: float = 1e-4,
    max_iter: int = 1000,
    n_jobs: int = 1,
    blas_threads: int | None = 1,
) -> list[dict]:
    """Fit a Lasso (alpha by K-fold CV) and a LinearRegression for every column of ``Y``.

    ``X`` (n x p features), ``Y`` (n x G genes). Returns ``2 G`` dictionaries, for each gene
    the Lasso then the LinearRegression: ``{"gene", "model", "std", "r2", "rmse", "kind"}``
    with ``kind`` in ``("lasso", "linear")``; ``model`` is a fitted sklearn ``Lasso`` /
    ``LinearRegression`` (``coef_``, ``intercept_``, ``n_features_in_`` set, so ``predict``
    works and it pickles). See the module docstring for the split, ``r2``/``rmse``/``std``.

    ``standardize=True`` fits on z-scored features (StandardScaler on the training rows, as
    ``Pipeline(StandardScaler(), Lasso(alpha))`` would) and maps the coefficients back, so
    the stored models still take raw features; ``alpha`` then refers to the scaled problem.

    ``n_jobs`` threads run the CV folds in parallel. ``blas_threads`` caps BLAS threads while
    fitting (default 1: the many small products gain nothing from BLAS threading, and
    OpenBLAS's spinning threads slow it on a busy machine; benchmarks/RESULTS.md);
    ``None`` leaves it.
    """
    feature_names = list(X.columns) if isinstance(X, pd.DataFrame) else None
    if gene_names is None:
        gene_names = list(Y.columns) if isinstance(Y, pd.DataFrame) else list(range(np.shape(Y)[1]))
    Xa = np.asarray(X, dtype=np.float64)
    Ya = np.asarray(Y, dtype=np.float64)
    if Ya.ndim == 1:
        Ya = Ya[:, None]
    if Xa.ndim != 2 or Ya.shape[0] != Xa.shape[0]:
        raise ValueError(f"X {Xa.shape} and Y {Ya.shape} must have the same number of rows")
    if len(gene_names) != Ya.shape[1]:
        raise ValueError(f"{len(gene_names)} gene names for {Ya.shape[1]} genes")
    if not (np.isfinite(Xa).all() and np.isfinite(Ya).all()):
        raise ValueError("X and Y must be finite (drop rows with missing values first)")
    n, p = Xa.shape
    train, test, folds = split_indices(n, test_size=test_size, cv=cv, seed=seed)

    Xtr, Ytr = Xa[train], Ya[train]
    if standardize:
        mu = Xtr.mean(axis=0)
        sd = Xtr.std(axis=0)
        sd[sd == 0] = 1.0
    else:
        mu = np.zeros(p)
        sd = np.ones(p)
    Xtr_s = (Xtr - mu) / sd

    # alpha grid from the whole training part (as LassoCV.fit does)
    xm, ym, _, _, gram, xty, yty = _centred_stats(Xtr_s, Ytr)
    grid = _alpha_grid_from_xty(xty, Xtr_s.shape[0], n_alphas, eps)
    n_genes = Ya.shape[1]

    # K-fold CV along the path (folds run in n_jobs threads; numpy releases the GIL)
    n_te_f = np.array([len(te) for _, te in folds], dtype=np.float64)
    with threadpool_limits(limits=blas_threads) if blas_threads else nullcontext():
        if n_jobs > 1:
            with ThreadPoolExecutor(max_workers=n_jobs) as pool:
                fold_out = list(
                    pool.map(lambda f: _cv_fold(Xtr_s, Ytr, f[0], f[1], grid, tol, max_iter), folds)
                )
        else:
            fold_out = [_cv_fold(Xtr_s, Ytr, tr, te, grid, tol, max_iter) for tr, te in folds]
        sse_cv = np.stack([o[0] for o in fold_out])  # (K folds, n_alphas, G)
        sst_cv = np.stack([o[1] for o in fold_out])
        sse_lin = np.stack([o[2] for o in fold_out])
        mse_mean = (sse_cv / n_te_f[:, None, None]).mean(axis=0)  # (n_alphas, G)
        best = np.argmin(mse_mean, axis=0)  # first minimum = largest alpha on ties
        best_alpha = grid[np.arange(n_genes), best]

        # refit on the whole training part
        coef_lasso = np.zeros((p, n_genes))
        for k, B in _path(gram, xty, yty, grid, Xtr_s.shape[0], tol, max_iter):
            sel = best == k
            coef_lasso[:, sel] = B[:, sel]
            if k == best.max():
                break
        coef_lin = np.linalg.lstsq(Xtr_s - xm, Ytr - ym, rcond=None)[0]

    # back to raw feature scale; intercept = mean(y) - mean(x) @ w
    coef_lasso /= sd[:, None]
    coef_lin /= sd[:, None]
    xmean_raw = Xtr.mean(axis=0)
    icpt_lasso = ym - xmean_raw @ coef_lasso
    icpt_lin = ym - xmean_raw @ coef_lin

    # per-fold R^2 spread
    fold_r2_lasso = _r2(sse_cv[:, best, np.arange(n_genes)], sst_cv)
    fold_r2_lin = _r2(sse_lin, sst_cv)

    if test.size:
        Xte, Yte = Xa[test], Ya[test]
        sst = ((Yte - Yte.mean(axis=0)) ** 2).sum(axis=0)
        sse_l = ((Yte - (Xte @ coef_lasso + icpt_lasso)) ** 2).sum(axis=0)
        sse_o = ((Yte - (Xte @ coef_lin + icpt_lin)) ** 2).sum(axis=0)
        n_eval = float(test.size)
    else:  # out-of-fold, pooled over folds
        sst = ((Ytr - Ytr.mean(axis=0)) ** 2).sum(axis=0)
        sse_l = sse_cv[:, best, np.arange(n_genes)].sum(axis=0)
        sse_o = sse_lin.sum(axis=0)
        n_eval = float(train.size)
    r2_l, r2_o = _r2(sse_l, sst), _r2(sse_o, sst)
    rmse_l, rmse_o = np.sqrt(sse_l / n_eval), np.sqrt(sse_o / n_eval)
    std_l, std_o = fold_r2_lasso.std(axis=0), fold_r2_lin.std(axis=0)

    names_arr = np.asarray(feature_names, dtype=object) if feature_names is not None else None
    out: list[dict] = []
    for g, gene in enumerate(gene_names):
        las = Lasso(alpha=float(best_alpha[g]), tol=tol, max_iter=max_iter)
        las.coef_ = coef_lasso[:, g].copy()
        las.intercept_ = float(icpt_lasso[g])
        las.n_features_in_ = p
        las.n_iter_ = 0
        las.dual_gap_ = 0.0
        lin = LinearRegression()
        lin.coef_ = coef_lin[:, g].copy()
        lin.intercept_ = float(icpt_lin[g])
        lin.n_features_in_ = p
        lin.rank_ = p
        if names_arr is not None:
            las.feature_names_in_ = names_arr
            lin.feature_names_in_ = names_arr
        for kind, model, std, r2, rmse in (
            ("lasso", las, std_l, r2_l, rmse_l),
            ("linear", lin, std_o, r2_o, rmse_o),
        ):
            out.append(
                {
                    "gene": gene,
                    "model": model,
                    "std": float(std[g]),
                    "r2": float(r2[g]),
                    "rmse": float(rmse[g]),
                    "kind": kind,
                }
            )
    return out


def results_table(models: list[dict]) -> pd.DataFrame:
    """One row per (gene, kind): gene, kind, alpha (NaN for linear), n_nonzero, r2, rmse, std."""
    rows = []
    for d in models:
        m = d["model"]
        rows.append(
            {
                "gene": d["gene"],
                "kind": d["kind"],
                "alpha": float(getattr(m, "alpha", np.nan)) if d["kind"] == "lasso" else np.nan,
                "n_nonzero": int(np.count_nonzero(m.coef_)),
                "r2": d["r2"],
                "rmse": d["rmse"],
                "std": d["std"],
            }
        )
    return pd.DataFrame(rows)


def predict_table(
    models: list[dict], X_new: np.ndarray | pd.DataFrame, *, kind: str = "lasso"
) -> pd.DataFrame:
    """Predicted expression (rows of ``X_new`` x one column per gene) from the ``kind`` models.

    Equal to calling each model's ``predict``; done as one matrix product. The index is
    ``X_new``'s index when it is a DataFrame.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    sel = [d for d in models if d.get("kind", kind) == kind]
    if not sel:
        raise ValueError(f"no {kind} models given")
    Xa = np.asarray(X_new, dtype=np.float64)
    p = sel[0]["model"].n_features_in_
    if Xa.ndim != 2 or Xa.shape[1] != p:
        raise ValueError(f"X_new must have {p} feature columns, got shape {Xa.shape}")
    W = np.column_stack([d["model"].coef_ for d in sel])
    b = np.array([d["model"].intercept_ for d in sel])
    index = X_new.index if isinstance(X_new, pd.DataFrame) else None
    return pd.DataFrame(Xa @ W + b, columns=[d["gene"] for d in sel], index=index)


# --------------------------------------------------------------------------------------------
# Table input
# --------------------------------------------------------------------------------------------


def _read_any(path: str | os.PathLike[str]) -> pd.DataFrame:
    p = str(path)
    low = p.lower()
    try:
        if low.endswith((".parquet", ".pq")):
            return pd.read_parquet(p)
        sep = "\t" if low.endswith((".tsv", ".tab", ".txt")) else ","
        return pd.read_csv(p, sep=sep)
    except FileNotFoundError:
        raise InputError(path, "file not found") from None
    except (ValueError, OSError) as exc:
        raise InputError(path, f"cannot read table: {exc}") from None


def load_table(
    path: str | os.PathLike[str],
    feature_cols: Sequence[str],
    gene_cols: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, int]:
    """Read a CSV/TSV/Parquet table and return ``(X, Y, n_dropped)``.

    ``X`` holds ``feature_cols``; ``Y`` holds ``gene_cols`` (default: every other numeric
    column; pass ``[]`` for a features-only table to apply models to). Rows with a missing
    value in any of these columns are dropped and counted.
    The original row labels are kept as the index.
    """
    df = _read_any(path)
    feature_cols = list(feature_cols)
    missing = [c for c in feature_cols if c not in df.columns]
    if gene_cols is None:
        gene_cols = [
            c for c in df.columns if c not in feature_cols and pd.api.types.is_numeric_dtype(df[c])
        ]
    gene_cols = list(gene_cols)
    missing += [c for c in gene_cols if c not in df.columns]
    if missing:
        raise InputError(path, f"missing column(s): {', '.join(map(str, missing))}")
    cols = feature_cols + gene_cols
    sub = numeric_columns(df, cols, path)
    ok = sub.notna().all(axis=1).to_numpy()
    n_dropped = int((~ok).sum())
    sub = sub.loc[ok].astype(np.float64)
    return sub[feature_cols], sub[gene_cols], n_dropped
