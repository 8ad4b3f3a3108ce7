"""Seed 002's pipeline, rewritten for the benchmark (P2's baseline): stream, CSR, CPM, SVD, KMeans.

What the seed's README describes, step by step, on local Parquet files in the hub layout
(never the network: ``HF_HUB_OFFLINE``/``HF_DATASETS_OFFLINE`` are set before importing
``datasets``):

1. ``datasets.load_dataset("parquet", data_files=[...], split="train", streaming=True)`` and
   iterate over the first ``--samples`` cells, one Python dict per cell;
2. per cell: strip the marker (``genes[0] == 1``, ``expressions[0] == -2``), map each token id
   to a column with a dict built from ``gene_metadata`` (columns in Ensembl-id table order),
   and append the per-cell Python lists to ``data``/``indices``/``indptr``;
3. a ``scipy.sparse.csr_matrix`` of counts (cells x 62,710 genes);
4. CPM (each cell divided by its total, times 1e6) and ``log1p``;
5. ``TruncatedSVD(n_components=--pca_dim)`` (randomized, sklearn's default) and
   ``KMeans(n_clusters=--clusters)`` on the embedding;
6. ``embeddings.csv`` (PCs, cell metadata, cluster) and ``pca_variance.csv``.

The seed's own code is not available (only its README); where the README is silent the
choices match our workflow's (``random_state=0``, KMeans ``n_init=3``), so both do the same
amount of clustering work. Prints one JSON line with the phase times.

    .venv/bin/python benchmarks/seed002_baseline.py --data-dir DIR --samples 20000 --out OUT
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

CLS_TOKEN = 1
META = ["BARCODE_SUB_LIB_ID", "sample", "plate", "drug", "cell_line_id", "moa-fine"]


def main(argv: list[str] | None = None) -> int:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True, help="hub layout: data/, metadata/")
    ap.add_argument("--files", nargs="*", type=Path, help="data files (default: all in data/)")
    ap.add_argument("--samples", type=int, default=20_000)
    ap.add_argument("--pca_dim", type=int, default=50)
    ap.add_argument("--clusters", type=int, default=10)
    ap.add_argument("--out", type=Path, default=Path("."))
    args = ap.parse_args(argv)

    # datasets keeps lock files in its cache even when streaming: keep them out of ~/.cache
    os.environ.setdefault("HF_DATASETS_CACHE", str(args.out / ".hf-datasets-cache"))
    import datasets
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    import scipy.sparse as sp
    from sklearn.cluster import KMeans
    from sklearn.decomposition import TruncatedSVD

    datasets.disable_progress_bars()
    t_import = time.perf_counter() - t_start
    phases = {}

    # gene index: Ensembl ids in gene_metadata's order; token id -> column
    t0 = time.perf_counter()
    genes = pq.read_table(args.data_dir / "metadata" / "gene_metadata.parquet").to_pandas()
    ensembl = genes["ensembl_id"].tolist()
    token_to_col = {int(t): j for j, t in enumerate(genes["token_id"].tolist())}
    files = args.files or sorted((args.data_dir / "data").glob("train-*.parquet"))
    ds = datasets.load_dataset(
        "parquet", data_files=[str(f) for f in files], split="train", streaming=True
    )

    data: list[float] = []
    indices: list[int] = []
    indptr: list[int] = [0]
    meta: dict[str, list] = {k: [] for k in META}
    n = 0
    for cell in ds:
        if n >= args.samples:
            break
        g, e = cell["genes"], cell["expressions"]
        if g and g[0] == CLS_TOKEN:  # the marker element
            g, e = g[1:], e[1:]
        cols = [token_to_col[t] for t in g]
        indices.extend(cols)
        data.extend(e)
        indptr.append(len(indices))
        for k in META:
            meta[k].append(cell[k])
        n += 1
    phases["stream_and_lists"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    X = sp.csr_matrix(
        (np.asarray(data, dtype=np.float32), np.asarray(indices), np.asarray(indptr)),
        shape=(n, len(ensembl)),
    )
    del data, indices, indptr
    phases["csr"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    totals = np.asarray(X.sum(axis=1)).ravel()
    totals[totals == 0] = 1.0
    X = sp.diags(1.0 / totals) @ X * 1e6
    X.data = np.log1p(X.data)
    phases["cpm_log1p"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    svd = TruncatedSVD(n_components=args.pca_dim, random_state=0)
    emb = svd.fit_transform(X)
    phases["truncated_svd"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    km = KMeans(n_clusters=args.clusters, n_init=3, random_state=0)
    labels = km.fit_predict(emb)
    phases["kmeans"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    pcs = [f"pc{i + 1}" for i in range(args.pca_dim)]
    df = pd.DataFrame(emb, columns=pcs)
    for k in META:
        df[k] = meta[k]
    df["cluster"] = labels
    df.to_csv(args.out / "embeddings.csv", index=False)
    pd.DataFrame({"pc": pcs, "explained_variance_ratio": svd.explained_variance_ratio_}).to_csv(
        args.out / "pca_variance.csv", index=False
    )
    phases["write"] = time.perf_counter() - t0

    print(
        json.dumps(
            {
                "cells": n,
                "nnz": int(X.nnz),
                "import_s": t_import,
                "phases_s": phases,
                "total_s": time.perf_counter() - t_start,
                "explained_variance_ratio_sum": float(svd.explained_variance_ratio_.sum()),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
