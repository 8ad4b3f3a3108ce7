"""Streamed DE gather (issue 17): the exact table-wide BH by an external merge, the block merge
of sorted parts, the per-line de_part, and the gather's counts against the in-memory code."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_de import _simulate_plates
from test_de_parts import _long

from tahoeflow import io as tio
from tahoeflow.de import gather, pipeline
from tahoeflow.de import parts as de_parts
from tahoeflow.de.tables import (
    CONDITION_KEYS,
    SKIPPED_COLUMNS,
    global_adjust,
    table_schema,
    top_conditions,
    volcano_conditions,
)
from tahoeflow.errors import InputError
from tahoeflow.merge.pseudobulk import write_pseudobulk
from tahoeflow.multitest import bh_adjust


def _pvalues(rng, n, kind):
    if kind == "ties":  # few distinct values, exact 0 and 1, NaN
        return rng.choice(np.r_[rng.random(7), 0.0, 1.0, np.nan], n)
    if kind == "small":
        return rng.random(n) ** 6
    return rng.random(n)


@pytest.mark.parametrize("kind", ["ties", "small", "uniform"])
@pytest.mark.parametrize("seed", range(6))
def test_streamed_bh_equals_bh_adjust_to_the_bit(tmp_path, kind, seed):
    rng = np.random.default_rng(seed)
    sizes = [int(rng.integers(0, 2500)) for _ in range(int(rng.integers(1, 6)))]
    sizes[int(rng.integers(len(sizes)))] = 0  # an empty part
    ps, files = [], []
    for k, n in enumerate(sizes):
        p = _pvalues(rng, n, kind)
        ps.append(p)
        files.append(tmp_path / f"{k}.parquet")
        pq.write_table(pa.table({"P": p}), files[-1], row_group_size=int(rng.integers(1, 900)))
    chunk, window = int(rng.integers(1, 600)), int(rng.integers(1, 200))
    out = gather.streamed_bh(files, "P", tmp_path, chunk_rows=chunk, window=window)
    got = np.concatenate([np.fromfile(f, dtype="<f8") for f in out])
    ref = bh_adjust(np.concatenate(ps))
    assert got.size == ref.size == sum(sizes)
    assert got.tobytes() == ref.tobytes()  # the same bits, NaN where NaN
    assert not list(tmp_path.glob("bh_runs*"))


def _random_table(rng, lines, n_drugs=6, genes=40):
    """A limma topTable of random contrasts on ``lines``, with ties in P.Value."""
    frames = []
    for line in lines:
        for d in range(n_drugs):
            for dose in (0.1, 1.0):
                for plate in rng.choice(["plate1", "plate2", "plate1+plate3"], 2, replace=False):
                    g = np.sort(rng.choice(1000, int(rng.integers(1, genes)), replace=False))
                    n = g.size
                    frames.append(pd.DataFrame({
                        "drug": f"drug{d:02d}" if d else "Ab (x)", "dose_uM": dose,
                        "cell_line_id": line, "plate": plate, "gene": g.astype(np.int64),
                        "ensembl_id": [f"E{x}" for x in g],
                        "gene_symbol": [None if x % 7 == 0 else f"S{x}" for x in g],
                        "logFC": rng.normal(0, 2, n), "AveExpr": rng.normal(5, 1, n),
                        "t": rng.normal(0, 3, n), "P.Value": np.round(rng.random(n) ** 3, 3),
                        "adj.P.Val": rng.random(n), "adj.P.Val.global": rng.random(n),
                        "B": rng.normal(0, 1, n),
                        "n_treated_cells": np.int64(50), "n_control_cells": np.int64(80),
                        "n_treated_wells": np.int64(2), "n_control_wells": np.int64(3),
                    }))  # fmt: skip
    top = pd.concat(frames, ignore_index=True)
    return top.sort_values([*CONDITION_KEYS, "gene"], kind="mergesort").reset_index(drop=True)


def _old_gather(parts, out):
    """The in-memory gather the workflow had: concatenate, sort, BH over the whole table."""
    top = pd.concat([pd.read_parquet(f) for f in parts], ignore_index=True)
    top = top.sort_values([*CONDITION_KEYS, "gene"], kind="mergesort").reset_index(drop=True)
    top = global_adjust(top)
    tio.write_parquet(pa.Table.from_pandas(top, schema=table_schema("voom"),
                                           preserve_index=False), out)  # fmt: skip
    return top


@pytest.mark.parametrize("n_parts,chunk,rg", [(1, 1 << 20, 1 << 20), (3, 97, 250), (5, 13, 64)])
def test_gather_writes_the_bytes_of_the_in_memory_gather(tmp_path, n_parts, chunk, rg):
    rng = np.random.default_rng(n_parts)
    lines = [f"CVCL_{k:04d}" for k in range(7)]
    parts = []
    for k in range(n_parts):
        own = lines[k::n_parts]
        t = _random_table(rng, own) if own else _random_table(rng, [])
        parts.append(tmp_path / f"{k}.parquet")
        tio.write_parquet(pa.Table.from_pandas(t, schema=table_schema("voom"),
                                               preserve_index=False), parts[-1])  # fmt: skip
    if n_parts == 5:  # an empty part (more parts than lines would give one)
        empty = _random_table(rng, ["x"]).iloc[:0]
        tio.write_parquet(pa.Table.from_pandas(empty, schema=table_schema("voom"),
                                               preserve_index=False), parts[2])  # fmt: skip
    ref = _old_gather(parts, tmp_path / "old.parquet")
    seen = []
    n = gather.gather_toptables(parts, tmp_path / "new.parquet", table_schema("voom"), "P.Value",
                                on_chunk=seen.append, chunk_rows=chunk, window=7,
                                row_group_rows=rg)  # fmt: skip
    assert n == len(ref) == sum(t.num_rows for t in seen) > 1000
    got = pq.read_table(tmp_path / "new.parquet").to_pandas()
    pd.testing.assert_frame_equal(got, ref)
    if rg == 1 << 20:  # the default row groups: the very file the old gather wrote
        assert (tmp_path / "new.parquet").read_bytes() == (tmp_path / "old.parquet").read_bytes()
    else:
        assert pq.ParquetFile(tmp_path / "new.parquet").metadata.num_row_groups == -(-n // rg)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    # the counts, metrics and volcano panels of the streamed gather equal the in-memory ones
    alpha = 0.3
    for call_col in ("adj.P.Val.global", "adj.P.Val"):
        counts = gather.CallCounts("voom", call_col, alpha)
        for t in seen:
            counts.add(t)
        per = counts.table()
        called = ref[ref[call_col] < alpha]
        ud = (
            ref[CONDITION_KEYS].drop_duplicates()
            .merge(called[called["logFC"] > 0].groupby(CONDITION_KEYS).size().rename("n_up").reset_index(), how="left")
            .merge(called[called["logFC"] < 0].groupby(CONDITION_KEYS).size().rename("n_down").reset_index(), how="left")
            .fillna({"n_up": 0, "n_down": 0})
            .astype({"n_up": int, "n_down": int})
        )  # fmt: skip
        ud["call_column"] = call_col
        ud = ud.sort_values(CONDITION_KEYS).reset_index(drop=True)
        new_ud = gather.up_down_table(per, call_col)
        pd.testing.assert_frame_equal(new_ud, ud)
        assert tio_csv(new_ud, tmp_path) == tio_csv(ud, tmp_path)
        assert len(per) == ref[CONDITION_KEYS].drop_duplicates().shape[0]
        assert per["n_called"].sum() == len(called)
        assert per["n_contrast_calls"].sum() == (ref["adj.P.Val"] < alpha).sum()
        assert per["n_global_calls"].sum() == (ref["adj.P.Val.global"] < alpha).sum()
        for k in (0, 2, 5, 100):
            conds = volcano_conditions(ref, k, alpha)
            assert top_conditions(per, k) == conds
            view = gather.read_conditions(tmp_path / "new.parquet", conds, list(ref.columns))
            key = pd.MultiIndex.from_frame(ref[CONDITION_KEYS[:3]])
            pd.testing.assert_frame_equal(view, ref[key.isin(conds)].reset_index(drop=True))


def tio_csv(df, tmp_path):
    tio.write_csv(df, tmp_path / "x.csv")
    return (tmp_path / "x.csv").read_bytes()


def test_gather_refuses_a_line_in_two_parts(tmp_path):
    rng = np.random.default_rng(0)
    t = _random_table(rng, ["CL1"])
    for k in range(2):
        tio.write_parquet(pa.Table.from_pandas(t, schema=table_schema("voom"),
                                               preserve_index=False), tmp_path / f"{k}.parquet")  # fmt: skip
    with pytest.raises(InputError, match="not one sorted block"):
        gather.gather_toptables([tmp_path / "0.parquet", tmp_path / "1.parquet"],
                                tmp_path / "out.parquet", table_schema("voom"), "P.Value")  # fmt: skip
    assert not (tmp_path / "out.parquet").exists()


def test_gather_of_empty_parts_writes_the_empty_table(tmp_path):
    from tahoeflow.de.tables import empty_toptable

    f = tmp_path / "0.parquet"
    tio.write_parquet(pa.Table.from_pandas(empty_toptable(), schema=table_schema("voom"),
                                           preserve_index=False), f)  # fmt: skip
    assert gather.gather_toptables([f, f], tmp_path / "o.parquet", table_schema("voom"),
                                   "P.Value") == 0  # fmt: skip
    _old_gather([f, f], tmp_path / "old.parquet")
    assert (tmp_path / "o.parquet").read_bytes() == (tmp_path / "old.parquet").read_bytes()


G = 150


@pytest.mark.parametrize("n_parts,drugs_per_chunk", [(1, 32), (2, 1), (4, 2)])
def test_de_part_line_by_line_writes_the_files_of_one_call(tmp_path, n_parts, drugs_per_chunk):
    counts, groups, _ = _simulate_plates(5, lines=("CL1", "CL2", "CL3"), G=G, n_null=2)
    counts = counts.copy()
    counts[groups["cell_line_id"].to_numpy() == "CL2", :3] = 0  # genes with zero counts: skips
    groups = groups.copy()
    groups.loc[groups.index[-1], "n_cells"] = 3  # a skipped contrast
    new = tmp_path / "pb.parquet"
    write_pseudobulk(_long(counts, groups), new, row_group_rows=1000)
    groups.to_parquet(tmp_path / "groups.parquet")
    pd.DataFrame({"token_id": np.arange(G), "gene_symbol": [f"S{k}" for k in range(G)]}).to_parquet(
        tmp_path / "genes.parquet"
    )
    args = [str(new), str(tmp_path / "groups.parquet"), str(tmp_path / "genes.parquet")]
    n_skip = 0
    for k in range(n_parts):
        # the old job: every well of the part at once
        X, g, genes, lines = de_parts.read_pseudobulk_part(*args, k, n_parts)
        top, skipped = pipeline.pseudobulk_de(X, g, genes["token_id"].to_numpy(), 20,
                                              genes=genes, return_skipped=True)  # fmt: skip
        tio.write_parquet(pa.Table.from_pandas(top, schema=table_schema("voom"),
                                               preserve_index=False), tmp_path / "old.parquet")  # fmt: skip
        tio.write_csv(skipped[SKIPPED_COLUMNS], tmp_path / "old.csv")
        got = de_parts.de_part(*args, k, n_parts, str(tmp_path / "new.parquet"),
                               str(tmp_path / "new.csv"), min_cells=20, log=lambda m: None,
                               drugs_per_chunk=drugs_per_chunk)  # fmt: skip
        assert got == (len(lines), top[CONDITION_KEYS].drop_duplicates().shape[0], len(top))
        assert (tmp_path / "new.parquet").read_bytes() == (tmp_path / "old.parquet").read_bytes()
        assert (tmp_path / "new.csv").read_bytes() == (tmp_path / "old.csv").read_bytes()
        n_skip += len(skipped)
        if n_parts == 4 and k == 3:  # a part without a line
            assert lines == [] and len(top) == 0
    assert n_skip > 0


def test_read_pseudobulk_line_names_a_stray_gene(tmp_path):
    counts, groups, _ = _simulate_plates(5, lines=("CL1", "CL2"), G=G, n_null=1)
    write_pseudobulk(_long(counts, groups), tmp_path / "pb.parquet", row_group_rows=1000)
    X, g = de_parts.read_pseudobulk_line(str(tmp_path / "pb.parquet"), groups, "CL2",
                                         np.arange(G))  # fmt: skip
    np.testing.assert_array_equal(X.toarray(), counts[groups["cell_line_id"] == "CL2"])
    assert (g["cell_line_id"] == "CL2").all()
    with pytest.raises(InputError, match="pb.parquet: counts reference"):
        de_parts.read_pseudobulk_line(str(tmp_path / "pb.parquet"), groups, "CL1",
                                      np.arange(G - 5))  # fmt: skip


@pytest.mark.parametrize("seed", range(3))
def test_welch_conditions_from_streamed_calls_equal_the_in_memory_ones(tmp_path, seed):
    from tahoeflow.de import welch

    rng = np.random.default_rng(seed)
    top = _random_table(rng, ["CL1", "CL2"])
    top["adj.P.Val.global"] = rng.choice([0.001, 0.01, 0.2, 0.9], len(top))
    f = tmp_path / "top.parquet"
    pq.write_table(pa.Table.from_pandas(top, schema=table_schema("voom")), f, row_group_size=100)
    calls = gather.contrast_calls(f)
    assert calls["n_calls"].sum() == (top["adj.P.Val.global"] < 0.05).sum()
    listed = [{"drug": "drug03"}, {"drug": "Ab (x)", "dose_uM": 1.0, "cell_line_id": "CL2"},
              {"drug": "nope"}]  # fmt: skip
    for k in (0, 1, 4, 50):
        warned_old, warned_new = [], []
        old = welch.welch_conditions(top, listed, k, warn=warned_old.append)
        new = welch.welch_conditions_from_calls(calls, listed, k, warn=warned_new.append)
        assert new == old and warned_new == warned_old and len(old) >= min(k, 1)
    empty = tmp_path / "empty.parquet"
    pq.write_table(table_schema("voom").empty_table(), empty)
    assert gather.contrast_calls(empty).empty
    assert welch.welch_conditions_from_calls(gather.contrast_calls(empty), [], 3) == []


def test_gather_of_deseq2_tables_adjusts_pvalue(tmp_path):
    from tahoeflow.de.tables import DESEQ2_COLUMNS

    rng = np.random.default_rng(3)
    schema = table_schema("deseq2")
    files, frames = [], []
    for k, lines in enumerate((["CL1", "CL3"], ["CL2"])):
        t = _random_table(rng, lines).rename(
            columns={"logFC": "log2FoldChange", "AveExpr": "baseMean", "t": "stat",
                     "P.Value": "pvalue", "adj.P.Val": "padj", "B": "lfcSE"}
        )[DESEQ2_COLUMNS]  # fmt: skip
        frames.append(t)
        files.append(tmp_path / f"{k}.parquet")
        tio.write_parquet(pa.Table.from_pandas(t, schema=schema, preserve_index=False), files[-1])
    ref = pd.concat(frames, ignore_index=True)
    ref = ref.sort_values([*CONDITION_KEYS, "gene"], kind="mergesort").reset_index(drop=True)
    ref = global_adjust(ref, "deseq2")
    tio.write_parquet(pa.Table.from_pandas(ref, schema=schema, preserve_index=False),
                      tmp_path / "old.parquet")  # fmt: skip
    counts = gather.CallCounts("deseq2", "padj", 0.3)
    n = gather.gather_toptables(files, tmp_path / "new.parquet", schema, "pvalue",
                                on_chunk=counts.add)  # fmt: skip
    assert n == len(ref)
    assert (tmp_path / "new.parquet").read_bytes() == (tmp_path / "old.parquet").read_bytes()
    per = counts.table()
    assert per["n_called"].sum() == (ref["padj"] < 0.3).sum()
    assert per["n_up"].sum() == ((ref["padj"] < 0.3) & (ref["log2FoldChange"] > 0)).sum()


def test_a_work_folder_left_by_a_killed_job_is_removed(tmp_path):
    out = tmp_path / "t.parquet"
    stale = tmp_path / ".t.parquet.bh.abc"
    stale.mkdir()
    (stale / "bh_runs.f64").write_bytes(b"x" * 64)
    other = tmp_path / ".t.parquet.lines.abc"  # another tag: de_part's, kept
    other.mkdir()
    with gather.work_dir(out, "bh") as work:
        assert work.is_dir() and not stale.exists() and other.exists()
    assert not work.exists()
