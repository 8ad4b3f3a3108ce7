"""Seed 000/001 feature transform: fit on the training split, persist, write the matrices
(of the model sample's cells)."""

from tahoeflow.errors import config_keys
from tahoeflow.logs import run
from tahoeflow.models.features import fit_transform_features, save_matrix, split_frames
from tahoeflow.models.persist import save_model
from tahoeflow.models.sample_file import read_sample, sample_note


def main(smk, log):
    cells, split, sample = read_sample(smk.input.sample)
    p = smk.params
    with config_keys(
        numeric="features.numeric",
        categorical="features.categorical",
        poly_degree="features.poly_degree",
    ):
        tr, X_train, X_test, names = fit_transform_features(
            cells, split, p.numeric, p.categorical, p.poly_degree
        )
    train, test = split_frames(cells, split)
    save_model(tr, smk.output.transformer)
    save_matrix(smk.output.train, X_train, names, train["cell_id"])
    save_matrix(smk.output.test, X_test, names, test["cell_id"])
    log(f"features: {len(names)} columns; train {X_train.shape}, test {X_test.shape}")
    log(sample_note(sample))


run(main, snakemake)  # noqa: F821
