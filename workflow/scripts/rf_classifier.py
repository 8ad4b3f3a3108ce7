"""Model 2 (seed 000): Random Forest classification of cell_line_id."""

import sys

import pandas as pd
import pyarrow as pa

from tahoeflow import io as tio
from tahoeflow.errors import config_keys
from tahoeflow.logs import run
from tahoeflow.models.classification import fit_rf_classifier
from tahoeflow.models.persist import save_model
from tahoeflow.models.sample_file import read_sample, sample_metrics


def main(smk, log):
    cells, split, sample = read_sample(smk.input.sample)
    emb = pd.read_parquet(smk.input.embeddings[0]) if smk.input.embeddings else None
    p = smk.params
    with config_keys(
        n_estimators="models.rf.n_estimators", max_depth="models.rf.max_depth", seed="models.seed", cv_folds="models.cv_folds",
        n_pcs="models.rf.n_pcs", max_samples="models.rf.max_samples", max_leaf_nodes="models.rf.max_leaf_nodes",
    ):  # fmt: skip
        res = fit_rf_classifier(
            cells, split, n_estimators=p.n_estimators, max_depth=p.max_depth, seed=p.seed, cv_folds=p.cv_folds,
            n_jobs=smk.threads, embeddings=emb, n_pcs=p.n_pcs, max_samples=p.max_samples, max_leaf_nodes=p.max_leaf_nodes,
        )  # fmt: skip
    m = {**res["metrics"], **sample_metrics(sample)}
    skipped = "skipped" in m
    if skipped:  # nothing fitted: the metrics say why, the tables are empty
        line = f"WARNING: {smk.output.metrics}: random forest classifier skipped, {m['skipped']}"
        log(line)
        print(line, file=sys.stderr)
    save_model(res["model"] if not skipped else {"skipped": m["skipped"]}, smk.output.model)
    tio.write_json(m, smk.output.metrics)
    tio.write_csv(res["report"], smk.output.report, index=True)
    tio.write_csv(res["confusion"], smk.output.confusion, index=True)
    tio.write_csv(res["importances"], smk.output.importances)
    tio.write_parquet(
        pa.Table.from_pandas(
            res["predictions"], schema=PREDICTIONS if skipped else None, preserve_index=False
        ),
        smk.output.predictions,
    )
    if not skipped:
        log(f"rf: train acc {m['train_accuracy']:.4f}, test acc {m['test_accuracy']:.4f}")


PREDICTIONS = pa.schema(
    [
        ("cell_id", pa.string()),
        ("split", pa.string()),
        ("y_true", pa.string()),
        ("y_pred", pa.string()),
    ]
)


run(main, snakemake)  # noqa: F821
