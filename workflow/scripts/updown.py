"""Seed 004's up/down classification benchmark, with and without the sign-carrying features."""

import sys

import pandas as pd

from tahoeflow import io as tio
from tahoeflow.de.updown import (
    detection_json,
    load_toptable_sample,
    plot_importances,
    plot_pca,
    run_both,
    toptable_features,
)
from tahoeflow.logs import run
from tahoeflow.plots import report as rp


def write_skipped(smk, log, res):
    """A benchmark that cannot be meaningful: every output says why, nothing is fitted."""
    reason = res["skipped"]
    line = f"WARNING: {smk.input.toptable}: up/down benchmark skipped, {reason}"
    log(line)
    print(line, file=sys.stderr)
    tio.write_csv(res["comparison"], smk.output.scores)
    tio.write_json(detection_json(res["detection"]), smk.output.detection)
    tio.write_csv(
        pd.DataFrame(columns=["feature", "importance", "features"]), smk.output.importances
    )
    tio.write_csv(pd.DataFrame(columns=["feature", "coef", "features"]), smk.output.lasso)
    rp.skipped_figure(smk.output.pca, "Up/down benchmark: PCA", reason)
    rp.skipped_figure(smk.output.importance_plot, "Up/down benchmark: importances", reason)


def main(smk, log):
    p = smk.params
    # a Parquet topTable is streamed: only the sample is held (58.9M rows whole took > 20 GB)
    df, n_rows, n_dropped = load_toptable_sample(smk.input.toptable, p.max_rows, p.seed)
    log(f"topTable {smk.input.toptable}: {n_rows} rows ({n_dropped} with missing values dropped)")
    if len(df) < n_rows:
        log(f"subsampled to {len(df)} rows (updown.max_rows)")
    features = toptable_features(df)
    res = run_both(df, p.seed, features, cv=p.cv_folds, rf_grid=p.rf_grid, n_jobs=smk.threads)
    if res.get("skipped"):
        write_skipped(smk, log, res)
        return
    tio.write_csv(res["comparison"], smk.output.scores)
    tio.write_json(detection_json(res["detection"]), smk.output.detection)
    without = "without " + ", ".join(f for f in features if f not in res["features_reduced"])
    imp = pd.concat(
        [
            res["full"]["rf_importances"].assign(features="all"),
            res["reduced"]["rf_importances"].assign(features=without),
        ]
    )
    tio.write_csv(imp, smk.output.importances)
    lasso = pd.concat(
        [
            res["full"]["lasso_coef"].assign(features="all"),
            res["reduced"]["lasso_coef"].assign(features=without),
        ]
    )
    tio.write_csv(lasso, smk.output.lasso)
    plot_pca(res["full"]["pca"], None, smk.output.pca)
    plot_importances(
        res["full"]["rf_importances"],
        smk.output.importance_plot,
        lasso_coef=res["full"]["lasso_coef"],
    )
    log(res["detection"].get("statement", ""))
    log("scores:\n" + res["comparison"].to_string(index=False))


run(main, snakemake)  # noqa: F821
