"""Seed 003/004 systems on plain tables from elsewhere, inside the workflow."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pandas as pd
import pytest
from conftest import run_smk

pytestmark = pytest.mark.workflow


def _toptable(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    logfc = rng.normal(0, 1.2, n)
    se = rng.uniform(0.2, 0.6, n)
    t = logfc / se
    from scipy import stats

    p = 2 * stats.t.sf(np.abs(t), 10)
    return pd.DataFrame(
        {"logFC": logfc, "AveExpr": rng.uniform(2, 12, n), "t": t, "P.Value": p,
         "adj.P.Val": np.minimum(1, p * n / (stats.rankdata(p))), "B": np.log(np.abs(t) + 0.1) - 1}
    )  # fmt: skip


def test_updown_on_a_tsv_toptable_and_pergene_on_a_table(tmp_path):
    top = tmp_path / "external_toptable.tsv"
    _toptable(1500, 1).to_csv(top, sep="\t", index=False)
    rng = np.random.default_rng(3)
    n, p, g = 300, 6, 25
    X = rng.normal(size=(n, p))
    B = np.where(rng.random((p, g)) < 0.3, rng.normal(0, 1, (p, g)), 0.0)
    Y = X @ B + rng.normal(0, 0.3, (n, g))
    table = pd.DataFrame(X, columns=[f"ephys_{i}" for i in range(p)]).join(
        pd.DataFrame(Y, columns=[f"GENE{j}" for j in range(g)])
    )
    table.loc[:29, "ephys_0"] = np.nan  # rows with missing values are dropped and counted
    path = tmp_path / "ephys_table.csv"
    table.to_csv(path, index=False)
    cfg = {
        "updown": {"toptable": str(top), "cv_folds": 3, "rf_grid": {"n_estimators": [20], "max_depth": [None]}},
        "pergene": {"mode": "table", "cv_folds": 3, "n_alphas": 10,
                    "table": {"path": str(path), "feature_columns": [f"ephys_{i}" for i in range(p)]}},
    }  # fmt: skip
    proc = run_smk(
        tmp_path / "wd",
        cfg,
        "results/updown/scores.csv",
        "results/pergene/predictions.csv",
        cores=2,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ran = {
        ln.split()[1].rstrip(":")
        for ln in proc.stderr.splitlines()
        if ln.startswith(("rule ", "localrule "))
    }
    assert ran == {"updown", "pergene_fit", "pergene_apply"}, ran  # nothing of the Tahoe DAG
    wd = tmp_path / "wd/results"
    scores = pd.read_csv(wd / "updown/scores.csv")
    assert (scores["test_accuracy_full"] > 0.95).all() and set(scores["model"]) >= {
        "XGBoost",
        "SVM",
    }
    assert json.loads((wd / "updown/detection.json").read_text())["separating"][:1] == ["logFC"]
    summary = json.loads((wd / "pergene/summary.json").read_text())
    assert summary["n_rows"] == n - 30 and summary["n_dropped"] == 30 and summary["n_genes"] == g
    models = joblib.load(wd / "pergene/models.joblib")
    assert {m["kind"] for m in models} == {"lasso", "linear"} and {
        "gene",
        "model",
        "std",
        "r2",
        "rmse",
    } <= set(models[0])
    lasso = {m["gene"]: m for m in models if m["kind"] == "lasso"}
    assert np.median([m["r2"] for m in lasso.values()]) > 0.5
    pred = pd.read_csv(wd / "pergene/predictions.csv")
    assert len(pred) == n - 30 and {f"GENE{j}" for j in range(g)} <= set(pred.columns)
    kept = table.dropna()
    expect = lasso["GENE0"]["model"].predict(kept[[f"ephys_{i}" for i in range(p)]].to_numpy())
    np.testing.assert_allclose(pred["GENE0"].to_numpy(), expect, rtol=1e-9)
