"""A shard's counts of a few genes and its cells' totals, read without building the full matrix.

The Gram pass needs, per kept cell, the raw counts of the highly variable genes and the total
over all genes. :func:`read_selected` decodes the shard's lists and, in the same compiled pass
that checks them (the CSR reader's checks and errors), keeps only the selected genes' values,
each cell's total and its number of expressed genes. Its result is
``select_columns(load_shard(...).X, columns)`` and the kept cells' ids, bit for bit (tested):
rows are read in sorted column order with repeats summed and stored zeros dropped, as the full
reader does, so the totals are summed in the same order.

It skips what only the summary job needs: the metadata columns other than the cell id (and the
list filters' columns when those are active) and the sample_metadata checks, which the summary
job ran on the same file before any pass that reads HVGs can exist.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np
import scipy.sparse as sp

from tahoeflow.cells.csr import CsrBuilder, ObsCollector, Problems, _read_row
from tahoeflow.cells.normalize import _column_positions
from tahoeflow.cells.plan import Shard
from tahoeflow.cells.read import BATCH_ROWS, _open, iter_row_batches
from tahoeflow.cells.stats import keep_rows_inplace
from tahoeflow.cells.summarize import Filters, filter_cells
from tahoeflow.cells.vocab import Vocab
from tahoeflow.sources.tahoe import CLS_TOKEN

CELL_ID_COLUMN = "BARCODE_SUB_LIB_ID"
_FILTER_COLUMNS = {"cell_lines": "cell_line_id", "drugs": "drug", "plates": "plate"}


@nb.njit(cache=True, nogil=True)
def _selected_kernel(
    g_off, g_val, e_off, e_val, lookup, position, marker,
    indptr, out_idx, out_dat, totals, n_genes, w, err,
):  # fmt: skip  # pragma: no cover - compiled
    """``_csr_kernel``'s checks over one batch, keeping only the columns with ``position`` >= 0.

    Each row is checked and written into a scratch buffer by ``_read_row`` (sorted by column,
    repeats summed, as in the full CSR); then its non-zero values are counted
    (``n_genes``), summed in column order as float64 (``totals``) and those of kept columns
    written from ``w`` as (position, value). Returns the end position.
    """
    n = g_off.size - 1
    longest = 0
    for i in range(n):
        longest = max(longest, g_off[i + 1] - g_off[i])
    idx = np.empty(longest, dtype=np.int32)
    dat = np.empty(longest, dtype=np.float32)
    for i in range(n):
        indptr[i] = w
        m = _read_row(i, g_off, g_val, e_off, e_val, lookup, marker, idx, dat, 0, err)
        total = 0.0
        count = 0
        for t in range(m):
            v = dat[t]
            if v != 0:  # stored zeros are dropped, as drop_stored_zeros does
                count += 1
                total += np.float64(v)
                p = position[idx[t]]
                if p >= 0:
                    out_idx[w] = p
                    out_dat[w] = v
                    w += 1
        totals[i] = total
        n_genes[i] = count
    indptr[n] = w
    return w


class SelectedBuilder(CsrBuilder):
    """:class:`CsrBuilder`'s checks; keeps the selected columns, the totals and gene counts."""

    def __init__(self, *args, position: np.ndarray, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.position = np.ascontiguousarray(position, dtype=np.int32)
        self.n_selected = int((self.position >= 0).sum())
        self.totals_parts: list[np.ndarray] = []
        self.n_genes_parts: list[np.ndarray] = []

    def _convert(self, g_off, g_val, e_off, e_val, err) -> None:
        self._reserve(int(g_off[-1]))
        n = g_off.size - 1
        indptr = np.empty(n + 1, dtype=np.int64)
        totals = np.empty(n, dtype=np.float64)
        n_genes = np.empty(n, dtype=np.int64)
        self.nnz = _selected_kernel(
            g_off, g_val, e_off, e_val, self.lookup, self.position, CLS_TOKEN, indptr,
            self.indices, self.data, totals, n_genes, self.nnz, err,
        )  # fmt: skip
        self.indptr_parts.append(indptr[1:])
        self.totals_parts.append(totals)
        self.n_genes_parts.append(n_genes)

    def finish_selected(
        self, allow_non_integer: bool = False, warn: Callable[[str], None] | None = None
    ) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
        """Raise the best-ranked problem (as ``finish``); (counts, totals, genes per cell)."""
        self.check(allow_non_integer, warn)
        nnz = self.nnz
        indptr = np.concatenate(self.indptr_parts)
        counts = sp.csr_matrix(
            (self.data[:nnz].copy(), self.indices[:nnz].copy(), indptr),
            shape=(self.n_rows, self.n_selected),
            copy=False,
        )
        counts.has_sorted_indices = True
        self.indices = self.data = None
        cat = np.concatenate
        totals = cat(self.totals_parts) if self.totals_parts else np.zeros(0)
        n_genes = cat(self.n_genes_parts) if self.n_genes_parts else np.zeros(0, np.int64)
        return counts, totals, n_genes


@dataclass
class Selected:
    """The kept cells of a shard, as :func:`read_selected` reads them."""

    counts: sp.csr_matrix  # raw counts of the selected columns (cells x columns, sorted indices)
    totals: np.ndarray  # each cell's total over all genes (float64, summed in column order)
    obs: dict[str, np.ndarray]  # the metadata columns read (always the cell id), as load_shard's
    filter_counts: dict[str, int]  # cells removed by each filter, as load_shard's


def read_selected(
    path: str | Path,
    shard: Shard,
    vocab: Vocab,
    columns: np.ndarray,
    filters: Filters,
    *,
    obs_columns: Sequence[str] = (),
    allow_non_integer: bool = False,
    warn: Callable[[str], None] | None = None,
    batch_rows: int = BATCH_ROWS,
) -> Selected:
    """The kept cells' raw counts of ``columns`` (strictly increasing vocabulary columns).

    ``select_columns(load_shard(...).X, columns)``, the kept rows of the metadata columns
    ``obs_columns`` (the cell id, ``BARCODE_SUB_LIB_ID``, always) and ``load_shard``'s
    ``filter_counts``, for Tahoe Parquet shards whose summary job has passed.
    """
    _, position = _column_positions(vocab.n_genes, np.asarray(columns))
    active = [_FILTER_COLUMNS[k] for k in _FILTER_COLUMNS if getattr(filters, k)]
    wanted = list(dict.fromkeys([CELL_ID_COLUMN, *obs_columns, *active]))
    pf = _open(path, ["genes", "expressions", *wanted], pre_buffer=False)
    try:
        problems = Problems()
        schema = pf.schema_arrow
        obs = ObsCollector(wanted, path, problems, row_offset=shard.row_start)
        builder = SelectedBuilder(
            vocab, path, problems, schema.field("genes").type, schema.field("expressions").type,
            row_offset=shard.row_start, position=position,
        )  # fmt: skip
        batches = iter_row_batches(
            pf, path, shard.row_start, shard.row_stop, ["genes", "expressions", *wanted],
            batch_rows,
        )  # fmt: skip
        with contextlib.closing(batches) as it:
            for batch in it:
                obs.add(batch)
                builder.add(batch.column("genes"), batch.column("expressions"))
                del batch
        problems.check()
        counts, totals, n_genes = builder.finish_selected(allow_non_integer, warn)
    finally:
        pf.close()
    arrays = obs.arrays()
    none = np.empty(n_genes.size, dtype=object)
    keep, filter_counts, _ = filter_cells(
        filters, *(arrays.get(c, none) for c in _FILTER_COLUMNS.values()), n_genes
    )
    kept = {c: arrays[c] for c in (CELL_ID_COLUMN, *obs_columns)}
    if not keep.all():
        counts, totals = keep_rows_inplace(counts, keep), totals[keep]
        kept = {c: v[keep] for c, v in kept.items()}
    return Selected(counts, totals, kept, filter_counts)
