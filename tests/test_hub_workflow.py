"""The workflow's hub source (``source.kind: hub``) against a loopback fake hub with faults.

The fake hub (tests/hub_server.py) runs as a thread of this test process and serves a tiny
demo dataset in the hub's layout; Snakemake runs as a subprocess pointed at it through
``HF_ENDPOINT``. Nothing leaves 127.0.0.1. A planted ``HF_TOKEN`` is sent with every request
(checked on the server side) and must never appear in any file of the working folder, in the
``huggingface_hub`` home, or in Snakemake's captured stdout/stderr.

Cases: (a) a clean run equals a ``source.kind: local`` run on the same files; (b) a
connection dropped mid-file, (c) an HTTP 500 and (d) a response slower than
``source.hub.timeout_s`` are each retried and the run succeeds with the same bytes; (e) a file
whose content never matches the hub's sha256 and (f) a 404 fail their download jobs with one
clear line each, leaving no data file under resources/hub/ and no shard output; a hostile 401
that echoes the Authorization header does not leak the token either.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import shutil
from pathlib import Path

import pytest
from conftest import run_smk, write_demo
from hub_server import FAKE_COMMIT, FakeHub

from tahoeflow.sources.demo import DemoParams

pytestmark = pytest.mark.workflow

TOKEN = "hf_PLANTED" + secrets.token_hex(12)
N_FILES = 2
DATA = [f"data/train-{i:05d}-of-{N_FILES:05d}.parquet" for i in range(N_FILES)]
GENE_META = "metadata/gene_metadata.parquet"
SAMPLE_META = "metadata/sample_metadata.parquet"
TARGET = "results/merged/cells.parquet"
HUB_DEMO = DemoParams(
    seed=11,
    n_files=N_FILES,
    cells_per_file=300,
    n_cell_lines=3,
    n_drugs=4,
    n_plates=1,
    control_wells_per_plate=2,
)


def _no_host_slurm(folder: Path) -> str:
    """PATH with an ``scontrol`` that fails at once.

    The SLURM executor plugin runs ``scontrol show config`` when Snakemake imports it; on a
    host with SLURM installed but no controller running that waits ~9 s per Snakemake start.
    Local runs never use SLURM, so the tests shadow it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "scontrol"
    shim.write_text("#!/bin/sh\nexit 1\n")
    shim.chmod(0o755)
    return f"{folder}{os.pathsep}{os.environ.get('PATH', '')}"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A running fake hub serving a 2-file demo, with the environment Snakemake needs."""
    base = tmp_path_factory.mktemp("hubwf")
    root = base / "repo"
    write_demo(root, HUB_DEMO)
    shutil.rmtree(root / "truth")
    server = FakeHub(root).start()
    env = {
        "HF_ENDPOINT": server.url,
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(base / "hf_home"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_TOKEN": TOKEN,
        "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
        "PATH": _no_host_slurm(base / "bin"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in ("HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE"):
            mp.delenv(key, raising=False)
        try:
            yield {"server": server, "root": root, "base": base}
        finally:
            server.stop()


def hub_config(**hub_settings) -> dict:
    return {
        "source": {
            "kind": "hub",
            "files": f"0:{N_FILES}",
            "hub": {
                "revision": FAKE_COMMIT,
                "n_files_total": N_FILES,
                "max_retries": 3,
                "timeout_s": 10,
                **hub_settings,
            },
        }
    }


def _fmt(proc) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"


def _files(folder: Path):
    return (p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def assert_token_absent(hub, wd: Path, proc) -> None:
    """The token was sent to the hub, and is nowhere in outputs, logs, caches or the console."""
    sent = [r for r in hub["server"].requests if r.repo_path is not None]
    assert sent and all(r.header("Authorization") == f"Bearer {TOKEN}" for r in sent)
    assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
    needle = TOKEN.encode()
    scanned = 0
    for folder in (wd, hub["base"] / "hf_home"):
        for path in _files(folder):
            assert needle not in path.read_bytes(), f"token written to {path}"
            scanned += 1
    assert scanned > 10  # results/, resources/, .snakemake/log, logs were all there


def digests(wd: Path, pattern: str) -> dict[str, str]:
    return {
        str(p.relative_to(wd)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(wd.glob(pattern))
    }


@pytest.fixture(scope="module")
def local_reference(hub, tmp_path_factory):
    """The same files run as a local mirror: the bytes every successful hub run must give."""
    wd = tmp_path_factory.mktemp("hub_local") / "wd"
    cfg = {
        "source": {
            "kind": "local",
            "files": f"0:{N_FILES}",
            "local": {"path": str(hub["root"]), "n_files_total": N_FILES},
        }
    }
    proc = run_smk(wd, cfg, TARGET, cores=2)
    assert proc.returncode == 0, _fmt(proc)
    return digests(wd, "results/shards/*/*") | digests(wd, "results/merged/*")


def test_a_clean_hub_run_equals_local_run_and_never_leaks_the_token(hub, local_reference, tmp_path):
    hub["server"].clear_faults()
    wd = tmp_path / "wd"
    proc = run_smk(wd, hub_config(), TARGET, cores=2)
    assert proc.returncode == 0, _fmt(proc)
    got = digests(wd, "results/shards/*/*") | digests(wd, "results/merged/*")
    assert got == local_reference
    placed = wd / "resources/hub" / FAKE_COMMIT
    for name in [*DATA, GENE_META, SAMPLE_META]:
        assert (placed / name).read_bytes() == (hub["root"] / name).read_bytes()
    assert_token_absent(hub, wd, proc)


def test_b_c_d_dropped_connection_http_500_and_timeout_are_retried(hub, local_reference, tmp_path):
    server = hub["server"]
    server.clear_faults()
    faults = {
        "drop": server.add_fault(DATA[0], "drop", times=1),  # (b) half the body, then closed
        "status500": server.add_fault(DATA[1], "status500", times=1),  # (c)
        # (d) the first request for it answers after 2.5 s, beyond timeout_s = 1
        "slow": server.add_fault(GENE_META, "slow", times=1, delay_s=2.5),
    }
    wd = tmp_path / "wd"
    proc = run_smk(wd, hub_config(timeout_s=1, max_retries=4), TARGET, cores=2)
    assert proc.returncode == 0, _fmt(proc)
    assert all(f.used == 1 for f in faults.values()), {k: f.used for k, f in faults.items()}
    got = digests(wd, "results/shards/*/*") | digests(wd, "results/merged/*")
    assert got == local_reference
    # (b) huggingface_hub retries a cut body itself (inside one of our attempts), or our retry
    # loop downloads again: either way a later GET delivered the file, verified below
    assert len(server.requests_for(DATA[0], "GET")) >= 2
    logs = wd / "results/logs/download"
    expect = {
        DATA[1]: ("train-00001-of-00002.log", "HTTP 500"),
        GENE_META: ("gene_metadata.log", "timed out (timeout_s=1"),
    }
    for name, (log_name, reason) in expect.items():
        text = (logs / log_name).read_text()
        retried = [ln for ln in text.splitlines() if reason in ln and "retry 1/4" in ln]
        assert retried and "verified" in text, f"{name}:\n{text}"
    assert "verified" in (logs / "train-00000-of-00002.log").read_text()
    assert_token_absent(hub, wd, proc)


def test_e_f_corrupt_content_and_404_fail_cleanly_and_hostile_401_leaks_nothing(hub, tmp_path):
    server = hub["server"]
    server.clear_faults()
    server.add_fault(DATA[0], "corrupt", times=None)  # (e) wrong bytes, every time
    server.add_fault(DATA[1], "404", times=None)  # (f)
    server.add_fault(SAMPLE_META, "401", times=None)  # echoes "Authorization: Bearer <token>"
    wd = tmp_path / "wd"
    proc = run_smk(wd, hub_config(), TARGET, "--keep-going", cores=2)
    assert proc.returncode != 0, _fmt(proc)
    text = proc.stdout + proc.stderr
    errors = [ln for ln in text.splitlines() if ln.startswith("ERROR: ")]

    corrupt = [ln for ln in errors if DATA[0] in ln and "sha256 mismatch" in ln]
    assert len(corrupt) == 1, _fmt(proc)
    missing = [ln for ln in errors if DATA[1] in ln and re.search(r"HTTP 404\b", ln)]
    assert len(missing) == 1, _fmt(proc)
    denied = [ln for ln in errors if SAMPLE_META in ln and re.search(r"HTTP 401\b", ln)]
    assert len(denied) == 1, _fmt(proc)
    assert "sha256 mismatch" in (wd / "results/logs/download/train-00000-of-00002.log").read_text()

    placed = wd / "resources/hub" / FAKE_COMMIT
    assert (placed / GENE_META).exists()  # the healthy download still ran (keep-going)
    left = sorted(str(p.relative_to(placed)) for p in _files(placed))
    assert left == [GENE_META], f"unverified files left under resources/hub: {left}"
    # no corrupt bytes kept in the client's cache either: every blob is named by its sha256
    for blob in _files(wd / "resources/hf-cache"):
        if blob.parent.name == "blobs" and len(blob.name) == 64:
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name, blob
    shards = wd / "results/shards"
    assert not shards.exists() or not any(_files(shards))
    assert not (wd / TARGET).exists()
    assert_token_absent(hub, wd, proc)
