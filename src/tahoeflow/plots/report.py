"""Report figures (matplotlib, Agg): seed 000's exploration figures, the models, the embeddings.

Each function takes plain arrays or DataFrames and a path, and writes one PNG atomically.
Per-cell tables (merged cells, embeddings, predictions) are never read whole: the figures
take aggregates streamed one row group at a time (:func:`parquet_value_counts`,
:func:`parquet_int_counts`) or a seeded sample of at most a fixed number of rows
(:func:`parquet_sample`: :data:`MAX_POINTS` for the PC scatters,
:data:`MAX_SAMPLE_ROWS` for the Ridge predictions), so their memory does not grow with
the number of cells. A table at or below the cap is read whole, in file order.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tahoeflow.plots.save import save_figure  # noqa: E402

MAX_POINTS = 20_000
MAX_SAMPLE_ROWS = 200_000
"""Rows of the Ridge predictions the predicted-vs-true figure reads (its R2 is of them)."""


def parquet_sample(
    path: str | os.PathLike[str], columns: Sequence[str], n: int, seed: int = 0
) -> pd.DataFrame:
    """At most ``n`` rows of a Parquet file (``columns`` only), drawn uniformly without
    replacement (``default_rng(seed)``) and kept in file order; every row when the file
    has at most ``n``. Reads one row group at a time: memory of one group plus the sample."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    total = pf.metadata.num_rows
    if total <= n:
        return pf.read(columns=list(columns)).to_pandas()
    chosen = np.sort(np.random.default_rng(seed).choice(total, n, replace=False))
    parts, start = [], 0
    for i in range(pf.num_row_groups):
        stop = start + pf.metadata.row_group(i).num_rows
        lo, hi = np.searchsorted(chosen, [start, stop])
        if hi > lo:
            group = pf.read_row_group(i, columns=list(columns))
            parts.append(group.take(pa.array(chosen[lo:hi] - start)))
        start = stop
    return pa.concat_tables(parts).to_pandas()


def parquet_value_counts(path: str | os.PathLike[str], column: str) -> pd.Series:
    """Rows per distinct value of ``column`` (nulls left out), streamed one row group at a
    time; sorted by count (descending), then value."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    total: pd.Series = pd.Series(dtype=np.int64)
    for i in range(pf.num_row_groups):
        col = pf.read_row_group(i, columns=[column]).column(column)
        if hasattr(col.type, "value_type"):  # dictionary: count the decoded values
            col = col.cast(col.type.value_type)
        vc = pc.value_counts(col.drop_null()) if len(col) else None
        if vc is None or len(vc) == 0:
            continue
        part = pd.Series(
            vc.field("counts").to_numpy(zero_copy_only=False).astype(np.int64),
            index=vc.field("values").to_pylist(),
        )
        total = total.add(part, fill_value=0).astype(np.int64)
    frame = pd.DataFrame({"value": total.index, "n": total.to_numpy()})
    frame = frame.sort_values(["n", "value"], ascending=[False, True], kind="stable")
    return pd.Series(frame["n"].to_numpy(), index=frame["value"].to_numpy(), name="count")


def parquet_int_counts(path: str | os.PathLike[str], column: str) -> tuple[np.ndarray, np.ndarray]:
    """``(values, counts)`` of a non-negative integer ``column`` (e.g. ``n_genes``), streamed
    one row group at a time with ``np.bincount``; only values that occur."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    acc = np.zeros(0, dtype=np.int64)
    for i in range(pf.num_row_groups):
        v = pf.read_row_group(i, columns=[column]).column(column).drop_null()
        v = v.to_numpy().astype(np.int64)
        if v.size == 0:
            continue
        if v.min() < 0:
            raise ValueError(f"{column} has negative values")
        b = np.bincount(v)
        if b.size > acc.size:
            acc = np.pad(acc, (0, b.size - acc.size))
        acc[: b.size] += b
    values = np.flatnonzero(acc)
    return values, acc[values]


def skipped_figure(path: str | os.PathLike[str], title: str, reason: str) -> None:
    """A figure that says why its stage or model was skipped (the report shows the reason)."""
    import textwrap

    fig, ax = plt.subplots(figsize=(6.5, 3))
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(
        0.5, 0.5, "Skipped:\n" + textwrap.fill(reason, 70), ha="center", va="center", fontsize=9
    )
    save_figure(fig, path)


def metrics_summary(metrics: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """``results/report/metrics_summary.csv``: one row per number in each metrics dict.

    Columns ``source`` (the dict's name), ``metric`` (dotted path of nested keys), ``value``,
    ``note``. A skipped model (``{"skipped": reason}``) gives a row ``skipped`` with no value
    and the reason as its note; a null metric whose reason is in ``null_reasons`` gives a row
    with no value and that reason. Strings, booleans and lists are left out.
    """
    rows: list[dict[str, Any]] = []

    def walk(source: str, path: str, d: Mapping[str, Any]) -> None:
        if isinstance(d.get("skipped"), str):
            name = f"{path}.skipped" if path else "skipped"
            rows.append({"source": source, "metric": name, "value": None, "note": d["skipped"]})
        why = d.get("null_reasons", {})
        for k, v in d.items():
            metric = f"{path}.{k}" if path else str(k)
            if k == "null_reasons":
                continue
            if isinstance(v, Mapping):
                walk(source, metric, v)
            elif isinstance(v, int | float) and not isinstance(v, bool):
                rows.append({"source": source, "metric": metric, "value": v, "note": ""})
            elif v is None and k in why:
                rows.append({"source": source, "metric": metric, "value": None, "note": why[k]})

    for source, d in metrics.items():
        walk(source, "", d)
    return pd.DataFrame(rows, columns=["source", "metric", "value", "note"])


def model_figures(
    metrics: Mapping[str, Mapping[str, Any]],
    inputs: Mapping[str, str | os.PathLike[str]],
    outputs: Mapping[str, str | os.PathLike[str]],
) -> None:
    """The Ridge's predicted-vs-true plot and the forest's confusion matrix and importances.

    ``metrics`` holds the ``ridge`` and ``rf_classifier`` metrics dicts; ``inputs`` and
    ``outputs`` the paths ``ridge`` (predictions), ``confusion`` and ``importances``. A
    skipped model's figures show its reason instead of plotting its empty tables.
    """
    from tahoeflow.models.figures import plot_confusion, plot_importances, plot_pred_vs_true

    ridge, rf = metrics["ridge"], metrics["rf_classifier"]
    if "skipped" in ridge:
        skipped_figure(outputs["ridge"], "Ridge: predicted vs true", ridge["skipped"])
    else:
        sample = parquet_sample(inputs["ridge"], ["split", "y_true", "y_pred"], MAX_SAMPLE_ROWS)
        plot_pred_vs_true(sample, outputs["ridge"])
    if "skipped" in rf:
        skipped_figure(outputs["confusion"], "Random forest: confusion matrix", rf["skipped"])
        skipped_figure(outputs["importances"], "Random forest: importances", rf["skipped"])
    else:
        plot_confusion(pd.read_csv(inputs["confusion"], index_col=0), outputs["confusion"])
        plot_importances(pd.read_csv(inputs["importances"]), outputs["importances"])


def value_histogram(values: np.ndarray, path: str | os.PathLike[str]) -> None:
    """Seed 000 figure 1: positive expression values on a logarithmic x axis."""
    v = np.asarray(values, dtype=np.float64)
    v = v[v > 0]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    if v.size:
        bins = np.logspace(0, np.log10(max(v.max(), 2.0)) + 0.05, 50)
        ax.hist(v, bins=bins, color="#4C72B0")
    ax.set_xscale("log")
    ax.set_xlabel("expression value (UMI count, log scale)")
    ax.set_ylabel("number of values")
    ax.set_title(f"Positive expression values ({v.size:,} values)")
    save_figure(fig, path)


def genes_per_cell(
    n_genes: np.ndarray, path: str | os.PathLike[str], counts: np.ndarray | None = None
) -> None:
    """Seed 000 figure 2: expressed genes per cell. ``counts``: cells per value of
    ``n_genes`` (an aggregate, see :func:`parquet_int_counts`); None: one value per cell."""
    values = np.asarray(n_genes)
    weights = np.ones(values.size, dtype=np.int64) if counts is None else np.asarray(counts)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ax.hist(values, bins=60, weights=None if counts is None else weights, color="#55A868")
    ax.set_xlabel("expressed genes per cell")
    ax.set_ylabel("cells")
    ax.set_title(f"Expressed genes per cell (median {_weighted_median(values, weights):,.0f})")
    save_figure(fig, path)


def _weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    """``np.median`` of ``values`` repeated ``weights`` times, without repeating them."""
    if values.size == 0:
        return float("nan")
    order = np.argsort(values, kind="stable")
    v, c = values[order].astype(np.float64), np.cumsum(weights[order])
    n = int(c[-1])
    lo = v[np.searchsorted(c, (n - 1) // 2, side="right")]
    hi = v[np.searchsorted(c, n // 2, side="right")]
    return float((lo + hi) / 2)


def top_counts(
    labels: Sequence[str] | pd.Series,
    path: str | os.PathLike[str],
    title: str,
    top: int = 10,
    xlabel: str = "cells",
    aggregated: bool = False,
) -> None:
    """Horizontal bar chart of the ``top`` most frequent labels (seed 000 figure 3 and friends).
    ``aggregated``: ``labels`` is already a Series of counts indexed by label, sorted
    descending (:func:`parquet_value_counts`)."""
    counts = (labels if aggregated else pd.Series(labels).value_counts()).head(top)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(counts) + 1.4))
    ax.barh([str(i) for i in counts.index], counts.to_numpy(), color="#8172B2")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    save_figure(fig, path)


def scree(ratio: np.ndarray, path: str | os.PathLike[str]) -> None:
    r = np.asarray(ratio)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    k = np.arange(1, r.size + 1)
    ax.bar(k, r, color="#4C72B0", label="per component")
    ax2 = ax.twinx()
    ax2.plot(k, np.cumsum(r), color="#C44E52", marker=".", label="cumulative")
    ax.set_xlabel("principal component")
    ax.set_ylabel("explained variance ratio")
    ax2.set_ylabel("cumulative", color="#C44E52")
    ax.set_title("Scree plot")
    save_figure(fig, path)


def pc_scatter(
    pc1: np.ndarray,
    pc2: np.ndarray,
    labels: Sequence,
    path: str | os.PathLike[str],
    title: str,
    seed: int = 0,
) -> None:
    """PC1 vs PC2 coloured by a label (at most 20 shown in the legend; points subsampled)."""
    pc1, pc2, lab = np.asarray(pc1), np.asarray(pc2), pd.Series(labels).astype(str).to_numpy()
    if pc1.size > MAX_POINTS:
        keep = np.random.default_rng(seed).choice(pc1.size, MAX_POINTS, replace=False)
        pc1, pc2, lab = pc1[keep], pc2[keep], lab[keep]
    fig, ax = plt.subplots(figsize=(7, 5.5))
    cats = pd.Series(lab).value_counts().index.tolist()
    cmap = plt.get_cmap("tab20")
    for i, c in enumerate(cats):
        m = lab == c
        ax.scatter(
            pc1[m],
            pc2[m],
            s=3,
            alpha=0.6,
            color=cmap(i % 20),
            label=c if i < 20 else None,
            rasterized=True,
        )
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.set_title(title)
    ax.legend(markerscale=4, fontsize=7, loc="best", frameon=False, ncol=1 + len(cats[:20]) // 10)
    save_figure(fig, path)


def volcano(
    toptable: pd.DataFrame,
    conditions: Sequence[tuple],
    path: str | os.PathLike[str],
    alpha: float = 0.05,
    *,
    padj_col: str = "adj.P.Val",
    label_col: str | None = None,
    n_labels: int = 5,
) -> None:
    """One volcano panel per condition (drug, dose_uM, cell_line_id); calls (``padj_col <
    alpha``) coloured; with ``label_col`` (e.g. ``gene_symbol``) the ``n_labels`` genes with the
    smallest P.Value of each panel are labelled by it."""
    n = max(1, len(conditions))
    cols = min(n, 2)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    for ax, cond in zip(axes.ravel(), conditions, strict=False):
        drug, dose, line = cond
        sub = toptable[
            (toptable["drug"] == drug)
            & (toptable["dose_uM"] == dose)
            & (toptable["cell_line_id"] == line)
        ]
        y = -np.log10(np.clip(sub["P.Value"].to_numpy(), 1e-300, 1))
        called = (sub[padj_col] < alpha).to_numpy()
        up = called & (sub["logFC"].to_numpy() > 0)
        down = called & ~up
        ax.scatter(
            sub["logFC"][~called],
            y[~called],
            s=4,
            color="#999999",
            alpha=0.5,
            rasterized=True,
            label="not called",
        )
        ax.scatter(
            sub["logFC"][up], y[up], s=6, color="#C44E52", label=f"up ({up.sum()})", rasterized=True
        )
        ax.scatter(
            sub["logFC"][down],
            y[down],
            s=6,
            color="#4C72B0",
            label=f"down ({down.sum()})",
            rasterized=True,
        )
        if label_col is not None and len(sub):
            for k in np.argsort(-y, kind="stable")[:n_labels]:
                name = sub[label_col].iloc[k]
                label = str(name) if pd.notna(name) and str(name) else str(sub["gene"].iloc[k])
                ax.annotate(label, (sub["logFC"].iloc[k], y[k]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
        ax.set_xlabel("logFC (log2)")
        ax.set_ylabel("-log10 P.Value")
        ax.set_title(f"{drug} {dose:g} uM in {line} (calls: {padj_col} < {alpha:g})", fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    if not conditions:
        axes[0, 0].text(0.5, 0.5, "no condition passed the DE filters", ha="center", va="center")
    save_figure(fig, path)
