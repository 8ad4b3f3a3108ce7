"""Shared fixtures: a small demo dataset written by the library, and a real-Snakemake runner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from tahoeflow.demo import DemoParams, Design, write_file, write_metadata

REPO = Path(__file__).resolve().parents[1]

# The SLURM executor plugin runs `scontrol show config` when Snakemake imports it; on a machine
# with SLURM's client installed but no controller running that call waits ~9 s. Tests that do
# not use SLURM put a `scontrol` that fails at once first on PATH.
_NO_SLURM = Path(tempfile.mkdtemp(prefix="no-slurm-"))
(_NO_SLURM / "scontrol").write_text("#!/bin/sh\nexit 1\n")
(_NO_SLURM / "scontrol").chmod(0o755)
SMALL = dict(
    seed=3,
    n_files=2,
    cells_per_file=600,
    n_cell_lines=4,
    n_drugs=6,
    n_plates=1,
    control_wells_per_plate=3,
)


def write_demo(root: Path, params: DemoParams) -> Design:
    """A demo dataset in the hub layout under ``root`` (data/, metadata/, truth/)."""
    design = Design(params)
    meta = {
        k: root / "metadata" / f"{k}_metadata.parquet"
        for k in ("gene", "sample", "drug", "cell_line")
    }
    write_metadata(
        design,
        {**meta, "effects": root / "truth/effects.parquet", "params": root / "truth/params.json"},
    )
    for i in range(params.n_files):
        write_file(design, i, root / "data" / f"train-{i:05d}-of-{params.n_files:05d}.parquet")
    return design


@pytest.fixture(scope="session")
def small_demo(tmp_path_factory) -> tuple[Path, Design]:
    root = tmp_path_factory.mktemp("demo")
    return root, write_demo(root, DemoParams(**SMALL))


@pytest.fixture(scope="session")
def small_table(small_demo):
    root, _ = small_demo
    return pq.read_table(root / "data/train-00000-of-00002.parquet")


@pytest.fixture(scope="module")
def no_host_slurm():
    """Put the failing ``scontrol`` first on PATH for the module (Snakemake run directly)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", f"{_NO_SLURM}{os.pathsep}{os.environ.get('PATH', '')}")
        yield


def run_smk(
    workdir: Path, config: dict, *args: str, cores: int = 1, check: bool = False, timeout: int = 600
):
    """Run the real workflow in ``workdir`` with ``config`` merged over config/config.yaml."""
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "test_config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(REPO / "config/config.yaml"), str(cfg), "--cores", str(cores), *args]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{_NO_SLURM}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def local_mirror(
    tmp: Path, demo_root: Path, tables: dict[int, object] | None = None, n_files: int = 2
) -> Path:
    """A copy of a demo dataset where some data files are replaced (for bad-input tests)."""
    mirror = tmp / "mirror"
    shutil.copytree(demo_root / "metadata", mirror / "metadata")
    (mirror / "data").mkdir(parents=True)
    for i in range(n_files):
        dst = mirror / "data" / f"train-{i:05d}-of-{n_files:05d}.parquet"
        if tables and i in tables:
            t = tables[i]
            if isinstance(t, bytes):
                dst.write_bytes(t)
            else:
                pq.write_table(t, dst, row_group_size=200)
        else:
            shutil.copy(demo_root / "data" / dst.name, dst)
    return mirror
