"""The merged pseudobulk as an ``.h5ad``, written block by block of (sample, cell line) groups.

:func:`write_pseudobulk_h5ad` writes the file ``write_h5ad(pseudobulk_to_anndata(long, groups,
genes), path)`` writes, byte for byte, without the long table or the groups x genes matrix in
memory. It needs the layout ``merge_pseudobulk`` writes: the groups table sorted by sample,
cell line, and the long table by cell line, sample, token, each cell line in row groups of its
own. Then a cell line's rows come in the groups table's order, and one reader per cell line
(a k-way merge) yields the groups' rows block after block:

1. one pass over the key columns counts each group's entries (the CSR ``indptr``; it checks
   every group and token);
2. ``X`` (CSR float32 in AnnData's on-disk layout: ``data``, ``indices``, ``indptr``, with the
   ``shape`` and encoding attributes) is written with the dataset sizes known up front, a
   block of groups of about ``block_nnz`` entries at a time, each HDF5 chunk written once:
   ``data`` as the blocks come, ``indices`` spooled to a temporary file beside the output
   (4 bytes an entry) and copied after ``data`` is closed, as anndata's one-piece write
   orders them;
3. ``obs``, ``var`` and the (empty) other slots follow through anndata's own ``write_elem``,
   in ``AnnData.write_h5ad``'s order.

Memory: one record batch per cell line (``stream_rows`` rows), one block of entries, and the
groups, genes and ``indptr``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import write_elem

from tahoeflow.errors import ArgumentError, InputError
from tahoeflow.export.h5ad import pseudobulk_obs_var
from tahoeflow.export.long_counts import (
    COLUMNS,
    GroupIndex,
    check_tokens,
    missing_group_error,
    open_counts,
    token_lookup,
)
from tahoeflow.io import atomic_path, read_batches

#: entries (non-zero group x gene values) per written block of groups
BLOCK_NNZ = 1 << 22
#: rows per record batch of each cell line's reader
STREAM_ROWS = 1 << 16
_ORDER = (
    "the long table must be sorted by cell line, sample, token and the groups table by sample, "
    "cell line (as merge_pseudobulk writes them)"
)
#: rows per record batch of the counting pass
COUNT_ROWS = 1 << 20


def _row_counts(path, pf, index: GroupIndex, tokens) -> np.ndarray:
    """Entries per group (rows of the long table), checking every row's group and token."""
    n = np.zeros(index.n, dtype=np.int64)
    offset = 0
    for b in read_batches(pf, COLUMNS[:3], COUNT_ROWS):
        rows = index.rows_of(b.column("sample"), b.column("cell_line_id"))
        if (rows < 0).any():
            raise missing_group_error(path, b, rows, offset)
        tok = b.column("token_id").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        check_tokens(path, tok, *tokens, offset)
        n += np.bincount(rows, minlength=index.n)
        offset += b.num_rows
    return n


def _streams(pf) -> list[tuple[list[int], int]]:
    """Row groups in runs of one cell line (row-group statistics min = max): ``(row groups,
    first row)``; a row group without such statistics is a run of its own."""
    md = pf.metadata
    col = pf.schema_arrow.get_field_index("cell_line_id")
    runs: list[tuple[list[int], int]] = []
    last = None
    start = 0
    for i in range(md.num_row_groups):
        st = md.row_group(i).column(col).statistics
        line = st.min if st is not None and st.has_min_max and st.min == st.max else None
        if line is not None and line == last and runs:
            runs[-1][0].append(i)
        else:
            runs.append(([i], start))
        last = line
        start += md.row_group(i).num_rows
    return runs


class _Stream:
    """One run of row groups, yielding its rows' (group row, gene, count) up to a group."""

    def __init__(self, path, row_groups, first_row, index: GroupIndex, tokens, batch_rows):
        self.path, self.index, self.tokens = path, index, tokens
        pf = open_counts(path)
        self.batches = pf.iter_batches(
            batch_size=batch_rows, row_groups=row_groups, columns=list(COLUMNS), use_threads=False
        )
        self.offset = first_row  # file row of the buffer's first row
        self.rows = np.empty(0, dtype=np.int64)
        self.cols = np.empty(0, dtype=np.int64)
        self.vals = np.empty(0)
        self.pos = 0
        self.last = -1
        self.done = False

    def _next(self) -> None:
        self.offset += self.rows.size
        b = next(self.batches, None)
        if b is None:
            self.done = True
            self.rows = np.empty(0, dtype=np.int64)
            self.pos = 0
            return
        if not b.num_rows:
            self.rows = np.empty(0, dtype=np.int64)
            return
        rows = self.index.rows_of(b.column("sample"), b.column("cell_line_id"))
        if (rows < 0).any():
            raise missing_group_error(self.path, b, rows, self.offset)
        step = np.diff(rows, prepend=self.last)
        if (step < 0).any():
            k = int(np.argmax(step < 0))
            raise InputError(
                self.path,
                f"rows are not in the groups table's order within a cell line: {_ORDER}",
                row=self.offset + k,
            )
        tok = b.column("token_id").to_numpy(zero_copy_only=False).astype(np.int64, copy=False)
        self.cols = check_tokens(self.path, tok, *self.tokens, self.offset)
        self.vals = b.column("count").to_numpy(zero_copy_only=False).astype(np.float64)
        self.rows, self.pos, self.last = rows, 0, int(rows[-1])

    def take(self, stop: int) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """This run's entries of groups < ``stop`` not yet taken."""
        while not self.done:
            if self.pos == self.rows.size:
                self._next()
                continue
            end = int(np.searchsorted(self.rows, stop, side="left"))
            if end > self.pos:
                sl = slice(self.pos, end)
                yield self.rows[sl], self.cols[sl], self.vals[sl]
                self.pos = end
            if end < self.rows.size:
                return


class _ChunkWriter:
    """Fills a 1-D dataset front to back in whole chunks (a chunk is compressed once), then
    closes it."""

    def __init__(self, group: h5py.Group, name: str, size: int, dtype, kwargs) -> None:
        self.args = (group, name, size, dtype, kwargs)
        self.ds: h5py.Dataset | None = None
        self.at = 0
        self.tail = np.empty(0, dtype=dtype)

    def _create(self) -> h5py.Dataset:
        if self.ds is None:
            group, name, size, dtype, kwargs = self.args
            self.ds = group.create_dataset(name, shape=(size,), dtype=dtype, **kwargs)
        return self.ds

    def write(self, values: np.ndarray) -> None:
        ds = self._create()
        buf = np.concatenate([self.tail, values.astype(ds.dtype, copy=False)])
        step = ds.chunks[0] if ds.chunks else 1
        n = buf.size - buf.size % step if self.at + buf.size < ds.shape[0] else buf.size
        if n:
            ds[self.at : self.at + n] = buf[:n]
            self.at += n
        self.tail = buf[n:]

    def close(self) -> None:
        ds = self._create()
        if self.tail.size:
            ds[self.at : self.at + self.tail.size] = self.tail
            self.at += self.tail.size
        if self.at != ds.shape[0]:
            raise RuntimeError(f"{ds.name}: wrote {self.at} of {ds.shape[0]} values")
        # closing the dataset flushes its chunk cache now, as anndata's create_dataset(data=...)
        # does: the chunks land where a one-piece write puts them (the same file bytes)
        self.ds = None
        del ds


def _blocks(indptr: np.ndarray, block_nnz: int) -> list[tuple[int, int]]:
    """Consecutive group ranges of about ``block_nnz`` entries (at least one group each)."""
    n = indptr.size - 1
    out, a = [], 0
    while a < n:
        b = int(np.searchsorted(indptr, indptr[a] + block_nnz, side="right")) - 1
        b = min(max(b, a + 1), n)
        out.append((a, b))
        a = b
    return out


def write_pseudobulk_h5ad(
    counts_path: str | os.PathLike[str],
    groups: pd.DataFrame,
    genes: pd.DataFrame,
    path: str | os.PathLike[str],
    *,
    compression: Literal["gzip", "lzf"] | None = "gzip",
    block_nnz: int = BLOCK_NNZ,
    stream_rows: int = STREAM_ROWS,
    groups_path: object = "groups",
    genes_path: object = "genes",
) -> dict[str, int]:
    """Write the long pseudobulk at ``counts_path`` as AnnData to ``path`` (atomically); the
    content of ``write_h5ad(pseudobulk_to_anndata(...), path, compression)``.

    Returns ``{"n_obs", "n_vars", "nnz", "blocks"}``. Bad input is an InputError naming the
    file (and row): a group or token the tables lack, a repeated (group, token), rows out of
    the merged order.
    """
    if compression not in ("gzip", "lzf", None):
        raise ArgumentError("compression", f"must be 'gzip', 'lzf' or None, got {compression!r}")
    if block_nnz < 1 or stream_rows < 1:
        raise ArgumentError("block_nnz", "block_nnz and stream_rows must be >= 1")
    for where, df, cols in (
        (groups_path, groups, ("sample", "cell_line_id")),
        (genes_path, genes, ("token_id", "ensembl_id", "gene_symbol")),
    ):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise InputError(where, f"missing column(s) {', '.join(missing)}")
    try:
        obs, var = pseudobulk_obs_var(groups, genes)
    except ValueError as e:
        raise InputError(groups_path if "groups" in str(e) else genes_path, str(e)) from None
    index = GroupIndex(groups, groups_path)
    tokens = token_lookup(genes["token_id"].to_numpy(np.int64), genes_path)
    pf = open_counts(counts_path)
    indptr = np.concatenate([[0], np.cumsum(_row_counts(counts_path, pf, index, tokens))])
    nnz, n_obs, n_vars = int(indptr[-1]), len(obs), len(var)
    # scipy's index dtype for this matrix (what coo_matrix(...).tocsr() would hold)
    big = max(nnz, n_obs, n_vars) > np.iinfo(np.int32).max
    idx_dtype = np.dtype(np.int64 if big else np.int32)

    # AnnData.write_h5ad's steps with an empty X of the right shape standing in for X
    shell = ad.AnnData(X=sp.csr_matrix((n_obs, n_vars), dtype=np.float32), obs=obs, var=var)
    shell.strings_to_categoricals()
    kwargs = {"compression": compression, "compression_opts": None}
    streams = [
        _Stream(counts_path, rgs, first, index, tokens, stream_rows) for rgs, first in _streams(pf)
    ]
    blocks = _blocks(indptr, block_nnz)
    with (
        atomic_path(path) as tmp,
        h5py.File(tmp, "w") as f,
        tempfile.TemporaryFile(dir=Path(tmp).parent) as scratch,
    ):
        f.attrs.setdefault("encoding-type", "anndata")
        f.attrs.setdefault("encoding-version", "0.1.0")
        g = f.require_group("X")
        g.attrs["shape"] = (n_obs, n_vars)
        dk = {"maxshape": (None,), **kwargs}
        data = _ChunkWriter(g, "data", nnz, np.float32, dk)
        for a, b in blocks:
            parts = [p for s in streams for p in s.take(b)]
            r = np.concatenate([p[0] for p in parts]) if parts else np.empty(0, np.int64)
            block = sp.coo_matrix(
                (
                    np.concatenate([p[2] for p in parts]) if parts else np.empty(0),
                    (r - a, np.concatenate([p[1] for p in parts]) if parts else r),
                ),
                shape=(b - a, n_vars),
            ).tocsr()
            if r.size != indptr[b] - indptr[a]:  # rows of these groups after later groups'
                short = np.diff(indptr[a : b + 1]) != np.bincount(r - a, minlength=b - a)
                raise InputError(
                    counts_path,
                    f"rows of group '{obs.index[a + int(np.argmax(short))]}' come after rows "
                    f"of later groups: {_ORDER}",
                )
            block.sum_duplicates()
            if block.nnz != r.size:
                raise InputError(
                    counts_path,
                    f"a (sample, cell line, token_id) is repeated in groups {a}..{b - 1} "
                    f"(first '{obs.index[a]}'): the long table must hold each once",
                )
            data.write(block.data.astype(np.float32))
            block.indices.astype(idx_dtype).tofile(scratch)  # written after data, as anndata
            del block, parts, r
        data.close()
        indices = _ChunkWriter(g, "indices", nnz, idx_dtype, dk)
        scratch.seek(0)
        while (part := np.fromfile(scratch, dtype=idx_dtype, count=block_nnz)).size:
            indices.write(part)
        indices.close()
        indptr_writer = _ChunkWriter(g, "indptr", n_obs + 1, idx_dtype, dk)
        indptr_writer.write(indptr)
        indptr_writer.close()
        g.attrs.setdefault("encoding-type", "csr_matrix")
        g.attrs.setdefault("encoding-version", "0.1.0")
        for key, elem in (
            ("obs", shell.obs),
            ("var", shell.var),
            ("obsm", dict(shell.obsm)),
            ("varm", dict(shell.varm)),
            ("obsp", dict(shell.obsp)),
            ("varp", dict(shell.varp)),
            ("layers", dict(shell.layers)),
            ("uns", dict(shell.uns)),
        ):
            write_elem(f, key, elem, dataset_kwargs=kwargs)
    return {"n_obs": n_obs, "n_vars": n_vars, "nnz": nnz, "blocks": len(blocks)}
