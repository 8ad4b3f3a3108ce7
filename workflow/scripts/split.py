"""The one train/test split every model uses."""

import pandas as pd
import pyarrow as pa

from tahoeflow import io as tio
from tahoeflow.errors import config_keys
from tahoeflow.logs import run
from tahoeflow.models.features import make_split


def main(smk, log):
    cells = pd.read_parquet(smk.input.cells, columns=["cell_id", "sample", "plate"])
    # a grouped split needs 2 groups: known only from the cells, reported under split.by
    with config_keys(by="split.by", test_size="split.test_size", seed="split.seed"):
        split = make_split(
            cells, by=smk.params.by, test_size=smk.params.test_size, seed=smk.params.seed
        )
    tio.write_parquet(pa.Table.from_pandas(split, preserve_index=False), smk.output[0])
    log(f"split by {smk.params.by}: {split['split'].value_counts().to_dict()}")


run(main, snakemake)  # noqa: F821
