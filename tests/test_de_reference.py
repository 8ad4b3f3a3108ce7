"""tahoeflow's DE against R itself: limma-voom, limma-trend and DESeq2 on the same counts.

One ``Rscript`` per module (the ``reference`` fixture) runs every case: edgeR ``filterByExpr``
+ ``calcNormFactors`` + limma ``voom`` + ``lmFit`` + ``eBayes`` + ``topTable`` (the textbook
pipeline), ``lmFit`` + ``eBayes(trend=TRUE)`` for the log path, and DESeq2's ``DESeq`` +
``results`` against PyDESeq2. Cases: simulated pseudobulks with Tahoe's layout (one well per
drug and plate, two DMSO wells per plate, conditions on 1-3 plates, so the pooled design
``~ plate + treated`` is exercised), the real ECCITE-seq screen (per-guide wells and the hub
layout, one well per target and replicate) and the real L1000 plate (log2 values), the last
two from ``../shared/data/real`` (skipped when absent).

Without ``Rscript`` (with limma, edgeR and DESeq2) the tests skip with a message; with the
environment variable ``CI=true`` they fail instead (CI installs R: ``ci/install-r.sh``).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tahoeflow.de import design, pipeline
from tahoeflow.de import tables as de_tables
from tahoeflow.multitest import bh_adjust

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
ECCITE = REAL / "papalexi_eccite"
GCT = REAL / "l1000_a375" / "LJP005_A375_24H_X1_B19.gct"
LIMMA_COLS = ["logFC", "AveExpr", "t", "P.Value", "adj.P.Val", "B"]
TOL = 1e-6  # the bar: |python - R| <= 1e-6 for every statistic of every gene

R_SCRIPT = r"""
args <- commandArgs(TRUE); d <- args[1]
suppressPackageStartupMessages({library(limma); library(edgeR)})
man <- read.csv(file.path(d, "manifest.csv"), stringsAsFactors = FALSE)
if (any(man$method == "deseq2")) suppressPackageStartupMessages(library(DESeq2))
for (i in seq_len(nrow(man))) {
  id <- man$id[i]; m <- man$method[i]
  X <- as.matrix(read.csv(file.path(d, paste0(id, "_y.csv")), check.names = FALSE))
  meta <- read.csv(file.path(d, paste0(id, "_meta.csv")), stringsAsFactors = FALSE)
  meta$plate <- factor(meta$plate)
  y <- t(X)
  f <- if (nlevels(meta$plate) > 1) ~ plate + treated else ~ treated
  design <- model.matrix(f, meta)
  if (m == "voom") {
    dge <- DGEList(y)
    keep <- filterByExpr(dge, design)
    dge <- dge[keep, , keep.lib.sizes = FALSE]
    dge <- calcNormFactors(dge)
    v <- voom(dge, design)
    fit <- eBayes(lmFit(v, design))
    tt <- topTable(fit, coef = "treated", n = Inf, sort.by = "none")
    out <- data.frame(gene = rownames(tt), tt[, c("logFC", "AveExpr", "t", "P.Value", "adj.P.Val", "B")])
  } else if (m == "log") {
    fit <- eBayes(lmFit(y, design), trend = TRUE)
    tt <- topTable(fit, coef = "treated", n = Inf, sort.by = "none")
    out <- data.frame(gene = rownames(tt), tt[, c("logFC", "AveExpr", "t", "P.Value", "adj.P.Val", "B")])
  } else if (m == "deseq2") {
    cd <- data.frame(plate = meta$plate,
                     treated = factor(ifelse(meta$treated == 1, "yes", "no"), levels = c("no", "yes")))
    dds <- DESeqDataSetFromMatrix(round(y), cd, if (nlevels(meta$plate) > 1) ~ plate + treated else ~ treated)
    dds <- DESeq(dds, quiet = TRUE)
    r <- results(dds, contrast = c("treated", "yes", "no"), alpha = 0.05)
    out <- data.frame(gene = rownames(r), as.data.frame(r))
  }
  write.csv(out, file.path(d, paste0(id, "_r.csv")), row.names = FALSE)
}
"""


def _r_missing(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {reason}: CI must run the R reference tests (ci/install-r.sh)")
    pytest.skip(f"{reason}: R reference tests skipped (install R with ci/install-r.sh)")


def _check_r() -> str:
    rscript = shutil.which("Rscript")
    if rscript is None:
        _r_missing("Rscript is not installed")
    probe = subprocess.run(
        [rscript, "-e", "suppressPackageStartupMessages({library(limma); library(edgeR); "
         "library(DESeq2)})"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if probe.returncode != 0:
        _r_missing(f"R lacks limma, edgeR or DESeq2 ({probe.stderr.strip()[-200:]})")
    return rscript


# --------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------


def simulate_plates(seed: int = 11, G: int = 1500):
    """NB pseudobulks with Tahoe's layout: one line, 3 plates x (2 DMSO wells + one well per
    drug on that plate); drug d0 on plate 0 only, d1 on plates 0-1, d2 and d3 on all three;
    d2 changes 10% of the genes (log2 FC +-1.5); plate effects on every gene."""
    rng = np.random.default_rng(seed)
    base = rng.gamma(0.6, 1.0, G) + 1e-3
    plate_eff = {p: np.exp(rng.normal(0, 0.25, G)) for p in ("p0", "p1", "p2")}
    on = {"d0": ["p0"], "d1": ["p0", "p1"], "d2": ["p0", "p1", "p2"], "d3": ["p0", "p1", "p2"]}
    eff = np.ones(G)
    idx = rng.choice(G, G // 10, replace=False)
    eff[idx] = 2.0 ** rng.choice([-1.5, 1.5], idx.size)
    rows, mu = [], []
    for p in ("p0", "p1", "p2"):
        for k in range(2):
            rows.append((f"{p}_c{k}", "CL1", p, "DMSO_TF", 0.0, 300))
            mu.append(base * plate_eff[p])
        for d, plates in on.items():
            if p in plates:
                rows.append((f"{p}_{d}", "CL1", p, d, 1.0, 200))
                mu.append(base * plate_eff[p] * (eff if d == "d2" else 1.0))
    mu = np.array(mu)
    mu = mu / mu.sum(axis=1, keepdims=True) * rng.uniform(2e5, 6e5, (len(rows), 1))
    counts = rng.poisson(rng.gamma(1 / 0.05, mu * 0.05)).astype(np.float64)
    return counts, pd.DataFrame(rows, columns=list(design.GROUP_COLUMNS))


@functools.cache
def _eccite():
    from tahoeflow.sources.real_data import eccite_to_anndata

    return eccite_to_anndata(ECCITE)


def eccite_pseudobulk(layout: str):
    """ECCITE-seq pseudobulks, plate = biological replicate; ``layout="guide"``: a well per
    (replicate, guide); ``"hub"``: a well per (replicate, target), as in Tahoe's hub layout."""
    a = _eccite()
    obs = a.obs
    ok = ~obs["perturbation"].isin(["unassigned", "ambiguous"]).to_numpy()
    batch = obs["batch"].astype(str).to_numpy()
    pert = obs["perturbation"].astype(str).to_numpy()
    sample = obs["sample"].astype(str).to_numpy() if layout == "guide" else batch + ":" + pert
    key = pd.DataFrame({"sample": sample, "plate": batch, "drug": pert})[ok]
    codes, uniq = pd.factorize(pd.MultiIndex.from_frame(key), sort=True)
    import scipy.sparse as sp

    ind = sp.csr_matrix((np.ones(codes.size), (codes, np.arange(codes.size))))
    counts = np.asarray((ind @ a.X[ok]).todense(), dtype=np.float64)
    groups = uniq.to_frame(index=False, name=["sample", "plate", "drug"])
    groups["cell_line_id"] = "THP-1"
    groups["dose_uM"] = 0.0
    groups["n_cells"] = np.bincount(codes).astype(np.int64)
    return counts, groups[list(design.GROUP_COLUMNS)]


def l1000_wells():
    """The L1000 plate as float64 log2 values per well (one 'cell' per well)."""
    from tahoeflow.sources.real_data import read_gct

    values, _, col = read_gct(GCT)
    groups = pd.DataFrame(
        {
            "sample": col.index.astype(str),
            "cell_line_id": col["cell_id"].astype(str).to_numpy(),
            "plate": "plate",
            "drug": col["pert_iname"].astype(str).to_numpy(),
            "dose_uM": np.where(
                col["pert_type"] == "ctl_vehicle", 0.0, pd.to_numeric(col["pert_dose"])
            ),
            "n_cells": 1,
        }
    )
    return values.to_numpy(np.float64).T.copy(), groups


def _contrast_frames(counts, groups, cons, method, prefix, d: Path, limit=None):
    """Write each contrast's wells (treated first) and design columns for R; manifest rows."""
    rows = []
    for k, c in enumerate(cons[:limit]):
        idx = np.r_[c.treated, c.control]
        cid = f"{prefix}{k}"
        cols = [f"g{j}" for j in range(counts.shape[1])]
        pd.DataFrame(counts[idx], columns=cols).to_csv(
            d / f"{cid}_y.csv", index=False, float_format="%.17g"
        )
        pd.DataFrame(
            {"plate": groups["plate"].to_numpy()[idx], "treated": (np.arange(idx.size) <
                                                                    c.treated.size).astype(int)}
        ).to_csv(d / f"{cid}_meta.csv", index=False)  # fmt: skip
        rows.append({"id": cid, "method": method, "key": c[:4]})
    return rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Every case run by tahoeflow and (in one Rscript) by R: ``{case: (python table, contrasts,
    {contrast key: R table})}``."""
    rscript = _check_r()
    d = tmp_path_factory.mktemp("r_reference")
    cases: dict[str, dict] = {}
    manifest = []

    def add(name, counts, groups, method, min_cells=1, limit=None, control="DMSO_TF"):
        t0 = time.perf_counter()
        top, skipped = pipeline.pseudobulk_de(
            counts, groups, np.arange(counts.shape[1]), min_cells, method=method,
            control=control, return_skipped=True,
        )  # fmt: skip
        cons, _ = design.contrasts(groups, min_cells, control=control)
        rows = _contrast_frames(counts, groups, cons, method, name, d, limit)
        manifest.extend(rows)
        seconds = time.perf_counter() - t0
        cases[name] = {"top": top, "skipped": skipped, "rows": rows, "seconds": seconds,
                       "seconds_per_gene": seconds / max(len(top), 1)}  # fmt: skip

    counts, groups = simulate_plates()
    add("sim", counts, groups, "voom", min_cells=20)
    # PyDESeq2 fits each gene's dispersion with scipy's L-BFGS-B (~10-20 ms per gene and
    # contrast here), so its cases are small: 300 genes, two contrasts (2 and 3 plates)
    counts, groups = simulate_plates(seed=12, G=300)
    sel = groups["drug"].isin(["DMSO_TF", "d1", "d2"]).to_numpy()
    add("simdeseq", counts[sel], groups[sel].reset_index(drop=True), "deseq2", min_cells=20)
    if (ECCITE / "response_matrix_lowmoi.rda").is_file():
        for layout in ("guide", "hub"):
            counts, groups = eccite_pseudobulk(layout)
            add(f"eccite_{layout}", counts, groups, "voom", min_cells=20, control="non-targeting")
        counts, groups = eccite_pseudobulk("guide")
        sel = groups["drug"].isin(["non-targeting", "JAK2", "STAT1"]).to_numpy()
        add("ecdeseq", counts[sel], groups[sel].reset_index(drop=True), "deseq2", min_cells=20,
            control="non-targeting")  # fmt: skip
    if GCT.is_file():
        values, groups = l1000_wells()
        add("l1000", values, groups, "log", limit=60, control="DMSO")
    pd.DataFrame([{"id": r["id"], "method": r["method"]} for r in manifest]).to_csv(
        d / "manifest.csv", index=False
    )
    t0 = time.perf_counter()
    proc = subprocess.run(
        [rscript, "-e", R_SCRIPT, str(d)], capture_output=True, text=True, timeout=900
    )
    print(f"R: {time.perf_counter() - t0:.1f} s; tahoeflow: " + ", ".join(
        f"{k} {v['seconds']:.1f} s" for k, v in cases.items()))  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    for case in cases.values():
        case["r"] = {tuple(r["key"]): pd.read_csv(d / f"{r['id']}_r.csv") for r in case["rows"]}
    return cases


def _python_contrast(top: pd.DataFrame, key: tuple) -> pd.DataFrame:
    sel = (
        (top["drug"] == key[0])
        & (top["dose_uM"] == key[1])
        & (top["cell_line_id"] == key[2])
        & (top["plate"] == key[3])
    )
    return top[sel].set_index("gene")


def _max_diffs(case: dict, cols=LIMMA_COLS) -> pd.DataFrame:
    """Per contrast: genes tested (python, R) and max |python - R| of every statistic."""
    out = []
    for key, r in case["r"].items():
        py = _python_contrast(case["top"], key)
        r = r.assign(gene=r["gene"].str[1:].astype(int)).set_index("gene")
        row = {"key": key, "n_py": len(py), "n_r": len(r)}
        common = py.index.intersection(r.index)
        for c in cols:
            row[c] = (
                float(np.max(np.abs(py.loc[common, c] - r.loc[common, c]))) if len(common) else 0
            )
        out.append(row)
    return pd.DataFrame(out)


def _skip_without(case_name: str, reference: dict):
    if case_name not in reference:
        pytest.skip(f"real data for {case_name} not found under {REAL}")


# --------------------------------------------------------------------------------------------
# limma-voom: textbook, equal to R to 1e-6
# --------------------------------------------------------------------------------------------


def test_voom_equals_r_on_pooled_simulated_plates(reference):
    case = reference["sim"]
    diffs = _max_diffs(case)
    print(diffs.to_string())
    # 4 contrasts: d0 on one plate (~ treated), d1 on two, d2 and d3 on three (~ plate + treated)
    assert sorted(k[3] for k in diffs["key"]) == ["p0", "p0+p1", "p0+p1+p2", "p0+p1+p2"]
    assert (diffs["n_py"] == diffs["n_r"]).all() and (diffs["n_py"] > 1000).all()
    assert (diffs[LIMMA_COLS] <= TOL).all().all(), diffs
    # the pooled contrast finds d2's effect; adj.P.Val.global is BH over the whole table
    top = case["top"]
    np.testing.assert_allclose(
        top["adj.P.Val.global"], bh_adjust(top["P.Value"].to_numpy()), rtol=1e-12
    )
    assert (top[top["drug"] == "d2"]["adj.P.Val"] < 0.05).sum() > 50


def test_voom_equals_r_on_eccite_guide_wells_pooled_over_replicates(reference):
    _skip_without("eccite_guide", reference)
    diffs = _max_diffs(reference["eccite_guide"])
    print(diffs.to_string())
    assert len(diffs) == 25  # the 25 targets with >= 20 cells (SPI1, 48 cells, too)
    assert (diffs["n_py"] == diffs["n_r"]).all()
    assert (diffs[LIMMA_COLS] <= TOL).all().all(), diffs


def test_eccite_hub_layout_yields_contrasts_only_when_pooled(reference):
    """One well per (replicate, target): per plate a contrast has 1 treated + 1 control well and
    no residual df; pooled over the three replicates (~ plate + treated) it has 2, and equals R."""
    _skip_without("eccite_hub", reference)
    counts, groups = eccite_pseudobulk("hub")
    per_plate, skipped = pipeline.pseudobulk_de(
        counts, groups, np.arange(counts.shape[1]), 20, control="non-targeting",
        min_control_wells=1, pool_plates=False, return_skipped=True,
    )  # fmt: skip
    assert per_plate.empty
    few_cells = skipped["reason"].str.contains("min_cells")  # SPI1: 48 cells over 3 replicates
    assert skipped["reason"][~few_cells].str.contains("no residual degrees of freedom").all()
    assert (~few_cells).sum() >= 70
    case = reference["eccite_hub"]
    diffs = _max_diffs(case)
    print(diffs.to_string())
    assert len(diffs) >= 20
    assert (diffs["n_py"] == diffs["n_r"]).all()
    assert (diffs[LIMMA_COLS] <= TOL).all().all(), diffs
    # and the knock-downs are found: JAK2 guides lower JAK2
    top = case["top"]
    jak2 = top[top["drug"] == "JAK2"]
    assert len(jak2) and (jak2["logFC"] < 0).any()


def test_log_path_equals_r_limma_trend_on_l1000(reference):
    _skip_without("l1000", reference)
    diffs = _max_diffs(reference["l1000"])
    print(diffs.describe().to_string())
    assert len(diffs) == 60 and (diffs["n_py"] == 978).all() and (diffs["n_r"] == 978).all()
    assert (diffs[LIMMA_COLS] <= TOL).all().all(), diffs.max(numeric_only=True)


# --------------------------------------------------------------------------------------------
# DESeq2: PyDESeq2 against R's DESeq2
# --------------------------------------------------------------------------------------------


def _deseq2_agreement(case: dict) -> pd.DataFrame:
    out = []
    for key, r in case["r"].items():
        py = _python_contrast(case["top"], key)
        r = r.assign(gene=r["gene"].str[1:].astype(int)).set_index("gene")
        r = r[r["padj"].notna()]
        common = py.index.intersection(r.index)
        lfc = np.abs(py.loc[common, "log2FoldChange"] - r.loc[common, "log2FoldChange"])
        lp = np.abs(np.log10(py.loc[common, "padj"]) - np.log10(r.loc[common, "padj"]))
        sig_py = set(py.index[py["padj"] < 0.05])
        sig_r = set(r.index[r["padj"] < 0.05])
        out.append(
            {
                "key": key,
                "n_py": len(py),
                "n_r": len(r),
                "n_common": len(common),
                "max_dlfc": float(lfc.max()),
                "median_dlfc": float(np.median(lfc)),
                "p95_dlfc": float(np.quantile(lfc, 0.95)),
                "max_dlog10padj": float(lp.max()),
                "calls_py": len(sig_py),
                "calls_r": len(sig_r),
                "calls_both": len(sig_py & sig_r),
                "corr_lfc": float(
                    np.corrcoef(py.loc[common, "log2FoldChange"], r.loc[common, "log2FoldChange"])[
                        0, 1
                    ]
                ),
            }
        )
    return pd.DataFrame(out)


def test_deseq2_agrees_with_r_deseq2(reference):
    """PyDESeq2 0.5.4 against R DESeq2 1.38.3 on the same counts and design (2 simulated
    contrasts pooled over 2 and 3 plates, ECCITE-seq JAK2 and STAT1 pooled over 3 replicates).
    Measured: |log2FoldChange difference| median 2e-6 to 1.5e-3, 95th percentile 3e-5 to 0.045, max
    0.0004 to 0.31 (a few low-count genes whose dispersion estimates differ), correlation >=
    0.998; padj within a factor 10 at most (log10 difference <= 1.09); calls at padj < 0.05:
    29/29, 92 vs 91 (90 shared), 78 vs 75 (75 shared); R's independent filtering removed 12
    STAT1 genes that PyDESeq2 kept."""
    frames = [_deseq2_agreement(reference["simdeseq"])]
    if "ecdeseq" in reference:
        frames.append(_deseq2_agreement(reference["ecdeseq"]))
    agree = pd.concat(frames, ignore_index=True)
    print(agree.to_string())
    print("PyDESeq2 seconds per gene and contrast:", reference["simdeseq"]["seconds_per_gene"])
    top = reference["simdeseq"]["top"]
    assert (
        list(top.columns) == de_tables.DESEQ2_COLUMNS
        and top[de_tables.DESEQ2_STATS].notna().all().all()
    )
    assert (agree["n_common"] >= 0.95 * agree["n_r"]).all(), agree
    assert (agree["median_dlfc"] <= 0.002).all(), agree
    assert (agree["p95_dlfc"] <= 0.05).all(), agree
    assert (agree["max_dlfc"] <= 0.35).all(), agree
    assert (agree["max_dlog10padj"] <= 1.2).all(), agree
    assert (agree["corr_lfc"] >= 0.998).all(), agree
    both = agree["calls_both"]
    assert (both >= 0.95 * np.maximum(agree["calls_py"], agree["calls_r"]) - 1).all(), agree


def test_bh_adjust_equals_r_p_adjust_bit_for_bit(tmp_path):
    """tahoeflow.multitest.bh_adjust (scipy's false_discovery_control) is R's p.adjust(BH) to
    the last bit, ties and tiny p-values included (R writes the doubles in hex: %a)."""
    rscript = _check_r()
    rng = np.random.default_rng(11)
    p = np.concatenate([rng.uniform(size=2000), rng.uniform(0, 1e-4, size=300),
                        np.round(rng.uniform(size=500), 3), [0.0, 1.0, 1e-300]])  # fmt: skip
    np.savetxt(tmp_path / "p.txt", p, fmt="%.17g")
    out = subprocess.run(
        [rscript, "-e", f"p <- scan('{tmp_path / 'p.txt'}', quiet=TRUE); "
         "cat(sprintf('%a', p.adjust(p, method='BH')), sep='\\n')"],
        capture_output=True, text=True, timeout=300, check=True,
    ).stdout.split()  # fmt: skip
    r = np.array([float.fromhex(x) for x in out])
    assert r.size == p.size
    assert np.array_equal(bh_adjust(p), r)
