"""Seed 003's figures: predicted against observed profiles (UMAP, t-SNE) and per-gene R^2."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from tahoeflow.pergene.lasso import KINDS
from tahoeflow.plots.save import save_figure


def _embed_inputs(pred: np.ndarray, obs: np.ndarray, n_pcs: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    Z = np.vstack([pred, obs])
    mu = Z.mean(axis=0)
    sd = Z.std(axis=0)
    sd[sd == 0] = 1.0
    Z = (Z - mu) / sd
    k = int(min(n_pcs, Z.shape[0] - 1, Z.shape[1]))
    if k >= 2 and k < Z.shape[1]:
        Z = PCA(n_components=k, random_state=seed).fit_transform(Z)
    return Z


#: rows of each set (predicted, observed) the validation figure embeds at most
MAX_POINTS = 5000


def _sample_rows(a: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """``a`` itself, or a seeded sample of ``n`` of its rows (in their order) when longer."""
    if n is None or a.shape[0] <= n:
        return a
    keep = np.sort(np.random.default_rng(seed).choice(a.shape[0], size=n, replace=False))
    return a[keep]


def _label(name: str, drawn: np.ndarray, n: int) -> str:
    k = drawn.shape[0]
    return f"{name} (n={n})" if k == n else f"{name} ({k:,} of {n:,} drawn)"


def plot_validation(
    pred: np.ndarray | pd.DataFrame,
    obs: np.ndarray | pd.DataFrame,
    path: str | os.PathLike[str],
    seed: int,
    *,
    n_pcs: int = 30,
    max_points: int | None = MAX_POINTS,
) -> None:
    """UMAP and t-SNE of predicted and observed expression profiles side by side.

    ``pred`` (cells x genes) and ``obs`` (cells x genes) must share gene columns (the common
    columns are used when both are DataFrames). Genes are z-scored over both sets, reduced to
    ``n_pcs`` principal components, then embedded jointly (umap-learn seeded with
    ``n_jobs=1``; sklearn TSNE seeded) and coloured by source. Each set above ``max_points``
    rows is drawn from a seeded sample of that many rows (None: all): both embeddings grow
    faster than the rows, and the atlas has tens of thousands of conditions.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import umap
    from sklearn.manifold import TSNE

    if isinstance(pred, pd.DataFrame) and isinstance(obs, pd.DataFrame):
        common = [c for c in pred.columns if c in set(obs.columns)]
        if not common:
            raise ValueError("pred and obs share no gene columns")
        pred, obs = pred[common], obs[common]
    P = np.asarray(pred, dtype=np.float64)
    Ob = np.asarray(obs, dtype=np.float64)
    if P.shape[1] != Ob.shape[1]:
        raise ValueError(f"pred has {P.shape[1]} genes, obs has {Ob.shape[1]}")
    n_pred, n_obs = P.shape[0], Ob.shape[0]
    P, Ob = _sample_rows(P, max_points, seed), _sample_rows(Ob, max_points, seed + 1)
    Z = _embed_inputs(P, Ob, n_pcs, seed)
    n_tot = Z.shape[0]
    n_nb = int(min(15, n_tot - 1))
    emb_u = umap.UMAP(n_neighbors=n_nb, random_state=seed, n_jobs=1).fit_transform(Z)
    perp = float(min(30.0, max(2.0, (n_tot - 1) / 3)))
    emb_t = TSNE(n_components=2, perplexity=perp, random_state=seed, init="pca").fit_transform(Z)
    src = np.r_[np.zeros(P.shape[0], dtype=bool), np.ones(Ob.shape[0], dtype=bool)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5))
    for ax, emb, title in ((axes[0], emb_u, "UMAP"), (axes[1], emb_t, "t-SNE")):
        ax.scatter(emb[~src, 0], emb[~src, 1], s=6, alpha=0.6, label=_label("predicted", P, n_pred))
        ax.scatter(emb[src, 0], emb[src, 1], s=6, alpha=0.6, label=_label("observed", Ob, n_obs))
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(loc="best", fontsize=8)
    save_figure(fig, path, dpi=120)


def plot_r2_hist(models: list[dict], path: str | os.PathLike[str], *, bins: int = 50) -> None:
    """Histograms of per-gene R^2 for the Lasso and the LinearRegression models."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, kind in zip(axes, KINDS, strict=True):
        r2 = np.array([d["r2"] for d in models if d["kind"] == kind], dtype=np.float64)
        r2 = r2[np.isfinite(r2)]
        ax.hist(r2, bins=bins, color="tab:blue" if kind == "lasso" else "tab:orange")
        med = float(np.median(r2)) if r2.size else float("nan")
        ax.set_title(f"{kind}: median R² = {med:.3f} (n={r2.size})")
        ax.set_xlabel("per-gene R² (held-out rows)")
    axes[0].set_ylabel("genes")
    save_figure(fig, path, dpi=120)
