"""Condition-level tables built from the merged pseudobulk (inputs of DE and per-gene models)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tahoeflow.errors import InputError


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


def drug_annotations(drug_metadata: pd.DataFrame, path: object = "drug_metadata") -> pd.DataFrame:
    """``drug_metadata`` indexed by drug name (spaces stripped), one row per drug.

    A drug listed twice must have the same ``moa-fine`` and ``targets`` in both rows; else an
    error naming both rows (which one the features use would be an accident of row order).
    """
    if "drug" not in drug_metadata.columns:
        have = ", ".join(map(str, drug_metadata.columns))
        raise InputError(
            path, f"missing column 'drug' (it has {have}: a table of another revision?)"
        )
    meta = drug_metadata.reset_index(drop=True)
    meta = meta.assign(drug=meta["drug"].astype(str).str.strip())
    cols = [c for c in ("moa-fine", "targets") if c in meta.columns]
    dup = meta["drug"].duplicated(keep=False)
    if dup.any():
        rows = meta[dup]
        first = rows.groupby("drug", sort=False).head(1).set_index("drug")
        for c in cols:
            ref = first[c].reindex(rows["drug"]).to_numpy(dtype=object)
            vals = rows[c].to_numpy(dtype=object)
            differ = ~((vals == ref) | (pd.isna(vals) & pd.isna(ref)))
            if differ.any():
                k = int(np.flatnonzero(differ)[0])
                name = rows["drug"].iloc[k]
                row0 = int(rows.index[rows["drug"].to_numpy() == name][0])
                raise InputError(
                    path, f"drug {name!r} is listed twice with different {c} ({ref[k]!r} in "
                    f"row {row0}, {vals[k]!r})", row=int(rows.index[k]),
                )  # fmt: skip
    return meta.drop_duplicates("drug").set_index("drug")


def condition_table(
    counts: sp.csr_matrix,
    groups: pd.DataFrame,
    drug_metadata: pd.DataFrame,
    gene_cols: np.ndarray,
    gene_names: Sequence[str],
    control: str,
    min_cells: int = 1,
    *,
    drug_metadata_path: object = "drug_metadata",
    warn: Callable[[str], None] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Seed 003's shape from Tahoe: one row per (drug, dose, cell line).

    Drugs join ``drug_metadata`` with surrounding spaces ignored. A treated drug absent from
    the table, or a table without ``moa-fine`` / ``targets``, gets MoA "unknown" / no targets,
    with one ``warn`` line naming the table and the drugs.

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

    meta = drug_annotations(drug_metadata, drug_metadata_path)
    key = cond["drug"].astype(str).str.strip()  # 'Erdafitinib ' in the data, not in the table
    is_control = cond["drug"] == control
    effect = {"moa-fine": "every drug's MoA is 'unknown'", "targets": "no drug has targets"}
    for col in [c for c in effect if c not in meta]:
        if warn is not None:
            warn(f"{drug_metadata_path}: no column '{col}': {effect[col]} in the features")
    absent = sorted(set(key[~is_control & ~key.isin(meta.index)]))
    if absent and warn is not None:
        listed = ", ".join(repr(d) for d in absent[:10]) + (", ..." if len(absent) > 10 else "")
        warn(
            f"{drug_metadata_path}: {len(absent)} drug(s) of the data are not in it (MoA "
            f"'unknown', no targets): {listed}"
        )
    moa = key.map(meta["moa-fine"] if "moa-fine" in meta else pd.Series(dtype=str)).fillna("")
    moa = moa.where(~is_control, "control")
    targets = key.map(meta["targets"] if "targets" in meta else pd.Series(dtype=str)).fillna("")
    parts = [
        pd.get_dummies(cond["cell_line_id"], prefix="line", dtype=np.float64),
        pd.get_dummies(moa.replace("", "unknown"), prefix="moa", dtype=np.float64),
        targets.str.get_dummies(sep=",").add_prefix("target_").astype(np.float64),
    ]
    X = pd.concat(parts, axis=1)
    X["log10_dose"] = np.log10(cond["dose_uM"].to_numpy(np.float64) + 1e-3)
    X["is_control"] = (cond["drug"] == control).to_numpy(np.float64)
    return cond, X, Y
