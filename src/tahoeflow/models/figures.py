"""Figures of the models: predicted vs true, confusion matrix, feature importances.

Each function draws on a Figure of its own (not pyplot's current one, so calls do not
interfere) and writes it with :func:`tahoeflow.plots.save.save_figure` (atomic; format from the suffix).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import r2_score

from tahoeflow.models.checks import check_int
from tahoeflow.models.design import TARGET
from tahoeflow.models.features import require_columns
from tahoeflow.plots.save import DPI, save_figure

MAX_POINTS_PER_SPLIT = 20000
"""pred-vs-true scatter shows at most this many points per split (seeded subsample)."""


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def plot_pred_vs_true(
    pred_df: pd.DataFrame,
    path: str | os.PathLike[str],
    target: str = TARGET,
    title: str | None = None,
) -> None:
    """Scatter of ``y_pred`` against ``y_true`` per split, with the y = x line and R2.

    ``pred_df``: ``y_true, y_pred`` and optionally ``split`` (e.g.
    ``RidgeResult.predictions``). Large splits are subsampled (seeded) to
    :data:`MAX_POINTS_PER_SPLIT` points; R2 uses every row. Format from the suffix.
    """
    require_columns(pred_df, ["y_true", "y_pred"], "predictions table")
    fig = _new_figure(5.5, 5.0)
    ax = fig.add_subplot()
    groups = (
        sorted(
            ((str(s), g) for s, g in pred_df.groupby("split", sort=True)),
            key=lambda item: (item[0] != "train", item[0] != "test", item[0]),
        )
        if "split" in pred_df.columns
        else [("all", pred_df)]
    )
    rng = np.random.default_rng(0)
    colors = {"train": "tab:blue", "test": "tab:orange"}
    lo, hi = np.inf, -np.inf
    for name, g in groups:
        yt = g["y_true"].to_numpy(dtype=np.float64)
        yp = g["y_pred"].to_numpy(dtype=np.float64)
        if len(yt) == 0:
            continue
        r2 = r2_score(yt, yp) if len(yt) > 1 else float("nan")
        idx = np.arange(len(yt))
        if len(idx) > MAX_POINTS_PER_SPLIT:
            idx = np.sort(rng.choice(len(idx), MAX_POINTS_PER_SPLIT, replace=False))
        shown = "" if len(idx) == len(yt) else f", {len(idx):,} of {len(yt):,} shown"
        ax.scatter(
            yt[idx],
            yp[idx],
            s=6,
            alpha=0.4,
            color=colors.get(name),
            label=f"{name} (n={len(yt):,}, R²={r2:.3f}{shown})",
            rasterized=True,
        )
        lo = min(lo, yt.min(), yp.min())
        hi = max(hi, yt.max(), yp.max())
    if np.isfinite(lo):
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, linestyle="--", label="y = x")
        ax.legend(loc="upper left", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"true {target}")
    ax.set_ylabel(f"predicted {target}")
    ax.set_title(title or f"Predicted vs true {target}")
    save_figure(fig, path)


def plot_confusion(
    cm_df: pd.DataFrame, path: str | os.PathLike[str], title: str | None = None
) -> None:
    """Heat map of a confusion matrix (rows true, columns predicted, e.g. ``fit_rf_classifier``'s).

    Colours are row-normalised (recall per true class) so rare classes stay visible;
    counts are written in the cells when there are at most 20 classes.
    """
    counts = cm_df.to_numpy(dtype=np.float64)
    n_rows, n_cols = counts.shape
    size = min(max(4.5, 0.28 * max(n_rows, n_cols) + 2.5), 20.0)
    fig = _new_figure(size + 1.0, size)
    ax = fig.add_subplot()
    totals = counts.sum(axis=1, keepdims=True)
    frac = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    fig.colorbar(im, ax=ax, label="fraction of true class")
    font = 8 if max(n_rows, n_cols) <= 20 else 6
    ax.set_xticks(np.arange(n_cols), [str(c) for c in cm_df.columns], rotation=90, fontsize=font)
    ax.set_yticks(np.arange(n_rows), [str(i) for i in cm_df.index], fontsize=font)
    if max(n_rows, n_cols) <= 20:
        for i in range(n_rows):
            for j in range(n_cols):
                ax.text(
                    j,
                    i,
                    f"{int(counts[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if frac[i, j] > 0.5 else "black",
                )
    ax.set_xlabel(str(cm_df.columns.name or "predicted"))
    ax.set_ylabel(str(cm_df.index.name or "true"))
    total = counts.sum()
    acc = np.trace(counts) / total if total > 0 and n_rows == n_cols else float("nan")
    ax.set_title(title or f"Confusion matrix (n={int(total):,}, accuracy={acc:.3f})")
    save_figure(fig, path)


def plot_importances(
    imp_df: pd.DataFrame, path: str | os.PathLike[str], top: int = 20, title: str | None = None
) -> None:
    """Horizontal bars of the ``top`` largest ``importance`` values (``feature`` labels)."""
    require_columns(imp_df, ["feature", "importance"], "importances table")
    top = check_int(top, "top", 1)
    best = imp_df.sort_values("importance", ascending=False, kind="stable").head(top)
    fig = _new_figure(7.0, max(2.5, 0.3 * len(best) + 1.2))
    ax = fig.add_subplot()
    ax.barh(
        np.arange(len(best))[::-1], best["importance"].to_numpy(dtype=np.float64), color="tab:green"
    )
    ax.set_yticks(np.arange(len(best))[::-1], [str(f) for f in best["feature"]], fontsize=8)
    ax.set_xlabel("importance")
    ax.set_ylabel("feature")
    ax.set_title(title or f"Top {len(best)} feature importances")
    save_figure(fig, path)
