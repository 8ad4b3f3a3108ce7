"""Benchmark: empirical FDR and power of tahoeflow.de.pipeline.pseudobulk_de against a known truth.

1. The frozen failing case (default ``/tmp/de_case``: pseudobulk.parquet,
   pseudobulk_groups.parquet, gene_stats.parquet, effects.parquet), analysed with the
   workflow's exact call (workflow/scripts/de_pseudobulk.py)::

       pseudobulk_de(X, groups, tokens, 20, min_control_wells=2, prior_count=2.0,
                     control="DMSO_TF", return_skipped=True)

   once with ``method="plain"`` (the original log-CPM + constant-prior eBayes: "before") and
   once with voom and the three departures of ``de.voom`` (``DEPARTURES``), plus ablations
   that undo one departure from textbook edgeR + limma-voom (the default) each (limma's voom weights at the own group mean, limma's
   log2 trend axis, edgeR's per-well filter rule), all three at once, and limma-trend.
2. Optionally (``--sim-seeds``) fresh simulations from :class:`tahoeflow.sources.demo.Design` (the
   demo's generative model and truth table; default DemoParams apart from the seed). Cells
   are allocated to wells and cell lines as :func:`tahoeflow.sources.demo_files.generate_file` does and each
   (well, cell line) pseudobulk is drawn directly as ``Multinomial(sum of the cells' library
   sizes, softmax(log weights))``, which is exactly the sum of the cells' multinomials.

For each run it prints calls, false calls, empirical FDR and power at adj.P.Val < alpha
(:func:`tahoeflow.de.truth.score_calls`), power for the truly changed genes with
``|log2fc_share| >= 1``, and the wall time.

    .venv/bin/python benchmarks/bench_de_truth.py [--case /tmp/de_case] [--sim-seeds 1 2]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tahoeflow.de.pipeline import pseudobulk_de
from tahoeflow.de.truth import score_calls
from tahoeflow.merge.conditions import pseudobulk_matrix
from tahoeflow.sources.demo import DemoParams, Design
from tahoeflow.sources.tahoe import CONTROL_DRUG, FIRST_TOKEN

KEYS = ["drug", "dose_uM", "cell_line_id"]

DEPARTURES = dict(gene_filter="pooled", voom_axis="inv_sqrt", voom_fitted="midpoint")
VARIANTS = {
    "before: plain (log-CPM, eBayes)": dict(method="plain"),
    "voom with the three departures (de.voom)": DEPARTURES,
    "  undo: limma's weights (own group)": {**DEPARTURES, "voom_fitted": "group"},
    "  undo: limma's log2 trend axis": {**DEPARTURES, "voom_axis": "log2"},
    "  undo: edgeR's filter rule (n=1)": {**DEPARTURES, "gene_filter": "edgeR"},
    "  textbook edgeR + limma-voom (the default)": {},
    "  limma-trend (filter + TMM)": dict(method="trend"),
}


def load_case(root: Path) -> tuple[sp.csr_matrix, pd.DataFrame, np.ndarray, pd.DataFrame]:
    groups = pd.read_parquet(root / "pseudobulk_groups.parquet")
    counts = pd.read_parquet(root / "pseudobulk.parquet")
    tokens = pd.read_parquet(root / "gene_stats.parquet", columns=["token_id"])["token_id"]
    tokens = tokens.to_numpy()
    truth = pd.read_parquet(root / "effects.parquet")
    return pseudobulk_matrix(counts, groups, tokens), groups, tokens, truth


def simulate(seed: int) -> tuple[sp.csr_matrix, pd.DataFrame, np.ndarray, pd.DataFrame]:
    """Pseudobulks of a fresh demo design (see the module docstring)."""
    design = Design(DemoParams(seed=seed))
    p = design.p
    n_genes = design.base.size
    sums: dict[tuple[int, int], list] = {}
    rng = np.random.default_rng([seed, 99])
    for f in range(p.n_files):
        plate = design.file_plate(f)
        wells = np.flatnonzero(design.well_plate == plate)
        ww = design.well_weight[wells] / design.well_weight[wells].sum()
        cell_well = wells[rng.choice(wells.size, size=p.cells_per_file, p=ww)]
        cell_line = rng.choice(p.n_cell_lines, size=p.cells_per_file, p=design.line_weights)
        for (well, line), n in (
            pd.Series(list(zip(cell_well, cell_line, strict=True))).value_counts(sort=False).items()
        ):
            mu = design.log_libsize_mean(int(well), int(line))
            lib = np.maximum(np.rint(rng.lognormal(mu, p.libsize_sd, n)), 50).astype(np.int64)
            lw = design.log_weights(int(well), int(line))
            prob = np.exp(lw - lw.max())
            counts = rng.multinomial(int(lib.sum()), prob / prob.sum())
            acc = sums.setdefault((int(well), int(line)), [0, np.zeros(n_genes, np.int64)])
            acc[0] += int(n)
            acc[1] += counts
    rows, mats = [], []
    for (well, line), (n, counts) in sorted(sums.items()):
        drug, dose = design.drug_label(well)
        rows.append(
            dict(
                sample=design.sample_names[well],
                cell_line_id=design.line_ids[line],
                plate=design.plate_names[design.well_plate[well]],
                drug=drug,
                dose_uM=dose,
                is_control=drug == CONTROL_DRUG,
                n_cells=n,
                total_counts=float(counts.sum()),
            )
        )
        mats.append(sp.csr_matrix(counts.astype(np.float64)))
    tokens = np.arange(n_genes, dtype=np.int64) + FIRST_TOKEN
    return sp.vstack(mats).tocsr(), pd.DataFrame(rows), tokens, design.truth_effects()


def strong_power(top: pd.DataFrame, truth: pd.DataFrame, alpha: float) -> float:
    """Power for the truly changed genes with |log2fc_share| >= 1 (tested or not)."""
    strong = truth.loc[truth["log2fc_share"].abs() >= 1, [*KEYS, "token_id"]].drop_duplicates()
    strong = strong.merge(top[KEYS].drop_duplicates(), on=KEYS)  # tested conditions only
    hit = top.loc[top["adj.P.Val"] < alpha, [*KEYS, "gene"]].rename(columns={"gene": "token_id"})
    n_hit = len(strong.merge(hit, on=[*KEYS, "token_id"]))
    return n_hit / len(strong) if len(strong) else float("nan")


def run(name: str, X, groups, tokens, truth, alpha: float) -> None:
    print(f"== {name}: {X.shape[0]} wells x {X.shape[1]} genes")
    for label, kw in VARIANTS.items():
        t0 = time.perf_counter()
        top, skipped = pseudobulk_de(
            X, groups, tokens, 20, min_control_wells=2, prior_count=2.0, control=CONTROL_DRUG,
            return_skipped=True, **kw,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        s = score_calls(top, truth, alpha=alpha)
        n_con = top[["drug", "dose_uM", "cell_line_id", "plate"]].drop_duplicates().shape[0]
        print(
            f"{label:36s} contrasts {n_con:4d}  tests {s['n_tests']:8d}  calls {s['n_calls']:5d}"
            f"  false {s['n_false_calls']:5d}  FDR {s['fdr']:.4f}  power {s['power']:.4f}"
            f"  power|lfc|>=1 {strong_power(top, truth, alpha):.4f}  {wall:5.1f} s",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--case", type=Path, default=Path("/tmp/de_case"))
    ap.add_argument("--sim-seeds", type=int, nargs="*", default=[])
    ap.add_argument("--alpha", type=float, default=0.05)
    args = ap.parse_args()
    if (args.case / "pseudobulk.parquet").exists():
        run(f"frozen case {args.case}", *load_case(args.case), alpha=args.alpha)
    else:
        print(f"(no frozen case at {args.case})")
    for seed in args.sim_seeds:
        run(f"fresh demo simulation, seed {seed}", *simulate(seed), alpha=args.alpha)


if __name__ == "__main__":
    main()
