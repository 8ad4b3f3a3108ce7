"""No rule may write over a user's input (issue: `prepare_h5ad` deleted the user's .h5ad).

The workflow-level test replays the report: a fresh copy of the workflow whose script files
are newer than the user's data (Snakemake's "code has changed" trigger), an h5ad source with
no ``prepare`` step, a real run; the user's file must be byte-identical afterwards. The
parse-time guard is tested for every config key that names a user's file.
"""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest
from conftest import copy_repo, run_smk
from test_h5ad_source import OBS_MAP, make_adata

from tahoeflow.config import h5ad_settings as settings_from_config
from tahoeflow.errors import ConfigError

pytestmark = pytest.mark.workflow


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _h5ad_config(path: str) -> dict:
    return {
        "source": {"kind": "h5ad", "files": "0:1", "h5ad": {"paths": [path], "obs_map": OBS_MAP}},
        "control_drug": "DMSO",
        "filters": {"min_genes": 1},
        "stages": {k: False for k in ("embed", "models", "report", "de", "updown", "pergene")}
        | {"anndata": False},
    }


def test_a_users_h5ad_survives_a_run_with_newer_scripts(tmp_path):
    wd = copy_repo(tmp_path / "wf")
    user = wd / "my.h5ad"
    make_adata(n=200).write_h5ad(user)
    old = time.time() - 3600
    os.utime(user, (old, old))  # the scripts (fresh copy) are newer than the user's file
    before = _sha(user)
    proc = run_smk(wd, _h5ad_config("my.h5ad"), "results/merged/cells.parquet", cores=2)
    assert user.is_file(), "the user's input file was deleted"
    assert _sha(user) == before
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "prepare_h5ad" not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    ("settings", "key", "problem"),
    [
        # a user's h5ad where the workflow writes its own tables
        (
            {"source": {"h5ad": {"paths": ["results/h5ad/metadata/gene_metadata.parquet"]}}},
            "source.h5ad.paths",
            "is written by rule h5ad_metadata",
        ),
        # a local mirror inside the workflow's results (the demo writes there)
        (
            {"source": {"kind": "local", "local": {"path": "results/shards/00000"}}},
            "source.local.path",
            "lies in the workflow's output folder results/",
        ),
        # an external topTable that is the workflow's own DE output
        (
            {"updown": {"toptable": "results/de/toptable.parquet"}},
            "updown.toptable",
            "is written by rule de_pseudobulk",
        ),
        (
            {"pergene": {"apply_table": "results/pergene/features.parquet"}},
            "pergene.apply_table",
            "is written by rule pergene_fit",
        ),
    ],
)
def test_a_config_naming_a_rule_output_as_input_fails_at_parse_time(
    settings, key, problem, tmp_path
):
    cfg = settings
    if "h5ad" in cfg.get("source", {}):
        cfg = _h5ad_config(cfg["source"]["h5ad"]["paths"][0])
    proc = run_smk(tmp_path, cfg, "-n")
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert f"config key '{key}': " in err and problem in err, err[-2000:]


def test_prepare_writes_a_workflow_path_and_refuses_a_user_path():
    section = {"obs_map": {"drug": "perturbation"}, "prepare": {"kind": "eccite", "input": "x"}}
    s = settings_from_config(section)
    assert s.paths == ("results/h5ad/prepared/eccite.h5ad",)
    with pytest.raises(ConfigError, match=r"source\.h5ad\.paths.*leave it empty"):
        settings_from_config({**section, "paths": ["my.h5ad"]})


@pytest.mark.parametrize("kind", ["demo", "hub"])
def test_every_output_of_the_dag_lies_in_the_workflows_folders(kind, tmp_path):
    """The audit, as a test: every file the DAG would write is under results/ (or, for the hub,
    the revision's download folder), so no output can coincide with a user's file elsewhere."""
    cfg = {"source": {"kind": kind, "files": "0:2"}}
    proc = run_smk(tmp_path, cfg, "--summary")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("output_file"))
    outputs = [line.split("\t")[0] for line in lines[start + 1 :] if line.strip()]
    owned = ("results/",) + (
        ("resources/hub/2dc57900b7981cfcf5e211527169a0b006546a95/",) if kind == "hub" else ()
    )
    assert len(outputs) > 50
    assert [o for o in outputs if not o.startswith(owned)] == []
