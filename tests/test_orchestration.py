"""Orchestration tests: real Snakemake in temporary folders.

One tiny demo run is completed once (module fixture); every rerun case is then a dry run on
that folder and asserts, from Snakemake's own "Job stats" table, exactly which jobs would run.
The expected job sets are derived from the workflow's rule graph (``--rulegraph``) and the full
job counts (``--forceall -n``) of the same config, so they follow the DAG as stages are added;
what is hard-coded is only *where* each change enters the DAG (the rules whose ``params:`` use
the changed key, or the edited script's rule).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest
from conftest import REPO, SMALL_STAGES, config_with, copy_repo, run_smk, schema_has, set_key

pytestmark = pytest.mark.workflow


# The source has 4 demo files from the start; the base run uses the first 2. Growing the
# selection to 0:4 is then "two new source files" (changing demo.n_files would change the demo
# design itself and rightly regenerate everything).
BASE_CONFIG = {
    "source": {"kind": "demo", "files": "0:2", "cells_per_shard": None},
    "demo": {"n_files": 4, "cells_per_file": 500},
}


# --------------------------------------------------------------------------- config helpers
def small_config(**changes) -> dict:
    """BASE_CONFIG + small analysis sizes; ``changes`` maps 'a.b.c' to a value."""
    cfg = config_with(SMALL_STAGES, BASE_CONFIG)
    for dotted, value in changes.items():
        path = tuple(dotted.split("."))
        assert schema_has(path), f"config key {dotted} is not in config/schema.yaml"
        set_key(cfg, path, value)
    return cfg


# --------------------------------------------------------------------------- snakemake helpers
def smk(
    workdir: Path,
    config: dict,
    *args: str,
    snakefile: Path | None = None,
    cores: int = 1,
    timeout: int = 600,
) -> subprocess.CompletedProcess:
    """``run_smk`` that must succeed; ``snakefile`` overrides its ``-s`` (the last ``-s`` wins)."""
    if snakefile is not None:
        args = ("-s", str(snakefile), *args)
    proc = run_smk(workdir, config, *args, cores=cores, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


_STATS = re.compile(
    r"^Job stats:\njob\s+count\n[-\s]+\n(?P<rows>.*?)^total\s+(?P<total>\d+)\s*$", re.M | re.S
)


def parse_job_stats(text: str) -> dict[str, int]:
    """Snakemake's own "Job stats" table as {rule: jobs}; {} for "Nothing to be done"."""
    m = _STATS.search(text)
    if m is None:
        if "Nothing to be done" in text:
            return {}
        raise AssertionError(f"no 'Job stats' table in the Snakemake output:\n{text[-3000:]}")
    counts = {}
    for line in m.group("rows").splitlines():
        if line.strip():
            rule, n = line.split()
            counts[rule] = int(n)
    assert sum(counts.values()) == int(m.group("total")), text
    return counts


def planned(
    workdir: Path, config: dict, *args: str, snakefile: Path | None = None
) -> dict[str, int]:
    """Jobs a dry run would execute, by rule (``-n --quiet rules`` prints only the table)."""
    proc = smk(workdir, config, *args, "--dry-run", "--quiet", "rules", snakefile=snakefile)
    return parse_job_stats(proc.stdout + proc.stderr)


def list_rules(workdir: Path, config: dict, snakefile: Path | None = None) -> set[str]:
    """Rule names from ``--list-rules`` (a line is "name" or "name (docstring)")."""
    out = smk(workdir, config, "--list-rules", snakefile=snakefile).stdout
    return {m.group(1) for m in re.finditer(r"^(\w+)(?: \(.*\))?$", out, re.M)}


def rule_graph(workdir: Path, config: dict, snakefile: Path | None = None) -> dict[str, set[str]]:
    """{rule: rules that consume its output} from ``--rulegraph`` (dot)."""
    dot = smk(workdir, config, "--forceall", "--rulegraph", snakefile=snakefile).stdout
    names = dict(re.findall(r'^\s*(\d+)\[label = "([^"]+)"', dot, re.M))
    graph = {name: set() for name in names.values()}
    for a, b in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M):
        graph[names[a]].add(names[b])
    assert graph, dot
    return graph


def descendants(graph: dict[str, set[str]], roots: set[str]) -> set[str]:
    seen, todo = set(), [r for r in roots if r in graph]
    while todo:
        r = todo.pop()
        if r not in seen:
            seen.add(r)
            todo.extend(graph[r])
    return seen


def expected_jobs(graph, full_counts, roots) -> dict[str, int]:
    """Every job of every rule downstream of ``roots`` (inclusive)."""
    return {r: full_counts[r] for r in descendants(graph, roots)}


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A completed tiny demo run (``--cores 2``), its rule graph and full job counts.

    Everything in this module runs a snapshot of the workflow taken here, so that edits to the
    working tree while the tests run (scripts are part of the rerun triggers) cannot leak in.
    """
    root = tmp_path_factory.mktemp("orchestration")
    sf = copy_repo(root / "repo") / "Snakefile"
    wd = root / "base"
    cfg = small_config()
    t0 = time.perf_counter()
    smk(wd, cfg, snakefile=sf, cores=2)
    elapsed = time.perf_counter() - t0
    graph = rule_graph(wd, cfg, sf)
    full = planned(wd, cfg, "--forceall", snakefile=sf)
    return {"root": root, "wd": wd, "cfg": cfg, "sf": sf, "graph": graph, "full": full,
            "elapsed": elapsed, "rules": list_rules(wd, cfg, sf)}  # fmt: skip


def shard_count(base) -> int:
    return base["full"]["summarize_shard"]


# --------------------------------------------------------------------------- rerun cases
def test_nothing_changed_nothing_to_do(base):
    assert base["full"]["summarize_shard"] == 2 and base["full"]["demo_file"] == 2
    assert planned(base["wd"], base["cfg"], snakefile=base["sf"]) == {}


def test_filter_param_reruns_summaries_and_downstream_only(base):
    # filters.* is a param of the shard summaries (and of the later per-shard passes and
    # merges, which are all downstream of them); the demo inputs do not depend on it.
    cfg = small_config(**{"filters.min_genes": 20})
    got = planned(base["wd"], cfg, snakefile=base["sf"])
    want = expected_jobs(base["graph"], base["full"], {"summarize_shard"})
    assert got == want
    assert got["summarize_shard"] == shard_count(base)
    assert {"merge_cells", "merge_gene_stats", "merge_pseudobulk"} <= set(got)
    assert not {"demo_file", "demo_metadata"} & set(got)


def test_new_source_files_run_only_new_shards_then_merges(base):
    cfg = small_config(**{"source.files": "0:4"})
    got = planned(base["wd"], cfg, snakefile=base["sf"])
    graph = rule_graph(base["wd"], cfg, base["sf"])
    full4 = planned(base["wd"], cfg, "--forceall", snakefile=base["sf"])
    # Per-shard rules not downstream of any single-job (aggregate) rule run only for the new
    # shards; everything downstream of an aggregate reruns completely.
    per_file = descendants(graph, {"demo_file"})
    aggregates = {r for r in per_file if full4[r] == 1}
    after_aggregate = descendants(graph, aggregates)
    want = {
        r: (full4[r] - base["full"].get(r, 0) if r not in after_aggregate else full4[r])
        for r in per_file
    }
    assert got == want
    assert got["demo_file"] == 2 and got["summarize_shard"] == 2
    assert "demo_metadata" not in got


def test_shards_per_job_regroups_only_the_embedding_passes(base):
    # 2 shards: one group (null: 4 a job) in the base run, two groups of 1 here
    assert base["full"]["gram_batch"] == base["full"]["project_batch"] == 1
    cfg = small_config(**{"embed.shards_per_job": 1})
    got = planned(base["wd"], cfg, snakefile=base["sf"])
    full1 = planned(base["wd"], cfg, "--forceall", snakefile=base["sf"])
    assert full1["gram_batch"] == full1["project_batch"] == shard_count(base) == 2
    # the cell-cycle scores read the shards in the same groups
    assert full1["cell_cycle_batch"] == 2
    assert got == expected_jobs(base["graph"], full1, {"gram_batch", "cell_cycle_batch"})
    assert not {"summarize_shard", "merge_cells", "hvg", "demo_file"} & set(got)


def test_script_edit_reruns_that_rule_and_downstream(base, tmp_path):
    # a second copy of the snapshot (mtimes kept), so the edit stays in this test
    repo = tmp_path / "repo"
    shutil.copytree(base["sf"].parent, repo)
    snakefile = repo / "Snakefile"
    assert planned(base["wd"], base["cfg"], snakefile=snakefile) == {}
    script = repo / "workflow" / "scripts" / "merge_gene_stats.py"
    script.write_text(script.read_text() + "\n# edited by test_orchestration\n")
    got = planned(base["wd"], base["cfg"], snakefile=snakefile)
    want = expected_jobs(base["graph"], base["full"], {"merge_gene_stats"})
    assert got == want
    assert not {"summarize_shard", "merge_cells", "merge_pseudobulk", "demo_file"} & set(got)


# Library modules and the rules whose scripts import them (directly or through other modules),
# read off the scripts' import lines by hand: the test does not use the code under test.
LIBRARY_EDITS = {
    "merge/gene_stats.py": {"merge_gene_stats"},
    "de/updown.py": {"updown"},
    "embed/pca.py": {"gram_batch", "pca", "project_batch"},
    # the later passes' reader (Gram, cell cycle), not the summary's
    "cells/selected.py": {"gram_batch", "cell_cycle_batch"},
}


@pytest.mark.parametrize("module", sorted(LIBRARY_EDITS))
def test_library_edit_reruns_exactly_the_rules_that_run_it(base, tmp_path, module):
    repo = tmp_path / "repo"
    shutil.copytree(base["sf"].parent, repo)
    snakefile = repo / "Snakefile"
    src = repo / "src" / "tahoeflow" / module
    src.write_text(src.read_text() + "\nEDITED_BY_TEST = 1\n")
    got = planned(base["wd"], base["cfg"], snakefile=snakefile)
    assert got == expected_jobs(base["graph"], base["full"], LIBRARY_EDITS[module])
    assert "summarize_shard" not in got and "demo_file" not in got


# key changed, new value, rules whose params use it (where the change enters the DAG), rules
# that must exist, and rules that must NOT rerun (a sanity bound on top of the exact set).
PARAM_CASES = {
    "ridge_alpha": (
        "models.ridge.alpha", 2.0, {"ridge", "split_comparison"}, {"ridge"},
        {"rf_classifier", "rf_regressor", "baselines", "hvg", "pca", "summarize_shard", "split", "features"},
    ),
    "rf_n_estimators": (
        "models.rf.n_estimators", 12, {"rf_classifier", "baselines", "split_comparison"}, {"rf_classifier"},
        {"ridge", "rf_regressor", "hvg", "pca", "summarize_shard", "split", "features"},
    ),
    "hvg_n_top": (
        "embed.hvg.n_top", 150, {"hvg"}, {"hvg", "gram_batch", "pca", "project_batch"},
        {"ridge", "rf_regressor", "summarize_shard", "merge_cells", "merge_gene_stats", "split", "features"},
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(PARAM_CASES))
def test_analysis_param_reruns_only_its_stage(base, case):
    key, value, roots, needed, never = PARAM_CASES[case]
    missing = needed - base["rules"]
    if missing:
        pytest.skip(f"rules {sorted(missing)} are not in the workflow yet (snakemake --list-rules)")
    if not schema_has(tuple(key.split("."))):
        pytest.skip(f"config key {key} is not in config/schema.yaml yet")
    got = planned(base["wd"], small_config(**{key: value}), snakefile=base["sf"])
    want = expected_jobs(base["graph"], base["full"], roots)
    assert got == want
    assert not never & set(got), f"{key} must not rerun {sorted(never & set(got))}"


# Rules that only provide inputs for the other source kinds (hub downloads, h5ad conversion).
SOURCE_ONLY = re.compile(r"^(download|h5ad|prepare)_")
# Partial merges exist only with more shards than merge.fan_in (the demo has 4, the default
# fan-in is 16): test_merge_hierarchy.py runs them.
ABOVE_FAN_IN = {"merge_part_cells", "merge_part_gene_stats", "merge_part_pseudobulk"}
# The model sample's PCs exist only when the forests use them (models.rf.use_pcs; off in the
# demo): test_model_sample.py plans them.
PCS_ONLY = {"model_sample_pcs"}


def test_every_rule_is_in_the_demo_dag(base):
    """No stage is orphaned: every rule except the other sources' input rules is in the DAG."""
    missing = {r for r in base["rules"] - set(base["graph"]) - ABOVE_FAN_IN - PCS_ONLY
               if not SOURCE_ONLY.match(r)}  # fmt: skip
    assert not missing, f"rules not reachable from rule all with the demo source: {sorted(missing)}"
    assert "summarize_shard" in base["graph"] and "all" in base["graph"]


# --------------------------------------------------------------------------- parallel shards
_TS = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")


def job_intervals(log: str, rule: str) -> list[tuple[datetime, datetime]]:
    """[start, end] of each job of ``rule`` from Snakemake's own timestamped log."""
    ts, jobs, starts, current = None, {}, {}, None
    for line in log.splitlines():
        m = _TS.match(line.strip())
        if m:
            ts = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        s = line.strip()
        if re.match(rf"^(local)?rule {rule}:$", s):
            current = ts
        elif current is not None and s.startswith("jobid:"):
            starts[s.split()[1]] = current
            current = None
        else:
            m = re.match(r"^Finished jobid: (\d+) \(Rule: (\w+)\)", s)
            if m and m.group(2) == rule:
                jobs[m.group(1)] = (starts[m.group(1)], ts)
    return list(jobs.values())


def parquet_digests(wd: Path) -> dict[str, str]:
    out = {}
    for p in sorted((wd / "results").rglob("*.parquet")):
        rel = p.relative_to(wd).as_posix()
        if rel.startswith(("results/benchmarks/", "results/logs/")):
            continue
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_two_cores_run_shards_concurrently(base, tmp_path):
    par = tmp_path / "par"
    shutil.copytree(base["wd"], par, symlinks=True)
    targets = [f"results/shards/{s}/qc.json" for s in ("00000", "00001")]
    proc = smk(
        par,
        base["cfg"],
        "--forcerun",
        "summarize_shard",
        "--",
        *targets,
        snakefile=base["sf"],
        cores=2,
    )
    spans = job_intervals(proc.stderr + proc.stdout, "summarize_shard")
    assert len(spans) == 2, proc.stderr[-3000:]
    # two closed intervals overlap iff the later start is before the earlier end
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans
    # the benchmark TSVs agree: each job ran for a while (not an instant no-op)
    for shard in ("00000", "00001"):
        rows = (par / f"results/benchmarks/summarize/{shard}.tsv").read_text().splitlines()
        assert float(rows[-1].split("\t")[0]) > 0.1, rows
    # same shard outputs as the base run
    base_d, par_d = parquet_digests(base["wd"]), parquet_digests(par)
    shard_files = [k for k in par_d if k.startswith("results/shards/")]
    assert shard_files and all(par_d[k] == base_d[k] for k in shard_files)


def test_one_core_and_two_cores_give_identical_parquet(base, tmp_path):
    seq = tmp_path / "seq"
    smk(seq, base["cfg"], snakefile=base["sf"], cores=1)
    two, one = parquet_digests(base["wd"]), parquet_digests(seq)
    assert two and set(two) == set(one)
    differ = sorted(k for k in two if two[k] != one[k])
    assert not differ, f"--cores 1 and --cores 2 differ in {differ}"


# --------------------------------------------------------------------------- resources, lint, format
_RULE = re.compile(r"^(?:rule|checkpoint) (\w+):\n((?:[ \t]+.*\n|\n)*)", re.M)


def rule_blocks() -> dict[str, str]:
    blocks = {}
    for f in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk"))]:
        for m in _RULE.finditer(f.read_text() + "\n"):
            blocks[m.group(1)] = m.group(2)
    return blocks


def test_every_rule_declares_log_threads_and_resources():
    blocks = rule_blocks()
    assert "summarize_shard" in blocks
    problems = []
    for name, body in blocks.items():
        if not re.search(r"^\s+(script|shell|run|wrapper|notebook):", body, re.M):
            continue  # rule all and other target-only rules
        for directive in ("log", "threads", "resources"):
            if not re.search(rf"^\s+{directive}:", body, re.M):
                problems.append(f"{name}: no {directive}:")
        res = re.search(r"^(\s+)resources:\n((?:\1\s+.*\n)+)", body, re.M)
        for key in ("mem_mb", "runtime"):
            if not res or not re.search(rf"^\s+{key}\s*=", res.group(2), re.M):
                problems.append(f"{name}: resources without {key}")
    assert not problems, problems


def test_every_job_gets_log_and_resources_in_dry_run(base):
    """Effective values: with no profile defaults, each job still shows log, mem_mb and runtime."""
    proc = smk(
        base["wd"],
        base["cfg"],
        "--forceall",
        "--dry-run",
        "--workflow-profile",
        "none",
        snakefile=base["sf"],
    )
    text = proc.stdout
    jobs = re.findall(r"^(?:local)?rule (\w+):\n((?:    .*\n)+)", text, re.M)
    assert jobs
    problems = []
    for name, body in jobs:
        if name == "all":
            continue
        if not re.search(r"^\s+log: \S", body, re.M):
            problems.append(f"{name}: no log")
        res = re.search(r"^\s+resources: (.*)$", body, re.M)
        if not res or "mem_mb=" not in res.group(1) or "runtime=" not in res.group(1):
            problems.append(f"{name}: resources {res.group(1) if res else None}")
    assert not problems, sorted(set(problems))


def test_snakemake_lint_is_clean(base):
    proc = run_smk(base["root"] / "lint", base["cfg"], "--lint")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Lints for" not in out, out[-8000:]


def test_snakefmt_check_passes():
    snakefmt = shutil.which("snakefmt") or str(Path(sys.executable).with_name("snakefmt"))
    if not Path(snakefmt).exists():
        pytest.skip("snakefmt is not installed")
    proc = subprocess.run(
        [snakefmt, "--check", "--diff", "."], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-8000:]


# --------------------------------------------------------------------------- DAG scale
N_HUB_FILES = 3388


def test_dry_run_scales_to_all_hub_files(tmp_path, monkeypatch):
    manifest = tmp_path / "manifest.tsv"
    subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "make_manifest.py"), "-o", str(manifest)],
        check=True,
    )
    rows = manifest.read_text().splitlines()
    assert len(rows) == N_HUB_FILES + 1 and {r.split("\t")[1] for r in rows[1:]} == {
        "28224",
        "28225",
    }
    cfg = {"source": {"kind": "hub", "files": f"0:{N_HUB_FILES}", "manifest": str(manifest)}}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network: a dry run must not touch the hub
    t0 = time.perf_counter()
    got = planned(tmp_path / "wd", cfg)
    elapsed = time.perf_counter() - t0
    print(f"dry run over {N_HUB_FILES} hub files: {elapsed:.1f} s, {sum(got.values())} jobs")
    # summarize.shards_per_job null: at most 256 summary jobs (14 files each: 242)
    assert got["summarize_shard"] == -(-N_HUB_FILES // 14) == 242
    # embed.shards_per_job null: 14 files a job, so each shard pass has 242 jobs too
    assert got["gram_batch"] == got["project_batch"] == got["cell_cycle_batch"] == 242
    assert got["download_data"] == N_HUB_FILES
    assert elapsed < 300


# --------------------------------------------------------------------------- every config key
# Each leaf key of config/schema.yaml: a new value and the rules whose params (or inputs) take
# it, i.e. where the change enters the DAG; everything downstream of them must be planned, and
# nothing else. Keys that cannot change any output of the demo run are changed all together in
# one dry run that must plan nothing; keys that change the shape of the DAG are listed with the
# test that covers them. A key added to the schema without an entry here fails the test.
DEMO = {"demo_metadata", "demo_file"}
FILTERED = {"summarize_shard", "gram_batch", "project_batch", "de_welch", "report_figures",
            "merge_cells", "cell_cycle_batch"}  # fmt: skip
KEY_ENTRIES: dict[str, tuple[object, set[str]]] = {
    **{f"demo.{k}": (v, DEMO) for k, v in {
        "seed": 2, "row_group_size": 100, "n_drugs": 5, "control_wells_per_plate": 1,
        "frac_active_drugs": 0.5, "genes_per_effect": 100, "effect_sd": 0.8,
        "frac_resistant": 0.5, "well_sd": 0.1, "libsize_log_mean": 7.0, "libsize_sd": 0.3,
        "n_expressed_genes": 15000, "silent_genes": False, "n_cell_lines": 2, "n_plates": 2,
        "cells_per_file": 400,
        "n_files": 5,
    }.items()},
    "filters.cell_lines": (["CVCL_0131", "CVCL_1239"], FILTERED),
    "filters.plates": (["plate1"], FILTERED),
    "filters.drugs": ("<two drugs of the data>", FILTERED),
    "filters.min_genes": (20, FILTERED),
    "input.normalised": (True, FILTERED),
    "control_drug": ("DMSO_TF ", FILTERED | {"de_part", "de_pseudobulk", "pergene_fit",
                                             "phenotype_counts", "sensitivity"}),
    "split.by": ("sample", {"split"}),
    "split.test_size": (0.25, {"split", "split_comparison"}),
    "split.seed": (1, {"split", "split_comparison"}),
    "features.numeric": (["expr_mean", "n_genes"], {"features"}),
    "features.categorical": (["drug", "cell_line_id"], {"features"}),
    "features.poly_degree": (1, {"features"}),
    "embed.hvg.n_top": (150, {"hvg"}),
    "embed.hvg.flavor": ("cell_ranger", {"hvg"}),
    "embed.n_components": (8, {"pca"}),
    "embed.center": (False, {"pca"}),
    "embed.kmeans.n_clusters": (5, {"embeddings"}),
    "embed.kmeans.minibatch_threshold": (100, {"embeddings"}),
    "embed.kmeans.seed": (1, {"embeddings"}),
    "embed.kmeans.n_init": (2, {"embeddings"}),
    "embed.kmeans.batch_size": (256, {"embeddings"}),
    "embed.kmeans.max_fit_cells": (100, {"embeddings"}),
    "models.cv_folds": (3, {"ridge", "rf_classifier", "baselines"}),
    "models.seed": (1, {"model_sample", "ridge", "rf_classifier", "baselines", "rf_regressor"}),
    "models.max_train_cells": (100, {"model_sample"}),
    "models.max_test_cells": (100, {"model_sample"}),
    "models.ridge.alpha": (2.0, {"ridge", "split_comparison"}),
    "models.ridge.features": (["drug", "cell_line_id"], {"ridge", "split_comparison"}),
    "models.rf.n_estimators": (12, {"rf_classifier", "baselines", "split_comparison"}),
    "models.rf.max_depth": (6, {"rf_classifier", "baselines", "split_comparison"}),
    "models.rf.max_samples": (0.5, {"rf_classifier", "baselines", "split_comparison"}),
    "models.rf.max_leaf_nodes": (50, {"rf_classifier", "baselines", "split_comparison"}),
    "models.rf_regressor.features": (["drug", "dose", "n_genes"], {"rf_regressor"}),
    "models.rf_regressor.grid": ({"n_estimators": [8], "max_depth": [3]}, {"rf_regressor"}),
    "models.rf_regressor.cv_folds": (2, {"rf_regressor"}),
    "models.grouped_split_by": ("plate", {"split_comparison"}),
    "de.method": ("trend", {"de_part", "de_pseudobulk"}),
    "de.min_cells": (6, {"de_part", "pergene_fit"}),
    "de.min_control_wells": (1, {"de_part"}),
    "de.prior_count": (1.0, {"de_part"}),
    "de.pool_plates": (False, {"de_part"}),
    "de.voom.gene_filter": ("pooled", {"de_part"}),
    "de.voom.axis": ("inv_sqrt", {"de_part"}),
    "de.voom.fitted": ("midpoint", {"de_part"}),
    "de.alpha": (0.1, {"de_pseudobulk"}),
    "de.calls_by": ("contrast", {"de_pseudobulk"}),
    "de.top_volcano": (3, {"de_pseudobulk"}),
    "de.welch.max_conditions": (2, {"de_welch"}),
    "de.welch.conditions": ([{"drug": "no such drug"}], {"de_welch"}),
    "updown.seed": (1, {"updown"}),
    "updown.cv_folds": (2, {"updown"}),
    "updown.max_rows": (2000, {"updown"}),
    "updown.rf_grid": ({"n_estimators": [8], "max_depth": [3]}, {"updown"}),
    "pergene.n_top_genes": (30, {"pergene_fit"}),
    "pergene.cv_folds": (2, {"pergene_fit"}),
    "pergene.n_alphas": (5, {"pergene_fit"}),
    "pergene.test_size": (0.3, {"pergene_fit"}),
    "pergene.seed": (1, {"pergene_fit"}),
    "pergene.table.feature_columns": (["x"], {"pergene_fit", "pergene_apply"}),
    "pergene.table.gene_columns": (["g"], {"pergene_fit"}),
    "phenotypes.sensitivity.pseudocount": (1.0, {"sensitivity"}),
    "phenotypes.cell_cycle.n_bins": (20, {"cell_cycle_genes"}),
    "phenotypes.cell_cycle.seed": (1, {"cell_cycle_genes"}),
    "phenotypes.cell_cycle.pseudocount": (1.0, {"cell_cycle"}),
    "phenotypes.cell_cycle.min_cells": (5, {"cell_cycle"}),
    "phenotypes.cell_cycle.alpha": (0.1, {"cell_cycle"}),
    "phenotypes.landscape.moa_column": ("moa-broad", {"landscape"}),
    "phenotypes.landscape.exclude_moa": ([], {"landscape"}),
    "phenotypes.landscape.signature": ("drug_dose", {"landscape"}),
    "phenotypes.landscape.n_permutations": (100, {"landscape"}),
    "phenotypes.landscape.seed": (1, {"landscape"}),
}  # fmt: skip
# Changed all at once, these must plan nothing with the demo source (they configure the other
# sources, which the demo run does not read).
NO_RERUN_UNDER_DEMO: dict[str, object] = {
    "source.rows_per_file": 500,  # demo shards take their rows from demo.cells_per_file
    "source.hub.repo_id": "someone/Other",
    "source.hub.revision": "0123456789abcdef0123456789abcdef01234567",
    "source.hub.n_files_total": 10,
    "source.hub.download_dir": "elsewhere/hub",
    "source.hub.cache_dir": "elsewhere/cache",
    "source.hub.max_retries": 1,
    "source.hub.timeout_s": 5,
    "source.hub.download_on_submit_host": True,
    "source.h5ad.paths": ["x.h5ad"],
    "source.h5ad.prepare": None,
    "source.h5ad.obs_map": {"drug": "treatment"},
    "source.h5ad.control_value": "DMSO",
    "source.h5ad.layer": "counts",
    "source.h5ad.dose_unit": "nM",
    "source.h5ad.gene_id_column": "gene_ids",
    "source.h5ad.gene_symbol_column": "symbol",
    "source.h5ad.mito_prefix": "mt-",
    "source.local.path": "elsewhere/mirror",
    "source.local.n_files_total": 10,
    "source.stream.start": 1000,
    "source.stream.n_cells": 500,
    # the obs source's settings (phenotypes.sensitivity.from: cells reads the merged cells)
    "phenotypes.obs.path": "elsewhere/obs_metadata.parquet",
    "phenotypes.obs.pass_filter": None,
    # switching a stage off removes targets; the finished outputs of the others stay current
    **{f"stages.{k}": False for k in ("embed", "models", "de", "updown", "pergene", "anndata",
                                      "report", "phenotypes")},
}  # fmt: skip
# Keys that change the shape of the DAG (which jobs exist), each covered by its own test.
DAG_SHAPE = {
    "source.kind": "another source: test_hub_workflow, test_h5ad_source, test_data_safety, "
    "test_obs_source (obs: the phenotype jobs only)",
    "source.files": "test_new_source_files_run_only_new_shards_then_merges",
    "source.cells_per_shard": "test_staleness (row ranges of shards)",
    "source.manifest": "test_staleness (row ranges of shards); a manifest is read at parse time",
    "embed.shards_per_job": "test_shards_per_job_regroups_only_the_embedding_passes",
    "merge.fan_in": "test_merge_hierarchy.py::test_workflow_fan_in_adds_partial_merges_and_"
    "keeps_the_merged_files (partial merges above fan_in shards; the demo has none)",
    "summarize.shards_per_job": "test_merge_hierarchy.py::test_workflow_fan_in_adds_partial_"
    "merges_and_keeps_the_merged_files (summary groups: fewer summary jobs, same merged files)",
    "updown.toptable": "test_external_inputs (up/down on an external topTable)",
    "pergene.mode": "test_external_inputs (per-gene models in table mode)",
    "pergene.table.path": "test_external_inputs (per-gene models in table mode)",
    "pergene.apply_table": "test_external_inputs; test_data_safety (never a rule's output)",
    "embed.h5ad_max_cells": "test_atlas_prep.py::test_embeddings_csv_is_a_target_only_up_to_"
    "the_cap (the embeddings h5ad: which targets exist)",
    "embed.csv_max_cells": "test_atlas_prep.py::test_embeddings_csv_is_a_target_only_up_to_"
    "the_cap (which targets exist; no rule takes it in params)",
    "models.rf.use_pcs": "test_model_sample.py::test_use_pcs_adds_the_sampled_pcs_to_the_forests "
    "(the model_sample_pcs job exists only then)",
    "models.rf.n_pcs": "used only with models.rf.use_pcs, else the param is None",
    "de.jobs": "test_de.py::test_de_jobs_plan_one_part_per_job_and_reproduce_one_job",
    "phenotypes.sensitivity.from": "test_phenotypes_sensitivity.py::test_workflow_counts_merged_"
    "cells_then_switches_to_an_obs_file (obs: a local file or the hub download rule); null: "
    "test_obs_source.py (obs with source.kind obs, else cells)",
}


# Rules whose inputs are temp() outputs (removed once consumed): rerunning the rule reruns
# their producer too. (The Gram jobs' HVG counts, which the projections read, are kept.)
TEMP_INPUTS = {"pca": "gram_batch", "embeddings": "project_batch"}


def schema_leaves() -> list[str]:
    from conftest import SCHEMA

    out = []

    def walk(node, path):
        props = node.get("properties")
        if props and node.get("type") == "object":
            for k, v in props.items():
                walk(v, [*path, k])
        else:
            out.append(".".join(path))

    walk(SCHEMA, [])
    return out


def test_every_schema_key_is_classified():
    keys = set(schema_leaves())
    known = set(KEY_ENTRIES) | set(NO_RERUN_UNDER_DEMO) | set(DAG_SHAPE)
    assert not keys - known, f"add these keys to the tables above: {sorted(keys - known)}"
    assert not known - keys, f"not in config/schema.yaml: {sorted(known - keys)}"


def test_keys_of_other_sources_change_nothing_in_a_demo_run(base):
    assert planned(base["wd"], small_config(**NO_RERUN_UNDER_DEMO), snakefile=base["sf"]) == {}


def test_every_key_reruns_exactly_the_rules_that_use_it_and_their_descendants(base):
    from concurrent.futures import ThreadPoolExecutor

    import pyarrow.parquet as pq

    cells = pq.read_table(base["wd"] / "results/merged/cells.parquet", columns=["drug"])
    drugs = sorted(set(cells.column("drug").to_pylist()) - {"DMSO_TF"})[:2]

    def check(key):
        value, entries = KEY_ENTRIES[key]
        value = drugs + ["DMSO_TF"] if key == "filters.drugs" else value
        got = planned(base["wd"], small_config(**{key: value}), snakefile=base["sf"])
        want = expected_jobs(base["graph"], base["full"], entries)
        for rule, producer in TEMP_INPUTS.items():  # deleted after the run: made again
            if rule in want:
                want.setdefault(producer, base["full"][producer])
        return key, got, want

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(check, sorted(KEY_ENTRIES)))
    wrong = {k: {"extra": sorted(set(got) - set(want)), "missing": sorted(set(want) - set(got)),
                 "counts": {r: (got.get(r), want.get(r)) for r in set(got) | set(want)
                            if got.get(r) != want.get(r)}}
             for k, got, want in results if got != want}  # fmt: skip
    assert not wrong, wrong
