"""Sum per-shard pseudobulk counts per (sample, cell line, gene), one cell line at a time
when the inputs are partial merges."""

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.merge.pseudobulk import merge_pseudobulk_by_line


def main(smk, log):
    groups, n_rows, n_row_groups = merge_pseudobulk_by_line(
        smk.input.pseudobulk, smk.input.cells, smk.output.counts
    )
    tio.write_parquet(groups, smk.output.groups)
    log(
        f"pseudobulk: {groups.num_rows} (sample, cell line) groups, {n_rows} non-zero "
        f"entries in {n_row_groups} row groups (one cell line each)"
    )


run(main, snakemake)  # noqa: F821
