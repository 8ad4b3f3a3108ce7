"""P8 and P9 (issue 18): the shard-level passes against the decode limit, and their atlas cost.

On the first ``--files`` files of P4's 36-file demo design (28,000 cells a file), runs the
embed stage (``--cores 2``) with ``summarize.shards_per_job`` and ``embed.shards_per_job`` as
given, for this checkout and, with ``--before DIR``, for another checkout of the repository
(e.g. ``git worktree add /tmp/before <commit>``), alternating, ``--repeats`` times. Per run:
the job-seconds of the shard-level kinds (summary, Gram, projection) from the ``benchmark:``
files. In the same process, the decode limit: the CPU seconds (both Arrow threads counted)
of decoding the columns a summary needs from every file with ``iter_batches``.

* P8 = decode CPU-s / (summary + Gram + projection job-s): cells per job-second over the
  shard-level path as a fraction of cells decoded per CPU-second (goal >= 0.25; 0.5 would be
  two decodes and nothing else).
* P9 = those job-seconds per file, scaled to a hub file's 28,225 cells, x 3,388 files, in
  core-hours (goal <= 2.5; reading each file once is the floor).

    .venv/bin/python benchmarks/bench_passes.py --files 36 --before /tmp/before --json out.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import DEFAULT_CACHE, demo_dataset, log, run_workflow, workflow_config  # noqa: E402

N_FILES_HUB, N_CELLS_HUB = 3388, 95_624_334
DESIGN_FILES, CELLS_PER_FILE = 36, 28_000
KINDS = {"summarize": "summarize", "gram": "embed/gram", "project": "embed/project"}


def decode_cpu_s(paths: list[Path]) -> float:
    """CPU seconds of this process to decode the summary's columns of every file."""
    import pyarrow.parquet as pq

    from tahoeflow.sources.tahoe import READ_COLUMNS

    t0 = time.process_time()
    for p in paths:
        for _ in pq.ParquetFile(p).iter_batches(batch_size=1024, columns=list(READ_COLUMNS)):
            pass
    return time.process_time() - t0


def run_once(repo: Path, root: Path, n: int, summary_per_job: int, embed_per_job: int) -> dict:
    """One embed-stage run of ``repo``'s workflow; job-seconds of the shard-level kinds."""
    _common.REPO = repo
    os.environ["PYTHONPATH"] = str(repo / "src")  # the jobs import this checkout's library
    cfg = workflow_config(
        root, DESIGN_FILES, f"0:{n}",
        summarize={"shards_per_job": summary_per_job}, embed={"shards_per_job": embed_per_job},
    )  # fmt: skip
    cfg["stages"]["phenotypes"] = False  # the cell-cycle pass is a read of its own, not timed
    with tempfile.TemporaryDirectory(prefix="bench-passes-") as d:
        # --notemp: a checkout where the HVG cache was temporary keeps it to be measured
        res = run_workflow(Path(d) / "wd", cfg, cores=2, extra=["--notemp"])
        caches = list((Path(d) / "wd/results/embed/hvg_counts").glob("*.parquet"))
        cache_mb = sum(p.stat().st_size for p in caches) / 2**20
    out = {"wall_s": res["wall_s"], "job_s": {}, "cpu_s": {}, "max_rss_mb": {},
           "hvg_cache_mb": cache_mb}  # fmt: skip
    for name, kind in KINDS.items():
        jobs = [j for j in res["jobs"] if _common.job_kind(j) == kind]
        if not jobs:
            kinds = sorted({_common.job_kind(j) for j in res["jobs"]})
            raise RuntimeError(f"{repo}: no {kind} job in the run's benchmarks ({kinds})")
        out["job_s"][name] = sum(j["s"] for j in jobs)
        out["cpu_s"][name] = sum(j["cpu_time"] or 0 for j in jobs)
        out["max_rss_mb"][name] = max((j["max_rss"] or 0) for j in jobs)
        out.setdefault("n_jobs", {})[name] = len(jobs)
    return out


def figures(run: dict, decode_s: float, n_files: int) -> dict:
    """P8 and P9 from job wall seconds, and the same from the jobs' CPU seconds (which a
    loaded machine inflates less)."""
    scale = (N_CELLS_HUB / N_FILES_HUB) / CELLS_PER_FILE / n_files
    out = {}
    for key, suffix in (("job_s", ""), ("cpu_s", "_cpu")):
        total = sum(run[key].values())
        out["P8" + suffix] = decode_s / total
        out["P9_core_h" + suffix] = total * scale * N_FILES_HUB / 3600
        out["core_s_per_file" + suffix] = total * scale
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=36)
    ap.add_argument("--summary-per-job", type=int, default=14)
    ap.add_argument("--embed-per-job", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--before", type=Path, help="another checkout, measured alternately")
    ap.add_argument(
        "--also-embed-per-job", type=int,
        help="also run this checkout with this embed.shards_per_job (e.g. its atlas default)",
    )  # fmt: skip
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--out", type=Path, help="RESULTS.md: its section of this benchmark replaced")
    args = ap.parse_args(argv)
    root = demo_dataset(args.cache, DESIGN_FILES, CELLS_PER_FILE, write=args.files)
    paths = [root / "data" / f"train-{i:05d}-of-{DESIGN_FILES:05d}.parquet"
             for i in range(args.files)]  # fmt: skip
    here = Path(__file__).resolve().parents[1]
    variants = {"after": (here, args.embed_per_job)}  # label: (checkout, embed.shards_per_job)
    if args.before:
        variants = {"before": (args.before.resolve(), args.embed_per_job), **variants}
    if args.also_embed_per_job:
        variants[f"after, {args.also_embed_per_job} a job"] = (here, args.also_embed_per_job)
    runs: dict[str, list[dict]] = {k: [] for k in variants}
    decodes = []
    for r in range(args.repeats):
        decodes.append(decode_cpu_s(paths))
        for label, (repo, per_job) in (
            variants.items() if r % 2 == 0 else reversed(variants.items())
        ):
            log(f"repeat {r + 1}: {label} ({repo})")
            runs[label].append(run_once(repo, root, args.files, args.summary_per_job, per_job))
    decode_s = statistics.median(decodes)
    result = {
        "files": args.files, "cells": args.files * CELLS_PER_FILE,
        "summary_per_job": args.summary_per_job, "embed_per_job": args.embed_per_job,
        "decode_cpu_s": decodes, "load_avg": os.getloadavg(),
        "data_mb": sum(p.stat().st_size for p in paths) / 2**20,
        "runs": {
            k: [{**v, **figures(v, decode_s, args.files)} for v in vs] for k, vs in runs.items()
        },
    }  # fmt: skip
    for k, vs in result["runs"].items():
        best = min(vs, key=lambda v: sum(v["job_s"].values()))
        log(
            f"{k}: job-s {', '.join(f'{n} {s:.1f}' for n, s in best['job_s'].items())}; "
            f"P8 {best['P8']:.3f}; P9 {best['P9_core_h']:.2f} core-h "
            f"({best['core_s_per_file']:.2f} core-s a hub file); decode {decode_s:.1f} CPU-s"
        )
    if args.json:
        _common.write_json(args.json, result)
    if args.out:
        shown = f"--files {args.files} --summary-per-job {args.summary_per_job} "
        shown += f"--embed-per-job {args.embed_per_job} --repeats {args.repeats}"
        if args.also_embed_per_job:
            shown += f" --also-embed-per-job {args.also_embed_per_job}"
        if args.before:  # no machine path in RESULTS.md: the checkout's commit instead
            rev = subprocess.run(["git", "-C", str(args.before), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip()  # fmt: skip
            shown += f" --before <checkout of {rev or '?'}>"
        replace_section(args.out, section(result, decode_s, shown + " --out benchmarks/RESULTS.md"))
    return 0


HEAD = "## P8 - shard passes against the decode limit (P8/P9, issue 18)"
"""Its section's heading in RESULTS.md (``run_all.py``'s part P8 writes the same section)."""


def section(result: dict, decode_s: float, argv: str) -> str:
    """The Markdown section of this run."""
    la = ", ".join(f"{x:.1f}" for x in result["load_avg"])
    lines = [
        HEAD, "",
        f"*{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, load average {la} at the end.* "
        f"Command: `.venv/bin/python benchmarks/bench_passes.py {argv}`", "",
    ]  # fmt: skip
    return "\n".join(lines + body(result, decode_s)) + "\n"


def body(result: dict, decode_s: float) -> list[str]:
    """The section's tables, without its heading and command line."""
    n, cells = result["files"], result["cells"]
    lines = [
        f"{n} demo files of {CELLS_PER_FILE:,} cells ({cells:,} cells; P4's design), embed stage, "
        f"`--cores 2`, `summarize.shards_per_job: {result['summary_per_job']}`, "
        f"`embed.shards_per_job: {result['embed_per_job']}` unless the row says otherwise. "
        "Decode limit: "
        f"{decode_s:.1f} CPU-s to decode the summary's columns of the {n} files "
        f"({cells / decode_s:,.0f} cells per CPU-s; median of "
        f"{len(result['decode_cpu_s'])}). P8 = decode CPU-s / shard-level job-s (goal >= 0.25); "
        "P9 = shard-level core-s per file scaled to a hub file's cells x 3,388 (goal <= 2.5 "
        "core-h).", "",
        "| code | run | summary job-s (jobs) | Gram job-s (jobs) | projection job-s (jobs) | "
        "largest peak MB | P8 | P9 core-h | P8 / P9 from CPU-s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    data_mb = result["data_mb"]
    cache = [r["hvg_cache_mb"] for r in result["runs"]["after"]]
    lines[-4] += (
        f" The HVG caches the Gram jobs keep for the projections took "
        f"{max(cache):,.0f} MB against {data_mb:,.0f} MB of data files."
    )
    for label, runs in result["runs"].items():
        for i, r in enumerate(runs):
            js, nj = r["job_s"], r["n_jobs"]
            lines.append(
                f"| {label} | {i + 1} | {js['summarize']:.1f} ({nj['summarize']}) | "
                f"{js['gram']:.1f} ({nj['gram']}) | {js['project']:.1f} ({nj['project']}) | "
                f"{max(r['max_rss_mb'].values()):,.0f} | {r['P8']:.3f} | {r['P9_core_h']:.2f} | "
                f"{r['P8_cpu']:.3f} / {r['P9_core_h_cpu']:.2f} |"
            )
    return lines


def replace_section(path: Path, text: str) -> None:
    """Put ``text`` in place of this benchmark's section of ``path`` (before "How each figure
    is measured" when it has none), keeping the old section's notes block."""
    old = path.read_text()
    if HEAD in old:
        start = old.index(HEAD)
        nxt = old.find("\n## ", start + len(HEAD))
        notes = _common.section_notes(old[start : nxt if nxt >= 0 else len(old)].split("\n"))
        text += "\n" + "\n".join(notes) if notes else ""
        new = old[:start] + text + ("\n" + old[nxt + 1 :] if nxt >= 0 else "")
    else:
        anchor = "## How each figure is measured"
        at = old.index(anchor) if anchor in old else len(old)
        new = old[:at] + text + "\n" + old[at:]
    path.write_text(new)


if __name__ == "__main__":
    raise SystemExit(main())
