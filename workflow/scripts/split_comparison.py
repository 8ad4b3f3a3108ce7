"""Random 80/20 split (seed parity) beside a grouped split, so leakage is visible; both re-split
the model sample's cells."""

from tahoeflow import io as tio
from tahoeflow.errors import config_keys
from tahoeflow.logs import run
from tahoeflow.models.compare import comparison_splits, split_comparison
from tahoeflow.models.sample_file import read_sample, with_sample_note


def main(smk, log):
    cells, _, sample = read_sample(smk.input.sample)
    p = smk.params
    # a grouped split that is impossible (one sample or plate left) is a reason, not an error
    # the Ridge reports its ridge_features as "features"; the forest's are the defaults
    with config_keys(
        group_by="models.grouped_split_by", test_size="split.test_size", seed="split.seed", features="models.ridge.features",
        alpha="models.ridge.alpha", n_estimators="models.rf.n_estimators", max_depth="models.rf.max_depth",
        max_samples="models.rf.max_samples", max_leaf_nodes="models.rf.max_leaf_nodes",
    ):  # fmt: skip
        splits = comparison_splits(cells, p.group_by, test_size=p.test_size, seed=p.seed)
        table = split_comparison(
            cells, splits, ridge_features=p.ridge_features, alpha=p.alpha, n_estimators=p.n_estimators,
            max_depth=p.max_depth, max_samples=p.max_samples, max_leaf_nodes=p.max_leaf_nodes, seed=p.seed, n_jobs=smk.threads,
        )  # fmt: skip
    table = with_sample_note(table, sample)  # the cells re-split are the model sample's
    tio.write_csv(table, smk.output[0])
    log("split comparison:\n" + table.to_string(index=False))


run(main, snakemake)  # noqa: F821
