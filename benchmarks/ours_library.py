"""The workflow's embedding arithmetic in ONE process: the ``tahoeflow`` functions, no Snakemake.

What the DAG's jobs do, file by file and with memory bounded by one file, but without a
process (and Python start, imports, numba cache loads, Snakemake bookkeeping) per job:

1. per file: ``load_shard`` (read, validate, CSR, filters) + ``shard_stats``; gene sums added;
2. HVGs from the summed statistics (``highly_variable_genes_from_stats``);
3. per file, read again: ``log_normalize_columns`` over the HVGs + ``gram_partial``;
4. ``pca_from_gram`` (one eigendecomposition);
5. per file, read again: ``project``;
6. ``kmeans`` (same settings as the workflow: single-threaded, seeded); optionally seed 002's
   ``embeddings.csv`` and ``pca_variance.csv`` (``--out``).

Used by P2 and P3 (``ours_end_to_end.py``, ``vs_scanpy.py``) as the "library" figure beside the
workflow's: the difference between the two is what the orchestration costs. Prints one JSON
line (phase seconds, peak RSS, HVG token ids, explained variance ratios).

    .venv/bin/python benchmarks/ours_library.py --gene-meta G --sample-meta S --paths F1 F2 ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gene-meta", type=Path, required=True)
    ap.add_argument("--sample-meta", type=Path, required=True)
    ap.add_argument("--paths", nargs="+", type=Path, required=True)
    ap.add_argument("--n-top", type=int, default=2000)
    ap.add_argument("--n-comps", type=int, default=50)
    ap.add_argument("--n-clusters", type=int, default=10)
    ap.add_argument("--no-center", action="store_true", help="uncentred (TruncatedSVD), as P2")
    ap.add_argument("--min-genes", type=int, default=0)
    ap.add_argument("--out", type=Path, help="write embeddings.csv and pca_variance.csv here")
    args = ap.parse_args(argv)

    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    from _common import vm_hwm_mb

    from tahoeflow.cells import normalize as pp
    from tahoeflow.cells.doses import sample_doses
    from tahoeflow.cells.plan import Shard
    from tahoeflow.cells.stats import shard_stats
    from tahoeflow.cells.summarize import Filters, load_shard
    from tahoeflow.cells.vocab import vocab_from_gene_metadata
    from tahoeflow.embed.hvg import highly_variable_genes_from_stats
    from tahoeflow.embed.kmeans import kmeans
    from tahoeflow.embed.pca import combine_gram, gram_partial, pca_from_gram, project

    times: dict[str, float] = {"import": time.perf_counter() - t_start}
    t0 = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal t0
        times[name] = time.perf_counter() - t0
        t0 = time.perf_counter()

    vocab = vocab_from_gene_metadata(pq.read_table(args.gene_meta), args.gene_meta)
    doses = sample_doses(pq.read_table(args.sample_meta).to_pandas(), args.sample_meta)
    filters = Filters(min_genes=args.min_genes)

    def load(i: int, path: Path):
        return load_shard(path, Shard(f"s{i}", i, 0, None), vocab, doses, filters)

    n_obs, sums = 0, None
    for i, p in enumerate(args.paths):
        loaded = load(i, p)
        _, genes = shard_stats(loaded.X, vocab.is_mito)
        n_obs += loaded.X.shape[0]
        sums = genes if sums is None else {k: sums[k] + genes[k] for k in sums}
    mark("pass1_load_stats")
    hvg = highly_variable_genes_from_stats(
        n_obs, sums["sum_norm"], sums["sumsq_norm"], sum_log=sums["sum_log"],
        sumsq_log=sums["sumsq_log"], n_top=args.n_top, flavor="seurat",
    )  # fmt: skip
    cols = np.flatnonzero(hvg["highly_variable"].to_numpy())
    mark("hvg")

    def hvg_matrices():
        for i, p in enumerate(args.paths):
            loaded = load(i, p)
            yield pp.log_normalize_columns(loaded.X, cols), loaded.obs

    G, colsum, n = combine_gram(gram_partial(X) for X, _ in hvg_matrices())
    mark("pass2_gram")
    pca = pca_from_gram(G, colsum, n, args.n_comps, center=not args.no_center)
    mark("pca")
    Z, obs = [], []
    for X, o in hvg_matrices():
        Z.append(project(X, pca))
        obs.append(o)
    Z = np.vstack(Z)
    mark("pass3_project")
    labels, _, _, method = kmeans(Z, args.n_clusters, seed=0)
    mark("kmeans")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        meta = pd.concat(obs, ignore_index=True)
        emb = pd.DataFrame(Z, columns=[f"pc{i + 1}" for i in range(Z.shape[1])])
        emb = pd.concat([emb, meta[["cell_id", "sample", "plate", "drug", "dose_uM",
                                    "cell_line_id", "moa_fine"]]], axis=1)  # fmt: skip
        emb["cluster"] = labels
        emb.to_csv(args.out / "embeddings.csv", index=False, float_format="%.6g")
        pd.DataFrame(
            {
                "pc": emb.columns[: Z.shape[1]],
                "explained_variance_ratio": pca.explained_variance_ratio,
            }
        ).to_csv(args.out / "pca_variance.csv", index=False)
        mark("write")
    print(
        json.dumps(
            {
                "cells": int(Z.shape[0]),
                "times_s": times,
                "peak_mb": vm_hwm_mb(),
                "total_s": time.perf_counter() - t_start,
                "kmeans": method,
                "hvg_token_ids": sorted(vocab.token_ids[cols].astype(int).tolist()),
                "explained_variance_ratio": pca.explained_variance_ratio.tolist(),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
