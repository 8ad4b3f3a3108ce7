"""Declared ``mem_mb`` of every rule against the measured whole-job peak RSS (issue 13).

    .venv/bin/python benchmarks/bench_memory.py --out benchmarks/RESULTS.md

runs the demo with hub-sized files (4 files x 28,225 cells, every stage on; 30-60 min on 2
cores), then reruns one job of every rule on its own and measures it. ``--cells 2000`` makes a
quick check; ``--out`` appends the Markdown table to a file (otherwise it is printed);
``--workdir DIR --json rows.json`` keeps the runs and the measurements, and
``--workdir DIR --measured rows.json`` only re-reads the requests (after editing ``mem_mb``).

What a job is on SLURM: sbatch starts the job's batch step, a Snakemake process (executor
slurm-jobstep); that one runs ``srun ... python -m snakemake --target-jobs ...`` (a second,
inner Snakemake process, executor local) which starts the rule's script. sbatch's ``--mem``
limits the sum over all of them. Each rule's job is replayed here as that inner call,
``python -m snakemake <job output> --force --allowed-rules <rule> --cores <threads>`` (only that
job runs; its inputs are the first run's outputs), with a sampler reading every process of the
tree every 0.05 s: each process's VmHWM (the kernel's peak RSS, so no short peak is missed)
and the largest sum of RSS at one time. The whole-job figure is

    measured = sum of the VmHWM of every process of the tree (the Snakemake process, the script
               and anything it starts; an upper bound of their sum at any one time)
             + the Snakemake process's VmHWM once more (the job step's outer Snakemake: same
               Snakefile, same config, same DAG)
             + SRUN_MB (srun's own RSS)

and ``declared`` is the job's ``mem_mb`` as Snakemake evaluates it for that run (attempt 1,
printed in the job's header), so input-size formulas see the real files.
The download rules are measured the same way against a loopback fake of the hub
(tests/hub_server.py) serving the demo's files.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_env, log  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GOAL = 1.2
SRUN_MB = 12.0  # srun + sh: the batch step's MaxRSS (Slurm 22.05) was 268 MB, its Snakemake 259 MB
POLL_S = 0.05


class JobSampler(threading.Thread):
    """VmHWM of every process of the tree under ``pid`` (root included) and the peak RSS sum."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.hwm: dict[tuple[int, float], tuple[str, float]] = {}
        self.peak_sum_mb = 0.0
        self._halt = threading.Event()

    @staticmethod
    def _status_mb(pid: int, key: str) -> float:
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith(key):
                        return int(line.split()[1]) / 1024
        except (OSError, ValueError, IndexError):
            pass
        return 0.0

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._halt.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                break
            total = 0.0
            for p in procs:
                try:
                    key = (p.pid, p.create_time())
                    total += p.memory_info().rss / 2**20
                    name = self.hwm.get(key, (None, 0.0))[0] or " ".join(p.cmdline()[:3])
                    hwm = self._status_mb(p.pid, "VmHWM:")
                    self.hwm[key] = (name, max(self.hwm.get(key, ("", 0.0))[1], hwm))
                except psutil.Error:
                    continue
            self.peak_sum_mb = max(self.peak_sum_mb, total)
            self._halt.wait(POLL_S)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def snakemake(wd: Path, cfg: Path, *args: str, targets: list[str] | None = None) -> list[str]:
    # targets first: --configfile takes a list and would swallow them
    return [sys.executable, "-m", "snakemake", *(targets or []), "-s", str(REPO / "Snakefile"),
            "-d", str(wd), "--configfile", str(cfg), *args]  # fmt: skip


def run(cmd: list[str], cwd: Path, env: dict, out: Path) -> None:
    with open(out, "w") as fh:
        proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(
            f"failed ({proc.returncode}): {' '.join(cmd)}\n{out.read_text()[-4000:]}"
        )


def planned_jobs(wd: Path, cfg: Path, env: dict, targets: list[str]) -> list[dict]:
    """Every job of a forced dry run: rule, first output, threads and declared mem_mb."""
    proc = subprocess.run(
        snakemake(wd, cfg, "--forceall", "-n", "--cores", "2", targets=targets),
        cwd=wd, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    jobs = []
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", proc.stdout):
        m = re.match(r"(?:local)?rule (\w+):\n", block)
        if not m or m.group(1) == "all" or m.group(1).startswith("download_all"):
            continue
        out = re.search(r"^\s+output: ([^,\n]+)", block, re.M)
        inp = re.search(r"^\s+input: (.*)$", block, re.M)
        paths = [wd / s.strip() for s in inp.group(1).split(", ")] if inp else []
        res = re.search(r"^\s+resources: (.*)$", block, re.M)
        thr = re.search(r"^\s+threads: (\d+)$", block, re.M)
        if not (out and res):
            continue
        mem = re.search(r"\bmem_mb=(\d+)", res.group(1))
        jobs.append(
            {
                "rule": m.group(1),
                "output": out.group(1).strip(),
                "threads": int(thr.group(1)) if thr else 1,
                "declared": int(mem.group(1)) if mem else None,
                "input_mb": sum(p.stat().st_size for p in paths if p.is_file()) / 2**20,
                "local": block.startswith("localrule"),
            }
        )
    return jobs


def job_cmd(wd: Path, cfg: Path, job: dict, *args: str) -> list[str]:
    """The job alone, as the job step's inner Snakemake runs it (temp() outputs kept)."""
    return snakemake(wd, cfg, "--force", "--allowed-rules", job["rule"], "--notemp", "--nolock", "--cores",
                     str(job["threads"]), *args, targets=[job["output"]])  # fmt: skip


def declared_mb(wd: Path, cfg: Path, env: dict, job: dict) -> int:
    """The job's mem_mb as Snakemake evaluates it now (dry run of the job; its inputs exist)."""
    proc = subprocess.run(job_cmd(wd, cfg, job, "-n"), cwd=wd, env=env, capture_output=True,
                          text=True)  # fmt: skip
    m = re.search(r"^\s+resources: .*\bmem_mb=(\d+)", proc.stdout, re.M)
    if proc.returncode != 0 or not m:
        raise RuntimeError(
            f"no mem_mb for {job['rule']}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return int(m.group(1))


def measure_job(wd: Path, cfg: Path, env: dict, job: dict) -> dict:
    cmd = job_cmd(wd, cfg, job)
    out = wd / f"measure_{job['rule']}.out"
    t0 = time.perf_counter()
    with open(out, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=wd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        sampler = JobSampler(proc.pid)
        sampler.start()
        rc = proc.wait()
        sampler.stop()
    if rc != 0:
        raise RuntimeError(f"{job['rule']} failed ({rc}):\n{out.read_text()[-4000:]}")
    smk = max((mb for (pid, _), (_, mb) in sampler.hwm.items() if pid == proc.pid), default=0.0)
    rest = sum(mb for (pid, _), (_, mb) in sampler.hwm.items() if pid != proc.pid)
    return {
        **job,
        "snakemake_mb": smk,
        "script_mb": rest,
        "tree_sum_mb": sampler.peak_sum_mb,
        "processes": sorted(((n, round(m)) for n, m in sampler.hwm.values()), key=lambda x: -x[1]),
        "measured": 2 * smk + rest + SRUN_MB,
        "wall_s": time.perf_counter() - t0,
        "wd": str(wd),
        "cfg": str(cfg),
    }


def hub_jobs(wd: Path, base: Path, env: dict, n_files: int) -> list[dict]:
    """Download jobs (one data file, one metadata table) from a fake hub serving the demo files."""
    sys.path.insert(0, str(REPO / "tests"))
    from hub_server import FAKE_COMMIT, FakeHub

    hub_wd = base / "hub"
    hub_wd.mkdir(exist_ok=True)
    cfg = hub_wd / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "source": {
                    "kind": "hub",
                    "files": "0:1",
                    "hub": {"revision": FAKE_COMMIT, "n_files_total": n_files},
                }
            }
        )
    )
    server = FakeHub(wd / "results" / "demo").start()
    try:
        henv = {
            **env,
            "HF_ENDPOINT": server.url,
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_XET": "1",
            "HF_HOME": str(base / "hf_home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        }
        run(snakemake(hub_wd, cfg, "--cores", "1", targets=["download_all"]), hub_wd, henv,
            hub_wd / "download.out")  # fmt: skip
        planned = planned_jobs(hub_wd, cfg, henv, ["download_all"])
        picked, seen = [], set()
        for job in sorted(planned, key=lambda j: "gene" not in j["output"]):
            if job["rule"] not in seen:
                seen.add(job["rule"])
                picked.append(job)
        return [measure_job(hub_wd, cfg, henv, j) for j in picked]
    finally:
        server.stop()


def table(rows: list[dict], head: str) -> str:
    lines = [
        head,
        "",
        "| rule | job measured | input MB | declared mem_mb | Snakemake process MB | script MB | "
        "measured whole job MB | declared / measured | goal >= 1.2 met? |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "yes" if r["ratio"] >= GOAL else "**no**"
        lines.append(
            f"| {r['rule']}{' (local)' if r['local'] else ''} | `{r['output']}` | "
            f"{r['input_mb']:,.1f} | {r['declared']:,} | {r['snakemake_mb']:,.0f} | {r['script_mb']:,.0f} | "
            f"{r['measured']:,.0f} | {r['ratio']:.2f} | {met} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--cells", type=int, default=28225, help="cells per demo file (hub: 28,225)")
    ap.add_argument("--workdir", type=Path, help="keep the runs here (default: a temp folder)")
    ap.add_argument("--no-hub", action="store_true", help="skip the download rules")
    ap.add_argument("--out", type=Path, help="append the Markdown section to this file")
    ap.add_argument("--json", type=Path, help="write the measured rows to this JSON file")
    ap.add_argument("--reuse", action="store_true", help="skip the full run (--workdir has one)")
    ap.add_argument(
        "--measured", type=Path, help="rows of an earlier --json: only re-read the requests"
    )
    args = ap.parse_args()

    started = datetime.now(UTC).replace(microsecond=0)
    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    base = args.workdir or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    wd = base / "demo"
    wd.mkdir(parents=True, exist_ok=True)
    cfg = wd / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "source": {"kind": "demo", "files": f"0:{args.files}", "cells_per_shard": None},
                "demo": {"n_files": args.files, "cells_per_file": args.cells},
            }
        )
    )
    env = bench_env()
    if args.measured:
        rows = json.loads(args.measured.read_text())
    else:
        if not args.reuse:
            log(f"full run in {wd} ({args.files} files x {args.cells} cells, all stages) ...")
            t0 = time.perf_counter()
            run(snakemake(wd, cfg, "--cores", "2", "--notemp", "--quiet", "rules"), wd, env,
                wd / "full.out")  # fmt: skip
            log(f"  done in {time.perf_counter() - t0:.0f} s")
        picked, seen = [], set()
        for job in planned_jobs(wd, cfg, env, []):
            if job["rule"] not in seen:  # one job per rule: all jobs of a rule read the same size
                seen.add(job["rule"])
                picked.append(job)
        rows = []
        for job in picked:
            r = measure_job(wd, cfg, env, job)
            log(f"  {r['rule']:24s} measured {r['measured']:7.0f} (snakemake "
                f"{r['snakemake_mb']:.0f}, script {r['script_mb']:.0f})  {r['wall_s']:.0f} s")  # fmt: skip
            rows.append(r)
        if not args.no_hub:
            rows += hub_jobs(wd, base, env, args.files)
        if args.json:
            args.json.write_text(json.dumps(rows, indent=1))
    # the requests, as Snakemake evaluates them with every input there
    for r in rows:
        r["declared"] = declared_mb(Path(r["wd"]), Path(r["cfg"]), env, r)
        r["ratio"] = r["declared"] / r["measured"]
        log(f"  {r['rule']:24s} declared {r['declared']:6d}  measured {r['measured']:7.0f}  "
            f"ratio {r['ratio']:.2f}")  # fmt: skip

    sizes = sorted((wd / "results" / "demo" / "data").glob("*.parquet"))
    size_txt = ", ".join(f"{p.stat().st_size / 2**20:.1f}" for p in sizes)
    when = (
        f"requests evaluated {started.isoformat()} over the measurements of an earlier run "
        f"(`--json`, then `--measured`)"
        if args.measured
        else f"full run, {started.isoformat()}, {time.perf_counter() - t_start:.0f} s"
    )
    head = (
        f"*{when}; load average "
        f"{load0:.1f} before, {os.getloadavg()[0]:.1f} after; {os.cpu_count()} CPUs, "
        f"python {platform.python_version()}.* Command: `.venv/bin/python benchmarks/bench_memory.py"
        f"{'' if args.files == 4 else f' --files {args.files}'}"
        f"{'' if args.cells == 28225 else f' --cells {args.cells}'} --out benchmarks/RESULTS.md`\n\n"
        f"{args.files} demo files x {args.cells:,} cells (hub-sized; data files of {size_txt} MB), "
        f"every stage on, default config otherwise. Whole job = VmHWM of the Snakemake process "
        f"x 2 (the job step's and the inner one srun starts) + VmHWM of every other process of the "
        f"job (script, workers) + srun ({SRUN_MB:.0f} MB). Goal: declared >= {GOAL} x measured "
        f"for every rule; met by {sum(r['ratio'] >= GOAL for r in rows)} of {len(rows)}, lowest "
        f"ratio {min(r['ratio'] for r in rows):.2f} ({min(rows, key=lambda r: r['ratio'])['rule']})."
    )
    text = table(rows, head)
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n## P8 - memory requests against whole-job peaks (SLURM)\n\n" + text)
        log(f"appended to {args.out}")
    print(text)
    if not args.workdir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
