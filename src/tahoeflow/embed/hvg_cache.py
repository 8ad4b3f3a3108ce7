"""The HVG counts of a group of shards, kept by the Gram pass so the projection pass does not
decode the shards again.

One Parquet file per group, one row group per shard, one row per cell (the summary's cells,
in its order): ``cell_id``, ``total`` (the cell's count total over all genes, float64, summed
as :func:`tahoeflow.cells.normalize.select_columns` does), ``hvg`` (positions of its stored HVG
values in the sorted HVG list) and ``count`` (those raw values). With
:func:`~tahoeflow.cells.normalize.log_normalize_selected` they give exactly the log1p(CP10k)
HVG matrix the Gram pass used.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from tahoeflow.errors import InputError
from tahoeflow.io import atomic_path

N_HVG_KEY = b"tahoeflow.n_hvg"
"""Schema metadata: the number of HVG columns the positions refer to."""


def _schema(n_hvg: int, values: pa.DataType) -> pa.Schema:
    pos = pa.uint16() if n_hvg <= 1 << 16 else pa.int32()
    return pa.schema(
        [
            ("cell_id", pa.string()),
            ("total", pa.float64()),
            ("hvg", pa.list_(pos)),
            ("count", pa.list_(values)),
        ],
        metadata={N_HVG_KEY: str(n_hvg).encode()},
    )


class HvgCacheWriter:
    """Appends shards to a cache file; made by :func:`hvg_cache_writer`.

    The counts' value type is the first shard's (float32 for Tahoe files, float64 for
    normalised h5ad input), so the cached values are the shards' values exactly.
    """

    def __init__(self, path: Path, n_hvg: int) -> None:
        self.path = path
        self.n_hvg = n_hvg
        self.n_cells = 0
        self.schema: pa.Schema | None = None
        self._writer: pq.ParquetWriter | None = None

    def write(self, counts: sp.csr_matrix, totals: np.ndarray, cell_ids: np.ndarray) -> None:
        """Append one shard: ``counts`` (cells x HVGs), ``totals`` and ``cell_ids`` per row."""
        if counts.shape[1] != self.n_hvg or not (counts.shape[0] == len(totals) == len(cell_ids)):
            raise ValueError(
                f"counts {counts.shape}, {len(totals)} totals, {len(cell_ids)} ids "
                f"for {self.n_hvg} HVGs"
            )
        if counts.nnz >= 1 << 31:
            raise ValueError(f"{counts.nnz} stored values in one shard: more than a list holds")
        if self._writer is None:
            self._open(pa.from_numpy_dtype(counts.data.dtype))
        val_type = self.schema.field("count").type.value_type
        if pa.from_numpy_dtype(counts.data.dtype) != val_type:
            raise ValueError(f"counts of dtype {counts.data.dtype} in a {val_type} cache")
        offsets = pa.array(counts.indptr.astype(np.int32))
        pos_type = self.schema.field("hvg").type.value_type
        table = pa.table(
            {
                "cell_id": pa.array(np.asarray(cell_ids, dtype=object), pa.string()),
                "total": pa.array(np.asarray(totals, dtype=np.float64)),
                "hvg": pa.ListArray.from_arrays(
                    offsets, pa.array(counts.indices.astype(pos_type.to_pandas_dtype()))
                ),
                "count": pa.ListArray.from_arrays(offsets, pa.array(counts.data, val_type)),
            },
            schema=self.schema,
        )
        self._writer.write_table(table, row_group_size=max(1, len(cell_ids)))
        self.n_cells += len(cell_ids)

    def _open(self, values: pa.DataType) -> None:
        self.schema = _schema(self.n_hvg, values)
        self._writer = pq.ParquetWriter(self.path, self.schema, compression="zstd")

    def close(self) -> None:
        if self._writer is None:  # no shard: an empty cache of the usual layout
            self._open(pa.float32())
        self._writer.close()


@contextlib.contextmanager
def hvg_cache_writer(path: str | os.PathLike[str], n_hvg: int) -> Iterator[HvgCacheWriter]:
    """A cache file written shard by shard, renamed into place only if the block succeeds."""
    with atomic_path(path) as tmp:
        w = HvgCacheWriter(tmp, int(n_hvg))
        try:
            yield w
        finally:
            w.close()


def _list_parts(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    arr = column.combine_chunks()
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    values = arr.values.slice(offsets[0], offsets[-1] - offsets[0]).to_numpy()
    return offsets - offsets[0], values


def read_hvg_cache(
    path: str | os.PathLike[str], n_hvg: int
) -> Iterator[tuple[sp.csr_matrix, np.ndarray, np.ndarray]]:
    """Yield ``(counts, totals, cell_ids)`` per shard (row group) of a cache file.

    ``n_hvg`` is the HVG count of the PCA it is projected on; a cache written for another
    count, or a file that is not a cache, raises :class:`InputError` naming the file.
    """
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise InputError(path, f"not a readable HVG cache ({e})") from None
    meta = pf.schema_arrow.metadata or {}
    if N_HVG_KEY not in meta or {"cell_id", "total", "hvg", "count"} - set(pf.schema_arrow.names):
        raise InputError(path, "not an HVG cache (no HVG count or columns)")
    stored = int(meta[N_HVG_KEY])
    if stored != n_hvg:
        raise InputError(path, f"HVG cache for {stored} HVGs; the PCA has {n_hvg}")
    for i in range(pf.num_row_groups):
        t = pf.read_row_group(i)
        indptr, idx = _list_parts(t.column("hvg"))
        ptr2, vals = _list_parts(t.column("count"))
        if not np.array_equal(indptr, ptr2) or (idx.size and int(idx.max()) >= n_hvg):
            raise InputError(path, f"row group {i}: HVG positions and counts do not match")
        counts = sp.csr_matrix(
            (vals, idx.astype(np.int32), indptr), shape=(t.num_rows, n_hvg), copy=False
        )
        counts.has_sorted_indices = True
        totals = t.column("total").to_numpy()
        ids = np.asarray(t.column("cell_id").to_numpy(zero_copy_only=False), dtype=object)
        yield counts, totals, ids
