"""Model 1 (seed 000): Ridge regression of delta_mean on one-hot condition features."""

import pandas as pd
import pyarrow as pa

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.models import fit_ridge, ridge_fraction_of_ceiling, save_model


def main(smk, log):
    cells = pd.read_parquet(smk.input.cells)
    split = pd.read_parquet(smk.input.split)
    p = smk.params
    res = fit_ridge(
        cells, split, alpha=p.alpha, features=p.features, cv_folds=p.cv_folds, seed=p.seed
    )
    ceiling = ridge_fraction_of_ceiling(res, cells)
    save_model(res.model, smk.output.model)
    tio.write_parquet(
        pa.Table.from_pandas(res.predictions, preserve_index=False), smk.output.predictions
    )
    tio.write_json({**res.metrics, "ceiling": ceiling}, smk.output.metrics)
    log(
        f"ridge alpha={p.alpha}: test R2 {res.metrics['test_r2']:.4f}, ceiling {ceiling['test_r2_ceiling']}"
    )


run(main, snakemake)  # noqa: F821
