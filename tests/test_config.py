"""A bad config fails at parse time with one message naming the key."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from conftest import REPO, run_smk

from tahoeflow.cells.plan import parse_file_selection, plan_batches, plan_shards
from tahoeflow.config import make_plan, validate_config
from tahoeflow.errors import ArgumentError, ConfigError

SCHEMA = REPO / "config/schema.yaml"
BASE = yaml.safe_load((REPO / "config/config.yaml").read_text())


def _with(path: str, value):
    cfg = copy.deepcopy(BASE)
    node = cfg
    *parents, last = path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value
    return cfg


def test_default_config_is_valid_and_gets_every_default():
    cfg = validate_config(copy.deepcopy(BASE), SCHEMA)
    assert cfg["demo"]["n_cell_lines"] == 8 and cfg["embed"]["kmeans"]["n_clusters"] == 10


def test_every_schema_key_has_a_default_and_a_description():
    def walk(node, path):
        for key, sub in node.get("properties", {}).items():
            assert "description" in sub, f"{path}{key} lacks a description"
            assert "default" in sub, f"{path}{key} lacks a default"
            walk(sub, f"{path}{key}.")

    walk(yaml.safe_load(SCHEMA.read_text()), "")


@pytest.mark.parametrize(
    ("path", "value", "key", "words"),
    [
        ("source.typo", 1, "source.typo", "unknown key"),
        ("embed.n_components", "fifty", "embed.n_components", "type"),
        ("split.test_size", 1.0, "split.test_size", "out of range"),
        ("split.test_size", 0, "split.test_size", "out of range"),
        ("embed.n_components", 3000, "embed.n_components", "HVGs"),
        ("source.kind", "s3", "source.kind", "not one of"),
        ("filters.min_genes", -1, "filters.min_genes", "out of range"),
        ("models.ridge.features", [], "models.ridge.features", "non-empty"),
    ],
)
def test_bad_values_name_the_key(path, value, key, words):
    with pytest.raises(ConfigError) as err:
        validate_config(_with(path, value), SCHEMA)
    assert f"config key '{key}'" in str(err.value) and words in str(err.value)


@pytest.mark.parametrize(
    ("spec", "problem"),
    [("5:5", "empty"), ("0:99", "outside"), ("x", "not a file index"), ([], "selects no files")],
)
def test_bad_file_selection(spec, problem):
    with pytest.raises(ArgumentError, match=rf"'spec': .*{problem}"):
        parse_file_selection(spec, 10)
    # at parse time the key is named ([] is refused by the schema already)
    with pytest.raises(ConfigError, match=rf"'source.files': .*{problem if spec else 'not valid'}"):
        make_plan(validate_config(_with("source.files", spec), SCHEMA))


def test_file_selection_and_shard_plan():
    assert parse_file_selection(["0:3", 7, "5"], 10) == [0, 1, 2, 5, 7]
    shards = plan_shards([0, 4], 10_000, 28_225)
    assert [s.name for s in shards] == [
        "00000-0000",
        "00000-0001",
        "00000-0002",
        "00004-0000",
        "00004-0001",
        "00004-0002",
    ]
    assert (
        shards[2].row_start == 20_000 and shards[2].row_stop is None
    )  # the last range reads to the end


def test_plan_for_the_full_hub_layout_needs_no_data():
    cfg = validate_config(_with("source.kind", "hub") | {}, SCHEMA)
    cfg["source"]["files"] = "0:3388"
    plan = make_plan(cfg)
    assert len(plan.shards) == 3388 and plan.data_path(12).endswith(
        "data/train-00012-of-03388.parquet"
    )


@pytest.mark.workflow
def test_snakemake_reports_the_key_at_parse_time(tmp_path: Path):
    proc = run_smk(tmp_path, {"split": {"test_size": 1.5}}, "-n")
    assert proc.returncode != 0
    assert "config key 'split.test_size'" in proc.stderr + proc.stdout


def test_plan_batches_groups_sorted_shards_in_order():
    names = ["00002", "00000-0001", "00000-0000", "00001", "00003"]
    b = plan_batches(names, 2)
    assert b == {
        "b00000": ["00000-0000", "00000-0001"],
        "b00001": ["00001", "00002"],
        "b00002": ["00003"],
    }
    assert [s for k in sorted(b) for s in b[k]] == sorted(names)  # concatenation = shard order
    assert plan_batches(names, 1)["b00004"] == ["00003"] and len(plan_batches(names, 9)) == 1
    with pytest.raises(ValueError, match="per_job"):
        plan_batches(names, 0)
