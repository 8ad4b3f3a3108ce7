"""Write one demo expression file (hub schema) on Tahoe-100M's real design."""

from tahoeflow.logs import run
from tahoeflow.sources.demo import DemoParams, Design, write_file


def main(smk, log):
    design = Design(DemoParams.from_dict(smk.params.demo), smk.params.metadata_dir)
    i = smk.params.file_index
    write_file(design, i, smk.output[0])
    plate = design.plate_names[design.file_plate(i)]
    log(f"file {i}: {design.p.cells_per_file} cells of {plate} written")


run(main, snakemake)  # noqa: F821
