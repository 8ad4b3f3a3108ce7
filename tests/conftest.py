"""Shared fixtures: a small demo dataset written by the library, and a real-Snakemake runner."""

from __future__ import annotations

import copy
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import yaml

from tahoeflow.sources.demo import DemoParams, Design
from tahoeflow.sources.demo_files import write_file, write_metadata

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


# --- configs and workflow snapshots shared by the workflow-level tests ----------------------
SCHEMA = yaml.safe_load((REPO / "config" / "schema.yaml").read_text())
# Small sizes for the analysis stages, applied only where the schema has the key (stages are
# still being added; a key that does not exist yet is left out). The demo shape (3 lines,
# 6 drugs, 1 plate) gives every (drug, dose, line) condition enough cells for the DE stages.
SMALL_STAGES = {
    ("demo", "n_cell_lines"): 3,
    ("demo", "n_drugs"): 6,
    ("demo", "n_plates"): 1,
    ("demo", "seed"): 1,
    ("embed", "hvg", "n_top"): 200,
    ("embed", "n_components"): 10,
    ("models", "rf", "n_estimators"): 10,
    ("models", "rf_regressor", "grid"): {
        "n_estimators": [10],
        "max_depth": [4],
        "min_samples_leaf": [1],
    },
    ("de", "min_cells"): 5,
    ("updown", "max_rows"): 3000,
    ("updown", "cv_folds"): 3,
    ("updown", "rf_grid"): {"n_estimators": [10], "max_depth": [5]},
    ("pergene", "n_top_genes"): 40,
    ("pergene", "cv_folds"): 3,
    ("pergene", "n_alphas"): 10,
}


def schema_has(path: tuple[str, ...]) -> bool:
    """Whether config/schema.yaml has the key at ``path`` (e.g. ``("embed", "n_components")``)."""
    node = SCHEMA
    for key in path:
        node = node.get("properties", {}).get(key)
        if node is None:
            return False
    return True


def set_key(cfg: dict, path: tuple[str, ...], value: Any) -> dict:
    node = cfg
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    return cfg


def config_with(settings: dict[tuple[str, ...], Any], base: dict | None = None) -> dict:
    """A copy of ``base`` with each setting applied where the schema has its key."""
    cfg = copy.deepcopy(base or {})
    for path, value in settings.items():
        if schema_has(path):
            set_key(cfg, path, copy.deepcopy(value))
    return cfg


def copy_repo(dst: Path) -> Path:
    """The workflow's files (tracked and untracked-but-not-ignored) copied to ``dst``, mtimes kept.

    Tests that run several Snakemake calls use such a snapshot, so edits to the working tree
    while they run (scripts are rerun triggers) cannot leak in.
    """
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst / rel)
    return dst


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
    workdir: Path,
    config: dict,
    *args: str,
    cores: int = 1,
    check: bool = False,
    timeout: int = 600,
    repo: Path = REPO,
):
    """Run the real workflow in ``workdir`` with ``config`` merged over config/config.yaml
    (``repo``: the workflow's checkout, e.g. a copy from :func:`copy_repo`)."""
    workdir.mkdir(parents=True, exist_ok=True)
    # one config file per call: dry runs of one folder may run side by side
    fd, name = tempfile.mkstemp(prefix="test_config-", suffix=".yaml", dir=workdir)
    os.close(fd)
    cfg = Path(name)
    cfg.write_text(yaml.safe_dump(config))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir),
           "--configfile", str(repo / "config/config.yaml"), str(cfg), "--cores", str(cores), *args]  # fmt: skip
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{_NO_SLURM}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=workdir
        )
    finally:
        cfg.unlink(missing_ok=True)
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
