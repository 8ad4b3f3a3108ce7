"""Write one demo expression file (hub schema) on Tahoe-100M's real design."""

import dataclasses

from tahoeflow.errors import config_keys
from tahoeflow.logs import run
from tahoeflow.sources.demo import DemoParams, Design
from tahoeflow.sources.demo_files import write_file

DEMO_KEYS = {f.name: f"demo.{f.name}" for f in dataclasses.fields(DemoParams)}


def main(smk, log):
    with config_keys(**DEMO_KEYS):  # the library names its arguments; these are demo.* keys
        design = Design(DemoParams.from_dict(smk.params.demo), smk.params.metadata_dir)
        i = smk.params.file_index
        write_file(design, i, smk.output[0])
    plate = design.plate_names[design.file_plate(i)]
    log(f"file {i}: {design.p.cells_per_file} cells of {plate} written")


run(main, snakemake)  # noqa: F821
