"""Condition-level tables built from the merged pseudobulk (inputs of DE and per-gene models)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .errors import InputError


def pseudobulk_matrix(
    counts: pd.DataFrame, groups: pd.DataFrame, token_ids: np.ndarray
) -> sp.csr_matrix:
    """Long pseudobulk counts -> CSR (rows = ``groups`` rows, columns = ``token_ids``)."""
    key = pd.MultiIndex.from_frame(groups[["sample", "cell_line_id"]])
    rows = key.get_indexer(pd.MultiIndex.from_frame(counts[["sample", "cell_line_id"]]))
    cols = pd.Index(token_ids).get_indexer(counts["token_id"])
    if (rows < 0).any() or (cols < 0).any():
        raise InputError(
            "pseudobulk",
            "counts reference a (sample, cell line) group or gene that is not in the tables",
        )
    return sp.csr_matrix(
        (counts["count"].to_numpy(np.float64), (rows, cols)), shape=(len(groups), len(token_ids))
    )


def condition_table(
    counts: sp.csr_matrix,
    groups: pd.DataFrame,
    drug_metadata: pd.DataFrame,
    gene_cols: np.ndarray,
    gene_names: Sequence[str],
    control: str,
    min_cells: int = 1,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Seed 003's shape from Tahoe: one row per (drug, dose, cell line).

    Returns ``(conditions, X, Y)``: ``conditions`` (drug, dose_uM, cell_line_id, n_cells),
    features ``X`` (cell line one-hot, MoA one-hot and target multi-hot from drug_metadata,
    log10 dose, a control flag) and targets ``Y``: log1p(CP10k) of the pseudobulk (wells of
    the condition summed over plates) for the genes ``gene_cols``.
    """
    g = groups.reset_index(drop=True)
    key = ["drug", "dose_uM", "cell_line_id"]
    codes, uniq = pd.factorize(pd.MultiIndex.from_frame(g[key]), sort=True)
    ind = sp.csr_matrix((np.ones(len(g)), (codes, np.arange(len(g)))), shape=(len(uniq), len(g)))
    summed = (ind @ counts).tocsr()
    n_cells = np.asarray(ind @ g["n_cells"].to_numpy(np.float64)).ravel()
    keep = n_cells >= min_cells
    lib = np.asarray(summed.sum(axis=1)).ravel()
    keep &= lib > 0
    summed, lib, n_cells = summed[keep], lib[keep], n_cells[keep]
    cond = uniq.to_frame(index=False, name=key)[keep].reset_index(drop=True)
    cond["n_cells"] = n_cells.astype(np.int64)
    sub = summed[:, gene_cols].toarray()
    Y = pd.DataFrame(np.log1p(sub / lib[:, None] * 1e4), columns=list(gene_names))

    meta = drug_metadata.drop_duplicates("drug").set_index("drug")
    moa = (
        cond["drug"]
        .map(meta["moa-fine"] if "moa-fine" in meta else pd.Series(dtype=str))
        .fillna("")
    )
    moa = moa.where(cond["drug"] != control, "control")
    targets = (
        cond["drug"].map(meta["targets"] if "targets" in meta else pd.Series(dtype=str)).fillna("")
    )
    parts = [
        pd.get_dummies(cond["cell_line_id"], prefix="line", dtype=np.float64),
        pd.get_dummies(moa.replace("", "unknown"), prefix="moa", dtype=np.float64),
        targets.str.get_dummies(sep=",").add_prefix("target_").astype(np.float64),
    ]
    X = pd.concat(parts, axis=1)
    X["log10_dose"] = np.log10(cond["dose_uM"].to_numpy(np.float64) + 1e-3)
    X["is_control"] = (cond["drug"] == control).to_numpy(np.float64)
    return cond, X, Y
