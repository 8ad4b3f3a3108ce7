"""Gather sorted topTables into one without holding them: an exact table-wide BH column by an
external merge of the p-values, and a block merge that writes the rows in the key order.

Memory is bounded by the chunk sizes and the number of sources and runs (a few MB each), never
by the rows of the tables; the work files lie on disk beside the output.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tahoeflow.de.tables import CONDITION_KEYS
from tahoeflow.errors import InputError
from tahoeflow.io import atomic_path

CHUNK_ROWS = 1 << 20
"""Rows a p-value run holds (the sort unit of the external BH) and a read batch."""
WINDOW = 1 << 16
"""Values of a run held at once during the descending merge."""
CURSOR_ROWS = 1 << 16
"""Rows of a source held at once by the block merge (one batch a source) ..."""
CURSOR_BUDGET = 1 << 20
"""... and of all sources together: many sources get smaller batches (at least 4,096 rows)."""
READ_BUFFER = 1 << 16
"""Bytes of a column chunk read at once (pages streamed, not whole row groups)."""
ROW_GROUP_ROWS = 1024 * 1024
"""Rows of an output row group: pyarrow's default, so the file is the one ``write_table``
writes from the whole table."""
BLOCK_KEYS = CONDITION_KEYS[:3]
"""A contrast never crosses cell lines: the rows of one (drug, dose_uM, cell_line_id) all come
from one source, consecutively."""


@contextlib.contextmanager
def work_dir(out: str | os.PathLike, tag: str) -> Iterator[Path]:
    """A work folder beside ``out`` (named by ``tag``), removed afterwards; one left by a killed
    job (SIGKILL, the OOM killer) for the same output and tag is removed first, as
    :func:`tahoeflow.io.atomic_path` does for its temporary files."""
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    prefix = f".{target.name}.{tag}."
    for stale in target.parent.glob(f"{glob.escape(prefix)}*"):
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=prefix) as work:
        yield Path(work)


def _p_batches(path: str | os.PathLike, p_col: str, chunk_rows: int):
    pf = pq.ParquetFile(path, buffer_size=READ_BUFFER, pre_buffer=False)
    for b in pf.iter_batches(batch_size=chunk_rows, columns=[p_col]):
        yield b.column(0).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def _merge_descending(fh, runs: list[tuple[int, int]], m: int, window: int) -> None:
    """Replace each run's sorted p-values (file ``fh``, float64) by their BH values: a merge of
    the runs in descending order, ``q = min(running, p * (m / rank))`` as
    ``scipy.stats.false_discovery_control`` computes it, run by run in place."""

    def read(off: int, n: int) -> np.ndarray:
        return np.frombuffer(os.pread(fh, n * 8, off * 8), dtype="<f8").copy()

    lo = [n for _, n in runs]  # values [0, lo) of a run are not read yet
    buf = [np.empty(0) for _ in runs]  # the run's values [lo, lo + len(buf)) not yet emitted
    rank = m  # rank (ascending, 1-based) of the next value emitted
    running = np.inf
    factor_m = np.float64(m)
    while True:
        for r, (off, _) in enumerate(runs):
            if buf[r].size == 0 and lo[r] > 0:
                new = max(0, lo[r] - window)
                buf[r] = read(off + new, lo[r] - new)
                lo[r] = new
        live = [r for r in range(len(runs)) if buf[r].size]
        if not live:
            break
        bounds = [buf[r][0] for r in live if lo[r] > 0]
        t = max(bounds) if bounds else -np.inf  # every value not yet read is <= t
        vals, where = [], []
        for r in live:
            k = buf[r].size - int(np.searchsorted(buf[r], t, side="left"))
            if k:
                vals.append(buf[r][-k:])
                where.append((r, lo[r] + buf[r].size - k, k))
                buf[r] = buf[r][:-k]
        allv = np.concatenate(vals)
        order = np.argsort(allv, kind="stable")[::-1]
        n = allv.size
        cand = allv[order] * (factor_m / np.arange(rank, rank - n, -1, dtype=np.float64))
        cand[0] = min(cand[0], running)
        np.minimum.accumulate(cand, out=cand)
        running = cand[-1]
        rank -= n
        q = np.empty(n)
        q[order] = np.clip(cand, 0.0, 1.0)
        pos = 0
        for r, start, k in where:
            os.pwrite(fh, q[pos : pos + k].tobytes(), (runs[r][0] + start) * 8)
            pos += k


def streamed_bh(
    sources: Sequence[str | os.PathLike],
    p_col: str,
    workdir: str | os.PathLike,
    *,
    chunk_rows: int = CHUNK_ROWS,
    window: int = WINDOW,
) -> list[Path]:
    """Benjamini-Hochberg over column ``p_col`` of every row of the Parquet files ``sources``,
    equal to :func:`tahoeflow.multitest.bh_adjust` of their concatenation (NaN stays NaN and is
    not counted), holding ``chunk_rows`` p-values and ``window`` per run at once.

    Each chunk of ``chunk_rows`` rows is sorted into a run on disk; a descending merge of the
    runs gives every value's rank and BH's running minimum (ties get one value whatever their
    order, as in scipy); the values go back to row order per source. Returns one file per
    source in ``workdir``: the adjusted values, float64, in the source's row order.
    """
    workdir = Path(workdir)
    runs_path = workdir / "bh_runs.f64"
    runs: list[tuple[int, int]] = []
    m = 0
    off = 0
    with open(runs_path, "wb") as f:
        for src in sources:
            for p in _p_batches(src, p_col, chunk_rows):
                s = np.sort(p, kind="stable")
                n_ok = int(np.count_nonzero(~np.isnan(s)))
                f.write(s.tobytes())
                runs.append((off, n_ok))
                off += s.size
                m += n_ok
    fh = os.open(runs_path, os.O_RDWR)
    try:
        _merge_descending(fh, runs, m, window)
        out = []
        k = 0
        for i, src in enumerate(sources):
            path = workdir / f"bh_{i}.f64"
            with open(path, "wb") as f:
                for p in _p_batches(src, p_col, chunk_rows):
                    order = np.argsort(p, kind="stable")
                    q = np.empty(p.size)
                    start = runs[k][0]
                    q[order] = np.frombuffer(os.pread(fh, p.size * 8, start * 8), dtype="<f8")
                    f.write(q.tobytes())
                    k += 1
            out.append(path)
    finally:
        os.close(fh)
        runs_path.unlink(missing_ok=True)
    return out


def _blocks(path: str | os.PathLike, batch_rows: int) -> pd.DataFrame:
    """The (drug, dose_uM, cell_line_id) blocks of a sorted table: key, first row, rows."""
    pf = pq.ParquetFile(path, buffer_size=READ_BUFFER, pre_buffer=False)
    keys, starts = [], []
    prev = None
    off = 0
    for b in pf.iter_batches(batch_size=batch_rows, columns=BLOCK_KEYS):
        n = b.num_rows
        if n == 0:
            continue
        change = np.zeros(n, dtype=bool)
        for c in BLOCK_KEYS:
            col = b.column(c)
            ne = pc.not_equal(col.slice(1), col.slice(0, n - 1))
            change[1:] |= ne.to_numpy(zero_copy_only=False).astype(bool)
        first = tuple(b.column(c)[0].as_py() for c in BLOCK_KEYS)
        change[0] = first != prev
        idx = np.flatnonzero(change)
        sel = b.take(pa.array(idx))
        keys.append(sel.to_pandas())
        starts.append(idx + off)
        prev = tuple(b.column(c)[n - 1].as_py() for c in BLOCK_KEYS)
        off += n
    if not keys:
        return pd.DataFrame({**{c: [] for c in BLOCK_KEYS}, "start": [], "stop": []})
    out = pd.concat(keys, ignore_index=True)
    start = np.concatenate(starts).astype(np.int64)
    out["start"] = start
    out["stop"] = np.append(start[1:], off)
    return out


class _Cursor:
    """Rows of one source read forward in batches, with its BH file beside them."""

    def __init__(self, path, q_path, batch_rows: int, q_name: str):
        pf = pq.ParquetFile(path, buffer_size=READ_BUFFER, pre_buffer=False)
        self._it = pf.iter_batches(batch_size=batch_rows)
        self._buf: pa.Table | None = None
        self._pos = 0  # row number of the buffer's first row
        self._q = open(q_path, "rb") if q_path is not None else None
        self._q_name = q_name

    def take(self, start: int, stop: int) -> pa.Table:
        parts = []
        while start < stop:
            if self._buf is None or start >= self._pos + self._buf.num_rows:
                if self._buf is not None:
                    self._pos += self._buf.num_rows
                self._buf = pa.Table.from_batches([next(self._it)])
                continue
            a = start - self._pos
            b = min(stop - self._pos, self._buf.num_rows)
            parts.append(self._buf.slice(a, b - a))
            start = self._pos + b
        t = pa.concat_tables(parts)
        if self._q is not None:
            self._q.seek((stop - t.num_rows) * 8)
            q = np.frombuffer(self._q.read(t.num_rows * 8), dtype="<f8")
            i = t.schema.get_field_index(self._q_name)
            t = t.set_column(i, self._q_name, pa.array(q, pa.float64()))
        return t

    def close(self) -> None:
        if self._q is not None:
            self._q.close()


def _pandas_schema(path: str | os.PathLike, schema: pa.Schema) -> pa.Schema:
    """``schema`` with the pandas metadata ``Table.from_pandas`` gives the table read back with
    pandas (the metadata the in-memory gather wrote)."""
    batch = next(pq.ParquetFile(path).iter_batches(batch_size=8))
    frame = pa.Table.from_batches([batch]).to_pandas()
    return pa.Table.from_pandas(frame, schema=schema, preserve_index=False).schema


def gather_toptables(
    sources: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    schema: pa.Schema,
    p_col: str,
    *,
    adj_col: str = "adj.P.Val.global",
    on_chunk: Callable[[pa.Table], None] | None = None,
    chunk_rows: int = CHUNK_ROWS,
    window: int = WINDOW,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> int:
    """Write the rows of the topTables ``sources`` (each sorted by condition keys then gene, a
    (drug, dose_uM, cell_line_id) in one source only) to ``out`` sorted by condition keys then
    gene, with ``adj_col`` = BH of ``p_col`` over every row (:func:`streamed_bh`): the file the
    in-memory gather (concatenate, stable sort, :func:`~tahoeflow.de.tables.global_adjust`,
    ``write_table``) writes, byte for byte. ``on_chunk`` sees each written row group. Returns
    the number of rows. An empty gather writes the empty table with ``schema``."""
    sources = [str(s) for s in sources]
    nonempty = [s for s in sources if pq.ParquetFile(s).metadata.num_rows > 0]
    if not nonempty:
        from tahoeflow.io import write_parquet

        empty = schema.empty_table().to_pandas()
        write_parquet(pa.Table.from_pandas(empty, schema=schema, preserve_index=False), out)
        return 0
    schema = _pandas_schema(nonempty[0], schema)
    blocks = []
    for i, s in enumerate(nonempty):
        b = _blocks(s, min(chunk_rows, CURSOR_ROWS * 4))
        b["src"] = i
        blocks.append(b)
    order = pd.concat(blocks, ignore_index=True)
    order = order.sort_values(BLOCK_KEYS, kind="mergesort").reset_index(drop=True)
    dup = order.duplicated(BLOCK_KEYS)
    back = order.groupby("src", sort=False)["start"].diff().lt(0)
    if dup.any() or back.any():
        r = order[dup | back].iloc[0]
        raise InputError(
            nonempty[int(r["src"])],
            f"rows of {r['drug']} {r['dose_uM']:g} uM in {r['cell_line_id']} are not one sorted "
            "block of one part (the parts must be sorted by condition keys, a line in one part)",
        )
    n_rows = 0
    with work_dir(out, "bh") as work:
        q_files = streamed_bh(nonempty, p_col, work, chunk_rows=chunk_rows, window=window)
        rows = min(chunk_rows, CURSOR_ROWS, max(4096, CURSOR_BUDGET // len(nonempty)))
        cursors = [_Cursor(s, q, rows, adj_col) for s, q in zip(nonempty, q_files, strict=True)]
        try:
            with atomic_path(out) as tmp:
                writer = pq.ParquetWriter(tmp, schema, compression="zstd")
                try:
                    pending: list[pa.Table] = []
                    held = 0

                    def flush(final: bool) -> None:
                        nonlocal pending, held, n_rows
                        while held >= row_group_rows or (final and held):
                            t = pa.concat_tables(pending)
                            k = min(row_group_rows, held)
                            rg = t.slice(0, k).combine_chunks()
                            writer.write_table(rg, row_group_size=row_group_rows)
                            if on_chunk is not None:
                                on_chunk(rg)
                            n_rows += k
                            rest = t.slice(k)
                            pending = [rest] if rest.num_rows else []
                            held = rest.num_rows

                    src = order["src"].to_numpy()
                    start = order["start"].to_numpy()
                    stop = order["stop"].to_numpy()
                    # consecutive blocks of one source are contiguous rows there: one take
                    cut = np.flatnonzero((src[1:] != src[:-1]) | (start[1:] != stop[:-1])) + 1
                    for a, b in zip(np.r_[0, cut], np.r_[cut, len(order)], strict=True):
                        t = cursors[src[a]].take(int(start[a]), int(stop[b - 1]))
                        pending.append(t)
                        held += t.num_rows
                        if held >= row_group_rows:
                            flush(False)
                    flush(True)
                finally:
                    writer.close()
        finally:
            for c in cursors:
                c.close()
    return n_rows


class CallCounts:
    """Per-contrast call counts of a topTable seen one row group at a time (:meth:`add`):
    ``n_up``/``n_down`` (``call_col < alpha`` and logFC > 0 / < 0), the calls by the
    per-contrast and table-wide columns, and the number of rows. Held: one row per contrast."""

    def __init__(self, method: str, call_col: str, alpha: float):
        from tahoeflow.de.tables import stat_columns

        names = stat_columns(method)
        self.lfc, self.per_contrast = names["logFC"], names["adj.P.Val"]
        self.call_col, self.alpha = call_col, alpha
        self.n_rows = 0
        self._parts: list[pd.DataFrame] = []

    def add(self, t: pa.Table) -> None:
        a = pa.scalar(self.alpha, pa.float64())
        called = pc.fill_null(pc.less(t.column(self.call_col), a), False)
        lfc = t.column(self.lfc)
        flags = {
            "n_up": pc.and_(called, pc.fill_null(pc.greater(lfc, 0.0), False)),
            "n_down": pc.and_(called, pc.fill_null(pc.less(lfc, 0.0), False)),
            "n_called": called,
            "n_contrast_calls": pc.fill_null(pc.less(t.column(self.per_contrast), a), False),
            "n_global_calls": pc.fill_null(pc.less(t.column("adj.P.Val.global"), a), False),
        }
        cols = {k: t.column(k) for k in CONDITION_KEYS}
        cols.update({k: pc.cast(v, pa.int64()) for k, v in flags.items()})
        agg = (
            pa.table(cols)
            .group_by(CONDITION_KEYS, use_threads=False)
            .aggregate([(k, "sum") for k in flags])
        )
        df = agg.to_pandas()
        self._parts.append(df.rename(columns={f"{k}_sum": k for k in flags}))
        self.n_rows += t.num_rows

    def table(self) -> pd.DataFrame:
        """One row per contrast, sorted by the condition keys."""
        cols = ["n_up", "n_down", "n_called", "n_contrast_calls", "n_global_calls"]
        if not self._parts:
            return pd.DataFrame({**{k: [] for k in CONDITION_KEYS}, **{c: [] for c in cols}})
        df = pd.concat(self._parts, ignore_index=True)
        df = df.groupby(CONDITION_KEYS, sort=True, dropna=False)[cols].sum().reset_index()
        return df.astype({c: np.int64 for c in cols})


def up_down_table(counts: pd.DataFrame, call_col: str) -> pd.DataFrame:
    """``up_down_counts.csv`` from :meth:`CallCounts.table`: contrast keys, n_up, n_down,
    call_column, sorted by the keys."""
    ud = counts[[*CONDITION_KEYS, "n_up", "n_down"]].copy()
    ud["call_column"] = call_col
    return ud.sort_values(CONDITION_KEYS).reset_index(drop=True)


def read_conditions(
    path: str | os.PathLike, conditions: Sequence[tuple], columns: Sequence[str] | None = None
) -> pd.DataFrame:
    """The rows of ``conditions`` (drug, dose_uM, cell_line_id) of a topTable, in file order;
    only row groups whose drug range holds one of them are decoded."""
    drugs = sorted({str(c[0]) for c in conditions})
    if not drugs:
        return pq.read_schema(path).empty_table().to_pandas()[list(columns or [])]
    t = pq.read_table(path, columns=list(columns) if columns else None,
                      filters=[("drug", "in", drugs)])  # fmt: skip
    df = t.to_pandas()
    key = pd.MultiIndex.from_frame(df[BLOCK_KEYS])
    return df[key.isin(list(conditions))].reset_index(drop=True)


def contrast_calls(
    path: str | os.PathLike, alpha: float = 0.05, column: str = "adj.P.Val.global"
) -> pd.DataFrame:
    """One row per contrast of a topTable (condition keys, ``n_calls``: rows with ``column <
    alpha``), sorted by the keys; read in batches, one row per contrast held."""
    pf = pq.ParquetFile(path, buffer_size=READ_BUFFER, pre_buffer=False)
    a = pa.scalar(alpha, pa.float64())
    frames = []
    for b in pf.iter_batches(batch_size=CURSOR_ROWS * 4, columns=[*CONDITION_KEYS, column]):
        t = pa.Table.from_batches([b])
        flag = pc.cast(pc.fill_null(pc.less(t.column(column), a), False), pa.int64())
        t = pa.table({**{k: t.column(k) for k in CONDITION_KEYS}, "n_calls": flag})
        agg = t.group_by(CONDITION_KEYS, use_threads=False).aggregate([("n_calls", "sum")])
        frames.append(agg.to_pandas().rename(columns={"n_calls_sum": "n_calls"}))
    if not frames:
        cols = pq.read_schema(path).empty_table().select(CONDITION_KEYS).to_pandas()
        return cols.assign(n_calls=pd.Series(dtype=np.int64))
    df = pd.concat(frames, ignore_index=True)
    df = df.groupby(CONDITION_KEYS, sort=True, dropna=False)["n_calls"].sum().reset_index()
    return df.astype({"n_calls": np.int64})
