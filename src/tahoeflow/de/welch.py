"""Per-cell Welch t-tests of treated against control cells, equal to scanpy's
``rank_genes_groups(method="t-test")``, and the choice of the contrasts that get them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy import stats

from tahoeflow.de.tables import CONDITION_KEYS
from tahoeflow.multitest import bh_adjust


def _mean_var(X: np.ndarray | sp.spmatrix) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and variance as scanpy computes them: ``(E[x^2] - E[x]^2) * n / (n - 1)``."""
    n = X.shape[0]
    if sp.issparse(X):
        s = np.asarray(X.sum(axis=0, dtype=np.float64)).ravel()
        sq = np.asarray(X.multiply(X).sum(axis=0, dtype=np.float64)).ravel()
    else:
        Xd = np.asarray(X, dtype=np.float64)
        s = Xd.sum(axis=0)
        sq = (Xd * Xd).sum(axis=0)
    mean = s / n
    var = sq / n - mean**2
    if n != 1:
        var *= n / (n - 1)
    return mean, var


def welch_de(
    X_lognorm: np.ndarray | sp.spmatrix,
    is_treated: np.ndarray,
    is_control: np.ndarray,
    gene_ids: Sequence | np.ndarray | None = None,
) -> pd.DataFrame:
    """Welch's t-test of treated vs control cells per gene on log1p-normalised data.

    Equal to ``scanpy.tl.rank_genes_groups(..., groups=[treated], reference=control,
    method="t-test")``: variances ``(E[x^2] - E[x]^2) n/(n-1)``, NaN scores set to 0 and NaN
    p-values to 1, ``logfoldchanges = log2((expm1(mean_t) + 1e-9) / (expm1(mean_c) + 1e-9))``.
    Columns: gene, scores, pvals, pvals_adj (BH), logfoldchanges; one row per gene in input order.
    """
    is_treated = np.asarray(is_treated, dtype=bool)
    is_control = np.asarray(is_control, dtype=bool)
    n_obs, n_genes = X_lognorm.shape
    if is_treated.shape != (n_obs,) or is_control.shape != (n_obs,):
        raise ValueError("is_treated and is_control must be boolean masks over the rows of X")
    if np.any(is_treated & is_control):
        raise ValueError("a cell cannot be both treated and control")
    n1, n0 = int(is_treated.sum()), int(is_control.sum())
    if n1 < 2 or n0 < 2:
        raise ValueError(f"need >= 2 treated and >= 2 control cells, got {n1} and {n0}")
    X = sp.csr_matrix(X_lognorm) if sp.issparse(X_lognorm) else np.asarray(X_lognorm)
    m1, v1 = _mean_var(X[is_treated])
    m0, v0 = _mean_var(X[is_control])
    with np.errstate(invalid="ignore", divide="ignore"):
        scores, pvals = stats.ttest_ind_from_stats(
            mean1=m1,
            std1=np.sqrt(v1),
            nobs1=n1,
            mean2=m0,
            std2=np.sqrt(v0),
            nobs2=n0,
            equal_var=False,
        )
    scores = np.where(np.isnan(scores), 0.0, scores)
    pvals = np.where(np.isnan(pvals), 1.0, pvals)
    lfc = np.log2((np.expm1(m1) + 1e-9) / (np.expm1(m0) + 1e-9))
    genes = np.arange(n_genes) if gene_ids is None else np.asarray(gene_ids)
    return pd.DataFrame(
        {
            "gene": genes,
            "scores": scores,
            "pvals": pvals,
            "pvals_adj": bh_adjust(pvals),
            "logfoldchanges": lfc,
        }
    )


def welch_conditions(
    top: pd.DataFrame,
    listed: Sequence[dict],
    max_conditions: int,
    alpha: float = 0.05,
    warn=None,
) -> list[tuple]:
    """Contrasts (drug, dose_uM, cell_line_id, plate) for the cell-level Welch tests.

    First every contrast of ``top`` matching an entry of ``listed`` (``drug`` and optionally
    ``dose_uM`` and ``cell_line_id``; an entry matching no contrast is reported through
    ``warn``), whether or not it has pseudobulk calls; then up to
    ``max_conditions`` more, those with the most calls by ``adj.P.Val.global < alpha``.
    """
    called = (top["adj.P.Val.global"] < alpha).to_numpy().astype(np.int64)
    calls = (
        top[CONDITION_KEYS].assign(n_calls=called)
        .groupby(CONDITION_KEYS, sort=True, dropna=False)["n_calls"].sum().reset_index()
    )  # fmt: skip
    return welch_conditions_from_calls(calls, listed, max_conditions, warn)


def welch_conditions_from_calls(
    calls: pd.DataFrame, listed: Sequence[dict], max_conditions: int, warn=None
) -> list[tuple]:
    """:func:`welch_conditions` from one row per contrast (condition keys, ``n_calls``: its
    rows with ``adj.P.Val.global < alpha``; e.g. :func:`tahoeflow.de.gather.contrast_calls`),
    so the topTable need not be held."""
    keys = calls[CONDITION_KEYS].drop_duplicates().sort_values(CONDITION_KEYS)
    out: list[tuple] = []
    for entry in listed:
        sel = keys["drug"].astype(str).str.strip() == str(entry["drug"]).strip()
        if entry.get("dose_uM") is not None:
            sel &= np.isclose(keys["dose_uM"].to_numpy(np.float64), float(entry["dose_uM"]))
        if entry.get("cell_line_id") is not None:
            sel &= keys["cell_line_id"] == entry["cell_line_id"]
        found = [tuple(r) for r in keys[sel].itertuples(index=False)]
        if not found and warn is not None:
            warn(f"{dict(entry)} matches no tested contrast")
        out += [k for k in found if k not in out]
    n = calls.groupby(CONDITION_KEYS, sort=True)["n_calls"].sum()
    called = n[n > 0]
    ranked = called.sort_values(ascending=False, kind="stable").index.tolist()
    out += [tuple(k) for k in ranked if tuple(k) not in out][:max_conditions]
    return out
