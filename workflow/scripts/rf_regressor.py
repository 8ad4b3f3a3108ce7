"""Seed 001's model: RandomForestRegressor on delta_mean tuned with GridSearchCV."""

import sys

import pandas as pd

from tahoeflow import io as tio
from tahoeflow.errors import config_keys
from tahoeflow.logs import run
from tahoeflow.models.regression import fit_rf_regressor_grid


def main(smk, log):
    cells = pd.read_parquet(smk.input.cells)
    split = pd.read_parquet(smk.input.split)
    p = smk.params
    with config_keys(
        features="models.rf_regressor.features", grid="models.rf_regressor.grid",
        cv_folds="models.rf_regressor.cv_folds", seed="models.seed", max_train_cells="models.max_train_cells",
    ):  # fmt: skip
        res = fit_rf_regressor_grid(
            cells,
            split,
            features=p.features,
            grid=p.grid,
            cv_folds=p.cv_folds,
            seed=p.seed,
            n_jobs=smk.threads,
            max_train_cells=p.max_train_cells,
        )
    tio.write_json(res["metrics"], smk.output.metrics)
    tio.write_csv(res["cv_results"], smk.output.cv_results)
    m = res["metrics"]
    if "skipped" in m:
        line = f"WARNING: {smk.output.metrics}: random forest regressor skipped, {m['skipped']}"
        log(line)
        print(line, file=sys.stderr)
        return
    log(
        f"rf regressor best {res['best_params']}: train RMSE {m['train_rmse']:.4f}, test RMSE {m['test_rmse']:.4f}"
    )


run(main, snakemake)  # noqa: F821
