"""The train/test split of a cells file, streamed: :func:`~tahoeflow.models.features.make_split`
without holding the cells' ids.

The cells table is read twice, one record batch at a time: the first pass keeps each cell's
64-bit seeded hash (random split) or group code (grouped split), the second writes
``(cell_id, split)`` batch by batch. Memory is 17 bytes a cell (hash, its sort order and the
test flag) where the in-memory split held every id as a Python string. The split is the same,
row for row.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from tahoeflow import io as tio
from tahoeflow.errors import ArgumentError, InputError
from tahoeflow.models.features import check_split_args, count_test, seeded_hash

BATCH_ROWS = 1 << 20


def _batches(path: str | Path, columns: list[str]) -> Iterator[pa.RecordBatch]:
    f = tio.parquet_file(path)
    missing = [c for c in columns if c not in f.schema_arrow.names]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)}")
    yield from tio.read_batches(f, columns, BATCH_ROWS)


def _check_unique(path: str | Path, h: np.ndarray, seed: int) -> None:
    """A repeated cell id is an InputError naming its second row. ``h`` (the ids' hashes with
    ``seed``) is sorted in place; a repeated hash is confirmed on the ids themselves (a 64-bit collision of
    two different ids is not an error)."""
    h.sort()
    same = np.unique(h[1:][h[1:] == h[:-1]])
    if not same.size:
        return
    ids = tio.read_table(path, columns=["cell_id"]).column("cell_id").to_pandas()
    rows = np.flatnonzero(np.isin(seeded_hash(ids, seed), same[:100]))
    dup = ids.iloc[rows].duplicated()
    if dup.any():
        row = int(rows[np.flatnonzero(dup.to_numpy())[0]])
        raise InputError(path, f"duplicate cell_id {ids.iloc[row]!r}", row=row)


def split_cells_file(
    cells_path: str | Path,
    out_path: str | Path,
    by: str = "random",
    test_size: float = 0.2,
    seed: int = 0,
) -> dict[str, int]:
    """Write the ``(cell_id, split)`` table of the cells in ``cells_path`` (their order) to
    ``out_path``, atomically; returns the counts per side. Same rules and errors as
    :func:`~tahoeflow.models.features.make_split`."""
    seed = check_split_args(by, test_size, seed)
    columns = ["cell_id"] if by == "random" else ["cell_id", by]
    hashes: list[np.ndarray] = []
    codes: list[np.ndarray] = []
    groups: dict[str, int] = {}
    row = 0
    for batch in _batches(cells_path, columns):
        ids = batch.column(0)
        if ids.null_count:
            first = int(np.flatnonzero(ids.is_null().to_numpy(zero_copy_only=False))[0])
            raise InputError(cells_path, "null cell_id", row=row + first)
        if by == "random":
            hashes.append(seeded_hash(pd.Series(ids.to_pandas()), seed))
        else:
            g = batch.column(1)
            if g.null_count:
                first = int(np.flatnonzero(g.is_null().to_numpy(zero_copy_only=False))[0])
                raise InputError(
                    cells_path, f"null {by!r} value (grouped split needs it)", row=row + first
                )
            enc = pc.dictionary_encode(g.cast(pa.string()))
            local = np.array([groups.setdefault(v, len(groups)) for v in enc.dictionary.to_pylist()],
                             dtype=np.int32)  # fmt: skip
            codes.append(local[enc.indices.to_numpy(zero_copy_only=False)])
            hashes.append(seeded_hash(pd.Series(ids.to_pandas()), 0))  # for duplicates
        row += batch.num_rows
    n = row
    if n < 2:
        raise InputError(cells_path, f"need at least 2 cells to split, got {n}")
    h = np.concatenate(hashes)
    del hashes
    if by == "random":
        is_test = np.zeros(n, dtype=bool)
        is_test[np.argsort(h, kind="stable")[: count_test(float(test_size), n)]] = True
    _check_unique(cells_path, h, seed if by == "random" else 0)
    del h
    if by != "random":
        names = sorted(groups)
        if len(names) < 2:
            raise ArgumentError(
                "by", f"a split by {by!r} needs at least 2 distinct values; found {len(names)}"
            )
        rank = np.empty(len(names), dtype=np.int32)  # first-seen code -> sorted position
        rank[[groups[v] for v in names]] = np.arange(len(names), dtype=np.int32)
        gh = seeded_hash(pd.Series(np.asarray(names, dtype=object)), seed)
        test_group = np.zeros(len(names), dtype=bool)
        test_group[np.argsort(gh, kind="stable")[: count_test(float(test_size), len(names))]] = True
        is_test = test_group[rank[np.concatenate(codes)]]
    del codes
    labels = pa.array(["train", "test"])
    # the schema (pandas metadata included) of the in-memory split's table, so the file is the
    # same bytes as before
    schema = pa.Schema.from_pandas(
        pd.DataFrame({"cell_id": ["c"], "split": ["train"]}, dtype=object), preserve_index=False
    )

    def tables() -> Iterator[pa.Table]:
        lo = 0
        for batch in _batches(cells_path, ["cell_id"]):
            flags = is_test[lo : lo + batch.num_rows].astype(np.int8)
            lo += batch.num_rows
            yield pa.table(
                {"cell_id": batch.column(0), "split": labels.take(pa.array(flags))}, schema=schema
            )

    tio.write_parquet_batches(tables(), out_path)
    n_test = int(is_test.sum())
    return {"train": n - n_test, "test": n_test}
