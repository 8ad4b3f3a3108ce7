"""Bounded work at atlas size: the models' stratified training sample
(models.max_train_cells), the embeddings CSV only up to embed.csv_max_cells, and report
figures drawn from aggregates or samples of the per-cell tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from test_models import parse, synth

from tahoeflow import io as tio
from tahoeflow.errors import ArgumentError, ConfigError
from tahoeflow.models.baselines import fit_classifier_baselines
from tahoeflow.models.classification import fit_rf_classifier
from tahoeflow.models.compare import split_comparison
from tahoeflow.models.features import make_split
from tahoeflow.models.regression import fit_rf_regressor_grid, fit_ridge
from tahoeflow.models.sampling import stratified_sample
from tahoeflow.plots import report as rp


# --------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("n", [1, 7, 100, 333, 999])
def test_stratified_sample_keeps_each_class_share_within_one_cell(n) -> None:
    rng = np.random.default_rng(1)
    sizes = np.array([500, 230, 151, 77, 30, 9, 2, 1])  # 1000 rows, very uneven classes
    labels = np.repeat([f"line{i}" for i in range(sizes.size)], sizes)[rng.permutation(1000)]
    pos = stratified_sample(labels, n, seed=3)
    assert pos.size == n and np.unique(pos).size == n and np.all(np.diff(pos) > 0)
    got = pd.Series(labels[pos]).value_counts().reindex([f"line{i}" for i in range(8)]).fillna(0)
    quota = n * sizes / sizes.sum()
    assert np.all(np.abs(got.to_numpy() - quota) < 1), (got.to_numpy(), quota)
    # deterministic for a seed, another seed draws other rows
    np.testing.assert_array_equal(stratified_sample(labels, n, seed=3), pos)
    if n >= 100:
        assert not np.array_equal(stratified_sample(labels, n, seed=4), pos)


def test_stratified_sample_returns_everything_at_or_above_the_size() -> None:
    labels = np.array(["a", "b", "a"])
    np.testing.assert_array_equal(stratified_sample(labels, 3), [0, 1, 2])
    np.testing.assert_array_equal(stratified_sample(labels, 10), [0, 1, 2])
    with pytest.raises(ArgumentError, match="argument 'n': must be an integer >= 0"):
        stratified_sample(labels, -1)


@pytest.fixture(scope="module")
def data():
    cells, _ = synth(n=1500)
    return cells, make_split(cells, "random", 0.2, seed=0)


def test_forest_trains_on_the_stratified_sample_and_says_so(data) -> None:
    cells, split = data
    res = fit_rf_classifier(cells, split, n_estimators=10, cv_folds=3, max_train_cells=300)
    m = res["metrics"]
    assert (m["n_train"], m["n_train_sampled"], m["n_train_total"], m["n_test"]) == (
        300, 300, 1200, 300,
    )  # fmt: skip
    assert "stratified by cell_line_id" in m["train_sample"]
    pred = res["predictions"]
    train_ids = pred.loc[pred["split"] == "train", "cell_id"]
    assert len(train_ids) == 300 and (pred["split"] == "test").sum() == 300
    # each line's share of the sample is within one cell of its share of the training split
    tr = cells.set_index("cell_id").loc[split.loc[split["split"] == "train", "cell_id"]]
    full = tr["cell_line_id"].value_counts()
    got = cells.set_index("cell_id").loc[train_ids, "cell_line_id"].value_counts()
    assert np.all(np.abs(got.reindex(full.index).to_numpy() - 300 * full / full.sum()) < 1)
    # the same sample (and forest) again for the seed
    again = fit_rf_classifier(cells, split, n_estimators=10, cv_folds=3, max_train_cells=300)
    pd.testing.assert_frame_equal(again["predictions"], pred)


def test_regressions_and_baselines_take_the_cap(data) -> None:
    cells, split = data
    ridge = fit_ridge(cells, split, cv_folds=3, max_train_cells=250).metrics
    assert (ridge["n_train"], ridge["n_train_sampled"], ridge["n_train_total"]) == (250, 250, 1200)
    rf = fit_rf_regressor_grid(
        cells, split, grid={"n_estimators": [5]}, cv_folds=2, max_train_cells=250
    )["metrics"]
    assert (rf["n_train"], rf["n_train_total"]) == (250, 1200)
    table = split_comparison(
        cells, {"random": split}, n_estimators=5, max_train_cells=250, cv_folds=0
    )
    assert table["n_train"].tolist() == [250, 250]
    # the baselines see the same sample as the forest: the same majority-class accuracy
    base = fit_classifier_baselines(cells, split, models=["majority_class"], cv_folds=0,
                                    max_train_cells=250)  # fmt: skip
    sub = fit_rf_classifier(cells, split, n_estimators=5, cv_folds=0, max_train_cells=250)
    train = sub["predictions"].query("split == 'train'")
    majority = train["y_true"].value_counts().max() / len(train)
    assert base.loc[0, "train_acc"] == pytest.approx(majority)
    with pytest.raises(ArgumentError, match="argument 'max_train_cells'"):
        fit_ridge(cells, split, max_train_cells=1)
    with pytest.raises(ConfigError, match="config key 'models.max_train_cells'"):
        parse("models.max_train_cells", 1)  # the workflow refuses it when it reads the config


def test_a_training_split_under_the_cap_gives_the_same_metrics_as_no_cap(data) -> None:
    cells, split = data
    dump = lambda m: json.dumps(m, sort_keys=True)  # noqa: E731
    for cap in (1200, 200_000):
        assert dump(fit_ridge(cells, split, cv_folds=3, max_train_cells=cap).metrics) == dump(
            fit_ridge(cells, split, cv_folds=3).metrics
        )
        a = fit_rf_classifier(cells, split, n_estimators=5, cv_folds=3, max_train_cells=cap)
        b = fit_rf_classifier(cells, split, n_estimators=5, cv_folds=3)
        assert dump(a["metrics"]) == dump(b["metrics"]) and "n_train_total" not in a["metrics"]
        pd.testing.assert_frame_equal(a["predictions"], b["predictions"])


# --------------------------------------------------------------------------- embeddings CSV
def _embeddings_like(n: int) -> pa.Table:
    rng = np.random.default_rng(0)
    drugs = np.array(["=SUM(A1)", "drug,1", 'a"b', "DMSO_TF"])
    return pa.table({
        "pc1": pa.array(rng.normal(size=n).astype(np.float32)),
        "pc2": pa.array(rng.normal(size=n).astype(np.float32)),
        "cell_id": pa.array([f"c{i}" for i in range(n)]),
        "drug": pa.array(drugs[rng.integers(0, 4, n)]).dictionary_encode(),
        "dose_uM": rng.choice([0.05, 0.5, 5.0], n),
        "cell_line_id": pa.array([f"CVCL_{i % 7}" for i in range(n)]),
        "cluster": pa.array(rng.integers(0, 5, n), pa.int32()),
    })  # fmt: skip


def test_embeddings_csv_streamed_from_parquet_is_byte_identical(tmp_path) -> None:
    table = _embeddings_like(2345)
    tio.write_csv_table(table, tmp_path / "whole.csv")  # what the embeddings rule wrote before
    tio.write_parquet(table, tmp_path / "e.parquet", row_group_size=500)
    assert tio.parquet_to_csv(tmp_path / "e.parquet", tmp_path / "streamed.csv") == 2345
    assert (tmp_path / "streamed.csv").read_bytes() == (tmp_path / "whole.csv").read_bytes()
    assert "'=SUM(A1)" in (tmp_path / "streamed.csv").read_text()


# --------------------------------------------------------------------------- report figures
def test_report_reads_samples_and_aggregates_of_per_cell_tables(tmp_path) -> None:
    table = _embeddings_like(5000).append_column(
        "n_genes", pa.array(np.random.default_rng(2).integers(200, 4000, 5000), pa.int32())
    )
    path = tmp_path / "cells.parquet"
    tio.write_parquet(table, path, row_group_size=700)
    whole = table.to_pandas()
    # at or below the cap: every row in file order (the figures are unchanged)
    pd.testing.assert_frame_equal(rp.parquet_sample(path, ["pc1", "cluster"], 5000),
                                  whole[["pc1", "cluster"]])  # fmt: skip
    s = rp.parquet_sample(path, ["cell_id", "pc1"], 300, seed=1)
    assert len(s) == 300 and s["cell_id"].is_unique
    idx = s["cell_id"].str[1:].astype(int).to_numpy()
    assert np.all(np.diff(idx) > 0)  # file order
    np.testing.assert_array_equal(s["pc1"].to_numpy(), whole["pc1"].to_numpy()[idx])
    pd.testing.assert_frame_equal(rp.parquet_sample(path, ["cell_id", "pc1"], 300, seed=1), s)
    # aggregates equal those of the whole column
    for col in ("drug", "cell_line_id"):
        got = rp.parquet_value_counts(path, col)
        want = whole[col].astype(str).value_counts()
        assert got.to_dict() == want.to_dict() and got.is_monotonic_decreasing
    values, counts = rp.parquet_int_counts(path, "n_genes")
    assert counts.sum() == 5000
    np.testing.assert_array_equal(np.repeat(values, counts), np.sort(whole["n_genes"]))
    for n in (5000, 4999):  # even and odd: the median of the repeated values
        v = whole["n_genes"].to_numpy()[:n]
        uv, c = np.unique(v, return_counts=True)
        assert rp._weighted_median(uv, c) == np.median(v)
    rp.genes_per_cell(values, tmp_path / "g.png", counts=counts)
    rp.top_counts(rp.parquet_value_counts(path, "drug"), tmp_path / "d.png", "d", aggregated=True)
    assert (tmp_path / "g.png").stat().st_size > 1000 and (tmp_path / "d.png").exists()


# --------------------------------------------------------------------------- workflow
@pytest.mark.workflow
def test_embeddings_csv_is_a_target_only_up_to_the_cap(tmp_path) -> None:
    from test_orchestration import planned, small_config

    cfg = small_config()
    assert cfg["source"]["files"] == "0:2"  # two demo files planned, one shard each
    n_cells = 2 * cfg["demo"]["cells_per_file"]
    at_cap = planned(tmp_path / "a", small_config(**{"embed.csv_max_cells": n_cells}))
    below = planned(tmp_path / "b", small_config(**{"embed.csv_max_cells": n_cells - 1}))
    assert at_cap.get("embeddings_csv") == 1 and "embeddings_csv" not in below
    assert below["embeddings"] == 1 and below["export_embeddings_h5ad"] == 1
    # the cells x PCs h5ad has its own cap (anndata writes it in one piece)
    h5_below = planned(tmp_path / "c", small_config(**{"embed.h5ad_max_cells": n_cells - 1}))
    assert "export_embeddings_h5ad" not in h5_below and h5_below["export_pseudobulk_h5ad"] == 1
    assert h5_below.get("embeddings_csv") == 1
