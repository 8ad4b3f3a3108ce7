"""Per-line DE jobs read only their part of the merged pseudobulk (issue 16, item 6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_de import _simulate_plates

from tahoeflow.de import parts as de_parts
from tahoeflow.de import pipeline
from tahoeflow.de import tables as de_tables
from tahoeflow.merge.pseudobulk import write_pseudobulk

G = 150


def _long(counts: np.ndarray, groups: pd.DataFrame) -> pa.Table:
    """The long counts as merge_pseudobulk returns them: sorted by sample, line, token."""
    r, c = np.nonzero(counts)
    long = pd.DataFrame(
        {
            "sample": groups["sample"].to_numpy()[r],
            "cell_line_id": groups["cell_line_id"].to_numpy()[r],
            "token_id": c.astype(np.int64),
            "count": counts[r, c],
        }
    ).sort_values(["sample", "cell_line_id", "token_id"], kind="mergesort")
    return pa.Table.from_pandas(long, preserve_index=False)


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("de_parts")
    counts, groups, _ = _simulate_plates(5, lines=("CL1", "CL2", "CL3"), G=G, n_null=2)
    long = _long(counts, groups)
    old = tmp / "old.parquet"  # the former layout: sorted by sample, row groups cross lines
    pq.write_table(long, old, row_group_size=997)
    new = tmp / "new.parquet"
    n_rg = write_pseudobulk(long, new, row_group_rows=1000)
    groups.to_parquet(tmp / "groups.parquet")
    pd.DataFrame({"token_id": np.arange(G), "gene_symbol": [f"S{k}" for k in range(G)]}).to_parquet(
        tmp / "genes.parquet"
    )
    return counts, groups, long, old, new, n_rg, tmp


def _row_group_lines(path) -> list[set]:
    pf = pq.ParquetFile(path)
    return [
        set(pf.read_row_group(i, columns=["cell_line_id"]).column(0).to_pylist())
        for i in range(pf.metadata.num_row_groups)
    ]


def test_merged_pseudobulk_has_one_line_per_row_group_in_line_order(layouts):
    _, _, long, old, new, n_rg, _ = layouts
    per_rg = _row_group_lines(new)
    assert len(per_rg) == n_rg == pq.ParquetFile(new).metadata.num_row_groups
    assert all(len(s) == 1 for s in per_rg)  # no row group straddles two lines
    assert [next(iter(s)) for s in per_rg] == sorted(next(iter(s)) for s in per_rg)
    assert n_rg > 3  # a line spans several row groups of at most 1,000 rows
    assert (
        max(rg.num_rows for rg in map(pq.ParquetFile(new).metadata.row_group, range(n_rg))) <= 1000
    )
    # within a line the rows keep merge_pseudobulk's order (sample, token): a stable sort
    ref = long.to_pandas().sort_values("cell_line_id", kind="mergesort").reset_index(drop=True)
    pd.testing.assert_frame_equal(pq.read_table(new).to_pandas(), ref)
    assert any(len(s) > 1 for s in _row_group_lines(old))  # the old layout mixed lines


@pytest.mark.parametrize("n_parts", [1, 2, 3])
def test_a_de_part_decodes_only_its_row_groups_and_gives_the_same_table(
    layouts, n_parts, monkeypatch
):
    counts, groups, _, old, new, n_rg, tmp = layouts
    per_rg = _row_group_lines(new)
    read: list[list[int]] = []
    orig = pq.ParquetFile.read_row_groups

    def spy(self, row_groups, *a, **k):
        read.append(list(row_groups))
        return orig(self, row_groups, *a, **k)

    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", spy)
    rest = [str(tmp / "groups.parquet"), str(tmp / "genes.parquet")]
    whole = pipeline.pseudobulk_de(counts, groups, np.arange(G), 20)
    tables = {}
    for layout, path in (("old", old), ("new", new)):
        parts = []
        for k in range(n_parts):
            read.clear()
            X, g, genes, lines = de_parts.read_pseudobulk_part(str(path), *rest, k, n_parts)
            assert lines == ["CL1", "CL2", "CL3"][k::n_parts]
            if layout == "new":  # exactly the row groups of the part's lines, nothing else
                assert read == [[i for i, s in enumerate(per_rg) if s <= set(lines)]]
                assert len(read[0]) < n_rg or n_parts == 1
            rows = g["cell_line_id"].isin(lines).to_numpy()
            np.testing.assert_array_equal(X.toarray(), counts[groups["cell_line_id"].isin(lines)])
            assert rows.all()
            parts.append(
                pipeline.pseudobulk_de(X, g, genes["token_id"].to_numpy(), 20, genes=genes)
            )
        got = de_tables.global_adjust(pd.concat(parts, ignore_index=True))
        got = got.sort_values([*de_tables.CONDITION_KEYS, "gene"], kind="mergesort")
        tables[layout] = got.reset_index(drop=True)
    pd.testing.assert_frame_equal(tables["new"], tables["old"])  # identical to before
    pd.testing.assert_frame_equal(tables["new"].drop(columns=["gene_symbol"]),
                                  whole.drop(columns=["gene_symbol"]))  # fmt: skip


def test_row_groups_by_statistics_and_empty_parts(layouts, tmp_path):
    *_, new, n_rg, _ = layouts
    per_rg = _row_group_lines(new)
    assert de_parts.pseudobulk_row_groups(str(new), []) == []
    assert de_parts.pseudobulk_row_groups(str(new), ["CL0", "CL9"]) == []  # no such line
    assert de_parts.pseudobulk_row_groups(str(new), ["CL2"]) == [
        i for i, s in enumerate(per_rg) if s == {"CL2"}
    ]
    # a file without statistics: every row group is read, the filter keeps the right rows
    t = pq.read_table(new)
    bare = tmp_path / "bare.parquet"
    pq.write_table(t, bare, row_group_size=500, write_statistics=False)
    n = pq.ParquetFile(bare).metadata.num_row_groups
    assert de_parts.pseudobulk_row_groups(str(bare), ["CL2"]) == list(range(n))
    # an empty merged pseudobulk is written (one empty file with the schema)
    empty = tmp_path / "empty.parquet"
    assert write_pseudobulk(t.slice(0, 0), empty) == 0
    assert pq.read_table(empty).num_rows == 0 and pq.read_schema(empty).equals(t.schema)
