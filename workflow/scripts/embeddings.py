"""Concatenate projections, cluster with KMeans, write seed 002's embeddings table."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.embed import kmeans
from tahoeflow.logs import run

META = ["cell_id", "sample", "plate", "drug", "dose_uM", "cell_line_id", "moa_fine"]


def main(smk, log):
    proj = pa.concat_tables([pq.read_table(p) for p in smk.input.proj]).to_pandas()
    pcs = [c for c in proj.columns if c.startswith("pc")]
    labels, _, inertia, method = kmeans(
        proj[pcs].to_numpy(np.float32),
        smk.params.n_clusters,
        seed=smk.params.seed,
        minibatch_threshold=smk.params.minibatch_threshold,
    )
    log(
        f"{method} with {smk.params.n_clusters} clusters on {len(proj)} cells: inertia {inertia:.4g}"
    )
    cells = pq.read_table(smk.input.cells, columns=META).to_pandas()
    if (
        len(cells) != len(proj)
        or not (cells["cell_id"].to_numpy() == proj["cell_id"].to_numpy()).all()
    ):
        raise RuntimeError("projections and merged cells are not in the same order")
    out = pd.concat([proj[pcs], cells, pd.Series(labels, name="cluster")], axis=1)
    tio.write_parquet(pa.Table.from_pandas(out, preserve_index=False), smk.output.parquet)
    tio.write_csv(out, smk.output.csv, float_format="%.6g")
    tio.write_json(
        {
            "method": method,
            "n_clusters": smk.params.n_clusters,
            "inertia": inertia,
            "n_cells": len(out),
        },
        smk.output.kmeans,
    )


run(main, snakemake)  # noqa: F821
