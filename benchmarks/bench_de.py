"""Benchmark: pseudobulk DE against the demo's truth, the two FDR columns, throughput.

Reads a finished demo run (``--results``, default ``results/`` of ``make demo``: the merged
pseudobulk, ``merged/gene_stats.parquet`` and the truth table ``demo/truth/effects.parquet``)
and, for each voom variant (textbook limma-voom, the default; each departure alone; all three),
runs :func:`tahoeflow.de.pipeline.pseudobulk_de` on every cell line exactly as the workflow's DE jobs do,
then reports:

* calls, false calls, empirical FDR and power at ``alpha`` (:func:`tahoeflow.de.truth.score_calls`)
  for the per-contrast ``adj.P.Val`` and the table-wide ``adj.P.Val.global``;
* power of ``adj.P.Val.global`` per effect size (``|log2fc_share|`` bins of the truth table);
* uniformity of the null p-values (genes without a true effect): the Kolmogorov-Smirnov
  statistic D against U(0, 1), and the share below 0.05 and 0.01;
* throughput: contrasts per second of one DE job (one process, the textbook method), and the
  projection for Tahoe-100M's ~57,000 (drug, dose, cell line) contrasts with ``de.jobs`` jobs.

    .venv/bin/python benchmarks/bench_de.py [--results results] [--alpha 0.05] [--jobs 50]

With ``--run-demo DIR`` it first runs the workflow's demo up to the DE inputs in DIR (with
``--demo-config``, a YAML merged over config/config.yaml).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from tahoeflow.de.parts import lines_of_part
from tahoeflow.de.pipeline import pseudobulk_de
from tahoeflow.de.truth import score_calls
from tahoeflow.merge.conditions import pseudobulk_matrix
from tahoeflow.multitest import bh_adjust

REPO = Path(__file__).resolve().parents[1]
TAHOE_CONTRASTS = 57_000
KEYS = ["drug", "dose_uM", "cell_line_id"]
DEPARTURES = dict(gene_filter="pooled", voom_axis="inv_sqrt", voom_fitted="midpoint")
VARIANTS = {
    "textbook limma-voom (default)": {},
    "+ pooled filter": dict(gene_filter="pooled"),
    "+ inv_sqrt trend axis": dict(voom_axis="inv_sqrt"),
    "+ midpoint weights": dict(voom_fitted="midpoint"),
    "+ both voom departures": dict(voom_axis="inv_sqrt", voom_fitted="midpoint"),
    "+ all three": DEPARTURES,
}


def load(results: Path):
    groups = pd.read_parquet(results / "merged/pseudobulk_groups.parquet")
    counts = pd.read_parquet(results / "merged/pseudobulk.parquet")
    genes = pd.read_parquet(results / "merged/gene_stats.parquet")
    cols = [c for c in ("token_id", "ensembl_id", "gene_symbol") if c in genes.columns]
    genes = genes[cols]
    X = pseudobulk_matrix(counts, groups, genes["token_id"].to_numpy())
    truth = pd.read_parquet(results / "demo/truth/effects.parquet")
    return X, groups, genes, truth


def run_all_lines(X, groups, genes, min_cells, **kw):
    """One pseudobulk_de per cell line (the workflow's per-line jobs), then the global BH."""
    parts, seconds, n_contrasts = [], [], 0
    lines = groups["cell_line_id"].astype(str)
    for line in lines_of_part(lines, 0, 1):
        rows = np.flatnonzero(lines.to_numpy() == line)
        t0 = time.perf_counter()
        top = pseudobulk_de(
            X[rows], groups.iloc[rows].reset_index(drop=True), genes["token_id"].to_numpy(),
            min_cells, genes=genes, **kw,
        )  # fmt: skip
        seconds.append(time.perf_counter() - t0)
        n_contrasts += top[[*KEYS, "plate"]].drop_duplicates().shape[0]
        parts.append(top)
    top = pd.concat(parts, ignore_index=True)
    top["adj.P.Val.global"] = bh_adjust(top["P.Value"].to_numpy())
    return top, float(np.sum(seconds)), n_contrasts


def null_tail(top, truth):
    """Where the null p-values depart from U(0, 1): the share below 1e-3 and 1e-4 (the region
    where a table-wide BH threshold lies) by number of treated wells and AveExpr percentile."""
    t = truth.rename(columns={"token_id": "gene"})[[*KEYS, "gene"]].drop_duplicates()
    m = top.merge(t.assign(_true=True), on=[*KEYS, "gene"], how="left")
    m = m[m["_true"].isna()]
    top1 = m["AveExpr"] >= m["AveExpr"].quantile(0.99)
    out = {}
    for name, sel in (
        ("all null tests", np.ones(len(m), bool)),
        ("1 treated well", (m["n_treated_wells"] == 1).to_numpy()),
        (">= 2 treated wells", (m["n_treated_wells"] >= 2).to_numpy()),
        ("top 1% AveExpr", top1.to_numpy()),
        ("below top 1% AveExpr", ~top1.to_numpy()),
    ):
        p = m.loc[sel, "P.Value"].to_numpy()
        out[name] = {"n": int(p.size), "p<0.05": float(np.mean(p < 0.05)),
                     "p<1e-3": float(np.mean(p < 1e-3)), "p<1e-4": float(np.mean(p < 1e-4))}  # fmt: skip
    return out


def power_by_effect(top, truth, alpha):
    t = truth.rename(columns={"token_id": "gene"})[[*KEYS, "gene", "log2fc_share"]]
    t = t.groupby([*KEYS, "gene"], as_index=False)["log2fc_share"].mean()
    tested = top[KEYS].drop_duplicates()
    t = t.merge(tested, on=KEYS)  # truly changed genes of the tested conditions
    m = t.merge(top[[*KEYS, "gene", "adj.P.Val.global"]], on=[*KEYS, "gene"], how="left")
    m["called"] = m["adj.P.Val.global"] < alpha
    bins = [0, 0.25, 0.5, 1, 2, np.inf]
    m["bin"] = pd.cut(m["log2fc_share"].abs(), bins, right=False)
    return m.groupby("bin", observed=False)["called"].agg(["size", "mean"])


def null_uniformity(top, truth):
    t = truth.rename(columns={"token_id": "gene"})[[*KEYS, "gene"]].drop_duplicates()
    t["_true"] = True
    m = top.merge(t, on=[*KEYS, "gene"], how="left")
    p = m.loc[m["_true"].isna(), "P.Value"].to_numpy()
    ks = stats.kstest(p, "uniform")
    return {
        "n_null": int(p.size),
        "ks_D": float(ks.statistic),
        "ks_p": float(ks.pvalue),
        "share_p<0.05": float(np.mean(p < 0.05)),
        "share_p<0.01": float(np.mean(p < 0.01)),
    }


def atlas_throughput(n_contrasts: int = 10, n_genes: int = 62_710, seed: int = 0) -> dict:
    """Seconds per contrast at Tahoe's gene count: one cell line, one plate, 2 DMSO wells and
    ``n_contrasts`` drugs with one well each (Tahoe's layout), ~20k genes expressed, wells of
    ~150k counts (Poisson x well noise), textbook voom."""
    rng = np.random.default_rng(seed)
    share = np.zeros(n_genes)
    expressed = rng.choice(n_genes, 20_000, replace=False)
    share[expressed] = rng.gamma(0.5, 1.0, expressed.size)
    share /= share.sum()
    n = 2 + n_contrasts
    mu = share * rng.uniform(1e5, 2e5, (n, 1)) * np.exp(rng.normal(0, 0.1, (n, n_genes)))
    counts = rng.poisson(mu).astype(np.float64)
    groups = pd.DataFrame(
        {
            "sample": [f"w{i}" for i in range(n)],
            "cell_line_id": "L",
            "plate": "p",
            "drug": ["DMSO_TF", "DMSO_TF"] + [f"d{i}" for i in range(n_contrasts)],
            "dose_uM": [0.0, 0.0] + [1.0] * n_contrasts,
            "n_cells": 100,
        }
    )
    t0 = time.perf_counter()
    top = pseudobulk_de(counts, groups, np.arange(n_genes), 20)
    secs = time.perf_counter() - t0
    return {"seconds_per_contrast": secs / n_contrasts, "genes_tested": len(top) / n_contrasts}


def run_demo(out: Path, config: Path | None) -> Path:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(out),
           "--configfile", str(REPO / "config/config.yaml"), *([str(config)] if config else []),
           "--cores", "2", "results/merged/pseudobulk.parquet",
           "results/merged/gene_stats.parquet", "results/demo/truth/effects.parquet"]  # fmt: skip
    subprocess.run(cmd, check=True, cwd=out)
    return out / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=REPO / "results")
    ap.add_argument("--run-demo", type=Path, default=None)
    ap.add_argument("--demo-config", type=Path, default=None)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--min-cells", type=int, default=20)
    ap.add_argument("--jobs", type=int, default=50, help="DE jobs of the Tahoe projection")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()
    t_start = time.perf_counter()
    results = args.results
    if args.run_demo is not None:
        args.run_demo.mkdir(parents=True, exist_ok=True)
        results = run_demo(args.run_demo.resolve(), args.demo_config)
    X, groups, genes, truth = load(results)
    print(f"{results}: {X.shape[0]} wells x {X.shape[1]} genes, "
          f"{groups['cell_line_id'].nunique()} lines, {groups['plate'].nunique()} plates")  # fmt: skip
    rows, extra = [], {}
    for name, kw in VARIANTS.items():
        top, secs, n_con = run_all_lines(X, groups, genes, args.min_cells, **kw)
        row = {"variant": name, "contrasts": n_con, "tests": len(top), "seconds": round(secs, 2)}
        for col in ("adj.P.Val", "adj.P.Val.global"):
            s = score_calls(top, truth, alpha=args.alpha, padj_col=col)
            tag = "global" if col.endswith("global") else "contrast"
            row.update({f"calls_{tag}": s["n_calls"], f"fdr_{tag}": round(s["fdr"], 4),
                        f"power_{tag}": round(s["power"] or 0.0, 4)})  # fmt: skip
        row.update({k: round(v, 4) for k, v in null_uniformity(top, truth).items()})
        rows.append(row)
        if name.startswith("textbook"):
            print("power of adj.P.Val.global by |log2fc_share| (textbook):")
            pw = power_by_effect(top, truth, args.alpha)
            print(pw.to_string())
            tail = null_tail(top, truth)
            print("null p-value tails (textbook):", tail)
            rate = n_con / secs
            extra.update(
                power_by_effect=[{"abs_log2fc": str(b), "n": int(r["size"]),
                                  "power": float(r["mean"])} for b, r in pw.iterrows()],
                null_tail=tail, demo_contrasts=n_con, demo_seconds=secs,
                demo_genes_per_contrast=len(top) / max(n_con, 1),
            )  # fmt: skip
            print(
                f"throughput: {n_con} contrasts in {secs:.2f} s = {rate:.1f} contrasts/s per job; "
                f"Tahoe's ~{TAHOE_CONTRASTS:,} contrasts: {TAHOE_CONTRASTS / rate / 3600:.2f} h "
                f"in one job, {TAHOE_CONTRASTS / rate / args.jobs / 60:.1f} min with "
                f"{args.jobs} jobs (the demo's gene counts)"
            )
    print(pd.DataFrame(rows).to_string(index=False))
    at = atlas_throughput()
    rate = 1.0 / at["seconds_per_contrast"]
    print(
        f"atlas-sized contrasts (62,710 genes, {at['genes_tested']:.0f} tested, 1 treated + 2 "
        f"DMSO wells): {at['seconds_per_contrast']:.3f} s each = {rate:.1f} contrasts/s per job; "
        f"~{TAHOE_CONTRASTS:,} contrasts: {TAHOE_CONTRASTS / rate / 3600:.1f} h in one job, "
        f"{TAHOE_CONTRASTS / rate / args.jobs / 60:.1f} min with {args.jobs} jobs (one per line)"
    )
    if args.json is not None:
        out = {
            "results": str(results), "wells": int(X.shape[0]), "genes": int(X.shape[1]),
            "lines": int(groups["cell_line_id"].nunique()), "plates": int(groups["plate"].nunique()),
            "alpha": args.alpha, "variants": rows, **extra,
            "atlas": {**at, "contrasts_per_s": rate, "tahoe_contrasts": TAHOE_CONTRASTS,
                      "jobs": args.jobs, "hours_one_job": TAHOE_CONTRASTS / rate / 3600,
                      "minutes_with_jobs": TAHOE_CONTRASTS / rate / args.jobs / 60},
            "wall_s": time.perf_counter() - t_start,
        }  # fmt: skip
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
