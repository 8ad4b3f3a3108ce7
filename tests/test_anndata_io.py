"""AnnData export of embeddings and pseudobulk: read back equal to the inputs; scanpy reads it."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tahoeflow.export.h5ad import embeddings_to_anndata, pseudobulk_to_anndata, write_h5ad

K, N, D = 6, 240, 30


def embed_tables(seed: int = 0):
    rng = np.random.default_rng(seed)
    pcs = rng.normal(size=(N, K)).astype(np.float32)
    emb = pd.DataFrame(pcs, columns=[f"pc{i}" for i in range(1, K + 1)])
    emb["cell_id"] = [f"c{i:04d}" for i in range(N)]
    emb["sample"] = rng.choice(["s1", "s2", "s3"], N)
    emb["plate"] = "plate1"
    emb["drug"] = rng.choice(["DMSO_TF", "A", "B"], N)
    emb["dose_uM"] = rng.choice([0.0, 0.5, 5.0], N)
    emb["cell_line_id"] = rng.choice(["CVCL_1", "CVCL_2"], N)
    emb["moa_fine"] = "unclear"
    emb["cluster"] = rng.integers(0, 12, N).astype(np.int32)
    ratio = np.sort(rng.uniform(0.01, 0.1, K))[::-1]
    variance = pd.DataFrame({"pc": [f"pc{i}" for i in range(1, K + 1)],
                             "explained_variance_ratio": ratio})  # fmt: skip
    comps = pd.DataFrame(rng.normal(size=(D, K)), columns=[f"pc{i}" for i in range(1, K + 1)])
    comps.insert(0, "mean", rng.uniform(0, 2, D))
    comps.insert(0, "gene_symbol", [f"G{j}" for j in range(D)])
    comps.insert(0, "ensembl_id", [f"ENSG{j:05d}" for j in range(D)])
    comps.insert(0, "token_id", np.arange(3, 3 + D, dtype=np.int64))
    kmeans = {"method": "kmeans", "n_clusters": 12, "inertia": 123.5, "n_cells": N}
    return emb, variance, comps, kmeans


@pytest.mark.parametrize("compression", ["gzip", None])
def test_embeddings_round_trip(tmp_path, compression):
    emb, variance, comps, kmeans = embed_tables()
    ev = np.linspace(3, 1, K)
    a = embeddings_to_anndata(emb, variance, comps, kmeans, explained_variance=ev)
    path = tmp_path / "embeddings.h5ad"
    write_h5ad(a, path, compression=compression)
    assert [p.name for p in tmp_path.iterdir()] == ["embeddings.h5ad"]  # no temporary left
    b = ad.read_h5ad(path)
    assert b.shape == (N, 0) and b.X is None
    assert b.obsm["X_pca"].dtype == np.float32
    np.testing.assert_array_equal(b.obsm["X_pca"], emb[[f"pc{i}" for i in range(1, K + 1)]])
    np.testing.assert_array_equal(b.obs_names, emb["cell_id"])
    assert b.obs.index.name == "cell_id"
    for col in ("sample", "plate", "drug", "cell_line_id", "moa_fine"):
        assert isinstance(b.obs[col].dtype, pd.CategoricalDtype)
        np.testing.assert_array_equal(b.obs[col].astype(str), emb[col])
    np.testing.assert_array_equal(b.obs["dose_uM"], emb["dose_uM"])
    assert list(b.obs["cluster"].cat.categories) == [str(i) for i in range(12)]
    np.testing.assert_array_equal(b.obs["cluster"].astype(int), emb["cluster"])
    pca = b.uns["pca"]
    np.testing.assert_array_equal(pca["variance_ratio"], variance["explained_variance_ratio"])
    np.testing.assert_array_equal(pca["variance"], ev)
    assert pca["components"].shape == (K, D)
    np.testing.assert_array_equal(
        pca["components"], comps[[f"pc{i}" for i in range(1, K + 1)]].to_numpy(np.float32).T
    )
    np.testing.assert_array_equal(pca["gene_ids"], comps["ensembl_id"])
    np.testing.assert_array_equal(pca["token_ids"], comps["token_id"])
    np.testing.assert_array_equal(pca["mean"], comps["mean"])
    assert b.uns["kmeans"]["n_clusters"] == 12 and b.uns["kmeans"]["method"] == "kmeans"


def test_scanpy_reads_and_uses_the_embedding(tmp_path):
    import scanpy as sc

    emb, variance, _, kmeans = embed_tables(1)
    path = tmp_path / "e.h5ad"
    write_h5ad(embeddings_to_anndata(emb, variance, None, kmeans, x="pcs"), path)
    a = sc.read_h5ad(path)
    assert a.shape == (N, K) and list(a.var_names) == [f"pc{i}" for i in range(1, K + 1)]
    np.testing.assert_array_equal(a.X, a.obsm["X_pca"])
    assert "components" not in a.uns["pca"] and "variance" not in a.uns["pca"]
    sc.pp.neighbors(a, n_neighbors=8, use_rep="X_pca", method="gauss", random_state=0)
    assert a.obsp["distances"].shape == (N, N)


def test_embedding_inputs_are_checked():
    emb, variance, comps, _ = embed_tables()
    with pytest.raises(ValueError, match="pca_variance lists 5 PCs, embeddings has 6"):
        embeddings_to_anndata(emb, variance.iloc[:5], None, None)
    with pytest.raises(ValueError, match="PC columns must be pc1..pc5"):
        embeddings_to_anndata(emb.drop(columns="pc3"), variance, None, None)
    dup = emb.copy()
    dup.loc[5, "cell_id"] = dup.loc[4, "cell_id"]
    with pytest.raises(ValueError, match="cell_id must be unique.*'c0004'"):
        embeddings_to_anndata(dup, variance, None, None)
    with pytest.raises(ValueError, match="components has 5 PCs"):
        embeddings_to_anndata(emb, variance, comps.drop(columns="pc6"), None)


def pb_tables():
    groups = pd.DataFrame(
        {
            "sample": ["s2", "s1", "s1"],
            "cell_line_id": ["L1", "L1", "L2"],
            "plate": ["p1", "p1", "p1"],
            "drug": ["A", "DMSO_TF", "DMSO_TF"],
            "dose_uM": [0.5, 0.0, 0.0],
            "moa_fine": ["x", "unclear", "unclear"],
            "is_control": [False, True, True],
            "n_cells": np.array([10, 20, 5], dtype=np.int64),
            "total_counts": [100.0, 90.0, 12.0],
        }
    )
    genes = pd.DataFrame(
        {"token_id": np.array([7, 3, 5, 9], dtype=np.int64),
         "ensembl_id": ["E7", "E3", "E5", "E3"], "gene_symbol": ["G7", "G3", "G5", "G3b"]}
    )  # fmt: skip
    counts = pd.DataFrame(
        {
            "sample": ["s1", "s1", "s1", "s2", "s2"],
            "cell_line_id": ["L1", "L1", "L2", "L1", "L1"],
            "token_id": np.array([3, 9, 5, 7, 3], dtype=np.int64),
            "count": [4.0, 86.0, 12.0, 99.0, 1.0],
        }
    )
    return counts, groups, genes


def test_pseudobulk_round_trip(tmp_path):
    counts, groups, genes = pb_tables()
    a = pseudobulk_to_anndata(counts, groups, genes)
    write_h5ad(a, tmp_path / "pb.h5ad")
    b = ad.read_h5ad(tmp_path / "pb.h5ad")
    assert list(b.obs_names) == ["s2|L1", "s1|L1", "s1|L2"]
    assert list(b.var_names) == ["E7", "E3", "E5", "E3-1"]  # gene-table order, made unique
    assert list(b.var["gene_symbol"]) == ["G7", "G3", "G5", "G3b"]
    assert list(b.var["token_id"]) == [7, 3, 5, 9]
    assert sp.issparse(b.X) and b.X.format == "csr" and b.X.dtype == np.float32
    expect = np.array([[99, 1, 0, 0], [0, 4, 0, 86], [0, 0, 12, 0]], dtype=np.float32)
    np.testing.assert_array_equal(b.X.toarray(), expect)
    for col in groups.columns:
        np.testing.assert_array_equal(b.obs[col].to_numpy().astype(groups[col].dtype), groups[col])
    np.testing.assert_array_equal(np.asarray(b.X.sum(axis=1)).ravel(), groups["total_counts"])


def test_pseudobulk_inputs_are_checked():
    counts, groups, genes = pb_tables()
    bad = counts.copy()
    bad.loc[0, "token_id"] = 4
    with pytest.raises(ValueError, match="token_id 4 not in genes"):
        pseudobulk_to_anndata(bad, groups, genes)
    bad = counts.copy()
    bad.loc[2, "sample"] = "s9"
    with pytest.raises(ValueError, match=r"group 's9\|L2' not in groups"):
        pseudobulk_to_anndata(bad, groups, genes)
    with pytest.raises(ValueError, match="repeated"):
        pseudobulk_to_anndata(counts, pd.concat([groups, groups.iloc[:1]]), genes)


def test_pseudobulk_from_a_summarized_h5ad_shard(tmp_path):
    """End to end: an h5ad shard -> summarize() pseudobulk -> AnnData equals the group sums."""
    from tahoeflow.sources.h5ad import h5ad_vocab
    from tahoeflow.sources.h5ad_shard import load_h5ad_shard

    rng = np.random.default_rng(4)
    n, g = 120, 25
    X = sp.random(n, g, density=0.4, format="csr", random_state=4, dtype=np.float32)
    X.data = np.ceil(X.data * 9)
    obs = pd.DataFrame({"drug": rng.choice(["DMSO", "A"], n), "line": rng.choice(["L1", "L2"], n)},
                       index=[f"c{i}" for i in range(n)])  # fmt: skip
    ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f"E{j}" for j in range(g)])).write_h5ad(
        tmp_path / "p.h5ad"
    )
    from tahoeflow.cells.summarize import Filters, summarize

    vocab, genes = h5ad_vocab(tmp_path / "p.h5ad")
    loaded = load_h5ad_shard(tmp_path / "p.h5ad", 0, None, {"drug": "drug", "cell_line": "line"},
                             "DMSO", filters=Filters(min_genes=0))  # fmt: skip
    _, _, pb = summarize(loaded, vocab)
    o = loaded.obs
    groups = (
        o.assign(total=np.asarray(loaded.X.sum(axis=1)).ravel())
        .groupby(["sample", "cell_line_id"], sort=True)
        .agg(plate=("plate", "first"), drug=("drug", "first"), dose_uM=("dose_uM", "first"),
             moa_fine=("moa_fine", "first"), is_control=("is_control", "first"),
             n_cells=("cell_id", "size"), total_counts=("total", "sum"))
        .reset_index()
    )  # fmt: skip
    a = pseudobulk_to_anndata(pb.to_pandas(), groups, genes)
    for i, (s, line) in enumerate(zip(groups["sample"], groups["cell_line_id"], strict=True)):
        rows = ((o["sample"] == s) & (o["cell_line_id"] == line)).to_numpy()
        np.testing.assert_array_equal(
            a.X[i].toarray().ravel(), np.asarray(loaded.X[rows].sum(axis=0)).ravel()
        )


def test_write_h5ad_is_atomic(tmp_path, monkeypatch):
    emb, variance, _, _ = embed_tables()
    a = embeddings_to_anndata(emb, variance)
    path = tmp_path / "out.h5ad"
    write_h5ad(a, path)
    before = path.read_bytes()

    def boom(self, filename, **kwargs):
        with open(filename, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", boom)
    with pytest.raises(OSError, match="No space left"):
        write_h5ad(a, path)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5ad"]
    with pytest.raises(ValueError, match="compression"):
        write_h5ad(a, tmp_path / "x.h5ad", compression="zstd")
