"""The demo workflow through a real single-node SLURM cluster (sbatch via the slurm executor).

The module fixture starts munge, MariaDB, slurmdbd, slurmctld and slurmd with ci/slurm-up.sh
(installing the Debian packages if needed) and stops them with ci/slurm-down.sh. The cluster
enforces memory (task/cgroup where memory cgroups work, else OverMemoryKill; see the script).
The tests run the demo at test size with the SLURM profile and compare every output with a local
run of the same config; check that a job over its --mem is killed; and run the summary job of a
hub-sized file (28,225 cells) with the memory its rule declares. Skipped only when not root or
when neither the packages nor apt-get are there; with $CI set they fail instead of skipping.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import REPO, SMALL_STAGES, config_with, copy_repo, write_demo

from tahoeflow.sources.demo import DemoParams

pytestmark = pytest.mark.slurm

UP_LIMIT_S = 300
RUN_LIMIT_S = 540
SLURM_PACKAGES = ("munge", "slurmctld", "slurmd", "slurm-client", "slurmdbd", "mariadb-server")
BASE_CONFIG = {
    "source": {"kind": "demo", "files": "0:2", "cells_per_shard": None},
    "demo": {"n_files": 2, "cells_per_file": 500},
}
# outputs that are not compared: figures, logs, timings, pickled models
SKIP_DIRS = ("results/logs/", "results/benchmarks/")
SKIP_SUFFIXES = (".png", ".svg", ".pdf", ".html", ".joblib", ".log")
SBATCH = ["-p", "debug", "-A", "ci", "-t", "2"]
HUB_CELLS = 28225  # cells of one Tahoe-100M file
MEM_GOAL = 1.2  # declared mem_mb over the job's measured peak (benchmarks/bench_memory.py)


def small_config() -> dict:
    return config_with(SMALL_STAGES, BASE_CONFIG)


def _unavailable(reason: str):
    if os.environ.get("CI"):
        pytest.fail(f"SLURM test cannot run in CI: {reason}")
    pytest.skip(reason)


def _installed(pkg: str) -> bool:
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
    return proc.returncode == 0 and "install ok installed" in proc.stdout


@pytest.fixture(scope="module")
def slurm_cluster():
    if os.geteuid() != 0:
        _unavailable("needs root to install and start SLURM (ci/slurm-up.sh)")
    have_dpkg = shutil.which("dpkg-query") is not None
    if not (have_dpkg and all(_installed(p) for p in SLURM_PACKAGES)) and not shutil.which(
        "apt-get"
    ):
        _unavailable("SLURM packages are not installed and apt-get is not available")
    t0 = time.perf_counter()
    up = subprocess.run(
        ["timeout", "-k", "10", str(UP_LIMIT_S), "bash", str(REPO / "ci" / "slurm-up.sh")],
        capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    if up.returncode != 0:
        pytest.fail(
            f"ci/slurm-up.sh failed ({up.returncode}):\n{up.stdout[-3000:]}\n{up.stderr[-5000:]}"
        )
    print(f"slurm-up: {time.perf_counter() - t0:.1f} s")
    try:
        yield
    finally:
        down = subprocess.run(
            ["timeout", "-k", "10", "120", "bash", str(REPO / "ci" / "slurm-down.sh")],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        print(down.stderr)


def snakemake_cmd(snakefile: Path, workdir: Path, cfg_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir),
            "--configfile", str(cfg_path), *args]  # fmt: skip


def compare_outputs(a: Path, b: Path) -> list[str]:
    """Differences between two results/ trees: Parquet by table content, text exactly."""

    def files(root: Path) -> set[str]:
        out = set()
        for p in (root / "results").rglob("*"):
            rel = p.relative_to(root).as_posix()
            if p.is_file() and not rel.startswith(SKIP_DIRS) and not rel.endswith(SKIP_SUFFIXES):
                out.add(rel)
        return out

    fa, fb = files(a), files(b)
    problems = [f"only in {a.name}: {x}" for x in sorted(fa - fb)] + [
        f"only in {b.name}: {x}" for x in sorted(fb - fa)
    ]
    for rel in sorted(fa & fb):
        pa_, pb_ = a / rel, b / rel
        if rel.endswith(".parquet"):
            same = pq.read_table(pa_).equals(pq.read_table(pb_))
        elif rel.endswith(".npz"):
            with np.load(pa_, allow_pickle=False) as xa, np.load(pb_, allow_pickle=False) as xb:
                same = set(xa.files) == set(xb.files) and all(
                    np.array_equal(xa[k], xb[k]) for k in xa.files
                )
        elif rel.endswith(".json"):
            same = json.loads(pa_.read_text()) == json.loads(pb_.read_text())
        else:
            same = pa_.read_bytes() == pb_.read_bytes()  # CSV, TSV, text
        if not same:
            problems.append(f"differs: {rel}")
    assert fa, f"no outputs under {a}/results"
    return problems


def test_demo_workflow_runs_through_sbatch_and_matches_local(slurm_cluster, tmp_path):
    cfg = small_config()
    cfg_path = tmp_path / "test_config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    started = datetime.now().strftime("%Y-%m-%dT%H:%M:%S")
    repo = copy_repo(tmp_path / "repo")
    snakefile = repo / "Snakefile"

    # the local reference run goes alongside (the SLURM run mostly waits on polling)
    local_wd = tmp_path / "local"
    local_wd.mkdir()
    local = subprocess.Popen(
        ["timeout", "-k", "30", str(RUN_LIMIT_S), *snakemake_cmd(snakefile, local_wd, cfg_path, "--cores", "2")],
        cwd=local_wd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip

    slurm_wd = tmp_path / "slurm"
    slurm_wd.mkdir()
    t0 = time.perf_counter()
    cmd = [
        "timeout", "-k", "30", str(RUN_LIMIT_S),
        *snakemake_cmd(
            snakefile, slurm_wd, cfg_path,
            "--workflow-profile", str(repo / "profiles" / "slurm"),
            "--jobs", "4",
            "--default-resources", "slurm_partition=debug", "slurm_account=ci", "runtime=5", "mem_mb=500",
            "--slurm-init-seconds-before-status-checks", "2",
            "--latency-wait", "10",
            "--retries", "0",
        ),
    ]  # fmt: skip
    run = subprocess.run(
        cmd, cwd=slurm_wd, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    slurm_s = time.perf_counter() - t0
    local_out, _ = local.communicate(timeout=RUN_LIMIT_S + 60)
    log = run.stdout + run.stderr
    print(f"SLURM run: {slurm_s:.1f} s")
    assert run.returncode == 0, f"SLURM run failed ({run.returncode}):\n{log[-8000:]}"
    assert local.returncode == 0, f"local run failed ({local.returncode}):\n{local_out[-6000:]}"

    # which jobs were submitted, from Snakemake's own log
    m = re.search(r"SLURM run ID: (\S+)", log)
    assert m, log[-3000:]
    run_uuid = m.group(1)
    remote = re.findall(r"^rule (\w+):$", log, re.M)  # "localrule X:" for jobs run on the host
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", log)
    assert remote and len(submitted) == len(remote), (remote, submitted)
    assert "summarize_shard" in remote and remote.count("summarize_shard") == 2

    # and what SLURM's accounting says about them
    sacct = subprocess.run(
        ["sacct", "-X", "-n", "-P", "--format=JobID,JobName,State", "-S", started, "--name", run_uuid],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert sacct.returncode == 0, sacct.stderr
    rows = [line.split("|") for line in sacct.stdout.splitlines() if line.strip()]
    states = {job_id: state for job_id, _, state in rows}
    assert len(rows) >= len(remote), sacct.stdout
    assert set(submitted) <= set(states), (submitted, sacct.stdout)
    assert all(states[j] == "COMPLETED" for j in submitted), sacct.stdout

    problems = compare_outputs(slurm_wd, local_wd)
    assert not problems, problems


def test_slurm_profile_is_valid_and_takes_command_line_overrides(tmp_path):
    """No cluster needed: the profile parses, selects the slurm executor and lets the command
    line set partition, account and the status-check delay (a dry run never calls sbatch)."""
    prof = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    assert prof["executor"] == "slurm" and prof["jobs"] >= 1 and prof["rerun-incomplete"] is True
    assert {"runtime", "mem_mb"} <= set(prof["default-resources"])
    cfg_path = tmp_path / "test_config.yaml"
    cfg_path.write_text(yaml.safe_dump(small_config()))
    cmd = snakemake_cmd(
        REPO / "Snakefile", tmp_path, cfg_path,
        "--workflow-profile", str(REPO / "profiles" / "slurm"),
        "--default-resources", "slurm_partition=debug", "slurm_account=ci", "runtime=5", "mem_mb=500",
        "--slurm-init-seconds-before-status-checks", "2",
        "--dry-run",
    )  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert f"profile {REPO / 'profiles' / 'slurm'}" in out
    resources = re.findall(r"^\s+resources: (.*)$", proc.stdout, re.M)
    assert resources and all(
        "slurm_partition=debug" in r and "slurm_account=ci" in r for r in resources
    )


def sacct_rows(job_id: str) -> dict[str, dict[str, str]]:
    """sacct's rows of a job and its steps (``<id>``, ``<id>.batch``, ``<id>.0`` ...) by JobID."""
    fields = ["JobID", "State", "ExitCode", "ReqMem", "MaxRSS"]
    proc = subprocess.run(
        ["sacct", "-j", job_id, "-n", "-P", f"--format={','.join(fields)}"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return {
        row[0]: dict(zip(fields, row, strict=True))
        for row in (line.split("|") for line in proc.stdout.splitlines() if line.strip())
    }


def mb(value: str) -> float:
    """sacct's memory figures (``1200M``, ``912345K``, ``1.5G``, ``0``) in MB."""
    if not value:
        return 0.0
    scale = {"K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0**2}
    unit = value[-1].upper()
    return float(value[:-1]) * scale[unit] if unit in scale else float(value) / 2**20


def finished(job_id: str, wait_s: float = 30) -> dict[str, dict[str, str]]:
    """sacct's rows once the job's accounting shows a final state (slurmdbd lags a little)."""
    deadline = time.monotonic() + wait_s
    while True:
        rows = sacct_rows(job_id)
        state = rows.get(job_id, {}).get("State", "")
        if state and state not in ("PENDING", "RUNNING", "COMPLETING"):
            return rows
        assert time.monotonic() < deadline, rows
        time.sleep(1)


def enforcement() -> str:
    return Path("/run/tahoeflow-slurm/mem_enforce").read_text().strip()


def test_job_over_its_memory_request_is_killed(slurm_cluster, tmp_path):
    """Two jobs touch 400 MB: with --mem=150 it is killed (OUT_OF_MEMORY), with --mem=700 it
    completes. Without enforcement (the cluster before, TaskPlugin=task/none) both complete."""
    script = tmp_path / "alloc.py"
    script.write_text(
        "import sys, time\n"
        "block = b'\\x01' * (int(sys.argv[1]) << 20)  # written, so resident\n"
        "time.sleep(3)\n"
        "print('survived', len(block))\n"
    )
    jobs = {}
    for name, mem in (("over", 150), ("under", 700)):
        jobs[name] = subprocess.Popen(
            ["sbatch", "--wait", "--parsable", *SBATCH, f"--mem={mem}", "-J", f"mem-{name}",
             "-o", str(tmp_path / f"{name}.out"), "--wrap", f"{sys.executable} {script} 400"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
    out = {}
    for name, proc in jobs.items():
        stdout, stderr = proc.communicate(timeout=120)
        job_id = stdout.strip().split(";")[0]
        assert job_id.isdigit(), (stdout, stderr)
        out[name] = (proc.returncode, finished(job_id)[job_id], tmp_path / f"{name}.out")
    method = enforcement()
    rc, row, log = out["under"]
    assert rc == 0 and row["State"] == "COMPLETED", (method, row, log.read_text())
    assert "survived" in log.read_text()
    rc, row, log = out["over"]
    assert rc != 0 and row["State"] == "OUT_OF_MEMORY", (method, row, log.read_text())
    assert "survived" not in log.read_text()


def test_hub_sized_summary_fits_its_memory_request(slurm_cluster, tmp_path):
    """The summary job of one hub-sized file (28,225 cells) through sbatch with the mem_mb its
    rule declares, on a cluster that enforces it: it completes, and what SLURM measured for the
    whole job (the batch step's Snakemake plus the srun step's Snakemake and script) stays
    under the request with the stated margin."""
    root = tmp_path / "mirror"
    write_demo(root, DemoParams(seed=0, n_files=1, cells_per_file=HUB_CELLS))
    cfg = config_with(
        {},
        {
            "source": {
                "kind": "local",
                "files": "0:1",
                "cells_per_shard": None,
                "local": {"path": str(root), "n_files_total": 1},
            }
        },
    )
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    repo = copy_repo(tmp_path / "repo")
    wd = tmp_path / "run"
    wd.mkdir()
    cmd = [
        "timeout", "-k", "30", "300",
        *snakemake_cmd(
            repo / "Snakefile", wd, cfg_path,
            "--workflow-profile", str(repo / "profiles" / "slurm"),
            "--default-resources", "slurm_partition=debug", "slurm_account=ci", "runtime=5", "mem_mb=500",
            "--slurm-init-seconds-before-status-checks", "2",
            "--latency-wait", "10",
            "--retries", "0",
        ),
    ]  # fmt: skip
    # the target first: --configfile takes a list and would swallow it
    cmd[cmd.index("snakemake") + 1 : cmd.index("snakemake") + 1] = ["results/shards/00000/qc.json"]
    t0 = time.perf_counter()
    run = subprocess.run(
        cmd, cwd=wd, capture_output=True, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    log = run.stdout + run.stderr
    print(f"hub-sized summary through SLURM: {time.perf_counter() - t0:.1f} s")
    assert run.returncode == 0, f"SLURM run failed ({run.returncode}):\n{log[-8000:]}"
    submitted = re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+)", log)
    assert len(submitted) == 1, log[-3000:]
    job_id = submitted[0]
    rows = finished(job_id)
    declared = re.search(r"^\s+resources: .*\bmem_mb=(\d+)", log, re.M)
    assert declared, log[-3000:]
    assert rows[job_id]["State"] == "COMPLETED", rows
    assert mb(rows[job_id]["ReqMem"]) == pytest.approx(int(declared.group(1)), abs=1), rows
    steps = {k: mb(v["MaxRSS"]) for k, v in rows.items() if k != job_id}
    used = sum(steps.values())
    print(f"{enforcement()}: requested {rows[job_id]['ReqMem']}, steps' MaxRSS {steps}")
    assert steps.get(f"{job_id}.batch", 0) > 100 and steps.get(f"{job_id}.0", 0) > 300, rows
    assert mb(rows[job_id]["ReqMem"]) >= MEM_GOAL * used, rows


# Whole-job peaks measured by benchmarks/bench_memory.py (RESULTS.md P8) for jobs reading hub-sized
# files (78.2 MB, 28,225 cells each): rule -> (target, MB). Snakemake x 2 + srun + script.
MEASURED_HUB = {
    "summarize_shard": ("results/shards/00000/qc.json", 1317),
    "gram_batch": ("results/embed/gram/b00000.npz", 1574),
    "de_welch": ("results/de/welch.parquet", 2909),
}


def test_requests_cover_measured_whole_job_peaks_at_hub_size(tmp_path):
    """No cluster needed: a dry run over 4 files of a hub file's size (sparse files: a dry run
    reads sizes, not data) shows each job's mem_mb; it must be >= 1.2x the whole-job peak
    measured for that size. The requests before (841 MB for the summary, 2,500 MB for de_welch)
    did not count the job's two Snakemake processes."""
    root = tmp_path / "mirror"
    write_demo(root, DemoParams(seed=0, n_files=4, cells_per_file=20))
    for f in sorted((root / "data").glob("*.parquet")):
        with open(f, "r+b") as fh:
            fh.truncate(int(78.2 * 2**20))
    cfg = {
        "source": {
            "kind": "local",
            "files": "0:4",
            "cells_per_shard": None,
            "local": {"path": str(root), "n_files_total": 4},
        }
    }
    cfg_path = tmp_path / "config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    targets = [t for t, _ in MEASURED_HUB.values()]
    cmd = snakemake_cmd(REPO / "Snakefile", tmp_path, cfg_path, "--forceall", "-n", "--cores", "2")
    cmd[cmd.index("snakemake") + 1 : cmd.index("snakemake") + 1] = targets
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    declared = {}
    for block in re.split(r"\n(?=(?:local)?rule \w+:\n)", proc.stdout):
        m = re.match(r"(?:local)?rule (\w+):\n", block)
        mem = re.search(r"^\s+resources: .*\bmem_mb=(\d+)", block, re.M)
        if m and mem:
            declared.setdefault(m.group(1), int(mem.group(1)))
    ratios = {r: declared.get(r, 0) / mb for r, (_, mb) in MEASURED_HUB.items()}
    assert all(x >= MEM_GOAL for x in ratios.values()), (ratios, declared)
