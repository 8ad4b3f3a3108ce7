"""Pseudobulk DE of the cell lines of one part (a contrast never crosses lines): one job each,
one line's pseudobulk held at a time."""

from tahoeflow.de.parts import de_part
from tahoeflow.logs import run


def main(smk, log):
    p = smk.params
    part = int(smk.wildcards.part)
    n_lines, n_con, n_rows = de_part(
        smk.input.counts, smk.input.groups, smk.input.genes, part, p.n_parts,
        smk.output.table, smk.output.skipped, method=p.method, log=log,
        min_cells=p.min_cells, min_control_wells=p.min_control_wells,
        prior_count=p.prior_count, gene_filter=p.voom["gene_filter"],
        voom_axis=p.voom["axis"], voom_fitted=p.voom["fitted"], control=p.control,
        pool_plates=p.pool_plates,
    )  # fmt: skip
    log(f"part {part}: {n_lines} cell lines, {n_con} contrasts, {n_rows} rows")


run(main, snakemake)  # noqa: F821
