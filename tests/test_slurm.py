"""The demo workflow through a real single-node SLURM cluster (sbatch via the slurm executor).

The module fixture starts munge, MariaDB, slurmdbd, slurmctld and slurmd with ci/slurm-up.sh
(installing the Debian packages if needed) and stops them with ci/slurm-down.sh. The test runs
the demo at test size with the SLURM profile and compares every output with a local run of the
same config. Skipped only when not root or when neither the packages nor apt-get are there;
with $CI set it fails instead of skipping.
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
from conftest import REPO, SMALL_STAGES, config_with, copy_repo

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
