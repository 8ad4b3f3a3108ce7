"""Reliability of the real workflow: a hard kill mid-run, a full disk, determinism, security.

* **SIGKILL.** The whole Snakemake process group is killed in the middle of the shard stage;
  a rerun (``--unlock``, then the default profile, which has ``rerun-incomplete``) must give
  outputs byte-identical to an uninterrupted run of the same config in another folder.
* **Determinism.** The two folders above ran the whole default DAG (tiny sizes); every
  Parquet, CSV, JSON, npz, h5ad and joblib file under results/ (logs and benchmarks aside)
  has the same sha256.
* **Full disk.** A tmpfs too small for one shard's outputs (or, where mounting is not
  permitted, an ENOSPC injected into the job's Parquet writer after N bytes): the job fails
  saying no space is left, and leaves neither a partial output nor a ``.*.tmp`` file.
* **Security.** Wildcards cannot address paths outside the workflow's folders, YAML is only
  ever loaded safely (a ``!!python/object`` config is rejected at parse time) and the report
  embeds no absolute machine path. (The HF_TOKEN checks are in tests/test_hub_workflow.py.)
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, config_with, local_mirror, run_smk

pytestmark = pytest.mark.workflow

N_FILES = 6
# The whole default DAG at tiny sizes. Keys are applied only where the schema has them, so the
# config follows the workflow as stages come and go.
TINY = {
    ("source", "kind"): "demo",
    ("source", "files"): f"0:{N_FILES}",
    ("demo", "n_files"): N_FILES,
    ("demo", "cells_per_file"): 1000,
    ("demo", "row_group_size"): 250,
    ("demo", "n_cell_lines"): 4,
    ("demo", "n_drugs"): 6,
    ("demo", "n_plates"): 1,
    ("demo", "control_wells_per_plate"): 3,
    ("embed", "hvg", "n_top"): 100,
    ("embed", "n_components"): 5,
    ("embed", "kmeans", "n_clusters"): 3,
    ("models", "cv_folds"): 2,
    ("models", "rf", "n_estimators"): 5,
    ("models", "rf_regressor", "grid"): {
        "n_estimators": [5],
        "max_depth": [4],
        "min_samples_leaf": [5],
        "max_samples": [0.5],
    },
    ("models", "rf_regressor", "cv_folds"): 2,
    ("de", "welch", "max_conditions"): 1,
    ("updown", "max_rows"): 200,
    ("updown", "cv_folds"): 2,
    ("updown", "rf_grid"): {"n_estimators": [5], "max_depth": [3]},
    ("pergene", "n_top_genes"): 10,
    ("pergene", "cv_folds"): 2,
    ("pergene", "n_alphas"): 3,
}
# The issue asks for Parquet, CSV and JSON; the binary model/matrix files are identical too
# (PNG figures are not compared).
COMPARED = (".parquet", ".csv", ".json", ".npz", ".h5ad", ".joblib")
NOT_COMPARED_DIRS = ("results/logs/", "results/benchmarks/")


def tiny_config() -> dict:
    return config_with(TINY)


@pytest.fixture(scope="module", autouse=True)
def _no_host_slurm(no_host_slurm):
    """Every Snakemake run of this module skips the SLURM plugin's scontrol wait (conftest)."""


def _fmt(proc) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def result_digests(wd: Path, suffixes=COMPARED) -> dict[str, str]:
    out = {}
    for p in sorted((wd / "results").rglob("*")):
        rel = p.relative_to(wd).as_posix()
        if p.is_file() and p.suffix in suffixes and not rel.startswith(NOT_COMPARED_DIRS):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def stale_temp_files(wd: Path) -> list[str]:
    return sorted(
        p.relative_to(wd).as_posix() for p in (wd / "results").rglob(".*.tmp") if p.is_file()
    )


def _processes_in(folder: Path) -> list[int]:
    """Pids of processes whose command line or working directory lies in ``folder``."""
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(d / "cwd")
        except OSError:
            continue
        if str(folder) in cmd or cwd.startswith(str(folder)):
            found.append(int(d.name))
    return found


# --------------------------------------------------------------------------- two full runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Folder ``clean``: an uninterrupted run (+ ``--report``). Folder ``killed``: the same
    config, SIGKILLed mid shard stage, then unlocked and rerun with the default profile."""
    base = tmp_path_factory.mktemp("reliability")
    cfg = tiny_config()
    info: dict = {"cfg": cfg}

    clean = base / "clean"
    t0 = time.perf_counter()
    proc = run_smk(clean, cfg, cores=2)
    assert proc.returncode == 0, _fmt(proc)
    proc = run_smk(clean, cfg, "--report", "report.html", cores=2)
    assert proc.returncode == 0, _fmt(proc)
    info["clean"] = clean
    info["clean_s"] = time.perf_counter() - t0

    killed = base / "killed"
    killed.mkdir()
    cfg_path = killed / "test_config.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(killed),
           "--configfile", str(cfg_path), "--cores", "2"]  # fmt: skip
    with open(killed / "first_attempt.out", "w") as out:
        p = subprocess.Popen(
            cmd, cwd=killed, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        pgid = os.getpgid(p.pid)
        deadline = time.monotonic() + 480
        done: list[Path] = []
        while p.poll() is None and time.monotonic() < deadline:
            done = list(killed.glob("results/shards/*/cells.parquet"))
            if 1 <= len(done) < N_FILES:
                os.killpg(pgid, signal.SIGKILL)
                break
            time.sleep(0.05)
        else:
            os.killpg(pgid, signal.SIGKILL)
            p.wait()
            pytest.fail(f"never saw the shard stage half done (exit {p.returncode}, {done})")
        p.wait()
    info["kill_returncode"] = p.returncode
    info["at_kill"] = {
        "cells": sorted(q.parent.name for q in killed.glob("results/shards/*/cells.parquet")),
        "qc": sorted(q.parent.name for q in killed.glob("results/shards/*/qc.json")),
        "merged": sorted(q.name for q in killed.glob("results/merged/*")),
        "temp": stale_temp_files(killed),
    }
    time.sleep(0.5)
    info["survivors"] = _processes_in(killed)
    unlock = run_smk(killed, cfg, "--unlock")
    assert unlock.returncode == 0, _fmt(unlock)
    profile = str(REPO / "profiles" / "default")
    rerun = run_smk(killed, cfg, "--workflow-profile", profile, cores=2)
    assert rerun.returncode == 0, _fmt(rerun)
    info["killed"] = killed
    info["rerun"] = rerun
    return info


def test_sigkill_mid_shard_stage_then_rerun_gives_the_uninterrupted_outputs(runs):
    at_kill = runs["at_kill"]
    assert runs["kill_returncode"] == -signal.SIGKILL
    assert 1 <= len(at_kill["cells"]) < N_FILES, at_kill  # killed in the middle of the stage
    assert not at_kill["merged"], at_kill
    assert not runs["survivors"], f"jobs outlived the kill of their group: {runs['survivors']}"
    clean, killed = result_digests(runs["clean"]), result_digests(runs["killed"])
    interrupted = {
        k: v for k, v in clean.items() if k.startswith(("results/shards/", "results/merged/"))
    }
    for i in range(N_FILES):
        for name in ("cells.parquet", "gene_stats.parquet", "pseudobulk.parquet", "qc.json"):
            assert f"results/shards/{i:05d}/{name}" in interrupted
    assert "results/merged/cells.parquet" in interrupted
    assert {k: killed.get(k) for k in interrupted} == interrupted
    assert set(killed) == set(clean)


def test_two_runs_of_the_default_dag_in_two_folders_are_byte_identical(runs):
    clean, killed = result_digests(runs["clean"]), result_digests(runs["killed"])
    stages = {k.split("/")[1] for k in clean}
    assert {"shards", "merged"} <= stages and len(clean) > 40, sorted(clean)
    differ = sorted(k for k in clean if killed.get(k) != clean[k])
    assert not differ, f"{len(differ)} of {len(clean)} files differ: {differ}"


def test_report_embeds_no_absolute_machine_paths(runs):
    html = (runs["clean"] / "report.html").read_text(errors="replace")
    assert len(html) > 100_000 and "summarize_shard" in html
    paths = {str(runs["clean"]), str(runs["clean"].resolve()), str(REPO), str(REPO.resolve())}
    home = os.path.expanduser("~")
    if home not in ("", "/"):
        paths.add(home)
    for path in paths:
        # not preceded by a base64 character: a short path such as /root can occur by chance
        # inside the base64 of an embedded image
        hit = re.search(r"(?<![A-Za-z0-9+/])" + re.escape(path) + r"(?![A-Za-z0-9_.-])", html)
        context = html[hit.start() - 80 : hit.end() + 80] if hit else ""
        assert hit is None, f"report.html contains the absolute path {path}: {context!r}"


# --------------------------------------------------------------------------- full disk
_SITECUSTOMIZE = '''\
"""Test hook (tests/test_reliability.py): the disk fills up while one Parquet file is written.

TAHOEFLOW_TEST_ENOSPC = "<folder suffix>|<file name prefix>|<bytes>": writing a Parquet file
whose folder ends with the suffix and whose name starts with the prefix raises ENOSPC after
that many bytes have reached the disk, exactly as a full file system would.
"""
import os

_SPEC = os.environ.get("TAHOEFLOW_TEST_ENOSPC")
if _SPEC:
    import errno
    import io

    import pyarrow.parquet as _pq

    _DIR, _PREFIX, _LIMIT = _SPEC.split("|")

    class _FullDisk(io.FileIO):
        def write(self, b):
            room = int(_LIMIT) - self.tell()
            if len(b) > room:
                super().write(bytes(b)[: max(room, 0)])
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.name)
            return super().write(b)

    _write_table = _pq.write_table

    def write_table(table, where, *args, **kwargs):
        if isinstance(where, (str, os.PathLike)):
            path = os.path.abspath(os.fspath(where))
            folder, name = os.path.split(path)
            if folder.endswith(_DIR) and name.startswith(_PREFIX):
                with _FullDisk(path, "w") as fh:
                    return _write_table(table, fh, *args, **kwargs)
        return _write_table(table, where, *args, **kwargs)

    _pq.write_table = write_table
'''


def _mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
            capture_output=True, timeout=30,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


@pytest.mark.parametrize("how", ["tmpfs", "injected"])
def test_full_disk_while_writing_an_output_fails_cleanly(how, small_demo, tmp_path, monkeypatch):
    """The shard's folder fills up while gene_stats.parquet (~0.8 MB) is written."""
    root, _ = small_demo
    mirror = local_mirror(tmp_path, root)
    wd = tmp_path / "wd"
    shard = wd / "results/shards/00000"
    mounted = False
    if how == "tmpfs":
        # room for cells.parquet (~45 kB), not for gene_stats.parquet
        mounted = _mount_tmpfs(shard, "256k")
        if not mounted:
            pytest.skip("mounting a tmpfs is not permitted here (the injected case still runs)")
    else:
        hook = tmp_path / "hook"
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(_SITECUSTOMIZE)
        pythonpath = [str(hook), os.environ.get("PYTHONPATH", "")]
        monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, pythonpath)))
        # the disk is "full" after 64 kB of gene_stats.parquet's temporary file
        spec = "results/shards/00000|.gene_stats.parquet.|65536"
        monkeypatch.setenv("TAHOEFLOW_TEST_ENOSPC", spec)
    local = {"path": str(mirror), "n_files_total": 2}
    cfg = {"source": {"kind": "local", "files": "0:2", "local": local}}
    try:
        proc = run_smk(wd, cfg, "results/shards/00000/qc.json", cores=1)
        left = sorted(p.name for p in shard.iterdir()) if shard.exists() else []
    finally:
        if mounted:
            subprocess.run(["umount", str(shard)], check=False, timeout=30)
    assert proc.returncode != 0, _fmt(proc)
    text = proc.stdout + proc.stderr
    nospace = os.strerror(errno.ENOSPC)  # "No space left on device"
    assert nospace in text and re.search(r"[Ee]rrno 28|ENOSPC|No space left", text), _fmt(proc)
    log = (wd / "results/logs/summarize/00000.log").read_text()
    assert nospace in log, log
    assert not left, f"partial or temporary files left in the shard folder: {left}"


# --------------------------------------------------------------------------- security
@pytest.mark.parametrize(
    "target",
    [
        "results/shards/../../etc/cells.parquet",
        "results/shards/00000/../../../../etc/cells.parquet",
        "results/shards/00000x/cells.parquet",
        "results/shards/0/cells.parquet",
        "results/demo/data/train-00000-of-00004/../../../../../x.parquet",
        "results/demo/data/train-00000-of-x/y.parquet",
        "resources/hub/main/metadata/../../../../etc_metadata.parquet",
    ],
)
def test_wildcards_cannot_address_paths_outside_their_folders(target, tmp_path):
    proc = run_smk(tmp_path, {"demo": {"n_files": 4}}, "-n", target, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, _fmt(proc)
    assert "MissingRuleException" in text and "No rule to produce" in text, _fmt(proc)
    assert not (tmp_path / "results").exists() and not (tmp_path / "etc").exists()


_UNSAFE_YAML = re.compile(
    r"yaml\.(unsafe_load|full_load|load_all|load)\s*\(|Loader\s*=\s*yaml\.(Unsafe|Full)?Loader\b"
)


def test_yaml_is_only_loaded_safely():
    sources = [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]
    for folder in (REPO / "src", REPO / "workflow"):
        sources += sorted(folder.rglob("*.py"))
    assert len(sources) > 20
    hits = []
    for path in sources:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = _UNSAFE_YAML.search(line)
            if m and "SafeLoader" not in line:
                hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not hits, hits


def test_config_with_a_python_object_tag_is_rejected_at_parse_time(tmp_path):
    pwned = tmp_path / "pwned"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f'split:\n  seed: !!python/object/apply:os.system ["touch {pwned}"]\n')
    proc = run_smk(tmp_path / "wd", {}, "-n", "--configfile", str(evil), timeout=120)
    assert proc.returncode != 0, _fmt(proc)
    assert "Config file is not valid" in proc.stdout + proc.stderr, _fmt(proc)
    assert "Job stats" not in proc.stdout + proc.stderr
    assert not pwned.exists()
