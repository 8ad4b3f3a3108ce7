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
