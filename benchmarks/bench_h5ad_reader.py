"""h5ad reader: tahoeflow's h5py row-range reader vs anndata's own API (time + peak RSS).

    python benchmarks/bench_h5ad_reader.py make /tmp/big.h5ad   # 400k x 2000, 60 counts/row
    python benchmarks/bench_h5ad_reader.py {old_x,ad_x,old_shard,ad_obs} /tmp/big.h5ad

One measurement per process (peak RSS is per process): a 10k-row shard at row 200,000.
old_x: ``read_rows_csr``; ad_x: ``anndata.io.sparse_dataset(f["X"])[a:b]``; old_shard:
``load_h5ad_shard`` (X + three obs columns + names); ad_obs: ``anndata.io.read_elem`` of the
same obs columns (whole columns, then sliced).
"""

import resource
import sys
import time

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp


def make(path: str, n: int = 400_000, g: int = 2000, k: int = 60) -> None:
    rng = np.random.default_rng(0)
    idx = np.sort((rng.integers(0, g, size=(n, 1)) + np.arange(k) * (g // k)) % g, axis=1)
    X = sp.csr_matrix(
        (rng.integers(1, 9, n * k).astype(np.float32), idx.ravel().astype(np.int32),
         np.arange(0, n * k + 1, k)), shape=(n, g),
    )  # fmt: skip
    obs = pd.DataFrame(
        {"drug": pd.Categorical(rng.choice(["DMSO", "a", "b"], n)), "dose": np.ones(n),
         "well": pd.Categorical(rng.choice([f"w{i}" for i in range(96)], n))},
        index=[f"cell{i:08d}-barcode" for i in range(n)],
    )  # fmt: skip
    var = pd.DataFrame(index=[f"g{j}" for j in range(g)])
    ad.AnnData(X, obs=obs, var=var).write_h5ad(path)


def main(which: str, path: str) -> None:
    from tahoeflow.sources.h5ad import read_rows_csr
    from tahoeflow.sources.h5ad_shard import load_h5ad_shard

    if which == "make":
        return make(path)
    start, stop = 200_000, 210_000
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    if which == "old_x":
        read_rows_csr(path, start, stop)
    elif which == "ad_x":
        with h5py.File(path) as f:
            ad.io.sparse_dataset(f["X"])[start:stop]
    elif which == "old_shard":
        load_h5ad_shard(
            path, start, stop, {"drug": "drug", "dose": "dose", "sample": "well"}, "DMSO"
        )
    elif which == "ad_obs":
        with h5py.File(path) as f:
            {
                c: ad.io.read_elem(f["obs"][c])[start:stop]
                for c in ("drug", "dose", "well", "_index")
            }
    dt = time.perf_counter() - t
    rss = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    print(f"{which}: {dt * 1000:.1f} ms, peak RSS +{rss:.1f} MB")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
