"""Partial Gram matrix X^T X and column sums of log1p(CP10k) over the HVGs, for a group of shards.

The shards are read one at a time; their partial sums are added in shard order. The shards'
raw HVG counts and cell totals are kept in a cache file, from which the projection job
rebuilds the same matrix without decoding the shards again.
"""

import numpy as np

from tahoeflow import io as tio
from tahoeflow.cells.normalize import log_normalize_selected
from tahoeflow.embed.hvg_cache import hvg_cache_writer
from tahoeflow.embed.pca import combine_gram, gram_partial
from tahoeflow.logs import run
from tahoeflow.workflow_io import data_paths, hvg_tokens
from tahoeflow.workflow_selected import load_selected


def main(smk, log):
    tokens = hvg_tokens(smk.input.hvg)
    with hvg_cache_writer(smk.output.cache, tokens.size) as cache:

        def parts():
            for s, p in zip(smk.params.shards, data_paths(smk), strict=True):
                counts, totals, obs, _ = load_selected(smk, log, tokens, shard=s, data_path=p)
                cache.write(counts, totals, obs["cell_id"].to_numpy())
                yield gram_partial(log_normalize_selected(counts, totals))

        G, colsum, n = combine_gram(parts())
        with tio.atomic_path(smk.output.gram) as tmp, open(tmp, "wb") as fh:
            np.savez(fh, gram=G, colsum=colsum, n=np.int64(n))
    log(f"Gram {G.shape} over {n} cells of {len(smk.params.shards)} shard(s); HVG counts cached")


run(main, snakemake)  # noqa: F821
