"""Shared helpers of the benchmark drivers (not a benchmark itself).

* :func:`demo_dataset`: a simulated dataset in the hub layout (``data/``, ``metadata/``),
  written once into a cache folder and reused (files are written atomically, so an interrupted
  run never leaves a half file; two files are written at a time).
* :func:`run_workflow`: the real workflow (``python -m snakemake``) in a fresh folder with
  ``source.kind: local`` pointing at such a dataset, timed, with a sampler of the process tree
  (peak RSS of all jobs running at once, and each job's own VmHWM).
* :func:`read_benchmarks`: the ``results/benchmarks/**/*.tsv`` files of a run.
* :func:`write_json` / :func:`stats`: result files and min/median.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CACHE = Path(os.environ.get("TAHOEFLOW_BENCH_CACHE", tempfile.gettempdir())) / (
    "tahoeflow-bench"
)
# a dry run or a workflow must never reach the hub
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}


def no_slurm_path() -> str:
    """PATH with a ``scontrol`` that fails at once in front.

    Snakemake imports every installed executor plugin when it starts, and the SLURM plugin
    runs ``scontrol show config`` at import. Where SLURM's client is installed but no
    controller answers (this machine, once the SLURM tests have run), that call blocks ~9 s in
    every Snakemake start: a property of the machine, not of the workflow. Local runs in the
    benchmarks therefore see SLURM as absent (bench_dryrun.py measures and prints the real
    call's time).
    """
    shim = Path(tempfile.gettempdir()) / "tahoeflow-bench-no-slurm"
    exe = shim / "scontrol"
    if not exe.exists():
        shim.mkdir(parents=True, exist_ok=True)
        tmp = shim / f".scontrol.{os.getpid()}"
        tmp.write_text("#!/bin/sh\nexit 1\n")
        tmp.chmod(0o755)
        os.replace(tmp, exe)
    return f"{shim}{os.pathsep}{os.environ.get('PATH', '')}"


def bench_env() -> dict[str, str]:
    """The environment of every Snakemake run of the benchmarks (offline, no SLURM probe)."""
    return {**os.environ, **OFFLINE_ENV, "PATH": no_slurm_path()}


# --- data -----------------------------------------------------------------------------------
def _write_one(params: dict, i: int, path: str) -> str:
    from tahoeflow.sources.demo import DemoParams, Design
    from tahoeflow.sources.demo_files import write_file

    write_file(Design(DemoParams(**params)), i, path)
    return path


def demo_dataset(
    cache: Path,
    n_files: int,
    cells_per_file: int,
    write: int | None = None,
    seed: int = 0,
    jobs: int = 2,
    **extra: int,
) -> Path:
    """Root of a hub-layout demo dataset of ``n_files`` files; the first ``write`` are written.

    The design (and so the names ``train-NNNNN-of-{n_files}``) depends on ``n_files``; files
    are generated on demand, so a 36-file design can serve 4-, 11- and 36-file selections.
    """
    from tahoeflow.sources.demo import DemoParams, Design
    from tahoeflow.sources.demo_files import write_metadata

    params = dict(seed=seed, n_files=n_files, cells_per_file=cells_per_file, **extra)
    tag = "-".join(f"{k}{v}" for k, v in sorted(extra.items()))
    root = cache / (
        f"hub-seed{seed}-cells{cells_per_file}-of{n_files}" + (f"-{tag}" if tag else "")
    )
    meta = {
        k: root / "metadata" / f"{k}_metadata.parquet"
        for k in ("gene", "sample", "drug", "cell_line")
    }
    if not all(p.exists() for p in meta.values()):
        write_metadata(
            Design(DemoParams(**params)),
            {
                **meta,
                "effects": root / "truth/effects.parquet",
                "params": root / "truth/params.json",
            },
        )
    todo = []
    for i in range(n_files if write is None else write):
        path = root / "data" / f"train-{i:05d}-of-{n_files:05d}.parquet"
        if not path.exists():
            todo.append((i, path))
    if todo:
        (root / "data").mkdir(parents=True, exist_ok=True)
        log(f"writing {len(todo)} demo file(s) of {cells_per_file} cells into {root} ...")
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=max(1, min(jobs, len(todo)))) as ex:
            idx, paths = [i for i, _ in todo], [str(p) for _, p in todo]
            list(ex.map(_write_one, [params] * len(todo), idx, paths))
        log(f"  done in {time.perf_counter() - t0:.0f} s")
    return root


def data_files(root: Path, n_files: int, files: range | list[int]) -> list[Path]:
    return [root / "data" / f"train-{i:05d}-of-{n_files:05d}.parquet" for i in files]


# --- running the workflow -------------------------------------------------------------------
def proc_name(cmdline: list[str]) -> str:
    """A short name of a process for reports: its first three and last two arguments."""
    if len(cmdline) <= 5:
        return " ".join(cmdline)
    return " ".join([*cmdline[:3], "...", *cmdline[-2:]])


def vm_hwm_of(pid: int) -> float:
    """VmHWM (the kernel's peak RSS) of process ``pid`` in MB; 0.0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


class TreeSampler(threading.Thread):
    """Samples the process tree under ``pid`` every ``interval`` s (the one sampler of the
    benchmarks: run_workflow here and bench_memory.py use it).

    ``root_peak_mb``: the root's own VmHWM; ``hwm``: ``{(pid, start time): (name, VmHWM MB)}``
    of every descendant (VmHWM is the peak RSS kept by the kernel, so short spikes between
    samples are not lost; read while the process is alive); ``proc_peak_mb``: the largest of
    them; ``peak_sum_mb``: the largest sum of RSS over the descendants alive at one time (the
    jobs running concurrently, without the root); ``peak_total_mb``: the same with the root.
    """

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_sum_mb = 0.0
        self.peak_total_mb = 0.0
        self.root_peak_mb = 0.0
        self.hwm: dict[tuple[int, float], tuple[str, float]] = {}
        self._halt = threading.Event()

    def sample(self, root) -> bool:
        """One sample of the tree under ``root`` (a psutil.Process); False once it is gone."""
        import psutil

        try:
            kids = root.children(recursive=True)
            root_rss = root.memory_info().rss / 2**20
            self.root_peak_mb = max(self.root_peak_mb, vm_hwm_of(self.pid))
        except psutil.Error:
            return False
        total = 0.0
        for p in kids:
            try:
                key = (p.pid, p.create_time())
                total += p.memory_info().rss / 2**20
                name = self.hwm[key][0] if key in self.hwm else proc_name(p.cmdline())
                self.hwm[key] = (name, max(self.hwm.get(key, ("", 0.0))[1], vm_hwm_of(p.pid)))
            except psutil.Error:
                continue
        self.peak_sum_mb = max(self.peak_sum_mb, total)
        self.peak_total_mb = max(self.peak_total_mb, total + root_rss)
        return True

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self._halt.is_set() and self.sample(root):
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    @property
    def proc_peak_mb(self) -> float:
        return max((v[1] for v in self.hwm.values()), default=0.0)

    @property
    def descendants_mb(self) -> float:
        """Sum of the VmHWM of every descendant (an upper bound of their sum at any one time)."""
        return sum(v[1] for v in self.hwm.values())


def workflow_config(
    root: Path,
    n_files_total: int,
    files: str,
    stages: tuple[str, ...] = ("embed",),
    **overrides: dict,
) -> dict:
    all_stages = ("embed", "models", "de", "updown", "pergene", "anndata", "report")
    cfg = {
        "source": {
            "kind": "local",
            "files": files,
            "local": {"path": str(root), "n_files_total": n_files_total},
        },
        "stages": {s: s in stages for s in all_stages},
    }
    for k, v in overrides.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return cfg


def run_workflow(
    workdir: Path,
    config: dict,
    cores: int,
    targets: list[str] | None = None,
    extra: list[str] | None = None,
    timeout: int | None = None,
) -> dict:
    """``snakemake --cores N`` in ``workdir`` (created); wall time and memory of the process tree.

    Raises ``RuntimeError`` with the tail of the output when the run fails.
    """
    import yaml

    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "bench_config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    # targets first: --quiet takes a list and would swallow them
    cmd = [sys.executable, "-m", "snakemake", *(targets or []), "-s", str(REPO / "Snakefile"),
           "-d", str(workdir), "--configfile", str(cfg), "--cores", str(cores),
           *(extra or []), "--quiet", "rules"]  # fmt: skip
    out = workdir / "snakemake.out"
    with open(out, "w") as fh:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd, cwd=workdir, stdout=fh, stderr=subprocess.STDOUT, env=bench_env()
        )
        sampler = TreeSampler(proc.pid)
        sampler.start()
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            rc = -9
        wall = time.perf_counter() - t0
        sampler.stop()
    if rc != 0:
        raise RuntimeError(f"snakemake failed ({rc}) in {workdir}:\n{out.read_text()[-4000:]}")
    jobs = read_benchmarks(workdir)
    return {
        "wall_s": wall,
        "tree_peak_sum_mb": sampler.peak_sum_mb,
        "snakemake_peak_mb": sampler.root_peak_mb,
        "job_peak_vmhwm_mb": sampler.proc_peak_mb,
        "job_peak_vmhwm_by_proc": sorted(
            ({"cmd": n, "mb": round(m, 1)} for n, m in sampler.hwm.values()),
            key=lambda d: -d["mb"],
        )[:5],
        "tsv_max_rss_mb": max(
            (j["max_rss"] for j in jobs if j["max_rss"] is not None), default=None
        ),
        "tsv_concurrent_rss_mb": concurrent_rss(jobs),
        "jobs": jobs,
    }


def run_library(root: Path, paths: list[Path], *args: str) -> dict:
    """``ours_library.py`` (the workflow's arithmetic in one process) as a fresh process, timed.

    ``root`` is a hub-layout dataset (its metadata is used); ``args`` go to the script.
    """
    meta = root / "metadata"
    cmd = [sys.executable, str(Path(__file__).resolve().parent / "ours_library.py"),
           "--gene-meta", str(meta / "gene_metadata.parquet"),
           "--sample-meta", str(meta / "sample_metadata.parquet"),
           "--paths", *map(str, paths), *args]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=bench_env())
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"ours_library.py failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"wall_s": wall, **json.loads(proc.stdout.strip().splitlines()[-1])}


def run_child(script: str | Path, *args: str) -> dict:
    """``script --child args`` in a fresh process (its own peak RSS); the JSON line it prints last."""
    proc = subprocess.run([sys.executable, str(script), "--child", *args], capture_output=True,
                          text=True, env=bench_env())  # fmt: skip
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(script).name} --child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_benchmarks(workdir: Path) -> list[dict]:
    """One dict per ``results/benchmarks/<stage>/<job>.tsv``: stage, job, s, max_rss, cpu_time, end."""
    rows = []
    for tsv in sorted((workdir / "results" / "benchmarks").glob("*/*.tsv")):
        lines = tsv.read_text().splitlines()
        if len(lines) < 2:
            continue
        head = lines[0].split("\t")
        for line in lines[1:]:
            rec = dict(zip(head, line.split("\t"), strict=False))

            def num(key: str, rec: dict = rec) -> float | None:
                try:
                    return float(rec[key])
                except (KeyError, ValueError):
                    return None

            rows.append(
                {
                    "stage": tsv.parent.name,
                    "job": tsv.stem,
                    "s": num("s"),
                    "max_rss": num("max_rss"),
                    "cpu_time": num("cpu_time"),
                    "end": tsv.stat().st_mtime,
                }
            )
    return rows


def job_kind(job: dict) -> str:
    """summarize, merge/cells, gram, pca, project, embeddings, ... (shard names dropped)."""
    if job["stage"] == "summarize":
        return "summarize"
    name = job["job"].split("_")[0] if job["stage"] == "embed" else job["job"]
    return f"{job['stage']}/{name}"


def concurrent_rss(jobs: list[dict]) -> float | None:
    """Largest sum of ``max_rss`` over jobs whose [end - s, end] intervals overlap (an upper bound)."""
    iv = [(j["end"] - (j["s"] or 0), j["end"], j["max_rss"] or 0.0) for j in jobs if j["s"]]
    if not iv:
        return None
    best = 0.0
    for start, _, _ in iv:
        best = max(best, sum(m for a, b, m in iv if a <= start < b))
    return best


# --- results --------------------------------------------------------------------------------
def stats(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "all": list(values)}


def write_json(path: Path | None, obj: dict) -> None:
    text = json.dumps(obj, indent=1, default=str)
    if path:
        Path(path).write_text(text)
    else:
        print(text)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def vm_hwm_mb() -> float:
    """Peak RSS of this process (VmHWM), MB."""
    v = vm_hwm_of(os.getpid())
    if v:
        return v
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


NOTES_OPEN, NOTES_CLOSE = "<!-- notes -->", "<!-- /notes -->"
"""RESULTS.md: a section's explanations written by hand sit between these two lines, and are
carried over when a script re-renders the section."""


def section_notes(section_lines: list[str]) -> list[str]:
    """The notes block of one section's lines (markers included, then a blank line), or []."""
    if NOTES_OPEN not in section_lines:
        return []
    i = section_lines.index(NOTES_OPEN)
    rest = section_lines[i:]
    j = i + rest.index(NOTES_CLOSE) if NOTES_CLOSE in rest else len(section_lines) - 1
    return [*section_lines[i : j + 1], ""]
