"""Clusters whose compute nodes have no internet: README's two ways to run, tested.

1. ``snakemake --cores 4 download_all`` on a host with internet, then the SLURM run: the dry
   run under the SLURM profile plans no download job (tested over the loopback fake hub).
2. ``source.hub.download_on_submit_host: true``: the download rules are local rules, so the
   SLURM executor runs them on the submit host (read from the parsed workflow).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import REPO, run_smk
from test_hub_workflow import N_FILES, _fmt, hub, hub_config  # noqa: F401 - fixture
from test_orchestration import parse_job_stats

pytestmark = pytest.mark.workflow


def test_download_all_first_leaves_no_download_for_the_cluster_run(hub, tmp_path):  # noqa: F811
    hub["server"].clear_faults()
    wd = tmp_path / "wd"
    cfg = hub_config()
    proc = run_smk(wd, cfg, "download_all", cores=2)
    assert proc.returncode == 0, _fmt(proc)
    n = len(list((wd / "resources/hub").rglob("*.parquet")))
    assert n == N_FILES + 4  # the data files and the four metadata tables
    proc = run_smk(
        wd, cfg, "-n", "--quiet", "rules", "--workflow-profile", str(REPO / "profiles/slurm")
    )
    assert proc.returncode == 0, _fmt(proc)
    jobs = parse_job_stats(proc.stdout + proc.stderr)
    assert jobs.get("summarize_shard") == N_FILES
    assert not {r for r in jobs if r.startswith("download")}, jobs


_LOCALRULES = """
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import (
    ConfigSettings, OutputSettings, ResourceSettings, StorageSettings)
repo, config = Path(sys.argv[1]), json.loads(sys.argv[2])
with SnakemakeApi(OutputSettings(quiet={"all"})) as api:
    wf = api.workflow(
        resource_settings=ResourceSettings(cores=1),
        config_settings=ConfigSettings(
            configfiles=[repo / "config/config.yaml"], config=config),
        storage_settings=StorageSettings(),
        snakefile=repo / "Snakefile",
        workdir=Path(sys.argv[3]),
    )
    print(json.dumps(sorted(wf._workflow._localrules)))
"""


@pytest.mark.parametrize("on_submit_host", [True, False])
def test_download_rules_are_local_rules_when_asked(on_submit_host, tmp_path):
    cfg = {"source": {"kind": "hub", "files": "0:2",
                      "hub": {"download_on_submit_host": on_submit_host}}}  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", _LOCALRULES, str(REPO), json.dumps(cfg), str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    local = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert ({"download_data", "download_metadata"} <= local) is on_submit_host
    assert "download_all" in local and "summarize_shard" not in local
