"""P3: the workflow against scanpy in memory on the same cells (~200k by default).

scanpy, in a fresh process (its peak RSS is the process's VmHWM):

1. load: every file read into one CSR matrix (float32 counts, int32 indices) with our own
   streaming reader ``tahoeflow.cells.read.read_shard`` into buffers sized from the Parquet
   footers, so the matrix is built once, without a copy, and faster than any other reader
   scanpy could use; then an ``AnnData`` (var names = token ids);
2. ``sc.pp.normalize_total(target_sum=1e4)``, ``sc.pp.log1p``,
   ``sc.pp.highly_variable_genes(flavor="seurat", n_top_genes=2000)``,
   ``sc.pp.pca(n_comps=50, mask_var="highly_variable", zero_center=True,
   svd_solver="covariance_eigh")`` (exact: sklearn's covariance eigensolver, the exact
   choice for sparse input in scanpy 1.11.5 with scikit-learn >= 1.4), and sklearn
   ``KMeans(10, n_init=3, random_state=0)`` on ``X_pca`` (the workflow's settings).

**Loading is counted in scanpy's time** (the workflow's time includes its three reads of every
file: summary, Gram, projection), and it is also reported without loading.

Ours: ``snakemake --cores N`` in a new folder on the same files, ``source.kind: local``,
``filters.min_genes: 0`` (the same cells), ``embed.center: true``, targets
``results/embed/embeddings.parquet`` + ``pca_variance.csv``: summarize_shard x files ->
merge_cells, merge_gene_stats -> hvg -> gram_batch x groups -> pca -> project_batch x groups ->
embeddings. Its memory: the largest peak of one job (VmHWM of each job process, sampled every
0.2 s while it runs; and the ``max_rss`` of the ``benchmark:`` files, Snakemake's own sampling)
and the largest sum of RSS over the jobs running at once (our sampler; without Snakemake's own
process, which is reported separately).

Library: ``ours_library.py``, the workflow's arithmetic in one process without Snakemake (the
same package functions, three streaming passes over the files, memory bounded by one file),
timed as a fresh process like scanpy: what the method costs without the orchestration.

Checks: the same HVG set, explained variance ratios (largest relative difference, goal 1e-6;
scanpy computes in float32, the workflow in float64).

    .venv/bin/python benchmarks/vs_scanpy.py --files 7 --cells-per-file 28000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DEFAULT_CACHE,
    data_files,
    demo_dataset,
    job_kind,
    log,
    run_library,
    run_workflow,
    stats,
    vm_hwm_mb,
    workflow_config,
    write_json,
)

TARGETS = ["results/embed/embeddings.parquet", "results/embed/pca_variance.csv"]
GOAL_TIME, GOAL_MEM, EVR_RTOL = 1.0, 0.5, 1e-6


# --- scanpy in a fresh process --------------------------------------------------------------
def scanpy_child(args: argparse.Namespace) -> None:
    t_start = time.perf_counter()
    import anndata as ad
    import numpy as np
    import pandas as pd
    import pyarrow.parquet as pq
    import scanpy as sc
    import scipy.sparse as sp
    from sklearn.cluster import KMeans

    from tahoeflow.cells.read import read_shard
    from tahoeflow.cells.vocab import vocab_from_gene_metadata

    times: dict[str, float] = {"import": time.perf_counter() - t_start}
    hwm: dict[str, float] = {"import": vm_hwm_mb()}

    def mark(name: str, t0: float) -> float:
        times[name] = time.perf_counter() - t0
        hwm[name] = vm_hwm_mb()
        return time.perf_counter()

    t0 = time.perf_counter()
    vocab = vocab_from_gene_metadata(pq.read_table(args.gene_meta), args.gene_meta)
    files = [Path(p) for p in args.paths]
    n_rows, n_vals = 0, 0
    for f in files:
        md = pq.ParquetFile(f).metadata
        n_rows += md.num_rows
        leaf = [i for i in range(md.num_columns) if md.schema.column(i).path.startswith("genes")]
        n_vals += sum(md.row_group(g).column(leaf[0]).num_values for g in range(md.num_row_groups))
    data = np.empty(n_vals - n_rows, dtype=np.float32)  # one marker per row is stripped
    indices = np.empty(n_vals - n_rows, dtype=np.int32)
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    cell_ids, row, pos = [], 0, 0
    for f in files:
        obs, X = read_shard(f, vocab, obs_columns=["BARCODE_SUB_LIB_ID"])
        n, nnz = X.shape[0], X.nnz
        data[pos : pos + nnz] = X.data
        indices[pos : pos + nnz] = X.indices
        indptr[row + 1 : row + n + 1] = X.indptr[1:] + pos
        cell_ids.append(np.asarray(obs["BARCODE_SUB_LIB_ID"], dtype=object))
        row, pos = row + n, pos + nnz
        del obs, X
    X = sp.csr_matrix((data[:pos], indices[:pos], indptr), shape=(n_rows, vocab.n_genes))
    del data, indices
    adata = ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=pd.Index(np.concatenate(cell_ids), name="cell_id")),
        var=pd.DataFrame(index=pd.Index(vocab.token_ids.astype(str), name="token_id")),
    )
    del X
    if args.float64:  # the precision check: same steps in float64 (not timed, no KMeans)
        adata.X = adata.X.astype(np.float64)
    t0 = mark("load", t0)
    sc.pp.normalize_total(adata, target_sum=1e4)
    t0 = mark("normalize_total", t0)
    sc.pp.log1p(adata)
    t0 = mark("log1p", t0)
    sc.pp.highly_variable_genes(adata, flavor="seurat", n_top_genes=args.n_top)
    t0 = mark("highly_variable_genes", t0)
    sc.pp.pca(
        adata,
        n_comps=args.n_comps,
        mask_var="highly_variable",
        zero_center=True,
        svd_solver="covariance_eigh",
    )
    t0 = mark("pca", t0)
    if not args.float64:
        KMeans(n_clusters=args.n_clusters, n_init=3, random_state=0).fit(adata.obsm["X_pca"])
        t0 = mark("kmeans", t0)
    hvg = adata.var_names[adata.var["highly_variable"].to_numpy()].astype(int).tolist()
    print(
        json.dumps(
            {
                "cells": int(adata.n_obs),
                "nnz": int(adata.X.nnz),
                "dtype": str(adata.X.dtype),
                "times_s": times,
                "hwm_mb_after": hwm,
                "peak_mb": vm_hwm_mb(),
                "total_s": time.perf_counter() - t_start,
                "hvg_token_ids": sorted(hvg),
                "explained_variance_ratio": adata.uns["pca"]["variance_ratio"].tolist(),
            }
        )
    )


def run_scanpy(
    paths: list[Path], gene_meta: Path, args: argparse.Namespace, float64: bool = False
) -> dict:
    cmd = [sys.executable, __file__, "--child", "--gene-meta", str(gene_meta),
           "--n-top", str(args.n_top), "--n-comps", str(args.n_comps),
           "--n-clusters", str(args.n_clusters), *(["--float64"] if float64 else []),
           "--paths", *map(str, paths)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"scanpy child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


# --- main -----------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=7, help="files used (first N of the design)")
    ap.add_argument("--design-files", type=int, default=36, help="files of the demo design")
    ap.add_argument("--cells-per-file", type=int, default=28_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--n-top", type=int, default=2000)
    ap.add_argument("--n-comps", type=int, default=50)
    ap.add_argument("--n-clusters", type=int, default=10)
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    ap.add_argument(
        "--no-float64-check",
        action="store_true",
        help="skip the untimed scanpy run in float64 that checks the variance ratios to 1e-6",
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--float64", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gene-meta", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--paths", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        scanpy_child(args)
        return 0

    import pandas as pd
    import pyarrow.parquet as pq

    design = max(args.design_files, args.files)
    root = demo_dataset(args.cache, design, args.cells_per_file, write=args.files)
    paths = data_files(root, design, range(args.files))
    gene_meta = root / "metadata" / "gene_metadata.parquet"
    cfg = workflow_config(
        root,
        design,
        f"0:{args.files}",
        embed={
            "n_components": args.n_comps,
            "center": True,
            "hvg": {"n_top": args.n_top, "flavor": "seurat"},
            "kmeans": {"n_clusters": args.n_clusters},
        },
        filters={"min_genes": 0},
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-p3-"))
    scan, ours, t_ratio, t_ratio_noload, m_ratio, m_ratio_sum = [], [], [], [], [], []
    lib, lib_t_ratio, lib_m_ratio = [], [], []
    lib_args = ["--n-top", str(args.n_top), "--n-comps", str(args.n_comps),
                "--n-clusters", str(args.n_clusters), "--min-genes", "0"]  # fmt: skip
    checks = {}
    try:
        for r in range(args.repeats):
            res = {}
            order = ("scanpy", "ours", "library")
            for who in order if r % 2 == 0 else order[::-1]:
                if who == "library":
                    res[who] = run_library(root, paths, *lib_args)
                elif who == "scanpy":
                    res[who] = run_scanpy(paths, gene_meta, args)
                else:
                    wd = tmp / f"ours{r}"
                    res[who] = run_workflow(wd, cfg, args.cores, TARGETS)
                    if r == 0:  # correctness, once
                        hvg = pq.read_table(wd / "results/embed/hvg.parquet").to_pandas()
                        res[who]["hvg"] = sorted(
                            hvg.loc[hvg["highly_variable"], "token_id"].astype(int).tolist()
                        )
                        res[who]["evr"] = pd.read_csv(wd / "results/embed/pca_variance.csv")[
                            "explained_variance_ratio"
                        ].tolist()
                        res[who]["cells"] = pq.ParquetFile(
                            wd / "results/embed/embeddings.parquet"
                        ).metadata.num_rows
                    shutil.rmtree(wd, ignore_errors=True)
            s, o, li = res["scanpy"], res["ours"], res["library"]
            if r == 0:
                import numpy as np

                a, b = set(s["hvg_token_ids"]), set(o["hvg"])
                e_s, e_o = np.asarray(s["explained_variance_ratio"]), np.asarray(o["evr"])
                rel = np.abs(e_o - e_s) / np.abs(e_s)
                checks = {
                    "cells_scanpy_ours": [s["cells"], o["cells"]],
                    "hvg_n": [len(a), len(b)],
                    "hvg_only_scanpy": len(a - b),
                    "hvg_only_ours": len(b - a),
                    "hvg_identical": a == b,
                    "library_hvg_identical": set(li["hvg_token_ids"]) == b,
                    "library_evr_max_rel_diff_vs_workflow": float(
                        (np.abs(np.asarray(li["explained_variance_ratio"]) - e_o) / e_o).max()
                    ),
                    "evr_max_rel_diff_float32": float(rel.max()),
                    "evr_sum_scanpy_ours": [float(e_s.sum()), float(e_o.sum())],
                }
                if not args.no_float64_check:
                    log("scanpy in float64 (precision check, not timed) ...")
                    s64 = run_scanpy(paths, gene_meta, args, float64=True)
                    e64 = np.asarray(s64["explained_variance_ratio"])
                    checks["hvg_identical_float64"] = set(s64["hvg_token_ids"]) == b
                    checks["evr_max_rel_diff_float64"] = float(
                        (np.abs(e_o - e64) / np.abs(e64)).max()
                    )
                ref = checks.get("evr_max_rel_diff_float64", checks["evr_max_rel_diff_float32"])
                checks["evr_ok"] = bool(ref <= EVR_RTOL)
                checks["hvg_ok"] = bool(a == b and checks.get("hvg_identical_float64", True))
            ours_peak = max(o["job_peak_vmhwm_mb"], o["tsv_max_rss_mb"] or 0.0)
            scan.append(s)
            ours.append({**o, "job_peak_mb": ours_peak})
            t_ratio.append(o["wall_s"] / s["wall_s"])
            t_ratio_noload.append(o["wall_s"] / (s["wall_s"] - s["times_s"]["load"]))
            m_ratio.append(ours_peak / s["peak_mb"])
            m_ratio_sum.append(o["tree_peak_sum_mb"] / s["peak_mb"])
            lib.append(li)
            lib_t_ratio.append(li["wall_s"] / s["wall_s"])
            lib_m_ratio.append(li["peak_mb"] / s["peak_mb"])
            log(
                f"repeat {r + 1}/{args.repeats}: scanpy {s['wall_s']:.1f} s, {s['peak_mb']:.0f} MB; "
                f"ours {o['wall_s']:.1f} s, job peak {ours_peak:.0f} MB, "
                f"concurrent {o['tree_peak_sum_mb']:.0f} MB; library {li['wall_s']:.1f} s, "
                f"{li['peak_mb']:.0f} MB"
            )
        per_kind: dict[str, float] = {}
        for j in ours[-1]["jobs"]:
            per_kind[job_kind(j)] = per_kind.get(job_kind(j), 0.0) + (j["s"] or 0.0)
        result = {
            "part": "P3",
            "cells": scan[0]["cells"],
            "nnz": scan[0]["nnz"],
            "files": args.files,
            "cores": args.cores,
            "repeats": args.repeats,
            "scanpy_wall_s": stats([s["wall_s"] for s in scan]),
            "scanpy_phase_s": {
                k: statistics.median(s["times_s"][k] for s in scan) for k in scan[0]["times_s"]
            },
            "scanpy_peak_mb": stats([s["peak_mb"] for s in scan]),
            "scanpy_hwm_after_phase_mb": scan[0]["hwm_mb_after"],
            "ours_wall_s": stats([o["wall_s"] for o in ours]),
            "ours_job_peak_mb": stats([o["job_peak_mb"] for o in ours]),
            "ours_tsv_max_rss_mb": stats([o["tsv_max_rss_mb"] or 0.0 for o in ours]),
            "ours_concurrent_peak_mb": stats([o["tree_peak_sum_mb"] for o in ours]),
            "ours_snakemake_process_peak_mb": stats([o["snakemake_peak_mb"] for o in ours]),
            "ours_largest_jobs_last_repeat": ours[-1]["job_peak_vmhwm_by_proc"],
            "ours_job_s_by_kind_last_repeat": per_kind,
            "time_ratio": stats(t_ratio),
            "time_ratio_vs_scanpy_without_load": stats(t_ratio_noload),
            "mem_ratio_job_peak": stats(m_ratio),
            "mem_ratio_concurrent": stats(m_ratio_sum),
            "library_wall_s": stats([x["wall_s"] for x in lib]),
            "library_phase_s": {
                k: statistics.median(x["times_s"][k] for x in lib) for k in lib[0]["times_s"]
            },
            "library_peak_mb": stats([x["peak_mb"] for x in lib]),
            "library_time_ratio": stats(lib_t_ratio),
            "library_mem_ratio": stats(lib_m_ratio),
            "checks": checks,
            "goals": {"time_ratio": GOAL_TIME, "mem_ratio": GOAL_MEM, "evr_rtol": EVR_RTOL},
        }
        write_json(args.json, result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
