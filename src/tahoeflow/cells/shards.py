"""Static shard planning and reading one shard of a Tahoe expression file into CSR.

A *shard* is a row range of one expression file. Shards are known from the config alone
(file selection, ``cells_per_shard`` and the rows per file), so Snakemake sees every job in
a dry run and no checkpoint is needed.

Reading goes Arrow list offsets -> CSR directly, one record batch at a time: one compiled pass
over each batch's flattened ``genes``/``expressions`` values checks every value, strips the
marker, maps tokens to columns through a token->column lookup array and writes the CSR
``indices``/``data`` (see ``_csr_kernel``). The decoded Arrow data of only one batch is alive
at a time, so a job's memory is the CSR of its shard plus one batch.

Errors are the ones the checks would give if each ran over the whole shard in turn (read,
metadata columns, list structure, lengths, marker, vocabulary, counts): the first occurrence of
the first check that fails anywhere, with its row. The kernel records the first position of
each kind of problem; the wrapper formats the message.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from tahoeflow.errors import ConfigError, InputError
from tahoeflow.sources.tahoe import CLS_TOKEN, OBS_STRING_COLUMNS, READ_COLUMNS


@dataclass(frozen=True)
class Shard:
    name: str
    file_index: int
    row_start: int
    row_stop: int | None  # None: to the end of the file
    file_rows: int | None = None  # the file's rows per the plan's manifest (checked when read)


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
                why = "its stop equals its start" if hi == lo else "its stop is before its start"
                raise ConfigError(key, f"range {item!r} is empty ({why}; the stop is exclusive)")
        if lo < 0 or hi > n_files_total:
            raise ConfigError(key, f"{item!r} is outside 0..{n_files_total - 1}")
        out.update(range(lo, hi))
    if not out:
        raise ConfigError(key, "selects no files")
    return sorted(out)


def plan_shards(
    files: Sequence[int],
    cells_per_shard: int | None,
    rows_per_file: Mapping[int, int | None] | int | None,
) -> list[Shard]:
    """One shard per file, or row ranges of ``cells_per_shard`` rows.

    ``rows_per_file`` gives each file's row count: a mapping (exact counts from a manifest or
    a file header), or one count for every file. A count sizes the ranges so that every shard
    starts below it (20,729 rows in shards of 5,000: five shards, the last one 729 rows); the
    last range of a file reads to the end of the file, so a nominal count that is slightly
    off never loses rows. A file counted 0 rows gets no shard at all. ``None`` (for a file, or
    for all) means the count is not known when planning (e.g. a file a rule has yet to
    write): that file is one shard reading all its rows, never a guess that could plan a range
    past its end.

    Raises :class:`ConfigError` (``source.files``) when the selected files hold no rows.
    """
    shards = []
    for f in files:
        n = rows_per_file.get(f) if isinstance(rows_per_file, Mapping) else rows_per_file
        if n is not None and n <= 0:
            continue  # known to be empty: a shard would read nothing
        if not cells_per_shard:
            shards.append(Shard(f"{f:05d}", f, 0, None))
            continue
        k = 1 if n is None else -(-n // cells_per_shard)
        for j in range(k):
            stop = None if j == k - 1 else (j + 1) * cells_per_shard
            shards.append(Shard(f"{f:05d}-{j:04d}", f, j * cells_per_shard, stop))
    if files and not shards:
        raise ConfigError(
            "source.files", f"the {len(files)} selected file(s) hold no rows (0 rows each)"
        )
    return shards


def plan_batches(shard_names: Sequence[str], per_job: int) -> dict[str, list[str]]:
    """Consecutive groups of at most ``per_job`` shards (in sorted order), named ``b00000``...

    The embedding passes (Gram matrices, projections) run one job per group: each job streams
    its shards one at a time (memory of one shard), and a job's Python start, imports and
    numba cache loads (~1.5 s) are paid once per group instead of once per shard. Concatenating
    the groups in name order gives the shards in sorted order.
    """
    if per_job < 1:
        raise ValueError(f"per_job must be >= 1, got {per_job}")
    names = sorted(shard_names)
    return {f"b{i // per_job:05d}": names[i : i + per_job] for i in range(0, len(names), per_job)}


def plan_merge_tree(
    shard_names: Sequence[str], fan_in: int
) -> tuple[dict[str, list[str]], list[str]]:
    """The hierarchy of a merge with at most ``fan_in`` inputs per job: ``(nodes, top)``.

    ``nodes`` maps each partial merge (``L1-00000``, ...) to its inputs: consecutive groups of
    ``fan_in`` shards (sorted order; the hub's files are sorted by plate, so a group holds one
    plate's files or two) at level 1, groups of ``fan_in`` level-k nodes at level k+1, until
    at most ``fan_in`` remain. ``top`` is what the final merge reads: those nodes, or the
    shards themselves when there are at most ``fan_in`` (no partial merge). Reading the
    leaves under ``top`` in order gives the shards in sorted order.
    """
    if fan_in < 2:
        raise ValueError(f"fan_in must be >= 2, got {fan_in}")
    nodes: dict[str, list[str]] = {}
    level, current = 0, sorted(shard_names)
    while len(current) > fan_in:
        level += 1
        groups = {
            f"L{level}-{i // fan_in:05d}": current[i : i + fan_in]
            for i in range(0, len(current), fan_in)
        }
        nodes.update(groups)
        current = list(groups)
    return nodes, current


@dataclass(frozen=True)
class Vocab:
    """Token id -> column position, and per-column annotations."""

    token_ids: np.ndarray  # (G,) int64, column order
    lookup: np.ndarray  # (max_token+1,) int32, -1 where not a gene
    is_mito: np.ndarray  # (G,) bool

    @property
    def n_genes(self) -> int:
        return int(self.token_ids.size)


def has_columns(columns: Sequence[str]) -> str:
    """The columns a metadata table does have, for an error about one it lacks."""
    return f"it has {', '.join(map(str, columns))}: a table of another revision?"


def vocab_from_gene_metadata(table: pa.Table, path: object = "gene_metadata") -> Vocab:
    """Columns in token-id order; MT genes flagged by a ``MT-`` symbol prefix."""
    for col in ("token_id", "gene_symbol"):
        if col not in table.column_names:
            raise InputError(path, f"missing column '{col}' ({has_columns(table.column_names)})")
    tok = table.column("token_id")
    if not pa.types.is_integer(tok.type) or tok.null_count:
        raise InputError(
            path, f"token_id must be integers without nulls (it is {tok.type}, {tok.null_count} "
            "null): a table of another revision?",
        )  # fmt: skip
    tokens = tok.to_numpy().astype(np.int64)
    order = np.argsort(tokens, kind="stable")
    tokens = tokens[order]
    if tokens.size == 0 or tokens[0] < 0:
        raise InputError(path, "token_id must be non-negative")
    if np.any(tokens[1:] == tokens[:-1]):
        dup = int(order[1:][tokens[1:] == tokens[:-1]][0])
        raise InputError(
            path, f"duplicated token_id {int(tokens[1:][tokens[1:] == tokens[:-1]][0])}", row=dup
        )
    lookup = np.full(int(tokens[-1]) + 1, -1, dtype=np.int32)
    lookup[tokens] = np.arange(tokens.size, dtype=np.int32)
    symbols = np.asarray(table.column("gene_symbol").fill_null("").to_pylist(), dtype=object)[order]
    is_mito = np.char.startswith(symbols.astype(str), "MT-")
    return Vocab(tokens, lookup, is_mito)


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


def check_row_range(path: object, row_start: int, n_rows: int) -> None:
    """A shard that starts past a file's last row was planned from a wrong row count."""
    if row_start > 0 and row_start >= n_rows:
        raise InputError(
            path,
            f"the shard starts at row {row_start} but the file has {n_rows} rows: the plan "
            "assumed more rows (set source.rows_per_file or a source.manifest with the true "
            "counts)",
        )


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


# --- problems, ranked ------------------------------------------------------------------------
class Problems:
    """The first occurrence of each kind of problem seen so far, by rank; ``check`` raises the best.

    Rows are streamed in batches but every check is defined over the whole shard, checked in
    turn: the error raised is the first occurrence of the best-ranked (earliest) check that fails.
    """

    def __init__(self) -> None:
        self.first: dict[tuple[int, ...], InputError] = {}

    def add(self, rank: tuple[int, ...], err: InputError) -> None:
        self.first.setdefault(rank, err)

    def any_before(self, rank: tuple[int, ...]) -> bool:
        return any(r < rank for r in self.first)

    def check(self) -> None:
        if self.first:
            raise self.first[min(self.first)]


# ranks: metadata columns (0, column, 0 type | 1 null) come before the lists (1, check)
_R_OBS = 0
_R_LIST = 1
(
    _GENES_TYPE,
    _GENES_NULL,
    _GENES_VNULL,
    _EXPR_TYPE,
    _EXPR_NULL,
    _EXPR_VNULL,
    _GENES_VTYPE,
    _EXPR_VTYPE,
) = range(8)
_KERNEL = 8  # kernel codes follow, in this order:
K_LENGTH, K_EMPTY, K_MARKER, K_VOCAB, K_NONFINITE, K_NEGATIVE, K_NONINTEGER, K_REPEAT = range(8)
N_CODES = 8


class ObsCollector:
    """String metadata columns, batch by batch; nulls and non-string types are problems."""

    def __init__(
        self, columns: Sequence[str], path: object, problems: Problems, row_offset: int = 0
    ) -> None:
        self.columns = list(columns)
        self.path, self.problems, self.row_offset = path, problems, row_offset
        self.parts: dict[str, list[pa.Array]] = {c: [] for c in self.columns}
        self.n_rows = 0

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        for j, col in enumerate(self.columns):
            arr = batch.column(col)
            if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
                try:
                    arr = pc.cast(arr, pa.string())
                except pa.ArrowInvalid:
                    err = InputError(
                        self.path, f"column '{col}' has type {arr.type}, expected string"
                    )
                    self.problems.add((_R_OBS, j, 0), err)
                    continue
            if arr.null_count:
                row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
                err = InputError(
                    self.path, f"column '{col}' is null", row=self.row_offset + self.n_rows + row
                )
                self.problems.add((_R_OBS, j, 1), err)
            self.parts[col].append(arr)
        self.n_rows += batch.num_rows

    def arrays(self) -> dict[str, np.ndarray]:
        """Each column as a numpy object array (call after ``Problems.check``)."""
        out = {}
        for col, parts in self.parts.items():
            chunks = [
                c for p in parts for c in (p.chunks if isinstance(p, pa.ChunkedArray) else [p])
            ]
            arr = pa.chunked_array(chunks, chunks[0].type if chunks else pa.string())
            out[col] = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)
        return out


def obs_arrays(
    table: pa.Table, path: object, columns: Sequence[str], row_offset: int = 0
) -> dict[str, np.ndarray]:
    """String metadata columns as numpy object arrays; nulls are an error naming the row."""
    problems = Problems()
    obs = ObsCollector(columns, path, problems, row_offset)
    obs.add(table)
    problems.check()
    return obs.arrays()


# --- lists -> CSR ----------------------------------------------------------------------------
@nb.njit(cache=True, nogil=True)
def _sort_row(idx, dat, lo, hi):  # pragma: no cover - compiled
    """Sort ``idx[lo:hi]`` (carrying ``dat``) and sum repeated columns in place; the new end."""
    seg = idx[lo:hi].copy()
    val = dat[lo:hi].copy()
    order = np.argsort(seg, kind="mergesort")
    w = lo
    prev = -1
    for t in range(order.size):
        c = seg[order[t]]
        if c == prev:
            dat[w - 1] += val[order[t]]
        else:
            idx[w] = c
            dat[w] = val[order[t]]
            w += 1
            prev = c
    return w


@nb.njit(cache=True, nogil=True)
def _csr_kernel(
    g_off, g_val, e_off, e_val, lookup, marker, indptr, out_idx, out_dat, w, err
):  # pragma: no cover
    """One pass over a batch of ``genes``/``expressions`` lists: check, strip the marker, map.

    Row i's values ``g_val[g_off[i]:g_off[i+1]]`` (token ids) and ``e_val[e_off[i]:...]``
    (float32 counts) are checked (equal lengths, non-empty, marker at element 0, token in the
    vocabulary, count finite, non-negative, integer, no token twice in a row); elements 1.. are
    written from position ``w`` of ``out_idx`` (column) / ``out_dat`` (count), each row sorted
    by column (a repeat is summed, and reported). ``indptr`` (n+1) gets the row starts. ``err[code]`` gets (row, value position) of
    the first occurrence of each problem code, where still -1. Returns the end position.
    """
    n = g_off.size - 1
    n_lookup = lookup.size
    for i in range(n):
        indptr[i] = w
        gs = g_off[i]
        ge = g_off[i + 1]
        es = e_off[i]
        if ge - gs != e_off[i + 1] - es:
            if err[K_LENGTH, 0] < 0:
                err[K_LENGTH, 0] = i
            continue
        if ge == gs:
            if err[K_EMPTY, 0] < 0:
                err[K_EMPTY, 0] = i
            continue
        if (g_val[gs] != marker or not e_val[es] < 0) and err[K_MARKER, 0] < 0:
            err[K_MARKER, 0] = i
        lo = w
        prev = -1
        ordered = True
        known = True
        for j in range(1, ge - gs):
            tok = g_val[gs + j]
            col = lookup[tok] if 0 <= tok < n_lookup else -1
            if col < 0:
                if err[K_VOCAB, 0] < 0:
                    err[K_VOCAB, 0] = i
                    err[K_VOCAB, 1] = gs + j
                col = 0
                known = False
            v = e_val[es + j]
            if not math.isfinite(v):
                if err[K_NONFINITE, 0] < 0:
                    err[K_NONFINITE, 0] = i
                    err[K_NONFINITE, 1] = es + j
            elif v < 0:
                if err[K_NEGATIVE, 0] < 0:
                    err[K_NEGATIVE, 0] = i
                    err[K_NEGATIVE, 1] = es + j
            elif v != np.floor(v) and err[K_NONINTEGER, 0] < 0:
                err[K_NONINTEGER, 0] = i
                err[K_NONINTEGER, 1] = es + j
            if col <= prev:
                ordered = False
            prev = col
            out_idx[w] = col
            out_dat[w] = v
            w += 1
        if not ordered:
            end = _sort_row(out_idx, out_dat, lo, w)
            if end < w and known and err[K_REPEAT, 0] < 0:  # a gene twice: summed above
                err[K_REPEAT, 0] = i
            w = end
    indptr[n] = w
    return w


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t)


def _row_of(offsets: np.ndarray, value_pos: int) -> int:
    return int(np.searchsorted(offsets, value_pos, side="right") - 1)


_NON_INTEGER_HINT = "(raw UMI counts expected; set input.normalised: true for normalised input)"


class CsrBuilder:
    """CSR counts (float32 data, int32 indices) built batch by batch from the two list columns."""

    def __init__(
        self,
        vocab: Vocab,
        path: object,
        problems: Problems,
        genes_type: pa.DataType,
        expressions_type: pa.DataType,
        row_offset: int = 0,
        capacity: int = 0,
    ) -> None:
        self.vocab, self.path, self.problems, self.row_offset = vocab, path, problems, row_offset
        self.lookup = np.ascontiguousarray(vocab.lookup, dtype=np.int32)
        self.n_rows = 0
        self.nnz = 0
        self.indices = np.empty(capacity, dtype=np.int32)
        self.data = np.empty(capacity, dtype=np.float32)
        self.indptr_parts: list[np.ndarray] = [np.zeros(1, dtype=np.int64)]
        self.non_integer: tuple[int, str] | None = None
        self.kernel_errors: set[int] = set()
        self.genes_ok = _is_list(genes_type)
        self.expr_ok = _is_list(expressions_type)
        if not self.genes_ok:
            self._problem(_GENES_TYPE, f"column 'genes' has type {genes_type}, expected a list")
        elif not pa.types.is_integer(genes_type.value_type):
            self._problem(
                _GENES_VTYPE,
                f"column 'genes' holds {genes_type.value_type}, expected integer token ids",
            )
        if not self.expr_ok:
            self._problem(
                _EXPR_TYPE, f"column 'expressions' has type {expressions_type}, expected a list"
            )
        else:
            vt = expressions_type.value_type
            if not (pa.types.is_floating(vt) or pa.types.is_integer(vt)):
                self._problem(_EXPR_VTYPE, f"column 'expressions' holds {vt}, expected numbers")

    def _problem(self, check: int, text: str, row: int | None = None) -> None:
        self.problems.add((_R_LIST, check), InputError(self.path, text, row=row))

    def _flat(
        self, arr: pa.Array, col: str, null_check: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """(offsets from 0, values) of one list chunk; None after recording a null."""
        if arr.null_count:
            row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
            self._problem(null_check, f"column '{col}' is null", row=self.n_rows + row)
            return None
        offsets = arr.offsets.to_numpy().astype(np.int64)
        o0 = int(offsets[0])
        offsets -= o0
        values = arr.values.slice(o0, int(offsets[-1]))
        if values.null_count:
            vpos = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            self._problem(
                null_check + 1,
                f"column '{col}' holds a null value",
                row=self.n_rows + _row_of(offsets, vpos),
            )
            return None
        return offsets, values.to_numpy(zero_copy_only=False)

    def _reserve(self, extra: int) -> None:
        need = self.nnz + extra
        if need > self.indices.size:
            cap = max(need, int(self.indices.size * 1.25) + 1024)
            for name in ("indices", "data"):
                old = getattr(self, name)
                new = np.empty(cap, dtype=old.dtype)
                new[: self.nnz] = old[: self.nnz]
                setattr(self, name, new)

    def add(self, genes: pa.Array, expressions: pa.Array) -> None:
        """Check and convert one batch (two aligned list arrays)."""
        n = len(genes)
        g = self._flat(genes, "genes", _GENES_NULL) if self.genes_ok else None
        e = self._flat(expressions, "expressions", _EXPR_NULL) if self.expr_ok else None
        if g is None or e is None or self.problems.any_before((_R_LIST, _KERNEL)):
            self.n_rows += n  # a better-ranked problem is already known: the kernel's are moot
            return
        (g_off, g_raw), (e_off, e_raw) = g, e
        g_val = g_raw if g_raw.dtype == np.int64 else g_raw.astype(np.int64)
        if e_raw.dtype == np.float32:
            e_val = e_raw
        else:  # counts are checked as float32; the marker test keeps the original value's sign
            e_val = e_raw.astype(np.float32)
            first = e_off[:-1][np.diff(e_off) > 0]
            e_val[first] = np.where(e_raw[first] < 0, -1.0, 1.0)
        self._reserve(int(g_off[-1]))
        indptr = np.empty(n + 1, dtype=np.int64)
        err = np.full((N_CODES, 2), -1, dtype=np.int64)
        self.nnz = _csr_kernel(
            g_off,
            g_val,
            e_off,
            e_val,
            self.lookup,
            CLS_TOKEN,
            indptr,
            self.indices,
            self.data,
            self.nnz,
            err,
        )
        self.indptr_parts.append(indptr[1:])
        for code in np.flatnonzero(err[:, 0] >= 0):
            if code not in self.kernel_errors:
                self.kernel_errors.add(int(code))
                self._kernel_problem(
                    int(code),
                    int(err[code, 0]),
                    int(err[code, 1]),
                    g_off,
                    g_raw,
                    e_off,
                    e_raw,
                    e_val,
                )
        self.n_rows += n

    def _kernel_problem(self, code, r, pos, g_off, g_raw, e_off, e_raw, e_val) -> None:
        row = self.row_offset + self.n_rows + r
        if code == K_LENGTH:
            text = f"'genes' has {g_off[r + 1] - g_off[r]} entries but 'expressions' has {e_off[r + 1] - e_off[r]}"
        elif code == K_EMPTY:
            text = "empty 'genes' list: no marker at element 0"
        elif code == K_MARKER:
            text = (
                f"no marker at element 0 (expected genes[0]={CLS_TOKEN} and a negative expressions[0], "
                f"found {g_raw[g_off[r]]} and {e_raw[e_off[r]]})"
            )
        elif code == K_VOCAB:
            text = f"token id {int(g_raw[pos])} is outside the gene vocabulary"
        elif code == K_NONFINITE:
            text = f"count {e_val[pos]} is not finite"
        elif code == K_NEGATIVE:
            text = f"negative count {e_val[pos]}"
        elif code == K_REPEAT:
            toks, times = np.unique(g_raw[g_off[r] + 1 : g_off[r + 1]], return_counts=True)
            text = (
                f"token id {int(toks[times > 1][0])} appears {int(times.max())} times in 'genes' "
                "(one count per gene expected)"
            )
        else:
            self.non_integer = (row, f"non-integer count {e_val[pos]} {_NON_INTEGER_HINT}")
            return
        self._problem(_KERNEL + code, text, row=row)

    def finish(
        self, allow_non_integer: bool = False, warn: Callable[[str], None] | None = None
    ) -> sp.csr_matrix:
        """Raise the best-ranked problem, warn about non-integer counts if allowed; the matrix."""
        if self.non_integer is not None and not allow_non_integer:
            self._problem(_KERNEL + K_NONINTEGER, self.non_integer[1], row=self.non_integer[0])
        self.problems.check()
        if self.non_integer is not None and warn is not None:
            warn(f"warning: {self.path}, row {self.non_integer[0]}: {self.non_integer[1]}")
        n, G = self.n_rows, self.vocab.n_genes
        if n == 0:
            return sp.csr_matrix((0, G), dtype=np.float32)
        nnz = self.nnz
        indptr = np.concatenate(self.indptr_parts)
        indices, data = self.indices[:nnz], self.data[:nnz]
        if self.indices.size - nnz > max(1 << 16, nnz // 8):  # do not keep a mostly unused buffer
            indices, data = indices.copy(), data.copy()
        self.indices = self.data = None
        if nnz < np.iinfo(np.int32).max:
            indptr = indptr.astype(np.int32)
        X = sp.csr_matrix((data, indices, indptr), shape=(n, G), copy=False)
        X.has_canonical_format = True  # every row was sorted and summed by the kernel
        return X


def to_csr(
    table: pa.Table,
    vocab: Vocab,
    path: object,
    row_offset: int = 0,
    allow_non_integer: bool = False,
    warn: Callable[[str], None] | None = None,
) -> sp.csr_matrix:
    """CSR counts (cells x genes, float32 data, int32 indices) from the ``genes``/``expressions`` lists.

    Checks, each reported with the file and the row (``row_offset`` + position in ``table``):
    list types, equal lengths, the marker at element 0, tokens inside the vocabulary, counts
    finite, non-negative and integer (non-integer is a warning when ``allow_non_integer``), no
    token twice in one row.
    """
    problems = Problems()
    lists = table.select(["genes", "expressions"])
    g_type, e_type = lists.schema.field("genes").type, lists.schema.field("expressions").type
    capacity = 0
    if _is_list(g_type):
        for c in lists.column("genes").chunks:
            if len(c):
                capacity += c.offsets[len(c)].as_py() - c.offsets[0].as_py()
    builder = CsrBuilder(
        vocab, path, problems, g_type, e_type, row_offset=row_offset, capacity=capacity
    )
    for batch in lists.to_batches():
        builder.add(batch.column(0), batch.column(1))
    return builder.finish(allow_non_integer, warn)


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
