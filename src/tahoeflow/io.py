"""Atomic output writing: every file the workflow writes appears whole or not at all.

Two more guarantees for files other programs open:

* **CSV: no formulas.** Text cells (and header/index labels) beginning with ``=``, ``+``,
  ``-``, ``@``, a tab or a carriage return get a leading single quote (``'=1+1``), as OWASP
  recommends against CSV injection: a spreadsheet would otherwise run them as formulas, and
  the text comes from the hub (drug names, cell-line ids ...), i.e. is untrusted. Numeric
  columns are never touched (``-1.5`` stays). Parquet files keep the exact values.
* **JSON: strict.** NaN and +/-inf (Python or numpy, at any depth) are written as ``null``;
  ``allow_nan=False`` guards the rest, so every JSON file parses with a strict parser.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

RESULTS = "results"
"""The folder (relative to the working directory) the workflow writes everything under."""

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same directory (so the rename is atomic on POSIX) and is
    removed on any exception, including a full disk (ENOSPC) half-way through a write.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A job killed by SIGKILL (or the OOM killer) cannot clean up; Snakemake runs one job per
    # output at a time, so an earlier temporary file of this target is stale.
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual mode
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def _readable(path: str | os.PathLike[str]) -> Iterator[None]:
    """An unreadable Parquet file (truncated, corrupt, not Parquet) as one InputError naming it."""
    from tahoeflow.errors import InputError

    try:
        yield
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        if isinstance(e, FileNotFoundError):
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(
            path, f"not a readable Parquet file ({first}); delete it to have it made again"
        ) from None


def read_table(path: str | os.PathLike[str], **kwargs: Any) -> pa.Table:
    """``pq.read_table`` of a file the workflow wrote; a corrupt file is an InputError naming it."""
    with _readable(path):
        return pq.read_table(path, **kwargs)


def parquet_file(path: str | os.PathLike[str]) -> pq.ParquetFile:
    """``pq.ParquetFile`` (footer read and checked); a corrupt file is an InputError naming it."""
    with _readable(path):
        return pq.ParquetFile(path)


def read_batches(
    f: pq.ParquetFile,
    columns: Sequence[str] | None,
    batch_rows: int,
    row_groups: Sequence[int] | None = None,
) -> Iterator[pa.RecordBatch]:
    """``f``'s rows (of ``row_groups`` only, in that order, if given) in batches of
    ``batch_rows`` (the last one shorter), read one row group at a time: memory is one row group
    and one batch, where ``f.iter_batches`` with ``ParquetFile``'s default pre-buffering keeps
    what it read until the reader is done. For many readers open at once (a k-way merge),
    ``iter_batches`` of a file opened with ``pre_buffer=False`` holds less: one batch each."""
    if batch_rows < 1:
        from tahoeflow.errors import ArgumentError

        raise ArgumentError("batch_rows", f"must be at least 1, got {batch_rows!r}")
    cols = list(columns) if columns is not None else None
    held: list[pa.Table] = []
    n_held = 0
    for i in range(f.num_row_groups) if row_groups is None else row_groups:
        group = f.read_row_group(i, columns=cols)
        held.append(group)
        n_held += group.num_rows
        while n_held >= batch_rows:
            table = pa.concat_tables(held)
            yield from table.slice(0, batch_rows).combine_chunks().to_batches()
            rest = table.slice(batch_rows)
            held, n_held = [rest], rest.num_rows
    if n_held:
        yield from pa.concat_tables(held).combine_chunks().to_batches()


def read_schema(path: str | os.PathLike[str]) -> pa.Schema:
    with _readable(path):
        return pq.read_schema(path)


def write_parquet(table: pa.Table, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write ``table`` atomically. Deterministic: no timestamps or writer-specific metadata."""
    kwargs.setdefault("compression", "zstd")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


def write_parquet_batches(
    tables: Iterable[pa.Table], path: str | os.PathLike[str], **kwargs: Any
) -> int:
    """Write ``tables`` one after another into one Parquet file (the first one's schema),
    atomically; returns how many were written. With none, nothing is written (ValueError)."""
    kwargs.setdefault("compression", "zstd")
    n = 0
    with atomic_path(path) as tmp:
        writer = None
        try:
            for t in tables:
                if writer is None:
                    writer = pq.ParquetWriter(tmp, t.schema, **kwargs)
                writer.write_table(t)
                n += 1
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise ValueError(f"{path}: no table to write")
    return n


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(obj: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write ``obj`` as strict JSON atomically: NaN/inf become ``null`` (see module docs).

    Defaults ``indent=2, sort_keys=True``; other :func:`json.dumps` arguments pass through
    (e.g. ``indent=None, separators=(",", ":")`` for compact output).
    """
    write_text(to_json(obj, **kwargs) + "\n", path)


def to_json(obj: Any, **kwargs: Any) -> str:
    """``obj`` as strict JSON text (what :func:`write_json` writes, without the newline)."""
    kwargs.setdefault("indent", 2)
    kwargs.setdefault("sort_keys", True)
    kwargs.update(allow_nan=False, default=_json_default)
    try:  # fast path: the C encoder, when nothing needs replacing
        return json.dumps(obj, **kwargs)
    except ValueError as e:
        if "Out of range float" not in str(e):
            raise
    return json.dumps(_finite(obj), **kwargs)


def _finite(o: Any) -> Any:
    """A copy of ``o`` with every non-finite float (Python or numpy) replaced by None."""
    import numpy as np

    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, list | tuple):
        return [_finite(v) for v in o]
    if isinstance(o, float | np.floating):
        return float(o) if math.isfinite(o) else None
    if isinstance(o, np.ndarray):
        if o.dtype.kind in "fc":
            out = o.astype(object)
            out[~np.isfinite(o)] = None
            return _finite(out.tolist())
        return _finite(o.tolist())
    return o


FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
"""Leading characters that make a spreadsheet read a CSV cell as a formula (OWASP)."""


def write_csv(df: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write a pandas DataFrame as CSV atomically (index off unless asked).

    Text cells, column labels and (when written) index labels that start like a formula are
    prefixed with ``'`` (:func:`neutralise_formulas`); numeric columns are written as they are.
    A text cell holding a carriage return makes every non-numeric field quoted
    (``csv.QUOTE_NONNUMERIC``): the csv module leaves a bare ``\r`` unquoted, and readers
    take it for the end of the row.
    """
    kwargs.setdefault("index", False)
    df = neutralise_formulas(df, index=bool(kwargs["index"]))
    if "quoting" not in kwargs and _has_carriage_return(df, index=bool(kwargs["index"])):
        import csv

        kwargs["quoting"] = csv.QUOTE_NONNUMERIC
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)


def write_csv_table(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write an Arrow table as CSV atomically with Arrow's C++ writer (header, quotes only
    where needed; floats in their shortest round-trip form). Several times faster than
    pandas ``to_csv`` for wide numeric tables such as the embeddings. Text columns and
    column names are neutralised like :func:`write_csv` does (vectorised, Arrow compute)."""
    import pyarrow.csv as pcsv

    table = neutralise_formulas_table(table)
    with atomic_path(path) as tmp:
        pcsv.write_csv(table, tmp, pcsv.WriteOptions(quoting_style="needed"))


def parquet_to_csv(src: str | os.PathLike[str], path: str | os.PathLike[str]) -> int:
    """Write a Parquet file as CSV atomically, one row group at a time (memory of one row
    group), byte for byte what :func:`write_csv_table` writes for the whole table. Returns
    the rows written."""
    import pyarrow.csv as pcsv

    pf = pq.ParquetFile(src)
    schema = neutralise_formulas_table(pf.schema_arrow.empty_table()).schema
    n = 0
    with (
        atomic_path(path) as tmp,
        pcsv.CSVWriter(
            tmp, schema, write_options=pcsv.WriteOptions(quoting_style="needed")
        ) as writer,
    ):
        for i in range(pf.num_row_groups):
            part = neutralise_formulas_table(pf.read_row_group(i))
            writer.write_table(part)
            n += part.num_rows
    return n


def _neutral_label(label: Any) -> Any:
    return "'" + label if isinstance(label, str) and label.startswith(FORMULA_PREFIXES) else label


def _neutral_index(idx: Any) -> Any:
    import pandas as pd

    if isinstance(idx, pd.MultiIndex):
        levels = [_neutral_index(level) for level in idx.levels]
        names = [_neutral_label(n) for n in idx.names]
        return idx.set_levels(levels, verify_integrity=False).set_names(names)
    values = _neutral_values(pd.Series(idx, dtype=idx.dtype))
    if values is None and _neutral_label(idx.name) == idx.name:
        return idx
    out = pd.Index(values if values is not None else idx, dtype=idx.dtype, name=idx.name)
    return out.rename(_neutral_label(idx.name))


def _neutral_values(s: Any) -> Any:
    """``s`` (a Series) with formula-like strings prefixed, or None if nothing changes.

    Only strings are looked at: numbers (also inside an object column) are left alone."""
    import numpy as np
    import pandas as pd

    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = s.cat.categories
        new = _neutral_values(pd.Series(cats, dtype=cats.dtype))
        if new is None:
            return None
        new = pd.Index(new)
        if new.is_unique:
            return s.cat.rename_categories(new)
        s = s.astype(object)
    if not (s.dtype == object or isinstance(s.dtype, pd.StringDtype)):
        return None
    mask = _text_only(s).str.startswith(FORMULA_PREFIXES, na=False).to_numpy(dtype=bool)
    if not mask.any():
        return None
    values = s.to_numpy(dtype=object, copy=True)
    values[mask] = np.char.add("'", values[mask].astype(str)).astype(object)
    return pd.Series(values, index=s.index, name=s.name, dtype=s.dtype)


def _text_only(s: Any) -> Any:
    """An object column with its non-text cells (dicts, numbers, None: e.g. scikit-learn's
    ``cv_results_['params']``) as missing, so the ``.str`` methods apply to the text cells."""
    if s.dtype != object:
        return s
    return s.where(s.map(type).eq(str))


def _has_carriage_return(df: Any, *, index: bool) -> bool:
    import pandas as pd

    def text(s: Any) -> Any:
        if isinstance(s.dtype, pd.CategoricalDtype):
            s = pd.Series(s.cat.categories)
        return s if s.dtype == object or isinstance(s.dtype, pd.StringDtype) else None

    series = [df.iloc[:, j] for j in range(df.shape[1])]
    series.append(pd.Series(df.columns.to_flat_index(), dtype=object))
    if index:
        series.append(pd.Series(df.index.to_flat_index(), dtype=object))
    for s in series:
        t = text(s)
        if t is not None and _text_only(t).str.contains("\r", regex=False, na=False).any():
            return True
    return False


def neutralise_formulas(df: Any, *, index: bool = False) -> Any:
    """``df`` with formula-like text cells, column labels and (``index=True``) index labels
    prefixed by ``'``. Returns ``df`` itself when nothing needed changing (no copy)."""
    out = df
    for j in range(df.shape[1]):
        new = _neutral_values(df.iloc[:, j])
        if new is not None:
            if out is df:
                out = df.copy(deep=False)
            out.isetitem(j, new.array)
    columns = _neutral_index(df.columns)
    if columns is not df.columns:
        out = out.copy(deep=False) if out is df else out
        out.columns = columns
    if index:
        rows = _neutral_index(df.index)
        if rows is not df.index:
            out = out.copy(deep=False) if out is df else out
            out.index = rows
    return out


def neutralise_formulas_table(table: pa.Table) -> pa.Table:
    """The Arrow version of :func:`neutralise_formulas` (string and dictionary columns)."""
    import pyarrow.compute as pc

    pattern = "^[" + "".join("\\" + c if c in "-\\]^" else c for c in FORMULA_PREFIXES) + "]"

    def fix(arr: pa.Array) -> pa.Array:
        if pa.types.is_dictionary(arr.type):
            return pa.DictionaryArray.from_arrays(arr.indices, fix(arr.dictionary))
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            return arr
        mask = pc.fill_null(pc.match_substring_regex(arr, pattern), False)
        if not pc.any(mask).as_py():
            return arr
        quoted = pc.binary_join_element_wise(pa.scalar("'", arr.type), arr, pa.scalar("", arr.type))
        return pc.if_else(mask, quoted, arr)

    columns = []
    for column in table.columns:
        chunks = [fix(chunk) for chunk in column.chunks]
        columns.append(pa.chunked_array(chunks, chunks[0].type) if chunks else column)
    names = [_neutral_label(n) for n in table.column_names]
    return pa.Table.from_arrays(columns, names=names)


def json_number(x: Any) -> float | None:
    """Plain float, or None for NaN / infinite / missing (keeps metric dicts valid JSON)."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def json_value(v: Any) -> Any:
    """numpy scalars as Python ones (a non-finite float as None); anything else unchanged."""
    import numpy as np

    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return json_number(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def numeric_columns(df: Any, columns: list[str], path: object, row_offset: int = 0) -> Any:
    """``df[columns]`` (a copy) with text columns parsed as numbers; a value that is not a
    number is an :class:`~tahoeflow.errors.InputError` naming the file, row (``df``'s first
    being ``row_offset``) and column."""
    import numpy as np
    import pandas as pd

    from tahoeflow.errors import InputError

    out = df[list(columns)].copy()
    for c in columns:
        if not pd.api.types.is_numeric_dtype(out[c]):
            conv = pd.to_numeric(out[c], errors="coerce")
            bad = np.flatnonzero(conv.isna().to_numpy() & out[c].notna().to_numpy())
            if bad.size:
                raise InputError(
                    path, f"column {c!r} has a non-numeric value {out[c].iloc[bad[0]]!r}",
                    row=int(bad[0]) + row_offset,
                )  # fmt: skip
            out[c] = conv
    return out


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.ndarray):
        return o.tolist()
    v = json_value(o)
    if v is o:
        raise TypeError(f"not JSON serialisable: {type(o)}")
    return v
