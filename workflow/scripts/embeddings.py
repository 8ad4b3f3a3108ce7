"""Cluster the projections with KMeans and write seed 002's embeddings table."""

from tahoeflow import io as tio
from tahoeflow.embed.table import write_embeddings
from tahoeflow.errors import config_keys
from tahoeflow.logs import run


def main(smk, log):
    p = smk.params
    with config_keys(
        n_clusters="embed.kmeans.n_clusters",
        n_init="embed.kmeans.n_init",
        batch_size="embed.kmeans.batch_size",
        max_fit_cells="embed.kmeans.max_fit_cells",
    ):
        info = write_embeddings(
            smk.input.proj,
            smk.input.cells,
            smk.output.parquet,
            n_clusters=p.n_clusters,
            seed=p.seed,
            minibatch_threshold=p.minibatch_threshold,
            batch_size=p.batch_size,
            n_init=p.n_init,
            max_fit_cells=p.max_fit_cells,
            log=log,
        )
    tio.write_json(info, smk.output.kmeans)


run(main, snakemake)  # noqa: F821
