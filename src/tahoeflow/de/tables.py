"""The DE output tables: column names, Arrow schemas and whole-table operations.

A topTable has one row per (contrast, gene): the condition keys, the gene's names, the method's
statistics (limma's or DESeq2's column names) and the cell and well counts of the contrast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from tahoeflow.errors import InputError
from tahoeflow.multitest import bh_adjust

CONDITION_KEYS = ["drug", "dose_uM", "cell_line_id", "plate"]
GENE_COLUMNS = ["gene", "ensembl_id", "gene_symbol"]
LIMMA_STATS = ["logFC", "AveExpr", "t", "P.Value", "adj.P.Val", "adj.P.Val.global", "B"]
DESEQ2_STATS = [
    "baseMean",
    "log2FoldChange",
    "lfcSE",
    "stat",
    "pvalue",
    "padj",
    "adj.P.Val.global",
]
COUNT_COLUMNS = ["n_treated_cells", "n_control_cells", "n_treated_wells", "n_control_wells"]
DE_COLUMNS = [*CONDITION_KEYS, *GENE_COLUMNS, *LIMMA_STATS, *COUNT_COLUMNS]
DESEQ2_COLUMNS = [*CONDITION_KEYS, *GENE_COLUMNS, *DESEQ2_STATS, *COUNT_COLUMNS]
SKIPPED_COLUMNS = [*CONDITION_KEYS, "n_cells", "n_control_wells", "what", "n_genes", "reason"]
"""``skipped.csv``: one row per skipped contrast (``what`` = "contrast", ``n_genes`` every gene)
or per group of genes a tested contrast left out (``what`` = "genes", e.g. all-zero counts),
with the reason."""
_KEY_FIELDS = [
    ("drug", pa.string()),
    ("dose_uM", pa.float64()),
    ("cell_line_id", pa.string()),
    ("plate", pa.string()),
    ("gene", pa.int64()),
    ("ensembl_id", pa.string()),
    ("gene_symbol", pa.string()),
]
_CELL_COUNT_FIELDS = [(c, pa.int64()) for c in COUNT_COLUMNS]
TOPTABLE_SCHEMA = pa.schema(
    [*_KEY_FIELDS, *((c, pa.float64()) for c in LIMMA_STATS), *_CELL_COUNT_FIELDS]
)
"""Arrow schema of ``results/de/toptable.parquet`` (limma methods), also when empty. ``gene`` is
the token id, ``ensembl_id`` and ``gene_symbol`` name it; ``adj.P.Val`` is BH within the
contrast, ``adj.P.Val.global`` BH over every row of the table."""
DESEQ2_SCHEMA = pa.schema(
    [*_KEY_FIELDS, *((c, pa.float64()) for c in DESEQ2_STATS), *_CELL_COUNT_FIELDS]
)
"""Arrow schema of the topTable of method ``deseq2`` (DESeq2's column names)."""
WELCH_SCHEMA = pa.schema(
    [
        *_KEY_FIELDS,
        *((c, pa.float64()) for c in ("scores", "pvals", "pvals_adj", "logfoldchanges")),
        ("n_treated_cells", pa.int64()),
        ("n_control_cells", pa.int64()),
    ]
)
"""Arrow schema of ``results/de/welch.parquet``, also when empty."""


def table_schema(method: str) -> pa.Schema:
    """The Arrow schema of the topTable written for ``method``."""
    return DESEQ2_SCHEMA if method == "deseq2" else TOPTABLE_SCHEMA


def stat_columns(method: str) -> dict[str, str]:
    """Names of the shared quantities in ``method``'s table: logFC, P.Value, adj.P.Val."""
    if method == "deseq2":
        return {"logFC": "log2FoldChange", "P.Value": "pvalue", "adj.P.Val": "padj"}
    return {"logFC": "logFC", "P.Value": "P.Value", "adj.P.Val": "adj.P.Val"}


def global_adjust(table: pd.DataFrame, method: str = "voom") -> pd.DataFrame:
    """Set ``adj.P.Val.global``: BH over every row of ``table`` (all contrasts and genes)."""
    p = table["pvalue" if method == "deseq2" else "P.Value"].to_numpy(np.float64)
    return table.assign(**{"adj.P.Val.global": bh_adjust(p)})


def empty_toptable(gene_dtype: np.dtype | type = np.int64, method: str = "voom") -> pd.DataFrame:
    """A topTable with no rows: :data:`DE_COLUMNS` (or :data:`DESEQ2_COLUMNS` for ``deseq2``)
    with the dtypes of a non-empty one."""
    columns = DESEQ2_COLUMNS if method == "deseq2" else DE_COLUMNS
    dtypes = {c: np.float64 for c in columns}
    dtypes.update(drug=object, cell_line_id=object, plate=object, gene=gene_dtype)
    dtypes.update(ensembl_id=object, gene_symbol=object)
    dtypes.update({c: np.int64 for c in COUNT_COLUMNS})
    return pd.DataFrame({c: pd.Series(dtype=dtypes[c]) for c in columns})


def gene_annotation(gene_ids: np.ndarray, genes: pd.DataFrame | None) -> tuple[np.ndarray, ...]:
    """``(ensembl_id, gene_symbol)`` object arrays aligned with ``gene_ids`` (None if unknown)."""
    n = gene_ids.size
    if genes is None:
        return np.full(n, None, dtype=object), np.full(n, None, dtype=object)
    if "token_id" not in genes.columns:
        raise InputError("gene table", "missing column 'token_id'")
    idx = pd.Index(genes["token_id"]).get_indexer(gene_ids)
    out = []
    for col in ("ensembl_id", "gene_symbol"):
        vals = np.full(n, None, dtype=object)
        if col in genes.columns:
            src = genes[col].to_numpy(dtype=object)
            vals[idx >= 0] = src[idx[idx >= 0]]
        out.append(vals)
    return tuple(out)


def volcano_conditions(top: pd.DataFrame, n: int, alpha: float = 0.05) -> list[tuple]:
    """The volcano's panels: the ``n`` conditions (drug, dose_uM, cell_line_id) with the most
    calls by the table-wide FDR (``adj.P.Val.global < alpha``), ties in key order. The
    per-contrast ``adj.P.Val`` is not used: over a thousand contrasts about 5% of null ones
    carry a call by it, and would fill the panels."""
    keys = CONDITION_KEYS[:3]
    conds = top[keys].drop_duplicates().sort_values(keys, kind="mergesort")
    idx = pd.MultiIndex.from_frame(conds)
    n_glob = (
        top[top["adj.P.Val.global"] < alpha].groupby(keys).size()
        .reindex(idx, fill_value=0).to_numpy()
    )  # fmt: skip
    order = np.argsort(-n_glob, kind="stable")[: max(n, 0)]
    return [tuple(r) for r in conds.iloc[order].itertuples(index=False)]


def top_conditions(counts: pd.DataFrame, n: int) -> list[tuple]:
    """:func:`volcano_conditions` from per-contrast counts (``n_global_calls`` a row of
    condition keys, e.g. :meth:`tahoeflow.de.gather.CallCounts.table`), the table not held."""
    keys = CONDITION_KEYS[:3]
    c = counts.groupby(keys, sort=True, dropna=False)["n_global_calls"].sum().reset_index()
    order = np.argsort(-c["n_global_calls"].to_numpy(), kind="stable")[: max(n, 0)]
    return [tuple(r) for r in c[keys].iloc[order].itertuples(index=False)]
