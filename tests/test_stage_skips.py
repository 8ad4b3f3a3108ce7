"""Stages that cannot give a meaningful result skip with a reason instead of crashing.

No control cells (delta_mean, DE), a topTable with one class (up/down), one cell line
(classifiers), a split too small for a metric (R2 of one test cell), and the edge cases
around them. Each skip leaves every output in place with its usual columns, the reason in
the metrics (``{"skipped": ...}``, ``null_reasons``, a ``note`` column) and a ``WARNING:``
line; every JSON output parses with a strict parser (no NaN).

Most tests call the library; the workflow scripts are run in-process with a stand-in for
Snakemake's ``snakemake`` object (no Snakemake start-up); one small workflow run checks the
whole chain end to end.
"""

from __future__ import annotations

import json
import runpy
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, SMALL_STAGES, config_with, run_smk
from sklearn.exceptions import FitFailedWarning
from test_models import synth

from tahoeflow import io as tio
from tahoeflow.cells.summarize import CELL_COLUMNS
from tahoeflow.de import updown
from tahoeflow.de.pipeline import pseudobulk_de, untested_reason
from tahoeflow.de.tables import DE_COLUMNS, TOPTABLE_SCHEMA, WELCH_SCHEMA
from tahoeflow.de.truth import score_calls
from tahoeflow.merge.cells import merge_cells
from tahoeflow.models.baselines import fit_classifier_baselines
from tahoeflow.models.ceiling import ridge_fraction_of_ceiling
from tahoeflow.models.classification import fit_rf_classifier
from tahoeflow.models.compare import split_comparison
from tahoeflow.models.features import make_split
from tahoeflow.models.regression import fit_rf_regressor_grid, fit_ridge
from tahoeflow.models.sample_file import sample_cells_file
from tahoeflow.plots import report as rp

SCRIPTS = REPO / "workflow" / "scripts"
TINY_GRID = {"n_estimators": [5], "max_depth": [3]}


# --------------------------------------------------------------------------- helpers


def strict_json(path: Path) -> dict:
    """json.loads that refuses NaN / Infinity (what a strict JSON reader does)."""

    def refuse(token: str) -> None:
        raise ValueError(f"{path}: non-standard JSON constant {token}")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


class Named(list):
    """Snakemake's Namedlist in small: positional and attribute access."""

    def __init__(self, **items) -> None:
        super().__init__(items.values())
        self.__dict__.update(items)


class FakeSnakemake:
    def __init__(self, tmp: Path, input: dict, output: dict, params: dict, threads: int = 1):
        self.input = Named(**input)
        self.output = Named(**{k: str(tmp / v) for k, v in output.items()})
        self.params = Named(**params)
        self.log = [str(tmp / "job.log")]
        self.threads = threads


def run_script(name: str, smk: FakeSnakemake) -> str:
    """Run ``workflow/scripts/<name>`` in this process as Snakemake would; returns its log."""
    runpy.run_path(str(SCRIPTS / name), init_globals={"snakemake": smk}, run_name="__main__")
    return Path(smk.log[0]).read_text()


def shard_cells(n: int, lines: list[str], drugs: list[str], plate: str, seed: int) -> pa.Table:
    """A per-shard cells table (summarize's schema) with ``n`` cells."""
    rng = np.random.default_rng(seed)
    drug = np.asarray(drugs, dtype=object)[rng.integers(len(drugs), size=n)]
    df = pd.DataFrame(
        {
            "cell_id": [f"{plate}-{seed}-{i}" for i in range(n)],
            "shard": f"{seed:05d}",
            "file_row": np.arange(n, dtype=np.int64),
            "sample": [f"smp_{plate}_{d}" for d in drug],
            "plate": plate,
            "drug": drug,
            "dose_uM": np.where(drug == "DMSO_TF", 0.0, 1.0),
            "cell_line_id": np.asarray(lines, dtype=object)[rng.integers(len(lines), size=n)],
            "moa_fine": "unclear",
            "is_control": drug == "DMSO_TF",
            "n_genes": rng.integers(100, 500, size=n).astype(np.int32),
            "total_counts": rng.gamma(5.0, 300.0, n),
            "expr_mean": rng.normal(2, 0.2, n),
            "expr_std": rng.gamma(2.0, 1.0, n),
            "expr_skew": rng.normal(2, 0.3, n),
            "pct_mito": rng.uniform(0, 5, n),
            "mean_log_norm": rng.normal(0.5, 0.05, n),
        }
    )
    return pa.Table.from_pandas(
        df, schema=pa.schema(list(CELL_COLUMNS.items())), preserve_index=False
    )


def groups_table(drugs: list[str], wells_per_drug: int = 3, n_cells: int = 50) -> pd.DataFrame:
    """Pseudobulk groups: ``wells_per_drug`` wells of each drug, one line, one plate."""
    rows = [
        dict(
            sample=f"s_{d}_{w}",
            cell_line_id="CVCL_A",
            plate="plate1",
            drug=d,
            dose_uM=0.0 if d == "DMSO_TF" else 1.0,
            n_cells=n_cells,
        )
        for d in drugs
        for w in range(wells_per_drug)
    ]
    return pd.DataFrame(rows)


def toptable(n: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({c: rng.normal(size=n) for c in updown.TOPTABLE_COLUMNS})
    df["P.Value"] = rng.uniform(size=n)
    df["adj.P.Val"] = np.minimum(1.0, df["P.Value"] * 2)
    return df


def one_line_cells(n: int = 400, seed: int = 0) -> pd.DataFrame:
    cells, _ = synth(n=n, n_lines=1, seed=seed)
    assert cells["cell_line_id"].nunique() == 1
    return cells


# --------------------------------------------------------------------------- case 1: no controls


def test_merge_without_any_control_gives_null_delta_mean_and_counts_it(tmp_path):
    paths = []
    for i, plate in enumerate(["plate1", "plate2"]):
        p = tmp_path / f"{i}.parquet"
        tio.write_parquet(shard_cells(40, ["CVCL_A", "CVCL_B"], ["DrugX", "DrugY"], plate, i), p)
        paths.append(p)
    counts = merge_cells(paths, tmp_path / "cells.parquet", tmp_path / "qc.csv")
    assert counts == {"plate": 0, "cell_line": 0, "none": 80}
    cells = pq.read_table(tmp_path / "cells.parquet")
    assert cells.schema.field("delta_mean").type == pa.float64()
    assert cells.column("delta_mean").null_count == 80
    assert cells.column("control_mean").null_count == 80
    assert set(cells.column("control_level").to_pylist()) == {"none"}
    qc = pd.read_csv(tmp_path / "qc.csv")
    assert set(qc["control_level"]) == {"none"} and qc["n_cells"].sum() == 80
    assert len(qc) == 4  # 2 lines x 2 plates


def test_merge_with_controls_for_one_line_only_counts_each_level(tmp_path):
    """Line A has DMSO on plate1 only (plate2 falls back to the line); line B has none."""
    a1 = shard_cells(30, ["CVCL_A"], ["DMSO_TF", "DrugX"], "plate1", 0)
    a2 = shard_cells(20, ["CVCL_A"], ["DrugX"], "plate2", 1)
    b = shard_cells(25, ["CVCL_B"], ["DrugX"], "plate1", 2)
    paths = []
    for i, t in enumerate([a1, a2, b]):
        tio.write_parquet(t, tmp_path / f"{i}.parquet")
        paths.append(tmp_path / f"{i}.parquet")
    counts = merge_cells(paths, tmp_path / "cells.parquet", tmp_path / "qc.csv")
    assert counts == {"plate": 30, "cell_line": 20, "none": 25}
    cells = pd.read_parquet(tmp_path / "cells.parquet")
    ctrl = a1.to_pandas()
    ctrl_mean = ctrl.loc[ctrl["is_control"], "mean_log_norm"].mean()
    on_a2 = cells["plate"].eq("plate2")
    np.testing.assert_allclose(cells.loc[on_a2, "control_mean"], ctrl_mean, rtol=1e-12)
    assert cells.loc[cells["cell_line_id"].eq("CVCL_B"), "delta_mean"].isna().all()


def test_de_without_controls_tests_nothing_and_says_why():
    g = groups_table(["DrugX", "DrugY"])
    X = np.random.default_rng(0).poisson(30, size=(len(g), 40)).astype(float)
    top, skipped = pseudobulk_de(X, g, np.arange(40), 5, return_skipped=True)
    assert top.empty and list(top.columns) == DE_COLUMNS
    assert len(skipped) == 2 and skipped["reason"].str.contains("0 DMSO_TF control wells").all()
    assert untested_reason(g, skipped).startswith("no DMSO_TF control wells in the data")
    t = pa.Table.from_pandas(top, schema=TOPTABLE_SCHEMA, preserve_index=False)
    assert t.num_rows == 0 and t.schema.field("drug").type == pa.string()


def test_regressions_on_delta_mean_skip_when_it_is_null_everywhere():
    cells, _ = synth(n=300)
    cells["delta_mean"] = np.nan
    split = make_split(cells, "random", 0.2, 0)
    ridge = fit_ridge(cells, split, cv_folds=3)
    assert ridge.model is None and ridge.predictions.empty
    assert ridge.metrics["skipped"].startswith("delta_mean is null for all 300 cells")
    assert ridge.metrics["n_excluded_null_target"] == 300
    assert ridge_fraction_of_ceiling(ridge, cells) == {"skipped": ridge.metrics["skipped"]}
    reg = fit_rf_regressor_grid(cells, split, grid=TINY_GRID, cv_folds=2)
    assert reg["model"] is None and "null for all 300" in reg["metrics"]["skipped"]
    assert list(reg["cv_results"].columns) == ["n_estimators", "max_depth", "mean_cv_rmse",
                                               "std_cv_rmse", "rank"]  # fmt: skip
    json.dumps([ridge.metrics, reg["metrics"]], allow_nan=False)
    table = split_comparison(cells, {"random": split}, n_estimators=5)
    ridge_row = table.set_index("model").loc["ridge"]
    assert ridge_row["note"].startswith("skipped: delta_mean is null")
    assert pd.isna(ridge_row["test"])
    # the classifier does not need delta_mean: it still runs (delta_mean imputed)
    assert table.set_index("model").loc["rf_classifier", "note"] == ""


# --------------------------------------------------------------------------- case 2: one class


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_updown_with_one_class_skips_instead_of_reporting_accuracy(sign):
    df = toptable()
    df["logFC"] = sign * (np.abs(df["logFC"]) + 0.01)
    res = updown.run_both(df, seed=0, rf_grid={"n_estimators": [5]}, cv=3)
    side = "up (logFC > 0)" if sign > 0 else "down (logFC <= 0)"
    assert res["skipped"] == (
        f"the target has one class only: all 300 genes are {side}; an accuracy over one class "
        "is meaningless"
    )
    comp = res["comparison"]
    assert list(comp["model"]) == list(updown.MODEL_NAMES)
    assert comp.filter(like="accuracy").isna().all().all()
    assert (comp["skipped"] == res["skipped"]).all()
    with pytest.raises(ValueError, match="one class only"):
        updown.run_benchmark(df, ["AveExpr"], seed=0)


def test_updown_script_with_a_header_only_external_toptable(tmp_path):
    (tmp_path / "top.csv").write_text(",".join(["gene", *updown.TOPTABLE_COLUMNS]) + "\n")
    smk = FakeSnakemake(
        tmp_path,
        input={"toptable": str(tmp_path / "top.csv")},
        output={
            "scores": "scores.csv",
            "detection": "detection.json",
            "importances": "imp.csv",
            "lasso": "lasso.csv",
            "pca": "pca.png",
            "importance_plot": "imp.png",
        },
        params={"seed": 0, "cv_folds": 3, "max_rows": 1000, "rf_grid": None},
    )
    log = run_script("updown.py", smk)
    reason = "the topTable has no rows (no DE result to classify)"
    assert f"WARNING: {tmp_path / 'top.csv'}: up/down benchmark skipped, {reason}" in log
    scores = pd.read_csv(smk.output.scores)
    assert len(scores) == 5 and (scores["skipped"] == reason).all()
    assert scores["test_accuracy_full"].isna().all()
    det = strict_json(smk.output.detection)
    assert det["skipped"] == reason and det["separating"] == []
    assert list(pd.read_csv(smk.output.importances).columns) == [
        "feature",
        "importance",
        "features",
    ]
    assert Path(smk.output.pca).stat().st_size > 1000


def test_updown_detection_json_has_null_not_nan_thresholds():
    det = updown.detect_deterministic_target(toptable(), updown.DEFAULT_FEATURES)
    assert det["per_feature"]["threshold"].isna().any()  # the table keeps NaN ...
    out = updown.detection_json(det)  # ... the JSON has null
    text = json.dumps(out, allow_nan=False)
    rows = {r["feature"]: r for r in json.loads(text)["per_feature"]}
    assert rows["logFC"]["separable"] and isinstance(rows["logFC"]["threshold"], float)
    assert rows["AveExpr"]["threshold"] is None


# --------------------------------------------------------------------------- case 3: one line


def test_classifiers_with_one_cell_line_skip_with_the_line_named():
    cells = one_line_cells()
    split = make_split(cells, "random", 0.2, 0)
    reason = (
        "only one class (cell line CVCL_0000) after filters: a classifier of cell_line_id "
        "needs at least 2"
    )
    rf = fit_rf_classifier(cells, split, n_estimators=5, cv_folds=3)
    m = rf["metrics"]
    assert m["skipped"] == reason and m["n_classes"] == 1 and m["classes"] == ["CVCL_0000"]
    assert "test_accuracy" not in m and rf["model"] is None
    assert rf["report"].empty and list(rf["report"].columns) == [
        "label", "precision", "recall", "f1", "support",
    ]  # fmt: skip
    assert rf["confusion"].empty and rf["importances"].empty and rf["predictions"].empty
    json.dumps(m, allow_nan=False)
    base = fit_classifier_baselines(cells, split, cv_folds=3, n_estimators=5)
    assert list(base["model"]) == ["majority_class", "logistic_regression", "linear_svm",
                                   "random_forest"]  # fmt: skip
    assert (base["note"] == f"skipped: {reason}").all() and base["test_acc"].isna().all()
    comp = split_comparison(cells, {"random": split}, n_estimators=5).set_index("model")
    assert comp.loc["rf_classifier", "note"] == f"skipped: {reason}"
    assert pd.isna(comp.loc["rf_classifier", "test"]) and comp.loc["ridge", "note"] == ""
    # regressing delta_mean on one line is still meaningful
    reg = fit_rf_regressor_grid(cells, split, grid=TINY_GRID, cv_folds=2)
    assert "skipped" not in reg["metrics"] and np.isfinite(reg["metrics"]["test_rmse"])


def test_rf_classifier_and_baselines_scripts_with_one_cell_line(tmp_path):
    cells = one_line_cells()
    tio.write_parquet(pa.Table.from_pandas(cells, preserve_index=False), tmp_path / "cells.pq")
    split = make_split(cells, "random", 0.2, 0)
    tio.write_parquet(pa.Table.from_pandas(split, preserve_index=False), tmp_path / "split.pq")
    params = dict(
        n_estimators=5,
        max_depth=None,
        max_samples=None,
        max_leaf_nodes=16000,
        n_pcs=None,
        cv_folds=3,
        seed=0,
    )
    sample_cells_file(tmp_path / "cells.pq", tmp_path / "split.pq", tmp_path / "sample.pq")
    inputs = {"sample": str(tmp_path / "sample.pq"), "embeddings": []}
    rf = FakeSnakemake(
        tmp_path,
        inputs,
        {
            k: f"rf_{k}.{ext}"
            for k, ext in [
                ("model", "joblib"),
                ("metrics", "json"),
                ("report", "csv"),
                ("confusion", "csv"),
                ("importances", "csv"),
                ("predictions", "parquet"),
            ]
        },  # fmt: skip
        params,
        threads=2,
    )
    log = run_script("rf_classifier.py", rf)
    m = strict_json(rf.output.metrics)
    assert m["skipped"].startswith("only one class (cell line CVCL_0000)")
    assert "random forest classifier skipped, only one class" in log
    pred = pq.read_table(rf.output.predictions)
    assert pred.num_rows == 0 and pred.schema.field("y_true").type == pa.string()
    base = FakeSnakemake(
        tmp_path, {**inputs, "rf_metrics": rf.output.metrics}, {"out": "baselines.csv"}, params
    )
    run_script("baselines.py", base)
    table = pd.read_csv(base.output[0]).set_index("model")
    assert table.loc["random_forest", "note"] == f"skipped: {m['skipped']}"
    assert table["note"].str.startswith("skipped: only one class").all()
    assert table["test_acc"].isna().all()


def test_report_shows_skipped_models_and_null_metrics(tmp_path):
    metrics = {
        "ridge": {"skipped": "delta_mean is null for all 9 cells", "n_train": 0},
        "rf_classifier": {"skipped": "only one class (cell line X) after filters"},
        "rf_regressor": {"test_r2": None, "test_rmse": 0.5,
                         "null_reasons": {"test_r2": "1 test row(s): R2 needs at least 2"}},
        "kmeans": {"inertia": 3.0, "method": "kmeans"},
    }  # fmt: skip
    table = rp.metrics_summary(metrics)
    assert list(table.columns) == ["source", "metric", "value", "note"]
    rows = {(r.source, r.metric): r for r in table.itertuples()}
    assert rows[("ridge", "skipped")].note == "delta_mean is null for all 9 cells"
    assert rows[("ridge", "n_train")].value == 0
    assert rows[("rf_classifier", "skipped")].note.startswith("only one class")
    assert pd.isna(rows[("rf_regressor", "test_r2")].value)
    assert rows[("rf_regressor", "test_r2")].note == "1 test row(s): R2 needs at least 2"
    assert rows[("rf_regressor", "test_rmse")].value == 0.5 and len(table) == 6
    # the figures of skipped models say why, without reading their (empty) tables
    missing = {k: str(tmp_path / "absent") for k in ("ridge", "confusion", "importances")}
    out = {k: str(tmp_path / f"{k}.png") for k in missing}
    rp.model_figures(metrics, missing, out)
    assert all(Path(p).stat().st_size > 1000 for p in out.values())


# --------------------------------------------------------------------------- case 4: tiny split


def test_one_test_cell_gives_null_r2_with_a_reason_in_every_model():
    cells, _ = synth(n=300)
    split = make_split(cells, "random", 1e-4, 0)
    assert split["split"].eq("test").sum() == 1
    ridge = fit_ridge(cells, split, cv_folds=3)
    m = ridge.metrics
    assert m["test_r2"] is None and m["null_reasons"]["test_r2"] == (
        "1 test row(s): R2 needs at least 2"
    )
    assert np.isfinite(m["test_mse"]) and m["n_test"] == 1
    ceiling = ridge_fraction_of_ceiling(ridge, cells)
    assert ceiling["test_r2_ceiling"] is None
    assert ceiling["null_reasons"]["test_r2_ceiling"] == "1 test row(s): needs at least 2"
    reg = fit_rf_regressor_grid(cells, split, grid=TINY_GRID, cv_folds=2)["metrics"]
    assert reg["test_r2"] is None and "1 test row" in reg["null_reasons"]["test_r2"]
    table = split_comparison(cells, {"random": split}, n_estimators=5).set_index("model")
    assert pd.isna(table.loc["ridge", "test"])
    assert "test_r2: 1 test row(s): R2 needs at least 2" in table.loc["ridge", "note"]
    json.dumps([m, ceiling, reg], allow_nan=False)


def test_ridge_script_with_one_test_cell(tmp_path):
    cells, _ = synth(n=300)
    split = make_split(cells, "random", 1e-4, 0)
    tio.write_parquet(pa.Table.from_pandas(cells, preserve_index=False), tmp_path / "cells.pq")
    tio.write_parquet(pa.Table.from_pandas(split, preserve_index=False), tmp_path / "split.pq")
    sample_cells_file(tmp_path / "cells.pq", tmp_path / "split.pq", tmp_path / "sample.pq")
    smk = FakeSnakemake(
        tmp_path,
        {"sample": str(tmp_path / "sample.pq")},
        {"model": "m.joblib", "predictions": "p.parquet", "metrics": "metrics.json"},
        {"alpha": 1.0, "features": ["drug", "cell_line_id"], "cv_folds": 3, "seed": 0},
    )
    log = run_script("ridge.py", smk)
    m = strict_json(smk.output.metrics)
    assert m["test_r2"] is None and m["ceiling"]["test_r2_ceiling"] is None
    assert "test R2 undefined (1 test row(s): R2 needs at least 2)" in log


# --------------------------------------------------------------------------- extra cases


def test_cv_fold_that_would_train_on_one_class_is_skipped_with_a_reason():
    """Two lines, one of them a single cell: a KFold fold would train on one class only."""
    cells, _ = synth(n=300, n_lines=1)
    cells.loc[0, "cell_line_id"] = "CVCL_RARE"
    split = make_split(cells, "random", 0.2, 0)
    split.loc[0, "split"] = "train"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FitFailedWarning)  # no failed fit hidden behind a NaN
        base = fit_classifier_baselines(cells, split, cv_folds=3, n_estimators=5)
        rf = fit_rf_classifier(cells, split, n_estimators=5, cv_folds=3)["metrics"]
    why = (
        f"CV skipped: fold {why_fold(cells, split)} of 3 would train on one class (the rarest "
        "training class has 1 row(s), fewer than models.cv_folds=3)"
    )
    assert (base["note"] == why).all() and base["cv_acc_mean"].isna().all()
    assert base["test_acc"].notna().all() and (base["cv_kind"] == "none").all()
    assert rf["cv_accuracy_mean"] is None and rf["null_reasons"]["cv_accuracy_mean"] == why
    assert rf["n_classes"] == 2 and rf["test_accuracy"] is not None


def why_fold(cells: pd.DataFrame, split: pd.DataFrame) -> int:
    """The 1-based KFold(3, shuffle, seed 0) fold whose held-out part has the rare cell."""
    from sklearn.model_selection import KFold

    train = cells.loc[split["split"].eq("train").to_numpy()].reset_index(drop=True)
    rare = int(np.flatnonzero(train["cell_line_id"].eq("CVCL_RARE").to_numpy())[0])
    folds = KFold(n_splits=3, shuffle=True, random_state=0).split(np.zeros(len(train)))
    return next(i + 1 for i, (_, held) in enumerate(folds) if rare in held)


def test_training_split_with_one_class_skips_the_classifiers():
    """Two lines, but the grouped split puts every cell of one line in test."""
    cells, _ = synth(n=300, n_lines=1, n_plates=3)
    cells.loc[cells["plate"].eq("plate1"), "cell_line_id"] = "CVCL_ONLYTEST"
    split = pd.DataFrame({"cell_id": cells["cell_id"],
                          "split": np.where(cells["plate"].eq("plate1"), "test", "train")})  # fmt: skip
    rf = fit_rf_classifier(cells, split, n_estimators=5, cv_folds=3)["metrics"]
    assert rf["skipped"] == (
        "the training split holds one class (cell line CVCL_0000) of the 2 in the data: a "
        "classifier needs at least 2 to learn from"
    )
    base = fit_classifier_baselines(cells, split, cv_folds=3, n_estimators=5)
    assert (base["note"] == f"skipped: {rf['skipped']}").all()


def test_split_comparison_with_one_sample_skips_the_grouped_split_only():
    cells, _ = synth(n=300)
    cells["sample"] = "the_only_well"
    table = split_comparison(cells, group_by="sample", n_estimators=5)
    assert list(table["split"]) == ["random", "random", "sample", "sample"]
    grouped = table[table["split"].eq("sample")]
    assert (
        grouped["note"]
        == "skipped: a split grouped by 'sample' needs at least 2 distinct values; the cells have 1"
    ).all()
    assert grouped["test"].isna().all()
    rand = table[table["split"].eq("random")]
    assert rand["test"].notna().all() and (rand["note"] == "").all()


def test_empty_de_outputs_keep_their_schema(tmp_path):
    """Only controls kept: nothing to test. The topTable and the Welch table are empty but
    typed (strings stay strings), and the Welch job does not read any shard."""
    g = groups_table(["DMSO_TF"])
    top, skipped = pseudobulk_de(np.ones((len(g), 5)), g, np.arange(5), 5, return_skipped=True)
    assert top.empty and skipped.empty
    assert top["drug"].dtype == object and top["gene"].dtype == np.int64
    assert top["n_treated_cells"].dtype == np.int64
    assert untested_reason(g, skipped) == "no treated wells: every well is a DMSO_TF control"
    path = tmp_path / "top.parquet"
    tio.write_parquet(pa.Table.from_pandas(top, schema=TOPTABLE_SCHEMA, preserve_index=False), path)
    smk = FakeSnakemake(
        tmp_path,
        {"toptable": str(path), "data": []},
        {"out": "welch.parquet"},
        {"max_conditions": 3, "conditions": [], "shards": [], "files": []},
    )
    log = run_script("de_welch.py", smk)
    assert "Welch tests skipped, the pseudobulk topTable is empty" in log
    welch = pq.read_table(smk.output[0])
    assert welch.num_rows == 0 and welch.schema.equals(WELCH_SCHEMA)
    assert welch.schema.field("drug").type == pa.string()


def test_updown_with_a_single_down_gene_skips_instead_of_crashing():
    df = toptable()
    df["logFC"] = np.abs(df["logFC"]) + 0.01
    df.loc[7, "logFC"] = -0.5
    res = updown.run_both(df, seed=0, rf_grid={"n_estimators": [5]}, cv=3)
    assert res["skipped"] == (
        "only 1 of 300 genes is down: the stratified train/test split needs at least 2 genes "
        "of each class"
    )
    df.loc[8, "logFC"] = -0.5  # 2 down genes: one in train, one in test
    reason = updown.skip_reason(df, seed=0, cv=3)
    assert reason is None or "a stratified CV fold would train on one class" in reason


def test_de_power_is_null_with_a_reason_when_no_truly_changed_gene_is_tested():
    de = pd.DataFrame({"drug": ["A"] * 4, "dose_uM": 1.0, "cell_line_id": "L", "plate": "p",
                       "gene": [1, 2, 3, 4], "adj.P.Val": [0.01, 0.5, 0.5, 0.5]})  # fmt: skip
    truth = pd.DataFrame({"drug": ["B"], "dose_uM": [1.0], "cell_line_id": ["L"], "token_id": [1]})
    s = score_calls(de, truth)
    assert s["power"] is None and s["n_truly_changed"] == 0 and s["fdr"] == 1.0
    assert s["null_reasons"]["power"].startswith("no truly changed gene")
    json.dumps(s, allow_nan=False)


# --------------------------------------------------------------------------- workflow


@pytest.mark.workflow
def test_workflow_without_controls_and_with_one_cell_line(tmp_path):
    """filters.drugs without DMSO_TF and one cell line: merge, DE, up/down and every model
    finish; each skip says why in its outputs, its log and on stderr."""
    drugs = ["Nimesulide", "Berbamine (dihydrochloride)", "Daidzin"]  # 3 of the demo's drugs
    cfg = config_with(
        SMALL_STAGES,
        {
            "demo": {"n_files": 2, "cells_per_file": 600},
            "source": {"files": "0:2"},
            "filters": {"drugs": drugs, "cell_lines": ["CVCL_0131"]},
        },
    )
    targets = [f"results/{t}" for t in (
        "merged/cells.parquet", "de/welch.parquet", "updown/scores.csv", "models/ridge/metrics.json",
        "models/baselines.csv", "models/rf_regressor/metrics.json", "models/split_comparison.csv",
    )]  # fmt: skip
    proc = run_smk(tmp_path, cfg, *targets, cores=2, check=True)
    r = tmp_path / "results"
    cells = pd.read_parquet(r / "merged/cells.parquet")
    n = len(cells)
    assert n > 50 and cells["delta_mean"].isna().all() and set(cells["control_level"]) == {"none"}
    qc = pd.read_csv(r / "merged/control_qc.csv")
    assert set(qc["control_level"]) == {"none"} and qc["n_cells"].sum() == n
    no_ctrl = "no DMSO_TF control wells in the data (after the filters)"
    assert strict_json(r / "de/metrics.json")["skipped"].startswith(no_ctrl)
    top = pq.read_table(r / "de/toptable.parquet")
    assert top.num_rows == 0 and top.schema.field("drug").type == pa.string()
    welch = pq.read_table(r / "de/welch.parquet")
    assert welch.num_rows == 0 and welch.schema.equals(WELCH_SCHEMA)
    assert (pd.read_csv(r / "updown/scores.csv")["skipped"].str.contains("no rows")).all()
    null_dm = f"delta_mean is null for all {n} cells"
    assert strict_json(r / "models/ridge/metrics.json")["skipped"].startswith(null_dm)
    assert strict_json(r / "models/rf_regressor/metrics.json")["skipped"].startswith(null_dm)
    rf = strict_json(r / "models/rf/metrics.json")
    assert rf["skipped"].startswith("only one class (cell line CVCL_0131) after filters")
    assert pd.read_csv(r / "models/baselines.csv")["note"].str.startswith("skipped: ").all()
    comp = pd.read_csv(r / "models/split_comparison.csv")
    assert len(comp) == 4 and comp["note"].str.startswith("skipped: ").all()
    for path in r.rglob("*.json"):  # every JSON output is strict JSON
        strict_json(path)
    for text in (
        f"WARNING: results/merged/cells.parquet: {n} of {n} cells have no control cell",
        "WARNING: results/de/toptable.parquet: DE skipped, no DMSO_TF control wells",
        "WARNING: results/de/welch.parquet: Welch tests skipped",
        "up/down benchmark skipped, the topTable has no rows",
        "WARNING: results/models/rf/metrics.json: random forest classifier skipped",
        "WARNING: results/models/ridge/metrics.json: Ridge skipped",
    ):
        assert text in proc.stderr, text
    assert "Traceback" not in proc.stderr
