"""Bounded readers of the merged long pseudobulk: the streamed pseudobulk h5ad and the per-gene
models' target counts, against the in-memory implementations they replace."""

from __future__ import annotations

import hashlib

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from tahoeflow.errors import InputError
from tahoeflow.export.h5ad import pseudobulk_to_anndata, write_h5ad
from tahoeflow.export.pseudobulk_h5ad import write_pseudobulk_h5ad
from tahoeflow.merge.conditions import condition_table, pseudobulk_matrix
from tahoeflow.merge.pseudobulk import write_pseudobulk
from tahoeflow.pergene.targets import target_counts

LINES = ["L0", "L1", "L2", "L3"]
LONG = pa.schema(
    [("sample", pa.string()), ("cell_line_id", pa.string()), ("token_id", pa.int64()),
     ("count", pa.float64())]
)  # fmt: skip


def _tables(seed=0, n_samples=9, n_genes=30, density=0.3):
    """A merge-layout long table (one row per non-zero group x gene), its groups (sorted by
    sample, line; one group without any row) and a gene table (gene 0 in no row)."""
    rng = np.random.default_rng(seed)
    samples = [f"s{i:02d}" for i in range(n_samples)]
    keys = [(s, ln) for s in samples for ln in LINES if rng.random() < 0.8]
    groups = pd.DataFrame(keys, columns=["sample", "cell_line_id"])
    groups["plate"] = "p1"
    groups["drug"] = rng.choice(["DMSO_TF", "A", "B"], len(groups))
    groups["dose_uM"] = rng.choice([0.1, 1.0], len(groups))
    groups["moa_fine"] = "m"
    groups["is_control"] = groups["drug"] == "DMSO_TF"
    groups["n_cells"] = rng.integers(1, 60, len(groups)).astype(np.int64)
    tokens = rng.permutation(np.arange(100, 100 + n_genes)).astype(np.int64)
    genes = pd.DataFrame(
        {
            "token_id": tokens,
            "ensembl_id": [f"E{t}" for t in tokens],
            "gene_symbol": [f"G{t}" for t in tokens],
        }
    )
    dense = rng.integers(1, 500, (len(groups), n_genes)) * (
        rng.random((len(groups), n_genes)) < density
    )
    dense[:, 0] = 0  # a gene absent from every group
    dense[len(groups) // 2] = 0  # a group without counts
    r, c = np.nonzero(dense)
    long = pd.DataFrame(
        {
            "sample": groups["sample"].to_numpy()[r],
            "cell_line_id": groups["cell_line_id"].to_numpy()[r],
            "token_id": tokens[c],
            "count": dense[r, c].astype(np.float64),
        }
    ).sort_values(["sample", "token_id"], kind="stable")
    groups["total_counts"] = dense.sum(axis=1).astype(np.float64)
    return long.reset_index(drop=True), groups, genes


def _write_long(long: pd.DataFrame, path, row_group_rows=7) -> None:
    table = pa.Table.from_pandas(long, schema=LONG, preserve_index=False)
    write_pseudobulk(table, path, row_group_rows)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("pb")
    long, groups, genes = _tables()
    _write_long(long, d / "long.parquet")
    ref = d / "ref.h5ad"
    write_h5ad(pseudobulk_to_anndata(long, groups, genes), ref)
    return d, long, groups, genes, ref


@pytest.mark.parametrize(
    ("block_nnz", "stream_rows"), [(1, 1), (5, 3), (37, 1000), (1 << 22, 1 << 16)]
)
def test_streamed_h5ad_equals_the_in_memory_one(case, block_nnz, stream_rows):
    d, long, groups, genes, ref = case
    out = d / f"s_{block_nnz}_{stream_rows}.h5ad"
    info = write_pseudobulk_h5ad(
        d / "long.parquet", groups, genes, out, block_nnz=block_nnz, stream_rows=stream_rows
    )
    assert info["nnz"] == len(long) and info["n_obs"] == len(groups)
    assert (info["blocks"] > 1) == (block_nnz < len(long))
    a, b = ad.read_h5ad(ref), ad.read_h5ad(out)
    assert sp.issparse(b.X) and b.X.format == "csr" and b.X.dtype == np.float32
    for attr in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(getattr(b.X, attr), getattr(a.X, attr))
        assert getattr(b.X, attr).dtype == getattr(a.X, attr).dtype
    pd.testing.assert_frame_equal(b.obs, a.obs)
    pd.testing.assert_frame_equal(b.var, a.var)
    assert dict(b.layers) == dict(a.layers) == {} and dict(b.uns) == dict(a.uns) == {}
    assert list(b.obsm) == list(a.obsm) == []
    # independent of both writers: the dense group x gene sums
    dense = np.zeros((len(groups), len(genes)))
    key = groups["sample"] + "|" + groups["cell_line_id"]
    rows = pd.Index(key).get_indexer(long["sample"] + "|" + long["cell_line_id"])
    cols = pd.Index(genes["token_id"]).get_indexer(long["token_id"])
    dense[rows, cols] = long["count"]
    np.testing.assert_array_equal(b.X.toarray(), dense)
    assert (dense[:, 0] == 0).all() and (dense.sum(axis=1) == 0).any()
    # the same file bytes as anndata's one-piece write, whatever the block size
    assert _sha(out) == _sha(ref)


def test_streamed_h5ad_of_an_empty_long_table(tmp_path):
    long, groups, genes = _tables()
    empty = long.iloc[:0]
    _write_long(empty, tmp_path / "long.parquet")
    write_h5ad(pseudobulk_to_anndata(empty, groups, genes), tmp_path / "ref.h5ad")
    info = write_pseudobulk_h5ad(tmp_path / "long.parquet", groups, genes, tmp_path / "s.h5ad")
    assert info["nnz"] == 0
    b = ad.read_h5ad(tmp_path / "s.h5ad")
    assert b.shape == (len(groups), len(genes)) and b.X.nnz == 0
    assert _sha(tmp_path / "s.h5ad") == _sha(tmp_path / "ref.h5ad")


def _fails(tmp_path, long, groups, genes, match, path_name="long.parquet"):
    src = tmp_path / "long.parquet"
    if long is not None:
        _write_long(long, src)
    out = tmp_path / "out.h5ad"
    with pytest.raises(InputError, match=match) as e:
        write_pseudobulk_h5ad(src, groups, genes, out, block_nnz=4, stream_rows=2,
                              groups_path="groups.parquet", genes_path="genes.parquet")  # fmt: skip
    assert path_name in str(e.value)
    assert not out.exists() and not list(tmp_path.glob(".out.h5ad.*"))


def test_streamed_h5ad_bad_input_names_the_file(tmp_path):
    long, groups, genes = _tables()
    bad = long.copy()
    bad.loc[3, "sample"] = "s99"
    _fails(tmp_path, bad, groups, genes, r"long\.parquet, row \d+: group 's99\|L\d'")
    bad = long.copy()
    bad.loc[5, "token_id"] = 7
    _fails(tmp_path, bad, groups, genes, r"row \d+: token_id 7 is not in the gene table")
    dup = pd.concat([long, long.iloc[[4]]]).sort_values(["sample", "token_id"], kind="stable")
    _fails(tmp_path, dup, groups, genes, "repeated")
    shuffled = groups.sample(frac=1.0, random_state=1).reset_index(drop=True)
    _fails(tmp_path, long, shuffled, genes, "sorted by cell line, sample, token")
    _fails(tmp_path, long, groups.drop(columns="sample"), genes, "missing column", "groups.parquet")
    pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "long.parquet")
    _fails(tmp_path, None, groups, genes, "missing column")
    (tmp_path / "long.parquet").write_bytes(b"not parquet")
    _fails(tmp_path, None, groups, genes, "not a readable Parquet file")


# --- per-gene targets -------------------------------------------------------------------------


def _drugs():
    return pd.DataFrame({"drug": ["A", "B"], "moa-fine": ["m1", "m2"], "targets": ["T1", "T1,T2"]})


@pytest.mark.parametrize("batch_rows", [1, 7, 1 << 20])
def test_target_counts_give_the_same_conditions_as_the_whole_table(tmp_path, batch_rows):
    long, groups, genes = _tables(seed=3)
    _write_long(long, tmp_path / "long.parquet")
    tokens = genes["token_id"].to_numpy()
    cols = np.array([0, 4, 9, 17])  # gene 0 has no counts anywhere
    names = [f"G{t}" for t in tokens[cols]]
    old = condition_table(
        pseudobulk_matrix(long, groups, tokens), groups, _drugs(), cols, names, "DMSO_TF", 2
    )
    m = target_counts(
        tmp_path / "long.parquet", groups, tokens, tokens[cols], batch_rows=batch_rows
    )
    assert m.shape == (len(groups), cols.size + 1)
    np.testing.assert_array_equal(np.asarray(m.sum(axis=1)).ravel(), groups["total_counts"])
    new = condition_table(m, groups, _drugs(), np.arange(cols.size), names, "DMSO_TF", 2)
    for a, b in zip(old, new, strict=True):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert (new[2][names[0]] == 0).all() and len(new[0]) > 5


def test_target_counts_bad_input_names_the_file(tmp_path):
    long, groups, genes = _tables(seed=3)
    tokens = genes["token_id"].to_numpy()
    src = tmp_path / "long.parquet"
    bad = long.copy()
    bad.loc[2, "cell_line_id"] = "L9"
    _write_long(bad, src)
    with pytest.raises(InputError, match=r"long\.parquet, row \d+: group 's\d+\|L9' is not in"):
        target_counts(src, groups, tokens, tokens[:2], batch_rows=3)
    bad = long.copy()
    bad.loc[6, "token_id"] = 1
    _write_long(bad, src)
    with pytest.raises(InputError, match=r"long\.parquet, row \d+: token_id 1 is not in"):
        target_counts(src, groups, tokens, tokens[:2])
    pq.write_table(pa.table({"sample": ["s00"]}), src)
    with pytest.raises(InputError, match=r"long\.parquet: missing column\(s\) cell_line_id"):
        target_counts(src, groups, tokens, tokens[:2])
