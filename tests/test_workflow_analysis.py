"""The whole DAG on a small demo: outputs against independent references on the same cells."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import scanpy as sc
import scipy.sparse as sp
from conftest import REPO, run_smk
from sklearn.decomposition import PCA

from tahoeflow.cells.doses import sample_doses
from tahoeflow.cells.normalize import log_normalize
from tahoeflow.cells.plan import Shard
from tahoeflow.cells.summarize import Filters, load_shard
from tahoeflow.cells.vocab import vocab_from_gene_metadata

pytestmark = pytest.mark.workflow

CONFIG = {
    "demo": {
        "n_files": 4,
        "cells_per_file": 5000,
        "n_cell_lines": 3,
        "n_drugs": 6,
        "n_plates": 1,
        "seed": 1,
    },
    "source": {"files": "0:4"},
    "embed": {"hvg": {"n_top": 400}, "n_components": 12, "kmeans": {"n_clusters": 4}},
    "models": {
        "cv_folds": 3,
        "rf": {"n_estimators": 20},
        "rf_regressor": {"grid": {"n_estimators": [10], "max_depth": [4, 8]}, "cv_folds": 2},
    },
    "updown": {
        "max_rows": 3000,
        "cv_folds": 3,
        "rf_grid": {"n_estimators": [20], "max_depth": [None, 5]},
    },
    "pergene": {"n_top_genes": 40, "cv_folds": 3, "n_alphas": 10},
    # the three documented departures from textbook limma-voom (de.voom; off by default): on
    # this demo textbook voom's table-wide FDR is 9.4%, with them 3.3% (benchmarks/bench_de.py)
    "de": {"voom": {"gene_filter": "pooled", "axis": "inv_sqrt", "fitted": "midpoint"}},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    wd = tmp_path_factory.mktemp("wf")
    run_smk(wd, CONFIG, cores=2, check=True, timeout=900)
    return wd


@pytest.fixture(scope="module")
def all_cells(run):
    """Every kept cell's counts, read independently of the workflow's merged outputs."""
    root = run / "results/demo"
    vocab = vocab_from_gene_metadata(pq.read_table(root / "metadata/gene_metadata.parquet"))
    doses = sample_doses(pq.read_table(root / "metadata/sample_metadata.parquet").to_pandas(), "s")
    parts = [
        load_shard(
            root / f"data/train-{i:05d}-of-00004.parquet",
            Shard(f"{i:05d}", i, 0, None),
            vocab,
            doses,
            Filters(),
        )
        for i in range(4)
    ]
    return (
        vocab,
        sp.vstack([p.X for p in parts]).tocsr(),
        pd.concat([p.obs for p in parts], ignore_index=True),
    )


def test_every_output_exists(run):
    for rel in (
        "merged/cells.parquet", "embed/embeddings.parquet", "embed/embeddings.csv", "embed/pca_variance.csv",
        "embed/components.parquet", "features/transformer.joblib", "features/X_train.npz", "models/ridge/metrics.json",
        "models/rf/confusion.csv", "models/baselines.csv", "models/rf_regressor/metrics.json",
        "models/split_comparison.csv", "report/metrics_summary.csv",
    ):  # fmt: skip
        assert (run / "results" / rel).stat().st_size > 0, rel
    assert not list((run / "results/embed").glob("gram/*.npz"))  # temporary Gram files are removed


def test_hvgs_equal_scanpy_on_the_same_cells(run, all_cells):
    vocab, X, _ = all_cells
    a = ad.AnnData(log_normalize(X))
    sc.pp.highly_variable_genes(a, flavor="seurat", n_top_genes=400)
    hvg = pd.read_parquet(run / "results/embed/hvg.parquet")
    np.testing.assert_array_equal(
        hvg["highly_variable"].to_numpy(), a.var["highly_variable"].to_numpy()
    )


def test_pca_equals_sklearn_on_the_dense_hvg_matrix(run, all_cells):
    vocab, X, obs = all_cells
    hvg = pd.read_parquet(run / "results/embed/hvg.parquet")
    cols = np.sort(vocab.lookup[hvg.loc[hvg["highly_variable"], "token_id"].to_numpy()])
    dense = log_normalize(X)[:, cols].toarray()
    ref = PCA(n_components=12, svd_solver="full").fit(dense)
    var = pd.read_csv(run / "results/embed/pca_variance.csv")
    np.testing.assert_allclose(
        var["explained_variance_ratio"], ref.explained_variance_ratio_, rtol=1e-6
    )
    emb = pd.read_parquet(run / "results/embed/embeddings.parquet")
    assert emb["cell_id"].tolist() == obs["cell_id"].tolist()
    Z = ref.transform(dense)
    for k in range(3):
        ours = emb[f"pc{k + 1}"].to_numpy(np.float64)
        sign = np.sign(ours @ Z[:, k])
        np.testing.assert_allclose(ours, sign * Z[:, k], rtol=1e-4, atol=1e-4)
    assert emb["cluster"].nunique() == 4
    # seed 002's CSV: the same table, the float32 PCs round-trip exactly
    csv = pd.read_csv(run / "results/embed/embeddings.csv")
    assert csv.columns.tolist() == emb.columns.tolist()
    np.testing.assert_array_equal(csv["pc1"].to_numpy(np.float32), emb["pc1"].to_numpy())
    assert csv["cell_id"].astype(str).tolist() == emb["cell_id"].tolist()
    np.testing.assert_array_equal(csv["cluster"], emb["cluster"])


def test_ridge_reaches_the_ceiling_of_condition_models(run):
    m = json.loads((run / "results/models/ridge/metrics.json").read_text())
    c = m["ceiling"]
    assert c["test_r2_ceiling_adjusted"] > 0.02  # the demo's drugs move delta_mean
    assert c["test_fraction_of_adjusted_ceiling"] >= 0.9
    assert (
        m["test_r2"] <= c["test_r2_ceiling"] + 1e-12
    )  # the raw in-sample ceiling bounds every condition model


def test_classifiers_and_split_comparison(run):
    base = pd.read_csv(run / "results/models/baselines.csv").set_index("model")
    assert {"majority_class", "logistic_regression", "linear_svm", "random_forest"} <= set(
        base.index
    )
    assert base.loc["random_forest", "test_acc"] > base.loc["majority_class", "test_acc"] + 0.2
    # converged: for the iterative fits only (a forest or a majority vote has no iterations)
    assert base["converged"].isna().tolist() == [
        m in ("majority_class", "random_forest") for m in base.index
    ]
    comp = pd.read_csv(run / "results/models/split_comparison.csv")
    assert set(comp["split"]) == {"random", "sample"} and set(comp["model"]) >= {
        "ridge",
        "rf_classifier",
    }


def test_report_embeds_every_figure(run):
    proc = run_smk(run, CONFIG, "--report", "report.html")
    assert proc.returncode == 0, proc.stderr[-3000:]
    html = (run / "report.html").read_text()
    figures = sorted(p.name for p in (run / "results/report/figures").glob("*.png"))
    assert len(figures) == 16  # 11 of the analysis half, 5 of DE, up/down and per-gene models
    for name in figures:
        assert name in html, name
    # self-contained: images are embedded as data, not linked from the machine
    assert len(re.findall(r"data:image/png;base64", html)) + html.count("iVBORw0KGgo") >= len(
        figures
    )
    assert str(run) not in html


def test_report_renders_in_headless_chromium(run):
    """Every figure of the Snakemake report is drawn by a real browser (and its PNG decodes)."""
    import os

    from test_report_browser import check_html_in_chromium, find_chromium

    if find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail(
                "chromium is missing in CI: make test installs it with ci/install-chromium.sh"
            )
        pytest.skip("no chromium (install it with ci/install-chromium.sh)")
    report = run / "report.html"
    if not report.exists():
        assert run_smk(run, CONFIG, "--report", "report.html").returncode == 0
    shot = REPO / "results/test-artifacts/report.png"
    res = check_html_in_chromium(report, shot)
    assert res["mode"] == "snakemake-report"
    assert res["n_images"] >= 16 and res["n_broken"] == 0, res
    assert shot.stat().st_size > 10_000


def test_de_calls_against_the_demo_truth(run):
    """Pseudobulk DE (voom with de.voom's departures) keeps the table-wide FDR
    (adj.P.Val.global, the calls of up_down_counts.csv) under 5% against the simulated truth."""
    metrics = json.loads((run / "results/de/metrics.json").read_text())
    assert metrics["call_column"] == "adj.P.Val.global"
    m = metrics["vs_truth"]["adj.P.Val.global"]
    assert m["n_calls"] > 50 and m["fdr"] <= 0.05 and m["power"] > 0.02, m
    counts = pd.read_csv(run / "results/de/up_down_counts.csv")
    assert {"n_up", "n_down"} <= set(counts.columns) and counts[
        ["n_up", "n_down"]
    ].to_numpy().sum() == m["n_calls"] == metrics["n_called"]
    welch = pd.read_parquet(run / "results/de/welch.parquet")
    assert {"scores", "pvals", "pvals_adj", "logfoldchanges"} <= set(welch.columns) and len(
        welch
    ) > 0


def test_updown_and_pergene_outputs(run):
    det = json.loads((run / "results/updown/detection.json").read_text())
    assert "logFC" in det["separating"] and "B" not in det["separating"]
    scores = pd.read_csv(run / "results/updown/scores.csv")
    assert (scores["test_accuracy_full"] > 0.95).all()
    assert (scores["test_accuracy_reduced"] < scores["test_accuracy_full"]).all()
    metrics = pd.read_csv(run / "results/pergene/metrics.csv")
    assert set(metrics["kind"]) == {"lasso", "linear"} and metrics["gene"].nunique() == 40
    pred = pd.read_csv(run / "results/pergene/predictions.csv")
    assert pred.shape[1] >= 40


GOLDEN = REPO / "tests/data/small_demo_outputs.sha256"
GOLDEN_COMMIT = "5a52eab"  # the tree the digests came from (see the file's header)


def _digests(results: Path) -> dict[str, str]:
    """sha256 of every output under ``results`` (logs, benchmarks and pickles left out)."""
    out = {}
    for p in sorted(results.rglob("*")):
        rel = p.relative_to(results).as_posix()
        if p.is_file() and not rel.startswith(("logs/", "benchmarks/")) and p.suffix != ".joblib":
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_outputs_are_byte_identical_to_the_recorded_tree(run, tmp_path):
    """Refactoring must not change a byte: every output equals the recorded digests. Where one
    differs (a machine whose BLAS rounds differently), the recording commit's workflow is run
    on this machine with the same config, and the two runs must agree byte for byte."""
    rows = [ln.split("  ", 1) for ln in GOLDEN.read_text().splitlines() if ln[:1] != "#"]
    want = {path: digest for digest, path in rows}
    got = _digests(run / "results")
    assert sorted(got) == sorted(want), "outputs added or missing vs the recorded tree"
    differ = sorted(k for k in want if got[k] != want[k])
    if not differ:
        return
    old = tmp_path / "old"
    old.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", GOLDEN_COMMIT], capture_output=True, check=False
    )
    assert archive.returncode == 0, (
        f"{differ} differ and commit {GOLDEN_COMMIT} is not in the clone"
    )
    subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
    run_smk(tmp_path / "wd", CONFIG, cores=2, check=True, timeout=900, repo=old)
    before = _digests(tmp_path / "wd/results")
    assert {k: got[k] for k in differ} == {k: before[k] for k in differ}
