"""Tests for tahoeflow.de.updown: seed 004's up/down benchmark and its deterministic target."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tahoeflow.de import limma, updown
from tahoeflow.errors import InputError
from tahoeflow.multitest import bh_adjust

TINY_GRID = {
    "n_estimators": [20],
    "max_depth": [None, 4],
    "min_samples_leaf": [1],
    "min_samples_split": [2],
}


def _toptable(seed: int = 0, G: int = 500) -> pd.DataFrame:
    """A limma topTable from real eBayes output on random two-group fits."""
    rng = np.random.default_rng(seed)
    coef = rng.normal(0, 1.0, size=G)
    coef[: G // 10] *= 3
    sigma = np.sqrt(0.5 * 6 / rng.chisquare(6, size=G))
    fit = limma.LmFit(coef, np.full(G, np.sqrt(1 / 3 + 1 / 3)), sigma, np.full(G, 4.0))
    eb = limma.ebayes(fit)
    return pd.DataFrame(
        {
            "gene": [f"G{i}" for i in range(G)],
            "logFC": coef,
            "AveExpr": rng.normal(6, 2, size=G),
            "t": eb.t,
            "P.Value": eb.p_value,
            "adj.P.Val": bh_adjust(eb.p_value),
            "B": eb.lods,
        }
    )


@pytest.fixture(scope="module")
def both():
    return updown.run_both(_toptable(), seed=1, rf_grid=TINY_GRID, cv=3)


def test_detection_fires_for_logfc_and_t_but_not_b():
    df = _toptable()
    out = updown.detect_deterministic_target(df, updown.DEFAULT_FEATURES)
    assert out["separating"] == ["logFC", "t"]
    tab = out["per_feature"].set_index("feature")
    assert not tab.loc["B", "separable"] and not tab.loc["P.Value", "separable"]
    assert abs(tab.loc["logFC", "threshold"]) < 0.1
    s = out["statement"]
    assert "deterministic function of logFC" in s and "t" in s and "sign" in s
    red = updown.detect_deterministic_target(df, ["AveExpr", "P.Value", "adj.P.Val"])
    assert red["separating"] == [] and "not a trivial function" in red["statement"]


def test_full_features_near_perfect_reduced_near_chance(both):
    comp = both["comparison"].set_index("model")
    assert list(comp.index) == list(updown.MODEL_NAMES)
    assert (comp["test_accuracy_full"] >= 0.95).all(), comp
    assert comp.loc["Logistic Regression", "test_accuracy_full"] >= 0.99
    assert comp.loc["LASSO Logistic Regression", "cv_accuracy_mean_full"] >= 0.98
    # without logFC, t, B the remaining features are symmetric in the sign: ~ coin flip
    assert (comp["test_accuracy_reduced"] <= 0.7).all(), comp
    assert (comp["test_accuracy_full"] - comp["test_accuracy_reduced"] >= 0.25).all()
    assert both["features_reduced"] == ["AveExpr", "P.Value", "adj.P.Val"]
    assert both["detection"]["separating"] == ["logFC", "t"]


def test_lasso_and_forest_point_at_logfc(both):
    full = both["full"]
    coef = full["lasso_coef"].set_index("feature")["coef"].abs()
    assert coef.idxmax() in ("logFC", "t")
    assert coef[["logFC", "t"]].sum() > 5 * coef.drop(["logFC", "t"]).sum()
    # without t (the other sign carrier), logFC alone carries the LASSO model, as in seed 004
    no_t = [f for f in updown.DEFAULT_FEATURES if f != "t"]
    res = updown.run_benchmark(_toptable(), no_t, seed=1, rf_grid=TINY_GRID, cv=3)
    c = res["lasso_coef"].set_index("feature")["coef"].abs()
    assert c.idxmax() == "logFC" and c["logFC"] > 10 * c.drop("logFC").sum()
    imp = full["rf_importances"]
    assert imp.iloc[0]["feature"] in ("logFC", "t")
    assert imp["importance"].sum() == pytest.approx(1.0)
    assert set(full["rf_best_params"]) == {
        "n_estimators",
        "max_depth",
        "min_samples_leaf",
        "min_samples_split",
    }
    assert full["pca"].shape == (500, 3) and full["n_test"] == 100
    scores = full["scores"]
    assert list(scores.columns) == ["model", "test_accuracy", "cv_accuracy_mean", "cv_accuracy_std"]


def test_benchmark_is_reproducible_for_a_seed():
    df = _toptable(seed=3, G=200)
    a = updown.run_benchmark(df, ["logFC", "AveExpr"], seed=5, rf_grid=TINY_GRID, cv=3)
    b = updown.run_benchmark(df, ["logFC", "AveExpr"], seed=5, rf_grid=TINY_GRID, cv=3)
    pd.testing.assert_frame_equal(a["scores"], b["scores"])


def test_csv_tsv_parquet_and_sniffed_files_load_identically(tmp_path):
    df = _toptable(G=50)
    df.loc[3, "B"] = np.nan
    df.to_csv(tmp_path / "tt.csv", index=False)
    df.to_csv(tmp_path / "tt.tsv", sep="\t", index=False)
    df.to_csv(tmp_path / "tt.txt", sep="\t", index=False)  # sniffed
    df.to_csv(tmp_path / "tt.dat", index=False)  # sniffed
    df.to_parquet(tmp_path / "tt.parquet")
    loaded = [
        updown.load_toptable(tmp_path / f"tt.{ext}")
        for ext in ("csv", "tsv", "txt", "dat", "parquet")
    ]
    ref, n_dropped = loaded[0]
    assert n_dropped == 1 and len(ref) == 49
    for other, n in loaded[1:]:
        assert n == 1
        pd.testing.assert_frame_equal(other, ref, check_exact=False, rtol=1e-15)


@pytest.mark.parametrize("max_rows", [None, 3000, 200])
def test_streamed_sample_is_the_in_memory_sample(tmp_path, max_rows):
    """A Parquet topTable read a few rows at a time gives load_toptable's table and pandas'
    seeded sample of it: the same rows, values, dtypes and index; limma and DESeq2 tables."""
    df = _toptable(G=2000)
    df.loc[[3, 700, 1999], "B"] = np.nan
    df["drug"] = np.where(np.arange(len(df)) % 3, "a", "b")
    df.to_parquet(tmp_path / "tt.parquet", row_group_size=300)
    deseq = df.drop(columns=["logFC", "AveExpr", "t", "P.Value", "adj.P.Val", "B"]).assign(
        log2FoldChange=df["logFC"], lfcSE=0.5, stat=df["t"], pvalue=df["P.Value"],
        padj=df["adj.P.Val"], baseMean=2.0 ** df["AveExpr"],
    )  # fmt: skip
    deseq.loc[5, "padj"] = np.nan
    deseq.to_parquet(tmp_path / "dq.parquet", row_group_size=300)
    for name in ("tt.parquet", "dq.parquet"):
        path = tmp_path / name
        want, n_dropped = updown.load_toptable(path)
        n = len(want)
        if max_rows and n > max_rows:
            want = want.sample(n=max_rows, random_state=7).sort_index()
        got, n_rows, dropped = updown.load_toptable_sample(path, max_rows, 7, batch_rows=170)
        assert (n_rows, dropped) == (n, n_dropped) and n_dropped >= 1
        pd.testing.assert_frame_equal(got, want)
    empty = tmp_path / "empty.parquet"
    df.head(0).to_parquet(empty)
    got, n_rows, dropped = updown.load_toptable_sample(empty, max_rows, 7)
    assert got.empty and (n_rows, dropped) == (0, 0)
    bad = df.astype({"t": str})
    bad.loc[1500, "t"] = "x"
    bad.to_parquet(tmp_path / "bad.parquet", row_group_size=300)
    with pytest.raises(InputError, match="non-numeric") as e:
        updown.load_toptable_sample(tmp_path / "bad.parquet", max_rows, 7, batch_rows=170)
    assert e.value.row == 1500 and "bad.parquet" in str(e.value)


def test_missing_column_error_names_file_and_column(tmp_path):
    path = tmp_path / "broken_toptable.csv"
    _toptable(G=20).drop(columns=["adj.P.Val", "B"]).to_csv(path, index=False)
    with pytest.raises(InputError) as exc:
        updown.load_toptable(path)
    msg = str(exc.value)
    assert "broken_toptable.csv" in msg and "adj.P.Val" in msg and "B" in msg
    with pytest.raises(InputError, match="not found"):
        updown.load_toptable(tmp_path / "nope.csv")
    bad = _toptable(G=5)
    bad["t"] = bad["t"].astype(object)
    bad.loc[2, "t"] = "oops"
    bad.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(InputError, match="row 2"):
        updown.load_toptable(tmp_path / "bad.csv")


def test_plots_are_written(tmp_path, both):
    full = both["full"]
    updown.plot_pca(full["pca"], None, tmp_path / "pca.png")
    updown.plot_importances(full["rf_importances"], tmp_path / "imp.png", full["lasso_coef"])
    for name in ("pca.png", "imp.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1000
