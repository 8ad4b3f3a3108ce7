"""Tahoe's ``genes``/``expressions`` list columns -> CSR counts, checked in one compiled pass.

One pass over each batch's flattened values checks every value, strips the marker, maps
tokens to columns through a token->column lookup array and writes the CSR ``indices``/``data``
(see ``_csr_kernel``). Errors are the ones the checks would give if each ran over the whole
shard in turn (metadata columns, list structure, lengths, marker, vocabulary, counts): the
first occurrence of the first check that fails anywhere, with its row. The kernel records the
first position of each kind of problem; the wrapper formats the message.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from tahoeflow.cells.vocab import Vocab
from tahoeflow.errors import InputError
from tahoeflow.sources.tahoe import CLS_TOKEN


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
def _read_row(
    i, g_off, g_val, e_off, e_val, lookup, marker, out_idx, out_dat, w, err
):  # pragma: no cover - compiled
    """Check row i of a batch and write its elements 1.. from position ``w``; the end position.

    Row i's values ``g_val[g_off[i]:g_off[i+1]]`` (token ids) and ``e_val[e_off[i]:...]``
    (float32 counts) are checked (equal lengths, non-empty, marker at element 0, token in the
    vocabulary, count finite, non-negative, integer, no token twice in a row); elements 1.. are
    written to ``out_idx`` (column) / ``out_dat`` (count), sorted by column (a repeat is summed,
    and reported). A row of the wrong length or without elements writes nothing. ``err[code]``
    gets (row, value position) of the first occurrence of each problem code, where still -1.
    """
    n_lookup = lookup.size
    gs = g_off[i]
    ge = g_off[i + 1]
    es = e_off[i]
    if ge - gs != e_off[i + 1] - es:
        if err[K_LENGTH, 0] < 0:
            err[K_LENGTH, 0] = i
        return w
    if ge == gs:
        if err[K_EMPTY, 0] < 0:
            err[K_EMPTY, 0] = i
        return w
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
    return w


@nb.njit(cache=True, nogil=True)
def _csr_kernel(
    g_off, g_val, e_off, e_val, lookup, marker, indptr, out_idx, out_dat, w, err
):  # pragma: no cover
    """One pass over a batch of ``genes``/``expressions`` lists: check, strip the marker, map.

    Each row is checked and written by :func:`_read_row` from position ``w`` of
    ``out_idx``/``out_dat``; ``indptr`` (n+1) gets the row starts. Returns the end position.
    """
    n = g_off.size - 1
    for i in range(n):
        indptr[i] = w
        w = _read_row(i, g_off, g_val, e_off, e_val, lookup, marker, out_idx, out_dat, w, err)
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
        err = np.full((N_CODES, 2), -1, dtype=np.int64)
        self._convert(g_off, g_val, e_off, e_val, err)
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

    def _convert(
        self, g_off: np.ndarray, g_val: np.ndarray, e_off: np.ndarray, e_val: np.ndarray, err
    ) -> None:
        """Run the compiled pass over one checked batch, appending its rows to the CSR."""
        self._reserve(int(g_off[-1]))
        indptr = np.empty(g_off.size, dtype=np.int64)
        self.nnz = _csr_kernel(
            g_off, g_val, e_off, e_val, self.lookup, CLS_TOKEN, indptr,
            self.indices, self.data, self.nnz, err,
        )  # fmt: skip
        self.indptr_parts.append(indptr[1:])

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

    def check(
        self, allow_non_integer: bool = False, warn: Callable[[str], None] | None = None
    ) -> None:
        """Raise the best-ranked problem; warn about non-integer counts if they are allowed."""
        if self.non_integer is not None and not allow_non_integer:
            self._problem(_KERNEL + K_NONINTEGER, self.non_integer[1], row=self.non_integer[0])
        self.problems.check()
        if self.non_integer is not None and warn is not None:
            warn(f"warning: {self.path}, row {self.non_integer[0]}: {self.non_integer[1]}")

    def finish(
        self, allow_non_integer: bool = False, warn: Callable[[str], None] | None = None
    ) -> sp.csr_matrix:
        """Raise the best-ranked problem, warn about non-integer counts if allowed; the matrix."""
        self.check(allow_non_integer, warn)
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
