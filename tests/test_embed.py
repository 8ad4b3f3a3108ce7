"""Tests for tahoeflow.embed (hvg, pca, kmeans) against scanpy/sklearn on simulated shards."""

from __future__ import annotations

import warnings

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from sklearn.datasets import make_blobs
from sklearn.decomposition import PCA, TruncatedSVD
from sklearn.metrics import adjusted_rand_score

from tahoeflow.cells import normalize as pp
from tahoeflow.embed.hvg import highly_variable_genes_from_stats, hvg_indices
from tahoeflow.embed.kmeans import kmeans
from tahoeflow.embed.pca import (
    combine_gram,
    gram_partial,
    pca_from_gram,
    pca_result_from_npz,
    pca_result_to_npz,
    project,
)
from tahoeflow.errors import ArgumentError, ConfigError, config_keys

N_CELLS = 3000
N_GENES = 3000
N_SHARDS = 4
N_TOP = 500


def simulate_counts(n_cells: int, n_genes: int, seed: int) -> sp.csr_matrix:
    """Negative-binomial counts: heterogeneous gene means, 4 cell types, varying depth.

    The last 20 genes are never expressed, to exercise the zero-mean handling.
    """
    rng = np.random.default_rng(seed)
    base = np.exp(rng.normal(-3.0, 1.6, size=n_genes))
    n_types = 4
    cell_type = rng.integers(0, n_types, size=n_cells)
    lfc = np.where(
        rng.random((n_types, n_genes)) < 0.1, rng.normal(0.0, 1.5, (n_types, n_genes)), 0.0
    )
    size_factor = np.exp(rng.normal(0.0, 0.35, size=n_cells))
    mu = size_factor[:, None] * base[None, :] * np.exp(lfc[cell_type])
    r = 2.0
    counts = rng.negative_binomial(r, r / (r + mu)).astype(np.float32)
    counts[:, -20:] = 0
    X = sp.csr_matrix(counts)
    X.eliminate_zeros()
    return X


def shard_bounds(n: int, k: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, k + 1).astype(int)
    return list(zip(edges[:-1], edges[1:], strict=True))


def shard_gene_stats(counts: sp.csr_matrix) -> dict[str, np.ndarray | int]:
    """What one shard job writes: per-gene sums over its cells (the workflow's stage a)."""
    norm = pp.normalize_total(counts)
    logd = pp.log1p(norm)
    d = counts.shape[1]

    def colsum(values: np.ndarray) -> np.ndarray:
        return np.bincount(norm.indices, weights=values, minlength=d)

    return {
        "n_obs": counts.shape[0],
        "sum_norm": colsum(norm.data),
        "sumsq_norm": colsum(norm.data**2),
        "sum_log": colsum(logd.data),
        "sumsq_log": colsum(logd.data**2),
        "n_cells": np.bincount(counts.indices[counts.data != 0], minlength=d),
    }


def merge_stats(parts: list[dict[str, np.ndarray | int]]) -> dict[str, np.ndarray | int]:
    merged = dict(parts[0])
    for part in parts[1:]:
        for key, value in part.items():
            merged[key] = merged[key] + value
    return merged


@pytest.fixture(scope="module")
def data():
    counts = simulate_counts(N_CELLS, N_GENES, seed=7)
    shards = [counts[a:b] for a, b in shard_bounds(N_CELLS, N_SHARDS)]
    stats = merge_stats([shard_gene_stats(s) for s in shards])
    return counts, shards, stats


def scanpy_hvg(counts: sp.csr_matrix, flavor: str, n_top: int, dtype=np.float64) -> pd.DataFrame:
    adata = ad.AnnData(counts.astype(dtype))
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sc.pp.highly_variable_genes(adata, flavor=flavor, n_top_genes=n_top, inplace=False)


def ours_hvg(stats, flavor: str, n_top: int, **kw) -> pd.DataFrame:
    return highly_variable_genes_from_stats(
        stats["n_obs"],
        stats["sum_norm"],
        stats["sumsq_norm"],
        sum_log=stats["sum_log"],
        sumsq_log=stats["sumsq_log"],
        n_top=n_top,
        flavor=flavor,
        **kw,
    )


# ------------------------------------------------------------------------------------------
# the simulation is realistic enough to mean something
# ------------------------------------------------------------------------------------------


def test_simulation_shape_and_density(data):
    counts, shards, stats = data
    density = counts.nnz / (counts.shape[0] * counts.shape[1])
    assert 0.05 <= density <= 0.15
    assert len(shards) == N_SHARDS
    assert stats["n_obs"] == N_CELLS
    assert np.array_equal(stats["n_cells"], np.diff(counts.tocsc().indptr))
    assert np.count_nonzero(stats["sum_norm"] == 0) >= 20


# ------------------------------------------------------------------------------------------
# HVG selection
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flavor", ["seurat", "cell_ranger"])
def test_hvg_matches_scanpy(data, flavor):
    counts, _, stats = data
    ref = scanpy_hvg(counts, flavor, N_TOP)
    ours = ours_hvg(stats, flavor, N_TOP)
    assert list(ours.columns) == ["means", "dispersions", "dispersions_norm", "highly_variable"]
    assert ours["highly_variable"].dtype == bool
    assert ours["highly_variable"].sum() == N_TOP
    assert np.array_equal(ours["highly_variable"].to_numpy(), ref["highly_variable"].to_numpy())
    for col in ("means", "dispersions", "dispersions_norm"):
        np.testing.assert_allclose(
            ours[col].to_numpy(), ref[col].to_numpy(), rtol=1e-9, atol=1e-12, equal_nan=True
        )
    idx = hvg_indices(ours, N_TOP)
    assert idx.dtype == np.int64
    assert np.array_equal(idx, np.flatnonzero(ref["highly_variable"].to_numpy()))


@pytest.mark.parametrize("flavor", ["seurat", "cell_ranger"])
def test_hvg_matches_scanpy_on_float32_counts(data, flavor):
    """The usual scanpy pipeline keeps float32 data; the selection is still identical."""
    counts, _, stats = data
    ref = scanpy_hvg(counts, flavor, N_TOP, dtype=np.float32)
    ours = ours_hvg(stats, flavor, N_TOP)
    assert np.array_equal(ours["highly_variable"].to_numpy(), ref["highly_variable"].to_numpy())


@pytest.mark.parametrize("flavor", ["seurat", "cell_ranger"])
def test_hvg_single_gene_bin_and_small_data_match_scanpy(flavor):
    """One gene far above the others sits alone in its seurat bin (normalised dispersion 1)."""
    counts = simulate_counts(400, 300, seed=3).toarray()
    rng = np.random.default_rng(0)
    counts[:, 5] = rng.poisson(3000.0, size=400)
    counts = sp.csr_matrix(counts)
    stats = shard_gene_stats(counts)
    ref = scanpy_hvg(counts, flavor, 40)
    ours = ours_hvg(stats, flavor, 40)
    assert np.array_equal(ours["highly_variable"].to_numpy(), ref["highly_variable"].to_numpy())
    np.testing.assert_allclose(
        ours["dispersions_norm"].to_numpy(),
        ref["dispersions_norm"].to_numpy(),
        rtol=1e-9,
        equal_nan=True,
    )
    if flavor == "seurat":
        assert ours["dispersions_norm"].iloc[5] == 1.0


def test_hvg_n_bins_is_used(data):
    _, _, stats = data
    a = ours_hvg(stats, "seurat", N_TOP, n_bins=20)
    b = ours_hvg(stats, "seurat", N_TOP, n_bins=5)
    assert not np.array_equal(a["dispersions_norm"].to_numpy(), b["dispersions_norm"].to_numpy())


def test_hvg_var_names_index(data):
    _, _, stats = data
    names = [f"g{i}" for i in range(N_GENES)]
    df = ours_hvg(stats, "seurat", N_TOP, var_names=names)
    assert list(df.index[:3]) == ["g0", "g1", "g2"]


def test_hvg_indices_breaks_ties_deterministically():
    df = pd.DataFrame(
        {
            "dispersions_norm": [0.5, 2.0, 1.0, 1.0, np.nan, 1.0],
            "highly_variable": [False, True, True, True, False, True],
        }
    )
    assert hvg_indices(df, 3).tolist() == [1, 2, 3]
    assert hvg_indices(df, 10).tolist() == [1, 2, 3, 5]


def test_hvg_argument_errors(data):
    _, _, stats = data
    n_expressed = int(np.count_nonzero(stats["sum_norm"] > 0))
    # more than the expressed genes: all of them, with a warning (tests/test_config_hardening.py)
    with pytest.warns(UserWarning, match="argument 'n_top': .* genes asked for"):
        assert ours_hvg(stats, "seurat", n_expressed + 1)["highly_variable"].sum() == n_expressed
    with pytest.raises(ArgumentError, match="argument 'n_top': must be a positive integer"):
        ours_hvg(stats, "seurat", 0)
    with pytest.raises(ArgumentError, match="argument 'flavor'"):
        ours_hvg(stats, "seurat_v3", N_TOP)
    with pytest.raises(ArgumentError, match="argument 'n_bins'"):
        highly_variable_genes_from_stats(
            stats["n_obs"], stats["sum_norm"], stats["sumsq_norm"], n_top=N_TOP, n_bins=0
        )
    with pytest.raises(ArgumentError, match="argument 'n_top'"):
        hvg_indices(pd.DataFrame({"highly_variable": [True], "dispersions_norm": [1.0]}), 0)
    # the workflow script names the config key
    with pytest.raises(ConfigError, match="config key 'embed.hvg.flavor'"):
        with config_keys(flavor="embed.hvg.flavor"):
            ours_hvg(stats, "seurat_v3", N_TOP)
    with pytest.raises(ValueError, match="sum_log"):
        highly_variable_genes_from_stats(
            stats["n_obs"], stats["sum_norm"], stats["sumsq_norm"], flavor="cell_ranger"
        )


# ------------------------------------------------------------------------------------------
# Gram matrix, PCA, projection
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hvg_data(data):
    counts, shards, stats = data
    genes = hvg_indices(ours_hvg(stats, "seurat", N_TOP), N_TOP)
    shard_X = [pp.log_normalize(s)[:, genes].tocsr().astype(np.float32) for s in shards]
    full_X = sp.vstack(shard_X, format="csr")
    return shard_X, full_X


def relerr(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


@pytest.mark.parametrize("method", ["auto", "dense_blocks", "sparse"])
def test_gram_partial_methods_exact(hvg_data, method):
    shard_X, _ = hvg_data
    X = shard_X[0]
    dense = X.toarray().astype(np.float64)
    gram, colsum, n = gram_partial(X, method=method, block_rows=97)
    assert gram.dtype == np.float64 and gram.shape == (N_TOP, N_TOP)
    assert gram.flags.c_contiguous
    assert np.array_equal(gram, gram.T)
    assert n == X.shape[0]
    assert relerr(gram, dense.T @ dense) < 1e-12
    assert relerr(colsum, dense.sum(axis=0)) < 1e-12


def test_gram_sparse_kernel_is_scipys_product_bit_for_bit(hvg_data):
    """The sparse method adds each entry's products in scipy's order: the same bits as
    ``(X^T X).toarray()`` in float64; unsorted or duplicated indices are summed first."""
    shard_X, _ = hvg_data
    for X in shard_X[:2]:
        X64 = X.astype(np.float64)
        ref = (X64.T @ X64).toarray()
        gram, _, _ = gram_partial(X, method="sparse")
        assert np.array_equal(gram, ref)
    X = shard_X[0].astype(np.float64)
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    order = np.lexsort((-X.indices, rows))  # each row's indices descending
    idx, val = X.indices[order], X.data[order]
    # and row 0's first entry stored twice, as two halves
    idx, val = np.r_[idx[:1], idx], np.r_[val[:1] / 2, val[:1] / 2, val[1:]]
    ptr = X.indptr.copy()
    ptr[1:] += 1
    messy = sp.csr_matrix((val, idx, ptr), shape=X.shape)
    assert not messy.has_canonical_format and X.indptr[1] >= 2
    dense = X.toarray()
    assert relerr(gram_partial(messy, method="sparse")[0], dense.T @ dense) < 1e-13
    assert messy.nnz == X.nnz + 1  # the caller's matrix is left as it was


def test_combine_gram_equals_full_matrix(hvg_data):
    shard_X, full_X = hvg_data
    parts = (gram_partial(X) for X in shard_X)  # a generator: consumed one at a time
    gram, colsum, n = combine_gram(parts)
    dense = full_X.toarray().astype(np.float64)
    assert n == N_CELLS
    assert relerr(gram, dense.T @ dense) < 1e-10
    assert relerr(colsum, dense.sum(axis=0)) < 1e-10
    with pytest.raises(ValueError):
        combine_gram([])


@pytest.fixture(scope="module")
def combined(hvg_data):
    shard_X, _ = hvg_data
    return combine_gram(gram_partial(X) for X in shard_X)


def test_pca_matches_sklearn_full(hvg_data, combined):
    shard_X, full_X = hvg_data
    k = 20
    dense = full_X.toarray().astype(np.float64)
    ref = PCA(n_components=k, svd_solver="full").fit(dense)
    res = pca_from_gram(*combined, k)
    assert res.center and res.components.shape == (k, N_TOP)
    np.testing.assert_allclose(
        res.explained_variance_ratio, ref.explained_variance_ratio_, rtol=1e-6
    )
    np.testing.assert_allclose(res.explained_variance, ref.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(res.singular_values, ref.singular_values_, rtol=1e-6)
    np.testing.assert_allclose(res.mean, ref.mean_, rtol=1e-10, atol=1e-12)
    # Same sign convention as sklearn, so the components agree without flipping...
    assert relerr(res.components, ref.components_) < 1e-6
    # ...and the documented rule holds: the largest |loading| of each component is positive.
    rows = np.arange(k)
    assert np.all(res.components[rows, np.argmax(np.abs(res.components), axis=1)] > 0)
    assert np.all(np.diff(res.explained_variance) <= 0)

    per_shard = np.vstack([project(X, res) for X in shard_X])
    assert per_shard.dtype == np.float32 and per_shard.shape == (N_CELLS, k)
    assert np.array_equal(per_shard, project(full_X, res))
    assert relerr(per_shard, ref.transform(dense)) < 1e-6


def test_uncentred_matches_truncated_svd(hvg_data, combined):
    shard_X, full_X = hvg_data
    k = 10
    X64 = full_X.astype(np.float64)
    svd = TruncatedSVD(n_components=k, algorithm="arpack", random_state=0)
    ref_emb = svd.fit_transform(X64)
    res = pca_from_gram(*combined, k, center=False)
    assert not res.center and np.all(res.mean == 0)
    np.testing.assert_allclose(res.singular_values, svd.singular_values_, rtol=1e-8)
    np.testing.assert_allclose(res.explained_variance, svd.explained_variance_, rtol=1e-6)
    np.testing.assert_allclose(
        res.explained_variance_ratio, svd.explained_variance_ratio_, rtol=1e-6
    )
    total = np.var(X64.toarray(), axis=0).sum()
    np.testing.assert_allclose(res.explained_variance_ratio, res.explained_variance / total)
    assert relerr(res.components, svd.components_) < 1e-6
    per_shard = np.vstack([project(X, res) for X in shard_X])
    assert relerr(per_shard, ref_emb) < 1e-6
    assert relerr(per_shard, svd.transform(X64)) < 1e-6


def test_pca_argument_errors(combined):
    gram, colsum, n = combined
    with pytest.raises(
        ArgumentError, match=f"'n_components': {N_TOP + 1} is more than the {N_TOP} features"
    ):
        pca_from_gram(gram, colsum, n, N_TOP + 1)
    with pytest.raises(ArgumentError, match="'n_components': 6 is more than the 5 cells"):
        pca_from_gram(gram, colsum, 5, 6)
    with pytest.raises(ArgumentError, match="'n_components': must be a positive integer"):
        pca_from_gram(gram, colsum, n, 0)
    with pytest.raises(ConfigError, match="config key 'embed.n_components': 6 is more than"):
        with config_keys(n_components="embed.n_components"):
            pca_from_gram(gram, colsum, 5, 6)
    pca_from_gram(gram, colsum, n, N_TOP)  # k == d is allowed


def test_project_rejects_wrong_width(hvg_data, combined):
    shard_X, _ = hvg_data
    res = pca_from_gram(*combined, 5)
    with pytest.raises(ValueError, match="columns"):
        project(shard_X[0][:, :10], res)


def test_pca_npz_round_trip(tmp_path, combined):
    res = pca_from_gram(*combined, 7, center=False)
    path = tmp_path / "sub" / "pca.npz"
    pca_result_to_npz(path, res)
    assert [p.name for p in path.parent.iterdir()] == ["pca.npz"]  # no temp file left
    back = pca_result_from_npz(path)
    assert back.center is False
    for name in ("components", "mean", "explained_variance", "explained_variance_ratio"):
        assert np.array_equal(getattr(back, name), getattr(res, name))
    assert np.array_equal(back.singular_values, res.singular_values)


# ------------------------------------------------------------------------------------------
# KMeans
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(
        n_samples=3000,
        centers=6,
        n_features=10,
        cluster_std=1.0,
        center_box=(-25, 25),
        random_state=11,
    )
    return X.astype(np.float32), y


@pytest.mark.parametrize(
    ("threshold", "expected"), [(200_000, "kmeans"), (3000, "minibatch_kmeans")]
)
def test_kmeans_recovers_blobs_and_is_deterministic(blobs, threshold, expected):
    X, y = blobs
    labels, centers, inertia, method = kmeans(
        X, 6, seed=0, minibatch_threshold=threshold, batch_size=512
    )
    assert method == expected
    assert labels.dtype == np.int32 and labels.shape == (3000,)
    assert centers.shape == (6, 10)
    assert inertia > 0
    assert adjusted_rand_score(y, labels) > 0.95
    again = kmeans(X, 6, seed=0, minibatch_threshold=threshold, batch_size=512)
    assert np.array_equal(labels, again[0])
    assert np.array_equal(centers, again[1])
    assert inertia == again[2]


def test_kmeans_argument_errors(blobs):
    X, _ = blobs
    with pytest.raises(ArgumentError, match="'n_clusters': must be between 1 and the 5 cells"):
        kmeans(X[:5], 6, seed=0)
    with pytest.raises(ArgumentError, match="'n_clusters': must be a positive integer"):
        kmeans(X, 0, seed=0)
    with pytest.raises(ArgumentError, match="'n_init'"):
        kmeans(X, 3, seed=0, n_init=0)
    with pytest.raises(ArgumentError, match="'n_init'"):
        kmeans(X, 3, seed=0, n_init="auto")
    with pytest.raises(ArgumentError, match="'batch_size'"):
        kmeans(X, 3, seed=0, batch_size=0, minibatch_threshold=1)
    with pytest.raises(ConfigError, match="config key 'embed.kmeans.n_clusters'"):
        with config_keys(n_clusters="embed.kmeans.n_clusters"):
            kmeans(X[:5], 6, seed=0)


@pytest.mark.parametrize(
    ("key", "bad"),
    [
        ("hvg.n_top", 0),
        ("hvg.flavor", "seurat_v3"),
        ("n_components", 0),
        ("n_components", 1.5),
        ("kmeans.n_clusters", 1),
        ("kmeans.n_init", 0),
        ("kmeans.batch_size", 0),
    ],
)
def test_embed_values_are_checked_at_parse_time(key, bad):
    import copy

    import yaml
    from conftest import REPO

    from tahoeflow.config import validate_config

    cfg = copy.deepcopy(yaml.safe_load((REPO / "config/config.yaml").read_text()))
    node = cfg.setdefault("embed", {})
    *parents, last = key.split(".")
    for name in parents:
        node = node.setdefault(name, {})
    node[last] = bad
    with pytest.raises(ConfigError, match=f"config key 'embed.{key}'"):
        validate_config(cfg, REPO / "config/schema.yaml")


# --- the embeddings table: KMeans on all cells, or on a sample with streamed assignment -------
def _projection_files(tmp_path, n_files=3, n_per=1000, d=5, k=4, seed=0):
    """Blobs split over projection files, and a merged-cells table in the same order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tahoeflow.embed.table import META

    X, _ = make_blobs(n_samples=n_files * n_per, centers=k, n_features=d, random_state=seed)
    X = X.astype(np.float32)
    ids = np.array([f"c{i:06d}" for i in range(len(X))])
    paths = []
    for f in range(n_files):
        sl = slice(f * n_per, (f + 1) * n_per)
        t = pa.table({"cell_id": ids[sl], **{f"pc{j + 1}": X[sl, j] for j in range(d)}})
        paths.append(tmp_path / f"proj{f}.parquet")
        pq.write_table(t, paths[-1])
    cells = {c: ids if c == "cell_id" else np.array([f"{c}{i % 7}" for i in range(len(X))])
             for c in META}  # fmt: skip
    cells["dose_uM"] = np.full(len(X), 0.5)
    pq.write_table(pa.table(cells), tmp_path / "cells.parquet", row_group_size=700)
    return paths, tmp_path / "cells.parquet", X


def test_embeddings_table_fitted_on_a_sample_assigns_every_cell_as_sklearn_would(tmp_path):
    import pyarrow.parquet as pq
    from sklearn.cluster import KMeans

    from tahoeflow.embed.table import sample_rows, write_embeddings

    paths, cells, X = _projection_files(tmp_path)
    kw = dict(n_clusters=4, seed=3, minibatch_threshold=10**6, batch_size=256, n_init=1)
    full = write_embeddings(paths, cells, tmp_path / "all.parquet", max_fit_cells=None, **kw)
    same = write_embeddings(paths, cells, tmp_path / "cap.parquet", max_fit_cells=3000, **kw)
    assert "fit_sample" not in full and full == same  # at or below the cap: a fit on all cells
    assert (tmp_path / "all.parquet").read_bytes() == (tmp_path / "cap.parquet").read_bytes()

    info = write_embeddings(paths, cells, tmp_path / "s.parquet", max_fit_cells=400, **kw)
    assert info["fit_sample"] == {"n_cells": 400, "seed": 3} and info["n_cells"] == 3000
    # the reference: sklearn fitted on the same sampled rows, then predicting every cell
    rows = sample_rows(3000, 400, 3)
    assert rows.size == np.unique(rows).size == 400
    ref = KMeans(n_clusters=4, n_init=1, random_state=3, algorithm="lloyd").fit(X[rows])
    got = pq.read_table(tmp_path / "s.parquet")
    whole = pq.read_table(tmp_path / "all.parquet")
    np.testing.assert_array_equal(got.column("cluster").to_numpy(), ref.predict(X))
    d2 = ((X[:, None, :].astype(np.float64) - ref.cluster_centers_[None]) ** 2).sum(-1).min(1)
    assert info["inertia"] == pytest.approx(d2.sum(), rel=1e-5)
    # the same cells, PCs and metadata as the whole-table path, written one file at a time
    assert got.drop_columns("cluster").equals(whole.drop_columns("cluster"))
    assert pq.ParquetFile(tmp_path / "s.parquet").metadata.num_row_groups == 3
    # well separated blobs: the sampled fit finds the same clusters
    assert adjusted_rand_score(whole.column("cluster"), got.column("cluster")) > 0.99


def test_embeddings_table_refuses_cells_out_of_step_with_the_projections(tmp_path):
    import pyarrow.parquet as pq

    from tahoeflow.embed.table import write_embeddings

    paths, cells, _ = _projection_files(tmp_path)
    kw = dict(n_clusters=4, seed=0, minibatch_threshold=10**6, batch_size=256, n_init=1)
    short = tmp_path / "short.parquet"
    pq.write_table(pq.read_table(cells).slice(0, 2500), short)
    with pytest.raises(ArgumentError, match="fewer rows"):
        write_embeddings(paths, short, tmp_path / "o.parquet", max_fit_cells=100, **kw)
    assert not (tmp_path / "o.parquet").exists()
    shuffled = tmp_path / "shuffled.parquet"
    t = pq.read_table(cells)
    pq.write_table(t.take(np.r_[1, 0, 2 : t.num_rows]), shuffled)
    for cap in (None, 100):
        with pytest.raises(RuntimeError, match="not in the same order"):
            write_embeddings(paths, shuffled, tmp_path / "o.parquet", max_fit_cells=cap, **kw)
        assert not (tmp_path / "o.parquet").exists()
