"""The streamed model sample equals stratified_sample applied in memory to each side of the
split, over batch sizes; its PCs are the embeddings of the sampled cells; bad input names the file."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tahoeflow import io as tio
from tahoeflow.errors import ArgumentError, InputError
from tahoeflow.models import sample_file as sf
from tahoeflow.models.features import make_split
from tahoeflow.models.sampling import stratified_sample

N = 3000


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """3,000 cells of 7 lines (one of 4 cells, one with null lines), a random 25% split, PCs."""
    tmp = tmp_path_factory.mktemp("sample")
    rng = np.random.default_rng(11)
    lines = np.array([f"CVCL_{i:04d}" for i in range(6)], dtype=object)
    line = lines[rng.choice(6, N, p=[0.4, 0.25, 0.15, 0.1, 0.06, 0.04])]
    line[rng.choice(N, 4, replace=False)] = "CVCL_RARE"
    line[rng.choice(N, 9, replace=False)] = None
    cells = pd.DataFrame(
        {
            "cell_id": [f"c{i:05d}" for i in range(N)],
            "drug": rng.choice(["a", "b", "DMSO_TF"], N),
            "dose_uM": rng.choice([0.05, 0.5, 5.0], N),
            "cell_line_id": line,
            "is_control": rng.random(N) < 0.1,
            "n_genes": rng.integers(10, 100, N).astype(np.int32),
            "delta_mean": np.where(rng.random(N) < 0.05, np.nan, rng.normal(size=N)),
        }
    )
    cells_path = tmp / "cells.parquet"
    tio.write_parquet(pa.Table.from_pandas(cells, preserve_index=False), cells_path,
                      row_group_size=700)  # fmt: skip
    split = make_split(cells, "random", 0.25, 0)
    split_path = tmp / "split.parquet"
    tio.write_parquet(pa.Table.from_pandas(split, preserve_index=False), split_path)
    emb = pd.DataFrame(rng.normal(size=(N, 5)).astype(np.float32),
                       columns=[f"pc{i}" for i in range(1, 6)])  # fmt: skip
    emb["cell_id"] = cells["cell_id"].to_numpy()[::-1]  # another order than the cells'
    emb["cluster"] = np.int32(1)
    emb_path = tmp / "emb.parquet"
    tio.write_parquet(pa.Table.from_pandas(emb, preserve_index=False), emb_path,
                      row_group_size=500)  # fmt: skip
    return cells_path, split_path, emb_path, cells, split, emb


def reference(cells, split, max_train, max_test, seed):
    """The in-memory sample: stratified_sample of each side's rows, rows in table order."""
    keep = []
    for side, cap in (("train", max_train), ("test", max_test)):
        rows = np.flatnonzero((split["split"] == side).to_numpy())
        if cap is None:
            keep.append(rows)
        else:
            keep.append(rows[stratified_sample(cells["cell_line_id"].to_numpy()[rows], cap, seed)])
    keep = np.sort(np.concatenate(keep))
    out = cells.iloc[keep].reset_index(drop=True)
    out["split"] = split["split"].to_numpy()[keep]
    return out


def test_random_doubles_drawn_in_chunks_are_one_draw():
    one = np.random.default_rng(3).random(10_000)
    g = np.random.default_rng(3)
    assert np.array_equal(one, np.concatenate([g.random(k) for k in (0, 1, 999, 7, 8993)]))


@pytest.mark.parametrize("batch", [1, 97, 700, 1 << 20])
@pytest.mark.parametrize(
    "max_train, max_test, seed",
    [(500, 100, 0), (1000, None, 3), (7, 3, 1), (5000, 5000, 0), (2, 1, 2)],
)
def test_streamed_sample_is_the_in_memory_sample(files, tmp_path, batch, max_train, max_test, seed):
    cells_path, split_path, _, cells, split, _ = files
    out = tmp_path / "s.parquet"
    info = sf.sample_cells_file(cells_path, split_path, out, max_train, max_test, seed,
                                batch_rows=batch)  # fmt: skip
    got_cells, got_split, meta = sf.read_sample(out)
    want = reference(cells, split, max_train, max_test, seed)
    pd.testing.assert_frame_equal(got_cells.assign(split=got_split["split"]), want)
    assert meta == info
    n_train, n_test = (split["split"] == "train").sum(), (split["split"] == "test").sum()
    assert (info["n_train_total"], info["n_test_total"]) == (n_train, n_test) == (2250, 750)
    assert info["n_train_sampled"] == min(n_train, max_train)
    assert info["n_test_sampled"] == (n_test if max_test is None else min(n_test, max_test))
    assert (got_split["split"] == "train").sum() == info["n_train_sampled"]
    if max_train == 500:  # the 4-cell line keeps its share, under one cell off
        rare = got_cells["cell_line_id"] == "CVCL_RARE"
        assert rare[got_split["split"].eq("train").to_numpy()].sum() <= 1


def test_no_cap_binding_keeps_every_row_and_the_cells_dtypes(files, tmp_path):
    cells_path, split_path, _, cells, split, _ = files
    out = tmp_path / "s.parquet"
    info = sf.sample_cells_file(cells_path, split_path, out, None, None, 0, batch_rows=512)
    got_cells, got_split, _ = sf.read_sample(out)
    pd.testing.assert_frame_equal(got_cells, pd.read_parquet(cells_path))
    pd.testing.assert_frame_equal(got_split, split)
    assert sf.sample_metrics(info) == {}
    info = sf.sample_cells_file(cells_path, split_path, out, 2250, 750, 0)
    assert sf.sample_metrics(info) == {}
    m = sf.sample_metrics(sf.sample_cells_file(cells_path, split_path, out, 100, None, 5))
    assert (m["n_train_sampled"], m["n_train_total"], m["n_test_sampled"]) == (100, 2250, 750)
    assert "models.max_train_cells 100" in m["sample"] and "seed 5" in m["sample"]


def test_sampled_pcs_are_the_sampled_cells_embeddings(files, tmp_path):
    cells_path, split_path, emb_path, _, _, emb = files
    sample = tmp_path / "s.parquet"
    sf.sample_cells_file(cells_path, split_path, sample, 300, 50, 0, batch_rows=333)
    out = tmp_path / "pcs.parquet"
    n = sf.sample_embeddings_file(sample, emb_path, out, batch_rows=128)
    got = pd.read_parquet(out)
    ids = set(pd.read_parquet(sample)["cell_id"])
    want = emb.loc[emb["cell_id"].isin(ids), [f"pc{i}" for i in range(1, 6)] + ["cell_id"]]
    pd.testing.assert_frame_equal(got, want.reset_index(drop=True))
    assert n == len(got) == 350


def test_bad_input_names_the_file(files, tmp_path):
    cells_path, split_path, _, cells, split, _ = files
    out = tmp_path / "s.parquet"
    with pytest.raises(InputError, match=r"cells.parquet: missing column\(s\) nope"):
        sf.sample_cells_file(cells_path, split_path, out, 10, 10, 0, stratify_by="nope")
    bad = tmp_path / "bad_split.parquet"
    swapped = split.copy()
    swapped.loc[[5, 6], "cell_id"] = swapped.loc[[6, 5], "cell_id"].to_numpy()
    tio.write_parquet(pa.Table.from_pandas(swapped, preserve_index=False), bad)
    with pytest.raises(InputError, match=r"bad_split.parquet, row 5: cell_id 'c00006' where"):
        sf.sample_cells_file(cells_path, bad, out, 10, 10, 0, batch_rows=4)
    tio.write_parquet(pa.Table.from_pandas(split.iloc[:-1], preserve_index=False), bad)
    with pytest.raises(InputError, match=r"bad_split.parquet: 2999 rows, the cells table"):
        sf.sample_cells_file(cells_path, bad, out, 10, 10, 0)
    labels = split.assign(split=split["split"].where(split.index != 2001, "val"))
    tio.write_parquet(pa.Table.from_pandas(labels, preserve_index=False), bad)
    with pytest.raises(InputError, match=r"bad_split.parquet, row 2001: split must be"):
        sf.sample_cells_file(cells_path, bad, out, 10, 10, 0, batch_rows=1000)
    tio.write_parquet(pa.Table.from_pandas(split[["cell_id"]], preserve_index=False), bad)
    with pytest.raises(InputError, match=r"bad_split.parquet: missing column\(s\) split"):
        sf.sample_cells_file(cells_path, bad, out, 10, 10, 0)
    with pytest.raises(ArgumentError, match="max_test_cells"):
        sf.sample_cells_file(cells_path, split_path, out, 10, 0, 0)
    with pytest.raises(ArgumentError, match="max_train_cells"):
        sf.sample_cells_file(cells_path, split_path, out, 1, 10, 0)
    assert not out.exists()  # nothing written on error
    with pytest.raises(InputError, match="is not a model sample"):
        sf.read_sample(cells_path)
    assert pq.ParquetFile(cells_path).metadata.num_rows == N


@pytest.mark.workflow
def test_use_pcs_adds_the_sampled_pcs_to_the_forests(tmp_path):
    """With models.rf.use_pcs the forests read the sample's PCs (a model_sample_pcs job),
    never the whole embeddings table; without it that job is not in the DAG."""
    from test_orchestration import rule_graph, small_config

    off = rule_graph(tmp_path / "off", small_config())
    on = rule_graph(tmp_path / "on", small_config(**{"models.rf.use_pcs": True}))
    assert "model_sample_pcs" not in off
    assert on["model_sample_pcs"] == {"rf_classifier", "baselines"}
    assert {"model_sample_pcs"} <= {r for r, out in on.items() if "rf_classifier" in out}
    assert "rf_classifier" not in on["embeddings"] and "baselines" not in on["embeddings"]
    assert on["model_sample"] >= {"model_sample_pcs", "features", "ridge", "split_comparison"}


@pytest.mark.parametrize("batch", [1, 299, 700, 701, 5000])
def test_read_batches_are_iter_batches_read_one_row_group_at_a_time(files, batch):
    from tahoeflow.io import read_batches

    f = pq.ParquetFile(files[0])
    got = list(read_batches(f, ["cell_id", "n_genes"], batch))
    want = list(f.iter_batches(batch_size=batch, columns=["cell_id", "n_genes"]))
    assert [b.num_rows for b in got] == [b.num_rows for b in want]
    assert pa.Table.from_batches(got).equals(pa.Table.from_batches(want))
