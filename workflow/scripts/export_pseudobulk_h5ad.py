"""Pseudobulk AnnData: obs = (sample, cell line) wells, var = genes, X = summed counts.

Written block by block of groups from the merged long table (tahoeflow.export.pseudobulk_h5ad):
memory follows one block and the groups, not the long table.
"""

import pandas as pd

from tahoeflow.export.pseudobulk_h5ad import write_pseudobulk_h5ad
from tahoeflow.logs import run


def main(smk, log):
    i = smk.input
    genes = pd.read_parquet(i.genes, columns=["token_id", "ensembl_id", "gene_symbol"])
    info = write_pseudobulk_h5ad(
        i.counts,
        pd.read_parquet(i.groups),
        genes,
        smk.output[0],
        groups_path=i.groups,
        genes_path=i.genes,
    )
    log(
        f"{info['n_obs']} wells x {info['n_vars']} genes, {info['nnz']} non-zero entries "
        f"written in {info['blocks']} blocks"
    )


run(main, snakemake)  # noqa: F821
