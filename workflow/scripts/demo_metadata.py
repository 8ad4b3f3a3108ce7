"""Write the demo's metadata tables and ground truth."""

from tahoeflow.demo import DemoParams, Design, write_metadata
from tahoeflow.logs import run


def main(smk, log):
    design = Design(DemoParams.from_dict(smk.params.demo))
    write_metadata(design, dict(smk.output.items()))
    log(
        f"demo design: {design.p.n_cell_lines} cell lines, {design.p.n_drugs} drugs, {len(design.sample_names)} wells"
    )


run(main, snakemake)  # noqa: F821
