"""Cell-cycle genes and their control genes (scanpy's draw) from the merged gene statistics."""

import sys

import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.phenotypes.cellcycle import draw_from_stats, read_gene_lists


def main(smk, log):
    def warn(message):  # one line, to the job log and to stderr
        log(message)
        print(message, file=sys.stderr, flush=True)

    stats = pq.read_table(smk.input.stats, columns=["token_id", "gene_symbol", "mean_log"])
    lists = read_gene_lists(smk.params.lists)
    p = smk.params
    draw = draw_from_stats(stats.to_pandas(), lists, n_bins=p.n_bins, seed=p.seed)
    for phase, genes in draw["missing"].items():
        warn(
            f"WARNING: {smk.params.lists}: {len(genes)} {phase}-phase gene(s) not in the data's "
            f"gene table, left out of the score as scanpy does: {', '.join(genes)}"
        )
    if "skipped" in draw:
        warn(f"WARNING: {smk.output[0]}: cell-cycle scoring skipped, {draw['skipped']}")
    else:
        log(
            f"{len(draw['s'])} S genes ({len(draw['s_ctrl'])} controls), {len(draw['g2m'])} "
            f"G2M genes ({len(draw['g2m_ctrl'])} controls) of {draw['n_genes']} genes"
        )
    tio.write_json(draw, smk.output[0])


run(main, snakemake)  # noqa: F821
