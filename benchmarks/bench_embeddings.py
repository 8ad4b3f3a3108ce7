"""The embeddings job (KMeans + the embeddings table) with and without embed.kmeans.max_fit_cells.

    .venv/bin/python benchmarks/bench_embeddings.py                       # 4M cells, 40 files
    .venv/bin/python benchmarks/bench_embeddings.py --cells 8000000 --caps 1000000
    .venv/bin/python benchmarks/bench_embeddings.py --json out.json --workdir /tmp/x

Writes ``--cells`` cells of 50 float32 PCs (10 Gaussian clusters) over ``--files`` projection
files, as the project_batch jobs do, and the merged cells' metadata columns in the same order
(once, outside the repository; reused). Then, per cap (``none`` = fit on every cell, as
before issue 17), one fresh process runs :func:`tahoeflow.embed.table.write_embeddings` and
reports its wall time and peak RSS (VmHWM, imports included). With a cap the job holds the
sample and one file; without it every cell's PCs and the whole table. Issue 17's goal: every
job <= 4 GB at 95.6M cells.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import run_child  # noqa: E402

N_PCS = 50


def write_inputs(root: Path, n_cells: int, n_files: int, seed: int = 0) -> tuple[list[Path], Path]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tahoeflow.embed.table import META

    root.mkdir(parents=True, exist_ok=True)
    paths = [root / f"proj{f:04d}.parquet" for f in range(n_files)]
    cells = root / "cells.parquet"
    done = root / f"done-{n_cells}-{n_files}"
    if done.exists():
        return paths, cells
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(10, N_PCS)).astype(np.float32)
    bounds = np.linspace(0, n_cells, n_files + 1).astype(np.int64)
    writer = None
    for f, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        n = int(b - a)
        Z = centres[rng.integers(0, 10, n)] + rng.normal(size=(n, N_PCS)).astype(np.float32)
        ids = pa.array([f"c{i:09d}" for i in range(a, b)])
        pq.write_table(pa.table({"cell_id": ids, **{f"pc{j + 1}": Z[:, j] for j in range(N_PCS)}}),
                       paths[f])  # fmt: skip
        meta = {c: pa.array(np.full(n, f"{c}-{f % 7}")) for c in META if c != "cell_id"}
        meta["dose_uM"] = pa.array(np.full(n, 0.5))
        t = pa.table({"cell_id": ids, **{c: meta[c] for c in META if c != "cell_id"}})
        if writer is None:
            writer = pq.ParquetWriter(cells, t.schema, compression="zstd")
        writer.write_table(t)
    writer.close()
    done.touch()
    return paths, cells


def child(args: argparse.Namespace) -> None:
    from tahoeflow.embed.table import write_embeddings

    paths = sorted(Path(args.workdir).glob("proj*.parquet"))
    cap = None if args.cap == "none" else int(args.cap)
    t0 = time.perf_counter()
    info = write_embeddings(paths, Path(args.workdir) / "cells.parquet",
                            Path(args.workdir) / f"emb-{args.cap}.parquet", n_clusters=10, seed=0,
                            minibatch_threshold=200_000, batch_size=1024, n_init=1,
                            max_fit_cells=cap, log=lambda *_: None)  # fmt: skip
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"cap": args.cap, "wall_s": wall, "peak_mb": peak,
                      "method": info["method"], "inertia": info["inertia"]}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cells", type=int, default=4_000_000)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--caps", default="1000000,none", help="comma-separated; none = all cells")
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "tahoeflow-bench-emb"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--cap", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    t0 = time.perf_counter()
    write_inputs(Path(args.workdir), args.cells, args.files)
    print(f"inputs: {args.cells:,} cells in {args.files} files ({time.perf_counter() - t0:.0f} s)")
    rows = []
    for cap in args.caps.split(","):
        row = run_child(__file__, "--cap", cap, "--workdir", args.workdir)
        row = {"cells": args.cells, "files": args.files, **row}
        rows.append(row)
        print(f"max_fit_cells {cap:>8}: {row['wall_s']:6.1f} s, peak {row['peak_mb']:7.0f} MB, "
              f"{row['method']}, inertia {row['inertia']:.4g}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
