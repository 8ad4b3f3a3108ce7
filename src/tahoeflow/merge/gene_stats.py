"""Merge of the per-shard gene statistics: element-wise sums (exact: sums of sums).

A partial merge (:func:`sum_gene_stats_part`, for ``merge.fan_in``) writes a shard's layout,
so partials merge like shards; only the order of the float additions differs (last bits).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from tahoeflow import io as tio
from tahoeflow.cells.summarize import GENE_STAT_COLUMNS, sum_gene_stats_tables


def merge_gene_stats(paths: Sequence[str | Path], gene_metadata: pa.Table, n_obs: int) -> pa.Table:
    """Sum per-shard gene statistics; add annotations, n_obs and the mean/variance over all cells.

    mean_log and var_log are the mean and the unbiased variance (ddof=1) of log1p(CP10k) over
    all ``n_obs`` cells, zeros included.
    """
    tokens, acc = _sum_stats(paths)
    meta = gene_metadata.to_pandas().set_index("token_id").reindex(tokens)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_log = acc["sum_log"] / n_obs
        var_log = (acc["sumsq_log"] - n_obs * mean_log**2) / (n_obs - 1)
    return pa.table(
        {
            "token_id": pa.array(tokens, pa.int64()),
            "ensembl_id": pa.array(meta["ensembl_id"].astype(object).to_numpy(), pa.string()),
            "gene_symbol": pa.array(meta["gene_symbol"].astype(object).to_numpy(), pa.string()),
            **{c: acc[c] for c in GENE_STAT_COLUMNS},
            "n_obs": pa.array(np.full(tokens.size, n_obs), pa.int64()),
            "mean_log": mean_log,
            "var_log": np.maximum(var_log, 0.0),
        }
    )


def _sum_stats(paths: Sequence[str | Path]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(token ids, element-wise sums of GENE_STAT_COLUMNS), added in the order of ``paths``."""
    return sum_gene_stats_tables((p, tio.read_table(p)) for p in paths)


def sum_gene_stats_part(paths: Sequence[str | Path]) -> pa.Table:
    """A partial merge of gene statistics: token_id and the summed GENE_STAT_COLUMNS of
    ``paths`` (shard gene_stats tables or other partials: the same columns), in the same
    layout, so that partials merge like shards (:func:`merge_gene_stats` reads either)."""
    tokens, acc = _sum_stats(paths)
    return pa.table({"token_id": pa.array(tokens, pa.int64()), **acc})
