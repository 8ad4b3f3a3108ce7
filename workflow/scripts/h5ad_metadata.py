"""Gene table (token ids = column + 3, as Tahoe's) and an empty drug table for an h5ad source."""

import pyarrow as pa

from tahoeflow import io as tio
from tahoeflow.config import h5ad_settings
from tahoeflow.errors import config_keys
from tahoeflow.logs import run
from tahoeflow.sources.h5ad import check_same_genes, gene_metadata_table, h5ad_gene_table


def main(smk, log):
    s = h5ad_settings(smk.params.h5ad)
    check_same_genes(list(smk.input), s.layer)
    with config_keys(
        gene_id_column="source.h5ad.gene_id_column",
        gene_symbol_column="source.h5ad.gene_symbol_column",
    ):
        genes = h5ad_gene_table(
            smk.input[0],
            gene_id_column=s.gene_id_column,
            gene_symbol_column=s.gene_symbol_column,
            layer=s.layer,
        )
    tio.write_parquet(gene_metadata_table(genes), smk.output.gene)
    empty = pa.table(
        {
            "drug": pa.array([], pa.string()),
            "targets": pa.array([], pa.string()),
            "moa-fine": pa.array([], pa.string()),
        }
    )
    tio.write_parquet(empty, smk.output.drug)
    log(f"{len(genes)} genes from {smk.input[0]}")


run(main, snakemake)  # noqa: F821
