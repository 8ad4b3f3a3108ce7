"""Static shard planning and reading one shard of a Tahoe expression file into CSR.

A *shard* is a row range of one expression file. Shards are known from the config alone
(file selection, ``cells_per_shard`` and the rows per file), so Snakemake sees every job in
a dry run and no checkpoint is needed.

Reading goes Arrow list offsets -> CSR directly: the offsets become ``indptr`` (minus one per
row for the stripped marker), the flattened ``genes`` become column indices through a
token->column lookup array, the flattened ``expressions`` become the data. Every check is a
vectorised comparison over the flattened values; the first offending row is reported.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from .errors import ConfigError, InputError
from .schema import CLS_TOKEN, READ_COLUMNS


@dataclass(frozen=True)
class Shard:
    name: str
    file_index: int
    row_start: int
    row_stop: int | None  # None: to the end of the file


_RANGE = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+)\s*)?$")


def parse_file_selection(spec: object, n_files_total: int, key: str = "source.files") -> list[int]:
    """File indices from a list of ints and/or ``"a:b"`` range strings (b exclusive).

    ``"0:40"`` -> 0..39; ``[3, "10:12"]`` -> [3, 10, 11]. Sorted, unique, each < n_files_total.
    """
    items: Iterable[object] = spec if isinstance(spec, list | tuple) else [spec]
    out: set[int] = set()
    for item in items:
        if isinstance(item, bool):
            raise ConfigError(key, f"{item!r} is not a file index or 'start:stop' range")
        if isinstance(item, int):
            lo, hi = item, item + 1
        else:
            m = _RANGE.match(str(item))
            if not m:
                raise ConfigError(key, f"{item!r} is not a file index or 'start:stop' range")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo + 1
            if hi <= lo:
                raise ConfigError(key, f"range {item!r} is empty")
        if lo < 0 or hi > n_files_total:
            raise ConfigError(key, f"{item!r} is outside 0..{n_files_total - 1}")
        out.update(range(lo, hi))
    if not out:
        raise ConfigError(key, "selects no files")
    return sorted(out)


def plan_shards(
    files: Sequence[int], cells_per_shard: int | None, rows_per_file: dict[int, int] | int
) -> list[Shard]:
    """One shard per file, or row ranges of ``cells_per_shard`` rows.

    ``rows_per_file`` (a manifest's row counts, or one nominal count) sizes the ranges; the
    last range of a file reads to the end of the file, so a nominal count that is slightly
    off never loses rows.
    """
    shards = []
    for f in files:
        if not cells_per_shard:
            shards.append(Shard(f"{f:05d}", f, 0, None))
            continue
        n = rows_per_file[f] if isinstance(rows_per_file, dict) else rows_per_file
        k = max(1, -(-n // cells_per_shard))
        for j in range(k):
            stop = None if j == k - 1 else (j + 1) * cells_per_shard
            shards.append(Shard(f"{f:05d}-{j:04d}", f, j * cells_per_shard, stop))
    return shards


@dataclass(frozen=True)
class Vocab:
    """Token id -> column position, and per-column annotations."""

    token_ids: np.ndarray  # (G,) int64, column order
    lookup: np.ndarray  # (max_token+1,) int32, -1 where not a gene
    is_mito: np.ndarray  # (G,) bool

    @property
    def n_genes(self) -> int:
        return int(self.token_ids.size)


def vocab_from_gene_metadata(table: pa.Table, path: object = "gene_metadata") -> Vocab:
    """Columns in token-id order; MT genes flagged by a ``MT-`` symbol prefix."""
    for col in ("token_id", "gene_symbol"):
        if col not in table.column_names:
            raise InputError(path, f"missing column '{col}'")
    tokens = table.column("token_id").to_numpy().astype(np.int64)
    order = np.argsort(tokens, kind="stable")
    tokens = tokens[order]
    if tokens.size == 0 or tokens[0] < 0:
        raise InputError(path, "token_id must be non-negative")
    if np.any(tokens[1:] == tokens[:-1]):
        dup = int(order[1:][tokens[1:] == tokens[:-1]][0])
        raise InputError(path, f"duplicated token_id {int(tokens[1:][tokens[1:] == tokens[:-1]][0])}", row=dup)
    lookup = np.full(int(tokens[-1]) + 1, -1, dtype=np.int32)
    lookup[tokens] = np.arange(tokens.size, dtype=np.int32)
    symbols = np.asarray(table.column("gene_symbol").fill_null("").to_pylist(), dtype=object)[order]
    is_mito = np.char.startswith(symbols.astype(str), "MT-")
    return Vocab(tokens, lookup, is_mito)


def read_rows(
    path: str | Path, row_start: int = 0, row_stop: int | None = None, columns: Sequence[str] = READ_COLUMNS
) -> pa.Table:
    """Read rows [row_start, row_stop) of a Parquet file, touching only the row groups needed."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(path, f"not a readable Parquet file (truncated or corrupt?): {e}") from None
    schema = pf.schema_arrow
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    md = pf.metadata
    n_rows = md.num_rows
    stop = n_rows if row_stop is None else min(row_stop, n_rows)
    start = min(row_start, stop)
    groups, first_row, pos = [], None, 0
    for i in range(md.num_row_groups):
        n = md.row_group(i).num_rows
        if pos + n > start and pos < stop:
            groups.append(i)
            first_row = pos if first_row is None else first_row
        pos += n
    try:
        if not groups:
            return schema.empty_table().select(list(columns))
        table = pf.read_row_groups(groups, columns=list(columns))
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(path, f"cannot decode Parquet data (truncated or corrupt?): {e}") from None
    return table.slice(start - first_row, stop - start)


def _flat_list(table: pa.Table, col: str, path: object) -> tuple[np.ndarray, np.ndarray, pa.DataType]:
    arr = table.column(col).combine_chunks()
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise InputError(path, f"column '{col}' has type {arr.type}, expected a list")
    if arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(path, f"column '{col}' is null", row=row)
    offsets = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    if values.null_count:
        vpos = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(path, f"column '{col}' holds a null value", row=_row_of(offsets - offsets[0], vpos))
    return offsets - offsets[0], values.to_numpy(zero_copy_only=False), arr.type.value_type


def _row_of(offsets: np.ndarray, value_pos: int) -> int:
    return int(np.searchsorted(offsets, value_pos, side="right") - 1)


def to_csr(
    table: pa.Table,
    vocab: Vocab,
    path: object,
    row_offset: int = 0,
    allow_non_integer: bool = False,
    warn: callable | None = None,
) -> sp.csr_matrix:
    """CSR counts (cells x genes, float32 data, int32 indices) from the ``genes``/``expressions`` lists.

    Checks, each reported with the file and the row (``row_offset`` + position in ``table``):
    list types, equal lengths, the marker at element 0, tokens inside the vocabulary, counts
    finite, non-negative and integer (non-integer is a warning when ``allow_non_integer``).
    """
    g_off, g_val, g_type = _flat_list(table, "genes", path)
    e_off, e_val, e_type = _flat_list(table, "expressions", path)
    if not pa.types.is_integer(g_type):
        raise InputError(path, f"column 'genes' holds {g_type}, expected integer token ids")
    if not (pa.types.is_floating(e_type) or pa.types.is_integer(e_type)):
        raise InputError(path, f"column 'expressions' holds {e_type}, expected numbers")
    n = g_off.size - 1
    lengths = np.diff(g_off)
    if not np.array_equal(g_off, e_off):
        bad = int(np.flatnonzero(lengths != np.diff(e_off))[0])
        raise InputError(
            path,
            f"'genes' has {lengths[bad]} entries but 'expressions' has {np.diff(e_off)[bad]}",
            row=row_offset + bad,
        )
    if n == 0:
        return sp.csr_matrix((0, vocab.n_genes), dtype=np.float32)
    first = g_off[:-1]
    empty = lengths == 0
    if empty.any():
        raise InputError(path, "empty 'genes' list: no marker at element 0", row=row_offset + int(np.flatnonzero(empty)[0]))
    no_marker = (g_val[first] != CLS_TOKEN) | ~(e_val[first] < 0)
    if no_marker.any():
        r = int(np.flatnonzero(no_marker)[0])
        raise InputError(
            path,
            f"no marker at element 0 (expected genes[0]={CLS_TOKEN} and a negative expressions[0], "
            f"found {g_val[first[r]]} and {e_val[first[r]]})",
            row=row_offset + r,
        )
    keep = np.ones(g_val.size, dtype=bool)
    keep[first] = False
    tokens = g_val[keep]
    data = e_val[keep]
    indptr = g_off - np.arange(n + 1)
    # vocabulary
    in_range = (tokens >= 0) & (tokens < vocab.lookup.size)
    cols = np.full(tokens.size, -1, dtype=np.int32)
    cols[in_range] = vocab.lookup[tokens[in_range]]
    if (cols < 0).any():
        pos = int(np.flatnonzero(cols < 0)[0])
        raise InputError(path, f"token id {int(tokens[pos])} is outside the gene vocabulary", row=row_offset + _row_of(indptr, pos))
    # counts
    data = data.astype(np.float32, copy=False)
    bad = ~np.isfinite(data)
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise InputError(path, f"count {data[pos]} is not finite", row=row_offset + _row_of(indptr, pos))
    neg = data < 0
    if neg.any():
        pos = int(np.flatnonzero(neg)[0])
        raise InputError(path, f"negative count {data[pos]}", row=row_offset + _row_of(indptr, pos))
    frac = data != np.rint(data)
    if frac.any():
        pos = int(np.flatnonzero(frac)[0])
        msg = f"non-integer count {data[pos]} (raw UMI counts expected; set input.normalised: true for normalised input)"
        if not allow_non_integer:
            raise InputError(path, msg, row=row_offset + _row_of(indptr, pos))
        if warn is not None:
            warn(f"warning: {path}, row {row_offset + _row_of(indptr, pos)}: {msg}")
    X = sp.csr_matrix((data, cols, indptr.astype(np.int64)), shape=(n, vocab.n_genes))
    if not X.has_canonical_format:  # unsorted or repeated genes within a row
        X.sum_duplicates()
    if X.indptr[-1] < np.iinfo(np.int32).max:
        X.indptr = X.indptr.astype(np.int32)
    return X


def obs_arrays(
    table: pa.Table, path: object, columns: Sequence[str], row_offset: int = 0
) -> dict[str, np.ndarray]:
    """String metadata columns as numpy object arrays; nulls are an error naming the row."""
    out = {}
    for col in columns:
        arr = table.column(col)
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            try:
                arr = pc.cast(arr, pa.string())
            except pa.ArrowInvalid:
                raise InputError(path, f"column '{col}' has type {arr.type}, expected string") from None
        if arr.null_count:
            row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(path, f"column '{col}' is null", row=row_offset + row)
        out[col] = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)
    return out
