"""Predict every modelled gene for a new feature table (seed 003's second notebook)."""

import joblib
import pandas as pd

from tahoeflow import io as tio
from tahoeflow.errors import InputError
from tahoeflow.logs import run
from tahoeflow.pergene.lasso import predict_table


def main(smk, log):
    models = joblib.load(smk.input.models)
    path = str(smk.input.table)
    table = (
        pd.read_parquet(path)
        if path.endswith((".parquet", ".pq"))
        else pd.read_csv(path, sep=None, engine="python")
    )
    model = models[0]["model"]
    cols = list(getattr(model, "feature_names_in_", [])) or list(smk.params.feature_columns)
    missing = [c for c in cols if c not in table.columns]
    if missing or len(cols) != model.n_features_in_:
        raise InputError(
            path,
            f"needs the {model.n_features_in_} feature columns the models were fitted on; missing {missing[:5]}",
        )
    X = table[cols].dropna()
    log(f"{len(X)} rows ({len(table) - len(X)} with missing features dropped)")
    pred = predict_table(models, X.to_numpy(float), kind=smk.params.kind)
    tio.write_csv(
        pd.concat(
            [
                table.loc[X.index].drop(columns=cols).reset_index(drop=True),
                pred.reset_index(drop=True),
            ],
            axis=1,
        ),
        smk.output[0],
    )


run(main, snakemake)  # noqa: F821
