"""Small helpers shared by the per-shard workflow scripts (they take the ``snakemake`` object)."""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from tahoeflow.cells.doses import sample_doses
from tahoeflow.cells.plan import Shard
from tahoeflow.cells.summarize import Filters, LoadedShard, load_shard
from tahoeflow.cells.vocab import Vocab, vocab_from_gene_metadata
from tahoeflow.errors import config_keys
from tahoeflow.sources.manifest import check_file_rows


@functools.lru_cache(maxsize=4)
def gene_vocab(gene_metadata: str) -> Vocab:
    """The gene vocabulary (read once per process: a job may load several shards)."""
    return vocab_from_gene_metadata(pq.read_table(gene_metadata), gene_metadata)


@functools.lru_cache(maxsize=4)
def dose_table(sample_metadata: str) -> Any:
    return sample_doses(pq.read_table(sample_metadata).to_pandas(), sample_metadata)


def as_shard(shard: Shard | dict[str, Any]) -> Shard:
    """A shard from a job's params (a plain dict there, so Snakemake can record it)."""
    return shard if isinstance(shard, Shard) else Shard(**shard)


def load_filtered_shard(
    smk: Any,
    log: Any,
    shard: Shard | dict[str, Any] | None = None,
    data_path: str | None = None,
    file_rows: int | None = None,
) -> tuple[LoadedShard, Vocab]:
    """Read, validate and filter a shard exactly as the summary job did (same cells, same order).

    Dispatches on ``params.source["kind"]``: Tahoe Parquet files (demo, hub, local) or h5ad
    files. ``shard``/``data_path`` default to the job's own (``params.shard``, ``input.data``).
    ``file_rows``: the file's row count from a manifest, checked against its footer.
    """
    p = smk.params
    shard = as_shard(shard or p.shard)
    data_path = data_path or smk.input.data
    filters = Filters(**p.filters)
    if p.source["kind"] == "h5ad":
        from tahoeflow.config import h5ad_settings
        from tahoeflow.sources.h5ad import vocab_from_gene_table
        from tahoeflow.sources.h5ad_shard import load_h5ad_shard

        s = h5ad_settings(p.source["h5ad"])
        genes = pq.read_table(smk.input.genes).to_pandas()
        vocab = vocab_from_gene_table(genes, s.mito_prefix)
        with config_keys(obs_map="source.h5ad.obs_map", dose_unit="source.h5ad.dose_unit"):
            loaded = load_h5ad_shard(
                data_path, shard.row_start, shard.row_stop, s.obs_map,
                s.control_value or p.control_drug, filters=filters,
                allow_non_integer=p.normalised, shard_name=shard.name, layer=s.layer,
                dose_unit=s.dose_unit, warn=log,
            )  # fmt: skip
    else:
        # the plan's rows came from a manifest: hold the file's footer to them
        expected = shard.file_rows if shard.file_rows is not None else file_rows
        if expected is not None:
            check_file_rows(data_path, int(expected))
        vocab = gene_vocab(str(smk.input.genes))
        samples = smk.input.samples if isinstance(smk.input.samples, str) else smk.input.samples[0]
        doses = dose_table(str(samples))
        loaded = load_shard(
            data_path, shard, vocab, doses, filters,
            control_drug=p.control_drug, allow_non_integer=p.normalised, warn=log,
        )  # fmt: skip
    log(
        f"shard {shard.name}: {loaded.filter_counts['kept']} of {loaded.filter_counts['input']} rows kept"
    )
    return loaded, vocab


def data_paths(smk: Any) -> list[str]:
    """``input.data`` as a list of paths (Snakemake gives a one-file input as a plain string)."""
    data = smk.input.data
    return [str(data)] if isinstance(data, str) else [str(p) for p in data]


def hvg_tokens(hvg_path: str) -> np.ndarray:
    """Token ids of the HVGs in ``hvg.parquet``, sorted."""
    hvg = pq.read_table(hvg_path, columns=["token_id", "highly_variable"]).to_pandas()
    return np.sort(hvg.loc[hvg["highly_variable"], "token_id"].to_numpy())
