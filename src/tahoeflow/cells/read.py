"""Reading one shard of a Tahoe expression file (Parquet) into CSR counts and obs columns.

Reading goes Arrow list offsets -> CSR directly, one record batch at a time
(:mod:`tahoeflow.cells.csr`): the decoded Arrow data of only one batch is alive at a time, so a
job's memory is the CSR of its shard plus one batch.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from tahoeflow.cells.csr import CsrBuilder, ObsCollector, Problems
from tahoeflow.cells.plan import check_row_range
from tahoeflow.cells.vocab import Vocab
from tahoeflow.errors import InputError
from tahoeflow.sources.tahoe import OBS_STRING_COLUMNS, READ_COLUMNS

# --- reading -----------------------------------------------------------------------------
BATCH_ROWS = 1024
"""Rows decoded at a time by ``read_shard``: Arrow peaks at ~60 MB on Tahoe-sized rows (~1.3k
genes each), ~110 MB at 2048 rows; smaller batches cost no measurable time."""


def _open(path: str | Path, columns: Sequence[str], pre_buffer: bool = True) -> pq.ParquetFile:
    try:
        pf = pq.ParquetFile(path, pre_buffer=pre_buffer)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(
            path, f"not a readable Parquet file (truncated or corrupt?): {e}"
        ) from None
    missing = [c for c in columns if c not in pf.schema_arrow.names]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    return pf


def _plan_rows(
    md: pq.FileMetaData, row_start: int, row_stop: int | None, path: object = None
) -> tuple[list[int], int, int, int]:
    """(row groups holding rows [start, stop), first row of the first group, start, stop)."""
    check_row_range(path, row_start, md.num_rows)
    stop = md.num_rows if row_stop is None else min(row_stop, md.num_rows)
    start = min(row_start, stop)
    groups, first_row, pos = [], 0, 0
    for i in range(md.num_row_groups):
        n = md.row_group(i).num_rows
        if pos + n > start and pos < stop:
            if not groups:
                first_row = pos
            groups.append(i)
        pos += n
    return groups, first_row, start, stop


def _decode_error(path: object, e: Exception) -> InputError:
    return InputError(path, f"cannot decode Parquet data (truncated or corrupt?): {e}")


def read_rows(
    path: str | Path,
    row_start: int = 0,
    row_stop: int | None = None,
    columns: Sequence[str] = READ_COLUMNS,
) -> pa.Table:
    """Read rows [row_start, row_stop) of a Parquet file, touching only the row groups needed."""
    pf = _open(path, columns)
    groups, first_row, start, stop = _plan_rows(pf.metadata, row_start, row_stop, path)
    try:
        if not groups:
            return pf.schema_arrow.empty_table().select(list(columns))
        table = pf.read_row_groups(groups, columns=list(columns))
    except (pa.ArrowInvalid, OSError) as e:
        raise _decode_error(path, e) from None
    return table.slice(start - first_row, stop - start)


def iter_row_batches(
    pf: pq.ParquetFile,
    path: object,
    row_start: int = 0,
    row_stop: int | None = None,
    columns: Sequence[str] = READ_COLUMNS,
    batch_rows: int = BATCH_ROWS,
    use_threads: bool = False,
) -> Iterator[pa.RecordBatch]:
    """Rows [row_start, row_stop) of an open file as record batches of at most ``batch_rows`` rows.

    Only the row groups needed are read, and only one batch is decoded at a time, on the
    calling thread unless ``use_threads`` (a summary job declares one thread). An empty range
    gives one empty batch (so the column types can still be checked).
    """
    groups, first_row, start, stop = _plan_rows(pf.metadata, row_start, row_stop, path)
    if not groups:
        schema = pf.schema_arrow
        yield pa.RecordBatch.from_arrays(
            [pa.array([], schema.field(c).type) for c in columns], names=list(columns)
        )
        return
    pos = first_row
    try:
        batches = pf.iter_batches(
            batch_size=batch_rows, row_groups=groups, columns=list(columns), use_threads=use_threads
        )
    except (pa.ArrowInvalid, OSError) as e:
        raise _decode_error(path, e) from None
    while pos < stop:
        try:
            b = next(batches)
        except StopIteration:
            return
        except (pa.ArrowInvalid, OSError) as e:
            raise _decode_error(path, e) from None
        lo, hi = max(start - pos, 0), min(stop - pos, b.num_rows)
        pos += b.num_rows
        if hi > lo:
            yield b.slice(lo, hi - lo) if (lo, hi) != (0, b.num_rows) else b


_END = object()


def prefetch(items: Iterator) -> Iterator:
    """The items of ``items``, the next one produced on a worker thread while this one is used.

    For record batches: Arrow decodes batch k+1 (releasing the GIL) while the compiled kernel
    (``nogil``) converts batch k. Exceptions come out where the item would have.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="tahoeflow-prefetch") as pool:
        nxt = pool.submit(next, items, _END)
        while True:
            item = nxt.result()
            if item is _END:
                return
            nxt = pool.submit(next, items, _END)
            yield item


def _leaf_values(pf: pq.ParquetFile, groups: Sequence[int], column: str) -> int:
    """Leaf values of a list column in these row groups, from the metadata (0 when unknown)."""
    md = pf.metadata
    leaf = [i for i in range(md.num_columns) if pf.schema.column(i).path.split(".")[0] == column]
    if len(leaf) != 1:
        return 0
    return sum(md.row_group(g).column(leaf[0]).num_values for g in groups)


def read_shard(
    path: str | Path,
    vocab: Vocab,
    row_start: int = 0,
    row_stop: int | None = None,
    *,
    obs_columns: Sequence[str] = OBS_STRING_COLUMNS,
    allow_non_integer: bool = False,
    warn: Callable[[str], None] | None = None,
    batch_rows: int = BATCH_ROWS,
    threads: int = 1,
) -> tuple[dict[str, np.ndarray], sp.csr_matrix]:
    """``obs_arrays`` and ``to_csr`` of ``read_rows(path, row_start, row_stop)``, streamed.

    Same checks, same errors and rows, same results; but the file is decoded ``batch_rows``
    rows at a time straight into the CSR arrays, so memory holds the shard's CSR plus one
    batch instead of the decoded shard. The CSR buffers are sized from the footer's value
    counts (no regrowth when the shard is whole row groups).

    ``threads=1`` (a summary job's declaration) does everything on the calling thread; with
    more, Arrow decodes the columns of a batch in parallel and the next batch is decoded while
    the kernel converts this one.
    """
    columns = ["genes", "expressions", *obs_columns]
    pf = _open(path, columns, pre_buffer=False)  # pre-buffering holds the compressed shard
    try:
        groups, first_row, start, stop = _plan_rows(pf.metadata, row_start, row_stop, path)
        rows_in_groups = sum(pf.metadata.row_group(g).num_rows for g in groups)
        capacity = _leaf_values(pf, groups, "genes")
        if rows_in_groups > stop - start:  # part of a row group: scale, with slack
            capacity = int(capacity * (stop - start) / rows_in_groups * 1.05) + 1024
        problems = Problems()
        schema = pf.schema_arrow
        obs = ObsCollector(obs_columns, path, problems, row_offset=row_start)
        builder = CsrBuilder(
            vocab, path, problems, schema.field("genes").type, schema.field("expressions").type,
            row_offset=row_start, capacity=capacity,
        )  # fmt: skip
        batches = iter_row_batches(pf, path, row_start, row_stop, columns, batch_rows, threads > 1)
        with contextlib.closing(prefetch(batches) if threads > 1 else batches) as it:
            for batch in it:
                obs.add(batch)
                builder.add(batch.column("genes"), batch.column("expressions"))
                del batch
        problems.check()  # metadata problems come first, whatever the lists hold
        X = builder.finish(allow_non_integer, warn)
        return obs.arrays(), X
    finally:
        pf.close()
