"""The stratified training sample that bounds every model's cost on atlas-size tables.

In memory (:func:`sample_train`) test rows are kept whole and only the training rows are subsampled,
stratified by a label column so each class keeps its share; the workflow draws both sides while
streaming the cells (:mod:`tahoeflow.models.sample_file`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tahoeflow.models.checks import check_int
from tahoeflow.models.features import require_columns


def stratified_sample(labels: Any, n: int, seed: int = 0) -> np.ndarray:
    """Positions (sorted) of ``n`` of ``labels``' rows, stratified by label, seeded.

    Each class c of size ``n_c`` (of ``N`` rows) gets ``floor(n * n_c / N)`` rows, and the
    ``n - sum`` rows left over go one each to the classes with the largest fractional
    parts (largest remainder; ties to the class seen first), so every class's share differs
    from ``n * n_c / N`` by less than one row. The rows of a class are drawn uniformly
    without replacement (one ``default_rng(seed)`` key per row). ``n >= N`` returns every
    position. Vectorised: one sort, no loop over rows or classes.
    """
    codes, _ = pd.factorize(pd.Series(np.asarray(labels, dtype=object)), use_na_sentinel=False)
    N = codes.size
    n = check_int(n, "n", 0)
    if n >= N:
        return np.arange(N)
    counts = np.bincount(codes)
    take = allocate(counts, n)
    keys = np.random.default_rng(seed).random(N)
    order = np.lexsort((keys, codes))  # by class, then random key
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    sorted_codes = codes[order]
    rank = np.arange(N) - starts[sorted_codes]
    return np.sort(order[rank < take[sorted_codes]])


def allocate(counts: np.ndarray, n: int) -> np.ndarray:
    """Rows each class gets of a stratified sample of ``n`` (``n < counts.sum()``): the
    largest-remainder rule of :func:`stratified_sample`, classes in first-seen order."""
    counts = np.asarray(counts, dtype=np.int64)
    quota = n * counts / int(counts.sum())
    take = np.floor(quota).astype(np.int64)
    left = int(n - take.sum())
    if left:
        order = np.argsort(-(quota - take), kind="stable")
        take[order[:left]] += 1
    return take


def sample_train(
    framed: pd.DataFrame,
    is_test: np.ndarray,
    max_train_cells: int | None,
    seed: int,
    stratify_by: str,
) -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
    """Every test row and at most ``max_train_cells`` training rows, stratified by the
    ``stratify_by`` column; plus the counts for the metrics (empty when nothing was left out)."""
    train_pos = np.flatnonzero(~is_test)
    if max_train_cells is None or train_pos.size <= max_train_cells:
        return framed, is_test, {}
    require_columns(framed, [stratify_by])
    labels = framed[stratify_by].to_numpy()[train_pos]
    keep = np.flatnonzero(is_test)
    keep = np.sort(
        np.concatenate([keep, train_pos[stratified_sample(labels, max_train_cells, seed)]])
    )
    info = {
        "n_train_sampled": int(max_train_cells),
        "n_train_total": int(train_pos.size),
        # the wording of the metrics file, kept as it was
        "train_sample": f"stratified by {stratify_by}, seed {seed} (models.max_train_cells)",
    }
    return framed.iloc[keep], is_test[keep], info
