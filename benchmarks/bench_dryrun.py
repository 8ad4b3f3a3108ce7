"""Time a Snakemake dry run over all 3,388 Tahoe-100M hub files (DAG-building scale).

Builds a nominal manifest (benchmarks/make_manifest.py), then runs, in a temporary folder and
with HF_HUB_OFFLINE=1 (a dry run must not touch the network),

    snakemake -s Snakefile --configfile <hub, files 0:3388, manifest> --cores 1 -n --quiet rules

``--repeats`` times, checks the job counts (one download job per file, summary jobs per group of files) and
prints wall and CPU seconds (min / median). The goal is a dry run of at most 30 s.

Snakemake imports every installed executor plugin at start-up, and the SLURM plugin runs
``scontrol show config`` when it is imported. On a machine where the SLURM client is installed
but no controller answers (this one, after the SLURM tests), that call blocks for ~9 s before
failing, in every Snakemake invocation. That is the cluster's answer time, not DAG building, so
the runs put a ``scontrol`` that fails at once first on PATH (as on a machine without SLURM;
on a SLURM login node the real call answers in milliseconds), and the time of the real
``scontrol show config`` here is measured and printed beside the result.

    python benchmarks/bench_dryrun.py                      # 3 repeats
    python benchmarks/bench_dryrun.py --cprofile dry.prof  # one extra profiled run + top functions
    python benchmarks/bench_dryrun.py -- --workflow-profile none   # extra snakemake arguments
"""

from __future__ import annotations

import argparse
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_env  # noqa: E402
from make_manifest import N_FILES, nominal_rows, write_manifest  # noqa: E402

GOAL_S = 30.0
_STATS = re.compile(
    r"^Job stats:\njob\s+count\n[-\s]+\n(?P<rows>.*?)^total\s+(?P<total>\d+)", re.M | re.S
)


def job_stats(text: str) -> dict[str, int]:
    m = _STATS.search(text)
    if not m:
        raise RuntimeError(f"no 'Job stats' table in the output:\n{text[-3000:]}")
    return {
        r: int(n)
        for r, n in (line.split() for line in m.group("rows").splitlines() if line.strip())
    }


def one_run(cmd: list[str], cwd: Path, env: dict) -> tuple[float, float, dict[str, int]]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(
            f"dry run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, job_stats(proc.stdout + proc.stderr)


def scontrol_seconds() -> float | None:
    """Seconds the real ``scontrol show config`` takes here (None without SLURM's client)."""
    import shutil

    exe = shutil.which("scontrol")
    if exe is None:
        return None
    t0 = time.perf_counter()
    subprocess.run([exe, "show", "config"], capture_output=True, timeout=120)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--files", type=int, default=N_FILES, help=f"hub files in the selection (default {N_FILES})"
    )
    ap.add_argument(
        "--cells-per-shard", type=int, default=None, help="row-range shards (default: one per file)"
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--snakefile", type=Path, default=REPO / "Snakefile")
    ap.add_argument(
        "--cprofile", type=Path, help="also run once under cProfile, write the stats here"
    )
    ap.add_argument("extra", nargs="*", help="extra snakemake arguments (after --)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_dryrun_") as tmp:
        tmp = Path(tmp)
        manifest = tmp / "manifest.tsv"
        write_manifest(manifest, nominal_rows(N_FILES))
        cfg = tmp / "config.yaml"
        source = {"kind": "hub", "files": f"0:{args.files}", "manifest": str(manifest)}
        if args.cells_per_shard:
            source["cells_per_shard"] = args.cells_per_shard
        cfg.write_text(yaml.safe_dump({"source": source}))
        smk_args = ["-s", str(args.snakefile), "-d", str(tmp), "--configfile", str(cfg),
                    "--cores", "1", *args.extra, "--dry-run", "--quiet", "rules"]  # fmt: skip
        env = bench_env()
        scontrol_s = scontrol_seconds()
        if scontrol_s is not None:
            print(f"`scontrol show config` on this machine (not counted): {scontrol_s:.1f} s",
                  file=sys.stderr)  # fmt: skip

        walls, cpus, counts = [], [], {}
        for i in range(args.repeats):
            wall, cpu, counts = one_run([sys.executable, "-m", "snakemake", *smk_args], tmp, env)
            walls.append(wall)
            cpus.append(cpu)
            print(f"run {i + 1}: {wall:.1f} s wall, {cpu:.1f} s CPU", file=sys.stderr)
        n_shard_jobs = counts.get("summarize_shard", 0)
        assert counts.get("download_data") == args.files, counts
        assert n_shard_jobs >= 1, counts  # one per group of files (summarize.shards_per_job)
        print(
            f"jobs: {sum(counts.values())} in total; "
            + ", ".join(f"{k} {v}" for k, v in counts.items())
        )
        if scontrol_s is not None:
            print(f"scontrol show config: {scontrol_s:.1f} s (hidden from the timed runs)")
        print(f"dry run, {args.files} files, {n_shard_jobs} summary jobs: wall min {min(walls):.1f} s, "
              f"median {statistics.median(walls):.1f} s; CPU min {min(cpus):.1f} s, "
              f"median {statistics.median(cpus):.1f} s (goal <= {GOAL_S:.0f} s: "
              f"{'met' if min(walls) <= GOAL_S else 'NOT met'})")  # fmt: skip

        if args.cprofile:
            cmd = [
                sys.executable,
                "-m",
                "cProfile",
                "-o",
                str(args.cprofile),
                "-m",
                "snakemake",
                *smk_args,
            ]
            one_run(cmd, tmp, env)
            import pstats

            stats = pstats.Stats(str(args.cprofile))
            stats.sort_stats("cumulative").print_stats(r"snakemake|tahoeflow|smk", 25)
            stats.sort_stats("tottime").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
