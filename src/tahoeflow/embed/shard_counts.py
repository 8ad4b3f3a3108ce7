"""A shard's HVG counts for the Gram pass, from a job's ``snakemake`` object.

Its own module (not :mod:`tahoeflow.workflow_io`, which every per-shard script imports) so
that an edit of the HVG reader reruns only the Gram jobs and what follows them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from tahoeflow.cells import normalize as pp
from tahoeflow.cells.plan import Shard
from tahoeflow.cells.selected import read_selected
from tahoeflow.cells.summarize import Filters
from tahoeflow.sources.manifest import check_file_rows
from tahoeflow.workflow_io import as_shard, gene_vocab, load_filtered_shard


def load_hvg_counts(
    smk: Any,
    log: Any,
    tokens: np.ndarray,
    shard: Shard | dict[str, Any] | None = None,
    data_path: str | None = None,
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """A shard's raw HVG counts, its kept cells' totals over all genes and their cell ids.

    ``select_columns`` of :func:`~tahoeflow.workflow_io.load_filtered_shard`'s counts, bit for
    bit. Tahoe Parquet shards are read by :func:`~tahoeflow.cells.selected.read_selected`,
    which keeps only the HVG values while it decodes (the summary job has already checked the
    file's metadata columns); h5ad shards through the full reader.
    """
    p = smk.params
    if p.source["kind"] == "h5ad":
        loaded, vocab = load_filtered_shard(smk, log, shard=shard, data_path=data_path)
        counts, totals = pp.select_columns(loaded.X, np.sort(vocab.lookup[tokens]))
        return counts, totals, loaded.obs["cell_id"].to_numpy()
    shard = as_shard(shard or p.shard)
    data_path = data_path or smk.input.data
    if shard.file_rows is not None:
        check_file_rows(data_path, int(shard.file_rows))
    vocab = gene_vocab(str(smk.input.genes))
    counts, totals, ids, kept = read_selected(
        data_path, shard, vocab, np.sort(vocab.lookup[tokens]), Filters(**p.filters),
        allow_non_integer=p.normalised, warn=log,
    )  # fmt: skip
    log(f"shard {shard.name}: {kept['kept']} of {kept['input']} rows kept")
    return counts, totals, ids
