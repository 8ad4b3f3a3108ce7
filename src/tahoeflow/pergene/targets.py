"""The pseudobulk of the per-gene models' target genes, read without the whole long table.

The tahoe-mode targets are log1p(CP10k) of a few hundred genes per condition; they need
each target gene's counts per (sample, cell line) group and each group's library size (the
sum over *all* genes). :func:`target_counts` streams the merged long pseudobulk once, in
record batches of its four columns, and keeps only those: memory is a groups x (targets + 1)
float64 matrix plus one batch, whatever the number of genes or rows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tahoeflow.export.long_counts import (
    COLUMNS,
    GroupIndex,
    check_tokens,
    missing_group_error,
    open_counts,
    token_lookup,
)
from tahoeflow.io import read_batches

#: rows of the long table decoded at once
BATCH_ROWS = 1 << 20


def target_counts(
    counts_path: str | os.PathLike[str],
    groups: pd.DataFrame,
    token_ids: Sequence[int] | np.ndarray,
    targets: Sequence[int] | np.ndarray,
    *,
    batch_rows: int = BATCH_ROWS,
    groups_path: object = "groups",
) -> sp.csr_matrix:
    """Summed counts per group (rows of ``groups``) of the ``targets`` tokens (columns 0..T-1,
    in ``targets`` order) and, in column T, the group's counts of every other gene.

    Every row's (sample, cell line) must be a group and its token one of ``token_ids`` (the
    gene table), else an InputError naming the file and row. The row sums are the groups'
    library sizes, so ``condition_table(matrix, ..., gene_cols=arange(T))`` gives the same
    CP10k as the full groups x genes matrix (exactly so for integer counts; float counts may
    differ in the last bits, another order of additions).
    """
    targets = np.asarray(targets, dtype=np.int64)
    n_t = targets.size
    sorted_tokens, order = token_lookup(token_ids)
    gene_pos = check_tokens("targets", targets, sorted_tokens, order, 0)
    target_of_gene = np.full(sorted_tokens.size, n_t, dtype=np.int64)
    target_of_gene[gene_pos] = np.arange(n_t)
    index = GroupIndex(groups, groups_path)
    acc = np.zeros((index.n, n_t))
    lib = np.zeros(index.n)
    pf = open_counts(counts_path)
    offset = 0
    for b in read_batches(pf, COLUMNS, batch_rows):
        rows = index.rows_of(b.column("sample"), b.column("cell_line_id"))
        if (rows < 0).any():
            raise missing_group_error(counts_path, b, rows, offset)
        tok = b.column("token_id").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        col = target_of_gene[check_tokens(counts_path, tok, sorted_tokens, order, offset)]
        cnt = b.column("count").to_numpy(zero_copy_only=False).astype(np.float64, copy=False)
        lib += np.bincount(rows, weights=cnt, minlength=index.n)
        keep = col < n_t
        np.add.at(acc, (rows[keep], col[keep]), cnt[keep])
        offset += b.num_rows
    rest = lib - acc.sum(axis=1)
    return sp.csr_matrix(np.column_stack([acc, rest]))
