"""Merging is exact: statistics merged over shards equal those computed on all cells at once."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from tahoeflow import io as tio
from tahoeflow.cells.doses import sample_doses
from tahoeflow.cells.plan import plan_shards
from tahoeflow.cells.stats import shard_stats
from tahoeflow.cells.summarize import Filters, load_shard, summarize
from tahoeflow.cells.vocab import vocab_from_gene_metadata
from tahoeflow.errors import InputError
from tahoeflow.merge.cells import merge_cells
from tahoeflow.merge.gene_stats import merge_gene_stats
from tahoeflow.merge.pseudobulk import merge_pseudobulk


@pytest.fixture(scope="module")
def merged(small_demo, tmp_path_factory):
    root, _ = small_demo
    out = tmp_path_factory.mktemp("merge")
    gm = pq.read_table(root / "metadata/gene_metadata.parquet")
    vocab = vocab_from_gene_metadata(gm)
    doses = sample_doses(pq.read_table(root / "metadata/sample_metadata.parquet").to_pandas(), "s")
    shards = plan_shards([0, 1], 250, 600)  # 3 row-range shards per file, the last one to the end
    assert [s.name for s in shards][:3] == ["00000-0000", "00000-0001", "00000-0002"]
    paths = {"cells": [], "genes": [], "pb": []}
    Xs = []
    for s in shards:
        ls = load_shard(
            root / f"data/train-{s.file_index:05d}-of-00002.parquet",
            s,
            vocab,
            doses,
            Filters(min_genes=10),
        )
        Xs.append(ls.X)
        c, g, p = summarize(ls, vocab)
        for key, table in zip(("cells", "genes", "pb"), (c, g, p), strict=True):
            path = out / f"{s.name}.{key}.parquet"
            tio.write_parquet(table, path)
            paths[key].append(path)
    n = sum(X.shape[0] for X in Xs)
    genes = merge_gene_stats(paths["genes"], gm, n).to_pandas()
    merge_cells(paths["cells"], out / "cells.parquet", out / "qc.csv")
    counts, groups = merge_pseudobulk(paths["pb"], out / "cells.parquet")
    paths["cells_merged"] = out / "cells.parquet"
    return (
        vocab,
        sp.vstack(Xs).tocsr(),
        genes,
        pd.read_parquet(out / "cells.parquet"),
        counts.to_pandas(),
        groups.to_pandas(),
        paths,
    )


def test_gene_stats_merge_exactly(merged):
    vocab, X, genes, *_ = merged
    _, whole = shard_stats(X, vocab.is_mito)
    for col in ("n_cells", "sum_log", "sumsq_log", "sum_norm", "sumsq_norm"):
        np.testing.assert_allclose(genes[col].to_numpy(), whole[col], rtol=1e-12, atol=1e-9)
    from tahoeflow.cells.normalize import log_normalize

    L = log_normalize(X).toarray()
    np.testing.assert_allclose(genes["mean_log"], L.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(genes["var_log"], L.var(axis=0, ddof=1), rtol=1e-6, atol=1e-10)


def test_cells_keep_order_and_delta_mean_matches_pandas(merged):
    *_, cells, _, _, _ = merged
    assert cells["cell_id"].is_unique
    ctrl = cells[cells["is_control"]].groupby(["cell_line_id", "plate"])["mean_log_norm"].mean()
    expected = (
        cells["mean_log_norm"]
        - ctrl.reindex(pd.MultiIndex.from_frame(cells[["cell_line_id", "plate"]])).to_numpy()
    )
    has = cells["control_level"] == "plate"
    np.testing.assert_allclose(cells.loc[has, "delta_mean"], expected[has], rtol=1e-12)
    assert has.all()  # every line has controls on the plate in this demo


def test_pseudobulk_equals_dense_group_sums(merged):
    vocab, X, _, cells, counts, groups, _ = merged
    key = cells["sample"] + "|" + cells["cell_line_id"]
    for g in key.unique()[:5]:
        dense = np.asarray(X[np.flatnonzero(key == g)].sum(axis=0)).ravel()
        s, line = g.split("|")
        sub = counts[(counts["sample"] == s) & (counts["cell_line_id"] == line)]
        np.testing.assert_allclose(sub["count"], dense[vocab.lookup[sub["token_id"]]])
        row = groups[(groups["sample"] == s) & (groups["cell_line_id"] == line)].iloc[0]
        assert row["n_cells"] == (key == g).sum() and row["total_counts"] == pytest.approx(
            dense.sum()
        )


def test_pseudobulk_merge_streams_to_the_same_table(merged, tmp_path):
    """Against pandas (concatenate everything, group, sum, sort): the default merge, and running
    sums in many small steps (shards cut into row chunks, added in reverse, min_rows tiny)."""
    *_, counts, _, paths = merged
    keys = ["sample", "cell_line_id", "token_id"]
    ref = (
        pd.concat([pq.read_table(p).to_pandas() for p in paths["pb"]])
        .groupby(keys, as_index=False)["count"]
        .sum()
        .sort_values(keys)
        .reset_index(drop=True)
    )
    pd.testing.assert_frame_equal(counts, ref)
    chunks = []
    for i, p in enumerate(paths["pb"]):
        t = pq.read_table(p)
        for j, lo in enumerate(range(0, t.num_rows, 700)):
            out = tmp_path / f"pb{i}_{j}.parquet"
            pq.write_table(t.slice(lo, 700), out)
            chunks.append(out)
    assert len(chunks) > 5
    streamed, _ = merge_pseudobulk(chunks[::-1], paths["cells_merged"], min_rows=1000)
    pd.testing.assert_frame_equal(streamed.to_pandas(), ref)


def test_pseudobulk_groups_equal_pandas_groupby(merged):
    *_, cells, _, groups, paths = merged
    ref = cells.groupby(["sample", "cell_line_id"], as_index=False, sort=True).agg(
        plate=("plate", "first"),
        drug=("drug", "first"),
        dose_uM=("dose_uM", "first"),
        moa_fine=("moa_fine", "first"),
        is_control=("is_control", "first"),
        n_cells=("total_counts", "size"),
        total_counts=("total_counts", "sum"),
    )
    pd.testing.assert_frame_equal(groups, ref, check_exact=False, rtol=1e-12)


def test_pseudobulk_merge_rejects_unpackable_rows(merged, tmp_path):
    *_, paths = merged
    t = pq.read_table(paths["pb"][0]).slice(0, 10).to_pandas()
    t.loc[3, "token_id"] = 1 << 17
    bad = tmp_path / "bad.parquet"
    t.to_parquet(bad)
    with pytest.raises(InputError, match=r"bad\.parquet.*token_id outside"):
        merge_pseudobulk([paths["pb"][0], bad], paths["cells_merged"])
    t.loc[3, "token_id"] = 5
    t.loc[4, "sample"] = None
    t.to_parquet(bad)
    with pytest.raises(InputError, match=r"bad\.parquet.*null sample"):
        merge_pseudobulk([bad], paths["cells_merged"])
    t.loc[4, "sample"] = "not-a-sample"
    t.to_parquet(bad)
    with pytest.raises(InputError, match=r"bad\.parquet.*'not-a-sample' is not in the merged"):
        merge_pseudobulk([bad], paths["cells_merged"])


def test_delta_mean_falls_back_to_the_cell_line_then_null(tmp_path):
    from tahoeflow.merge.cells import add_delta_mean, control_means

    cells = pd.DataFrame(
        {
            "cell_line_id": ["A", "A", "B", "C"],
            "plate": ["p1", "p2", "p1", "p1"],
            "mean_log_norm": [1.0, 2.0, 3.0, 4.0],
        }
    )
    sums = pd.DataFrame(
        {"cell_line_id": ["A", "B"], "plate": ["p1", "p2"], "sum": [1.0, 6.0], "count": [2, 3]}
    )
    out = add_delta_mean(cells, *control_means(sums))
    assert out["control_level"].tolist() == ["plate", "cell_line", "cell_line", "none"]
    np.testing.assert_allclose(out["delta_mean"].to_numpy()[:3], [0.5, 1.5, 1.0])
    assert np.isnan(out["delta_mean"].iloc[3])


def test_duplicated_cell_ids_across_shards_are_an_error(merged, tmp_path):
    *_, paths = merged
    first = paths["cells"][0]
    with pytest.raises(InputError, match="also appears in"):
        merge_cells([first, paths["cells"][1], first], tmp_path / "c.parquet", tmp_path / "q.csv")
    assert not (tmp_path / "c.parquet").exists()


def test_a_corrupt_shard_output_is_one_input_error_naming_it(tmp_path):
    import pyarrow as pa

    from tahoeflow import io as tio
    from tahoeflow.errors import InputError
    from tahoeflow.merge.gene_stats import merge_gene_stats

    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"x": [1, 2, 3]}), good)
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(good.read_bytes()[:20])
    for read in (tio.read_table, tio.parquet_file, tio.read_schema):
        with pytest.raises(InputError, match=rf"^{bad}: not a readable Parquet file"):
            read(bad)
    with pytest.raises(FileNotFoundError):
        tio.read_table(tmp_path / "absent.parquet")
    with pytest.raises(InputError, match="bad.parquet"):
        merge_gene_stats([bad, good], pa.table({"token_id": [3]}), n_obs=3)
