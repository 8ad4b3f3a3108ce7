"""The drug-response landscape: sensitivity heatmaps, MoA distributions, signature embeddings.

* **Heatmap**: cell lines x drugs of the sensitivity (a line's log2 change of its share of the
  well against DMSO, pooled over plates), one panel per dose, rows and columns ordered by
  average-linkage hierarchical clustering (``scipy.cluster.hierarchy``, Euclidean distance,
  untested cells counted as 0 for the clustering only).
* **MoA distributions**: the sensitivity of every (line, drug) at the drug's highest dose,
  grouped by the drug's mechanism of action (``drug_metadata``'s ``moa-fine`` by default).
* **Signatures**: a drug's pseudobulk logFC signature is the mean of its DE contrasts' logFC
  (the topTable, over lines, doses and plates; per (drug, dose) with ``signature: drug_dose``),
  a gene missing from a contrast counting as 0; embedded by PCA (and UMAP when ``umap-learn``
  is installed), coloured by MoA.
* **MoA nearest-neighbour accuracy**: among drugs with a known MoA shared by at least one other
  drug, the fraction whose nearest signature (Pearson correlation distance) has the same MoA,
  against the same statistic after permuting the MoA labels (mean, sd, and the permutation p
  ``(1 + #{perm >= observed}) / (1 + n_perm)``).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numba as nb
import numpy as np
import pandas as pd

from tahoeflow import io as tio

SENSITIVITY_VALUES = ("log2fc_share", "log2_share_change", "log2fc")
"""Columns of the sensitivity table read as the sensitivity value (the first present)."""
LOGFC_COLUMNS = ("logFC", "log2FoldChange")
MIN_DRUGS = 3


def _value_column(sens: pd.DataFrame, value: str | None) -> str:
    if value is not None:
        if value not in sens.columns:
            raise ValueError(f"the sensitivity table has no column {value!r}")
        return value
    for c in SENSITIVITY_VALUES:
        if c in sens.columns:
            return c
    raise ValueError(f"the sensitivity table has none of the columns {list(SENSITIVITY_VALUES)}")


def pooled_sensitivity(sens: pd.DataFrame, value: str | None = None) -> pd.DataFrame:
    """One value per (cell line, drug, dose): the pooled rows (``level == "pooled"``) when the
    table has them, else the mean over plates. Columns ``cell_line_id, drug, dose_uM, value``;
    rows without a finite value are dropped."""
    col = _value_column(sens, value)
    need = ["cell_line_id", "drug", "dose_uM"]
    missing = [c for c in need if c not in sens.columns]
    if missing:
        raise ValueError(f"the sensitivity table lacks the columns {missing}")
    s = sens[sens["level"] == "pooled"] if "level" in sens.columns else sens
    s = s[np.isfinite(pd.to_numeric(s[col], errors="coerce"))]
    out = s.groupby(need, observed=True)[col].mean().rename("value").reset_index()
    out["drug"] = out["drug"].astype(str)
    return out


def moa_map(drug_metadata: pd.DataFrame, column: str, drugs: Sequence[str]) -> pd.Series:
    """MoA of each drug (names compared without surrounding spaces); ``unknown`` if absent."""
    if column not in drug_metadata.columns:
        raise ValueError(f"drug_metadata has no column {column!r}")
    dm = drug_metadata.assign(_k=drug_metadata["drug"].astype(str).str.strip())
    m = dm.drop_duplicates("_k").set_index("_k")[column]
    key = [str(d).strip() for d in drugs]
    return pd.Series(m.reindex(key).fillna("unknown").astype(str).to_numpy(), index=list(drugs))


def cluster_order(M: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row and column orders of average-linkage clustering (NaN counted as 0)."""
    from scipy.cluster.hierarchy import leaves_list, linkage

    A = np.nan_to_num(np.asarray(M, dtype=np.float64))

    def order(Y: np.ndarray) -> np.ndarray:
        if Y.shape[0] < 3:
            return np.arange(Y.shape[0])
        return leaves_list(linkage(Y, method="average", metric="euclidean"))

    return order(A), order(A.T)


def heatmap_matrices(pooled: pd.DataFrame) -> dict[float, pd.DataFrame]:
    """Lines x drugs matrix of each dose, rows and columns in clustered order."""
    out = {}
    for dose, d in pooled.groupby("dose_uM", sort=True):
        M = d.pivot_table(index="cell_line_id", columns="drug", values="value", aggfunc="mean")
        r, c = cluster_order(M.to_numpy())
        out[float(dose)] = M.iloc[r, c]
    return out


def drug_signatures(toptable: pd.DataFrame, by: str = "drug") -> pd.DataFrame:
    """Drugs (or ``drug|dose`` with ``by="drug_dose"``) x genes mean logFC over the contrasts.

    A gene absent from a contrast (left out by its filter) counts as 0 (no change).
    """
    if by not in ("drug", "drug_dose"):
        raise ValueError(f"by must be 'drug' or 'drug_dose', got {by!r}")
    col = next((c for c in LOGFC_COLUMNS if c in toptable.columns), None)
    if col is None:
        raise ValueError(f"the topTable has none of the columns {list(LOGFC_COLUMNS)}")
    t = toptable[["drug", "dose_uM", "cell_line_id", "plate", "gene", col]].copy()
    t["drug"] = t["drug"].astype(str).str.strip()
    t["key"] = t["drug"] if by == "drug" else t["drug"] + "|" + t["dose_uM"].map("{:g}".format)
    contrasts = t.drop_duplicates(["key", "dose_uM", "cell_line_id", "plate"]).groupby("key").size()
    sums = t.pivot_table(index="key", columns="gene", values=col, aggfunc="sum", fill_value=0.0)
    return sums.div(contrasts.reindex(sums.index).to_numpy(), axis=0)


SIGNATURE_BATCH_ROWS = 1 << 20
"""topTable rows :func:`drug_signatures_from_parquet` holds at once."""


@nb.njit(cache=True, nogil=True)
def _kahan_add(rows, cols, values, sums, comp):  # pragma: no cover - compiled
    """Add ``values`` into ``sums[rows, cols]`` in order, compensated as pandas' grouped sum
    (Kahan; a NaN value is skipped, a NaN compensation from an infinity reset to 0), so the
    sums are pandas' to the bit."""
    for i in range(values.size):
        x = values[i]
        if x != x:
            continue
        r, c = rows[i], cols[i]
        y = x - comp[r, c]
        t = sums[r, c] + y
        comp[r, c] = t - sums[r, c] - y
        if comp[r, c] != comp[r, c]:
            comp[r, c] = 0.0
        sums[r, c] = t


def _codes(index: pd.Index, names: Sequence[Any]) -> tuple[pd.Index, np.ndarray]:
    """``index`` extended by the ``names`` it lacks, and each name's position in it."""
    names = pd.Index(names)
    new = names[index.get_indexer(names) < 0].unique()
    index = index.append(new) if len(new) else index
    return index, index.get_indexer(names)


def drug_signatures_from_parquet(
    path: str | os.PathLike[str], by: str = "drug", batch_rows: int = SIGNATURE_BATCH_ROWS
) -> pd.DataFrame:
    """:func:`drug_signatures` of a topTable file, read ``batch_rows`` rows at a time.

    Memory is the keys x genes sums (and their compensations) and one batch, not the table
    (58.9M rows, 14.5 GB as one DataFrame on the whole-atlas rehearsal). The same values as
    ``drug_signatures(pd.read_parquet(path))``, bit for bit (tested): the sums are compensated
    and taken in row order as pandas takes them; a NaN logFC adds nothing.
    """
    if by not in ("drug", "drug_dose"):
        raise ValueError(f"by must be 'drug' or 'drug_dose', got {by!r}")
    pf = tio.parquet_file(path)
    col = next((c for c in LOGFC_COLUMNS if c in pf.schema_arrow.names), None)
    if col is None:
        raise ValueError(f"the topTable has none of the columns {list(LOGFC_COLUMNS)}")
    keys, genes = pd.Index([], dtype=object), None
    sums, comp = np.zeros((0, 0)), np.zeros((0, 0))
    contrasts: set[tuple[Any, ...]] = set()
    cols = ["drug", "dose_uM", "cell_line_id", "plate", "gene", col]
    for batch in tio.read_batches(pf, cols, batch_rows):
        t = batch.to_pandas()
        d_code, d_names = pd.factorize(t["drug"].astype(str))
        d_names = pd.Index(d_names).str.strip()
        if by == "drug":
            k_code, k_names = d_code, list(d_names)
        else:
            x_code, x_vals = pd.factorize(t["dose_uM"])
            pair_code, pairs = pd.factorize(d_code.astype(np.int64) * len(x_vals) + x_code)
            k_code = pair_code
            k_names = [f"{d_names[q // len(x_vals)]}|{x_vals[q % len(x_vals)]:g}" for q in pairs]
        keys, k_pos = _codes(keys, k_names)
        g_code, g_vals = pd.factorize(t["gene"])
        genes, g_pos = _codes(pd.Index([], dtype=g_vals.dtype) if genes is None else genes, g_vals)
        row_k, row_g = k_pos[k_code], g_pos[g_code]
        if sums.shape != (len(keys), len(genes)):
            grown = np.zeros((2, len(keys), len(genes)))
            grown[0, : sums.shape[0], : sums.shape[1]] = sums
            grown[1, : sums.shape[0], : sums.shape[1]] = comp
            sums, comp = grown[0], grown[1]
        v = np.ascontiguousarray(t[col].to_numpy(dtype=np.float64))
        _kahan_add(row_k.astype(np.int64), row_g.astype(np.int64), v, sums, comp)
        c = pd.DataFrame({"k": row_k, "dose": t["dose_uM"].to_numpy(),
                          "line": t["cell_line_id"].to_numpy(), "plate": t["plate"].to_numpy()})  # fmt: skip
        contrasts.update(c.drop_duplicates().itertuples(index=False, name=None))
    if genes is None:
        return pd.DataFrame(index=pd.Index([], name="key"), columns=pd.Index([], name="gene"))
    n_contrasts = np.bincount([k for k, *_ in contrasts], minlength=len(keys))
    k_keep = np.argsort(keys.to_numpy(), kind="stable")
    g_keep = np.argsort(genes.to_numpy(), kind="stable")
    # column-major, as pivot_table's frame: BLAS (the PCA of the signatures) rounds by layout
    out = np.asfortranarray(sums[np.ix_(k_keep, g_keep)] / n_contrasts[k_keep][:, None])
    return pd.DataFrame(
        out, index=pd.Index(keys[k_keep], name="key"), columns=pd.Index(genes[g_keep], name="gene")
    )


def nearest_neighbours(X: np.ndarray) -> np.ndarray:
    """Index of each row's nearest other row by Pearson correlation distance."""
    X = np.asarray(X, dtype=np.float64)
    Z = X - X.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(Z, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        Z = Z / norm[:, None]
    C = np.nan_to_num(Z @ Z.T, nan=-2.0)  # a constant signature is nobody's neighbour
    np.fill_diagonal(C, -np.inf)
    return np.argmax(C, axis=1)


def moa_nn_accuracy(
    signatures: pd.DataFrame, moa: pd.Series, *, exclude: Sequence[str] = ("unclear",),
    n_permutations: int = 1000, seed: int = 0,
) -> dict[str, Any]:  # fmt: skip
    """Nearest-signature MoA accuracy and its label-permutation baseline (or ``skipped``).

    ``signatures``: drugs x genes; ``moa``: MoA per row label (``drug`` or ``drug|dose``: the
    part before ``|`` is looked up). Drugs whose MoA is in ``exclude``, ``unknown``, or held by
    no other drug are left out (they cannot be matched).
    """
    if n_permutations < 1:
        raise ValueError("n_permutations must be >= 1")
    drug = [str(k).split("|")[0] for k in signatures.index]
    lab = pd.Series(moa.reindex(drug).fillna("unknown").to_numpy(), index=signatures.index)
    keep = ~lab.isin([*exclude, "unknown"])
    lab = lab[keep]
    lab = lab[lab.map(lab.value_counts()) >= 2]
    n_moa = int(lab.nunique())
    base = {"n_drugs": int(len(lab)), "n_moas": n_moa, "n_signatures": int(len(signatures)),
            "n_genes": int(signatures.shape[1])}  # fmt: skip
    if len(lab) < MIN_DRUGS or n_moa < 2:
        why = (f"{len(lab)} signature(s) with a MoA shared by another drug, in {n_moa} MoA(s) "
               f"(excluded: {', '.join(exclude) or 'none'}, unknown): at least {MIN_DRUGS} in "
               "2 MoAs are needed")  # fmt: skip
        return {"skipped": why, **base}
    X = signatures.loc[lab.index].to_numpy()
    nn = nearest_neighbours(X)
    codes = pd.factorize(lab)[0]
    observed = float(np.mean(codes == codes[nn]))
    rng = np.random.default_rng(seed)
    perm = rng.permuted(np.tile(codes, (n_permutations, 1)), axis=1)
    null = (perm == perm[:, nn]).mean(axis=1)
    return {
        **base,
        "moa_nn_accuracy": observed,
        "permutation_mean": float(null.mean()),
        "permutation_sd": float(null.std(ddof=1)) if n_permutations > 1 else None,
        "n_permutations": int(n_permutations),
        "p_value": float((1 + np.sum(null >= observed)) / (1 + n_permutations)),
    }


def pca_coords(signatures: pd.DataFrame, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA of the signatures (scikit-learn): coordinates and explained variance ratios."""
    from sklearn.decomposition import PCA

    X = signatures.to_numpy(np.float64)
    k = min(2, X.shape[0], X.shape[1])
    p = PCA(n_components=k, random_state=seed).fit(X)
    Z = p.transform(X)
    if k < 2:
        Z = np.column_stack([Z, np.zeros((len(Z), 2 - k))])
    return Z, p.explained_variance_ratio_


def umap_coords(signatures: pd.DataFrame, seed: int = 0) -> tuple[np.ndarray | None, str]:
    """2-D UMAP (correlation metric) when umap-learn is installed: (coords, "") or (None, why)."""
    n = len(signatures)
    if n < 10:  # checked first: importing umap (numba) costs seconds
        return None, f"{n} signatures: a UMAP of fewer than 10 drugs shows nothing the PCA does not"
    try:
        import umap
    except ImportError:
        return None, "umap-learn is not installed (pip install umap-learn)"
    model = umap.UMAP(n_neighbors=min(15, n - 1), metric="correlation", random_state=seed)
    return model.fit_transform(signatures.to_numpy(np.float64)), ""


# --------------------------------------------------------------------------- figures
def _palette(labels: Sequence[str], top: int = 10) -> tuple[dict[str, Any], list[str]]:
    from tahoeflow.plots.report import plt

    counts = pd.Series(list(labels)).value_counts()
    named = [m for m in counts.index if m not in ("unclear", "unknown")][:top]
    cmap = plt.get_cmap("tab10")
    colours = {m: cmap(i % 10) for i, m in enumerate(named)}
    return colours, named


def plot_heatmaps(mats: Mapping[float, pd.DataFrame], path: str, reason: str | None) -> None:
    from tahoeflow.plots.report import plt, skipped_figure
    from tahoeflow.plots.save import save_figure

    title = "Sensitivity: log2 change of a line's share of the well vs DMSO"
    mats = {k: v for k, v in mats.items() if v.size}
    if reason or not mats:
        skipped_figure(path, title, reason or "no (line, drug, dose) has a sensitivity value")
        return
    n_cols = max(m.shape[1] for m in mats.values())
    n_rows = max(m.shape[0] for m in mats.values())
    w = min(24.0, 3 + 0.18 * n_cols)
    fig, axes = plt.subplots(len(mats), 1, figsize=(w, 1.5 + len(mats) * (1 + 0.2 * n_rows)),
                             squeeze=False)  # fmt: skip
    vmax = max(float(np.nanmax(np.abs(m.to_numpy()))) for m in mats.values()) or 1.0
    for ax, (dose, m) in zip(axes[:, 0], mats.items(), strict=True):
        im = ax.imshow(m.to_numpy(), aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax,
                       interpolation="nearest")  # fmt: skip
        ax.set_title(
            f"{dose:g} uM ({m.shape[0]} lines x {m.shape[1]} drugs, clustered)", fontsize=9
        )
        ax.set_yticks(range(m.shape[0]), [str(x) for x in m.index], fontsize=6)
        step = max(1, math.ceil(m.shape[1] / 80))
        ax.set_xticks(range(0, m.shape[1], step),
                      [str(x).strip()[:18] for x in m.columns[::step]], rotation=90, fontsize=5)  # fmt: skip
        fig.colorbar(im, ax=ax, fraction=0.02, pad=0.01, label="log2 share vs DMSO")
    fig.suptitle(title, fontsize=10)
    save_figure(fig, path)


def plot_moa_distributions(
    pooled: pd.DataFrame, moa: pd.Series, path: str, reason: str | None = None
) -> None:
    """Box plots of each MoA's (line, drug) sensitivities at each drug's highest dose."""
    from tahoeflow.plots.report import plt, skipped_figure
    from tahoeflow.plots.save import save_figure

    title = "Sensitivity by mechanism of action (each drug's highest dose)"
    if reason is None:
        top = pooled[pooled["dose_uM"] == pooled.groupby("drug")["dose_uM"].transform("max")]
        top = top.assign(moa=moa.reindex(top["drug"]).fillna("unknown").to_numpy())
        groups = {m: g["value"].to_numpy() for m, g in top.groupby("moa")}
        if len(groups) < 2:
            reason = f"{len(groups)} MoA(s) among the drugs with a sensitivity: 2 are needed"
    if reason:
        skipped_figure(path, title, reason)
        return
    order = sorted(groups, key=lambda m: np.median(groups[m]))
    fig, ax = plt.subplots(figsize=(7.5, 1.5 + 0.28 * len(order)))
    import matplotlib

    horizontal = (
        {"orientation": "horizontal"}
        if tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10)
        else {"vert": False}
    )
    ax.boxplot([groups[m] for m in order], showfliers=True, flierprops={"markersize": 2},
               **horizontal)  # fmt: skip
    ax.set_yticks(range(1, len(order) + 1),
                  [f"{m[:40]} (n={len(groups[m])})" for m in order], fontsize=7)  # fmt: skip
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel("log2 change of the line's share of the well vs DMSO")
    ax.set_title(title, fontsize=10)
    save_figure(fig, path)


def plot_embedding(
    coords: np.ndarray | None, labels: Sequence[str], moa: Sequence[str], path: str, title: str,
    axis: str, reason: str | None = None,
) -> None:  # fmt: skip
    from tahoeflow.plots.report import plt, skipped_figure
    from tahoeflow.plots.save import save_figure

    if reason or coords is None:
        skipped_figure(path, title, reason or "no coordinates")
        return
    colours, named = _palette(moa)
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    moa = np.asarray(list(moa), dtype=object)
    other = ~np.isin(moa, named)
    ax.scatter(coords[other, 0], coords[other, 1], s=14, c="#BBBBBB", label="other / unclear")
    for m in named:
        sel = moa == m
        ax.scatter(coords[sel, 0], coords[sel, 1], s=18, color=colours[m], label=m[:35])
    if len(labels) <= 60:
        for (x, y), lab in zip(coords, labels, strict=True):
            ax.annotate(str(lab).strip()[:20], (x, y), fontsize=5, alpha=0.7)
    ax.set_xlabel(f"{axis}1")
    ax.set_ylabel(f"{axis}2")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6, loc="best", markerscale=0.8)
    save_figure(fig, path)
