"""benchmarks/bench_memory.py (issue 13's memory table): the rule list, the parsers, the ratios,
the table, the merge of re-measured rules and the refusal of a table that misses a rule.

Function level only (no workflow runs): Snakemake's --list-rules and the dry runs of the
requests are replaced by fakes where main() is called.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import _common  # noqa: E402
import bench_memory as bm  # noqa: E402

SMK = """
rule all:
    input:
        "a.txt",

if KIND == "demo":

    rule make_a:
        output:
            "a.txt",
        script:
            "../workflow/scripts/a.py"

    localrule: True

rule shell_b:
    output:
        "b.txt",
    shell:
        "touch {output}"

checkpoint cp:
    output:
        directory("d"),
    run:
        pass

rule collect:
    input:
        "a.txt",
        "b.txt",
"""

DRY_RUN = """Building DAG of jobs...
Job stats:
job                count
---------------  -------
summarize_shard        2
total                  2

localrule demo_metadata:
    output: results/demo/metadata/gene_metadata.parquet, results/demo/metadata/sample_metadata.parquet
    log: results/logs/demo/metadata.log
    jobid: 3
    reason: Forced execution
    resources: tmpdir=<TBD>, mem_mb=1014, mem_mib=967, disk_mb=1000, runtime=10

rule summarize_shard:
    input: results/demo/data/train-00000-of-00002.parquet, results/demo/metadata/gene_metadata.parquet, missing.parquet
    output: results/shards/00000/cells.parquet, results/shards/00000/gene_stats.parquet
    log: results/logs/summarize/00000.log
    jobid: 1
    reason: Forced execution
    wildcards: shard=00000
    threads: 2
    resources: tmpdir=<TBD>, mem_mb=1829, mem_mib=1745, disk_mb=1000, runtime=10

rule summarize_shard:
    input: results/demo/data/train-00001-of-00002.parquet
    output: results/shards/00001/cells.parquet
    jobid: 2
    threads: 1
    resources: tmpdir=<TBD>, mem_mb=1700, mem_mib=1600, disk_mb=1000, runtime=10

localrule all:
    input: results/shards/00000/cells.parquet
    jobid: 0
    resources: tmpdir=<TBD>
"""


def row(rule: str, measured: float = 1000.0, declared: int = 1300, **kw) -> dict:
    return {"rule": rule, "output": f"results/{rule}.out", "threads": 1, "declared": declared,
            "input_mb": 2.5, "local": False, "snakemake_mb": 260.0, "script_mb": measured - 532,
            "measured": measured, "wd": "/nowhere", "cfg": "/nowhere/config.yaml",
            "setting": "demo", "note": "4 demo files x 28,225 cells", **kw}  # fmt: skip


# --- the rule list -------------------------------------------------------------------------
def test_rules_with_an_action_are_found_in_snakefile_text():
    assert bm.parse_rules([SMK]) == {
        "all": False, "make_a": True, "shell_b": True, "cp": True, "collect": False,
    }  # fmt: skip


def test_the_workflow_rule_list_covers_every_source_and_stage():
    parsed = bm.parse_rules(bm.workflow_texts())
    with_action = {r for r, act in parsed.items() if act}
    # rules of every source, defined under `if PLAN.kind == ...`, and the split DE stage
    assert {"demo_file", "download_data", "manifest", "stream_shard", "prepare_h5ad",
            "h5ad_metadata", "de_part", "de_pseudobulk", "summarize_shard"} <= with_action  # fmt: skip
    assert parsed["all"] is False and parsed["download_all"] is False
    # the rules the source configurations measure exist (a renamed one would go unmeasured)
    for setting, rules in bm.SOURCE_RULES.items():
        assert setting in bm.SETTINGS and set(rules) <= with_action, setting


def test_list_rules_output_and_rules_the_parse_does_not_know():
    out = "Using workflow specific profile profiles/default\nall\nhvg\n    Highly variable genes.\nnew_rule\n"
    assert bm.parse_list_rules(out) == {"all", "hvg", "new_rule"}
    parsed = {"all": False, "hvg": True}
    # a rule Snakemake lists but the parse cannot see is measured to be safe
    assert bm.required_rules(parsed, {"all", "hvg", "new_rule"}) == {"hvg", "new_rule"}


def test_unmeasured_rules_are_named():
    assert bm.unmeasured({"a", "b", "c"}, [row("b")]) == ["a", "c"]
    assert bm.unmeasured({"a"}, [row("a")]) == []


def test_setting_of_source_rules():
    assert bm.setting_of("prepare_h5ad") == "h5ad" and bm.setting_of("stream_shard") == "stream"
    assert bm.setting_of("manifest") == "manifest" and bm.setting_of("download_data") == "hub"
    assert bm.setting_of("download_obs_metadata") == "obs"
    assert bm.setting_of("a_rule_added_later") == "demo"


# --- parsing, ratios, table ----------------------------------------------------------------
def test_dry_run_jobs_with_threads_request_and_input_size(tmp_path):
    data = tmp_path / "results/demo/data"
    data.mkdir(parents=True)
    (data / "train-00000-of-00002.parquet").write_bytes(b"x" * 3 * 2**20)
    (tmp_path / "results/demo/metadata").mkdir(parents=True)
    (tmp_path / "results/demo/metadata/gene_metadata.parquet").write_bytes(b"x" * 2**19)
    jobs = bm.parse_dry_run(DRY_RUN, tmp_path, skip={"all"})
    assert [j["rule"] for j in jobs] == ["demo_metadata", "summarize_shard", "summarize_shard"]
    meta, first = jobs[0], jobs[1]
    assert meta["local"] and meta["declared"] == 1014 and meta["threads"] == 1
    assert meta["output"] == "results/demo/metadata/gene_metadata.parquet"
    assert not first["local"] and first["declared"] == 1829 and first["threads"] == 2
    assert first["input_mb"] == pytest.approx(3.5)  # a missing input counts nothing
    (tmp_path / "in_dir/sub").mkdir(parents=True)  # a folder input (prepare_h5ad's .rda files)
    (tmp_path / "in_dir/sub/a.rda").write_bytes(b"x" * 2**20)
    dir_job = DRY_RUN.replace("missing.parquet", "in_dir")
    assert bm.parse_dry_run(dir_job, tmp_path)[1]["input_mb"] == pytest.approx(4.5)
    assert [j["output"] for j in bm.one_per_rule(jobs, {"summarize_shard"})] == [
        "results/shards/00000/cells.parquet"
    ]
    assert bm.parse_declared(DRY_RUN.split("rule summarize_shard:")[1]) == 1829
    assert bm.parse_declared("Nothing to be done.") is None


def test_whole_job_counts_two_snakemake_processes_and_srun():
    assert bm.whole_job_mb(260.0, 800.0) == pytest.approx(2 * 260 + 800 + bm.SRUN_MB)


def test_ratios_and_table_cover_every_row_and_flag_misses():
    rows = [row("hvg", 1000.0, 1300), row("manifest", 1000.0, 1100, setting="manifest",
                                          note="footers of 3,388 files", local=True)]  # fmt: skip
    bm.add_ratios(rows)
    assert [r["ratio"] for r in rows] == pytest.approx([1.3, 1.1])
    text = bm.table(rows, "HEAD")
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert len(lines) == 3  # header + one line per row
    assert (
        "| hvg | demo | `results/hvg.out` | 2.5 | 1,300 | 260 | 468 | 1,000 | 1.30 | yes |" in text
    )
    assert "| manifest (local) | manifest |" in text and "| 1.10 | **no** |" in text
    assert bm.summary(rows).endswith("met by 1 of 2, lowest ratio 1.10 (manifest).")


def test_remeasured_rules_replace_their_rows_in_place_and_new_ones_are_added():
    old = [row("a", 900.0), row("b", 900.0), row("c", 900.0)]
    new = [row("b", 1111.0), row("d", 500.0)]
    merged = bm.merge_rows(old, new)
    assert [r["rule"] for r in merged] == ["a", "b", "c", "d"]
    assert [r["measured"] for r in merged] == [900.0, 1111.0, 900.0, 500.0]


# --- main: the table is refused while a rule is unmeasured ---------------------------------
@pytest.fixture
def offline(monkeypatch):
    """No Snakemake: --list-rules gives the parsed rules, the requests are 1.3x measured."""
    monkeypatch.setattr(bm.Setting, "list_rules", lambda self: set())
    monkeypatch.setattr(bm, "declared_mb", lambda wd, cfg, env, r: int(1.3 * r["measured"]))


def required() -> list[str]:
    return sorted(r for r, act in bm.parse_rules(bm.workflow_texts()).items() if act)


def test_a_rule_left_unmeasured_fails_and_writes_no_table(offline, tmp_path, capsys):
    rules = required()
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([row(r) for r in rules if r != "stream_shard"]))
    out = tmp_path / "RESULTS.md"
    rc = bm.main(["--workdir", str(tmp_path / "wd"), "--measured", str(rows), "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "ERROR: 1 rule(s) of the workflow not measured: stream_shard" in err
    assert "--rules stream_shard" in err
    assert not out.exists()


def test_every_rule_measured_appends_the_whole_table(offline, tmp_path, capsys):
    rules = required()
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([row(r) for r in rules]))
    out = tmp_path / "RESULTS.md"
    rc = bm.main(["--workdir", str(tmp_path / "wd"), "--measured", str(rows), "--out", str(out)])
    assert rc == 0
    text = out.read_text()
    assert text.startswith("\n## P8 - memory requests against whole-job peaks (SLURM)")
    assert f"met by {len(rules)} of {len(rules)}, lowest ratio 1.30" in text
    for r in rules:
        assert f"| {r} | demo |" in text


def test_rules_option_rejects_unknown_rules_and_needs_json(offline, tmp_path, capsys):
    wd = str(tmp_path / "wd")
    with pytest.raises(SystemExit) as e:
        bm.main(
            ["--workdir", wd, "--rules", "hvg,no_such_rule", "--json", str(tmp_path / "r.json")]
        )
    assert e.value.code == 2 and "no_such_rule" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bm.main(["--workdir", wd, "--rules", "hvg"])
    assert e.value.code == 2 and "--json" in capsys.readouterr().err


def test_rules_option_measures_only_those_and_merges(offline, tmp_path, monkeypatch):
    rules = required()
    rows = tmp_path / "rows.json"
    rows.write_text(json.dumps([row(r, 900.0) for r in rules]))
    calls = []

    def fake_measure(s, settings, wanted, skip, args):
        calls.append((s.name, sorted(wanted)))
        return [row(r, 2000.0, setting=s.name) for r in sorted(wanted)]

    monkeypatch.setattr(bm, "measure_setting", fake_measure)
    rc = bm.main(
        ["--workdir", str(tmp_path / "wd"), "--rules", "hvg,manifest", "--json", str(rows)]
    )
    assert rc == 0
    assert calls == [("demo", ["hvg"]), ("manifest", ["manifest"])]
    merged = {r["rule"]: r["measured"] for r in json.loads(rows.read_text())}
    assert len(merged) == len(rules) and merged["hvg"] == merged["manifest"] == 2000.0
    assert merged["pca"] == 900.0


# --- the one process sampler (benchmarks/_common.py) ---------------------------------------
def test_bench_memory_uses_the_common_sampler():
    assert bm.TreeSampler is _common.TreeSampler
    assert not hasattr(bm, "JobSampler")


def test_tree_sampler_sees_a_grandchild_peak():
    child = "b = bytearray(120 * 2**20); import time; time.sleep(0.6)"
    cmd = [sys.executable, "-c",
           f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}])"]  # fmt: skip
    proc = subprocess.Popen(cmd)
    sampler = _common.TreeSampler(proc.pid, interval=0.05)
    sampler.start()
    proc.wait()
    time.sleep(0.05)
    sampler.stop()
    assert len(sampler.hwm) == 1  # the grandchild; the root is counted apart
    assert 120 <= sampler.descendants_mb < 250
    assert 0 < sampler.root_peak_mb < 100
    assert sampler.peak_total_mb >= 120 + 0.5 * sampler.root_peak_mb
    assert sampler.proc_peak_mb == pytest.approx(sampler.descendants_mb)
