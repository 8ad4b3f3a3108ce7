"""Declared ``mem_mb`` of every rule against the measured whole-job peak RSS (issue 13).

    .venv/bin/python benchmarks/bench_memory.py --workdir DIR --json DIR/rows.json \\
        --out benchmarks/RESULTS.md

measures one job of EVERY rule of the workflow that runs a script (the rule list comes from
the workflow itself: the rules of ``Snakefile`` and ``rules/*.smk`` with a script/shell/run,
and ``snakemake --list-rules`` of every source configuration run here; a rule left unmeasured
ends the benchmark with exit 1, naming it). The data come from five source configurations:

* ``demo``: the demo with hub-sized files (4 files x 28,225 cells, every stage on; the long
  part, 30-60 min on 2 cores) for every rule of the analysis;
* ``hub``: ``download_data`` and ``download_metadata`` against a loopback fake of the hub
  (tests/hub_server.py) serving the demo's files;
* ``manifest``: the ``manifest`` rule reading the Parquet footers of 3,388 data files (Tahoe-100M's
  count; hard links of the demo's files) from the fake hub;
* ``stream``: ``stream_shard`` streaming one hub-sized chunk (28,225 rows across two files)
  from the fake hub, with the manifest built first (so it reads only the files holding its rows);
* ``h5ad``: ``prepare_h5ad`` and ``h5ad_metadata`` of ``config/examples/eccite.yaml`` on the real
  ECCITE-seq data (20,729 cells x 299 genes; ``--real``, default ``../shared/data/real``);
* ``obs``: ``download_obs_metadata`` (``phenotypes.sensitivity.from: obs``) of a simulated
  ``obs_metadata.parquet`` on the real design (``--obs-scale`` x Tahoe's 100.6M rows, default
  0.01) from the fake hub.

``--cells 2000`` makes a quick check; ``--out`` appends the Markdown table to a file (otherwise
it is printed; never written when a rule is missing); ``--workdir DIR --json rows.json`` keeps
the runs and the measurements; ``--rules a,b`` (re)measures only those rules and merges their
rows into the ``--json`` file (rules added later need no full rerun; missing outputs of the
runs are built first, existing ones are kept); ``--workdir DIR --measured rows.json`` only
re-reads the requests (after editing ``mem_mb``).

What a job is on SLURM: sbatch starts the job's batch step, a Snakemake process (executor
slurm-jobstep); that one runs ``srun ... python -m snakemake --target-jobs ...`` (a second,
inner Snakemake process, executor local) which starts the rule's script. sbatch's ``--mem``
limits the sum over all of them. Each rule's job is replayed here as that inner call,
``python -m snakemake <job output> --force --allowed-rules <rule> --cores <threads>`` (only that
job runs; its inputs are the earlier runs' outputs), with benchmarks/_common.py's TreeSampler
reading every process of the tree every 0.05 s: each process's VmHWM (the kernel's peak RSS,
so no short peak is missed) and the largest sum of RSS at one time. The whole-job figure is

    measured = sum of the VmHWM of every process of the tree (the Snakemake process, the script
               and anything it starts; an upper bound of their sum at any one time)
             + the Snakemake process's VmHWM once more (the job step's outer Snakemake: same
               Snakefile, same config, same DAG)
             + SRUN_MB (srun's own RSS)

and ``declared`` is the job's ``mem_mb`` as Snakemake evaluates it for that run (attempt 1,
printed in the job's header), so input-size formulas see the real files.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import TreeSampler, bench_env, log  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
GOAL = 1.2
SRUN_MB = 12.0  # srun + sh: the batch step's MaxRSS (Slurm 22.05) was 268 MB, its Snakemake 259 MB
POLL_S = 0.05
HUB_FILES = 3388  # data files of Tahoe-100M (the manifest reads one footer each)
REAL = REPO.parent / "shared" / "data" / "real"
SETTINGS = ("demo", "hub", "manifest", "stream", "h5ad", "obs")
# The rules each non-demo configuration measures; the demo run measures every other rule.
SOURCE_RULES = {
    "hub": ("download_data", "download_metadata"),
    "manifest": ("manifest",),
    "stream": ("stream_shard",),
    "h5ad": ("prepare_h5ad", "h5ad_metadata"),
    "obs": ("download_obs_metadata",),
}
ACTIONS = ("script", "shell", "run", "notebook", "wrapper", "cwl", "template_engine")
_RULE_HEAD = re.compile(r"^[ \t]*(?:local)?(?:rule|checkpoint)[ \t]+(\w+)[ \t]*:", re.M)
_ACTION = re.compile(rf"^[ \t]+(?:{'|'.join(ACTIONS)})[ \t]*:", re.M)


# --- the rules of the workflow -------------------------------------------------------------
def parse_rules(texts: Iterable[str]) -> dict[str, bool]:
    """``{rule: runs something}`` of Snakefile texts: a rule runs something when its block (up to
    the next rule) has a script/shell/run/notebook/wrapper/cwl directive."""
    out: dict[str, bool] = {}
    for text in texts:
        heads = list(_RULE_HEAD.finditer(text))
        for m, nxt in zip(heads, [*heads[1:], None], strict=False):
            block = text[m.end() : nxt.start() if nxt else len(text)]
            out[m.group(1)] = out.get(m.group(1), False) or bool(_ACTION.search(block))
    return out


def workflow_texts(repo: Path = REPO) -> list[str]:
    return [(repo / "Snakefile").read_text()] + [
        p.read_text() for p in sorted((repo / "rules").glob("*.smk"))
    ]


def parse_list_rules(stdout: str) -> set[str]:
    """Rule names of ``snakemake --list-rules`` (one per line; indented lines are docstrings)."""
    return {
        line.strip()
        for line in stdout.splitlines()
        if re.fullmatch(r"\w+", line.strip() or "-") and not line[:1].isspace()
    }


def required_rules(parsed: dict[str, bool], listed: set[str]) -> set[str]:
    """Every rule that runs something: the parsed ones with an action, and any rule Snakemake
    lists that the parse does not know (defined some other way: measured to be safe)."""
    return {r for r, act in parsed.items() if act} | {r for r in listed if r not in parsed}


def unmeasured(required: Iterable[str], rows: Iterable[dict]) -> list[str]:
    done = {r["rule"] for r in rows}
    return sorted(set(required) - done)


def setting_of(rule: str) -> str:
    return next((s for s, rules in SOURCE_RULES.items() if rule in rules), "demo")


# --- running Snakemake ---------------------------------------------------------------------
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


def size_bytes(path: Path) -> int:
    """Bytes of a file, or of every file below a folder (0 when missing)."""
    if path.is_dir():
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return path.stat().st_size if path.is_file() else 0


def parse_dry_run(stdout: str, wd: Path, skip: Iterable[str] = ()) -> list[dict]:
    """Every job of a dry run: rule, first output, threads, declared mem_mb, MB of input."""
    skip = set(skip)
    jobs = []
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) \w+:\n)", "\n" + stdout):
        m = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):\n", block)
        if not m or m.group(1) in skip:
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
                "input_mb": sum(map(size_bytes, paths)) / 2**20,
                "local": block.startswith("localrule"),
            }
        )
    return jobs


def parse_declared(stdout: str) -> int | None:
    """The mem_mb of the (one) job of a dry run."""
    m = re.search(r"^\s+resources: .*\bmem_mb=(\d+)", stdout, re.M)
    return int(m.group(1)) if m else None


def one_per_rule(jobs: list[dict], wanted: set[str]) -> list[dict]:
    """The first job of each wanted rule (all jobs of a rule read inputs of one size)."""
    picked, seen = [], set()
    for job in jobs:
        if job["rule"] in wanted and job["rule"] not in seen:
            seen.add(job["rule"])
            picked.append(job)
    return picked


def job_cmd(wd: Path, cfg: Path, job: dict, *args: str) -> list[str]:
    """The job alone, as the job step's inner Snakemake runs it (temp() outputs kept)."""
    return snakemake(wd, cfg, "--force", "--allowed-rules", job["rule"], "--notemp", "--nolock", "--cores",
                     str(job["threads"]), *args, targets=[job["output"]])  # fmt: skip


def declared_mb(wd: Path, cfg: Path, env: dict, job: dict) -> int:
    """The job's mem_mb as Snakemake evaluates it now (dry run of the job; its inputs exist)."""
    proc = subprocess.run(job_cmd(wd, cfg, job, "-n"), cwd=wd, env=env, capture_output=True,
                          text=True)  # fmt: skip
    mem = parse_declared(proc.stdout)
    if proc.returncode != 0 or mem is None:
        raise RuntimeError(
            f"no mem_mb for {job['rule']}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    return mem


def whole_job_mb(snakemake_mb: float, others_mb: float) -> float:
    """The job as sbatch counts it: two Snakemake processes, the rest of the tree, srun."""
    return 2 * snakemake_mb + others_mb + SRUN_MB


def measure_job(wd: Path, cfg: Path, env: dict, job: dict) -> dict:
    cmd = job_cmd(wd, cfg, job)
    out = wd / f"measure_{job['rule']}.out"
    t0 = time.perf_counter()
    with open(out, "w") as fh:
        proc = subprocess.Popen(cmd, cwd=wd, env=env, stdout=fh, stderr=subprocess.STDOUT)
        sampler = TreeSampler(proc.pid, interval=POLL_S)
        sampler.start()
        rc = proc.wait()
        sampler.stop()
    if rc != 0:
        raise RuntimeError(f"{job['rule']} failed ({rc}):\n{out.read_text()[-4000:]}")
    smk, rest = sampler.root_peak_mb, sampler.descendants_mb
    return {
        **job,
        "snakemake_mb": smk,
        "script_mb": rest,
        "tree_sum_mb": sampler.peak_total_mb,
        "processes": sorted(((n, round(m)) for n, m in sampler.hwm.values()), key=lambda x: -x[1]),
        "measured": whole_job_mb(smk, rest),
        "wall_s": time.perf_counter() - t0,
        "measured_at": datetime.now(UTC).replace(microsecond=0).isoformat(),
        "wd": str(wd),
        "cfg": str(cfg),
    }


# --- the five source configurations --------------------------------------------------------
@dataclass
class Setting:
    name: str
    wd: Path
    config: dict
    targets: list[str] = field(default_factory=list)  # of the plan ([]: the default target)
    env: dict = field(default_factory=bench_env)
    note: str = ""

    @property
    def cfg(self) -> Path:
        return self.wd / "config.yaml"

    def write(self) -> None:
        self.wd.mkdir(parents=True, exist_ok=True)
        self.cfg.write_text(yaml.safe_dump(self.config))

    def list_rules(self) -> set[str]:
        proc = subprocess.run(snakemake(self.wd, self.cfg, "--list-rules"), cwd=self.wd,
                              env=self.env, capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(
                f"--list-rules of {self.name}:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
            )
        return parse_list_rules(proc.stdout)

    def build(self, *targets: str, what: str = "build") -> None:
        """Make what is missing (existing outputs are kept: only mtime triggers a rerun)."""
        run(snakemake(self.wd, self.cfg, "--cores", "2", "--notemp", "--rerun-triggers", "mtime",
                      "--quiet", "rules", targets=list(targets)),
            self.wd, self.env, self.wd / f"{what}.out")  # fmt: skip

    def plan(self, skip: Iterable[str]) -> list[dict]:
        """Every job of a forced dry run of the setting's targets."""
        proc = subprocess.run(
            snakemake(self.wd, self.cfg, "--forceall", "-n", "--cores", "2", targets=self.targets),
            cwd=self.wd, env=self.env, capture_output=True, text=True,
        )  # fmt: skip
        if proc.returncode != 0:
            raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
        return parse_dry_run(proc.stdout, self.wd, skip)


def all_stages() -> dict[str, bool]:
    schema = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
    return {k: True for k in schema["properties"]["stages"]["properties"]}


def hub_env(env: dict, base: Path, url: str) -> dict:
    drop = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE")
    return {
        **{k: v for k, v in env.items() if k not in drop},
        "HF_ENDPOINT": url,
        "HF_HUB_OFFLINE": "0",
        "HF_DATASETS_OFFLINE": "0",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": str(base / "hf_home"),
        "HF_DATASETS_CACHE": str(base / "ds_cache"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }


def link_repo(root: Path, demo_root: Path, n_total: int, n_files: int, metadata: bool) -> None:
    """A fake hub repo of ``n_total`` data files: hard links of the demo's ``n_files`` files in
    turn (same bytes, no copies)."""
    sources = [
        demo_root / "data" / f"train-{i:05d}-of-{n_files:05d}.parquet" for i in range(n_files)
    ]
    (root / "data").mkdir(parents=True, exist_ok=True)
    for i in range(n_total):
        dst = root / "data" / f"train-{i:05d}-of-{n_total:05d}.parquet"
        if not dst.exists():
            os.link(sources[i % n_files], dst)
    if metadata:
        (root / "metadata").mkdir(exist_ok=True)
        for src in sorted((demo_root / "metadata").glob("*.parquet")):
            if not (root / "metadata" / src.name).exists():
                os.link(src, root / "metadata" / src.name)


@contextlib.contextmanager
def fake_hub(root: Path, api: bool) -> Iterator[object]:
    """The loopback fake hub serving ``root``; the sha256 of hard-linked files is computed once
    per inode (the fake hub hashes every listed file, 3,388 x 78 MB otherwise)."""
    sys.path.insert(0, str(REPO / "tests"))
    from hub_server import FakeHub

    server = FakeHub(root, api=api)
    digests: dict[tuple[int, int], str] = {}
    for p in sorted(root.rglob("*.parquet")):
        st = p.stat()
        if (st.st_dev, st.st_ino) not in digests:
            with open(p, "rb") as fh:
                digests[(st.st_dev, st.st_ino)] = hashlib.file_digest(fh, "sha256").hexdigest()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        server._sha_cache[key] = digests[(st.st_dev, st.st_ino)]  # its own cache, pre-filled
    server.start()
    try:
        yield server
    finally:
        server.stop()


def settings_for(
    base: Path, files: int, cells: int, real: Path, manifest_files: int, obs_scale: float = 0.01
) -> dict[str, Setting]:
    sys.path.insert(0, str(REPO / "tests"))
    from hub_server import FAKE_COMMIT

    from tahoeflow.sources.stream import chunk_path

    hub = {"revision": FAKE_COMMIT, "timeout_s": 60}
    start = cells // 2 if files > 1 else 0
    n = min(cells, files * cells - start)
    eccite = yaml.safe_load((REPO / "config" / "examples" / "eccite.yaml").read_text())
    eccite["source"]["h5ad"]["prepare"]["input"] = str(real / "papalexi_eccite")
    out = [
        Setting(
            "demo", base / "demo",
            {"source": {"kind": "demo", "files": f"0:{files}", "cells_per_shard": None},
             "demo": {"n_files": files, "cells_per_file": cells}, "stages": all_stages(),
             "merge": {"fan_in": 2}},  # partial merges exist (merge_part_*): measured too
            note=f"{files} demo files x {cells:,} cells, every stage on, merges hierarchical "
            "(merge.fan_in 2), default config otherwise",
        ),
        Setting(
            "hub", base / "hub",
            {"source": {"kind": "hub", "files": "0:1", "hub": {**hub, "n_files_total": files}}},
            targets=["download_all"],
            note=f"one {cells:,}-cell data file and the four metadata tables from the loopback "
            "fake hub (tests/hub_server.py)",
        ),
        Setting(
            "manifest", base / "manifest",
            {"source": {"kind": "hub", "files": "0:1",
                        "hub": {**hub, "n_files_total": manifest_files}}},
            targets=["manifest"],
            note=f"the footers of {manifest_files:,} data files (hard links of the {cells:,}-cell "
            "demo files; 3,388 is Tahoe-100M's count) read from the fake hub",
        ),
        Setting(
            "stream", base / "stream",
            {"source": {"kind": "stream", "cells_per_shard": None,
                        "stream": {"start": start, "n_cells": n},
                        "hub": {**hub, "n_files_total": files}}},
            targets=[chunk_path(FAKE_COMMIT, start, start + n)],
            note=f"one chunk of {n:,} rows (global rows {start:,}-{start + n:,}) streamed from the "
            "fake hub, the manifest built first",
        ),
        Setting(
            "h5ad", base / "h5ad", eccite,
            targets=["results/h5ad/metadata/gene_metadata.parquet"],
            note="config/examples/eccite.yaml: the real ECCITE-seq data (20,729 cells x 299 "
            "genes) prepared into an h5ad",
        ),
        Setting(
            "obs", base / "obs",
            {"source": {"kind": "hub", "files": "0:1", "hub": {**hub, "n_files_total": files}},
             "phenotypes": {"sensitivity": {"from": "obs"}}},
            targets=[f"resources/hub/{FAKE_COMMIT}/metadata/obs_metadata.parquet"],
            note=f"a simulated obs_metadata.parquet on the real design ({obs_scale:g} x Tahoe's "
            "100.6M rows; the download streams to disk, so its memory does not grow with the "
            "file) from the fake hub",
        ),
    ]  # fmt: skip
    return {s.name: s for s in out}


def demo_data_targets(files: int) -> list[str]:
    root = "results/demo"
    kinds = ("gene", "sample", "drug", "cell_line")
    return [f"{root}/data/train-{i:05d}-of-{files:05d}.parquet" for i in range(files)] + [
        f"{root}/metadata/{k}_metadata.parquet" for k in kinds
    ]


def measure_setting(
    s: Setting, settings: dict[str, Setting], wanted: set[str], skip: set[str], args
) -> list[dict]:
    """Build what the setting's jobs read, then measure one job of each wanted rule."""
    demo = settings["demo"]
    if s.name == "demo":
        if not args.reuse:
            log(f"demo run in {s.wd} ({args.files} files x {args.cells} cells, all stages) ...")
            s.build(what="full")
        sizes = sorted((s.wd / "results" / "demo" / "data").glob("*.parquet"))
        s.note += (
            f" (data files of {', '.join(f'{p.stat().st_size / 2**20:.1f}' for p in sizes)} MB)"
        )
        return measure_plan(s, wanted, skip)
    if s.name == "h5ad":
        if not (args.real / "papalexi_eccite").is_dir():
            raise RuntimeError(f"the real ECCITE-seq data are not at {args.real}/papalexi_eccite "
                               "(--real DIR): prepare_h5ad and h5ad_metadata cannot be measured")  # fmt: skip
        s.build(*s.targets)
        return measure_plan(s, wanted, skip)
    # hub, manifest, stream, obs: the fake hub serves (hard links of) the demo's files
    demo.build(*demo_data_targets(args.files), what="data")
    n_total = args.manifest_files if s.name == "manifest" else args.files
    root = s.wd.parent / f"{s.name}_repo"
    link_repo(root, demo.wd / "results" / "demo", n_total, args.files, s.name != "manifest")
    if s.name == "obs":
        simulated_obs(root / "metadata" / "obs_metadata.parquet", args.obs_scale)
    with fake_hub(root, api=s.name in ("manifest", "stream")) as server:
        s.env = hub_env(bench_env(), s.wd, server.url)
        if s.name == "hub":
            s.build("download_all", what="download")
        if s.name == "stream":
            s.build("manifest", what="manifest")
        return measure_plan(s, wanted, skip)


def simulated_obs(path: Path, scale: float) -> None:
    """Tahoe's obs_metadata.parquet simulated on the real design (tahoeflow.phenotypes.obs)."""
    import pandas as pd

    from tahoeflow.phenotypes.obs import design_counts, write_simulated_obs

    if path.exists():
        return
    meta = REPO / "resources" / "tahoe_metadata"
    design = design_counts(
        pd.read_parquet(meta / "obs_cell_grid.parquet"),
        pd.read_parquet(meta / "sample_metadata.parquet"),
        pd.read_parquet(meta / "cell_line_metadata.parquet"),
        scale=scale,
    )
    tmp = path.with_name(path.name + ".tmp")
    write_simulated_obs(design, tmp)
    os.replace(tmp, path)


def measure_plan(s: Setting, wanted: set[str], skip: set[str]) -> list[dict]:
    rows = []
    for job in one_per_rule(s.plan(skip), wanted):
        try:
            r = {**measure_job(s.wd, s.cfg, s.env, job), "setting": s.name, "note": s.note}
        except RuntimeError as e:  # the others are still measured; the rule is named at the end
            log(f"ERROR: {e}")
            continue
        log(f"  {r['rule']:24s} measured {r['measured']:7.0f} (snakemake "
            f"{r['snakemake_mb']:.0f}, script {r['script_mb']:.0f})  {r['wall_s']:.0f} s")  # fmt: skip
        rows.append(r)
    return rows


def merge_rows(old: list[dict], new: list[dict]) -> list[dict]:
    """``old`` with the rows of the rules in ``new`` replaced in place (new rules appended)."""
    by_rule = {r["rule"]: r for r in new}
    merged = [by_rule.pop(r["rule"], r) for r in old]
    return merged + [r for r in new if r["rule"] in by_rule]


def add_ratios(rows: list[dict]) -> None:
    for r in rows:
        r["ratio"] = r["declared"] / r["measured"]


def table(rows: list[dict], head: str) -> str:
    lines = [
        head,
        "",
        "| rule | setting | job measured | input MB | declared mem_mb | Snakemake process MB | "
        "script MB | measured whole job MB | declared / measured | goal >= 1.2 met? |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        met = "yes" if r["ratio"] >= GOAL else "**no**"
        lines.append(
            f"| {r['rule']}{' (local)' if r['local'] else ''} | {r.get('setting', 'demo')} | "
            f"`{r['output']}` | {r['input_mb']:,.1f} | {r['declared']:,} | "
            f"{r['snakemake_mb']:,.0f} | {r['script_mb']:,.0f} | {r['measured']:,.0f} | "
            f"{r['ratio']:.2f} | {met} |"
        )
    return "\n".join(lines) + "\n"


def summary(rows: list[dict]) -> str:
    low = min(rows, key=lambda r: r["ratio"])
    return (
        f"Goal: declared >= {GOAL} x measured for every rule; met by "
        f"{sum(r['ratio'] >= GOAL for r in rows)} of {len(rows)}, lowest ratio "
        f"{low['ratio']:.2f} ({low['rule']})."
    )


def header(rows: list[dict], args, when: str, load0: float) -> str:
    notes: dict[str, str] = {}
    for r in rows:
        notes.setdefault(r.get("setting", "demo"), r.get("note", ""))
    opts = "".join(
        f" --{k.replace('_', '-')} {v}"
        for k, v, dflt in (
            ("files", args.files, 4),
            ("cells", args.cells, 28225),
            ("manifest_files", args.manifest_files, HUB_FILES),
            ("obs_scale", args.obs_scale, 0.01),
        )  # fmt: skip
        if v != dflt
    )
    settings = "\n".join(
        f"- `{k}`: {v}"
        for k, v in sorted(
            notes.items(), key=lambda kv: SETTINGS.index(kv[0]) if kv[0] in SETTINGS else 99
        )
    )
    return (
        f"*{when}; load average {load0:.1f} before, {os.getloadavg()[0]:.1f} after; "
        f"{os.cpu_count()} CPUs, python {platform.python_version()}.* Command: "
        f"`.venv/bin/python benchmarks/bench_memory.py{opts} --workdir DIR --json DIR/rows.json "
        f"--out benchmarks/RESULTS.md`\n\n"
        f"Every rule of the workflow that runs a script, one job each, from these runs (the "
        f"`setting` column):\n\n{settings}\n\n"
        f"Whole job = VmHWM of the Snakemake process x 2 (the job step's and the inner one srun "
        f"starts) + VmHWM of every other process of the job (script, workers) + srun "
        f"({SRUN_MB:.0f} MB). {summary(rows)}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--cells", type=int, default=28225, help="cells per demo file (hub: 28,225)")
    ap.add_argument("--manifest-files", type=int, default=HUB_FILES,
                    help="data files whose footers the manifest reads (Tahoe-100M: 3,388)")  # fmt: skip
    ap.add_argument("--real", type=Path, default=REAL, help="folder of the real data sets")
    ap.add_argument("--obs-scale", type=float, default=0.01,
                    help="simulated obs_metadata rows, as a fraction of Tahoe's 100.6M")  # fmt: skip
    ap.add_argument("--workdir", type=Path, help="keep the runs here (default: a temp folder)")
    ap.add_argument("--rules", help="comma-separated rules: measure only these, merged into --json")
    ap.add_argument("--out", type=Path, help="append the Markdown section to this file")
    ap.add_argument("--json", type=Path, help="write the measured rows to this JSON file")
    ap.add_argument("--reuse", action="store_true", help="skip the demo run (--workdir has one)")
    ap.add_argument(
        "--measured", type=Path, help="rows of an earlier --json: only re-read the requests"
    )
    args = ap.parse_args(argv)
    if args.rules and not args.json:
        ap.error("--rules merges into the rows of --json FILE: give --json")

    started = datetime.now(UTC).replace(microsecond=0)
    t_start = time.perf_counter()
    load0 = os.getloadavg()[0]
    base = args.workdir or Path(tempfile.mkdtemp(prefix="bench-memory-"))
    settings = settings_for(
        base, args.files, args.cells, args.real, args.manifest_files, args.obs_scale
    )
    for s in settings.values():
        s.write()
    parsed = parse_rules(workflow_texts())
    listed = set().union(*(s.list_rules() for s in settings.values()))
    required = required_rules(parsed, listed)
    skip = {r for r, act in parsed.items() if not act}
    log(f"{len(required)} rules run a script: {', '.join(sorted(required))}")

    if args.measured:
        rows = json.loads(args.measured.read_text())
    else:
        wanted = set(required)
        if args.rules:
            wanted = {r.strip() for r in args.rules.split(",") if r.strip()}
            unknown = sorted(wanted - required)
            if unknown:
                ap.error(f"--rules: no rule of the workflow runs {', '.join(unknown)} "
                         f"(rules: {', '.join(sorted(required))})")  # fmt: skip
        old = json.loads(args.json.read_text()) if args.rules and args.json.exists() else []
        rows = []
        for name in SETTINGS:
            mine = {r for r in wanted if setting_of(r) == name}
            if not mine:
                continue
            t0 = time.perf_counter()
            log(f"{name}: {', '.join(sorted(mine))}")
            try:
                rows += measure_setting(settings[name], settings, mine, skip, args)
            except RuntimeError as e:  # named at the end as unmeasured
                log(f"ERROR: the {name} runs failed: {e}")
            log(f"  {name} done in {time.perf_counter() - t0:.0f} s")
            if args.json:  # after each setting: a failed run can go on with --rules
                args.json.write_text(json.dumps(merge_rows(old, rows), indent=1))
        rows = merge_rows(old, rows)
    if not rows:
        log("ERROR: nothing measured")
        return 1
    # the requests, as Snakemake evaluates them with every input there
    env = bench_env()
    for r in rows:
        r["declared"] = declared_mb(Path(r["wd"]), Path(r["cfg"]), env, r)
    add_ratios(rows)
    for r in rows:
        log(f"  {r['rule']:24s} declared {r['declared']:6d}  measured {r['measured']:7.0f}  "
            f"ratio {r['ratio']:.2f}")  # fmt: skip

    when = (
        f"requests evaluated {started.isoformat()} over the measurements of an earlier run "
        f"(`--json`, then `--measured`)"
        if args.measured
        else f"{'rules ' + args.rules + ' remeasured and merged' if args.rules else 'full run'}, "
        f"{started.isoformat()}, {time.perf_counter() - t_start:.0f} s"
    )
    text = table(rows, header(rows, args, when, load0))
    print(text)
    missing = unmeasured(required, rows)
    if missing:
        log(f"ERROR: {len(missing)} rule(s) of the workflow not measured: {', '.join(missing)} "
            f"(measure them with --rules {','.join(missing)} --json FILE)")  # fmt: skip
        return 1
    if args.out:
        with open(args.out, "a") as fh:
            fh.write("\n## P8 - memory requests against whole-job peaks (SLURM)\n\n" + text)
        log(f"appended to {args.out}")
    log(f"total {time.perf_counter() - t_start:.0f} s")
    if not args.workdir:
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
