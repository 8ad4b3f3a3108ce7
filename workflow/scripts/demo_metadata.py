"""Write the demo's metadata tables (the real ones) and ground truth."""

import dataclasses

from tahoeflow.errors import config_keys
from tahoeflow.logs import run
from tahoeflow.sources.demo import DemoParams, Design
from tahoeflow.sources.demo_files import write_metadata

DEMO_KEYS = {f.name: f"demo.{f.name}" for f in dataclasses.fields(DemoParams)}


def main(smk, log):
    with config_keys(**DEMO_KEYS):  # the library names its arguments; these are demo.* keys
        design = Design(DemoParams.from_dict(smk.params.demo), smk.params.metadata_dir)
    write_metadata(design, dict(smk.output.items()))
    files = {design.plate_names[i]: len(f) for i, f in enumerate(design.plate_files)}
    log(
        f"demo design on Tahoe-100M's real metadata: plates {files} (files per plate), "
        f"{len(design.line_ids)} cell lines, {len(design.drug_names)} drugs, "
        f"{len(design.sample_names)} wells, {int(design.active.sum())} active and "
        f"{int(design.cytotoxic.sum())} cytotoxic drugs"
    )


run(main, snakemake)  # noqa: F821
