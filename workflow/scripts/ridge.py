"""Model 1 (seed 000): Ridge regression of delta_mean on one-hot condition features."""

import sys

import pyarrow as pa

from tahoeflow import io as tio
from tahoeflow.errors import config_keys
from tahoeflow.logs import run
from tahoeflow.models.ceiling import ridge_fraction_of_ceiling
from tahoeflow.models.persist import save_model
from tahoeflow.models.regression import fit_ridge
from tahoeflow.models.sample_file import read_sample, sample_metrics


def main(smk, log):
    cells, split, sample = read_sample(smk.input.sample)
    p = smk.params
    with config_keys(
        alpha="models.ridge.alpha", features="models.ridge.features", cv_folds="models.cv_folds",
        seed="models.seed",
    ):  # fmt: skip
        res = fit_ridge(
            cells,
            split,
            alpha=p.alpha,
            features=p.features,
            cv_folds=p.cv_folds,
            seed=p.seed,
        )
    m = {**res.metrics, **sample_metrics(sample)}
    if "skipped" in m:  # nothing fitted: the metrics say why, the predictions are empty
        line = f"WARNING: {smk.output.metrics}: Ridge skipped, {m['skipped']}"
        log(line)
        print(line, file=sys.stderr)
        save_model({"skipped": m["skipped"]}, smk.output.model)
        tio.write_parquet(PREDICTIONS.empty_table(), smk.output.predictions)
        tio.write_json(m, smk.output.metrics)
        return
    ceiling = ridge_fraction_of_ceiling(res, cells)
    save_model(res.model, smk.output.model)
    tio.write_parquet(
        pa.Table.from_pandas(res.predictions, preserve_index=False), smk.output.predictions
    )
    tio.write_json({**m, "ceiling": ceiling}, smk.output.metrics)
    log(
        f"ridge alpha={p.alpha}: test R2 {_fmt(m, 'test_r2')}, ceiling {_fmt(ceiling, 'test_r2_ceiling')}"
    )


def _fmt(metrics, key):
    """A metric for the log: 4 decimals, or "undefined (<reason>)" when it is null."""
    v = metrics.get(key)
    if v is None:
        return f"undefined ({metrics.get('null_reasons', {}).get(key, 'no value')})"
    return f"{v:.4f}"


PREDICTIONS = pa.schema(
    [
        ("cell_id", pa.string()),
        ("split", pa.string()),
        ("y_true", pa.float64()),
        ("y_pred", pa.float64()),
    ]
)


run(main, snakemake)  # noqa: F821
