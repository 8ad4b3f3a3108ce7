"""P4 (scaling of the DAG with the number of cells) and P6 (shard stage, --cores 2 vs --cores 1).

P4: the workflow on the first N files of one demo design of ``--cells-per-file`` cells per
file (default 4, 11 and 36 files of 28,000 cells: 112k, 308k and 1.008M cells), with
``--cores 2``, ``source.kind: local`` (the files are inputs, written once into the cache and
not timed) and the default target with ``stages`` = ``--stages`` (default: embed only, i.e.
the shards, the three merges, HVGs, Gram, PCA, projections, KMeans; ``--stages embed,models``
adds the models). Per size: the wall time of ``snakemake``, the largest per-job peak memory
(``max_rss`` of the ``benchmark:`` files, and the VmHWM of each job process from our sampler,
which also sees the rules without a ``benchmark:`` directive), the concurrent peak, and the
seconds of each kind of job (sum over shards) and the median per-shard job.

P6: the summary stage alone (targets ``results/shards/*/qc.json``) of ``--p6-files`` files,
``--cores 1`` and ``--cores 2`` in the same repeat (alternating order), each in a new folder;
speed-up = wall(1) / wall(2). Each run is followed by a second ``snakemake`` call on the same
folder, which finds nothing to do: its wall time is Snakemake's fixed cost (start-up, parsing,
DAG, output checks). The stage's own speed-up is reported beside the whole-process one:
(wall(1) - fixed(1)) / (wall(2) - fixed(2)).

    .venv/bin/python benchmarks/scaling.py --part P4 --sizes 4,11,36 --repeats 2
    .venv/bin/python benchmarks/scaling.py --part P6 --p6-files 8 --repeats 3
"""

from __future__ import annotations

import argparse
import math
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    DEFAULT_CACHE,
    demo_dataset,
    job_kind,
    log,
    run_workflow,
    stats,
    workflow_config,
    write_json,
)

THREADS = {"embed/pca": 2, "embed/embeddings": 2}  # rules/*.smk declarations


def p4(args: argparse.Namespace, root: Path, design: int, tmp: Path) -> dict:
    sizes = [int(x) for x in args.sizes.split(",")]
    stages = tuple(s for s in args.stages.split(",") if s)
    out = {"sizes": []}
    for n in sizes:
        cfg = workflow_config(root, design, f"0:{n}", stages=stages)
        runs = []
        for r in range(args.repeats):
            wd = tmp / f"p4-{n}-{r}"
            res = run_workflow(wd, cfg, args.cores)
            shutil.rmtree(wd, ignore_errors=True)
            runs.append(res)
            log(
                f"P4 {n} files ({n * args.cells_per_file:,} cells), repeat {r + 1}: "
                f"{res['wall_s']:.1f} s, job peak {res['job_peak_vmhwm_mb']:.0f} MB "
                f"(TSV {res['tsv_max_rss_mb'] or 0:.0f} MB)"
            )
        best = min(runs, key=lambda x: x["wall_s"])
        kinds: dict[str, list[dict]] = {}
        for j in best["jobs"]:
            kinds.setdefault(job_kind(j), []).append(j)
        per_kind = {
            k: {
                "jobs": len(v),
                "sum_s": sum(j["s"] or 0 for j in v),
                "median_s": statistics.median(j["s"] or 0 for j in v),
                "max_rss_mb": max(j["max_rss"] or 0 for j in v),
                "threads": THREADS.get(k, 1),
            }
            for k, v in sorted(kinds.items())
        }
        out["sizes"].append(
            {
                "files": n,
                "cells": n * args.cells_per_file,
                "wall_s": stats([x["wall_s"] for x in runs]),
                "job_peak_vmhwm_mb": max(x["job_peak_vmhwm_mb"] for x in runs),
                "tsv_max_rss_mb": max(x["tsv_max_rss_mb"] or 0 for x in runs),
                "concurrent_peak_mb": max(x["tree_peak_sum_mb"] for x in runs),
                "snakemake_peak_mb": max(x["snakemake_peak_mb"] for x in runs),
                "largest_jobs": best["job_peak_vmhwm_by_proc"],
                "per_kind_best_run": per_kind,
            }
        )
    pts = [(s["cells"], s["wall_s"]["min"]) for s in out["sizes"]]
    if len(pts) >= 2:
        xs = [math.log(c) for c, _ in pts]
        ys = [math.log(t) for _, t in pts]
        mx, my = statistics.mean(xs), statistics.mean(ys)
        out["loglog_slope"] = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
            (x - mx) ** 2 for x in xs
        )
        (c0, t0), (c1, t1) = pts[-2], pts[-1]
        out["last_step_slope"] = math.log(t1 / t0) / math.log(c1 / c0)
    out["stages"] = list(stages)
    return out


def p6(args: argparse.Namespace, root: Path, design: int, tmp: Path) -> dict:
    n = args.p6_files
    cfg = workflow_config(root, design, f"0:{n}", stages=())
    targets = [f"results/shards/{i:05d}/qc.json" for i in range(n)]
    walls: dict[int, list[float]] = {1: [], 2: []}
    job_s: dict[int, list[float]] = {1: [], 2: []}
    fixed: dict[int, list[float]] = {1: [], 2: []}
    ratios, stage_ratios = [], []
    for r in range(args.repeats):
        for c in (1, 2) if r % 2 == 0 else (2, 1):
            wd = tmp / f"p6-{c}-{r}"
            res = run_workflow(wd, cfg, c, targets)
            nothing = run_workflow(wd, cfg, c, targets)  # nothing to do: the fixed cost
            assert not nothing["jobs"] or len(nothing["jobs"]) == len(res["jobs"]), "reran jobs"
            shutil.rmtree(wd, ignore_errors=True)
            walls[c].append(res["wall_s"])
            fixed[c].append(nothing["wall_s"])
            job_s[c].append(sum(j["s"] or 0 for j in res["jobs"]))
        ratios.append(walls[1][-1] / walls[2][-1])
        stage_ratios.append((walls[1][-1] - fixed[1][-1]) / (walls[2][-1] - fixed[2][-1]))
        log(
            f"P6 repeat {r + 1}: --cores 1 {walls[1][-1]:.1f} s, --cores 2 {walls[2][-1]:.1f} s, "
            f"speed-up {ratios[-1]:.2f}; Snakemake's fixed cost {fixed[1][-1]:.1f} / "
            f"{fixed[2][-1]:.1f} s, stage speed-up {stage_ratios[-1]:.2f}"
        )
    return {
        "files": n,
        "cells": n * args.cells_per_file,
        "wall_cores1_s": stats(walls[1]),
        "wall_cores2_s": stats(walls[2]),
        "job_sum_cores1_s": stats(job_s[1]),
        "job_sum_cores2_s": stats(job_s[2]),
        "speedup": stats(ratios),
        "fixed_cores1_s": stats(fixed[1]),
        "fixed_cores2_s": stats(fixed[2]),
        "stage_speedup": stats(stage_ratios),
        "speedup_of_medians": statistics.median(walls[1]) / statistics.median(walls[2]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["P4", "P6", "both"], default="both")
    ap.add_argument("--sizes", default="4,11,36", help="P4: files per run (comma-separated)")
    ap.add_argument("--design-files", type=int, default=36)
    ap.add_argument("--cells-per-file", type=int, default=28_000)
    ap.add_argument("--stages", default="embed", help="P4: stages switched on (comma-separated)")
    ap.add_argument("--p6-files", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--cores", type=int, default=2, help="P4's --cores")
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--json", type=Path, help="write the results here (default: stdout)")
    args = ap.parse_args(argv)

    need = 0
    if args.part in ("P4", "both"):
        need = max(int(x) for x in args.sizes.split(","))
    if args.part in ("P6", "both"):
        need = max(need, args.p6_files)
    design = max(args.design_files, need)
    root = demo_dataset(args.cache, design, args.cells_per_file, write=need)
    tmp = Path(tempfile.mkdtemp(prefix="bench-scaling-"))
    result: dict = {"cells_per_file": args.cells_per_file, "repeats": args.repeats}
    try:
        if args.part in ("P4", "both"):
            result["P4"] = {"cores": args.cores, **p4(args, root, design, tmp)}
        if args.part in ("P6", "both"):
            result["P6"] = p6(args, root, design, tmp)
        write_json(args.json, result)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
