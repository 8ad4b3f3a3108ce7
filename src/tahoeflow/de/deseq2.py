"""DESeq2 for one pseudobulk contrast, with PyDESeq2 (the scverse port of R's DESeq2).

Tahoe's published pseudobulk table (``metadata/pseudobulk_differential_expression``: gene_name,
baseMean, log2FoldChange, lfcSE, padj, ...) was made with DESeq2; ``de.method: deseq2`` gives
the same quantities under the same names. Per contrast: ``DeseqDataSet(counts, design="~plate
+ treated")`` (``~treated`` on one plate), ``deseq2()`` (size factors by median of ratios,
parametric dispersion trend, MAP dispersions, Wald test, Cook's outlier refit) and
``DeseqStats(contrast=["treated", "yes", "no"])`` with DESeq2's defaults (Cook's filtering,
independent filtering at ``alpha``). PyDESeq2 is imported only when this method runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

DESEQ2_RESULT_COLUMNS = ["baseMean", "log2FoldChange", "lfcSE", "stat", "pvalue", "padj"]


def deseq2_contrast(
    counts: np.ndarray,
    plates: np.ndarray,
    n_treated: int,
    *,
    alpha: float = 0.05,
    cooks_filter: bool = True,
    independent_filter: bool = True,
    n_cpus: int = 1,
) -> dict[str, np.ndarray]:
    """DESeq2 of the first ``n_treated`` rows of ``counts`` (wells x genes, integer counts)
    against the others, blocking on ``plates`` when there are several. Returns DESeq2's result
    columns (:data:`DESEQ2_RESULT_COLUMNS`), one value per gene; ``pvalue`` is NaN for Cook's
    outliers, ``padj`` also for genes removed by independent filtering (as in R)."""
    import logging

    from pydeseq2.dds import DeseqDataSet
    from pydeseq2.default_inference import DefaultInference
    from pydeseq2.ds import DeseqStats

    logging.getLogger("pydeseq2").setLevel(logging.ERROR)
    y = np.asarray(counts, dtype=np.float64)
    if np.any(y != np.round(y)) or np.any(y < 0):
        raise ValueError("DESeq2 needs non-negative integer counts")
    n = y.shape[0]
    wells = [f"w{i}" for i in range(n)]
    genes = [f"g{j}" for j in range(y.shape[1])]
    meta = pd.DataFrame(
        {
            "treated": np.where(np.arange(n) < n_treated, "yes", "no"),
            "plate": [f"p_{p}" for p in np.asarray(plates, dtype=str)],
        },
        index=wells,
    )
    design = "~plate + treated" if meta["plate"].nunique() > 1 else "~treated"
    inference = DefaultInference(n_cpus=n_cpus)
    dds = DeseqDataSet(
        counts=pd.DataFrame(y.astype(np.int64), index=wells, columns=genes),
        metadata=meta,
        design=design,
        inference=inference,
        quiet=True,
    )
    dds.deseq2()
    ds = DeseqStats(
        dds,
        contrast=["treated", "yes", "no"],
        alpha=alpha,
        cooks_filter=cooks_filter,
        independent_filter=independent_filter,
        inference=inference,
        quiet=True,
    )
    ds.summary()
    res = ds.results_df.reindex(genes)
    return {c: res[c].to_numpy(np.float64) for c in DESEQ2_RESULT_COLUMNS}
