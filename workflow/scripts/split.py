"""The one train/test split every model uses, streamed over the merged cells."""

from tahoeflow.errors import config_keys
from tahoeflow.logs import run
from tahoeflow.models.split_file import split_cells_file


def main(smk, log):
    # a grouped split needs 2 groups: known only from the cells, reported under split.by
    with config_keys(by="split.by", test_size="split.test_size", seed="split.seed"):
        counts = split_cells_file(
            smk.input.cells,
            smk.output[0],
            by=smk.params.by,
            test_size=smk.params.test_size,
            seed=smk.params.seed,
        )
    log(f"split by {smk.params.by}: {counts}")


run(main, snakemake)  # noqa: F821
