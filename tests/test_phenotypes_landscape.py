"""Drug-response landscape: sensitivity matrices, signatures, MoA nearest-neighbour accuracy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tahoeflow.phenotypes import landscape as ls


def _signatures(n_per_moa=(4, 4, 3), n_genes=200, shared=True, seed=0):
    rng = np.random.default_rng(seed)
    rows, moa = [], {}
    for m, k in enumerate(n_per_moa):
        centre = rng.normal(0, 1, n_genes)
        for j in range(k):
            name = f"drug{m}_{j}"
            noise = rng.normal(0, 0.3 if shared else 1.0, n_genes)
            rows.append((centre if shared else 0) + noise)
            moa[name] = f"moa{m}"
    idx = list(moa)
    return pd.DataFrame(np.array(rows), index=idx), pd.Series(moa)


def test_moa_nn_accuracy_finds_shared_signatures_and_its_baseline():
    sig, moa = _signatures()
    r = ls.moa_nn_accuracy(sig, moa, n_permutations=1000, seed=0)
    assert r["moa_nn_accuracy"] == 1.0 and r["n_drugs"] == 11 and r["n_moas"] == 3
    # exact baseline: P(a permuted label equals its neighbour's) = sum n_g (n_g - 1) / n (n - 1)
    expect = (4 * 3 + 4 * 3 + 3 * 2) / (11 * 10)
    assert r["permutation_mean"] == pytest.approx(expect, abs=0.02)
    assert r["p_value"] == pytest.approx(1 / 1001)
    # signatures unrelated to the MoA: accuracy near the baseline, not significant
    sig, moa = _signatures(n_per_moa=(10, 10, 10), shared=False, seed=3)
    r = ls.moa_nn_accuracy(sig, moa, n_permutations=1000, seed=0)
    assert abs(r["moa_nn_accuracy"] - r["permutation_mean"]) < 0.25 and r["p_value"] > 0.05


def test_moa_nn_accuracy_leaves_out_unclear_and_singletons_and_skips_one_moa():
    sig, moa = _signatures(n_per_moa=(3, 3, 1, 2))
    moa[moa == "moa3"] = "unclear"
    r = ls.moa_nn_accuracy(sig, moa, n_permutations=10)
    assert (r["n_drugs"], r["n_moas"], r["n_signatures"]) == (6, 2, 9)
    moa[moa == "moa1"] = "unclear"
    r = ls.moa_nn_accuracy(sig, moa, n_permutations=10)
    assert "moa_nn_accuracy" not in r and "2 MoAs are needed" in r["skipped"]
    with pytest.raises(ValueError):
        ls.moa_nn_accuracy(sig, moa, n_permutations=0)


def test_drug_signatures_average_contrasts_with_missing_genes_as_zero():
    top = pd.DataFrame({
        "drug": ["A ", "A ", "A", "B"], "dose_uM": [0.5, 0.5, 5.0, 5.0],
        "cell_line_id": ["L1", "L1", "L2", "L1"], "plate": ["p1"] * 4,
        "gene": [1, 2, 1, 2], "logFC": [1.0, -2.0, 3.0, 4.0],
    })  # fmt: skip
    s = ls.drug_signatures(top)
    assert s.loc["A", 1] == 2.0 and s.loc["A", 2] == -1.0  # gene 2 absent from (A, 5uM): 0
    assert s.loc["B", 1] == 0.0 and s.loc["B", 2] == 4.0
    d = ls.drug_signatures(top, "drug_dose")
    assert list(d.index) == ["A|0.5", "A|5", "B|5"] and d.loc["A|0.5", 2] == -2.0
    with pytest.raises(ValueError, match="none of the columns"):
        ls.drug_signatures(top.rename(columns={"logFC": "x"}))


@pytest.mark.parametrize("by", ["drug", "drug_dose"])
def test_signatures_streamed_from_the_file_equal_the_in_memory_ones(tmp_path, by):
    """Read a few rows at a time (contrasts, keys and genes spread over many batches, NaN
    logFCs, drug names with spaces, values over 16 orders of magnitude), the signatures are
    drug_signatures of the whole table to the bit."""
    rng = np.random.default_rng(3)
    n = 4000
    top = pd.DataFrame({
        "drug": rng.choice(["A ", "A", "B", "C d", "E"], n), "dose_uM": rng.choice([0.05, 0.5, 5.0], n),
        "cell_line_id": rng.choice(["L1", "L2", "L3"], n), "plate": rng.choice(["p1", "p2"], n),
        "gene": rng.integers(3, 60, n), "logFC": rng.normal(size=n) * 10.0 ** rng.integers(-8, 8, n),
    })  # fmt: skip
    top.loc[rng.choice(n, 40, replace=False), "logFC"] = np.nan
    top.loc[top["drug"] == "E", "logFC"] = np.nan  # a key without any value: a row of zeros
    path = tmp_path / "top.parquet"
    top.to_parquet(path, row_group_size=700)
    want = ls.drug_signatures(top, by)
    got = ls.drug_signatures_from_parquet(path, by, batch_rows=333)
    assert list(got.index) == list(want.index) and list(got.columns) == list(want.columns)
    assert (got.index.name, got.columns.name) == ("key", "gene")
    assert np.array_equal(got.to_numpy(), want.to_numpy())  # pandas' compensated sums, exactly
    # and its memory layout, on which BLAS's rounding depends: the same PCA, bit for bit
    assert got.to_numpy().flags.f_contiguous == want.to_numpy().flags.f_contiguous
    assert np.array_equal(ls.pca_coords(got)[1], ls.pca_coords(want)[1])
    assert len(want) == (4 if by == "drug" else 12) and not got.loc[
        got.index.str.startswith("E")
    ].any(axis=None)
    top.head(0).to_parquet(tmp_path / "empty.parquet")
    assert ls.drug_signatures_from_parquet(tmp_path / "empty.parquet", by).empty
    top.rename(columns={"logFC": "x"}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="none of the columns"):
        ls.drug_signatures_from_parquet(tmp_path / "bad.parquet", by)


def test_pooled_sensitivity_heatmap_and_moa_map(tmp_path):
    sens = pd.DataFrame({
        "level": ["plate", "pooled", "pooled", "pooled", "pooled", "pooled", "pooled"],
        "drug": ["A", "A", "B", "C", "A", "B", "C"], "dose_uM": [5.0] * 7,
        "cell_line_id": ["L1", "L1", "L1", "L1", "L2", "L2", "L2"],
        "log2fc": [9.0, -2.0, -1.9, 1.0, 0.1, None, 0.0],
    })  # fmt: skip
    p = ls.pooled_sensitivity(sens, "log2fc")
    assert (
        len(p) == 5
        and p.loc[(p["drug"] == "A") & (p["cell_line_id"] == "L1"), "value"].item() == -2.0
    )
    (M,) = ls.heatmap_matrices(p).values()
    assert M.shape == (2, 3) and np.isnan(M.loc["L2", "B"])
    # A and B (similar columns) end up adjacent in the clustered order
    order = list(M.columns)
    assert abs(order.index("A") - order.index("B")) == 1
    dm = pd.DataFrame({"drug": ["A", "B "], "moa-fine": ["x", "y"]})
    assert ls.moa_map(dm, "moa-fine", ["A ", "B", "C"]).tolist() == ["x", "y", "unknown"]
    out = tmp_path / "moa.png"
    ls.plot_moa_distributions(p, pd.Series({"A": "x", "B": "x", "C": "x"}), str(out))
    assert out.stat().st_size > 1000  # a figure saying why (one MoA), not a crash
    ls.plot_moa_distributions(p, ls.moa_map(dm, "moa-fine", ["A", "B", "C"]), str(out))
    ls.plot_heatmaps(ls.heatmap_matrices(p), str(tmp_path / "h.png"), None)
    assert (tmp_path / "h.png").stat().st_size > 1000


def test_umap_of_fewer_than_ten_drugs_is_skipped_with_its_reason():
    from tahoeflow.phenotypes.landscape import umap_coords

    sig = pd.DataFrame(np.random.default_rng(0).normal(size=(9, 20)))
    coords, why = umap_coords(sig)
    assert coords is None and "9 signatures" in why
