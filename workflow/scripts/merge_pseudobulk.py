"""Sum per-shard pseudobulk counts per (sample, cell line, gene)."""

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.merge import merge_pseudobulk


def main(smk, log):
    counts, groups = merge_pseudobulk(smk.input.pseudobulk, smk.input.cells)
    tio.write_parquet(counts, smk.output.counts)
    tio.write_parquet(groups, smk.output.groups)
    log(
        f"pseudobulk: {groups.num_rows} (sample, cell line) groups, {counts.num_rows} non-zero entries"
    )


run(main, snakemake)  # noqa: F821
