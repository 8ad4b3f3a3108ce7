"""Atlas rehearsal: the whole DAG over Tahoe-100M's full layout (3,388 files, 95.6M cells).

Three steps, each resumable (re-running a step skips what is already there):

* ``data``: writes the hub layout under ``--root`` as a local mirror (``source.kind: local``):
  ``data/train-XXXXX-of-03388.parquet`` on Tahoe's real design (the demo generator with all 14
  plates, 50 lines, every drug and 28,225 cells per file = 95.6M cells, apportioned per (well,
  line) from ``obs_cell_grid``), the four real metadata tables, the truth tables and a
  manifest. To fit this machine's disk each cell stores few genes (library size >= 50 counts
  drawn from 4,000 expressed genes and the MT genes: ~42 distinct genes a cell; ``demo``
  ``silent_genes: false``), so per-cell and per-group tables have their atlas size while
  the expression files stay small (~2.4 MB each). ``--workers`` processes write files in
  contiguous runs (one plate's cells are drawn once per run).
* ``run``: writes ``config.yaml`` beside the data and runs ``snakemake --cores N`` on it in
  ``--root``/work (Snakemake resumes an interrupted run), recording the wall time of each
  invocation in ``runs.tsv``.
* ``report``: per rule, from the ``benchmark:`` files: jobs, job-seconds, the largest peak
  RSS (max_rss, MB) and the longest job; the largest files under results/; a Markdown table.
  Then the projected wall time on 200 cores along the critical path of the rule graph
  (``snakemake --rulegraph``), each rule's span the larger of its longest job and its
  job-seconds over 200 cores, with every job's seconds read from Snakemake's own run logs
  (so rules without a ``benchmark:`` count too), and the merges' share of that path.

    python benchmarks/atlas_rehearsal.py data --root /work/rehearsal --workers 2
    python benchmarks/atlas_rehearsal.py run --root /work/rehearsal --cores 2
    python benchmarks/atlas_rehearsal.py report --root /work/rehearsal

Keep ``--root`` outside the repository's working tree (a fresh checkout must not remove it).
``--files 0:339`` rehearses a tenth of the layout (the files stay those of the full design).
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from tahoeflow.cells.plan import parse_file_selection  # noqa: E402
from tahoeflow.sources.tahoe import N_FILES_HUB, data_filename, metadata_filename  # noqa: E402

CORES_PROJECTED = 200
CELLS_PER_FILE = 28_225  # 3,388 x 28,225 = 95.6M cells
DEMO = {
    "seed": 0,
    "n_files": N_FILES_HUB,
    "cells_per_file": CELLS_PER_FILE,
    "n_plates": 14,
    "n_cell_lines": 50,
    "n_drugs": None,
    "libsize_log_mean": 3.0,  # the floor of 50 counts a cell decides the library size
    "n_expressed_genes": 4000,
    "silent_genes": False,
}


def _design():
    from tahoeflow.sources.demo import DemoParams, Design

    return Design(DemoParams.from_dict(DEMO))


def _write_run(indices: list[int], root: str) -> int:
    from tahoeflow.sources.demo_files import write_file

    design = _design()
    done = 0
    for i in indices:
        path = Path(root) / data_filename(i)
        if not path.exists():
            write_file(design, i, path)
            done += 1
    return done


def make_data(root: Path, files: list[int], workers: int, run_length: int = 24) -> None:
    from tahoeflow.sources.demo_files import write_metadata

    for sub in ("data", "metadata", "truth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    design = _design()
    out = {k: root / metadata_filename(k) for k in ("gene", "sample", "drug", "cell_line")}
    truth = root / "truth"
    out.update(
        effects=truth / "effects.parquet",
        params=truth / "params.json",
        cells=truth / "cells.parquet",
    )
    if not all(Path(p).exists() for p in out.values()):
        write_metadata(design, out)
    with open(root / "manifest.tsv", "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(["file", "n_rows"])
        w.writerows([i, CELLS_PER_FILE] for i in files)
    runs = [files[i : i + run_length] for i in range(0, len(files), run_length)]
    t0, written = time.perf_counter(), 0
    with ProcessPoolExecutor(workers) as pool:
        for k, n in enumerate(pool.map(_write_run, runs, [str(root)] * len(runs))):
            written += n
            if k % 10 == 0 or k == len(runs) - 1:
                print(f"{k + 1}/{len(runs)} runs, {written} files written, "
                      f"{time.perf_counter() - t0:.0f} s", flush=True)  # fmt: skip
    size = sum(p.stat().st_size for p in (root / "data").glob("*.parquet"))
    print(f"data: {len(files)} files, {size / 2**30:.2f} GiB, {time.perf_counter() - t0:.0f} s")


def write_config(root: Path, files: str, summary_per_job: int | None, embed_per_job: int) -> Path:
    config = {
        "source": {
            "kind": "local",
            "files": files,
            "manifest": str(root / "manifest.tsv"),
            "local": {"path": str(root)},
        },
        "summarize": {"shards_per_job": summary_per_job},
        "embed": {"shards_per_job": embed_per_job},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run(root: Path, cores: int, extra: list[str]) -> int:
    work = root / "work"
    work.mkdir(exist_ok=True)
    cmd = ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(work), "--configfile",
           str(root / "config.yaml"), "--cores", str(cores), *extra]  # fmt: skip
    t0 = time.time()
    rc = subprocess.call(cmd, cwd=work)
    with open(root / "runs.tsv", "a") as fh:
        fh.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\t{time.time() - t0:.0f}\t{rc}\n")
    return rc


_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]$")


def logged_jobs(work: Path, since: float = 0.0) -> dict[tuple[str, str], float]:
    """Wall seconds of every job in Snakemake's run logs that finished after ``since``, keyed
    by (rule, outputs); a job run again in a later log replaces the earlier one."""
    jobs: dict[tuple[str, str], float] = {}
    for log in sorted((work / ".snakemake" / "log").glob("*.snakemake.log")):
        started: dict[str, tuple[str, str, float]] = {}
        stamp, pending = None, None
        for line in log.read_text().splitlines():
            m = _STAMP.match(line)
            if m:
                stamp = time.mktime(
                    time.strptime(m.group(1).replace("  ", " "), "%a %b %d %H:%M:%S %Y")
                )
                continue
            m = re.match(r"^(?:local)?rule (\w+):$", line)
            if m and stamp is not None:
                pending = [m.group(1), "", stamp]
                continue
            if pending is not None and line.startswith("    output: "):
                pending[1] = line.removeprefix("    output: ")
            elif pending is not None and line.startswith("    jobid: "):
                started[line.split()[-1]] = tuple(pending)
                pending = None
            m = re.match(r"^Finished jobid: (\d+)", line)
            if m and m.group(1) in started and stamp is not None:
                rule, out, t0 = started.pop(m.group(1))
                if stamp >= since:
                    jobs[(rule, out)] = stamp - t0
    return jobs


def critical_path(root: Path, jobs: dict[tuple[str, str], float]) -> tuple[float, list[str], float]:
    """(minutes, rules, merges' minutes) of the longest path through the rule graph on
    :data:`CORES_PROJECTED` cores, a rule lasting max(longest job, job-seconds / cores)."""
    cmd = ["snakemake", "-s", str(REPO / "Snakefile"), "-d", str(root / "work"), "--configfile",
           str(root / "config.yaml"), "--rulegraph", "--rerun-triggers", "mtime"]  # fmt: skip
    dot = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    names = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', dot, re.M))
    parents: dict[str, list[str]] = {n: [] for n in names.values()}
    for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M):
        parents[names[b]].append(names[a])  # a's output is b's input
    per_rule: dict[str, list[float]] = {}
    for (rule, _), sec in jobs.items():
        per_rule.setdefault(rule, []).append(sec)
    span = {r: max(max(v), sum(v) / CORES_PROJECTED) for r, v in per_rule.items()}
    best: dict[str, tuple[float, list[str]]] = {}

    def longest(rule: str) -> tuple[float, list[str]]:
        if rule not in best:
            before = max((longest(p) for p in parents.get(rule, [])), default=(0.0, []))
            best[rule] = (before[0] + span.get(rule, 0.0), [*before[1], rule])
        return best[rule]

    total, path = max(longest(r) for r in parents)
    merges = sum(span.get(r, 0.0) for r in path if r.startswith("merge"))
    return total / 60, path, merges / 60


def report(root: Path, since: float = 0.0) -> str:
    """The Markdown tables; ``since`` (epoch seconds): only jobs that finished after it."""
    results = root / "work" / "results"
    per_rule: dict[str, list[tuple[float, float, str]]] = {}
    for tsv in (results / "benchmarks").rglob("*.tsv"):
        if tsv.stat().st_mtime < since:
            continue
        rel = tsv.relative_to(results / "benchmarks")
        rule = re.sub(r"\d+(_\d+)?", "#", str(rel.with_suffix("")))  # e.g. embed/project_b#
        with open(tsv) as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        for r in rows:
            rss = float(r["max_rss"]) if r["max_rss"] not in ("-", "NA", "") else float("nan")
            per_rule.setdefault(rule, []).append((float(r["s"]), rss, str(rel)))
    lines = [
        "| step (benchmark file) | jobs | job-s | longest job (s) | largest peak RSS (MB) |",
        "|---|---|---|---|---|",
    ]
    for rule, rows in sorted(per_rule.items(), key=lambda kv: -sum(r[0] for r in kv[1])):
        secs = [r[0] for r in rows]
        rss = [r[1] for r in rows if r[1] == r[1]]
        lines.append(f"| {rule} | {len(rows)} | {sum(secs):,.0f} | {max(secs):,.1f} | "
                     f"{max(rss) if rss else float('nan'):,.0f} |")  # fmt: skip
    # 200 cores: each rule's jobs spread over the cores, rules one after another (no overlap
    # between rules: an upper bound), a rule no shorter than its longest job
    span = {r: max(max(x[0] for x in rows), sum(x[0] for x in rows) / CORES_PROJECTED)
            for r, rows in per_rule.items()}  # fmt: skip
    total = sum(span.values())
    merges = sum(v for r, v in span.items() if r.startswith("merge"))
    lines += ["", f"Projected wall time on {CORES_PROJECTED} cores (rules in sequence, each at "
              f"least its longest job): {total / 60:,.1f} min, of which the merges "
              f"{merges / 60:,.1f} min ({merges / max(total, 1e-9):.0%})."]  # fmt: skip
    minutes, path, merges = critical_path(root, logged_jobs(root / "work", since))
    lines += ["", f"Critical path on {CORES_PROJECTED} cores (the rule graph's longest path, a "
              f"rule lasting max(longest job, job-s / {CORES_PROJECTED}), every job's seconds from "
              f"Snakemake's logs): {minutes:,.1f} min, of which the merges {merges:,.1f} min "
              f"({merges / max(minutes, 1e-9):.0%}): {' -> '.join(path)}."]  # fmt: skip
    files = sorted((p for p in results.rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)
    lines += ["", "| largest files | MB |", "|---|---|"]
    lines += [f"| {p.relative_to(results)} | {p.stat().st_size / 2**20:,.0f} |" for p in files[:10]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("step", choices=["data", "run", "report"])
    ap.add_argument("--root", type=Path, required=True)
    ap.add_argument("--files", default=f"0:{N_FILES_HUB}")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--summary-per-job", type=int, default=None)  # None: the default (auto)
    ap.add_argument("--embed-per-job", type=int, default=32)
    ap.add_argument("--since", help="report: only jobs finished after this local time (ISO)")
    args, extra = ap.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]  # `run ... -- --keep-going`: Snakemake's arguments
    root = args.root.resolve()
    if root.is_relative_to(REPO):
        ap.error(f"--root {root} is inside the repository; keep the rehearsal outside it")
    files = parse_file_selection(args.files, N_FILES_HUB)
    if args.step == "data":
        make_data(root, files, args.workers)
    elif args.step == "run":
        write_config(root, args.files, args.summary_per_job, args.embed_per_job)
        return run(root, args.cores, extra)
    else:
        since = time.mktime(time.strptime(args.since, "%Y-%m-%dT%H:%M:%S")) if args.since else 0.0
        print(report(root, since))
    return 0


if __name__ == "__main__":
    sys.exit(main())
