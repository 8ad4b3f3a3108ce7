"""Highly variable genes from the merged gene statistics (scanpy's flavors, reproduced)."""

import sys

import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.embed.hvg import highly_variable_genes_from_stats
from tahoeflow.errors import config_keys
from tahoeflow.logs import run


def main(smk, log):
    def warn(message):  # one line, to the job log and to stderr
        message = f"WARNING: config key 'embed.hvg.n_top': {message}"
        log(message)
        print(message, file=sys.stderr, flush=True)

    g = pq.read_table(smk.input[0]).to_pandas()
    with config_keys(n_top="embed.hvg.n_top", flavor="embed.hvg.flavor"):
        df = highly_variable_genes_from_stats(
            int(g["n_obs"].iloc[0]),
            g["sum_norm"].to_numpy(),
            g["sumsq_norm"].to_numpy(),
            sum_log=g["sum_log"].to_numpy(),
            sumsq_log=g["sumsq_log"].to_numpy(),
            n_top=smk.params.n_top,
            flavor=smk.params.flavor,
            warn=warn,
        )
    out = g[["token_id", "ensembl_id", "gene_symbol"]].join(df.reset_index(drop=True))
    tio.write_parquet(pa.Table.from_pandas(out, preserve_index=False), smk.output[0])
    log(f"{int(out['highly_variable'].sum())} HVGs ({smk.params.flavor}) of {len(out)} genes")


run(main, snakemake)  # noqa: F821
