"""The bounded, stratified sample of the merged cells (with their split) that every model reads."""

from tahoeflow.errors import config_keys
from tahoeflow.logs import run
from tahoeflow.models.sample_file import sample_cells_file, sample_note


def main(smk, log):
    p = smk.params
    with config_keys(
        max_train_cells="models.max_train_cells", max_test_cells="models.max_test_cells", seed="models.seed"
    ):  # fmt: skip
        info = sample_cells_file(
            smk.input.cells, smk.input.split, smk.output[0],
            max_train_cells=p.max_train_cells, max_test_cells=p.max_test_cells, seed=p.seed,
        )  # fmt: skip
    log(sample_note(info))


run(main, snakemake)  # noqa: F821
