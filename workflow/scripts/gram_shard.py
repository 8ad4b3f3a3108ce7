"""Partial Gram matrix X^T X and column sums of log1p(CP10k) over the HVGs, for one shard."""

import numpy as np

from tahoeflow import io as tio
from tahoeflow.embed import gram_partial
from tahoeflow.logs import run
from tahoeflow.workflow_io import load_hvg_matrix


def main(smk, log):
    X = load_hvg_matrix(smk, log)
    G, colsum, n = gram_partial(X)
    with tio.atomic_path(smk.output[0]) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, gram=G, colsum=colsum, n=np.int64(n))
    log(f"Gram {G.shape} over {n} cells")


run(main, snakemake)  # noqa: F821
