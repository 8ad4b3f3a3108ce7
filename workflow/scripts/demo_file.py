"""Write one demo expression file (hub schema)."""

from tahoeflow.demo import DemoParams, Design, write_file
from tahoeflow.logs import run


def main(smk, log):
    design = Design(DemoParams.from_dict(smk.params.demo))
    write_file(design, smk.params.file_index, smk.output[0])
    log(f"file {smk.params.file_index}: {design.p.cells_per_file} cells written")


run(main, snakemake)  # noqa: F821
