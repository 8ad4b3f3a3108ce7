"""cells x PCs AnnData: obsm X_pca, obs metadata and cluster, uns variance ratios."""

import json

import pandas as pd

from tahoeflow.export.h5ad import embeddings_to_anndata, write_h5ad
from tahoeflow.logs import run


def main(smk, log):
    i = smk.input
    adata = embeddings_to_anndata(
        pd.read_parquet(i.embeddings),
        pd.read_csv(i.variance),
        pd.read_parquet(i.components),
        json.loads(open(i.kmeans).read()),
    )
    write_h5ad(adata, smk.output[0])
    log(f"{adata.n_obs} cells x {adata.obsm['X_pca'].shape[1]} PCs")


run(main, snakemake)  # noqa: F821
