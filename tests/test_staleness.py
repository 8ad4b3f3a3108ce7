"""A change of a shard's row range reruns its jobs (the shard reaches the rules as plain params).

Replays the report: with ``cells_per_shard`` and a nominal ``rows_per_file``, lowering
``rows_per_file`` moved the last shard's range from ``[a, b)`` to ``[a, end)``; only
``merge_cells`` reran, and the rows from ``b`` on were silently lost.
"""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from conftest import local_mirror, run_smk

pytestmark = pytest.mark.workflow


def _config(mirror, rows_per_file: int) -> dict:
    return {
        "source": {
            "kind": "local",
            "local": {"path": str(mirror), "n_files_total": 2},
            "files": "0:2",
            "cells_per_shard": 200,
            "rows_per_file": rows_per_file,
        },
        "filters": {"min_genes": 1},
    }


def test_lower_rows_per_file_reruns_the_shards_whose_range_changed(small_demo, tmp_path):
    root, _ = small_demo  # 2 files x 600 cells
    mirror = local_mirror(tmp_path, root)
    wd = tmp_path / "wd"
    target = "results/merged/cells.parquet"
    run_smk(wd, _config(mirror, 600), target, cores=2, check=True)
    n_before = pq.read_metadata(wd / target).num_rows
    assert n_before > 1000  # 1,200 cells less the few the filters drop
    # 600 -> 400: shards [0,200) [200,400) [400,end) become [0,200) [200,end)
    proc = run_smk(wd, _config(mirror, 400), target, cores=2, check=True)
    assert "summarize_shard" in proc.stdout + proc.stderr
    assert pq.read_metadata(wd / target).num_rows == n_before


def test_a_shard_planned_past_the_files_rows_is_an_error_naming_file_and_counts(
    small_demo, tmp_path
):
    """A nominal rows_per_file larger than a file (by more than a shard) planned an empty
    shard that summarised "0 of 0 rows"; now the job names the file and both counts."""
    from test_h5ad_source import make_adata

    from tahoeflow.cells.read import read_rows
    from tahoeflow.errors import InputError
    from tahoeflow.sources.h5ad import read_rows_csr

    root, _ = small_demo
    path = root / "data/train-00000-of-00002.parquet"  # 600 rows
    with pytest.raises(
        InputError,
        match=r"train-00000-of-00002\.parquet: the shard starts at row 800 but the file has 600 rows",
    ):
        read_rows(path, 800, None)
    assert read_rows(path, 400, None) is not None  # a range inside the file still reads
    h5 = tmp_path / "x.h5ad"
    make_adata(n=50).write_h5ad(h5)
    with pytest.raises(
        InputError, match=r"x\.h5ad: the shard starts at row 60 but the file has 50 rows"
    ):
        read_rows_csr(h5, 60, None)
