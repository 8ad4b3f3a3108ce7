"""Concatenate projections, cluster with KMeans, write seed 002's embeddings table."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.embed.kmeans import kmeans
from tahoeflow.errors import config_keys
from tahoeflow.logs import run

META = ["cell_id", "sample", "plate", "drug", "dose_uM", "cell_line_id", "moa_fine"]


def main(smk, log):
    proj = pa.concat_tables([pq.read_table(p) for p in smk.input.proj])
    pcs = [c for c in proj.column_names if c.startswith("pc")]
    Z = np.column_stack([proj.column(c).to_numpy() for c in pcs]).astype(np.float32, copy=False)
    with config_keys(
        n_clusters="embed.kmeans.n_clusters",
        n_init="embed.kmeans.n_init",
        batch_size="embed.kmeans.batch_size",
    ):
        labels, _, inertia, method = kmeans(
            Z,
            smk.params.n_clusters,
            seed=smk.params.seed,
            minibatch_threshold=smk.params.minibatch_threshold,
            batch_size=smk.params.batch_size,
            n_init=smk.params.n_init,
        )
    log(f"{method} with {smk.params.n_clusters} clusters on {len(Z)} cells: inertia {inertia:.4g}")
    cells = pq.read_table(smk.input.cells, columns=META)
    if cells.num_rows != proj.num_rows or not cells.column("cell_id").equals(
        proj.column("cell_id")
    ):
        raise RuntimeError("projections and merged cells are not in the same order")
    out = pa.table(
        {
            **{c: proj.column(c) for c in pcs},
            **{c: cells.column(c) for c in META},
            "cluster": pa.array(labels, pa.int32()),
        }
    )
    tio.write_parquet(out, smk.output.parquet)
    tio.write_json(
        {
            "method": method,
            "n_clusters": smk.params.n_clusters,
            "n_init": smk.params.n_init,
            "batch_size": smk.params.batch_size,  # used by minibatch_kmeans only
            "inertia": inertia,
            "n_cells": len(Z),
        },
        smk.output.kmeans,
    )


run(main, snakemake)  # noqa: F821
