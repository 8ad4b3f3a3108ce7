"""Seed 000's next steps: logistic regression and a linear SVM beside the forest, same split and CV."""

import json

import pandas as pd

from tahoeflow import io as tio
from tahoeflow.errors import config_keys
from tahoeflow.logs import run
from tahoeflow.models.baselines import fit_classifier_baselines
from tahoeflow.models.sample_file import read_sample, with_sample_note


def main(smk, log):
    cells, split, sample = read_sample(smk.input.sample)
    emb = pd.read_parquet(smk.input.embeddings[0]) if smk.input.embeddings else None
    p = smk.params
    # the forest itself is fitted once, by the rf_classifier rule; its row comes from there
    keys = dict(seed="models.seed", cv_folds="models.cv_folds", n_pcs="models.rf.n_pcs",
                n_estimators="models.rf.n_estimators", max_depth="models.rf.max_depth", max_samples="models.rf.max_samples", max_leaf_nodes="models.rf.max_leaf_nodes")  # fmt: skip
    with config_keys(**keys):
        table = fit_classifier_baselines(
            cells, split, models=("majority_class", "logistic_regression", "linear_svm"), seed=p.seed, cv_folds=p.cv_folds, n_jobs=smk.threads, n_estimators=p.n_estimators,
            max_depth=p.max_depth, embeddings=emb, n_pcs=p.n_pcs, max_samples=p.max_samples, max_leaf_nodes=p.max_leaf_nodes,
        )  # fmt: skip
    rf = json.loads(open(smk.input.rf_metrics).read())
    if "skipped" in rf:  # the forest was not fitted: its row says why, like the others
        rf_row = {"model": "random_forest", "note": f"skipped: {rf['skipped']}"}
    else:
        why = rf.get("null_reasons", {})
        rf_row = {
            "model": "random_forest", "train_acc": rf["train_accuracy"], "test_acc": rf["test_accuracy"], "gap": rf["gap"],
            "cv_acc_mean": rf["cv_accuracy_mean"], "cv_acc_std": rf["cv_accuracy_std"], "cv_kind": rf["cv_kind"],
            "note": why.get("cv_accuracy_mean", ""),
        }  # fmt: skip
    table = pd.concat([table, pd.DataFrame([rf_row], columns=table.columns)], ignore_index=True)
    table = with_sample_note(table, sample)
    tio.write_csv(table, smk.output[0])
    log("baselines:\n" + table.to_string(index=False))


run(main, snakemake)  # noqa: F821
