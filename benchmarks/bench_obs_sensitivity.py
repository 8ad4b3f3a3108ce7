"""Atlas sensitivity from obs metadata: time and peak memory of obs_metadata -> sensitivity table.

    .venv/bin/python benchmarks/bench_obs_sensitivity.py                 # 100.6M rows (full)
    .venv/bin/python benchmarks/bench_obs_sensitivity.py --scale 0.1     # a tenth of the cells
    .venv/bin/python benchmarks/bench_obs_sensitivity.py --json out.json --workdir /tmp/x

Simulates Tahoe-100M's ``metadata/obs_metadata.parquet`` on the real design (``obs_cell_grid``:
cells per drug, line, plate and dose, split over the wells of ``sample_metadata``; 100,648,790
rows at ``--scale 1``) with the columns the count needs (``plate``, ``sample``, ``drug``,
``drugname_drugconc``, ``cell_line``, ``pass_filter``), dictionary-encoded, zstd, row groups
of ~1M rows, rows in plate order and shuffled within each row group; written once to
``--workdir`` (outside the repository; reused when present) and not timed. Then, in a fresh
process limited to ``--threads`` Arrow threads (the goal is 2 cores), the timed step: stream the
file by row groups and count cells per (plate, sample, drug, drugname_drugconc, cell_line)
(``pass_filter == full``), then the sensitivity table (plate and pooled levels, Fisher and CMH
tests, BH), written to Parquet. Peak memory is the process's VmHWM (``ru_maxrss``, imports
included). Checks: the counted cells equal the simulated ``full`` rows, and with
``--check-grid`` a second (untimed) pass over every cell must reproduce the table computed from
``obs_cell_grid`` directly. Goal (issue 19): <= 10 min on 2 cores, <= 2 GB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
META = REPO / "resources" / "tahoe_metadata"


def _tables():
    import pandas as pd

    return (
        pd.read_parquet(META / "obs_cell_grid.parquet"),
        pd.read_parquet(META / "sample_metadata.parquet"),
        pd.read_parquet(META / "cell_line_metadata.parquet"),
    )


def simulate(path: Path, scale: float, row_group_size: int) -> dict:
    from tahoeflow.phenotypes.obs import design_counts, write_simulated_obs

    meta = path.with_suffix(".json")
    if path.exists() and meta.exists():
        info = json.loads(meta.read_text())
        if info.get("scale") == scale and info.get("row_group_size") == row_group_size:
            return {**info, "reused": True}
    grid, samples, lines = _tables()
    t0 = time.perf_counter()
    design = design_counts(grid, samples, lines, scale=scale)
    tmp = path.with_name(path.name + ".tmp")
    rows, full = write_simulated_obs(
        design, tmp, row_group_size=row_group_size,
        log=lambda m: print(m, file=sys.stderr, flush=True),
    )  # fmt: skip
    os.replace(tmp, path)
    info = {"scale": scale, "row_group_size": row_group_size, "rows": rows, "rows_full": full,
            "bytes": path.stat().st_size, "write_s": time.perf_counter() - t0}  # fmt: skip
    meta.write_text(json.dumps(info))
    return {**info, "reused": False}


def measure(path: Path, out: Path, threads: int, pass_filter: str | None) -> dict:
    """The timed step (run in a fresh process)."""
    import pyarrow as pa

    pa.set_cpu_count(threads)
    pa.set_io_thread_count(threads)
    t0 = time.perf_counter()
    from tahoeflow import io as tio
    from tahoeflow.phenotypes.obs import obs_counts
    from tahoeflow.phenotypes.sensitivity import (
        condition_counts,
        sensitivity_arrow,
        sensitivity_table,
    )  # fmt: skip

    t_import = time.perf_counter() - t0
    counts = obs_counts(path, pass_filter=pass_filter)
    t_counts = time.perf_counter() - t0
    cond, wells = condition_counts(counts)
    table = sensitivity_table(cond, wells, control_drug="DMSO_TF", pseudocount=0.5)
    tio.write_parquet(sensitivity_arrow(table), out)
    wall = time.perf_counter() - t0
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "wall_s": wall, "import_s": t_import, "count_s": t_counts - t_import,
        "table_s": wall - t_counts, "cpu_s": cpu.ru_utime + cpu.ru_stime,
        "peak_rss_mb": cpu.ru_maxrss / 1024, "cells_counted": int(counts["n_cells"].sum()),
        "groups": len(counts), "table_rows": len(table),
        "ok_rows": int((table["qc"] == "ok").sum()),
    }  # fmt: skip


def check_grid(path: Path, scale: float) -> dict:
    """Every cell counted (pass_filter None) reproduces the table from obs_cell_grid."""
    import pandas as pd

    from tahoeflow.phenotypes.obs import doses_from_drugconc, grid_conditions, obs_counts
    from tahoeflow.phenotypes.sensitivity import (
        add_empty_wells,
        condition_counts,
        sensitivity_table,
    )  # fmt: skip

    grid, samples, lines = _tables()
    wells = samples.assign(dose_uM=doses_from_drugconc(samples["drugname_drugconc"], "samples"))
    counts = add_empty_wells(obs_counts(path, pass_filter=None), wells)
    ours = sensitivity_table(*condition_counts(counts), control_drug="DMSO_TF")
    ref = sensitivity_table(*grid_conditions(grid, samples, lines, scale), control_drug="DMSO_TF")
    pd.testing.assert_frame_equal(ours, ref)
    return {"grid_equal": True, "rows": len(ours)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    ap.add_argument("--scale", type=float, default=1.0, help="fraction of the atlas's cells")
    ap.add_argument("--row-group-size", type=int, default=1 << 20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pass-filter", default="full", help="'none' counts every cell")
    ap.add_argument("--workdir", type=Path,
                    default=Path(tempfile.gettempdir()) / "tahoeflow-bench" / "obs")  # fmt: skip
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--check-grid", action="store_true", help="also check against the grid")
    ap.add_argument("--measure", type=Path, help=argparse.SUPPRESS)  # the child process
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    pf = None if args.pass_filter.lower() == "none" else args.pass_filter
    if args.measure:
        print(json.dumps(measure(args.measure, args.out, args.threads, pf)))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = args.workdir / f"obs_metadata-scale{args.scale:g}.parquet"
    sim = simulate(path, args.scale, args.row_group_size)
    print(f"obs file: {sim['rows']:,} rows ({sim['rows_full']:,} pass_filter full), "
          f"{sim['bytes'] / 2**20:.0f} MB, written in {sim['write_s']:.0f} s"
          f"{' (reused)' if sim['reused'] else ''}", flush=True)  # fmt: skip
    load0 = os.getloadavg()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    cmd = [sys.executable, __file__, "--measure", str(path), "--out",
           str(args.workdir / "sensitivity.parquet"), "--threads", str(args.threads),
           "--pass-filter", args.pass_filter]  # fmt: skip
    # pin the timed process to `threads` cores where the OS allows it
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > args.threads:
        cmd = [
            "taskset",
            "-c",
            ",".join(map(str, sorted(os.sched_getaffinity(0))[: args.threads])),
            *cmd,
        ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(proc.stderr[-4000:], file=sys.stderr)
        return 1
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    want = sim["rows_full"] if pf == "full" else sim["rows"]
    res.update(sim=sim, loadavg_before=list(load0), loadavg_after=list(os.getloadavg()),
               threads=args.threads, pass_filter=pf, cells_expected=want,
               cells_ok=res["cells_counted"] == want)  # fmt: skip
    if args.check_grid:
        res["check"] = check_grid(path, args.scale)
    print(f"obs -> sensitivity: {res['wall_s']:.1f} s wall ({res['count_s']:.1f} s counting "
          f"{sim['rows']:,} rows, {res['table_s']:.1f} s table), CPU {res['cpu_s']:.1f} s, peak "
          f"RSS {res['peak_rss_mb']:.0f} MB, {args.threads} threads; {res['groups']:,} groups, "
          f"{res['table_rows']:,} table rows; cells counted = expected: {res['cells_ok']}; "
          f"load average {load0[0]:.1f} before, {res['loadavg_after'][0]:.1f} after", flush=True)  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0 if res["cells_ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
