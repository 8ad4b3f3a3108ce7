"""Sum per-shard pseudobulk counts per (sample, cell line, gene)."""

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.merge.pseudobulk import merge_pseudobulk, write_pseudobulk


def main(smk, log):
    counts, groups = merge_pseudobulk(smk.input.pseudobulk, smk.input.cells)
    n_row_groups = write_pseudobulk(counts, smk.output.counts)
    tio.write_parquet(groups, smk.output.groups)
    log(
        f"pseudobulk: {groups.num_rows} (sample, cell line) groups, {counts.num_rows} non-zero "
        f"entries in {n_row_groups} row groups (one cell line each)"
    )


run(main, snakemake)  # noqa: F821
