"""Seed 003's per-gene models: LinearRegression against Lasso (alpha by CV), one per gene."""

import sys

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.merge.conditions import condition_table
from tahoeflow.pergene.lasso import fit_pergene, load_table, predict_table, results_table
from tahoeflow.pergene.plots import plot_r2_hist, plot_validation
from tahoeflow.pergene.targets import target_counts


def _tahoe_tables(smk, log):
    p = smk.params
    groups = pd.read_parquet(smk.input.groups)
    hvg = pd.read_parquet(smk.input.hvg, columns=["token_id", "gene_symbol", "dispersions_norm"])
    tokens = hvg["token_id"].to_numpy()
    top = hvg.sort_values("dispersions_norm", ascending=False, kind="stable").head(p.n_top_genes)
    cols = np.sort(pd.Index(tokens).get_indexer(top["token_id"]))
    # only the target genes' rows and each group's library size: groups x (targets + 1)
    X_counts = target_counts(
        smk.input.counts, groups, tokens, tokens[cols], groups_path=smk.input.groups
    )
    names = hvg["gene_symbol"].to_numpy()[cols]

    def warn(line):
        log(f"WARNING: {line}")
        print(f"WARNING: {line}", file=sys.stderr)

    cond, X, Y = condition_table(
        X_counts, groups, pd.read_parquet(smk.input.drugs), np.arange(len(cols)), names,
        p.control, p.min_cells, drug_metadata_path=smk.input.drugs, warn=warn,
    )  # fmt: skip
    log(f"tahoe mode: {len(cond)} conditions x {X.shape[1]} features, {Y.shape[1]} genes")
    return pd.concat([cond, X], axis=1), X, Y


def main(smk, log):
    p = smk.params
    if p.mode == "table":
        X, Y, n_dropped = load_table(smk.input.table, p.feature_columns, p.gene_columns)
        log(
            f"table mode: {len(X)} rows kept ({n_dropped} with missing values dropped), {Y.shape[1]} genes"
        )
        features = X
        summary = {"mode": "table", "n_rows": len(X), "n_dropped": n_dropped}
    else:
        features, X, Y = _tahoe_tables(smk, log)
        summary = {"mode": "tahoe", "n_conditions": len(X)}
    models = fit_pergene(X.to_numpy(np.float64), Y.to_numpy(np.float64), list(Y.columns),
                         cv=p.cv_folds, n_alphas=p.n_alphas, seed=p.seed, test_size=p.test_size)  # fmt: skip
    names = np.asarray(X.columns, dtype=object)
    for m in models:  # lets the apply rule find the feature columns by name
        m["model"].feature_names_in_ = names
    table = results_table(models)
    with tio.atomic_path(smk.output.models) as tmp:
        joblib.dump(models, tmp)
    tio.write_csv(table, smk.output.metrics)
    tio.write_parquet(
        pa.Table.from_pandas(features.reset_index(drop=True), preserve_index=False),
        smk.output.features,
    )
    tio.write_parquet(
        pa.Table.from_pandas(Y.reset_index(drop=True), preserve_index=False), smk.output.targets
    )
    by_kind = table.groupby("kind")["r2"].median().to_dict()
    summary.update(
        {"n_genes": int(Y.shape[1]), "median_r2": by_kind, "n_features": int(X.shape[1])}
    )
    tio.write_json(summary, smk.output.summary)
    plot_r2_hist(models, smk.output.r2_hist)
    plot_validation(predict_table(models, X), Y, smk.output.validation, p.seed)
    log(f"fitted {len(models)} models; median held-out R2 {by_kind}")


run(main, snakemake)  # noqa: F821
