"""The final pseudobulk merge over partial merges: the whole table at once against one cell line
at a time (issue 17: no job whose memory grows with the whole atlas).

    .venv/bin/python benchmarks/bench_pseudobulk_merge.py                    # 20 lines, 20M rows
    .venv/bin/python benchmarks/bench_pseudobulk_merge.py --lines 50 --wells 200 --genes 4000

Writes ``--parts`` partial merges as the ``merge_part_pseudobulk`` jobs do (one cell line per
row group), over ``--wells`` wells x ``--lines`` cell lines x ``--genes`` non-zero genes per
(well, line) (each partial holds the wells of its plates, as partials of plate-sorted files
do), and a merged-cells table with one cell per (well, line); once, outside the repository.
Then one fresh process per method runs the final merge and writes the merged pseudobulk:
``whole`` = ``write_pseudobulk(merge_pseudobulk(...))`` (before), ``by_line`` =
``merge_pseudobulk_by_line`` (now); both files must be the same bytes. Prints wall time and
peak RSS (VmHWM, imports included).
"""

from __future__ import annotations

import argparse
import hashlib
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


def write_inputs(root: Path, n_parts: int, wells: int, lines: int, genes: int) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tahoeflow.merge.pseudobulk import write_pseudobulk

    done = root / f"done-{n_parts}-{wells}-{lines}-{genes}"
    if done.exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    well_names = np.array([f"plate{w % 14}_well{w:05d}" for w in range(wells)])
    line_names = np.array([f"CVCL_{i:04d}" for i in range(lines)])
    for k, ws in enumerate(np.array_split(np.arange(wells), n_parts)):
        n = ws.size * lines * genes
        s = np.repeat(ws, lines * genes)
        ln = np.tile(np.repeat(np.arange(lines), genes), ws.size)
        tok = np.tile(np.sort(rng.choice(62_710, size=genes, replace=False)) + 3, ws.size * lines)
        t = pa.table({
            "sample": pa.array(well_names[s]), "cell_line_id": pa.array(line_names[ln]),
            "token_id": pa.array(tok, pa.int64()),
            "count": pa.array(rng.integers(1, 50, n).astype(np.float64)),
        })  # fmt: skip
        write_pseudobulk(t, root / f"part{k:03d}.parquet")
        del t, s, ln, tok
    g_s = np.repeat(np.arange(wells), lines)
    g_l = np.tile(np.arange(lines), wells)
    m = g_s.size
    pq.write_table(pa.table({
        "sample": pa.array(well_names[g_s]), "cell_line_id": pa.array(line_names[g_l]),
        "plate": pa.array([w.split("_")[0] for w in well_names[g_s]]),
        "drug": pa.array(np.full(m, "d")), "dose_uM": pa.array(np.full(m, 0.5)),
        "moa_fine": pa.array(np.full(m, "m")), "is_control": pa.array(np.zeros(m, bool)),
        "total_counts": pa.array(np.ones(m)),
    }), root / "cells.parquet")  # fmt: skip
    done.touch()


def child(args: argparse.Namespace) -> None:
    from tahoeflow.merge.pseudobulk import (
        merge_pseudobulk,
        merge_pseudobulk_by_line,
        write_pseudobulk,
    )

    root = Path(args.workdir)
    parts = sorted(root.glob("part*.parquet"))
    out = root / f"merged-{args.method}.parquet"
    t0 = time.perf_counter()
    if args.method == "whole":
        counts, _ = merge_pseudobulk(parts, root / "cells.parquet")
        write_pseudobulk(counts, out)
        rows = counts.num_rows
    else:
        _, rows, _ = merge_pseudobulk_by_line(parts, root / "cells.parquet", out)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    digest = hashlib.sha256(out.read_bytes()).hexdigest()[:16]
    print(json.dumps({"method": args.method, "wall_s": wall, "peak_mb": peak, "rows": rows,
                      "sha256": digest}))  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--parts", type=int, default=8)
    ap.add_argument("--wells", type=int, default=200)
    ap.add_argument("--lines", type=int, default=20)
    ap.add_argument("--genes", type=int, default=5000)
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "tahoeflow-bench-pb"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--method", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    t0 = time.perf_counter()
    write_inputs(Path(args.workdir), args.parts, args.wells, args.lines, args.genes)
    n = args.wells * args.lines * args.genes
    print(f"inputs: {args.parts} partials, {n:,} rows ({time.perf_counter() - t0:.0f} s)")
    rows = []
    for method in ("by_line", "whole"):
        row = run_child(__file__, "--method", method, "--workdir", args.workdir)
        rows.append({"parts": args.parts, "wells": args.wells, "lines": args.lines,
                     "genes": args.genes, **row})  # fmt: skip
        print(f"{method:>8}: {row['wall_s']:6.1f} s, peak {row['peak_mb']:7.0f} MB, "
              f"{row['rows']:,} rows, sha256 {row['sha256']}")  # fmt: skip
    assert rows[0]["sha256"] == rows[1]["sha256"], "the two merges differ"
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
