"""Project one shard's cells onto the principal components."""

import pyarrow as pa

from tahoeflow import io as tio
from tahoeflow.embed import pca_result_from_npz, project
from tahoeflow.logs import run
from tahoeflow.workflow_io import load_hvg_matrix


def main(smk, log):
    X, cell_ids = load_hvg_matrix(smk, log, with_ids=True)
    Z = project(X, pca_result_from_npz(smk.input.model))
    cols = {"cell_id": pa.array(cell_ids, pa.string())}
    cols.update({f"pc{i + 1}": Z[:, i] for i in range(Z.shape[1])})
    tio.write_parquet(pa.table(cols), smk.output[0])
    log(f"projected {Z.shape[0]} cells onto {Z.shape[1]} components")


run(main, snakemake)  # noqa: F821
