"""Partial Gram matrix X^T X and column sums of log1p(CP10k) over the HVGs, for a group of shards.

The shards are read one at a time; their partial sums are added in shard order.
"""

import numpy as np

from tahoeflow import io as tio
from tahoeflow.embed.pca import combine_gram, gram_partial
from tahoeflow.logs import run
from tahoeflow.workflow_io import data_paths, hvg_tokens, load_hvg_matrix


def main(smk, log):
    tokens = hvg_tokens(smk.input.hvg)
    parts = (
        gram_partial(load_hvg_matrix(smk, log, shard=s, data_path=p, tokens=tokens))
        for s, p in zip(smk.params.shards, data_paths(smk), strict=True)
    )
    G, colsum, n = combine_gram(parts)
    with tio.atomic_path(smk.output[0]) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, gram=G, colsum=colsum, n=np.int64(n))
    log(f"Gram {G.shape} over {n} cells of {len(smk.params.shards)} shard(s)")


run(main, snakemake)  # noqa: F821
