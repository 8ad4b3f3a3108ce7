"""Throughput of the per-shard summary step against ``pyarrow.parquet.read_table`` alone.

Demo files of Tahoe's size (about 28k cells, ~36M stored counts each) are generated once into
a cache folder. Each repeat then times, file after file and interleaved (the order flips every
repeat, so drift in machine load hits both alike):

* ``read_table``: ``pq.read_table(path)``, all columns, nothing else;
* ``summary``: what one ``summarize_shard`` job does: ``load_shard`` (read, validate, CSR,
  filters) + ``summarize`` + writing the three Parquet outputs and the QC JSON.

It prints cells/s of each (best and median repeat), their ratio (goal: >= 0.5), where the
summary's time goes, and the peak RSS (VmHWM) of fresh processes running the summary of 1 file
and of all files one after another (memory must be bounded by the shard, not the dataset),
with the first-call time of a fresh process (imports + numba's cached kernels) and the JIT
compile time with an empty numba cache. The table is Markdown; ``--out`` appends it to a file.

    .venv/bin/python benchmarks/bench_summary.py --files 3 --cells 28000 --repeats 5
    .venv/bin/python benchmarks/bench_summary.py --ref HEAD   # also time the code of a git ref
    .venv/bin/python benchmarks/bench_summary.py --threads 1,2   # also load_shard/summarize threads=2
    .venv/bin/python benchmarks/bench_summary.py --json benchmarks/history/DATE-LABEL.json --label DATE-LABEL
    .venv/bin/pyinstrument -r text benchmarks/bench_summary.py --files 2 --repeats 3 --no-memory  # profile

The profiles and records before and after a change are kept in ``benchmarks/history/``.
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

REPO = Path(__file__).resolve().parents[1]
MODULES = ["__init__", "errors", "io", "pp", "schema", "shards", "summarize"]


# --- data ---------------------------------------------------------------------------------
def demo_files(
    cache: Path, n_files: int, cells: int, seed: int = 0
) -> tuple[list[Path], Path, Path]:
    """(data files, gene metadata, sample metadata) of a demo dataset, written once into ``cache``."""
    from tahoeflow.sources.demo import DemoParams, Design
    from tahoeflow.sources.demo_files import write_file, write_metadata

    n_design = max(8, n_files)  # the design is made for this many files; only n_files are written
    root = cache / f"seed{seed}-cells{cells}-of{n_design}"
    params = DemoParams(seed=seed, n_files=n_design, cells_per_file=cells)
    design = None
    meta = {k: root / f"{k}_metadata.parquet" for k in ("gene", "sample", "drug", "cell_line")}
    if not all(p.exists() for p in meta.values()):
        design = Design(params)
        write_metadata(
            design, {**meta, "effects": root / "effects.parquet", "params": root / "params.json"}
        )
    files = []
    for i in range(n_files):
        path = root / f"train-{i:05d}-of-{n_design:05d}.parquet"
        if not path.exists():
            design = design or Design(params)
            print(f"writing demo file {path} ...", file=sys.stderr, flush=True)
            write_file(design, i, path)
        files.append(path)
    return files, meta["gene"], meta["sample"]


# --- the code under test -----------------------------------------------------------------------
def import_impl(ref: str | None, workdir: Path):
    """The ``tahoeflow`` summary modules: the working tree's, or a git ref's copied under a new name
    (refs before the package layout of issue 15, whose modules were flat and imported relatively)."""
    if ref is None:
        from types import SimpleNamespace

        import tahoeflow.io as tio
        from tahoeflow.cells import doses, plan, summarize, vocab

        # the names the flat modules of older refs held (shards.py, summarize.py)
        shards = SimpleNamespace(
            Shard=plan.Shard, vocab_from_gene_metadata=vocab.vocab_from_gene_metadata
        )
        summ = SimpleNamespace(
            sample_doses=doses.sample_doses, load_shard=summarize.load_shard,
            Filters=summarize.Filters, summarize=summarize.summarize,
        )  # fmt: skip
        return shards, summ, tio
    name = "tahoeflow_ref_" + "".join(c if c.isalnum() else "_" for c in ref)
    pkg = workdir / name
    if not pkg.exists():
        pkg.mkdir(parents=True)
        for m in MODULES:
            text = subprocess.run(
                ["git", "show", f"{ref}:src/tahoeflow/{m}.py"],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            (pkg / f"{m}.py").write_text(text)
    sys.path.insert(0, str(workdir))
    import importlib

    return (
        importlib.import_module(f"{name}.shards"),
        importlib.import_module(f"{name}.summarize"),
        importlib.import_module(f"{name}.io"),
    )


class Step:
    """One summary job's work on one file, as workflow/scripts/summarize_shard.py does it."""

    def __init__(
        self, impl, gene_meta: Path, sample_meta: Path, outdir: Path, threads: int = 1
    ) -> None:
        import pyarrow.parquet as pq

        self.shards, self.summ, self.tio = impl
        self.kw = {} if threads == 1 else {"threads": threads}  # the job passes none
        self.vocab = self.shards.vocab_from_gene_metadata(pq.read_table(gene_meta), gene_meta)
        self.doses = self.summ.sample_doses(pq.read_table(sample_meta).to_pandas(), sample_meta)
        self.outdir = outdir
        self.parts: dict[str, float] = {}

    def __call__(self, path: Path) -> int:
        t0 = time.perf_counter()
        shard = self.shards.Shard("bench", 0, 0, None)
        loaded = self.summ.load_shard(
            path, shard, self.vocab, self.doses, self.summ.Filters(min_genes=10), **self.kw
        )
        t1 = time.perf_counter()
        cells, genes, pb = self.summ.summarize(loaded, self.vocab, **self.kw)
        t2 = time.perf_counter()
        self.tio.write_parquet(cells, self.outdir / "cells.parquet")
        self.tio.write_parquet(genes, self.outdir / "gene_stats.parquet")
        self.tio.write_parquet(pb, self.outdir / "pseudobulk.parquet")
        self.tio.write_json({"shard": shard.name, **loaded.filter_counts}, self.outdir / "qc.json")
        t3 = time.perf_counter()
        self.parts = {"load_shard": t1 - t0, "summarize": t2 - t1, "write": t3 - t2}
        return loaded.filter_counts["input"]


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(args: argparse.Namespace) -> None:
    """Fresh process: import, then the summary step on each file in turn; JSON on stdout."""
    t0 = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="bench-child-"))
    try:
        if args.child == "read_table":
            import pyarrow.parquet as pq

            t_import = time.perf_counter() - t0
            times, hwm = [], []
            for f in args.paths:
                t = time.perf_counter()
                table = pq.read_table(f)
                times.append(time.perf_counter() - t)
                del table
                hwm.append(vm_hwm_mb())
        else:
            step = Step(import_impl(args.ref, workdir), args.gene_meta, args.sample_meta, workdir)
            t_import = time.perf_counter() - t0
            times, hwm = [], []
            for f in args.paths:
                t = time.perf_counter()
                step(f)
                times.append(time.perf_counter() - t)
                hwm.append(vm_hwm_mb())
        print(json.dumps({"import_s": t_import, "times": times, "hwm_mb": hwm}))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def run_child(
    kind: str, paths: list[Path], args: argparse.Namespace, ref: str | None, env: dict | None = None
) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        kind,
        "--gene-meta",
        str(args.gene_meta),
        "--sample-meta",
        str(args.sample_meta),
    ]
    if ref:
        cmd += ["--ref", ref]
    cmd += ["--paths", *map(str, paths)]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=REPO
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# --- main ------------------------------------------------------------------------------------
def fmt_rate(cells: int, seconds: float) -> str:
    return f"{cells / seconds:,.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=3)
    ap.add_argument("--cells", type=int, default=28_000, help="cells per demo file (Tahoe: ~28k)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "tahoeflow-bench")
    ap.add_argument(
        "--ref",
        action="append",
        default=[],
        help="also time this git ref's summary code (repeatable)",
    )
    ap.add_argument(
        "--threads",
        default="1",
        help="comma-separated thread counts for load_shard and summarize, e.g. 1,2 (1: as the job declares)",
    )
    ap.add_argument("--no-memory", action="store_true", help="skip the fresh-process memory runs")
    ap.add_argument("--out", type=Path, help="append the Markdown table to this file")
    ap.add_argument(
        "--json", type=Path, help="write the figures as JSON (e.g. into benchmarks/history/)"
    )
    ap.add_argument("--label", default="", help="label of the --json record")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--paths", nargs="*", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--gene-meta", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--sample-meta", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        args.ref = args.ref[0] if args.ref else None
        return child(args)

    import pyarrow.parquet as pq

    files, args.gene_meta, args.sample_meta = demo_files(args.cache, args.files, args.cells)
    n_cells = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    nnz = sum(
        pq.ParquetFile(f).metadata.row_group(g).column(0).num_values
        for f in files
        for g in range(pq.ParquetFile(f).metadata.num_row_groups)
    )
    workdir = Path(tempfile.mkdtemp(prefix="bench-summary-"))
    try:
        impls = {}
        for t in map(int, args.threads.split(",")):
            name = "summary" if t == 1 else f"summary threads={t}"
            impls[name] = Step(
                import_impl(None, workdir), args.gene_meta, args.sample_meta, workdir / name, t
            )
        for ref in args.ref:
            impls[f"summary@{ref}"] = Step(
                import_impl(ref, workdir), args.gene_meta, args.sample_meta, workdir / ref
            )
        for step in impls.values():  # warm-up: page cache, numba's cached kernels
            step(files[0])
        baselines = {
            "read_table": lambda f: pq.read_table(f),
            "read_table use_threads=False": lambda f: pq.read_table(f, use_threads=False),
        }
        names = [*baselines, *impls]
        wall: dict[str, list[float]] = {k: [] for k in names}
        cpu: dict[str, list[float]] = {k: [] for k in names}
        parts: dict[str, dict[str, list[float]]] = {k: {} for k in impls}
        load = []
        load_before = os.getloadavg()[0]
        for r in range(args.repeats):
            order = names if r % 2 == 0 else names[::-1]
            acc = {k: [0.0, 0.0] for k in names}
            for f in files:
                for name in order:
                    t0, c0 = time.perf_counter(), time.process_time()
                    if name in baselines:
                        table = baselines[name](f)
                    else:
                        impls[name](f)
                    acc[name][0] += time.perf_counter() - t0
                    acc[name][1] += time.process_time() - c0
                    if name in baselines:
                        del table
                    else:
                        for k, v in impls[name].parts.items():
                            parts[name].setdefault(k, [0.0] * args.repeats)[r] += v
            for k in names:
                wall[k].append(acc[k][0])
                cpu[k].append(acc[k][1])
            load.append(os.getloadavg()[0])
            print(
                f"repeat {r + 1}/{args.repeats}: "
                + ", ".join(f"{k} {acc[k][0]:.2f}s (CPU {acc[k][1]:.2f}s)" for k in names),
                file=sys.stderr,
                flush=True,
            )

        nf = len(files)
        lines = [
            f"### Summary step vs `pq.read_table` ({nf} demo files x {args.cells:,} cells, "
            f"{nnz / nf / 1e6:.1f}M stored values per file, {args.repeats} repeats, "
            f"{os.cpu_count()} CPUs, load average {min(load):.1f}-{max(load):.1f})",
            "",
            "Ratio = cells/s / cells/s of `pq.read_table(path)` (goal: summary >= 0.5), from the "
            "best repeats, the median repeats and the median of the per-repeat ratios; the last "
            "column is the per-repeat median against `read_table(use_threads=False)`. "
            "CPU = process time of all threads.",
            "",
            "| step | s per file (best) | cells/s (best) | cells/s (median) "
            "| ratio best / median / per-repeat | CPU s per file (best) | ratio to 1-thread read_table |",
            "|---|---|---|---|---|---|---|",
        ]
        rt, r1 = wall["read_table"], wall["read_table use_threads=False"]
        record: dict = {
            "label": args.label,
            "git": subprocess.run(
                ["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True
            ).stdout.strip(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "command": " ".join(sys.argv),
            "files": nf,
            "cells_per_file": args.cells,
            "stored_values_per_file": nnz / nf,
            "load_average": {"before": load_before, "per_repeat": load},
            "steps": {},
        }
        for k in names:
            t, c = wall[k], cpu[k]
            best, med = min(t), statistics.median(t)
            paired = statistics.median(a / b for a, b in zip(rt, t, strict=True))
            paired1 = statistics.median(a / b for a, b in zip(r1, t, strict=True))
            ratio = f"{min(rt) / best:.2f} / {statistics.median(rt) / med:.2f} / {paired:.2f}"
            record["steps"][k] = {
                "s_per_file_best": best / nf,
                "s_per_file_median": med / nf,
                "cpu_s_per_file_best": min(c) / nf,
                "ratio_best": min(rt) / best,
                "ratio_median": statistics.median(rt) / med,
                "ratio_per_repeat_median": paired,
                "parts_s_per_file_best": {p: min(v) / nf for p, v in parts.get(k, {}).items()},
            }
            lines.append(
                f"| {k} | {best / nf:.3f} | {fmt_rate(n_cells, best)} | {fmt_rate(n_cells, med)} "
                f"| {ratio} | {min(c) / nf:.3f} | {paired1:.2f} |"
            )
        lines += ["", "| step | part | s per file (best) |", "|---|---|---|"]
        for k, p in parts.items():
            for part, v in p.items():
                lines.append(f"| {k} | {part} | {min(v) / nf:.3f} |")
        if not args.no_memory:
            lines += [
                "",
                "| fresh process | files | peak RSS after each file (MB) | import (s) | first file (s) | later files (s) |",
                "|---|---|---|---|---|---|",
            ]
            runs = [("read_table", None, {}), ("summary", None, {})]
            runs += [("summary", ref, {}) for ref in args.ref]
            for kind, ref, env in runs:
                label = kind if ref is None else f"{kind}@{ref}"
                for paths in ([files[0]], files) if len(files) > 1 else ([files[0]],):
                    res = run_child(kind, paths, args, ref, env)
                    later = (
                        f"{statistics.mean(res['times'][1:]):.2f}" if len(res["times"]) > 1 else "-"
                    )
                    hwm = ", ".join(f"{h:.0f}" for h in res["hwm_mb"])
                    lines.append(
                        f"| {label} | {len(paths)} | {hwm} | {res['import_s']:.2f} | {res['times'][0]:.2f} | {later} |"
                    )
            cold = Path(tempfile.mkdtemp(prefix="numba-cold-", dir=workdir))
            res = run_child("summary", [files[0]], args, None, {"NUMBA_CACHE_DIR": str(cold)})
            lines.append(
                f"| summary, empty numba cache (compiles) | 1 | {res['hwm_mb'][0]:.0f} | {res['import_s']:.2f} | {res['times'][0]:.2f} | - |"
            )
        text = "\n".join(lines) + "\n"
        print(text)
        if args.out:
            with open(args.out, "a") as fh:
                fh.write(text + "\n")
        if args.json:
            record["markdown"] = text
            args.json.write_text(json.dumps(record, indent=1) + "\n")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
