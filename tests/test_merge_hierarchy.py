"""Hierarchical merges (merge.fan_in): partial merges of at most fan_in inputs, then a final
merge, give the same files as one merge over every shard."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tahoeflow import io as tio
from tahoeflow.cells.doses import sample_doses
from tahoeflow.cells.plan import plan_merge_tree, plan_shards, plan_summary_groups
from tahoeflow.cells.summarize import Filters, load_shard, summarize
from tahoeflow.cells.vocab import vocab_from_gene_metadata
from tahoeflow.errors import InputError
from tahoeflow.merge.cells import cells_part, cells_part_merge, merge_cells
from tahoeflow.merge.gene_stats import merge_gene_stats, sum_gene_stats_part
from tahoeflow.merge.pseudobulk import (
    largest_line_rows,
    merge_pseudobulk,
    merge_pseudobulk_by_line,
    pseudobulk_part,
    row_group_lines,
    write_pseudobulk,
)
from tahoeflow.merge.shard_group import qc_records, write_group


@pytest.fixture(scope="module")
def shards(small_demo, tmp_path_factory):
    """12 row-range shards (100 cells each) of the small demo, summarised."""
    root, _ = small_demo
    out = tmp_path_factory.mktemp("hier")
    gm = pq.read_table(root / "metadata/gene_metadata.parquet")
    vocab = vocab_from_gene_metadata(gm)
    doses = sample_doses(pq.read_table(root / "metadata/sample_metadata.parquet").to_pandas(), "s")
    paths = {"names": [], "cells": {}, "gene_stats": {}, "pseudobulk": {}}
    n_obs = 0
    for s in plan_shards([0, 1], 100, 600):
        ls = load_shard(
            root / f"data/train-{s.file_index:05d}-of-00002.parquet",
            s,
            vocab,
            doses,
            Filters(min_genes=10),
        )
        n_obs += ls.X.shape[0]
        tables = summarize(ls, vocab)
        paths["names"].append(s.name)
        for key, table in zip(("cells", "gene_stats", "pseudobulk"), tables, strict=True):
            paths[key][s.name] = out / f"{s.name}.{key}.parquet"
            tio.write_parquet(table, paths[key][s.name])
    assert len(paths["names"]) == 12
    return paths, gm, n_obs, out


def merge_all(paths, gm, n_obs, out, fan_in, chunk=1 << 22):
    """Run the merges as the workflow does for ``fan_in``; return the final files."""
    names = sorted(paths["names"])
    nodes, top = plan_merge_tree(names, fan_in)
    index = {n: i for i, n in enumerate(names)}
    out.mkdir(parents=True, exist_ok=True)
    part = {}  # name (shard or node) -> {kind: path}
    for n in names:
        part[n] = {k: paths[k][n] for k in ("gene_stats", "pseudobulk", "cells")}
    for node, children in nodes.items():  # dict order: level by level
        f = {k: out / f"{node}.{k}" for k in ("gene_stats", "pseudobulk", "sums", "ids")}
        tio.write_parquet(
            sum_gene_stats_part([part[c]["gene_stats"] for c in children]), f["gene_stats"]
        )
        write_pseudobulk(  # as merge_part.py: one cell line per row group
            pseudobulk_part([part[c]["pseudobulk"] for c in children], min_rows=50),
            f["pseudobulk"], row_group_rows=300,
        )  # fmt: skip
        if node.startswith("L1-"):
            cells_part([part[c]["cells"] for c in children], [index[c] for c in children],
                       f["sums"], f["ids"])  # fmt: skip
        else:
            cells_part_merge([part[c]["sums"] for c in children],
                             [part[c]["ids"] for c in children], f["sums"], f["ids"], chunk)  # fmt: skip
        part[node] = f
    res = {k: out / f"final.{k}" for k in ("gene_stats", "cells", "qc", "pb", "groups")}
    tio.write_parquet(
        merge_gene_stats([part[t]["gene_stats"] for t in top], gm, n_obs), res["gene_stats"]
    )
    cells = [paths["cells"][n] for n in names]
    parts = None if not nodes else ([part[t]["sums"] for t in top], [part[t]["ids"] for t in top])
    merge_cells(cells, res["cells"], res["qc"], parts)
    # as merge_pseudobulk.py: one line at a time over partials, whole over shards
    groups, _, _ = merge_pseudobulk_by_line(
        [part[t]["pseudobulk"] for t in top], res["cells"], res["pb"], min_rows=50,
        row_group_rows=500,
    )  # fmt: skip
    tio.write_parquet(groups, res["groups"])
    return res, nodes  # fmt: skip


@pytest.fixture(scope="module")
def flat(shards):
    paths, gm, n_obs, out = shards
    res, nodes = merge_all(paths, gm, n_obs, out / "flat", fan_in=64)
    assert nodes == {}  # 12 shards <= 64: the final merges read the shards
    return res


@pytest.mark.parametrize("fan_in", [2, 3, 5, 11])
def test_hierarchical_merge_writes_the_same_files_as_one_merge(shards, flat, fan_in):
    paths, gm, n_obs, out = shards
    res, nodes = merge_all(paths, gm, n_obs, out / f"f{fan_in}", fan_in, chunk=97)
    assert nodes  # partial merges ran (fan_in 2: 4 levels, 6 + 3 + 2 + 1 jobs)
    for k in ("cells", "qc", "pb", "groups"):
        assert res[k].read_bytes() == flat[k].read_bytes(), k
    # gene statistics: integers exact; float sums differ at most in their last bits (the
    # partial sums add in another association): measured <= 4 ulp (6.2e-16 relative) for the
    # sums and means, 2.1e-13 for var_log (sumsq - n mean^2 cancels: the ulps of sumsq
    # become relative error of a small variance)
    a, b = pq.read_table(res["gene_stats"]), pq.read_table(flat["gene_stats"])
    assert a.schema == b.schema
    for c in ("token_id", "ensembl_id", "gene_symbol", "n_cells", "n_obs"):
        assert a.column(c).equals(b.column(c)), c
    for c in ("sum_log", "sumsq_log", "sum_norm", "sumsq_norm", "mean_log", "var_log"):
        x, y = a.column(c).to_numpy(), b.column(c).to_numpy()
        rel = np.abs(x - y) / np.maximum(np.abs(y), 1e-300)
        assert rel.max() <= (1e-12 if c == "var_log" else 1e-15), (c, rel.max())
    pb = pq.ParquetFile(res["pb"])
    assert pb.metadata.num_row_groups >= 3  # one cell line per row group, kept
    # the final merge read the partials one line at a time (each row group holds one line)
    top_pb = [p for p in out.glob(f"f{fan_in}/*.pseudobulk")]
    assert top_pb and all(None not in row_group_lines(p) for p in top_pb)


def test_pseudobulk_by_line_equals_the_whole_merge_and_reads_one_line_at_a_time(
    shards, flat, tmp_path
):
    """The per-line final merge gives write_pseudobulk(merge_pseudobulk(...))'s bytes, and never
    holds more than one cell line's rows (each read returns one line)."""
    import tahoeflow.merge.pseudobulk as mp

    paths, gm, n_obs, out = shards
    names = sorted(paths["names"])
    cells = flat["cells"]
    parts = []
    for i in range(0, len(names), 4):  # three partials of four shards each
        parts.append(tmp_path / f"part{i}.parquet")
        write_pseudobulk(pseudobulk_part([paths["pseudobulk"][n] for n in names[i : i + 4]]),
                         parts[-1], row_group_rows=200)  # fmt: skip
    counts, groups = merge_pseudobulk([paths["pseudobulk"][n] for n in names], cells)
    write_pseudobulk(counts, tmp_path / "whole.parquet", row_group_rows=250)
    seen = []
    real = mp._stream_sums

    def spy(tables, *a, **k):
        tables = list(tables)
        seen.append({ln for _, t in tables for ln in t.column("cell_line_id").unique().to_pylist()})
        return real(iter(tables), *a, **k)

    mp._stream_sums = spy
    try:
        g, n_rows, n_rg = merge_pseudobulk_by_line(parts, cells, tmp_path / "lines.parquet",
                                                   row_group_rows=250)  # fmt: skip
    finally:
        mp._stream_sums = real
    assert (tmp_path / "lines.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert g.equals(groups) and n_rows == counts.num_rows
    assert n_rg == pq.ParquetFile(tmp_path / "whole.parquet").metadata.num_row_groups
    lines = sorted(set(counts.column("cell_line_id").to_pylist()))
    assert len(lines) >= 3 and seen == [{ln} for ln in lines]
    # what the job holds at once, for its memory request: the largest line's rows over parts
    per_line = (
        pa.concat_tables(pq.read_table(p) for p in parts)
        .group_by("cell_line_id")
        .aggregate([([], "count_all")])
    )
    assert largest_line_rows(parts) == max(per_line.column("count_all").to_pylist()) > 0
    assert largest_line_rows([*parts, paths["pseudobulk"][names[0]]]) is None  # a shard table
    assert largest_line_rows([]) == 0


def test_tree_plan_bounds_every_job_and_keeps_shard_order():
    names = [f"{i:05d}-0000" for i in range(3388)]
    nodes, top = plan_merge_tree(names, 64)
    assert len(nodes) == 53 and top == list(nodes)  # two levels: 53 partials, then the final
    assert max(len(c) for c in nodes.values()) == 64
    assert [s for n in top for s in nodes[n]] == names
    nodes, top = plan_merge_tree(names, 8)  # 424 -> 53 -> 7 nodes: three partial levels
    assert len(top) == 7 and all(len(c) <= 8 for c in nodes.values())
    assert plan_merge_tree(names[:64], 64) == ({}, names[:64])
    with pytest.raises(ValueError, match="fan_in"):
        plan_merge_tree(names, 1)


def summary_groups(paths, per_job, out):
    """Write the summary groups of ``per_job`` shards (as summarize_shard.py); their paths."""
    out.mkdir(parents=True, exist_ok=True)
    groups = plan_summary_groups(paths["names"], per_job)
    got = {"names": list(groups), "cells": {}, "gene_stats": {}, "pseudobulk": {}}

    def summaries(members):
        for n in members:  # one shard at a time, read back from its files
            t = [pq.read_table(paths[k][n]) for k in ("cells", "gene_stats", "pseudobulk")]
            yield n, *t, {"shard": n, "input": t[0].num_rows, "kept": t[0].num_rows}

    for g, members in groups.items():
        f = {k: out / f"{g}.{k}" for k in ("cells", "gene_stats", "pseudobulk", "qc")}
        n = write_group(summaries(members), {**f, "genes": f["gene_stats"]})
        assert n == len(members)
        for k in ("cells", "gene_stats", "pseudobulk"):
            got[k][g] = f[k]
        got.setdefault("qc", {})[g] = f["qc"]
    return got


def test_summary_groups_plan_consecutive_shards_named_by_their_ends():
    names = [f"{i:05d}" for i in range(7)]
    assert plan_summary_groups(names, 3) == {
        "00000_00002": names[0:3], "00003_00005": names[3:6], "00006": names[6:],
    }  # fmt: skip
    assert plan_summary_groups(reversed(names), 1) == {n: [n] for n in names}
    g = plan_summary_groups([f"{i:05d}" for i in range(3388)], 14)
    assert len(g) == 242 and list(g) == sorted(g)  # name order is shard order
    with pytest.raises(ValueError, match="per_job"):
        plan_summary_groups(names, 0)


@pytest.mark.parametrize("per_job", [1, 5])
@pytest.mark.parametrize("fan_in", [2, 64])
def test_summary_groups_merge_to_the_same_files_as_the_shards(shards, flat, per_job, fan_in):
    """Shards summarised in groups (5, 5, 2 shards) and merged, with and without partial
    merges, give the shards' merged files: QC and pseudobulk the same bytes, the same cells
    (one row group per group), float sums (control means, gene statistics) to the last bits;
    a group of one shard is that shard's files."""
    paths, gm, n_obs, out = shards
    grouped = summary_groups(paths, per_job, out / f"g{per_job}-{fan_in}")
    assert len(grouped["names"]) == (12 if per_job == 1 else 3)
    res, _ = merge_all(grouped, gm, n_obs, out / f"g{per_job}-{fan_in}" / "m", fan_in, chunk=97)
    for k in ("qc", "pb", "groups"):
        assert res[k].read_bytes() == flat[k].read_bytes(), k
    # the same cells, in one row group per input file; the control means (and delta_mean) are
    # float sums a group adds before the merge does: the last bits (measured 4.4e-16)
    a, b = pq.read_table(res["cells"]), pq.read_table(flat["cells"])
    floats = ["control_mean", "delta_mean"]
    assert a.drop_columns(floats).equals(b.drop_columns(floats))
    for c in floats:
        x, y = a.column(c).to_numpy(), b.column(c).to_numpy()
        assert np.array_equal(np.isnan(x), np.isnan(y))
        assert np.nanmax(np.abs(x - y)) <= (0 if per_job == 1 else 2e-15), c
    assert pq.ParquetFile(res["cells"]).metadata.num_row_groups == len(grouped["names"])
    a, b = pq.read_table(res["gene_stats"]), pq.read_table(flat["gene_stats"])
    for c in ("token_id", "n_cells", "n_obs"):
        assert a.column(c).equals(b.column(c)), c
    for c in ("sum_log", "sumsq_log", "mean_log", "var_log"):
        x, y = a.column(c).to_numpy(), b.column(c).to_numpy()
        assert np.abs(x - y).max() <= (1e-12 if c == "var_log" else 1e-15) * np.abs(y).max()
    records = qc_records(sorted(grouped["qc"].values()))
    assert [r["shard"] for r in records] == sorted(paths["names"])  # every shard, in order
    if per_job == 1:
        for n in paths["names"]:
            for k in ("cells", "gene_stats", "pseudobulk"):
                assert grouped[k][n].read_bytes() == Path(paths[k][n]).read_bytes(), (n, k)
    else:  # a group's pseudobulk: its shards' tables one after another (the merges sum them)
        members = plan_summary_groups(paths["names"], per_job)
        for g, p in grouped["pseudobulk"].items():
            want = pa.concat_tables([pq.read_table(paths["pseudobulk"][n]) for n in members[g]])
            assert pq.read_table(p).equals(want)


def test_qc_records_read_a_shard_a_group_and_name_a_bad_file(tmp_path):
    one, many, bad, empty = (tmp_path / f"{n}.json" for n in ("one", "many", "bad", "empty"))
    one.write_text(json.dumps({"shard": "00000", "kept": 3}))
    many.write_text(json.dumps([{"shard": "00001", "kept": 1}, {"shard": "00002", "kept": 2}]))
    bad.write_text('{"shard": "00003", "kept"')
    empty.write_text("[]")
    assert [r["kept"] for r in qc_records([one, many])] == [3, 1, 2]
    with pytest.raises(InputError, match=r"bad\.json.*not a readable QC record"):
        qc_records([one, bad])
    with pytest.raises(InputError, match=r"empty\.json.*not a QC record"):
        qc_records([empty])


def test_a_bad_shard_in_a_group_leaves_no_group_output(shards, tmp_path):
    """A shard that fails (the generator raises) while its group is written: no output file of
    the group is left, not even the cells streamed before it."""
    paths, gm, n_obs, out = shards
    names = sorted(paths["names"])[:3]

    def summaries():
        for n in names[:2]:
            t = [pq.read_table(paths[k][n]) for k in ("cells", "gene_stats", "pseudobulk")]
            yield n, *t, {"shard": n}
        raise InputError("data/train-00002.parquet", "row 7: a gene listed twice")

    f = {k: tmp_path / f"g.{k}" for k in ("cells", "genes", "pseudobulk", "qc")}
    with pytest.raises(InputError, match="row 7"):
        write_group(summaries(), f)
    assert not list(tmp_path.iterdir())


def test_duplicate_cell_across_partial_groups_names_both_shards(shards, tmp_path):
    paths, gm, n_obs, out = shards
    names = sorted(paths["names"])
    # the last shard repeats a cell id of the first: they fall in different level-1 groups
    first = pq.read_table(paths["cells"][names[0]])
    last = pq.read_table(paths["cells"][names[-1]])
    ids = last.column("cell_id").to_pylist()
    ids[7] = first.column("cell_id")[3].as_py()
    bad = tmp_path / "bad.parquet"
    tio.write_parquet(last.set_column(0, "cell_id", pa.array(ids, pa.string())), bad)
    p2 = {**paths, "cells": {**paths["cells"], names[-1]: bad}}
    with pytest.raises(InputError, match="also appears in") as e:
        merge_all(p2, gm, n_obs, tmp_path / "m", fan_in=3, chunk=50)
    assert names[0] in str(e.value) and str(bad) in str(e.value)
    assert not (tmp_path / "m" / "final.cells").exists()


def test_final_merge_rejects_partials_of_other_shards(shards, tmp_path):
    paths, gm, n_obs, out = shards
    names = sorted(paths["names"])
    cells = [paths["cells"][n] for n in names]
    cells_part(cells[:6], range(6), tmp_path / "s", tmp_path / "i")
    with pytest.raises(InputError, match="cover 6 shard files, not the 12"):
        merge_cells(cells, tmp_path / "c.parquet", tmp_path / "q.csv",
                    ([tmp_path / "s"], [tmp_path / "i"]))  # fmt: skip
    assert not (tmp_path / "c.parquet").exists()


@pytest.mark.workflow
def test_workflow_fan_in_adds_partial_merges_and_keeps_the_merged_files(tmp_path):
    """The demo's 4 shards merged once (fan_in 64: no partial), then with fan_in 2 (2 partials
    per kind): only the merges rerun, the cells and pseudobulk files are the same bytes, the
    temporary partials are gone afterwards; a fifth shard would add a second level."""
    from conftest import SMALL_STAGES, config_with, run_smk

    cfg = config_with({**SMALL_STAGES, ("demo", "n_files"): 5, ("demo", "cells_per_file"): 100})
    targets = [f"results/merged/{f}" for f in
               ("cells.parquet", "gene_stats.parquet", "pseudobulk.parquet",
                "pseudobulk_groups.parquet", "control_qc.csv")]  # fmt: skip

    def planned(cfg):
        dry = run_smk(tmp_path, cfg, *targets, "--dry-run", "--quiet", "rules", check=True)
        jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", dry.stdout + dry.stderr, re.M))
        jobs.pop("total", None)
        return {k: int(v) for k, v in jobs.items()}

    run_smk(tmp_path, cfg, *targets, check=True)
    flat = {t: (tmp_path / t).read_bytes() for t in targets}
    cfg["merge"] = {"fan_in": 2}
    finals = {"merge_cells": 1, "merge_gene_stats": 1, "merge_pseudobulk": 1}
    parts = ("merge_part_cells", "merge_part_gene_stats", "merge_part_pseudobulk")
    assert planned(cfg) == {**finals, **dict.fromkeys(parts, 2)}
    log = run_smk(tmp_path, cfg, *targets, check=True)
    # its request counts the largest line's rows over the partials (a few thousand here: the
    # base), not 15 x its inputs, which include the merged cells it only streams
    block = (log.stdout + log.stderr).split("rule merge_pseudobulk:")[1].split("\n\n")[0]
    declared = int(re.search(r"\bmem_mb=(\d+)", block).group(1))
    rows = pq.ParquetFile(tmp_path / targets[2]).metadata.num_rows
    assert int((740 + 350) * 1.3) <= declared <= int((740 + 350 + 110 * rows / 1e6) * 1.3)
    for t in targets:
        if t.endswith("gene_stats.parquet"):  # float sums: last bits (function-level test)
            a, b = pq.read_table(tmp_path / t), pq.read_table(pa.BufferReader(flat[t]))
            assert a.schema == b.schema and a.column("n_cells").equals(b.column("n_cells"))
        else:
            assert (tmp_path / t).read_bytes() == flat[t], t
    assert not list((tmp_path / "results/merged/parts").rglob("*.*"))  # temp(): removed
    # summary jobs of 3 shards: 2 groups (3 + 1), no partial merge at fan_in 2; the group of
    # shard 00003 alone is that shard's finished job (same files, same params): 1 job runs.
    # The merged files keep their content (float sums: the last bits, see the function test).
    cfg["summarize"] = {"shards_per_job": 3}
    assert planned(cfg) == {**finals, "summarize_shard": 1}
    run_smk(tmp_path, cfg, *targets, check=True)
    assert {"00000_00002", "00003"} <= {p.name for p in (tmp_path / "results/shards").iterdir()}
    for t in targets:
        if t.endswith(".parquet"):
            a, b = pq.read_table(tmp_path / t), pq.read_table(pa.BufferReader(flat[t]))
            floats = [c for c in ("control_mean", "delta_mean", "sum_log", "sumsq_log",
                                  "sum_norm", "sumsq_norm", "mean_log", "var_log") if c in a.column_names]  # fmt: skip
            assert a.drop_columns(floats).equals(b.drop_columns(floats)), t
            for c in floats:
                x, y = a.column(c).to_numpy(), b.column(c).to_numpy()
                assert np.allclose(x, y, rtol=1e-12, atol=1e-15, equal_nan=True), (t, c)
        else:
            assert (tmp_path / t).read_bytes() == flat[t], t
    del cfg["summarize"]
    # 5 shards at fan_in 2: 3 level-1 partials, then 2 of level 2 that the final merges read
    cfg["source"] = {**cfg.get("source", {}), "files": "0:5"}
    assert planned(cfg) == {
        **finals, **dict.fromkeys(parts, 5), "summarize_shard": 1, "demo_file": 1,
    }  # fmt: skip


def test_bad_shard_outputs_in_a_merge_tree_fail_in_one_line_and_rebuild_only_their_part(tmp_path):
    """Issue 17's bad input at scale, on a tree of merges (6 shards, fan_in 2: three levels): a
    corrupt shard output in the middle stops its partial merge with one line naming the file and
    leaves no partial output (the merged table stays the last good run's); after the fix only
    merges run, and they give the first run's bytes."""
    from conftest import SMALL_STAGES, config_with, run_smk

    cfg = config_with({**SMALL_STAGES, ("demo", "n_files"): 6, ("demo", "cells_per_file"): 100,
                       ("merge", "fan_in"): 2})  # fmt: skip
    target = "results/merged/cells.parquet"
    run_smk(tmp_path, cfg, target, check=True)
    first = (tmp_path / target).read_bytes()
    middle = tmp_path / "results/shards/00003/cells.parquet"

    def planned():
        dry = run_smk(tmp_path, cfg, target, "--dry-run", "--quiet", "rules", check=True)
        return dict(re.findall(r"^(\w+)\s+(\d+)$", dry.stdout + dry.stderr, re.M))

    good = middle.read_bytes()
    middle.write_bytes(good[: len(good) // 3])  # truncated: not a Parquet file any more
    run = run_smk(tmp_path, cfg, target)
    assert run.returncode != 0
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("ERROR:")]
    assert errors and all(
        str(middle) in ln or "shards/00003/cells.parquet" in ln for ln in errors
    ), run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    # the failed partial merge left nothing; the merged table is still the last good run's
    assert not list((tmp_path / "results/merged/parts/L1-00001").glob("*.*"))  # shards 2, 3
    assert (tmp_path / target).read_bytes() == first
    middle.write_bytes(good)  # the fix: only merges run again, no file or summary
    jobs = planned()
    assert "summarize_shard" not in jobs and "demo_file" not in jobs and jobs["merge_cells"] == "1"
    run_smk(tmp_path, cfg, target, check=True)
    assert (tmp_path / target).read_bytes() == first
