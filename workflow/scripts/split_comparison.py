"""Random 80/20 split (seed parity) beside a grouped split, so leakage is visible."""

import pandas as pd

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.models.core import comparison_splits, split_comparison


def main(smk, log):
    cells = pd.read_parquet(smk.input.cells)
    p = smk.params
    # a grouped split that is impossible (one sample or plate left) is a reason, not an error
    splits = comparison_splits(cells, p.group_by, test_size=p.test_size, seed=p.seed)
    table = split_comparison(
        cells, splits, ridge_features=p.ridge_features, alpha=p.alpha, n_estimators=p.n_estimators,
        max_depth=p.max_depth, max_samples=p.max_samples, seed=p.seed, n_jobs=smk.threads, max_train_cells=p.max_train_cells,
    )  # fmt: skip
    tio.write_csv(table, smk.output[0])
    log("split comparison:\n" + table.to_string(index=False))


run(main, snakemake)  # noqa: F821
