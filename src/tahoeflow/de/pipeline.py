"""Pseudobulk DE of every treated condition against its control wells, one fit per contrast:
edgeR + limma-voom by default (``method``: voom, log, deseq2, trend, plain), with the contrasts
or genes that cannot be tested reported with their reason instead of reaching the table."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tahoeflow.de.design import CONTROL_DRUG, Contrast, check_groups, contrast_design, contrasts
from tahoeflow.de.edger import calc_norm_factors, filter_by_expr, log_cpm
from tahoeflow.de.limma import EBayes, LmFit, ebayes, lmfit
from tahoeflow.de.tables import (
    CONDITION_KEYS,
    DE_COLUMNS,
    DESEQ2_COLUMNS,
    SKIPPED_COLUMNS,
    empty_toptable,
    gene_annotation,
)
from tahoeflow.de.voom import VOOM_AXES, VOOM_FITTED, voom
from tahoeflow.errors import ArgumentError
from tahoeflow.multitest import bh_adjust

DE_METHODS = ("voom", "trend", "plain", "log", "deseq2")


def _de_contrast(
    sub: np.ndarray,
    X: np.ndarray,
    method: str,
    *,
    min_count: float,
    min_total_count: float,
    gene_filter: str,
    normalize: str,
    prior_count: float,
    span: float,
    voom_axis: str,
    voom_fitted: str,
    proportion: float,
    stdev_coef_lim: tuple[float, float],
) -> tuple[np.ndarray, LmFit, EBayes] | str:
    """One contrast (rows: the treated wells, then controls; ``X`` its design, treated last):
    ``(kept genes, fit, eBayes)``, or the reason why nothing could be tested."""
    if method == "plain":
        lib = sub.sum(axis=1)
        keep = sub.sum(axis=0) >= min_total_count
        if not keep.any():
            return f"no gene with a total count >= {min_total_count:g}"
        y = log_cpm(sub[:, keep], lib, prior_count)
        fit = lmfit(y, X)
        return keep, fit, ebayes(fit, proportion, stdev_coef_lim)
    keep = filter_by_expr(
        sub,
        sub.sum(axis=1),
        design=X,
        min_count=min_count,
        min_total_count=min_total_count,
        pooled=gene_filter == "pooled",
    )
    if keep.sum() < 2:
        return f"{int(keep.sum())} gene(s) pass filterByExpr (need >= 2)"
    yk = sub[:, keep]
    lib = yk.sum(axis=1)  # edgeR: y[keep, , keep.lib.sizes=FALSE]
    if np.any(lib <= 0):
        return "a well has no counts in the genes that pass filterByExpr"
    nf = calc_norm_factors(yk, lib) if normalize == "TMM" else np.ones(lib.size)
    eff = lib * nf
    if method == "voom":
        v = voom(yk, int(X[:, -1].sum()), eff, span=span, axis=voom_axis, fitted=voom_fitted,
                 design=X)  # fmt: skip
        fit = lmfit(v.E, X, v.weights)
        return keep, fit, ebayes(fit, proportion, stdev_coef_lim)
    y = log_cpm(yk, eff, prior_count)
    fit = lmfit(y, X)
    return keep, fit, ebayes(fit, proportion, stdev_coef_lim, trend=True)


def pseudobulk_de(
    counts: np.ndarray | sp.spmatrix,
    groups_df: pd.DataFrame,
    gene_ids: Sequence | np.ndarray,
    min_cells: int,
    *,
    min_control_wells: int = 2,
    method: str = "voom",
    min_count: float = 10.0,
    min_total_count: float | None = None,
    gene_filter: str = "edgeR",
    normalize: str = "TMM",
    prior_count: float = 2.0,
    span: float = 0.5,
    voom_axis: str = "log2",
    voom_fitted: str = "group",
    proportion: float = 0.01,
    stdev_coef_lim: tuple[float, float] = (0.1, 4.0),
    control: str = CONTROL_DRUG,
    pool_plates: bool = True,
    genes: pd.DataFrame | None = None,
    deseq2_options: dict | None = None,
    return_skipped: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, pd.DataFrame]:
    """DE of every treated condition against its DMSO wells (one fit per contrast).

    ``counts``: pseudobulk counts, one row per (sample, cell line) well (rows of
    ``groups_df``), one column per gene (``gene_ids``, token ids; ``genes``, a table with
    ``token_id``, ``ensembl_id``, ``gene_symbol``, names them). Each contrast (see
    :func:`contrasts`; pooled over plates by default) is analysed on its own wells only, with
    the design ``~ plate + treated`` (``[intercept, treated]`` on one plate). ``adj.P.Val`` is
    BH within the contrast, ``adj.P.Val.global`` BH over every row of the returned table (the
    workflow recomputes it over the whole table after its per-line jobs). ``method``:

    * ``"voom"`` (default): textbook edgeR + limma-voom, equal to R's ``filterByExpr(y,
      design)``, ``y[keep, , keep.lib.sizes=FALSE]``, ``calcNormFactors``, ``voom``,
      ``lmFit``, ``eBayes``, ``topTable`` on the contrast's wells (``min_count``,
      ``min_total_count`` default 15; ``normalize="none"`` skips TMM). Departures, off by
      default: ``gene_filter="pooled"`` (the CPM rule on the pooled counts),
      ``voom_axis="inv_sqrt"`` (trend against 1/sqrt(mean count)), ``voom_fitted="midpoint"``
      (weights at half the treatment effect), see :func:`voom` and :func:`filter_by_expr`.
      AveExpr is the mean voom log-CPM.
    * ``"log"``: the values are already log expression (e.g. L1000's log2 QNORM); a well's
      value is the mean over its cells (float64); no filter, normalisation or weights;
      limma-trend eBayes (R's ``lmFit`` + ``eBayes(trend=TRUE)``).
    * ``"deseq2"``: PyDESeq2 (:mod:`tahoeflow.de.deseq2`) with the same design; DESeq2's columns.
    * ``"trend"`` (limma-trend on log-CPM) and ``"plain"`` (log-CPM, constant prior): older
      variants kept for comparison.

    Bad input never reaches the table: a contrast with a zero-library well, or whose fit fails,
    is skipped; genes with all-zero counts over the contrast's wells (and, as a safeguard, any
    non-finite statistic) are left out; each with its reason in the skipped table
    (:data:`SKIPPED_COLUMNS`). Returns the tidy table (:data:`DE_COLUMNS`, or
    :data:`DESEQ2_COLUMNS`), sorted by condition keys then gene; with ``return_skipped``
    also the skipped table.
    """
    if method not in DE_METHODS:
        raise ArgumentError("method", f"must be one of {', '.join(DE_METHODS)}, got {method!r}")
    if gene_filter not in ("pooled", "edgeR"):
        raise ArgumentError("gene_filter", f"must be 'pooled' or 'edgeR', got {gene_filter!r}")
    if voom_fitted not in VOOM_FITTED:
        raise ArgumentError(
            "voom_fitted", f"must be one of {', '.join(VOOM_FITTED)}, got {voom_fitted!r}"
        )
    if voom_axis not in VOOM_AXES:
        raise ArgumentError(
            "voom_axis", f"must be one of {', '.join(VOOM_AXES)}, got {voom_axis!r}"
        )
    if normalize not in ("TMM", "none"):
        raise ArgumentError("normalize", f"must be 'TMM' or 'none', got {normalize!r}")
    if min_total_count is None:
        min_total_count = 1.0 if method == "plain" else 15.0
    g = check_groups(groups_df)
    gene_ids = np.asarray(gene_ids)
    if counts.shape[0] != len(g):
        raise ValueError(f"counts has {counts.shape[0]} rows but groups_df has {len(g)}")
    if counts.shape[1] != gene_ids.size:
        raise ValueError(f"counts has {counts.shape[1]} genes but {gene_ids.size} gene ids")
    ens, sym = gene_annotation(gene_ids, genes)
    mat = sp.csr_matrix(counts) if sp.issparse(counts) else np.asarray(counts)
    cons, skipped = contrasts(
        g, min_cells, min_control_wells, control=control, pool_plates=pool_plates
    )
    n_cells = g["n_cells"].to_numpy()
    plate_of = g["plate"].astype(str).to_numpy()
    sample_of = g["sample"].astype(str).to_numpy()
    counts_method = method != "log"
    parts = []
    extra_skips = []

    def skip(c: Contrast, reason: str, n_genes: int = -1) -> None:
        extra_skips.append(
            dict(
                drug=c.drug,
                dose_uM=c.dose_uM,
                cell_line_id=c.cell_line_id,
                plate=c.plate,
                n_cells=int(n_cells[c.treated].sum()),
                n_control_wells=int(c.control.size),
                what="contrast" if n_genes < 0 else "genes",
                n_genes=n_genes,
                reason=reason,
            )
        )

    for c in cons:
        rows = np.concatenate([c.treated, c.control])
        sub = mat[rows]
        sub = sub.toarray() if sp.issparse(sub) else sub
        sub = np.asarray(sub, dtype=np.float64)
        X = contrast_design(plate_of[rows], c.treated.size)
        cols = np.arange(sub.shape[1])
        if counts_method:
            lib = sub.sum(axis=1)
            if np.any(~(lib > 0)):
                bad = [
                    f"{sample_of[r]} ({'treated' if k < c.treated.size else 'control'})"
                    for k, r in enumerate(rows)
                    if not lib[k] > 0
                ]
                skip(c, f"well(s) with zero library size: {', '.join(bad)}")
                continue
            nonzero = sub.sum(axis=0) > 0
            if not nonzero.all():
                skip(
                    c,
                    f"{int((~nonzero).sum())} gene(s) with all-zero counts across the "
                    "contrast's wells: not tested",
                    int((~nonzero).sum()),
                )
                sub, cols = sub[:, nonzero], cols[nonzero]
        try:
            if method == "deseq2":
                from tahoeflow.de.deseq2 import deseq2_contrast

                stats_cols = deseq2_contrast(
                    sub, plate_of[rows], c.treated.size, **(deseq2_options or {})
                )
                keep = np.ones(sub.shape[1], dtype=bool)
                cook = np.isnan(stats_cols["pvalue"])
                indep = ~cook & np.isnan(stats_cols["padj"])
                for mask, why in (
                    (cook, "count outliers by Cook's distance (DESeq2 pvalue NA)"),
                    (indep, "removed by DESeq2's independent filtering (padj NA)"),
                ):
                    if mask.any():
                        skip(c, f"{int(mask.sum())} gene(s) {why}: not tested", int(mask.sum()))
                keep = ~(cook | indep)
                stats_cols = {k: v[keep] for k, v in stats_cols.items()}
            elif method == "log":
                # already log expression: a well's value is the mean over its cells
                y = sub / n_cells[rows][:, None]
                fit = lmfit(y, X)
                eb = ebayes(fit, proportion=proportion, stdev_coef_lim=stdev_coef_lim, trend=True)
                keep = np.ones(y.shape[1], dtype=bool)
            else:
                out = _de_contrast(
                    sub, X, method, min_count=min_count, min_total_count=min_total_count,
                    gene_filter=gene_filter, normalize=normalize, prior_count=prior_count,
                    span=span, voom_axis=voom_axis, voom_fitted=voom_fitted,
                    proportion=proportion, stdev_coef_lim=stdev_coef_lim,
                )  # fmt: skip
                if isinstance(out, str):
                    skip(c, out)
                    continue
                keep, fit, eb = out
        except (ValueError, np.linalg.LinAlgError) as exc:
            skip(c, f"the model could not be fitted: {exc}")
            continue
        if method != "deseq2":
            stats_cols = {
                "logFC": fit.coefficients,
                "AveExpr": fit.amean,
                "t": eb.t,
                "P.Value": eb.p_value,
                "B": eb.lods,
            }
        finite = np.logical_and.reduce([np.isfinite(v) for v in stats_cols.values()])
        if not finite.all():
            skip(c, f"{int((~finite).sum())} gene(s) with a non-finite statistic: not tested",
                 int((~finite).sum()))  # fmt: skip
            stats_cols = {k: v[finite] for k, v in stats_cols.items()}
            keep = keep.copy()
            keep[np.flatnonzero(keep)[~finite]] = False
        k = int(keep.sum())
        if k == 0:
            continue
        gcol = cols[keep]
        pcol = "pvalue" if method == "deseq2" else "P.Value"
        part = {
            "drug": np.repeat(np.asarray([c.drug], dtype=object), k),
            "dose_uM": np.full(k, c.dose_uM, dtype=np.float64),
            "cell_line_id": np.repeat(np.asarray([c.cell_line_id], dtype=object), k),
            "plate": np.repeat(np.asarray([c.plate], dtype=object), k),
            "gene": gene_ids[gcol],
            "ensembl_id": ens[gcol],
            "gene_symbol": sym[gcol],
            **stats_cols,
        }
        if method != "deseq2":  # DESeq2's padj is BH over its non-NA p-values already
            part["adj.P.Val"] = bh_adjust(stats_cols[pcol])
        part.update(
            n_treated_cells=np.full(k, int(n_cells[c.treated].sum()), dtype=np.int64),
            n_control_cells=np.full(k, int(n_cells[c.control].sum()), dtype=np.int64),
            n_treated_wells=np.full(k, c.treated.size, dtype=np.int64),
            n_control_wells=np.full(k, c.control.size, dtype=np.int64),
        )
        parts.append(pd.DataFrame(part))
    columns = DESEQ2_COLUMNS if method == "deseq2" else DE_COLUMNS
    if parts:
        res = pd.concat(parts, ignore_index=True)
        res["adj.P.Val.global"] = bh_adjust(res["pvalue" if method == "deseq2" else "P.Value"])
    else:  # nothing tested: the same columns and dtypes as a non-empty table
        res = empty_toptable(gene_ids.dtype, method)
    res = res.sort_values([*CONDITION_KEYS, "gene"], kind="mergesort").reset_index(drop=True)
    res = res[columns]
    if extra_skips:
        extra = pd.DataFrame(extra_skips, columns=SKIPPED_COLUMNS)
        skipped = extra if skipped.empty else pd.concat([skipped, extra], ignore_index=True)
        skipped = skipped.sort_values(CONDITION_KEYS, kind="mergesort").reset_index(drop=True)
    whole = (skipped["what"] == "contrast").to_numpy()
    skipped["n_genes"] = np.where(whole, gene_ids.size, skipped["n_genes"]).astype(np.int64)
    return (res, skipped) if return_skipped else res


def untested_reason(
    groups_df: pd.DataFrame, skipped: pd.DataFrame, control: str = CONTROL_DRUG
) -> str:
    """Why :func:`pseudobulk_de` tested no contrast at all, in one line (for logs and metrics).

    No control wells at all (e.g. ``filters.drugs`` without the control, or a data set without
    one), no treated wells (only controls kept), or every condition skipped (the first
    skipped condition's reason is quoted; ``skipped`` has all of them).
    """
    drugs = groups_df["drug"]
    if not (drugs == control).any():
        return (
            f"no {control} control wells in the data (after the filters): there is nothing to "
            "test the treated conditions against"
        )
    if (drugs == control).all():
        return f"no treated wells: every well is a {control} control"
    if "what" in skipped.columns:
        skipped = skipped[skipped["what"] == "contrast"]
    if len(skipped):
        r = skipped.iloc[0]
        return (
            f"all {len(skipped)} conditions were skipped, e.g. {r['drug']} {r['dose_uM']:g} uM "
            f"in {r['cell_line_id']} on {r['plate']}: {r['reason']}"
        )
    return "no treated condition to test"
