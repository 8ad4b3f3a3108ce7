"""Small helpers shared by the per-shard workflow scripts (they take the ``snakemake`` object)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.parquet as pq

from . import pp
from .shards import vocab_from_gene_metadata
from .summarize import Filters, load_shard, sample_doses


def load_filtered_shard(smk: Any, log: Any):
    """Read, validate and filter the shard exactly as the summary job did (same cells, same order)."""
    shard = smk.params.shard
    vocab = vocab_from_gene_metadata(pq.read_table(smk.input.genes), smk.input.genes)
    doses = sample_doses(pq.read_table(smk.input.samples).to_pandas(), smk.input.samples)
    loaded = load_shard(
        smk.input.data,
        shard,
        vocab,
        doses,
        Filters(**smk.params.filters),
        control_drug=smk.params.control_drug,
        allow_non_integer=smk.params.normalised,
        warn=log,
    )
    log(
        f"shard {shard.name}: {loaded.filter_counts['kept']} of {loaded.filter_counts['input']} rows kept"
    )
    return loaded, vocab


def load_hvg_matrix(smk: Any, log: Any, with_ids: bool = False):
    """log1p(CP10k) of the shard's cells (normalised over all genes), restricted to the HVG columns."""
    loaded, vocab = load_filtered_shard(smk, log)
    hvg = pq.read_table(smk.input.hvg, columns=["token_id", "highly_variable"]).to_pandas()
    cols = vocab.lookup[hvg.loc[hvg["highly_variable"], "token_id"].to_numpy()]
    X = pp.log_normalize(loaded.X)[:, np.sort(cols)]
    if with_ids:
        return X, loaded.obs["cell_id"].to_numpy()
    return X
