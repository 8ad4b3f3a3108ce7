"""Pseudobulk AnnData: obs = (sample, cell line) wells, var = genes, X = summed counts."""

import pandas as pd

from tahoeflow.export.h5ad import pseudobulk_to_anndata, write_h5ad
from tahoeflow.logs import run


def main(smk, log):
    i = smk.input
    genes = pd.read_parquet(i.genes, columns=["token_id", "ensembl_id", "gene_symbol"])
    adata = pseudobulk_to_anndata(pd.read_parquet(i.counts), pd.read_parquet(i.groups), genes)
    write_h5ad(adata, smk.output[0])
    log(f"{adata.n_obs} wells x {adata.n_vars} genes")


run(main, snakemake)  # noqa: F821
