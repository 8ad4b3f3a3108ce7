"""One partial merge of a hierarchical merge (merge.fan_in): cells, gene_stats or pseudobulk."""

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.merge.cells import cells_part, cells_part_merge
from tahoeflow.merge.gene_stats import sum_gene_stats_part
from tahoeflow.merge.pseudobulk import pseudobulk_part, write_pseudobulk


def main(smk, log):
    kind = smk.params.kind
    if kind == "cells" and "cells" in smk.input.keys():
        n = cells_part(smk.input.cells, smk.params.indices, smk.output.sums, smk.output.ids)
        log(f"cells: {len(smk.input.cells)} summary groups, {n} cells")
    elif kind == "cells":
        n = cells_part_merge(smk.input.sums, smk.input.ids, smk.output.sums, smk.output.ids)
        log(f"cells: {len(smk.input.sums)} partial merges, {n} cells")
    elif kind == "gene_stats":
        tio.write_parquet(sum_gene_stats_part(list(smk.input)), smk.output[0])
        log(f"gene statistics: {len(smk.input)} inputs")
    else:
        table = pseudobulk_part(list(smk.input))
        write_pseudobulk(table, smk.output[0])  # one cell line per row group: read by line
        log(f"pseudobulk: {len(smk.input)} inputs, {table.num_rows} non-zero entries")


run(main, snakemake)  # noqa: F821
