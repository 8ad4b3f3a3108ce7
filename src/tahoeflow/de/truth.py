"""Scoring DE calls against a known truth (the demo's simulated effects): empirical FDR and power."""

from __future__ import annotations

import numpy as np
import pandas as pd


def score_calls(
    de_df: pd.DataFrame,
    truth_df: pd.DataFrame,
    alpha: float = 0.05,
    *,
    padj_col: str = "adj.P.Val",
    gene_col: str = "gene",
) -> dict:
    """Empirical FDR and power of DE calls (``padj_col < alpha``) against simulated truth.

    ``truth_df`` lists the truly changed genes: drug, dose_uM, cell_line_id, token_id. Only
    conditions (drug, dose_uM, cell_line_id) present in ``de_df`` count. Every tested row of
    ``de_df`` (one per contrast, i.e. per plate, and gene) is one test: ``fdr = false calls /
    calls`` (0 when there are no calls) and ``power = true calls / truly changed``, where a
    condition tested on k plates contributes its truly changed genes k times (a gene that was
    filtered out and not tested counts as missed). When no truly changed gene was tested,
    ``power`` is None and ``null_reasons["power"]`` says why (never NaN: the dict is JSON).
    """
    need_de = ["drug", "dose_uM", "cell_line_id", gene_col, padj_col]
    miss = [c for c in need_de if c not in de_df.columns]
    if miss:
        raise ValueError(f"de_df lacks column(s) {', '.join(miss)}")
    miss = [c for c in ["drug", "dose_uM", "cell_line_id", "token_id"] if c not in truth_df.columns]
    if miss:
        raise ValueError(f"truth_df lacks column(s) {', '.join(miss)}")
    cond = ["drug", "dose_uM", "cell_line_id"]
    de = de_df[[*cond, *(["plate"] if "plate" in de_df.columns else []), gene_col, padj_col]].copy()
    if "plate" not in de.columns:
        de["plate"] = ""
    de["dose_uM"] = de["dose_uM"].astype(np.float64)
    truth = truth_df[[*cond, "token_id"]].drop_duplicates().copy()
    truth["dose_uM"] = truth["dose_uM"].astype(np.float64)
    truth = truth.rename(columns={"token_id": gene_col})
    truth["_true"] = True
    de = de.merge(truth, on=[*cond, gene_col], how="left")
    de["_true"] = de["_true"].notna()
    called = (de[padj_col] < alpha).to_numpy()
    true = de["_true"].to_numpy()
    n_calls = int(called.sum())
    n_true_calls = int((called & true).sum())
    # truly changed: per tested contrast (condition x plate), all true genes of its condition
    tested = de[[*cond, "plate"]].drop_duplicates()
    per_cond = truth.groupby(cond, dropna=False).size().rename("n_true").reset_index()
    n_truly = int(tested.merge(per_cond, on=cond, how="inner")["n_true"].sum())
    return {
        "alpha": float(alpha),
        "n_tests": int(len(de)),
        "n_calls": n_calls,
        "n_true_calls": n_true_calls,
        "n_false_calls": n_calls - n_true_calls,
        "n_truly_changed": n_truly,
        "fdr": (n_calls - n_true_calls) / n_calls if n_calls else 0.0,
        "power": n_true_calls / n_truly if n_truly else None,
        **(
            {}
            if n_truly
            else {
                "null_reasons": {
                    "power": "no truly changed gene in the tested contrasts (power is undefined)"
                }
            }
        ),
    }
