"""Merge per-shard cell tables; add delta_mean against DMSO of the same line and plate."""

import sys

from tahoeflow import io as tio
from tahoeflow.cells.summarize import filter_qc_table, filter_warnings
from tahoeflow.logs import run
from tahoeflow.merge.cells import merge_cells
from tahoeflow.merge.shard_group import qc_records


def main(smk, log):
    records = qc_records(smk.input.qc)
    for line in filter_warnings(records, smk.params.filters):
        log(f"WARNING: {line}")
        print(f"WARNING: {line}", file=sys.stderr)
    qc = filter_qc_table(records)  # raises when the filters left no cell
    tio.write_csv(qc, smk.output.filter_qc)
    total = qc.iloc[-1]
    log(f"merging {len(smk.input.cells)} summary groups, {int(total['kept'])} cells")
    parts = (list(smk.input.sums), list(smk.input.ids)) if len(smk.input.sums) else None
    counts = merge_cells(smk.input.cells, smk.output.cells, smk.output.control_qc, parts)
    log(f"delta_mean control level counts: {counts}")
    if counts["none"]:
        n = sum(counts.values())
        what = "no cell is a control" if counts["none"] == n else "some cell lines have none"
        line = (
            f"WARNING: {smk.output.cells}: {counts['none']} of {n} cells have no control cell of "
            f"their cell line ({what}): delta_mean is null there (control_level 'none'; counts "
            f"per line and plate in {smk.output.control_qc})"
        )
        log(line)
        print(line, file=sys.stderr)


run(main, snakemake)  # noqa: F821
