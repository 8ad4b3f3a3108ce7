"""The model sample: a bounded, stratified sample of the merged cells, streamed.

Every model reads this file instead of the whole per-cell table. It holds the rows of the cells
table (all its columns, in table order) that are in the sample, plus their ``split``: at most
``max_train_cells`` training and ``max_test_cells`` test rows, each side stratified by
``stratify_by`` exactly as :func:`~tahoeflow.models.sampling.stratified_sample` draws it in
memory from that side's rows (same allocation, same ``default_rng(seed)`` keys, so the same
rows). A side at or below its cap (or with no cap) is kept whole; when neither cap binds the
sample is the cells table with its split.

The cells and split files are read three times, one record batch at a time: counts per
(side, class); the running selection of each class's rows with the smallest random keys; the
rows written. Memory is the selected positions, one row group and one batch, not the number of
cells.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tahoeflow import io as tio
from tahoeflow.errors import ArgumentError, InputError
from tahoeflow.models.checks import check_int
from tahoeflow.models.features import SPLIT_LABELS
from tahoeflow.models.sampling import allocate

BATCH_ROWS = 1 << 18
META_KEY = b"tahoeflow.model_sample"
"""Schema metadata key of the sample file: its counts and how it was drawn (JSON)."""
SIDES = ("train", "test")
NEVER = np.iinfo(np.int64).max


def _open(path: str | Path, columns: list[str]) -> Any:
    f = tio.parquet_file(path)
    missing = [c for c in columns if c not in f.schema_arrow.names]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    return f


def _aligned(
    cells_path: str | Path,
    cell_cols: list[str] | None,
    split_path: str | Path,
    batch_rows: int,
) -> Iterator[tuple[int, pa.RecordBatch, pa.Table]]:
    """``(first row, cells batch, split rows)``: the split file's ``cell_id, split`` rows beside
    each batch of the cells file (``cell_cols``; None: all). The split must list the cells'
    ids in the cells' order (as the split rule writes it); otherwise an InputError naming
    the split file and the first row that differs."""
    cf = _open(cells_path, ["cell_id"] if cell_cols is None else cell_cols)
    sf = _open(split_path, ["cell_id", "split"])
    n, m = cf.metadata.num_rows, sf.metadata.num_rows
    if n != m:
        raise InputError(split_path, f"{m} rows, the cells table {cells_path} has {n}")
    splits = tio.read_batches(sf, ["cell_id", "split"], batch_rows)
    held: list[pa.RecordBatch] = []
    n_held = 0
    lo = 0
    for batch in tio.read_batches(cf, cell_cols, batch_rows):
        k = batch.num_rows
        while n_held < k:
            b = next(splits)
            held.append(b)
            n_held += b.num_rows
        table = pa.Table.from_batches(held)
        part, rest = table.slice(0, k), table.slice(k)
        held, n_held = rest.to_batches(), rest.num_rows
        same = pc.fill_null(pc.equal(batch.column("cell_id"), part.column("cell_id")), False)
        bad = np.flatnonzero(~same.to_numpy(zero_copy_only=False))
        if bad.size:
            i = int(bad[0])
            raise InputError(
                split_path,
                f"cell_id {part.column('cell_id')[i].as_py()!r} where the cells table "
                f"{cells_path} has {batch.column('cell_id')[i].as_py()!r} (the split must list "
                "the cells in their order)",
                row=lo + i,
            )
        labels = part.column("split")
        ok = pc.fill_null(pc.is_in(labels, value_set=pa.array(SPLIT_LABELS)), False)
        bad = np.flatnonzero(~ok.to_numpy(zero_copy_only=False))
        if bad.size:
            i = int(bad[0])
            raise InputError(
                split_path,
                f"split must be 'train' or 'test', got {labels[i].as_py()!r}",
                row=lo + i,
            )
        yield lo, batch, part
        lo += k


def _is_test(part: pa.Table) -> np.ndarray:
    return pc.equal(part.column("split"), "test").to_numpy(zero_copy_only=False)


class _Codes:
    """Global class codes of the stratification column, in first-seen order over all rows."""

    def __init__(self) -> None:
        self.index: dict[Any, int] = {}

    def __call__(self, column: pa.Array) -> np.ndarray:
        enc = pc.dictionary_encode(column, null_encoding="encode")
        local = np.array(
            [self.index.setdefault(v, len(self.index)) for v in enc.dictionary.to_pylist()],
            dtype=np.int64,
        )
        return local[enc.indices.to_numpy(zero_copy_only=False)]


def _cap(value: Any, argument: str, minimum: int) -> int | None:
    return None if value is None else check_int(value, argument, minimum)


def _select(
    held: tuple[np.ndarray, np.ndarray, np.ndarray], new: tuple[np.ndarray, ...], take: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Of the held and new ``(code, key, position)`` rows, each class's ``take[code]`` rows of
    the smallest (key, position): the running form of stratified_sample's lexsort."""
    code, key, pos = (np.concatenate([a, b]) for a, b in zip(held, new, strict=True))
    order = np.lexsort((pos, key, code))
    code, key, pos = code[order], key[order], pos[order]
    first = np.r_[True, code[1:] != code[:-1]]
    starts = np.flatnonzero(first)
    rank = np.arange(code.size) - starts[np.cumsum(first) - 1]
    keep = rank < take[code]
    return code[keep], key[keep], pos[keep]


def sample_cells_file(
    cells_path: str | Path,
    split_path: str | Path,
    out_path: str | Path,
    max_train_cells: int | None = 200_000,
    max_test_cells: int | None = 200_000,
    seed: int = 0,
    stratify_by: str = "cell_line_id",
    batch_rows: int = BATCH_ROWS,
) -> dict[str, Any]:
    """Write the model sample of ``cells_path`` (split by ``split_path``) to ``out_path``,
    atomically; returns :func:`sample_info`'s dict (also stored in the file's metadata).

    Side s keeps ``stratified_sample(labels of its rows, max_s_cells, seed)`` of its rows (in
    table order). ArgumentError for a cap below 2 (train) or 1 (test) or a bad seed;
    InputError naming the file for a missing column, a split that does not list the cells
    in their order, or a split label other than train/test.
    """
    caps = {
        "train": _cap(max_train_cells, "max_train_cells", 2),
        "test": _cap(max_test_cells, "max_test_cells", 1),
    }
    seed = check_int(seed, "seed", 0)
    batch_rows = check_int(batch_rows, "batch_rows", 1)
    if not isinstance(stratify_by, str) or not stratify_by:
        raise ArgumentError("stratify_by", f"must be a column name, got {stratify_by!r}")
    cols = ["cell_id", stratify_by]
    codes_of = _Codes()
    counts = {s: np.zeros(0, dtype=np.int64) for s in SIDES}
    first = {s: np.zeros(0, dtype=np.int64) for s in SIDES}  # first row of each class
    for lo, batch, part in _aligned(cells_path, cols, split_path, batch_rows):
        codes = codes_of(batch.column(stratify_by))
        is_test = _is_test(part)
        for side, mask in (("train", ~is_test), ("test", is_test)):
            c = codes[mask]
            b = np.bincount(c, minlength=len(codes_of.index))
            counts[side] = np.pad(counts[side], (0, b.size - counts[side].size)) + b
            f = np.full(b.size, NEVER)
            u, i = np.unique(c, return_index=True)
            f[u] = lo + np.flatnonzero(mask)[i]
            old = np.pad(first[side], (0, b.size - first[side].size), constant_values=NEVER)
            first[side] = np.minimum(old, f)
    totals = {s: int(counts[s].sum()) for s in SIDES}
    # quota per class code; None: the side is kept whole
    take: dict[str, np.ndarray | None] = {}
    for side in SIDES:
        cap = caps[side]
        if cap is None or totals[side] <= cap:
            take[side] = None
            continue
        seen = np.flatnonzero(counts[side])
        seen = seen[np.argsort(first[side][seen], kind="stable")]  # first-seen order of the side
        t = np.zeros(counts[side].size, dtype=np.int64)
        t[seen] = allocate(counts[side][seen], cap)
        take[side] = t
    chosen: dict[str, np.ndarray] = {}
    capped = [s for s in SIDES if take[s] is not None]
    if capped:
        rngs = {s: np.random.default_rng(seed) for s in capped}
        empty = (np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.int64))
        held = {s: empty for s in capped}
        for lo, batch, part in _aligned(cells_path, cols, split_path, batch_rows):
            codes = codes_of(batch.column(stratify_by))
            is_test = _is_test(part)
            for side in capped:
                rows = np.flatnonzero(is_test if side == "test" else ~is_test)
                keys = rngs[side].random(rows.size)  # the side's stream, in table order
                held[side] = _select(held[side], (codes[rows], keys, lo + rows), take[side])
        chosen = {s: held[s][2] for s in capped}
    picked = np.sort(np.concatenate(list(chosen.values()))) if chosen else np.zeros(0, np.int64)
    whole = {s: take[s] is None for s in SIDES}
    n_sampled = {s: totals[s] if whole[s] else int(chosen[s].size) for s in SIDES}
    info = sample_info(totals, n_sampled, caps, seed, stratify_by)
    schema = _sample_schema(cells_path, info)

    def tables() -> Iterator[pa.Table]:
        for lo, batch, part in _aligned(cells_path, None, split_path, batch_rows):
            is_test = _is_test(part)
            keep = np.where(is_test, whole["test"], whole["train"])
            a, b = np.searchsorted(picked, [lo, lo + batch.num_rows])
            keep[picked[a:b] - lo] = True
            idx = pa.array(np.flatnonzero(keep))
            cols_out = [*batch.take(idx).columns, part.column("split").take(idx)]
            yield pa.Table.from_arrays(cols_out, schema=schema)

    tio.write_parquet_batches(_non_empty(tables(), schema), out_path)
    return info


def _non_empty(tables: Iterator[pa.Table], schema: pa.Schema) -> Iterator[pa.Table]:
    """The tables with rows (no empty row groups); one empty table when none has any."""
    any_rows = False
    for t in tables:
        if t.num_rows:
            any_rows = True
            yield t
    if not any_rows:
        yield schema.empty_table()


def _sample_schema(cells_path: str | Path, info: dict[str, Any]) -> pa.Schema:
    """The cells' schema plus ``split`` (string); the pandas metadata lists it too, so
    ``pd.read_parquet`` gives the cells' columns with their dtypes, and ``split``."""
    cells = tio.read_schema(cells_path)
    if "split" in cells.names:
        raise InputError(cells_path, "already has a 'split' column")
    meta = dict(cells.metadata or {})
    if b"pandas" in meta:
        pandas_meta = json.loads(meta[b"pandas"])
        pandas_meta["columns"].append(
            {"name": "split", "field_name": "split", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None}
        )  # fmt: skip
        meta[b"pandas"] = tio.to_json(pandas_meta, indent=None, sort_keys=False).encode()
    meta[META_KEY] = tio.to_json(info, indent=None).encode()
    return cells.append(pa.field("split", pa.string())).with_metadata(meta)


def sample_info(
    totals: dict[str, int],
    sampled: dict[str, int],
    caps: dict[str, int | None],
    seed: int,
    stratify_by: str,
) -> dict[str, Any]:
    """The sample's counts and how it was drawn (the file's metadata)."""
    return {
        "n_train_total": totals["train"],
        "n_train_sampled": sampled["train"],
        "n_test_total": totals["test"],
        "n_test_sampled": sampled["test"],
        "max_train_cells": caps["train"],
        "max_test_cells": caps["test"],
        "seed": seed,
        "stratify_by": stratify_by,
    }


def read_sample(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """``(cells, split, info)`` of a sample file: the sampled rows of the cells table, their
    ``(cell_id, split)`` table, and :func:`sample_info`'s dict."""
    table = tio.read_table(path)
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise InputError(path, "is not a model sample (no tahoeflow.model_sample metadata)")
    frame = table.to_pandas()
    split = frame[["cell_id", "split"]].copy()
    return frame.drop(columns="split"), split, json.loads(raw)


def sample_metrics(info: dict[str, Any]) -> dict[str, Any]:
    """What the model metrics say of the sample: its counts and how it was drawn; empty when
    the sample is every cell (nothing was left out)."""
    if all(info[f"n_{s}_sampled"] == info[f"n_{s}_total"] for s in SIDES):
        return {}
    return {
        "n_train_sampled": info["n_train_sampled"],
        "n_train_total": info["n_train_total"],
        "n_test_sampled": info["n_test_sampled"],
        "n_test_total": info["n_test_total"],
        "sample": sample_note(info),
    }


def sample_note(info: dict[str, Any]) -> str:
    """One line: the sample's counts and how it was drawn (with the config keys)."""
    return (
        f"model sample: {info['n_train_sampled']} of {info['n_train_total']} train and "
        f"{info['n_test_sampled']} of {info['n_test_total']} test cells, stratified by "
        f"{info['stratify_by']}, seed {info['seed']} (models.max_train_cells "
        f"{info['max_train_cells']}, models.max_test_cells {info['max_test_cells']}, models.seed)"
    )


def sample_embeddings_file(
    sample_path: str | Path,
    embeddings_path: str | Path,
    out_path: str | Path,
    batch_rows: int = 1 << 18,
) -> int:
    """Write the ``cell_id`` and ``pc1..pcK`` columns of the embeddings rows whose cell is in
    the sample (the embeddings' order) to ``out_path``, atomically; returns the rows written.
    Streams the embeddings one batch at a time; holds the sample's ids."""
    batch_rows = check_int(batch_rows, "batch_rows", 1)
    ids = tio.read_table(sample_path, columns=["cell_id"]).column("cell_id").combine_chunks()
    ef = _open(embeddings_path, ["cell_id"])
    pcs = [c for c in ef.schema_arrow.names if c.startswith("pc") and c[2:].isdigit()]
    if not pcs:
        raise InputError(embeddings_path, "has no pc1..pcK columns")
    cols = [*pcs, "cell_id"]
    schema = pa.schema([ef.schema_arrow.field(c) for c in cols])
    n = 0

    def tables() -> Iterator[pa.Table]:
        nonlocal n
        for batch in tio.read_batches(ef, cols, batch_rows):
            mask = pc.fill_null(pc.is_in(batch.column("cell_id"), value_set=ids), False)
            t = pa.Table.from_batches([batch.filter(mask)], schema=schema)
            n += t.num_rows
            yield t

    tio.write_parquet_batches(_non_empty(tables(), schema), out_path)
    return n


def with_sample_note(table: pd.DataFrame, info: dict[str, Any]) -> pd.DataFrame:
    """``table`` with :func:`sample_note` added to its ``note`` column when the sample left
    cells out (unchanged otherwise)."""
    if not sample_metrics(info):
        return table
    note = sample_note(info)
    old = table["note"].fillna("").astype(str)
    return table.assign(note=np.where(old == "", note, old + "; " + note))
