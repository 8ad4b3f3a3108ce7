"""Issue 16's remaining cases: DESeq2 tables in the up/down benchmark, DESeq2 on bad input,
the volcano's panels (table-wide FDR) and labels (gene symbols)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from test_de import _simulate_plates

from tahoeflow.de import pipeline, updown
from tahoeflow.de import tables as de_tables
from tahoeflow.plots import report as rp

pytest.importorskip("pydeseq2")

TINY_GRID = {"n_estimators": [20], "max_depth": [None]}


@pytest.fixture(scope="module")
def deseq2_table():
    """de.method: deseq2 on one pooled contrast per drug of a small simulation (2 lines)."""
    counts, groups, _ = _simulate_plates(7, lines=("CL1", "CL2"), G=80, n_null=1)
    return pipeline.pseudobulk_de(counts, groups, np.arange(80), 20, method="deseq2")


def test_deseq2_table_maps_to_limma_names_for_the_updown_benchmark(deseq2_table, tmp_path):
    top = deseq2_table
    path = tmp_path / "toptable.parquet"
    pa.Table.from_pandas(
        top, schema=de_tables.DESEQ2_SCHEMA, preserve_index=False
    ).to_pandas().to_parquet(path)
    df, n_dropped = updown.load_toptable(path)
    assert n_dropped == 0 and len(df) == len(top)
    np.testing.assert_array_equal(df["logFC"], top["log2FoldChange"])
    np.testing.assert_array_equal(df["t"], top["stat"])
    np.testing.assert_array_equal(df["P.Value"], top["pvalue"])
    np.testing.assert_array_equal(df["adj.P.Val"], top["padj"])
    np.testing.assert_allclose(df["AveExpr"], np.log2(top["baseMean"] + 1.0), rtol=1e-15)
    features = updown.toptable_features(df)
    assert features == ["logFC", "AveExpr", "t", "P.Value", "adj.P.Val"]  # DESeq2 has no B
    res = updown.run_both(df, 1, features, cv=3, rf_grid=TINY_GRID)
    assert "skipped" not in res
    assert res["detection"]["separating"] == ["logFC", "t"]  # Wald stat has logFC's sign
    assert res["features_reduced"] == ["AveExpr", "P.Value", "adj.P.Val"]
    comp = res["comparison"].set_index("model")
    assert (comp["test_accuracy_full"] > 0.95).all()
    # a DESeq2 table without one of its columns: the error names it
    top.drop(columns=["stat"]).to_parquet(tmp_path / "broken.parquet")
    with pytest.raises(Exception, match=r"broken\.parquet.*DESeq2 table.*stat"):
        updown.load_toptable(tmp_path / "broken.parquet")


@pytest.mark.workflow
def test_updown_rule_runs_on_a_deseq2_toptable(deseq2_table, tmp_path):
    """The updown rule on a topTable of de.method: deseq2 (here given as updown.toptable, the
    same file the DE stage writes): before, it stopped on 'missing column(s) logFC'."""
    from conftest import run_smk

    path = tmp_path / "deseq2_toptable.parquet"
    pa.parquet.write_table(
        pa.Table.from_pandas(deseq2_table, schema=de_tables.DESEQ2_SCHEMA, preserve_index=False),
        path,
    )
    cfg = {"updown": {"toptable": str(path), "cv_folds": 3, "rf_grid": TINY_GRID}}
    proc = run_smk(tmp_path / "wd", cfg, "results/updown/scores.csv")
    assert proc.returncode == 0, proc.stderr[-3000:]
    wd = tmp_path / "wd/results/updown"
    assert json.loads((wd / "detection.json").read_text())["separating"] == ["logFC", "t"]
    imp = pd.read_csv(wd / "rf_importances.csv")
    assert set(imp["features"]) == {"all", "without logFC, t"}
    assert "B" not in set(imp["feature"])


def test_deseq2_bad_input_is_skipped_with_its_reason_never_nan():
    """The three bad inputs of the issue with de.method: deseq2: no residual df after pooling,
    a control well with zero library size, a gene with all-zero counts."""
    counts, groups, _ = _simulate_plates(4, lines=("CL1", "CL2"), G=60, n_null=1)
    counts[:, 5] = 0.0
    line2 = (groups["cell_line_id"] == "CL2").to_numpy()
    ctrl = (groups["drug"] == "DMSO_TF").to_numpy()
    counts[np.flatnonzero(line2 & ctrl)[0]] = 0.0
    drop = (groups["cell_line_id"] == "CL1") & (
        ((groups["drug"] == "null0") & (groups["plate"] != "p1"))
        | ((groups["drug"] == "DMSO_TF") & (groups["sample"] == "p1_c1"))
    )
    keep = ~drop.to_numpy()
    top, skipped = pipeline.pseudobulk_de(
        counts[keep], groups[keep].reset_index(drop=True), np.arange(60), 20, method="deseq2",
        min_control_wells=1, return_skipped=True,
    )  # fmt: skip
    assert len(top) and top[de_tables.DESEQ2_STATS].notna().all().all()
    assert np.isfinite(top[de_tables.DESEQ2_STATS].to_numpy()).all() and 5 not in set(top["gene"])
    why = skipped.set_index(["drug", "cell_line_id", "what"])["reason"]
    assert "no residual degrees of freedom" in why[("null0", "CL1", "contrast")]
    assert "zero library size: p1_c0 (control)" in why[("hit", "CL2", "contrast")]
    genes = skipped[skipped["what"] == "genes"]
    assert genes["reason"].str.contains("all-zero counts").any()
    assert "zero library size: p1_c0 (control)" in why[("null0", "CL2", "contrast")]
    pairs = set(zip(top["drug"], top["cell_line_id"], strict=True))
    assert pairs == {("hit", "CL1")}  # the rest tested


def _table(rows):
    return pd.DataFrame(
        rows, columns=["drug", "dose_uM", "cell_line_id", "adj.P.Val", "adj.P.Val.global"]
    )


def test_volcano_panels_by_table_wide_fdr_and_labels_by_symbol(monkeypatch, tmp_path):
    # 'null' has 3 calls by its own BH, none table-wide; 'hit' and 'weak' have calls table-wide
    top = _table(
        [("null", 1.0, "L1", 0.01, 0.2)] * 3
        + [("hit", 1.0, "L1", 0.001, 0.001)] * 2
        + [("weak", 1.0, "L2", 0.04, 0.04)]
        + [("none", 1.0, "L2", 0.9, 0.9)]
    )
    assert de_tables.volcano_conditions(top, 2) == [("hit", 1.0, "L1"), ("weak", 1.0, "L2")]
    assert de_tables.volcano_conditions(top, 10)[2:] == [("none", 1.0, "L2"), ("null", 1.0, "L1")]
    assert de_tables.volcano_conditions(top.iloc[:0], 3) == []
    # labels: the smallest P.Values of a panel by gene_symbol (token id where it has none)
    rng = np.random.default_rng(0)
    n = 30
    panel = pd.DataFrame(
        {
            "drug": "hit", "dose_uM": 1.0, "cell_line_id": "L1", "gene": np.arange(100, 100 + n),
            "gene_symbol": [f"SYM{k}" for k in range(n)], "logFC": rng.normal(0, 1, n),
            "P.Value": np.linspace(1e-8, 0.9, n), "adj.P.Val.global": np.linspace(1e-6, 1, n),
        }
    )  # fmt: skip
    panel.loc[1, "gene_symbol"] = None
    figs = []
    monkeypatch.setattr(rp, "save_figure", lambda fig, path: figs.append(fig))
    rp.volcano(panel, [("hit", 1.0, "L1")], tmp_path / "v.png", padj_col="adj.P.Val.global",
               label_col="gene_symbol")  # fmt: skip
    texts = [t.get_text() for t in figs[0].axes[0].texts]
    assert texts == ["SYM0", "101", "SYM2", "SYM3", "SYM4"]
    assert "adj.P.Val.global" in figs[0].axes[0].get_title()
