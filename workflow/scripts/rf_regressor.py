"""Seed 001's model: RandomForestRegressor on delta_mean tuned with GridSearchCV."""

import sys

from tahoeflow import io as tio
from tahoeflow.errors import config_keys
from tahoeflow.logs import run
from tahoeflow.models.regression import fit_rf_regressor_grid
from tahoeflow.models.sample_file import read_sample, sample_metrics


def main(smk, log):
    cells, split, sample = read_sample(smk.input.sample)
    p = smk.params
    with config_keys(
        features="models.rf_regressor.features", grid="models.rf_regressor.grid",
        cv_folds="models.rf_regressor.cv_folds", seed="models.seed",
    ):  # fmt: skip
        res = fit_rf_regressor_grid(
            cells,
            split,
            features=p.features,
            grid=p.grid,
            cv_folds=p.cv_folds,
            seed=p.seed,
            n_jobs=smk.threads,
        )
    m = {**res["metrics"], **sample_metrics(sample)}
    tio.write_json(m, smk.output.metrics)
    tio.write_csv(res["cv_results"], smk.output.cv_results)
    if "skipped" in m:
        line = f"WARNING: {smk.output.metrics}: random forest regressor skipped, {m['skipped']}"
        log(line)
        print(line, file=sys.stderr)
        return
    log(
        f"rf regressor best {res['best_params']}: train RMSE {m['train_rmse']:.4f}, test RMSE {m['test_rmse']:.4f}"
    )


run(main, snakemake)  # noqa: F821
