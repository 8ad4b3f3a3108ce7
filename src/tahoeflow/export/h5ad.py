"""The workflow's tables as AnnData objects (``.h5ad``) for scanpy and friends.

* :func:`embeddings_to_anndata`: cells x PCs (``results/embed/embeddings.parquet`` plus
  ``pca_variance.csv``, ``components.parquet``, ``kmeans.json``) in scanpy's layout:
  ``obsm["X_pca"]``, ``uns["pca"]["variance_ratio"]``, cluster labels in ``obs``.
* :func:`pseudobulk_to_anndata`: (sample, cell line) groups x genes of summed counts
  (``results/merged/pseudobulk.parquet`` + ``pseudobulk_groups.parquet`` + the gene table).
* :func:`write_h5ad`: atomic write (temporary name beside the target, then ``os.replace``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, Literal

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from tahoeflow.io import atomic_path

_PC = re.compile(r"^pc(\d+)$")
OBS_CATEGORICAL = ("sample", "plate", "drug", "cell_line_id", "moa_fine")
GROUP_KEYS = ("sample", "cell_line_id")


def _pc_columns(columns: pd.Index, what: str) -> list[str]:
    """``pc1..pcK`` in numeric order; an error when they are not exactly 1..K."""
    found = sorted((int(m.group(1)), c) for c in columns if (m := _PC.match(str(c))))
    names = [c for _, c in found]
    if not names:
        raise ValueError(f"{what}: no pc1..pcK columns")
    if [k for k, _ in found] != list(range(1, len(found) + 1)):
        raise ValueError(f"{what}: PC columns must be pc1..pc{len(found)}, got {names}")
    return names


def _as_categorical(values: pd.Series, numeric_order: bool = False) -> pd.Categorical:
    strings = values.astype(str)
    cats = pd.unique(strings.to_numpy())
    if numeric_order:
        cats = sorted(cats, key=lambda c: (int(c) if c.lstrip("-").isdigit() else float("inf"), c))
    else:
        cats = sorted(cats)
    return pd.Categorical(strings, categories=cats)


def embeddings_to_anndata(
    embeddings: pd.DataFrame,
    pca_variance: pd.DataFrame,
    components: pd.DataFrame | None = None,
    kmeans_info: Mapping[str, Any] | None = None,
    *,
    explained_variance: np.ndarray | None = None,
    x: Literal["none", "pcs"] = "none",
) -> ad.AnnData:
    """Cells x PCs as AnnData, in scanpy's layout.

    * ``obs``: indexed by ``cell_id`` (unique); every non-PC column of ``embeddings``;
      ``cluster`` and the string columns (sample, plate, drug, cell_line_id, moa_fine) as
      categoricals (cluster categories "0", "1", ... in numeric order).
    * ``obsm["X_pca"]``: float32 (cells x K), columns pc1..pcK.
    * ``X``: None (``x="none"``, an n x 0 object; use ``sc.pp.neighbors(a, use_rep="X_pca")``)
      or the PCs again (``x="pcs"``, var = pc1..pcK).
    * ``uns["pca"]``: ``variance_ratio`` (and ``variance`` when ``pca_variance`` has an
      ``explained_variance`` column or ``explained_variance`` is given), ``params``; with
      ``components`` (rows: genes; ``token_id``, ``ensembl_id``, ``gene_symbol``, ``mean``,
      pc1..pcK) also ``components`` (K x genes float32, like sklearn's), ``mean``,
      ``gene_ids``, ``gene_symbols``, ``token_ids``.
    * ``uns["kmeans"]``: ``kmeans_info`` (method, n_clusters, inertia, n_cells).
    """
    pcs = _pc_columns(embeddings.columns, "embeddings")
    k = len(pcs)
    if "cell_id" not in embeddings.columns:
        raise ValueError("embeddings: missing column 'cell_id'")
    ids = embeddings["cell_id"].astype(str)
    if embeddings["cell_id"].isna().any() or ids.duplicated().any():
        dup = ids[ids.duplicated()].iloc[0] if ids.duplicated().any() else None
        raise ValueError(f"embeddings: cell_id must be unique and non-null (repeated: {dup!r})")
    if "pc" not in pca_variance.columns or "explained_variance_ratio" not in pca_variance.columns:
        raise ValueError("pca_variance: needs columns pc, explained_variance_ratio")
    var_pcs = pca_variance["pc"].astype(str).tolist()
    if var_pcs[:k] != pcs or len(var_pcs) != k:
        raise ValueError(f"pca_variance lists {len(var_pcs)} PCs, embeddings has {k} ({pcs[:3]}..)")

    X_pca = np.ascontiguousarray(embeddings[pcs].to_numpy(), dtype=np.float32)
    obs = embeddings.drop(columns=pcs + ["cell_id"]).copy()
    obs.index = pd.Index(ids.to_numpy(), name="cell_id")
    for col in obs.columns:
        if col == "cluster":
            obs[col] = _as_categorical(obs[col], numeric_order=True)
        elif col in OBS_CATEGORICAL or obs[col].dtype == object:
            obs[col] = _as_categorical(obs[col])

    pca: dict[str, Any] = {
        "variance_ratio": pca_variance["explained_variance_ratio"].to_numpy(np.float64),
        "params": {"n_comps": k, "source": "tahoeflow"},
    }
    if explained_variance is not None:
        pca["variance"] = np.asarray(explained_variance, dtype=np.float64)
    elif "explained_variance" in pca_variance.columns:
        pca["variance"] = pca_variance["explained_variance"].to_numpy(np.float64)
    if "variance" in pca and pca["variance"].shape != (k,):
        raise ValueError(f"explained_variance has shape {pca['variance'].shape}, expected ({k},)")
    if components is not None:
        cpcs = _pc_columns(components.columns, "components")
        if cpcs != pcs:
            raise ValueError(f"components has {len(cpcs)} PCs, embeddings has {k}")
        for col in ("token_id", "ensembl_id", "gene_symbol"):
            if col not in components.columns:
                raise ValueError(f"components: missing column '{col}'")
        pca["components"] = np.ascontiguousarray(components[pcs].to_numpy(np.float32).T)
        pca["gene_ids"] = components["ensembl_id"].astype(str).to_numpy()
        pca["gene_symbols"] = components["gene_symbol"].astype(str).to_numpy()
        pca["token_ids"] = components["token_id"].to_numpy(np.int64)
        if "mean" in components.columns:
            pca["mean"] = components["mean"].to_numpy(np.float64)

    if x == "pcs":
        adata = ad.AnnData(X=X_pca.copy(), obs=obs, var=pd.DataFrame(index=pd.Index(pcs)))
    elif x == "none":
        adata = ad.AnnData(obs=obs)
    else:
        raise ValueError(f"x must be 'none' or 'pcs', got {x!r}")
    adata.obsm["X_pca"] = X_pca
    adata.uns["pca"] = pca
    if kmeans_info is not None:
        adata.uns["kmeans"] = dict(kmeans_info)
    return adata


def pseudobulk_to_anndata(
    counts_long: pd.DataFrame,
    groups: pd.DataFrame,
    genes: pd.DataFrame,
    *,
    dtype: type = np.float32,
) -> ad.AnnData:
    """(sample, cell line) groups x genes of summed counts, as CSR.

    * ``obs``: one row per row of ``groups`` (its order), indexed ``"<sample>|<cell line>"``,
      with the group columns (sample, cell_line_id, plate, drug, dose_uM, moa_fine,
      is_control, n_cells, total_counts).
    * ``var``: the genes in ``genes`` order, indexed by ``ensembl_id`` (made unique with a
      ``-1``, ``-2`` suffix where repeated), with ``gene_symbol`` and ``token_id`` columns.
    * ``X``: the summed counts (CSR ``dtype``, float32 by default: exact for sums < 2**24).

    A (sample, cell line) or token in ``counts_long`` that ``groups`` / ``genes`` lacks is an
    error, as is a repeated group.
    """
    for name, df, cols in (
        ("counts_long", counts_long, ("sample", "cell_line_id", "token_id", "count")),
        ("groups", groups, GROUP_KEYS),
        ("genes", genes, ("token_id", "ensembl_id", "gene_symbol")),
    ):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise ValueError(f"{name}: missing column(s) {', '.join(missing)}")
    obs, var = pseudobulk_obs_var(groups, genes)
    group_index = obs.index
    token_index = pd.Index(genes["token_id"].to_numpy(np.int64))

    c_key = counts_long["sample"].astype(str) + "|" + counts_long["cell_line_id"].astype(str)
    rows = group_index.get_indexer(c_key.to_numpy())
    if (rows < 0).any():
        raise ValueError(
            f"counts_long: group {c_key.iloc[int(np.argmax(rows < 0))]!r} not in groups"
        )
    cols = token_index.get_indexer(counts_long["token_id"].to_numpy(np.int64))
    if (cols < 0).any():
        tok = counts_long["token_id"].iloc[int(np.argmax(cols < 0))]
        raise ValueError(f"counts_long: token_id {tok} not in genes")
    X = sp.coo_matrix(
        (counts_long["count"].to_numpy(np.float64), (rows, cols)),
        shape=(len(group_index), len(token_index)),
    ).tocsr()
    X.sum_duplicates()
    X = X.astype(dtype)
    return ad.AnnData(X=X, obs=obs, var=var)


def pseudobulk_obs_var(
    groups: pd.DataFrame, genes: pd.DataFrame
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The pseudobulk AnnData's ``obs`` (``groups`` indexed ``"<sample>|<cell line>"``, string
    columns categorical) and ``var`` (genes indexed by unique Ensembl id); see
    :func:`pseudobulk_to_anndata`. A repeated group or token is an error."""
    key = groups["sample"].astype(str) + "|" + groups["cell_line_id"].astype(str)
    if key.duplicated().any():
        raise ValueError(f"groups: repeated (sample, cell line) {key[key.duplicated()].iloc[0]!r}")
    group_index = pd.Index(key.to_numpy(), name="group")
    token_index = pd.Index(genes["token_id"].to_numpy(np.int64))
    if token_index.has_duplicates:
        raise ValueError(f"genes: repeated token_id {token_index[token_index.duplicated()][0]}")
    obs = groups.copy()
    obs.index = group_index
    for col in ("sample", "cell_line_id", "plate", "drug", "moa_fine"):
        if col in obs.columns:
            obs[col] = _as_categorical(obs[col])
    var = pd.DataFrame(
        {
            "gene_symbol": genes["gene_symbol"].astype(str).to_numpy(),
            "token_id": genes["token_id"].to_numpy(np.int64),
            "ensembl_id": genes["ensembl_id"].astype(str).to_numpy(),
        },
        index=pd.Index(_make_unique(genes["ensembl_id"].astype(str).to_numpy()), name="gene"),
    )
    return obs, var


def _make_unique(names: np.ndarray) -> list[str]:
    seen: dict[str, int] = {}
    used = set(names.tolist())
    out = []
    for n in names:
        if n in seen:
            k = seen[n]
            while f"{n}-{k}" in used:
                k += 1
            seen[n] = k + 1
            used.add(f"{n}-{k}")
            out.append(f"{n}-{k}")
        else:
            seen[n] = 1
            out.append(n)
    return out


def write_h5ad(
    adata: ad.AnnData,
    path: str | os.PathLike[str],
    compression: Literal["gzip", "lzf"] | None = "gzip",
) -> None:
    """Write ``adata`` to ``path`` atomically: a temporary file beside it, then a rename."""
    if compression not in ("gzip", "lzf", None):
        raise ValueError(f"compression must be 'gzip', 'lzf' or None, got {compression!r}")
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp, compression=compression)
