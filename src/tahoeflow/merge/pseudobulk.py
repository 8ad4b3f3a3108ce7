"""Merge of the per-shard pseudobulk counts: sums per (sample, cell line, gene).

Each row's (sample, cell line, gene) is packed into one int64 key, so the running sums take
16 bytes a row and memory follows the merged table, not the number of shards. Sums of raw
counts are exact integers, so partial merges (:func:`pseudobulk_part`) change nothing.
:func:`write_pseudobulk` writes each cell line in row groups of its own.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.errors import InputError

_PB_KEYS = ["sample", "cell_line_id", "token_id"]
PSEUDOBULK_MERGE_MIN_ROWS = 4_000_000
"""Shard tables are buffered until they hold at least this many rows (or an eighth of the
running sums) before they are reduced and added to the running sums."""
# A row's (sample, cell line, gene) packed into one int64: sample id << 29 | line id << 17 | token
_TOKEN_BITS, _LINE_BITS = 17, 12


class _Ids:
    """Ids of strings in sorted order (from the merged cells), looked up per distinct value."""

    def __init__(self, what: str, names: Sequence[str], limit: int, path: object) -> None:
        if len(names) > limit:
            raise InputError(path, f"more than {limit} distinct {what} values")
        self.what, self.names = what, list(names)
        self.ids = {n: i for i, n in enumerate(self.names)}

    def codes(self, column: pa.ChunkedArray, path: object) -> np.ndarray:
        """Ids of a column's values (dictionary-encoded first: one lookup per distinct value)."""
        enc = pc.dictionary_encode(column).combine_chunks()
        if enc.null_count:
            raise InputError(path, f"null {self.what}")
        values = enc.dictionary.to_pylist()
        unknown = [v for v in values if v not in self.ids]
        if unknown:
            raise InputError(path, f"{self.what} {unknown[0]!r} is not in the merged cells")
        local = np.array([self.ids[v] for v in values], dtype=np.int64)
        return local[enc.indices.to_numpy(zero_copy_only=False)]


_GROUP_COLUMNS = ["sample", "cell_line_id", "plate", "drug", "dose_uM", "moa_fine", "is_control"]


def _groups_of_cells(cells_path: str | Path) -> pa.Table:
    """One row per (sample, cell line) of the merged cells: its design (first value), cell
    count and summed total counts. Streamed over the file's record batches (memory: one row
    group and one batch plus the groups), sorted by sample, cell line."""
    first = [(c, "first") for c in _GROUP_COLUMNS[2:]]
    parts = []
    pf = tio.parquet_file(cells_path)
    for b in tio.read_batches(pf, [*_GROUP_COLUMNS, "total_counts"], 1 << 20):
        parts.append(
            pa.Table.from_batches([b])
            .group_by(_GROUP_COLUMNS[:2], use_threads=False)
            .aggregate([*first, ([], "count_all"), ("total_counts", "sum")])
            .rename_columns([*_GROUP_COLUMNS[:2], *_GROUP_COLUMNS[2:], "n_cells", "total_counts"])
        )
    if not parts:
        raise InputError(cells_path, "no cells")
    g = (
        pa.concat_tables(parts)
        .group_by(_GROUP_COLUMNS[:2], use_threads=False)
        .aggregate([*first, ("n_cells", "sum"), ("total_counts", "sum")])
    )
    g = g.rename_columns([*_GROUP_COLUMNS, "n_cells", "total_counts"])
    return g.sort_by([(c, "ascending") for c in _GROUP_COLUMNS[:2]]).cast(
        pa.schema(
            [
                *((c, pa.string()) for c in _GROUP_COLUMNS[:4]),
                ("dose_uM", pa.float64()),
                ("moa_fine", pa.string()),
                ("is_control", pa.bool_()),
                ("n_cells", pa.int64()),
                ("total_counts", pa.float64()),
            ]
        )
    )


def _reduce(keys: list[np.ndarray], values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (sorted) and the sum of the values of each (added in input order)."""
    k = np.concatenate(keys)
    uniq, inverse = np.unique(k, return_inverse=True)
    return uniq, np.bincount(inverse, weights=np.concatenate(values), minlength=uniq.size)


def _add_into(
    run_k: np.ndarray, run_v: np.ndarray, k: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Add sorted distinct keys ``k`` (values ``v``) into the sorted distinct running sums.

    Keys already there are added in place; new keys are inserted at their sorted positions
    (one linear copy of the running arrays, only when there are new keys).
    """
    if run_k.size == 0:
        return k, v
    pos = np.searchsorted(run_k, k)
    hit = pos < run_k.size
    hit[hit] = run_k[pos[hit]] == k[hit]
    run_v[pos[hit]] += v[hit]  # positions are distinct: k is
    new = ~hit
    if new.any():
        run_k = np.insert(run_k, pos[new], k[new])
        run_v = np.insert(run_v, pos[new], v[new])
    return run_k, run_v


def _input_tables(pb_paths: Sequence[str | Path]) -> Iterator[tuple[str | Path, pa.Table]]:
    """Each input's row groups in turn (a summary group's file holds its shards' tables one
    after another: memory of one row group, not of the group)."""
    for p in pb_paths:
        f = tio.parquet_file(p)
        if f.metadata.num_row_groups == 0:
            yield p, tio.read_table(p, columns=[*_PB_KEYS, "count"])
        for i in range(f.metadata.num_row_groups):
            yield p, f.read_row_group(i, columns=[*_PB_KEYS, "count"])


def _stream_sums(
    tables: Iterable[tuple[str | Path, pa.Table]], samples, lines, min_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct packed keys and their summed counts over the ``(path, table)`` pairs
    (see :func:`merge_pseudobulk`)."""
    run_k, run_v = np.empty(0, np.int64), np.empty(0, np.float64)
    buf_k: list[np.ndarray] = []
    buf_v: list[np.ndarray] = []
    buffered = 0
    for p, t in tables:
        tok = t.column("token_id").to_numpy().astype(np.int64, copy=False)
        if tok.size and (tok.min() < 0 or tok.max() >= 1 << _TOKEN_BITS):
            raise InputError(p, f"token_id outside 0..{(1 << _TOKEN_BITS) - 1}")
        s = samples.codes(t.column("sample"), p)
        line = lines.codes(t.column("cell_line_id"), p)
        buf_k.append((s << (_TOKEN_BITS + _LINE_BITS)) | (line << _TOKEN_BITS) | tok)
        buf_v.append(t.column("count").to_numpy().astype(np.float64, copy=False))
        buffered += tok.size
        del t
        if buffered >= max(min_rows, run_k.size // 8):
            run_k, run_v = _add_into(run_k, run_v, *_reduce(buf_k, buf_v))
            buf_k, buf_v, buffered = [], [], 0
    if buf_k:
        run_k, run_v = _add_into(run_k, run_v, *_reduce(buf_k, buf_v))
    return run_k, run_v


class _GrowingIds(_Ids):
    """Ids in order of first appearance, for a partial merge that has no merged cells."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(what, [], limit, what)
        self.limit = limit

    def codes(self, column: pa.ChunkedArray, path: object) -> np.ndarray:
        enc = pc.dictionary_encode(column).combine_chunks()
        if enc.null_count:
            raise InputError(path, f"null {self.what}")
        for v in enc.dictionary.to_pylist():
            if v not in self.ids:
                self.ids[v] = len(self.names)
                self.names.append(v)
        if len(self.names) > self.limit:
            raise InputError(path, f"more than {self.limit} distinct {self.what} values")
        return super().codes(column, path)


def _unpack(run_k: np.ndarray, run_v: np.ndarray, samples: _Ids, lines: _Ids) -> pa.Table:
    s_id = (run_k >> (_TOKEN_BITS + _LINE_BITS)).astype(np.int32)
    l_id = ((run_k >> _TOKEN_BITS) & ((1 << _LINE_BITS) - 1)).astype(np.int32)
    tok = run_k & ((1 << _TOKEN_BITS) - 1)
    return pa.table(
        {
            "sample": pa.DictionaryArray.from_arrays(
                s_id, pa.array(samples.names, pa.string())
            ).cast(pa.string()),
            "cell_line_id": pa.DictionaryArray.from_arrays(
                l_id, pa.array(lines.names, pa.string())
            ).cast(pa.string()),
            "token_id": pa.array(tok, pa.int64()),
            "count": pa.array(run_v, pa.float64()),
        }
    )


def pseudobulk_part(
    pb_paths: Sequence[str | Path], min_rows: int = PSEUDOBULK_MERGE_MIN_ROWS
) -> pa.Table:
    """A partial merge of pseudobulk counts: (sample, cell_line_id, token_id, count) summed
    over ``pb_paths`` (shard tables or other partials), sorted by (sample, cell line, token
    id). Memory follows the group's distinct rows (16 bytes each, plus the buffer). Sums of
    raw counts are exact integers, so merging partials gives what one merge gives."""
    samples = _GrowingIds("sample", 1 << (63 - _TOKEN_BITS - _LINE_BITS))
    lines = _GrowingIds("cell_line_id", (1 << _LINE_BITS) - 1)
    run_k, run_v = _stream_sums(_input_tables(pb_paths), samples, lines, min_rows)
    # renumber both in sorted name order, so that sorted keys are the output order
    s_rank = np.argsort(np.argsort(np.asarray(samples.names, dtype=object), kind="stable"))
    l_rank = np.argsort(np.argsort(np.asarray(lines.names, dtype=object), kind="stable"))
    s_id = run_k >> (_TOKEN_BITS + _LINE_BITS)
    l_id = (run_k >> _TOKEN_BITS) & ((1 << _LINE_BITS) - 1)
    key = (
        (s_rank[s_id].astype(np.int64) << (_TOKEN_BITS + _LINE_BITS))
        | (l_rank[l_id].astype(np.int64) << _TOKEN_BITS)
        | (run_k & ((1 << _TOKEN_BITS) - 1))
    )
    order = np.argsort(key, kind="stable")
    samples.names, lines.names = sorted(samples.names), sorted(lines.names)
    return _unpack(key[order], run_v[order], samples, lines)


def merge_pseudobulk(
    pb_paths: Sequence[str | Path],
    cells_path: str | Path,
    min_rows: int = PSEUDOBULK_MERGE_MIN_ROWS,
) -> tuple[pa.Table, pa.Table]:
    """(long counts per (sample, cell line, gene), one row per (sample, cell line) with its design).

    Streaming, in 16 bytes a row: each shard table is read on its own and its (sample, cell
    line, gene) packed into one int64 key (ids in the sorted order of the names in the merged
    cells, one lookup per distinct value; a name not in the cells is an error). Buffered rows
    are reduced (``np.unique`` + ``np.bincount``) once they reach an eighth of the running sums
    (at least ``min_rows``) and added into the sorted running sums: in place where the key
    exists, by ``np.insert`` where it is new. Memory follows the merged table (about 32 bytes
    per merged row at the peak, plus the buffer), not the number of shards. Sums of float64
    counts are exact for integers below 2**53 (raw counts), so the order of additions does not
    change them. The sorted keys are the output order (sample, cell line, token id). The groups
    table streams over the merged cells' record batches.
    """
    groups = _groups_of_cells(cells_path)
    samples, lines = _ids_of_groups(groups, cells_path)
    run_k, run_v = _stream_sums(_input_tables(pb_paths), samples, lines, min_rows)
    counts = _unpack(run_k, run_v, samples, lines)
    del run_k
    return counts, groups


def _ids_of_groups(groups: pa.Table, cells_path: str | Path) -> tuple[_Ids, _Ids]:
    """Sample and cell-line ids in sorted name order (sorted keys are then the output order)."""
    samples = _Ids(
        "sample",
        pc.unique(groups.column("sample")).to_pylist(),
        1 << (63 - _TOKEN_BITS - _LINE_BITS),
        cells_path,
    )
    lines = _Ids(
        "cell_line_id",
        sorted(pc.unique(groups.column("cell_line_id")).to_pylist()),
        (1 << _LINE_BITS) - 1,
        cells_path,
    )
    return samples, lines


def row_group_lines(source: str | Path | pq.ParquetFile) -> list[str | None]:
    """The one cell line of each row group of a pseudobulk file (a path or an open file), from
    its ``cell_line_id`` statistics; None for a row group that may hold several (or has no
    statistics)."""
    pf = source if isinstance(source, pq.ParquetFile) else tio.parquet_file(source)
    meta = pf.metadata
    names = meta.schema.names
    if "cell_line_id" not in names:
        return [None] * meta.num_row_groups
    j = names.index("cell_line_id")
    out: list[str | None] = []
    for i in range(meta.num_row_groups):
        st = meta.row_group(i).column(j).statistics
        if st is None or not st.has_min_max or st.null_count:
            out.append(None)
            continue
        lo, hi = (v.decode() if isinstance(v, bytes) else str(v) for v in (st.min, st.max))
        out.append(lo if lo == hi else None)
    return out


def largest_line_rows(pb_paths: Sequence[str | Path]) -> int | None:
    """The most rows one cell line has over all inputs (from the footers), which bounds what
    :func:`merge_pseudobulk_by_line` holds at once; None where an input has a row group of
    several lines (shard tables), which that function merges whole."""
    rows: dict[str, int] = {}
    for p in pb_paths:
        f = tio.parquet_file(p)
        for i, line in enumerate(row_group_lines(f)):
            if line is None:
                return None
            rows[line] = rows.get(line, 0) + f.metadata.row_group(i).num_rows
    return max(rows.values(), default=0)


def merge_pseudobulk_by_line(
    pb_paths: Sequence[str | Path],
    cells_path: str | Path,
    out_path: str | Path,
    min_rows: int = PSEUDOBULK_MERGE_MIN_ROWS,
    row_group_rows: int | None = None,
) -> tuple[pa.Table, int, int]:
    """:func:`merge_pseudobulk` + :func:`write_pseudobulk` in one pass per cell line, for inputs
    written one line per row group (the partial merges): returns ``(groups, rows, row groups)``.

    For each line only that line's row groups of each input are read and summed, then written:
    memory follows one line's (sample, gene) rows, not the whole table (at Tahoe's scale about
    1,300 wells x the genes of one line against 50 times that). The file is the same bytes as
    :func:`write_pseudobulk` of :func:`merge_pseudobulk`. Inputs with a row group of several
    lines (shard tables) take that path instead: they come at most ``merge.fan_in`` at a time.
    """
    row_group_rows = row_group_rows or PSEUDOBULK_ROW_GROUP_ROWS
    files = [tio.parquet_file(p) for p in pb_paths]  # footers read once, kept open
    maps = [row_group_lines(f) for f in files]
    if not pb_paths or any(None in m for m in maps):
        counts, groups = merge_pseudobulk(pb_paths, cells_path, min_rows)
        n_groups = write_pseudobulk(counts, out_path, row_group_rows)
        return groups, counts.num_rows, n_groups
    groups = _groups_of_cells(cells_path)
    samples, lines = _ids_of_groups(groups, cells_path)
    unknown = sorted({ln for m in maps for ln in m} - set(lines.names))
    if unknown:
        raise InputError(pb_paths[0], f"cell line {unknown[0]!r} is not in {cells_path}")
    columns = [*_PB_KEYS, "count"]

    def line_tables(line: str) -> Iterator[tuple[str | Path, pa.Table]]:
        for p, f, m in zip(pb_paths, files, maps, strict=True):
            rgs = [i for i, ln in enumerate(m) if ln == line]
            if rgs:
                yield p, f.read_row_groups(rgs, columns=columns)

    written = {"rows": 0, "row_groups": 0}

    def tables() -> Iterator[pa.Table]:
        for line in lines.names:
            run_k, run_v = _stream_sums(line_tables(line), samples, lines, min_rows)
            counts = _unpack(run_k, run_v, samples, lines)
            del run_k, run_v
            for chunk in _row_groups(counts, np.arange(counts.num_rows), row_group_rows):
                written["rows"] += chunk.num_rows
                written["row_groups"] += 1
                yield chunk
        if not written["row_groups"]:  # no counts at all: the empty table, as write_pseudobulk
            yield _unpack(np.empty(0, np.int64), np.empty(0, np.float64), samples, lines)

    tio.write_parquet_batches(tables(), out_path)
    return groups, written["rows"], written["row_groups"]


PSEUDOBULK_ROW_GROUP_ROWS = 1 << 20
"""Most rows in one row group of the merged pseudobulk (a cell line's rows may span several)."""


def write_pseudobulk(
    counts: pa.Table, path: str | Path, row_group_rows: int = PSEUDOBULK_ROW_GROUP_ROWS
) -> int:
    """Write the merged long counts sorted by cell line (then sample, token id), each cell line
    in row groups of its own (at most ``row_group_rows`` rows): a row group never holds two
    lines, so its ``cell_line_id`` statistics (min = max) let a per-line DE job decode only its
    own row groups (:func:`tahoeflow.de.parts.read_pseudobulk_part`). Within a line the rows keep
    :func:`merge_pseudobulk`'s order (a stable sort). Atomic; returns the number of row groups.
    """
    if row_group_rows < 1:
        raise ValueError(f"row_group_rows must be >= 1, got {row_group_rows}")
    enc = pc.dictionary_encode(counts.column("cell_line_id")).combine_chunks()
    if enc.null_count:
        raise InputError(path, "null cell_line_id in the merged pseudobulk")
    names = enc.dictionary.to_pylist()
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(np.asarray(names, dtype=object), kind="stable")] = np.arange(len(names))
    key = rank[enc.indices.to_numpy(zero_copy_only=False)]
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1

    def tables() -> Iterator[pa.Table]:
        if counts.num_rows == 0:
            yield counts
        for idx in np.split(order, bounds) if counts.num_rows else []:
            yield from _row_groups(counts, idx, row_group_rows)

    n = tio.write_parquet_batches(tables(), path)
    return n if counts.num_rows else 0


def _row_groups(table: pa.Table, idx: np.ndarray, rows: int) -> Iterator[pa.Table]:
    """The rows ``idx`` of ``table`` (one cell line's, in order) in tables of at most ``rows``."""
    for lo in range(0, idx.size, rows):
        yield table.take(pa.array(idx[lo : lo + rows]))
