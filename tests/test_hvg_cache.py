"""The Gram pass's HVG-count cache: the projection pass rebuilds exactly the Gram pass's matrix."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from tahoeflow.cells import normalize as pp
from tahoeflow.embed.hvg_cache import hvg_cache_writer, read_hvg_cache
from tahoeflow.embed.pca import PCAResult, project
from tahoeflow.errors import InputError


def counts_matrix(n, g, seed, dtype=np.float32):
    """UMI-like counts: mostly small integers, a few above the kernels' 64-entry table, a few
    non-integers (normalised input), and empty cells."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, g, density=0.08, random_state=seed, format="csr", dtype=np.float64)
    X.data = rng.poisson(1.5, X.nnz) + 1.0
    X.data[rng.random(X.nnz) < 0.02] = rng.integers(64, 5000, 1).astype(float)[0]
    X.data[rng.random(X.nnz) < 0.01] = 2.5
    X = sp.csr_matrix(X.toarray()[np.r_[0:n - 3]], dtype=dtype)  # fmt: skip
    return sp.vstack([X, sp.csr_matrix((3, g), dtype=dtype)], format="csr")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_selected_counts_and_totals_give_log_normalize_columns_bit_for_bit(dtype):
    X = counts_matrix(400, 900, 1, dtype)
    cols = np.sort(np.random.default_rng(2).choice(900, 150, replace=False))
    counts, totals = pp.select_columns(X, cols)
    ref = pp.log_normalize_columns(X, cols)
    got = pp.log_normalize_selected(counts, totals)
    assert counts.dtype == dtype
    np.testing.assert_array_equal(counts.toarray(), X[:, cols].toarray())
    np.testing.assert_array_equal(totals, np.asarray(X.sum(axis=1), dtype=np.float64).ravel())
    for a in ("indptr", "indices", "data"):
        assert np.array_equal(getattr(got, a), getattr(ref, a)), a
    assert got.nnz > 1000 and (totals == 0).sum() == 3


def test_select_columns_rejects_unsorted_or_out_of_range_columns():
    X = counts_matrix(10, 20, 3)
    with pytest.raises(ValueError, match="strictly increasing"):
        pp.select_columns(X, np.array([3, 1]))
    with pytest.raises(ValueError, match="below 20"):
        pp.select_columns(X, np.array([0, 20]))
    with pytest.raises(ValueError, match="totals"):
        pp.log_normalize_selected(X, np.ones(3))


def shards(n_hvg=120, dtype=np.float32):
    out = []
    for i, n in enumerate([300, 0, 57]):
        X = counts_matrix(n + 3, 500, 10 + i, dtype)[:n]
        cols = np.sort(np.random.default_rng(0).choice(500, n_hvg, replace=False))
        counts, totals = pp.select_columns(X, cols)
        out.append((X, cols, counts, totals, np.array([f"s{i}_c{j}" for j in range(n)], object)))
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cache_round_trip_gives_the_same_matrix_and_projection_per_shard(tmp_path, dtype):
    path = tmp_path / "b0.parquet"
    parts = shards(dtype=dtype)
    with hvg_cache_writer(path, 120) as w:
        for _, _, counts, totals, ids in parts:
            w.write(counts, totals, ids)
    assert pq.ParquetFile(path).num_row_groups == 3
    rng = np.random.default_rng(5)
    pca = PCAResult(
        components=rng.normal(size=(4, 120)), mean=rng.random(120),
        explained_variance=np.ones(4), explained_variance_ratio=np.full(4, 0.1),
        singular_values=np.ones(4), center=True,
    )  # fmt: skip
    back = list(read_hvg_cache(path, 120))
    assert len(back) == 3
    for (X, cols, counts, totals, ids), (c2, t2, i2) in zip(parts, back, strict=True):
        assert c2.dtype == dtype and c2.shape == counts.shape
        np.testing.assert_array_equal(c2.toarray(), counts.toarray())
        np.testing.assert_array_equal(t2, totals)
        assert list(i2) == list(ids)
        direct = project(pp.log_normalize_columns(X, cols), pca)
        np.testing.assert_array_equal(project(pp.log_normalize_selected(c2, t2), pca), direct)


def test_cache_errors_name_the_file_and_a_failed_write_leaves_nothing(tmp_path):
    path = tmp_path / "b0.parquet"
    (X, cols, counts, totals, ids), *_ = shards()
    with hvg_cache_writer(path, 120) as w:
        w.write(counts, totals, ids)
    with pytest.raises(InputError, match=r"b0\.parquet.*cache for 120 HVGs; the PCA has 119"):
        next(read_hvg_cache(path, 119))
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"x": [1]}), other)
    with pytest.raises(InputError, match=r"other\.parquet.*not an HVG cache"):
        next(read_hvg_cache(other, 120))
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet")
    with pytest.raises(InputError, match=r"junk\.parquet.*not a readable HVG cache"):
        next(read_hvg_cache(junk, 120))
    failed = tmp_path / "failed.parquet"
    with pytest.raises(ValueError, match="ids"), hvg_cache_writer(failed, 120) as w:
        w.write(counts, totals, ids)
        w.write(counts, totals, ids[:-1])
    assert not failed.exists() and not list(tmp_path.glob(".failed*"))
    with pytest.raises(ValueError, match="float64"), hvg_cache_writer(failed, 120) as w:
        w.write(counts, totals, ids)
        w.write(counts.astype(np.float64), totals, ids)
    assert not failed.exists()
