"""``source.kind: obs`` (issue 19): the atlas-wide phenotype tables from Tahoe's obs_metadata
alone. Rule all plans only the phenotype jobs (no shard, merge, embedding, DE or model job);
the tables equal the library's on the same file; contradictory settings are config errors."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from tahoeflow.config import validate_config
from tahoeflow.errors import ConfigError
from tahoeflow.phenotypes import cellcycle as cc
from tahoeflow.phenotypes.obs import design_counts, obs_counts, write_simulated_obs
from tahoeflow.phenotypes.sensitivity import (
    COUNT_SCHEMA,
    condition_counts,
    sensitivity_arrow,
    sensitivity_table,
)

REPO = Path(__file__).resolve().parents[1]
META = REPO / "resources" / "tahoe_metadata"
SCHEMA = REPO / "config" / "schema.yaml"
EXPRESSION_STAGES = ("embed", "models", "de", "updown", "pergene", "anndata", "report")


def job_counts(text: str) -> dict[str, int]:
    """Snakemake's "Job stats" table (job, count) as a dict (the first table of the output)."""
    out: dict[str, int] = {}
    for m in re.finditer(r"^(\w+)\s+(\d+)$", text, re.M):
        if m.group(1) in out:  # the table is printed twice: keep the first
            break
        out[m.group(1)] = int(m.group(2))
    out.pop("total", None)
    return out


def obs_config(**phenotypes) -> dict:
    return {"source": {"kind": "obs"}, "phenotypes": phenotypes,
            "stages": {k: False for k in EXPRESSION_STAGES}}  # fmt: skip


# --- config -------------------------------------------------------------------------------------
def test_obs_source_reads_obs_and_other_sources_keep_cells_by_default():
    cfg = validate_config(obs_config(), SCHEMA)
    assert cfg["phenotypes"]["sensitivity"]["from"] == "obs"
    assert validate_config({}, SCHEMA)["phenotypes"]["sensitivity"]["from"] == "cells"
    cfg = validate_config({"phenotypes": {"sensitivity": {"from": "obs"}}}, SCHEMA)
    assert cfg["phenotypes"]["sensitivity"]["from"] == "obs"  # kept for the other sources


def test_obs_source_with_cells_or_without_the_phenotype_stage_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^config key 'phenotypes\.sensitivity\.from': is cells"):
        validate_config(obs_config(sensitivity={"from": "cells"}), SCHEMA)
    cfg = obs_config()
    cfg["stages"]["phenotypes"] = False
    with pytest.raises(ConfigError, match=r"'stages\.phenotypes': is false.*nothing to do"):
        validate_config(cfg, SCHEMA)


def test_expression_stages_left_on_are_named_in_one_warning():
    cfg = obs_config()
    cfg["stages"].update(de=True, embed=True)
    with pytest.warns(UserWarning, match=r"^config keys stages\.embed, stages\.de: source\.kind "
                      r"obs has no expression files") as rec:  # fmt: skip
        validate_config(cfg, SCHEMA)
    assert len(rec) == 1 and "\n" not in str(rec[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all off: no warning
        validate_config(obs_config(), SCHEMA)


def test_the_example_config_is_an_obs_run_with_every_expression_stage_off():
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    example = yaml.safe_load((REPO / "config/examples/obs.yaml").read_text())

    def merge(base, over):  # Snakemake's deep update of config files
        for k, v in over.items():
            base[k] = merge(base.get(k, {}), v) if isinstance(v, dict) else v
        return base

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = validate_config(merge(cfg, example), SCHEMA)
    assert cfg["source"]["kind"] == "obs" and cfg["phenotypes"]["sensitivity"]["from"] == "obs"


# --- the workflow -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def obs_file(tmp_path_factory) -> Path:
    """A simulated obs_metadata.parquet on the real design (~50k cells, 14 plates) with phases."""
    grid = pd.read_parquet(META / "obs_cell_grid.parquet")
    samples = pd.read_parquet(META / "sample_metadata.parquet")
    lines = pd.read_parquet(META / "cell_line_metadata.parquet")
    path = tmp_path_factory.mktemp("obs") / "obs_metadata.parquet"
    write_simulated_obs(design_counts(grid, samples, lines, 0.0005), path, row_group_size=20_000)
    t = pq.read_table(path)
    rng = np.random.default_rng(1)
    phase = np.array(["G1", "S", "G2M"])[rng.choice(3, t.num_rows, p=[0.5, 0.3, 0.2])]
    pq.write_table(t.append_column("phase", pa.array(phase).dictionary_encode()), path,
                   row_group_size=20_000)  # fmt: skip
    return path


@pytest.mark.workflow
def test_dry_run_from_the_hub_plans_the_downloads_and_the_phenotype_jobs_only(tmp_path):
    from conftest import run_smk

    proc = run_smk(tmp_path / "wd", {"source": {"kind": "obs"}}, "all", "download_all", "-n",
                   "--quiet", "rules", check=True)  # fmt: skip
    out = proc.stdout + proc.stderr
    assert job_counts(out) == {
        "download_all": 1,  # the three downloads, for a host with internet
        "download_obs_metadata": 1,
        "download_metadata": 2,  # sample_metadata (wells without cells), drug_metadata (MoA)
        "phenotype_counts": 1,
        "sensitivity": 1,
        "cell_cycle": 1,
        "landscape": 1,
        "all": 1,
    }, out[-3000:]
    # config/config.yaml switches every stage on: the expression stages are named, not built
    assert "stages.embed, stages.models, stages.de" in out


@pytest.mark.workflow
def test_local_obs_file_run_gives_the_librarys_tables(tmp_path, obs_file):
    from conftest import run_smk

    wd = tmp_path / "wd"
    cfg = obs_config(obs={"path": str(obs_file)})
    proc = run_smk(wd, cfg, cores=2, check=True)
    out = proc.stdout + proc.stderr
    assert job_counts(out) == {"phenotype_counts": 1, "sensitivity": 1, "cell_cycle": 1,
                               "landscape": 1, "all": 1}, out[-3000:]  # fmt: skip
    assert "UserWarning" not in out  # every expression stage is off
    assert not (wd / "results" / "shards").exists() and not (wd / "results" / "merged").exists()
    # sensitivity: the library on the same file (no sample_metadata with a local obs file)
    counts = obs_counts(obs_file, pass_filter="full")
    counts = pa.Table.from_pandas(counts[COUNT_SCHEMA.names], schema=COUNT_SCHEMA,
                                  preserve_index=False).to_pandas()  # fmt: skip
    want = sensitivity_arrow(
        sensitivity_table(*condition_counts(counts), control_drug="DMSO_TF", pseudocount=0.5)
    )
    got = pq.read_table(wd / "results/phenotypes/sensitivity.parquet")
    assert got.num_rows == want.num_rows > 1000
    pd.testing.assert_frame_equal(got.to_pandas(), want.to_pandas())
    assert got.to_pandas().query("level == 'plate'")["plate"].nunique() == 14
    # cell cycle: obs_metadata's phases, per condition against DMSO
    phases, why = cc.obs_phase_counts(obs_file, control_drug="DMSO_TF", pass_filter="full")
    assert why is None
    want_cc = cc.arrest_table(phases, pseudocount=0.5, min_cells=10)
    got_cc = pd.read_parquet(wd / "results/phenotypes/cell_cycle.parquet")
    pd.testing.assert_frame_equal(got_cc, want_cc, check_dtype=False)
    metrics = json.loads((wd / "results/phenotypes/cell_cycle.json").read_text())
    assert metrics["phases_from"] == "obs_metadata"
    assert metrics["n_cells"] == int(counts["n_cells"].sum())
    # landscape: heatmap and MoA figures from sensitivity; signatures skipped with the reason
    land = json.loads((wd / "results/phenotypes/landscape/metrics.json").read_text())
    assert land["sensitivity"]["n_drugs"] > 100
    assert land["skipped"].startswith("source.kind obs has no expression files")
    for name in ("sensitivity_heatmap", "moa_sensitivity", "signature_pca"):
        assert (wd / f"results/phenotypes/landscape/{name}.png").stat().st_size > 1000
