"""Config hardening (issue 12): what YAML, the command line or a careless value would silently
change is rejected at parse time with one line naming the key, or handled as documented.

* YAML 1.1 traps in the config files Snakemake loads: an unquoted ``2:5`` is the base-60
  number 125, a repeated key silently replaces the first (strict re-read in rules/common.smk).
* ``source.hub.revision`` / ``repo_id`` / ``download_dir`` / ``cache_dir`` shapes (a revision is
  part of the download path: ``../../..`` must never reach it).
* ``embed.hvg.n_top`` above the expressed genes takes them all, with a warning.
* ``embed.kmeans.n_init`` and ``batch_size`` are config keys with scikit-learn's defaults.
* No planned shard starts at or past a known row count; an unknown count gives one shard.
* ``--config`` values (strings from Snakemake's BaseLoader) get the schema's types.
* Extras: unknown keys suggest the close one, an emptied section takes the defaults, YAML
  booleans where a string is expected, a parameter grid value that is not a list, a missing
  or bad manifest, a reversed file range.
"""

from __future__ import annotations

import copy
import json
import os
import re
import runpy
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import _NO_SLURM, REPO

from tahoeflow.cells.plan import parse_file_selection, plan_shards
from tahoeflow.config import (
    check_config_file,
    check_config_files,
    coerce_cli_values,
    make_plan,
    read_manifest,
    revision_problem,
    validate_config,
)
from tahoeflow.embed import hvg as embed
from tahoeflow.embed.pca import pca_from_gram
from tahoeflow.errors import ArgumentError, ConfigError, config_keys

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


def _write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --- 1. YAML 1.1 base-60 numbers and repeated keys ------------------------------------------
@pytest.mark.parametrize(
    ("text", "value", "number"),
    [("[0, 2:5]", "2:5", 125), ("1:3", "1:3", 63), ('["0:2", 10:12]', "10:12", 612)],
)
def test_unquoted_range_is_rejected_naming_key_file_and_number(tmp_path, text, value, number):
    # what Snakemake itself would have planned: the base-60 number
    files = yaml.safe_load(f"files: {text}")["files"]
    assert number in (files if isinstance(files, list) else [files])
    f = _write(tmp_path, f"source:\n  kind: hub\n  files: {text}\n")
    with pytest.raises(ConfigError) as err:
        check_config_file(f)
    msg = str(err.value)
    assert msg.startswith("config key 'source.files': ")
    assert f"`{value}` in {f}, line 3 is read by YAML as the base-60 number {number}" in msg
    assert f'quote it ("{value}")' in msg


def test_quoted_range_is_accepted_and_selects_the_range(tmp_path):
    f = _write(tmp_path, 'source:\n  kind: hub\n  files: [0, "2:5"]\n')
    check_config_file(f)  # no error
    cfg = validate_config(yaml.safe_load(f.read_text()), SCHEMA)
    assert make_plan(cfg).files == [0, 2, 3, 4]
    assert "train-00125-of-03388" not in str(make_plan(cfg).shards)


def test_base60_float_and_nested_list_items(tmp_path):
    f = _write(tmp_path, "hub:\n  timeout_s: 1:30.5\n")
    with pytest.raises(ConfigError, match=r"'hub.timeout_s'.*base-60 number 90.5"):
        check_config_file(f)
    # "100:120" and "0:40" are strings in YAML 1.1 (no base-60 reading): accepted unquoted
    check_config_file(_write(tmp_path, "source:\n  files: [0:40, 100:120]\n", "ok.yaml"))


def test_repeated_key_is_rejected_naming_key_file_and_lines(tmp_path):
    f = _write(tmp_path, "embed:\n  n_components: 10\n  center: true\n  n_components: 20\n")
    with pytest.raises(ConfigError) as err:
        check_config_file(f)
    assert str(err.value) == (
        f"config key 'embed.n_components': is given twice in {f} (lines 2 and 4); "
        "YAML would silently keep only the last one"
    )
    # a whole section given twice (the second silently replaces the first)
    g = _write(tmp_path, "embed:\n  n_components: 10\nsplit:\n  seed: 1\nembed:\n  center: false\n")
    with pytest.raises(ConfigError, match=r"'embed': is given twice .* \(lines 1 and 5\)"):
        check_config_file(g)
    # the same key in two different mappings is fine; so are YAML merge keys
    check_config_file(
        _write(tmp_path, "a: &d {x: 1}\nb:\n  <<: *d\n  y: 2\nc: {x: 3}\n", "ok.yaml")
    )


def test_repeated_key_in_a_json_config(tmp_path):
    f = _write(tmp_path, '{"embed": {"n_components": 10, "n_components": 20}}', "c.json")
    with pytest.raises(ConfigError, match="'n_components': is given twice in one object"):
        check_config_file(f)
    check_config_file(_write(tmp_path, '{"source": {"files": "2:5"}}', "ok.json"))


def test_check_config_files_skips_missing_and_repeated_paths(tmp_path):
    good = _write(tmp_path, "split: {seed: 1}\n")
    check_config_files([good, str(good), tmp_path / "absent.yaml"])
    bad = _write(tmp_path, "source: {files: 2:5}\n", "bad.yaml")
    with pytest.raises(ConfigError, match="base-60"):
        check_config_files([good, bad])


# --- 2. hub revision, repo id and folders ----------------------------------------------------
@pytest.mark.parametrize(
    "rev",
    [
        "../../../../tmp/pwned",
        "..",
        "a/../b",
        "/etc",
        "-rf",
        "a\\b",
        "a\x01b",
        "a b",
        "a//b",
        "v1/",
        "v1.",
        "x.lock",
        ".hidden",
        "a/.b",
        "@",
        "HEAD@{1}",
        "a~1",
        "a^",
        "a:b",
        "a?",
        "a*",
        "a[",
        "{file}",
        "",
    ],
)
def test_bad_revision_is_rejected_naming_the_key(rev):
    assert revision_problem(rev) is not None
    with pytest.raises(ConfigError) as err:
        validate_config(_with("source.hub.revision", rev), SCHEMA)
    assert str(err.value).startswith("config key 'source.hub.revision': ")
    assert "not a 40-hex commit id or a valid branch/tag name" in str(err.value)


@pytest.mark.parametrize(
    "rev",
    ["2dc57900b7981cfcf5e211527169a0b006546a95", "main", "v1.0", "refs/pr/3", "release-2025_07"],
)
def test_good_revision_plans_paths_inside_download_dir(rev):
    cfg = _with("source.kind", "hub")
    cfg["source"]["hub"] = {"revision": rev}
    with pytest.warns(UserWarning) if rev == "main" else _no_warning():
        validate_config(cfg, SCHEMA)
    plan = make_plan(cfg)
    path = os.path.normpath(plan.data_path(0))
    assert path.startswith(os.path.normpath("resources/hub") + os.sep) and rev in path


class _no_warning:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [
        ("repo_id", "Tahoe-100M", "is not 'owner/name'"),
        ("repo_id", "a/b/c", "is not 'owner/name'"),
        ("repo_id", "../x", "is not 'owner/name'"),
        ("repo_id", "tahoe--bio/x", "is not 'owner/name'"),
        ("repo_id", "tahoebio/x.git", "is not 'owner/name'"),
        ("repo_id", "-a/b", "is not 'owner/name'"),
        ("repo_id", "a/b c", "is not 'owner/name'"),
        ("download_dir", "", "is empty"),
        ("download_dir", "../outside", "'..' part"),
        ("download_dir", "resources/../../x", "'..' part"),
        ("download_dir", "res/{file}", "contains '{'"),
        ("cache_dir", "a\nb", "contains '\\n'"),
        ("cache_dir", "  ", "is empty"),
    ],
)
def test_bad_hub_repo_and_folders_name_the_key(key, value, words):
    with pytest.raises(ConfigError) as err:
        validate_config(_with(f"source.hub.{key}", value), SCHEMA)
    assert str(err.value).startswith(f"config key 'source.hub.{key}': ") and words in str(err.value)


def test_absolute_hub_folders_and_default_repo_are_fine():
    cfg = _with("source.hub.download_dir", "/scratch/tahoe")
    cfg["source"]["hub"]["cache_dir"] = "/scratch/hf-cache"
    validate_config(cfg, SCHEMA)
    assert cfg["source"]["hub"]["repo_id"] == "tahoebio/Tahoe-100M"


# --- 3. more HVGs asked for than genes expressed ---------------------------------------------
def _counts(n_cells=300, n_genes=60, n_silent=20, seed=0):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.gamma(0.5, 2.0, size=n_genes), size=(n_cells, n_genes)).astype(float)
    counts[:, n_genes - n_silent :] = 0  # genes never expressed
    counts[:, 0] += 1  # every cell has a count
    return counts


def _gene_stats(counts=None):
    counts = _counts() if counts is None else counts
    norm = counts / counts.sum(1, keepdims=True) * 1e4
    logd = np.log1p(norm)
    return {
        "n_obs": counts.shape[0],
        "sum_norm": norm.sum(0),
        "sumsq_norm": (norm**2).sum(0),
        "sum_log": logd.sum(0),
        "sumsq_log": (logd**2).sum(0),
    }


@pytest.mark.parametrize("flavor", ["seurat", "cell_ranger"])
def test_n_top_above_expressed_genes_takes_all_with_a_warning(flavor):
    import anndata as ad
    import scanpy as sc

    counts = _counts(n_silent=5)  # (scanpy's cell_ranger fails on many all-zero genes)
    st = _gene_stats(counts)
    n_expr = int(np.count_nonzero(st["sum_norm"] > 0))
    assert n_expr == 54  # 5 silent genes, one more never drawn
    msgs: list[str] = []
    df = embed.highly_variable_genes_from_stats(
        st["n_obs"], st["sum_norm"], st["sumsq_norm"], sum_log=st["sum_log"],
        sumsq_log=st["sumsq_log"], n_top=500, flavor=flavor, warn=msgs.append,
    )  # fmt: skip
    # scanpy returns every gene with a normalised dispersion (and warns): the same genes
    a = ad.AnnData(counts)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    with warnings.catch_warnings():  # scanpy: "`n_top_genes` > number of normalized dispersions"
        warnings.simplefilter("ignore")
        ref = sc.pp.highly_variable_genes(a, flavor=flavor, n_top_genes=500, inplace=False)
    n_defined = int(df["dispersions_norm"].notna().sum())
    assert np.array_equal(df["highly_variable"].to_numpy(), ref["highly_variable"].to_numpy())
    assert int(df["highly_variable"].sum()) == n_defined and 50 <= n_defined <= n_expr
    assert not df["highly_variable"][st["sum_norm"] == 0].any()  # never an unexpressed gene
    assert len(msgs) == 1  # the library names no config key: scripts/hvg.py adds it (next test)
    assert msgs[0].startswith(f"500 genes asked for but only {n_defined} of 60")
    assert len(embed.hvg_indices(df, 500)) == n_defined
    # asking for exactly what there is gives no warning
    msgs.clear()
    embed.highly_variable_genes_from_stats(
        st["n_obs"], st["sum_norm"], st["sumsq_norm"], sum_log=st["sum_log"],
        sumsq_log=st["sumsq_log"], n_top=n_defined, flavor=flavor, warn=msgs.append,
    )  # fmt: skip
    assert msgs == []


def test_hvg_script_writes_the_warning_to_the_job_log_and_stderr(tmp_path, capfd):
    st = _gene_stats()
    n = st["sum_norm"].size
    stats = pa.table(
        {
            "token_id": np.arange(n, dtype=np.int64),
            "ensembl_id": [f"ENSG{i:05d}" for i in range(n)],
            "gene_symbol": [f"G{i}" for i in range(n)],
            "n_obs": np.full(n, st["n_obs"], dtype=np.int64),
            **{k: st[k] for k in ("sum_norm", "sumsq_norm", "sum_log", "sumsq_log")},
        }
    )
    pq.write_table(stats, tmp_path / "gene_stats.parquet")
    smk = SimpleNamespace(
        input=[str(tmp_path / "gene_stats.parquet")],
        output=[str(tmp_path / "hvg.parquet")],
        log=[str(tmp_path / "hvg.log")],
        params=SimpleNamespace(n_top=2000, flavor="seurat"),
    )
    runpy.run_path(str(REPO / "workflow/scripts/hvg.py"), init_globals={"snakemake": smk})
    log = (tmp_path / "hvg.log").read_text()
    err = capfd.readouterr().err
    line = "WARNING: config key 'embed.hvg.n_top': 2000 genes asked for but only 40 of 60"
    assert line in log and line in err
    assert pq.read_table(tmp_path / "hvg.parquet").column("highly_variable").to_numpy().sum() == 40


def test_more_components_than_selected_hvgs_is_a_clear_error():
    G = np.eye(40) * 3.0
    with pytest.raises(ArgumentError, match="'n_components': 50 is more than the 40 features"):
        pca_from_gram(G, np.ones(40), 300, 50)
    with pytest.raises(ConfigError) as err:  # as scripts/pca.py calls it
        with config_keys(n_components="embed.n_components"):
            pca_from_gram(G, np.ones(40), 300, 50)
    msg = str(err.value)
    assert msg.startswith("config key 'embed.n_components': 50 is more than the 40 features")
    assert msg.endswith("lower it")


# --- 4. KMeans restarts and mini-batch size are config keys ----------------------------------
def test_kmeans_keys_default_to_sklearn_defaults():
    from sklearn.cluster import KMeans, MiniBatchKMeans

    cfg = validate_config(copy.deepcopy(BASE), SCHEMA)
    km = cfg["embed"]["kmeans"]
    assert km["batch_size"] == MiniBatchKMeans().batch_size == 1024
    # sklearn's n_init="auto" is one run for the k-means++ init, for both estimators
    X = np.random.default_rng(0).normal(size=(200, 3))
    for est in (KMeans(3, random_state=0), MiniBatchKMeans(3, random_state=0)):
        assert est.n_init == "auto" and est.init == "k-means++"
        assert est.fit(X)._n_init == km["n_init"] == 1
    for key, bad in (("n_init", 0), ("batch_size", 0), ("n_init", "auto")):
        with pytest.raises(ConfigError, match=f"config key 'embed.kmeans.{key}'"):
            validate_config(_with(f"embed.kmeans.{key}", bad), SCHEMA)


def test_embeddings_rule_passes_n_init_and_batch_size_as_params():
    text = (REPO / "rules/embed.smk").read_text()
    rule = text[text.index("rule embeddings:") :]
    assert 'n_init=config["embed"]["kmeans"]["n_init"]' in rule
    assert 'batch_size=config["embed"]["kmeans"]["batch_size"]' in rule


def _run_embeddings_script(tmp_path: Path, Z: np.ndarray, **params) -> dict:
    ids = [f"c{i}" for i in range(len(Z))]
    proj = pa.table({"cell_id": ids, **{f"pc{j + 1}": Z[:, j] for j in range(Z.shape[1])}})
    pq.write_table(proj, tmp_path / "proj.parquet")
    meta = ["sample", "plate", "drug", "cell_line_id", "moa_fine"]
    cells = pa.table(
        {"cell_id": ids, **{c: ["x"] * len(Z) for c in meta}, "dose_uM": np.zeros(len(Z))}
    )
    pq.write_table(cells, tmp_path / "cells.parquet")
    out = tmp_path / f"out-{params['n_init']}-{params['batch_size']}"
    smk = SimpleNamespace(
        input=SimpleNamespace(proj=[str(tmp_path / "proj.parquet")], cells=str(tmp_path / "cells.parquet")),
        output=SimpleNamespace(
            parquet=str(out / "e.parquet"), csv=str(out / "e.csv"), kmeans=str(out / "k.json")
        ),
        log=[str(out / "log")],
        params=SimpleNamespace(seed=0, max_fit_cells=1_000_000, **params),
    )  # fmt: skip
    runpy.run_path(str(REPO / "workflow/scripts/embeddings.py"), init_globals={"snakemake": smk})
    return json.loads((out / "k.json").read_text())


def test_n_init_and_batch_size_reach_the_clustering(tmp_path):
    # uneven blobs, where k-means++ restarts matter
    rng = np.random.default_rng(4)
    Z = np.vstack(
        [rng.normal(c, s, size=(n, 4)) for c, s, n in ((0, 1, 400), (3, 0.5, 60), (6, 2, 300))]
    ).astype(np.float32)
    common = dict(n_clusters=7, minibatch_threshold=10**6)
    one = _run_embeddings_script(tmp_path, Z, n_init=1, batch_size=1024, **common)
    ten = _run_embeddings_script(tmp_path, Z, n_init=10, batch_size=1024, **common)
    assert one["n_init"] == 1 and ten["n_init"] == 10 and one["method"] == "kmeans"
    assert ten["inertia"] < one["inertia"]  # the best of 10 starts beats the first one
    mb = dict(n_clusters=7, minibatch_threshold=1, n_init=1)
    small = _run_embeddings_script(tmp_path, Z, batch_size=32, **mb)
    big = _run_embeddings_script(tmp_path, Z, batch_size=1024, **mb)
    assert small["method"] == big["method"] == "minibatch_kmeans"
    assert (small["batch_size"], big["batch_size"]) == (32, 1024)
    assert small["inertia"] != big["inertia"]


# --- 5. no shard at or past a known row count ------------------------------------------------
def test_eccite_sized_file_plans_five_shards_none_empty():
    shards = plan_shards([0], 5000, {0: 20_729})
    assert [(s.row_start, s.row_stop) for s in shards] == [
        (0, 5000), (5000, 10000), (10000, 15000), (15000, 20000), (20000, None),
    ]  # fmt: skip


def test_unknown_row_count_is_one_shard_reading_to_the_end():
    shards = plan_shards([0, 1], 5000, {0: None, 1: 12_000})
    assert [(s.name, s.row_start, s.row_stop) for s in shards] == [
        ("00000-0000", 0, None),
        ("00001-0000", 0, 5000),
        ("00001-0001", 5000, 10000),
        ("00001-0002", 10000, None),
    ]
    assert plan_shards([3], 5000, None) == plan_shards([3], 5000, {})  # no count at all
    assert [s.row_stop for s in plan_shards([3], 5000, {})] == [None]


def test_known_empty_file_gets_no_shard():
    shards = plan_shards([0, 1, 2], 5000, {0: 0, 1: 100, 2: 0})
    assert [s.name for s in shards] == ["00001-0000"]
    assert [s.name for s in plan_shards([0, 1], None, {0: 0, 1: 7})] == ["00001"]
    with pytest.raises(ArgumentError, match="'files': the 2 selected file"):
        plan_shards([0, 1], 5000, {0: 0, 1: 0})
    with (  # make_plan (parse time) names the config key
        pytest.raises(ConfigError, match="'source.files': the 2 selected file"),
        config_keys(files="source.files"),
    ):
        plan_shards([0, 1], 5000, {0: 0, 1: 0})


@pytest.mark.parametrize("cps", [100, 999, 1000, 1001, 5000, 50_000])
@pytest.mark.parametrize("n", [1, 99, 100, 1000, 20_729, 28_225])
def test_shards_cover_known_rows_exactly_and_start_inside(n, cps):
    shards = plan_shards([0], cps, {0: n})
    starts = [s.row_start for s in shards]
    stops = [s.row_stop if s.row_stop is not None else n for s in shards]
    assert all(0 <= a < n for a in starts) and stops[-1] == n and shards[-1].row_stop is None
    assert starts == [0] + stops[:-1]  # contiguous, no gap, no overlap
    assert all(b - a <= cps for a, b in zip(starts, stops, strict=True))


def test_cells_per_shard_larger_than_the_file_is_one_shard():
    assert [(s.row_start, s.row_stop) for s in plan_shards([0], 50_000, {0: 20_729})] == [(0, None)]


# --- --config values arrive as strings --------------------------------------------------------
def test_cli_strings_get_the_schema_types():
    # what `--config embed='{...}' source='{...}'` gives (Snakemake parses with BaseLoader)
    cli = {
        "embed": {"n_components": "30", "center": "false", "kmeans": {"n_init": "4"}},
        "source": {"cells_per_shard": "null", "files": "3", "rows_per_file": "+1000"},
        "split": {"test_size": "0.25"},
        "filters": {"cell_lines": ["CVCL_0131"], "min_genes": "5"},
    }
    cfg = copy.deepcopy(BASE)
    for k, v in copy.deepcopy(cli).items():
        cfg.setdefault(k, {}).update(v)
    coerce_cli_values(cfg, cli, SCHEMA)
    validate_config(cfg, SCHEMA)
    assert cfg["embed"]["n_components"] == 30 and cfg["embed"]["center"] is False
    assert cfg["embed"]["kmeans"]["n_init"] == 4 and cfg["filters"]["min_genes"] == 5
    assert cfg["source"]["cells_per_shard"] is None and cfg["source"]["rows_per_file"] == 1000
    assert cfg["split"]["test_size"] == 0.25
    assert cfg["source"]["files"] == "3"  # a string is valid there: left alone


def test_cli_grid_candidates_get_their_types():
    # `--config models='{rf_regressor: {grid: {max_depth: [3, null], max_samples: [0.5]}}}'`
    grid = {"max_depth": ["3", "null"], "max_samples": ["0.5"], "criterion": ["squared_error"]}
    cli = {
        "models": {"rf_regressor": {"grid": grid}},
        "updown": {"rf_grid": {"n_estimators": ["8"]}},
    }
    cfg = copy.deepcopy(BASE)
    for k, v in copy.deepcopy(cli).items():
        cfg.setdefault(k, {}).update(v)
    coerce_cli_values(cfg, cli, SCHEMA)
    validate_config(cfg, SCHEMA)
    assert cfg["models"]["rf_regressor"]["grid"] == {
        "max_depth": [3, None], "max_samples": [0.5], "criterion": ["squared_error"]
    }  # fmt: skip
    assert cfg["updown"]["rf_grid"] == {"n_estimators": [8]}


def test_cli_strings_that_do_not_spell_the_type_still_fail_naming_the_key():
    for value, words in (("3O", "'3O' should be of type integer"), ("1.5", "'1.5' should be")):
        cli = {"embed": {"n_components": value}}
        cfg = _with("embed.n_components", value)
        coerce_cli_values(cfg, cli, SCHEMA)
        with pytest.raises(ConfigError, match=re.escape(words)):
            validate_config(cfg, SCHEMA)
    # a quoted value from a config file (not from --config) is not converted
    cfg = _with("embed.n_components", "30")
    coerce_cli_values(cfg, {}, SCHEMA)
    with pytest.raises(ConfigError, match="'30' should be of type integer"):
        validate_config(cfg, SCHEMA)


# --- extra cases -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("path", "value", "key", "hint"),
    [
        ("embd", {}, "embd", "did you mean 'embed'?"),
        ("embed.n_component", 3, "embed.n_component", "did you mean 'n_components'?"),
        ("source.hub.revison", "main", "source.hub.revison", "did you mean 'revision'?"),
    ],
)
def test_unknown_key_suggests_the_close_one(path, value, key, hint):
    with pytest.raises(ConfigError) as err:
        validate_config(_with(path, value), SCHEMA)
    assert str(err.value) == (
        f"config key '{key}': unknown key ({hint} see config/schema.yaml for the valid keys)"
    )


def test_section_with_all_keys_commented_out_takes_the_defaults():
    cfg = yaml.safe_load("source:\n  kind: demo\n  hub:\n    # revision: main\nembed:\n")
    assert cfg["source"]["hub"] is None and cfg["embed"] is None
    validate_config(cfg, SCHEMA)
    assert cfg["source"]["hub"]["repo_id"] == "tahoebio/Tahoe-100M"
    assert cfg["embed"]["n_components"] == 50
    # a key whose null is meaningful keeps it
    assert validate_config(_with("updown.rf_grid", None), SCHEMA)["updown"]["rf_grid"] is None


def test_yaml_boolean_where_a_string_is_expected_says_quote_it():
    cfg = yaml.safe_load("filters:\n  plates: [plate1, no]\ncontrol_drug: off\n")
    assert cfg["filters"]["plates"] == ["plate1", False]
    with pytest.raises(ConfigError) as err:
        validate_config(cfg, SCHEMA)
    assert str(err.value).startswith("config key 'control_drug': False should be of type string")
    assert 'quote the value, e.g. "no"' in str(err.value)
    with pytest.raises(ConfigError, match=r"'filters.plates.1': False .* quote the value"):
        validate_config(yaml.safe_load("filters:\n  plates: [plate1, no]\n"), SCHEMA)


@pytest.mark.parametrize(
    ("path", "grid", "key"),
    [
        ("models.rf_regressor.grid", {"n_estimators": [50], "max_depth": 8}, "max_depth"),
        ("models.rf_regressor.grid", {"n_estimators": []}, "n_estimators"),
        ("updown.rf_grid", {"n_estimators": 10}, "n_estimators"),
    ],
)
def test_parameter_grid_value_that_is_not_a_list_names_the_key(path, grid, key):
    with pytest.raises(ConfigError, match=re.escape(f"config key '{path}.{key}'")):
        validate_config(_with(path, grid), SCHEMA)
    ok = {k: (v if isinstance(v, list) and v else [1]) for k, v in grid.items()}
    validate_config(_with(path, ok), SCHEMA)


def test_manifest_missing_negative_or_repeated_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"'source.manifest': cannot read .*absent.tsv"):
        read_manifest(tmp_path / "absent.tsv")
    cfg = validate_config(_with("source.manifest", str(tmp_path / "absent.tsv")), SCHEMA)
    with pytest.raises(ConfigError, match="'source.manifest': cannot read"):
        make_plan(cfg)
    neg = _write(tmp_path, "file\tn_rows\n0\t100\n1\t-5\n", "neg.tsv")
    with pytest.raises(ConfigError, match=r"neg.tsv, row 1: n_rows -5 is negative"):
        read_manifest(neg)
    rep = _write(
        tmp_path,
        "file\tn_rows\n0\t100\ntrain-00000-of-03388.parquet\t200\n",
        "rep.tsv",
    )
    with pytest.raises(ConfigError, match=r"rep.tsv, row 1: file 0 is listed a second time"):
        read_manifest(rep)
    short = _write(tmp_path, "file\tn_rows\n0\n", "short.tsv")
    with pytest.raises(ConfigError, match="row 0: cannot read file '0' / n_rows None"):
        read_manifest(short)


@pytest.mark.parametrize(
    ("spec", "why"),
    [("5:2", "its stop is before its start"), ("4:4", "its stop equals its start")],
)
def test_reversed_or_empty_range_says_why(spec, why):
    with pytest.raises(ArgumentError) as err:
        parse_file_selection(spec, 10)
    assert (
        str(err.value) == f"argument 'spec': range '{spec}' is empty ({why}; the stop is exclusive)"
    )
    with pytest.raises(ConfigError) as err:  # at parse time: the config key
        make_plan(validate_config(_with("source.files", spec), SCHEMA))
    assert str(err.value) == (
        f"config key 'source.files': range '{spec}' is empty ({why}; the stop is exclusive)"
    )


# --- the same at parse time, through Snakemake --------------------------------------------------
def _dry_run(workdir: Path, configfile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(REPO / "config/config.yaml"), str(configfile), "--cores", "1",
           "-n", "--quiet", "rules", *args]  # fmt: skip
    env = {**os.environ, "PATH": f"{_NO_SLURM}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=workdir, timeout=300)


@pytest.mark.workflow
def test_snakemake_dry_run_rejects_unquoted_range_and_types_cli_values(tmp_path):
    small = "demo: {n_files: 6, cells_per_file: 500}\n"
    bad = _write(tmp_path, small + "source:\n  kind: demo\n  files: [0, 1:3]\n", "bad.yaml")
    proc = _dry_run(tmp_path, bad)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert (
        f"Invalid configuration: config key 'source.files': `1:3` in {bad}, line 4 is read by "
        'YAML as the base-60 number 63; quote it ("1:3")'
    ) in out
    good = _write(tmp_path, small + 'source:\n  kind: demo\n  files: [0, "1:3"]\n', "good.yaml")
    proc = _dry_run(tmp_path, good, "--config", "embed={n_components: 30, kmeans: {n_init: 2}}")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "should be of type" not in out
    assert re.search(r"summarize_shard\s+3\b", out), out[-3000:]  # files 0, 1, 2
