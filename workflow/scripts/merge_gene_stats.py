"""Sum per-shard gene statistics."""

import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.merge.gene_stats import merge_gene_stats
from tahoeflow.merge.shard_group import qc_records


def main(smk, log):
    n_obs = sum(int(r["kept"]) for r in qc_records(smk.input.qc))
    table = merge_gene_stats(smk.input.stats, pq.read_table(smk.input.genes), n_obs)
    tio.write_parquet(table, smk.output[0])
    log(f"merged {len(smk.input.stats)} inputs: {table.num_rows} genes over {n_obs} cells")


run(main, snakemake)  # noqa: F821
