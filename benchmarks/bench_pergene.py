"""Benchmark: tahoeflow.pergene.lasso.fit_pergene at the seed-003 scale, against per-gene sklearn.

Simulates (seeded) 12,205 genes x 1,000 samples x 30 features, times fit_pergene (Lasso with
alpha by 5-fold CV over 30 alphas + LinearRegression for every gene, metrics included) over
--runs runs, and prints min / median wall time, CPU time and the ratio to the 120 s goal.
Then times the straightforward alternative, one sklearn LassoCV (same alpha grid size, same
folds, default tol) plus one LinearRegression per gene, on --sklearn-genes genes, and
extrapolates it to all genes to give the speed-up.

    .venv/bin/python benchmarks/bench_pergene.py [--runs 3] [--sklearn-genes 50]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
from sklearn.linear_model import LassoCV, LinearRegression
from threadpoolctl import threadpool_limits

from tahoeflow.pergene import lasso as pergene

GOAL_S = 120.0


def simulate(n: int, p: int, G: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Correlated features (5 latent factors), sparse true coefficients, gene-specific noise."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(n, 5))
    X = factors @ (0.7 * rng.normal(size=(5, p))) + rng.normal(size=(n, p))
    X = X * rng.uniform(0.5, 5.0, size=p) + rng.normal(size=p)
    W = rng.normal(size=(p, G)) * (rng.random((p, G)) < 0.15)
    Y = 0.3 * (X - X.mean(0)) / X.std(0) @ W + rng.normal(size=(n, G)) * rng.uniform(0.5, 2.0, G)
    return X, Y + rng.uniform(0, 5, size=G)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--genes", type=int, default=12_205)
    ap.add_argument("--samples", type=int, default=1_000)
    ap.add_argument("--features", type=int, default=30)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sklearn-genes", type=int, default=50)
    ap.add_argument("--cv", type=int, default=5)
    ap.add_argument("--n-alphas", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-jobs", type=int, default=1, help="fit_pergene threads over CV folds")
    args = ap.parse_args()

    X, Y = simulate(args.samples, args.features, args.genes, args.seed)
    print(
        f"data: {args.genes} genes x {args.samples} samples x {args.features} features; "
        f"cv={args.cv}, n_alphas={args.n_alphas}; python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )

    walls, cpus = [], []
    res = None
    for r in range(args.runs):
        t0, c0 = time.perf_counter(), time.process_time()
        res = pergene.fit_pergene(
            X, Y, None, cv=args.cv, n_alphas=args.n_alphas, seed=args.seed, n_jobs=args.n_jobs
        )
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        print(
            f"  run {r + 1}: wall {walls[-1]:.1f} s, CPU {cpus[-1]:.1f} s "
            f"(load average {os.getloadavg()[0]:.2f})",
            flush=True,
        )
    assert res is not None
    tmin, tmed = min(walls), statistics.median(walls)
    print(
        f"fit_pergene: min {tmin:.1f} s, median {tmed:.1f} s (CPU min {min(cpus):.1f} s); "
        f"goal {GOAL_S:.0f} s -> min/goal = {tmin / GOAL_S:.2f}, median/goal = {tmed / GOAL_S:.2f}"
    )
    r2 = np.array([d["r2"] for d in res if d["kind"] == "lasso"])
    print(f"  lasso held-out R^2: median {np.median(r2):.3f}")

    # sklearn, one gene at a time, same split, folds and grid size
    k = min(args.sklearn_genes, args.genes)
    train, _, folds = pergene.split_indices(args.samples, test_size=0.2, cv=args.cv, seed=args.seed)
    t0, c0 = time.perf_counter(), time.process_time()
    with threadpool_limits(limits=1):  # same BLAS setting as fit_pergene
        for g in range(k):
            LassoCV(alphas=args.n_alphas, cv=folds).fit(X[train], Y[train, g])
            LinearRegression().fit(X[train], Y[train, g])
    t_sk, c_sk = time.perf_counter() - t0, time.process_time() - c0
    extrap, extrap_cpu = t_sk / k * args.genes, c_sk / k * args.genes
    print(
        f"sklearn LassoCV + LinearRegression per gene: {t_sk:.1f} s wall / {c_sk:.1f} s CPU "
        f"for {k} genes -> {extrap:.0f} s wall ({extrap / 60:.1f} min), {extrap_cpu:.0f} s CPU "
        f"extrapolated to {args.genes} genes; speed-up of fit_pergene: "
        f"{extrap / tmed:.0f}x (median wall), {extrap_cpu / statistics.median(cpus):.0f}x (CPU)"
    )


if __name__ == "__main__":
    main()
