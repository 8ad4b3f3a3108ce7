"""The benchmark suite: runs P1-P7, each in its own processes, and writes benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/run_all.py              # full sizes (`make bench`); idle machine!
    .venv/bin/python benchmarks/run_all.py --quick      # tiny sizes: a smoke test of the suite
    .venv/bin/python benchmarks/run_all.py --only P1,P3 # some parts; the others keep their last
                                                        # results (benchmarks/runs/*.json)

Parts (goals from the issue):

* P1 summary-step cells/s vs ``pq.read_table`` of the same files (>= 0.5): bench_summary.py
* P2 end to end vs seed 002's method on 200k cells (>= 10x faster), P2S the same on 20k cells
  (start-up latency, no goal): ours_end_to_end.py
* P3 vs scanpy on ~200k cells (<= 1.0x time, <= 0.5x peak memory, same HVGs and explained
  variance): vs_scanpy.py
* P4 DAG scaling at ~100k / 300k / 1M cells on 2 cores (1M in <= 10 min, no job > 2 GB, time
  about linear in cells): scaling.py --part P4
* P5 dry run over the 3,388-file layout (<= 30 s): bench_dryrun.py
* P6 shard stage --cores 2 over --cores 1 (>= 1.8x): scaling.py --part P6
* P7 per-gene models, 12,205 genes x 1,000 samples x 30 features (<= 2 min): bench_pergene.py
* P8 (P8/P9, issue 18) the shard-level passes against the decode limit (>= 0.25) and their
  atlas cost (<= 2.5 core-hours), at 4 and at 14 shards a Gram / projection job: bench_passes.py
* DE pseudobulk DE on the default demo against its truth (FDR of adj.P.Val.global <= 5%, power
  per effect size, KS test of the null p-values) and contrasts per second with the projection
  for Tahoe's ~57k contrasts: bench_de.py (demo run up to the DE inputs in the cache, ~2 min)

A section's paragraphs between ``<!-- notes -->`` and ``<!-- /notes -->`` (explanations
written by hand) are carried over when the section is re-rendered.

Each part's results go to ``benchmarks/runs/<part>.json`` (git-ignored) with its mode (full or
quick), date and the machine's load; RESULTS.md is rendered from the latest result of every
part, and says which figures come from ``--quick`` (not valid for the goals).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
import _common  # noqa: E402

RUNS = HERE / "runs"
PY = sys.executable
PARTS = ["P1", "P2", "P2S", "P3", "P4", "P5", "P6", "P7", "P8", "DE", "OBS"]
# 95,624,334 cells in 3,388 files (benchmarks/make_manifest.py)
N_FILES_HUB, N_CELLS_HUB = 3388, 95_624_334


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- what each part runs ----------------------------------------------------------------------
SCRIPTS = {
    "P1": "bench_summary.py",
    "P2": "ours_end_to_end.py",
    "P2S": "ours_end_to_end.py",
    "P3": "vs_scanpy.py",
    "P4": "scaling.py",
    "P5": "bench_dryrun.py",
    "P6": "scaling.py",
    "P7": "bench_pergene.py",
    "P8": "bench_passes.py",
    "DE": "bench_de.py",
    "OBS": "bench_obs_sensitivity.py",
}
_TINY = ["--design-files", "6", "--cells-per-file", "2000"]
_FULL = ["--design-files", "36", "--cells-per-file", "28000"]


def part_args(part: str, quick: bool, reps: int, p4_reps: int) -> list[str]:
    """The sizes of a part: the issue's (full) or tiny ones (``--quick``, one repeat)."""
    r = "1" if quick else str(reps)
    if part == "P1":
        if quick:
            return ["--files", "1", "--cells", "2000", "--repeats", "1", "--no-memory"]
        return ["--files", "3", "--cells", "28000", "--repeats", r]
    if part == "P2":  # issue 18: at 200k cells, where per-cell work dominates
        return ["--cells", "2000" if quick else "200000", "--files", "2" if quick else "8",
                "--repeats", r]  # fmt: skip
    if part == "P2S":  # 20k cells: start-up latency
        return ["--cells", "2000" if quick else "20000", "--files", "2", "--repeats", r]
    if part == "P3":
        return [*(_TINY if quick else _FULL), "--files", "2" if quick else "7", "--repeats", r]
    if part == "P4":
        sizes, r4 = ("1,2,3", "1") if quick else ("4,11,36", str(p4_reps))
        return ["--part", "P4", *(_TINY if quick else _FULL), "--sizes", sizes, "--repeats", r4]
    if part == "P6":
        files = "2" if quick else "8"
        return ["--part", "P6", *(_TINY if quick else _FULL), "--p6-files", files, "--repeats", r]
    if part == "P5":
        return ["--files", "200", "--repeats", "1"] if quick else ["--repeats", r]
    if part == "P7":
        if quick:
            return ["--genes", "300", "--samples", "200", "--runs", "1", "--sklearn-genes", "5"]
        return ["--runs", r]
    if part == "P8":  # the atlas default (14 a job) beside 4 a job
        if quick:
            return ["--files", "2", "--repeats", "1"]
        return ["--files", "36", "--repeats", r, "--also-embed-per-job", "14"]
    if part == "DE":  # one size: the default demo (the truth's FDR is not a timing)
        return ["--jobs", "50"]
    if part == "OBS":  # the atlas's 100.6M obs rows (quick: 5%), checked against obs_cell_grid
        return ["--scale", "0.05" if quick else "1", "--check-grid"]
    raise ValueError(part)


def commands(part: str, quick: bool, reps: int, p4_reps: int, cache: Path, out: Path) -> list:
    """The command line of a part; its results go to ``out`` (or its stdout for P5, P7)."""
    cmd = [PY, str(HERE / SCRIPTS[part]), *part_args(part, quick, reps, p4_reps)]
    if part == "P1":
        return [*cmd, "--cache", str(cache), "--out", str(out)]
    if part in ("P2", "P2S", "P3", "P4", "P6", "P8"):
        return [*cmd, "--cache", str(cache), "--json", str(out)]
    if part == "DE":
        return [*cmd, "--run-demo", str(cache / "de-demo"), "--json", str(out)]
    if part == "OBS":
        return [*cmd, "--workdir", str(cache / "obs"), "--json", str(out)]
    return cmd


def num(pattern: str, text: str, group: int = 1) -> float | None:
    m = re.search(pattern, text)
    return float(m.group(group).replace(",", "")) if m else None


def parse_p1(md: str) -> dict:
    """The summary and read_table rows of bench_summary.py's Markdown table."""
    rows = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 5 and cells[0] in ("read_table", "summary"):
            rows.setdefault(cells[0], cells)  # the first table; the memory table repeats the names
    out: dict = {"table": md}
    if "summary" in rows and "read_table" in rows:
        s, r = rows["summary"], rows["read_table"]
        out["summary_cells_s"] = [float(s[2].replace(",", "")), float(s[3].replace(",", ""))]
        out["read_table_cells_s"] = [float(r[2].replace(",", "")), float(r[3].replace(",", ""))]
        ratios = [float(x) for x in re.findall(r"[\d.]+", s[4])]
        if len(ratios) == 3:
            out["ratio_best"], out["ratio_medians"], out["ratio_paired_median"] = ratios
    return out


def parse_p5(text: str) -> dict:
    m = re.search(
        r"dry run, (\d+) files, (\d+) (?:shards|summary jobs): wall min ([\d.]+) s, "
        r"median ([\d.]+) s",
        text,
    )
    if not m:
        return {"raw": text[-2000:]}
    return {
        "files": int(m.group(1)),
        "shards": int(m.group(2)),  # summary jobs since summary groups (session 6)
        "wall_min_s": float(m.group(3)),
        "wall_median_s": float(m.group(4)),
        "cpu_min_s": num(r"CPU min ([\d.]+) s", text),
        "jobs_line": next((ln for ln in text.splitlines() if ln.startswith("jobs:")), ""),
        "scontrol_s": num(r"scontrol show config: ([\d.]+) s", text),
    }


def parse_p7(text: str) -> dict:
    out: dict = {"raw": "\n".join(ln for ln in text.splitlines() if ln.strip())[-3000:]}
    m = re.search(r"fit_pergene: min ([\d.]+) s, median ([\d.]+) s", text)
    if m:
        out["wall_min_s"], out["wall_median_s"] = float(m.group(1)), float(m.group(2))
    out["data"] = next((ln for ln in text.splitlines() if ln.startswith("data:")), "")
    out["speedup_line"] = next((ln for ln in text.splitlines() if ln.startswith("sklearn")), "")
    return out


def run_part(part: str, args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{part}-"))
    out = tmp / ("p1.md" if part == "P1" else "result.json")
    cmd = commands(part, args.quick, args.repeats, args.p4_repeats, args.cache, out)
    log(f"== {part}: {shlex.join(cmd)}")
    load0 = os.getloadavg()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    stdout, stderr = proc.communicate()
    wall = time.perf_counter() - t0
    rec = {
        "part": part,
        "mode": "quick" if args.quick else "full",
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": shlex.join(cmd),
        "git": git_describe(),
        "part_wall_s": wall,
        "loadavg_before": load0,
        "loadavg_after": os.getloadavg(),
        "returncode": proc.returncode,
    }
    for line in stderr.splitlines()[-8:]:
        log(f"   {line}")
    if proc.returncode != 0:
        rec["error"] = (stdout[-2000:] + "\n" + stderr[-4000:]).strip()
        log(f"   {part} FAILED ({proc.returncode})")
    else:
        try:
            if part == "P1":
                rec["result"] = parse_p1(out.read_text())
            elif part == "P5":
                rec["result"] = parse_p5(stdout + stderr)
            elif part == "P7":
                rec["result"] = parse_p7(stdout)
            else:
                rec["result"] = json.loads(out.read_text())
        except Exception as e:  # keep the raw output when a script's format changed
            rec["error"] = f"cannot parse the output ({e}):\n{stdout[-3000:]}"
    rec["stderr_tail"] = stderr[-3000:]
    for f in tmp.iterdir():
        f.unlink()
    tmp.rmdir()
    return rec


# --- the report ---------------------------------------------------------------------------
def git_describe() -> str:
    """The checkout's commit (``-dirty`` with uncommitted changes)."""
    return subprocess.run(
        ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) / 2**20
    except OSError:
        pass
    pkgs = ["snakemake", "numpy", "scipy", "pandas", "pyarrow", "numba", "scikit-learn",
            "scanpy", "anndata", "datasets"]  # fmt: skip
    versions = {}
    for p in pkgs:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = "-"
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    git = git_describe()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": affinity,
        "ram_gb": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "git": git,
    }


def f(x: float | None, nd: int = 1, unit: str = "") -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000 and nd <= 1:
        return f"{x:,.0f}{unit}"
    return f"{x:.{nd}f}{unit}"


def met(ok: bool | None, quick: bool) -> str:
    if ok is None:
        return "-"
    s = "yes" if ok else "**no**"
    return f"{s} (quick)" if quick else s


def table(rows: list[tuple], quick: bool) -> list[str]:
    """rows: (figure, best, median, goal, ok)."""
    head = "met? (quick: not valid)" if quick else "met?"
    out = [f"| figure | best | median | goal | {head} |", "|---|---|---|---|---|"]
    for fig, best, med, goal, ok in rows:
        out.append(f"| {fig} | {best} | {med} | {goal} | {met(ok, quick)} |")
    return out


def result_of(rec: dict) -> dict:
    """A part's results (scaling.py nests P4/P6 under their names, beside cells_per_file)."""
    r = rec["result"]
    if rec["part"] in r:
        return {**r[rec["part"]], "cells_per_file": r.get("cells_per_file")}
    return r


def passes_section(r: dict) -> tuple[list[tuple], list[str]]:
    """P8/P9 rows (the atlas default's variant: 14 shards a job when it ran) and the run's
    tables as ``bench_passes.py`` writes them."""
    import statistics

    import bench_passes

    label = next((k for k in r["runs"] if k.startswith("after, 14")), "after")
    runs = r["runs"][label]
    p8 = [v["P8"] for v in runs]
    p9 = [v["P9_core_h"] for v in runs]
    rows = [
        (f"decode CPU-s / shard-level job-s, 1M cells ({label})", f(max(p8), 3),
         f(statistics.median(p8), 3), ">= 0.25", statistics.median(p8) >= 0.25),
        (f"P9 atlas shard stages, core-h ({label})", f(min(p9), 2), f(statistics.median(p9), 2),
         "<= 2.5", statistics.median(p9) <= 2.5),
    ]  # fmt: skip
    return rows, bench_passes.body(r, statistics.median(r["decode_cpu_s"]))


def section(rec: dict) -> tuple[list[str], list[tuple]]:
    """Markdown lines of one part, and its rows for the summary table."""
    part, quick = rec["part"], rec["mode"] == "quick"
    la, lb = rec["loadavg_before"], rec["loadavg_after"]
    title = {
        "P1": "P1 - summary step vs `pyarrow.parquet.read_table`",
        "P2": "P2 - end to end vs seed 002's method",
        "P2S": "P2S - start-up latency: seed 002's method at 20k cells",
        "P3": "P3 - vs scanpy in memory",
        "P4": "P4 - scaling of the DAG (2 cores)",
        "P5": "P5 - dry run over the 3,388-file layout",
        "P6": "P6 - shard stage, `--cores 2` over `--cores 1`",
        "P7": "P7 - per-gene models",
        "P8": "P8 - shard passes against the decode limit (P8/P9, issue 18)",
        "DE": "DE - differential expression against the demo's truth",
        "OBS": "OBS - atlas sensitivity from obs metadata",
    }[part]
    lines = [
        f"## {title}",
        "",
        f"*{'QUICK (tiny sizes, not valid for the goals)' if quick else 'full'} run, "
        f"{rec['date']}, {rec['part_wall_s']:.0f} s; load average {la[0]:.1f} before, "
        f"{lb[0]:.1f} after.* Command: `{rec['command'].replace(str(REPO) + '/', '')}`",
        "",
    ]
    if "error" in rec:
        lines += ["**FAILED**:", "", "```", rec["error"][-2500:], "```", ""]
        return lines, [(f"{part}: failed", "-", "-", "-", None, quick)]
    r = result_of(rec)
    rows: list[tuple] = []
    if part == "P1":
        if "ratio_paired_median" in r:
            rows = [
                ("summary cells/s", f(r["summary_cells_s"][0]), f(r["summary_cells_s"][1]), "-", None),
                ("read_table cells/s", f(r["read_table_cells_s"][0]), f(r["read_table_cells_s"][1]), "-", None),
                ("ratio summary / read_table (same run)", f(r["ratio_best"], 2),
                 f(r["ratio_medians"], 2), ">= 0.5", r["ratio_paired_median"] >= 0.5),
            ]  # fmt: skip
            lines += table(rows, quick)
            lines += ["", f"Median of the per-repeat ratios: {r['ratio_paired_median']:.2f}.", ""]
        lines += [
            "<details><summary>bench_summary.py output</summary>",
            "",
            r["table"],
            "</details>",
            "",
        ]
    elif part in ("P2", "P2S"):
        b, o, q = r["baseline_wall_s"], r["ours_wall_s"], r["ratio_paired"]
        goal = r.get("goal") if part == "P2" else None
        rows = [
            (f"seed 002 method, wall s ({r['cells']:,} cells)", f(b["min"]), f(b["median"]), "-", None),
            (f"ours, `snakemake --cores {r['cores']}` wall s", f(o["min"]), f(o["median"]), "-", None),
            ("speed-up baseline / ours (per repeat)", f(q["max"] if "max" in q else max(q["all"]), 2),
             f(q["median"], 2), f">= {goal:g}x" if goal else "-",
             q["median"] >= goal if goal else None),
        ]  # fmt: skip
        if "library_wall_s" in r:
            lw, lq = r["library_wall_s"], r["library_ratio_paired"]
            rows += [
                ("ours, library in one process (no Snakemake) wall s", f(lw["min"]), f(lw["median"]), "-", None),
                ("speed-up baseline / library (per repeat)", f(max(lq["all"]), 2), f(lq["median"], 2),
                 f"(>= {goal:g}x)" if goal else "-", None),
            ]  # fmt: skip
        lines += table(rows, quick)
        lines += [
            "",
            f"Ratio of the medians: {r['ratio_of_medians']:.2f}x (each repeat ran both, in "
            f"alternating order). Rows written: {r['rows_written']}.",
            "",
            "Baseline phases (median s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in r["baseline_phases_s"].items())
            + f"; Python imports {r['baseline_import_s']:.1f}.",
            "",
            "Ours, job seconds by kind (sum over shards, last repeat): "
            + ", ".join(f"{k} {v:.1f}" for k, v in r["ours_job_s_by_kind_last_repeat"].items())
            + f"; largest job peak {r['ours_job_peak_vmhwm_mb']:.0f} MB."
            + (
                f" {r['ours_jobs_last_repeat']} jobs; their job-seconds beyond the library's "
                f"work (its wall less its imports): {r['ours_fixed_s_per_job']:.2f} s a job."
                if "ours_fixed_s_per_job" in r
                else ""
            ),
            "",
            *(
                [
                    "Library (one process, no Snakemake) phases (median s): "
                    + ", ".join(f"{k} {v:.1f}" for k, v in r["library_phases_s"].items())
                    + f"; peak {r['library_peak_mb']:.0f} MB."
                ]
                if "library_phases_s" in r
                else []
            ),
            "",
        ]
        if "error" in r:
            lines += [f"**Check failed:** {r['error']}", ""]
    elif part == "P3":
        s, o, c = r["scanpy_wall_s"], r["ours_wall_s"], r["checks"]
        tr, mr, mc = r["time_ratio"], r["mem_ratio_job_peak"], r["mem_ratio_concurrent"]
        rows = [
            (f"scanpy wall s ({r['cells']:,} cells, load included)", f(s["min"]), f(s["median"]), "-", None),
            (f"ours wall s (`--cores {r['cores']}`)", f(o["min"]), f(o["median"]), "-", None),
            ("time ours / scanpy (per repeat)", f(tr["min"], 2), f(tr["median"], 2), "<= 1.0", tr["median"] <= 1.0),
            ("time ours / scanpy without its load", f(r["time_ratio_vs_scanpy_without_load"]["min"], 2),
             f(r["time_ratio_vs_scanpy_without_load"]["median"], 2), "-", None),
            ("scanpy peak RSS MB", f(r["scanpy_peak_mb"]["min"], 0), f(r["scanpy_peak_mb"]["median"], 0), "-", None),
            ("ours largest job peak MB", f(r["ours_job_peak_mb"]["min"], 0), f(r["ours_job_peak_mb"]["median"], 0), "-", None),
            ("memory ours (largest job) / scanpy", f(mr["min"], 2), f(mr["median"], 2), "<= 0.5", mr["median"] <= 0.5),
            ("ours concurrent jobs' RSS MB", f(r["ours_concurrent_peak_mb"]["min"], 0),
             f(r["ours_concurrent_peak_mb"]["median"], 0), "-", None),
            ("memory ours (concurrent jobs) / scanpy", f(mc["min"], 2), f(mc["median"], 2), "(<= 0.5)", None),
            ("HVGs identical", str(c.get("hvg_identical")), "-", "identical", c.get("hvg_ok")),
        ]  # fmt: skip
        if "library_wall_s" in r:
            lw, lt, lm = r["library_wall_s"], r["library_time_ratio"], r["library_mem_ratio"]
            rows[3:3] = [
                ("ours, library in one process (no Snakemake) wall s", f(lw["min"]), f(lw["median"]), "-", None),
                ("time library / scanpy (per repeat)", f(lt["min"], 2), f(lt["median"], 2), "(<= 1.0)", None),
                ("memory library / scanpy", f(lm["min"], 2), f(lm["median"], 2), "(<= 0.5)", None),
            ]  # fmt: skip
        rows += [
            ("explained variance ratio, max rel. diff (vs scanpy float64)",
             f"{c.get('evr_max_rel_diff_float64', float('nan')):.1e}", "-", "<= 1e-6", c.get("evr_ok")),
        ]  # fmt: skip
        lines += table(rows, quick)
        lines += [
            "",
            f"Cells (scanpy, ours): {c['cells_scanpy_ours']}; HVGs only in scanpy / only in ours: "
            f"{c['hvg_only_scanpy']} / {c['hvg_only_ours']}; variance ratio max rel. diff vs "
            f"scanpy's float32 run: {c['evr_max_rel_diff_float32']:.1e} (sum of the 50 ratios "
            f"{c['evr_sum_scanpy_ours'][0]:.6f} vs {c['evr_sum_scanpy_ours'][1]:.6f}).",
            "",
            "scanpy phases (median s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in r["scanpy_phase_s"].items())
            + "; its peak RSS after each phase (MB): "
            + ", ".join(f"{k} {v:.0f}" for k, v in r["scanpy_hwm_after_phase_mb"].items())
            + ".",
            "",
            *(
                [
                    "Orchestration cost: the workflow's jobs ran "
                    f"{sum(r['ours_job_s_by_kind_last_repeat'].values()):.1f} job-seconds in all "
                    f"(sum of their `benchmark:` seconds, last repeat) for the work the library "
                    f"does in {r['library_wall_s']['median']:.1f} s in one process; the "
                    "difference is each job's own Python start, imports, numba cache loads and "
                    "metadata reads, plus Snakemake's start-up and bookkeeping outside the jobs.",
                    "",
                    "Library (one process, no Snakemake) phases (median s): "
                    + ", ".join(f"{k} {v:.1f}" for k, v in r["library_phase_s"].items())
                    + f"; HVGs identical to the workflow's: {c.get('library_hvg_identical')}; "
                    f"variance ratios vs the workflow's, max rel. diff: "
                    f"{c.get('library_evr_max_rel_diff_vs_workflow', float('nan')):.1e}.",
                    "",
                ]
                if "library_wall_s" in r
                else []
            ),
            "Ours, job seconds by kind (sum over shards, last repeat): "
            + ", ".join(f"{k} {v:.1f}" for k, v in r["ours_job_s_by_kind_last_repeat"].items())
            + f". Snakemake's own process: {r['ours_snakemake_process_peak_mb']['median']:.0f} MB "
            f"(not in the job figures). `benchmark:` max_rss: "
            f"{r['ours_tsv_max_rss_mb']['median']:.0f} MB (median).",
            "",
        ]
    elif part == "P4":
        sizes = r["sizes"]
        for sz in sizes:
            w = sz["wall_s"]
            peak = max(sz["job_peak_vmhwm_mb"], sz["tsv_max_rss_mb"])
            rows.append((f"wall s, {sz['cells']:,} cells ({sz['files']} files)", f(w["min"]),
                         f(w["median"]), "<= 600" if sz is sizes[-1] else "-",
                         w["median"] <= 600 if sz is sizes[-1] else None))  # fmt: skip
            rows.append((f"largest job peak MB, {sz['cells']:,} cells", f(peak, 0), "-",
                         "<= 2048", peak <= 2048))  # fmt: skip
        if "loglog_slope" in r:
            rows.append(("log-log slope of time vs cells (all sizes)", f(r["loglog_slope"], 2), "-",
                         "<= 1.1 (about linear)", r["loglog_slope"] <= 1.1))  # fmt: skip
            rows.append(
                ("slope between the two largest sizes", f(r["last_step_slope"], 2), "-", "-", None)
            )
        lines += table(rows, quick)
        lines += ["", f"Stages: {r['stages']}; `--cores {r['cores']}`; best run of each size:", ""]
        lines += ["| cells | kind | jobs | sum s | median s per job | threads | max_rss MB |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for sz in sizes:
            for k, v in sz["per_kind_best_run"].items():
                lines.append(
                    f"| {sz['cells']:,} | {k} | {v['jobs']} | {v['sum_s']:.1f} | {v['median_s']:.1f} "
                    f"| {v['threads']} | {v['max_rss_mb']:.0f} |"
                )
        lines += [
            "",
            "Peak memory per size (MB): "
            + "; ".join(
                f"{sz['cells']:,} cells: job VmHWM {sz['job_peak_vmhwm_mb']:.0f}, benchmark "
                f"max_rss {sz['tsv_max_rss_mb']:.0f}, concurrent {sz['concurrent_peak_mb']:.0f}, "
                f"snakemake {sz['snakemake_peak_mb']:.0f}"
                for sz in sizes
            ),
            "",
        ]
    elif part == "P5":
        if "wall_min_s" in r:
            rows = [(f"dry run wall s ({r['files']} files, {r['shards']} summary jobs)", f(r["wall_min_s"]),
                     f(r["wall_median_s"]), "<= 30", r["wall_min_s"] <= 30)]  # fmt: skip
            lines += table(rows, quick)
            lines += ["", f"CPU (min) {f(r['cpu_min_s'])} s. {r['jobs_line']}", ""]
            if r.get("scontrol_s") is not None:
                lines += [
                    f"Not counted: the SLURM executor plugin runs `scontrol show config` when "
                    f"Snakemake starts; here (SLURM client installed by the tests, no controller "
                    f"running) that call took {f(r['scontrol_s'])} s before failing, in every "
                    f"Snakemake start. The timed runs put a `scontrol` that fails at once first "
                    f"on PATH, as on a machine without SLURM (on a login node it answers at once).",
                    "",
                ]
        else:
            lines += ["```", r.get("raw", ""), "```", ""]
    elif part == "P6":
        s = r["speedup"]
        rows = [
            (f"summary stage `--cores 1` wall s ({r['files']} files, {r['cells']:,} cells)",
             f(r["wall_cores1_s"]["min"]), f(r["wall_cores1_s"]["median"]), "-", None),
            ("summary stage `--cores 2` wall s", f(r["wall_cores2_s"]["min"]),
             f(r["wall_cores2_s"]["median"]), "-", None),
            ("speed-up (per repeat)", f(max(s["all"]), 2), f(s["median"], 2), ">= 1.8", s["median"] >= 1.8),
        ]  # fmt: skip
        if "stage_speedup" in r:
            st = r["stage_speedup"]
            rows += [
                ("Snakemake's fixed cost (a call with nothing to do) s, `--cores 1`",
                 f(r["fixed_cores1_s"]["min"]), f(r["fixed_cores1_s"]["median"]), "-", None),
                ("stage speed-up without that fixed cost (per repeat)", f(max(st["all"]), 2),
                 f(st["median"], 2), "(>= 1.8)", None),
            ]  # fmt: skip
        lines += table(rows, quick)
        lines += [
            "",
            f"Speed-up of the medians {r['speedup_of_medians']:.2f}. Sum of the summary jobs' own "
            f"seconds: {r['job_sum_cores1_s']['median']:.1f} (1 core), "
            f"{r['job_sum_cores2_s']['median']:.1f} (2 cores).",
            "",
        ]
    elif part == "P7":
        if "wall_min_s" in r:
            rows = [(f"fit_pergene wall s ({r['data'].split(';')[0].removeprefix('data: ')})",
                     f(r["wall_min_s"]), f(r["wall_median_s"]), "<= 120",
                     r["wall_median_s"] <= 120)]  # fmt: skip
            lines += table(rows, quick)
            lines += ["", r["speedup_line"], ""]
        lines += ["<details><summary>bench_pergene.py output</summary>", "", "```", r["raw"], "```",
                  "</details>", ""]  # fmt: skip
    elif part == "P8":
        rows, more = passes_section(r)
        lines += table(rows, quick)
        lines += ["", *more, ""]
    elif part == "DE":
        rows, more = de_section(r)
        lines += table(rows, quick)
        lines += ["", *more, ""]
    elif part == "OBS":
        sim = r["sim"]
        rows = [
            (f"obs_metadata -> sensitivity table, wall s ({sim['rows']:,} rows, "
             f"{r['threads']} threads)", f(r["wall_s"]), "-", "<= 600", r["wall_s"] <= 600),
            ("peak RSS MB (the whole process)", f(r["peak_rss_mb"], 0), "-", "<= 2048",
             r["peak_rss_mb"] <= 2048),
            ("same table as from obs_cell_grid", str(r.get("check", {}).get("grid_equal")), "-",
             "equal", bool(r.get("check", {}).get("grid_equal"))),
        ]  # fmt: skip
        lines += table(rows, quick)
        lines += [
            "",
            f"Simulated obs_metadata.parquet on the real design: {sim['rows']:,} rows "
            f"({sim['rows_full']:,} with `pass_filter` `full`, counted), the 6 columns the count "
            f"reads, dictionary-encoded, zstd, row groups of {sim['row_group_size']:,} rows: "
            f"{sim['bytes'] / 2**20:.0f} MB (the hub's file, with every column, is 2.29 GB; only "
            f"these columns are read). Counting {r['count_s']:.1f} s, table (plate + pooled, "
            f"Fisher, CMH, BH) and writing {r['table_s']:.1f} s, imports {r['import_s']:.1f} s; "
            f"CPU {r['cpu_s']:.1f} s; {r['groups']:,} (well, line) groups, {r['table_rows']:,} "
            "table rows.",
            "",
        ]
    summary = [
        (f"{part}: {fig}", best, med, goal, ok) for fig, best, med, goal, ok in rows if goal != "-"
    ]
    return lines, [(*row, quick) for row in summary]


def de_section(r: dict) -> tuple[list[tuple], list[str]]:
    """The DE part: summary rows and the tables of bench_de.py's JSON."""
    v = {x["variant"]: x for x in r["variants"]}
    tb = next(x for name, x in v.items() if name.startswith("textbook"))
    at = r["atlas"]
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    rows = [
        ("FDR of adj.P.Val.global, textbook voom (default)", pct(tb["fdr_global"]), "-",
         "<= 5%", tb["fdr_global"] <= 0.05),
        ("FDR of adj.P.Val (per contrast), textbook voom", pct(tb["fdr_contrast"]), "-", "-", None),
        ("power of adj.P.Val.global, textbook voom", pct(tb["power_global"]), "-", "-", None),
        ("null p-values: KS D against U(0,1)", f"{tb['ks_D']:.4f}", "-", "-", None),
        ("null p-values: share below 0.05", pct(tb["share_p<0.05"]), "-", "~5%",
         abs(tb["share_p<0.05"] - 0.05) <= 0.01),
        ("contrasts/s, one DE job, atlas-sized contrasts (62,710 genes)",
         f(at["contrasts_per_s"], 1), "-", "-", None),
        (f"Tahoe's ~{at['tahoe_contrasts']:,} contrasts with de.jobs {at['jobs']}, min",
         f(at["minutes_with_jobs"], 1), "-", "-", None),
    ]  # fmt: skip
    more = [
        f"Demo: {r['wells']} wells x {r['genes']:,} genes, {r['lines']} cell lines, {r['plates']} "
        f"plates; {tb['contrasts']} contrasts (pooled over plates), {tb['tests']:,} tests; calls "
        f"at {r['alpha']:g}. Null p-values = tests of genes without a true effect "
        f"({tb['n_null']:,}; the KS p-value is {tb['ks_p']:.2g}: at this n, D measures the size "
        "of the departure).",
        "",
        "| variant (`de.voom`) | calls (global) | FDR adj.P.Val | FDR adj.P.Val.global | power "
        "(global) | null p < 0.05 | null p < 0.01 | KS D |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {x['variant']} | {x['calls_global']} | {pct(x['fdr_contrast'])} | "
            f"{pct(x['fdr_global'])} | {pct(x['power_global'])} | {pct(x['share_p<0.05'])} | "
            f"{pct(x['share_p<0.01'])} | {x['ks_D']:.4f} |"
            for x in r["variants"]
        ),
        "",
        "Power of adj.P.Val.global by effect size (textbook voom; |log2fc_share| of the truth):",
        "",
        "| abs. log2 FC | truly changed (tested conditions) | power |",
        "|---|---|---|",
        *(f"| {b['abs_log2fc']} | {b['n']:,} | {pct(b['power'])} |" for b in r["power_by_effect"]),
        "",
        "Null p-value tails (textbook voom), where a table-wide BH threshold lies:",
        "",
        "| null tests | n | p < 0.05 | p < 1e-3 | p < 1e-4 |",
        "|---|---|---|---|---|",
        *(
            f"| {k} | {t['n']:,} | {pct(t['p<0.05'])} | {100 * t['p<1e-3']:.3f}% | "
            f"{100 * t['p<1e-4']:.4f}% |"
            for k, t in r["null_tail"].items()
        ),
        "",
        f"Throughput: the demo's {r['demo_contrasts']} contrasts in {r['demo_seconds']:.1f} s "
        f"({r['demo_genes_per_contrast']:.0f} genes tested per contrast); atlas-sized contrasts "
        f"(62,710 genes, {at['genes_tested']:,.0f} tested, 1 treated + 2 DMSO wells): "
        f"{at['seconds_per_contrast']:.3f} s each, so Tahoe's ~{at['tahoe_contrasts']:,} "
        f"contrasts take {at['hours_one_job']:.2f} h in one job and "
        f"{at['minutes_with_jobs']:.1f} min with `de.jobs: {at['jobs']}` (one per cell line; "
        "each job decodes only its line's row groups of the merged pseudobulk).",
        "",
        "Agreement with R (limma/edgeR/DESeq2 on the same counts and design: textbook voom and "
        "`de.method: log` to max |dt| <= 1e-6, PyDESeq2 log2FoldChange and padj within the "
        "stated tolerances) is asserted by `tests/test_de_reference.py` (`pytest -s` prints "
        "the measured differences); it is not re-measured here.",
    ]
    return rows, more


def projection(rec: dict | None, cores: int) -> list[str]:
    """Tahoe-100M on a cluster, from P4's per-job benchmark files (largest size)."""
    if not rec or "result" not in rec:
        return ["No P4 result to project from.", ""]
    quick = rec["mode"] == "quick"
    r = result_of(rec)
    sz, cpf = r["sizes"][-1], r["cells_per_file"]
    k = sz["per_kind_best_run"]
    scale = N_CELLS_HUB / N_FILES_HUB / cpf  # cells per hub file / per demo file
    shard_kinds = ["summarize", "embed/gram", "embed/project"]
    # per file: a kind's job seconds summed and divided by the files (Gram/projection jobs
    # stream several shards each)
    core_s = (
        sum(k[x]["sum_s"] * k[x]["threads"] for x in shard_kinds if x in k) / sz["files"] * scale
    )
    total_core_h = core_s * N_FILES_HUB / 3600
    shard_min = core_s * N_FILES_HUB / cores / 60
    serial = {x: v["sum_s"] for x, v in k.items() if x not in shard_kinds}
    # merges and KMeans grow with the cells; the PCA's eigendecomposition does not
    linear = {x: v for x, v in serial.items() if x != "embed/pca"}
    serial_min = (
        sum(linear.values()) * N_CELLS_HUB / sz["cells"] + serial.get("embed/pca", 0.0)
    ) / 60
    lines = [
        "## 100M-cell projection",
        "",
        ("*From a QUICK P4 run: not meaningful.* " if quick else "")
        + f"Per-file cost from P4's largest run ({sz['cells']:,} cells; each kind's job seconds "
        f"summed over its jobs and divided by the {sz['files']} files, core-seconds = seconds x "
        f"declared threads, scaled to {N_CELLS_HUB / N_FILES_HUB:,.0f} "
        f"cells per hub file): summarize + gram + project = **{core_s:.1f} core-s per file**; "
        f"x {N_FILES_HUB:,} files = {total_core_h:.1f} core-hours, i.e. **{shard_min:.0f} min on "
        f"a {cores}-core SLURM cluster** for the shard stages (perfect packing, no queue waits, "
        "no download).",
        "",
        "The single jobs ("
        + ", ".join(f"{x} {v:.1f} s" for x, v in serial.items())
        + f" at {sz['cells']:,} cells), the merges and KMeans scaled linearly to "
        f"{N_CELLS_HUB:,} cells and the PCA kept as is, would add about {serial_min:.0f} min "
        "on one node each (a rough bound: their memory at that scale is not measured here; "
        "merge_gene_stats and hvg have no `benchmark:` file and are not counted).",
        "",
    ]
    return lines


def render(recs: dict[str, dict], m: dict, args: argparse.Namespace) -> str:
    quick_parts = [p for p, r in recs.items() if r["mode"] == "quick"]
    lines = ["# tahoeflow benchmark results", ""]
    if quick_parts:
        lines += [
            f"> **Figures of {', '.join(quick_parts)} come from `--quick` (tiny sizes, a smoke "
            "test of the suite on a shared machine): they are NOT valid for the goals.** Run "
            "`make bench` (= `.venv/bin/python benchmarks/run_all.py`) on an idle machine for "
            "the real figures.",
            "",
        ]
    lines += [
        "Written by `benchmarks/run_all.py` (one command: `make bench`, or "
        "`.venv/bin/python benchmarks/run_all.py [--quick] [--only P1,P3]`); not part of the "
        "test suite. Each figure is the best (min time / max rate) and the median of repeated "
        "runs; each comparison is a ratio of two measurements taken in the same run "
        "(interleaved repeats).",
        "",
        "## Machine",
        "",
        f"- CPU: {m['cpu']}, {m['cores']} logical cores ({m['cores_usable']} usable), "
        f"{m['ram_gb']:.1f} GiB RAM"
        if m["ram_gb"]
        else f"- CPU: {m['cpu']}",
        f"- {m['os']}, Python {m['python']}",
        "- " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- repository: `{m['git']}`; rendered {dt.datetime.now().astimezone().isoformat(timespec='seconds')}",
        "",
        "## Summary",
        "",
        "| part: figure | best | median | goal | met? | mode |",
        "|---|---|---|---|---|---|",
    ]
    old = args.out.read_text().split("\n") if args.out.exists() else []
    sections, summary = [], []
    for p in PARTS:
        if p not in recs:
            continue
        sec, rows = section(recs[p])
        span = _span(old, heading(p))
        sections += sec + (_common.section_notes(old[span[0] : span[1]]) if span else [])
        summary += rows
    for fig, best, med, goal, ok, quick in summary:
        lines.append(
            f"| {fig} | {best} | {med} | {goal} | {met(ok, False)} | "
            f"{'quick: not valid' if quick else 'full'} |"
        )
    missing = [p for p in PARTS if p not in recs]
    if missing:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    lines += ["", *history_section(summary), *sections, *kept_sections(old, recs)]
    lines += [*projection(recs.get("P4"), args.cluster_cores), METHOD]
    return "\n".join(lines) + "\n"


# --- before and after ---------------------------------------------------------------------
HISTORY = HERE / "history"
"""Tracked: the summary table of earlier runs, one JSON file each (``--save-history``)."""


def summary_of(recs: dict[str, dict]) -> list[list]:
    rows = []
    for p in PARTS:
        if p in recs:
            rows += [list(r) for r in section(recs[p])[1]]
    return rows


def save_history(recs: dict[str, dict], label: str, m: dict) -> Path:
    HISTORY.mkdir(exist_ok=True)
    path = HISTORY / f"{label}.json"
    dates = sorted(r["date"] for r in recs.values() if "date" in r)
    git = {r.get("git") for r in recs.values()} - {None}
    entry = {"label": label, "git": sorted(git) or [m["git"]],
             "dates": [dates[0], dates[-1]] if dates else [], "rows": summary_of(recs)}  # fmt: skip
    path.write_text(json.dumps(entry, indent=1) + "\n")
    return path


def history_section(summary: list) -> list[str]:
    """Median of each summary figure in the saved runs (oldest first) beside this run's."""
    saved = (json.loads(p.read_text()) for p in HISTORY.glob("*.json"))
    entries = sorted(  # history/ also keeps single benchmarks' records: summaries only
        (e for e in saved if {"label", "dates", "rows"} <= set(e)),
        key=lambda e: e["dates"][0] if e["dates"] else "",
    )
    if not entries:
        return []
    head = ["figure", *(f"{e['label']}" for e in entries), "this run", "goal"]
    lines = [
        "## Before and after",
        "",
        "Median of each summary figure in the runs saved under `benchmarks/history/` (oldest "
        "first; `*` = a `--quick` figure, not valid) and in this run. What changed between "
        "them is in the git log of the labelled commits.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for fig, _best, med, goal, _ok, quick in summary:
        old = []
        for e in entries:
            hit = next((r for r in e["rows"] if r[0] == fig), None)
            old.append("-" if hit is None else f"{hit[2]}{'*' if hit[5] else ''}")
        lines.append(f"| {fig} | {' | '.join(old)} | {med}{'*' if quick else ''} | {goal} |")
    return [*lines, ""]


METHOD = """## How each figure is measured

- **P1** `benchmarks/bench_summary.py`: the summary job's work (read + validate + CSR +
  summaries + writes) against `pq.read_table(path)` of the same file, interleaved per file.
- **P2** `benchmarks/ours_end_to_end.py`: `benchmarks/seed002_baseline.py` (our rewrite of
  seed 002: `datasets` streaming of the local Parquet files, per-cell Python lists, CSR, CPM +
  log1p, TruncatedSVD(50), KMeans(10)) against `snakemake --cores 2` on the same files
  (`source.kind: local`, targets `results/embed/embeddings.parquet`, `embeddings.csv` and
  `pca_variance.csv`, `embed.center: false`, `filters.min_genes: 0`). Both timed as whole processes (imports and
  Snakemake's start-up included). Same deliverable, not the same arithmetic: the seed uses
  CPM and a randomized SVD of all genes, the workflow CP10k and an exact SVD of 2,000 HVGs.
  P2 at 200,000 cells in 8 files (goal >= 10x), P2S at 20,000 cells in 2 files (start-up
  latency: the workflow's job-seconds beyond the library's work are stated per job).
- **P3** `benchmarks/vs_scanpy.py`: scanpy in a fresh process, its data loaded into one CSR
  with our reader (counted in its time, and shown without); ours = `snakemake --cores 2`,
  targets as P2 with `embed.center: true`. Memory: scanpy's VmHWM against our largest job
  (VmHWM of each job process sampled every 0.2 s, and the `benchmark:` max_rss) and against
  the largest sum of RSS of the jobs running at once. Explained variance checked against an
  untimed float64 scanpy run (the timed scanpy run computes in float32).
- **P4/P6** `benchmarks/scaling.py`: demo files of 28,000 cells written once to a cache
  folder (not timed) and read in place (`source.kind: local`); P4 runs the default target
  with only `stages.embed` on; P6 targets the summary outputs.
- **P5** `benchmarks/bench_dryrun.py` (nominal manifest from `make_manifest.py`).
- **P7** `benchmarks/bench_pergene.py`.
- **P8/P9** `benchmarks/bench_passes.py`: the embed stage over 36 demo files (1M cells), the
  `benchmark:` seconds of the summary, Gram and projection jobs against the CPU seconds of
  decoding the summary's columns of the same files in one process; P9 scales those
  job-seconds per file to the 3,388 hub files.
- **OBS** `benchmarks/bench_obs_sensitivity.py`: obs_metadata simulated on the real design
  (obs_cell_grid split over sample_metadata's wells; written once, not timed), then in a fresh
  process pinned to 2 cores: stream it by row groups, count, build and write the sensitivity
  table; peak memory = the process's `ru_maxrss`. `--check-grid`: every cell counted gives
  the table computed from obs_cell_grid directly.
- **DE** `benchmarks/bench_de.py --run-demo <cache>/de-demo`: the default demo run up to the
  merged pseudobulk, then `pseudobulk_de` per cell line as the `de_part` jobs do, for textbook
  limma-voom and each `de.voom` departure; calls scored against `demo/truth/effects.parquet`
  (`tahoeflow.de.truth.score_calls`). Agreement with R: `tests/test_de_reference.py`.
"""


GENERATED = ("## Machine", "## Summary", "## Before and after", "## 100M-cell projection",
             "## How each figure is measured")  # fmt: skip
"""Sections :func:`render` writes itself besides the parts'."""


def kept_sections(old: list[str], recs: dict[str, dict]) -> list[str]:
    """The old RESULTS.md's sections that this render does not write: parts without a result
    under runs/, and sections written by other scripts or by hand (bench_memory.py's, the atlas
    rehearsal's, ...), in their order."""
    starts = [i for i, ln in enumerate(old) if ln.startswith("## ")]
    out: list[str] = []
    for i, end in zip(starts, [*starts[1:], len(old)], strict=True):
        head = old[i]
        ours = head.strip() in GENERATED and (head != "## 100M-cell projection" or "P4" in recs)
        if ours or any(head.startswith(heading(p)) for p in recs):
            continue
        out += old[i:end]
    return out


def heading(part: str) -> str:
    """How a part's section heading starts (P8's names itself apart from bench_memory.py's
    "P8 - memory requests" section, from the SLURM work)."""
    return "## P8 - shard passes" if part == "P8" else f"## {part} - "


def _span(lines: list[str], head: str) -> tuple[int, int] | None:
    """[start, end) of the section whose heading line starts with ``head`` (to the next ``## ``)."""
    start = next((i for i, ln in enumerate(lines) if ln.startswith(head)), None)
    if start is None:
        return None
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return start, end


def splice(old: str, recs: dict[str, dict], parts: list[str]) -> str:
    """``old`` RESULTS.md with the sections and summary rows of ``parts`` replaced by this run's
    (for ``--only`` when the other parts have no result under runs/: their sections, and
    sections written by other scripts such as P8's, stay as they are)."""
    lines = old.rstrip("\n").split("\n")
    for p in parts:
        if p not in recs:
            continue
        sec, rows = section(recs[p])
        span = _span(lines, heading(p))
        if span is None:
            where = _span(lines, "## 100M-cell projection") or _span(lines, "## How each figure")
            at = where[0] if where else len(lines)
            span = (at, at)
        lines[span[0] : span[1]] = sec + _common.section_notes(lines[span[0] : span[1]])
        lines = [ln for ln in lines if not ln.startswith(f"| {p}: ")]
        summary = _span(lines, "## Summary")
        if summary is not None:
            last = max(i for i in range(*summary) if lines[i].startswith("|"))
            lines[last + 1 : last + 1] = [
                f"| {fig} | {best} | {med} | {goal} | {met(ok, False)} | "
                f"{'quick: not valid' if quick else 'full'} |"
                for fig, best, med, goal, ok, quick in rows
            ]
    span = _span(lines, "## How each figure is measured")
    if span is not None:
        lines[span[0] : span[1]] = METHOD.rstrip("\n").split("\n") + [""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (smoke test)")
    ap.add_argument("--only", help="comma-separated parts, e.g. P1,P3 (default: all)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of P1-P3 and P5-P7")
    ap.add_argument("--p4-repeats", type=int, default=2, help="repeats of each P4 size")
    ap.add_argument("--cluster-cores", type=int, default=200, help="cores of the projection")
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get("TAHOEFLOW_BENCH_CACHE", tempfile.gettempdir()))
        / "tahoeflow-bench",
        help="where demo datasets are written once (full run: ~3 GB)",
    )
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    ap.add_argument("--render-only", action="store_true", help="rewrite RESULTS.md from runs/")
    ap.add_argument(
        "--save-history",
        metavar="LABEL",
        help="also keep this run's summary as benchmarks/history/LABEL.json (tracked), shown in "
        "the 'Before and after' table of later runs",
    )
    args = ap.parse_args(argv)
    parts = PARTS if not args.only else [p.strip().upper() for p in args.only.split(",")]
    bad = [p for p in parts if p not in PARTS]
    if bad:
        ap.error(f"unknown part(s) {bad}; choose from {PARTS}")

    RUNS.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    if not args.render_only:
        for p in parts:
            rec = run_part(p, args)
            (RUNS / f"{p}.json").write_text(json.dumps(rec, indent=1))
            log(f"   {p}: {rec['part_wall_s']:.0f} s")
    recs = {}
    for p in PARTS:
        path = RUNS / f"{p}.json"
        if path.exists():
            recs[p] = json.loads(path.read_text())
    m = machine()
    if args.only and args.out.exists() and any(p not in recs for p in PARTS):
        # the other parts have no result here: keep their sections, replace only these parts'
        args.out.write_text(splice(args.out.read_text(), recs, parts))
    else:
        args.out.write_text(render(recs, m, args))
    log(f"wrote {args.out} ({time.perf_counter() - t0:.0f} s)")
    if args.save_history:
        log(f"kept the summary as {save_history(recs, args.save_history, m)}")
    failed = [p for p in parts if "error" in recs.get(p, {}) and not args.render_only]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
