"""The streamed split of a cells file equals the in-memory split, byte for byte, and rejects
the same bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tahoeflow import io as tio
from tahoeflow.errors import ArgumentError, InputError
from tahoeflow.models import split_file
from tahoeflow.models.features import make_split


@pytest.fixture
def cells(tmp_path, monkeypatch):
    """2,500 cells of 37 samples on 5 plates, read back in batches of 300 rows."""
    monkeypatch.setattr(split_file, "BATCH_ROWS", 300)
    rng = np.random.default_rng(4)
    n = 2500
    sample = rng.integers(0, 37, n)
    df = pd.DataFrame(
        {
            "cell_id": [f"c{i:06d}-lib_{rng.integers(1000, 9999)}" for i in range(n)],
            "sample": [f"smp{s:02d}" for s in sample],
            "plate": [f"plate{1 + s % 5}" for s in sample],
            "n_genes": rng.integers(10, 100, n),
        }
    )
    path = tmp_path / "cells.parquet"
    tio.write_parquet(pa.Table.from_pandas(df, preserve_index=False), path, row_group_size=700)
    return path, df


@pytest.mark.parametrize("by", ["random", "sample", "plate"])
@pytest.mark.parametrize("seed", [0, 7])
def test_streamed_split_is_the_in_memory_split_byte_for_byte(cells, tmp_path, by, seed):
    path, df = cells
    ref = make_split(df, by=by, test_size=0.25, seed=seed)
    tio.write_parquet(pa.Table.from_pandas(ref, preserve_index=False), tmp_path / "a.parquet")
    counts = split_file.split_cells_file(path, tmp_path / "b.parquet", by, 0.25, seed)
    a, b = (pq.read_table(tmp_path / f) for f in ("a.parquet", "b.parquet"))
    assert b.equals(a, check_metadata=True)  # pandas metadata too
    assert pq.ParquetFile(tmp_path / "b.parquet").metadata.num_row_groups == 9  # 300-row batches
    assert counts == ref["split"].value_counts().to_dict()
    if by == "random":
        assert counts["test"] == 625  # ceil(0.25 * 2500)


def test_one_batch_gives_the_same_file_bytes(cells, tmp_path, monkeypatch):
    """With batches as long as write_table's row groups (the default: 1Mi rows) the file is
    the in-memory split's, byte for byte (also checked on 37.9M rehearsal cells)."""
    monkeypatch.setattr(split_file, "BATCH_ROWS", 1 << 20)
    path, df = cells
    ref = make_split(df, by="sample", test_size=0.2, seed=1)
    tio.write_parquet(pa.Table.from_pandas(ref, preserve_index=False), tmp_path / "a.parquet")
    split_file.split_cells_file(path, tmp_path / "b.parquet", "sample", 0.2, 1)
    assert (tmp_path / "b.parquet").read_bytes() == (tmp_path / "a.parquet").read_bytes()


def test_bad_cells_are_one_error_naming_the_row_and_nothing_is_written(cells, tmp_path):
    path, df = cells
    out = tmp_path / "split.parquet"
    dup = df.copy()
    dup.loc[1234, "cell_id"] = dup.loc[17, "cell_id"]
    bad = tmp_path / "dup.parquet"
    tio.write_parquet(pa.Table.from_pandas(dup, preserve_index=False), bad)
    for by in ("random", "plate"):
        with pytest.raises(InputError, match=r"row 1234.*duplicate cell_id 'c000017"):
            split_file.split_cells_file(bad, out, by)
    nulls = df.astype({"plate": object})
    nulls.loc[901, "plate"] = None
    tio.write_parquet(pa.Table.from_pandas(nulls, preserve_index=False), bad)
    with pytest.raises(InputError, match=r"row 901.*null 'plate'"):
        split_file.split_cells_file(bad, out, "plate")
    one = df.assign(plate="plate1")
    tio.write_parquet(pa.Table.from_pandas(one, preserve_index=False), bad)
    with pytest.raises(ArgumentError, match="at least 2 distinct values"):
        split_file.split_cells_file(bad, out, "plate")
    with pytest.raises(ArgumentError, match="test_size"):
        split_file.split_cells_file(path, out, "random", test_size=1.0)
    with pytest.raises(ArgumentError, match="must be one of"):
        split_file.split_cells_file(path, out, "well")
    assert not out.exists()
