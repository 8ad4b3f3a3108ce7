"""A shard's counts of selected genes for the passes after the summary (Gram, cell cycle).

Its own module (not :mod:`tahoeflow.workflow_io`, which every per-shard script imports) so
that an edit of the selected-gene reader reruns only the passes that use it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tahoeflow.cells import normalize as pp
from tahoeflow.cells.plan import Shard
from tahoeflow.cells.selected import CELL_ID_COLUMN, read_selected
from tahoeflow.cells.summarize import Filters
from tahoeflow.cells.vocab import Vocab
from tahoeflow.errors import InputError
from tahoeflow.sources.manifest import check_file_rows
from tahoeflow.workflow_io import as_shard, dose_table, gene_vocab, load_filtered_shard

OBS = ["cell_id", "sample", "plate", "drug", "dose_uM", "cell_line_id", "is_control"]
"""The per-cell columns ``with_obs`` gives, as :func:`load_filtered_shard`'s ``obs`` has them."""


def load_selected(
    smk: Any,
    log: Any,
    tokens: np.ndarray,
    shard: Shard | dict[str, Any] | None = None,
    data_path: str | None = None,
    with_obs: bool = False,
) -> tuple[sp.csr_matrix, np.ndarray, pd.DataFrame, Vocab]:
    """``(counts, totals, obs, vocab)`` of a shard's kept cells for the genes with these token ids.

    ``counts`` (columns in vocabulary order) and ``totals`` (over all genes) are
    ``select_columns`` of :func:`load_filtered_shard`'s counts, bit for bit; ``obs`` holds
    ``cell_id`` (and with ``with_obs`` the other :data:`OBS` columns) as its ``obs`` does.
    Tahoe Parquet shards are read by :func:`~tahoeflow.cells.selected.read_selected`, which
    keeps only those genes' values while it decodes (the summary job has already checked the
    file's metadata columns); h5ad shards through the full reader.
    """
    p = smk.params
    if p.source["kind"] == "h5ad":
        loaded, vocab = load_filtered_shard(smk, log, shard=shard, data_path=data_path)
        counts, totals = pp.select_columns(loaded.X, np.sort(vocab.lookup[tokens]))
        obs = loaded.obs[OBS if with_obs else ["cell_id"]].reset_index(drop=True)
        return counts, totals, obs, vocab
    shard = as_shard(shard or p.shard)
    data_path = data_path or smk.input.data
    if shard.file_rows is not None:
        check_file_rows(data_path, int(shard.file_rows))
    vocab = gene_vocab(str(smk.input.genes))
    names = ["sample", "plate", "drug", "cell_line_id"] if with_obs else []
    sel = read_selected(
        data_path, shard, vocab, np.sort(vocab.lookup[tokens]), Filters(**p.filters),
        obs_columns=names, allow_non_integer=p.normalised, warn=log,
    )  # fmt: skip
    kept = sel.filter_counts
    log(f"shard {shard.name}: {kept['kept']} of {kept['input']} rows kept")
    obs = pd.DataFrame({"cell_id": sel.obs[CELL_ID_COLUMN]})
    if with_obs:
        samples = smk.input.samples if isinstance(smk.input.samples, str) else smk.input.samples[0]
        doses = dose_table(str(samples))
        at = pd.Index(doses.index).get_indexer(sel.obs["sample"])
        if (at < 0).any():  # the summary job checked this file: only a changed file gets here
            r = int(np.flatnonzero(at < 0)[0])
            raise InputError(
                data_path, f"sample {sel.obs['sample'][r]!r} is not in sample_metadata"
            )
        for c in names:
            obs[c] = sel.obs[c]
        obs["dose_uM"] = doses.to_numpy()[at]
        obs["is_control"] = sel.obs["drug"] == p.control_drug
        obs = obs[OBS]
    return sel.counts, sel.totals, obs, vocab
