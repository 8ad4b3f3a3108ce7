"""tahoeflow.io.read_batches: a Parquet file's rows in fixed-size batches, one row group read at
a time, against ``pq.read_table`` of the same file."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tahoeflow.errors import ArgumentError
from tahoeflow.io import read_batches

GROUPS = [13, 40, 1, 30, 16]  # rows per row group: unequal, 100 in all


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    rng = np.random.default_rng(7)
    n = sum(GROUPS)
    table = pa.table(
        {
            "i": pa.array(np.arange(n, dtype=np.int64)),
            "s": pa.array([f"cell{k}" if k % 9 else None for k in rng.permutation(n)]),
            "x": pa.array(rng.normal(size=n)),
        }
    )
    out = tmp_path_factory.mktemp("io") / "t.parquet"
    with pq.ParquetWriter(out, table.schema) as w:
        at = 0
        for g in GROUPS:
            w.write_table(table.slice(at, g))
            at += g
    md = pq.ParquetFile(out).metadata
    assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == GROUPS
    return out


def _check_sizes(batches: list[pa.RecordBatch], batch_rows: int, n: int) -> None:
    sizes = [b.num_rows for b in batches]
    assert sum(sizes) == n
    assert all(s == batch_rows for s in sizes[:-1])
    assert not sizes or 0 < sizes[-1] <= batch_rows


@pytest.mark.parametrize("batch_rows", [1, 7, 13, 40, 100, 1000])
@pytest.mark.parametrize("columns", [None, ["x", "s"]])
def test_batches_are_the_files_rows_in_order(path, batch_rows, columns):
    want = pq.read_table(path, columns=columns)
    got = list(read_batches(pq.ParquetFile(path), columns, batch_rows))
    _check_sizes(got, batch_rows, want.num_rows)
    assert pa.Table.from_batches(got, schema=want.schema).equals(want)


@pytest.mark.parametrize("batch_rows", [1, 7, 40, 1000])
def test_row_groups_are_read_in_the_order_given(path, batch_rows):
    full = pq.read_table(path, columns=["i", "s"])
    starts = np.cumsum([0, *GROUPS])
    order = [3, 0, 2, 1]
    want = pa.concat_tables([full.slice(starts[g], GROUPS[g]) for g in order])
    got = list(read_batches(pq.ParquetFile(path), ["i", "s"], batch_rows, row_groups=order))
    _check_sizes(got, batch_rows, want.num_rows)
    assert pa.Table.from_batches(got, schema=want.schema).equals(want)
    assert got[0].column("i")[0].as_py() == starts[3]
    assert list(read_batches(pq.ParquetFile(path), None, 5, row_groups=[])) == []


def test_a_file_without_rows_gives_no_batch(tmp_path):
    schema = pa.schema([("i", pa.int64()), ("s", pa.string())])
    one_empty_group = tmp_path / "a.parquet"
    pq.write_table(schema.empty_table(), one_empty_group)
    no_group = tmp_path / "b.parquet"
    pq.ParquetWriter(no_group, schema).close()
    for p in (one_empty_group, no_group):
        f = pq.ParquetFile(p)
        assert f.metadata.num_rows == 0
        assert list(read_batches(f, None, 7)) == []


def test_batch_rows_below_one_is_an_argument_error(path):
    with pytest.raises(ArgumentError, match="batch_rows"):
        list(read_batches(pq.ParquetFile(path), None, 0))
