"""Readers and joins: quiet wrong answers turned into errors or one-line warnings (issue 12).

Each test fails on the code before the fix. Function-level except one workflow run (the
merge's warnings reach the console and the job log). Tahoe's real metadata tables are read
from ``../shared/data/real/tahoe_metadata`` (relative to the repository root) where present.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from conftest import run_smk

from tahoeflow.cells.doses import sample_doses
from tahoeflow.cells.plan import Shard
from tahoeflow.cells.summarize import (
    Filters,
    check_sample_metadata,
    filter_cells,
    filter_qc_table,
    filter_warnings,
    load_shard,
    summarize,
)
from tahoeflow.cells.vocab import vocab_from_gene_metadata
from tahoeflow.errors import InputError
from tahoeflow.merge.conditions import condition_table, drug_annotations
from tahoeflow.sources.h5ad import h5ad_vocab
from tahoeflow.sources.h5ad_shard import load_h5ad_shard
from tahoeflow.sources.tahoe import CLS_TOKEN, CLS_VALUE

REPO = Path(__file__).resolve().parents[1]
TAHOE_META = REPO.parent / "shared" / "data" / "real" / "tahoe_metadata"
needs_tahoe_meta = pytest.mark.skipif(
    not (TAHOE_META / "sample_metadata.parquet").is_file(),
    reason=f"real Tahoe metadata not found at {TAHOE_META} (../shared is not in a clone)",
)
BAD_ROW = 7


@pytest.fixture(scope="module")
def ctx(small_demo):
    root, _ = small_demo
    vocab = vocab_from_gene_metadata(pq.read_table(root / "metadata/gene_metadata.parquet"))
    meta_path = root / "metadata/sample_metadata.parquet"
    return vocab, sample_doses(pq.read_table(meta_path).to_pandas(), meta_path), meta_path


def _set_row(table: pa.Table, col: str, row: int, value, value_type=None) -> pa.Table:
    rows = table.column(col).to_pylist()
    rows[row] = value
    arr = pa.array(rows, value_type) if value_type is not None else pa.array(rows)
    return table.set_column(table.schema.get_field_index(col), col, arr)


def _load(table: pa.Table, tmp_path: Path, ctx, filters: Filters | None = None, name="x"):
    vocab, doses, _ = ctx
    filters = filters or Filters()
    path = tmp_path / f"{name}.parquet"
    pq.write_table(table, path, row_group_size=100)
    return path, load_shard(path, Shard(name, 0, 0, None), vocab, doses, filters)


def _qc_record(loaded, path, shard="00000") -> dict:
    """What summarize_shard writes to qc.json (through JSON, as the merge reads it)."""
    rec = {"shard": shard, "file": str(path), **loaded.filter_counts,
           "zero_count_rows": loaded.zero_count_rows, "values_seen": loaded.values_seen}  # fmt: skip
    return json.loads(json.dumps(rec))


# --- 1. filter values that match nothing -----------------------------------------------------
def test_a_filter_value_matching_nothing_is_a_warning_naming_key_value_and_the_close_one(
    small_table, ctx, tmp_path
):
    half = small_table.num_rows // 2
    lines = ["CVCL_0131", "CVCL_O131"]  # the second has a letter O for the zero
    drug = sorted(set(small_table.column("drug").to_pylist()) - {"DMSO_TF"})[0]  # a real drug
    f = Filters(cell_lines=lines, drugs=[drug, drug, "Nope"], min_genes=0)
    recs = []
    for i, part in enumerate((small_table.slice(0, half), small_table.slice(half))):
        path, ls = _load(part, tmp_path, ctx, f, name=f"p{i}")
        assert ls.filter_counts["kept"] > 0
        recs.append(_qc_record(ls, path, f"0000{i}"))
    warns = filter_warnings(recs, {"cell_lines": lines, "drugs": f.drugs, "plates": []})
    n = small_table.num_rows
    assert warns == [
        f"config key 'filters.cell_lines': 'CVCL_O131' matches no cell in the {n} rows read "
        "(4 distinct values there); did you mean 'CVCL_0131'?",
        f"config key 'filters.drugs': 'Nope' matches no cell in the {n} rows read "
        "(7 distinct values there)",
    ]


def test_filters_that_remove_every_cell_fail_naming_the_filter(small_table, ctx, tmp_path):
    path, ls = _load(small_table, tmp_path, ctx, Filters(plates=["plate_13"]))
    rec = _qc_record(ls, path)
    assert ls.filter_counts["kept"] == 0 and ls.values_seen == {"plates": ["plate13"]}
    assert filter_warnings([rec], {"plates": ["plate_13"]}) == [
        f"config key 'filters.plates': 'plate_13' matches no cell in the {small_table.num_rows} "
        "rows read (1 distinct values there); did you mean 'plate13'?"
    ]
    with pytest.raises(
        InputError, match=r"^filters: zero cells left .*removed by filters\.plates$"
    ):
        filter_qc_table([rec])
    table = filter_qc_table([rec, _qc_record(_load(small_table, tmp_path, ctx)[1], path)])
    assert list(table["shard"]) == ["00000", "00000", "total"]
    assert "file" not in table and "values_seen" not in table  # numbers only in filter_qc.csv


def test_filter_values_match_with_surrounding_spaces_ignored():
    # Tahoe's data has 'Erdafitinib ' (trailing space); a config naming 'Erdafitinib' must match
    drug = np.array(["Erdafitinib ", "DMSO_TF", "Erdafitinib ", "Selinexor "], dtype=object)
    line = np.array(["CVCL_0031"] * 4, dtype=object)
    keep, counts, seen = filter_cells(
        Filters(drugs=["Erdafitinib", " DMSO_TF"], cell_lines=["CVCL_0031 "], min_genes=0),
        line, drug, line, np.full(4, 5),
    )  # fmt: skip
    assert keep.tolist() == [True, True, True, False]
    assert counts == {"input": 4, "removed_by_cell_lines": 0, "removed_by_drugs": 1,
                      "removed_by_min_genes": 0, "kept": 3}  # fmt: skip
    assert seen == {"cell_lines": ["CVCL_0031"], "drugs": ["DMSO_TF", "Erdafitinib", "Selinexor"]}


# --- 2. stored zeros and files of zeros -------------------------------------------------------
G = 12


def _counts(seed: int = 5) -> sp.csr_matrix:
    """40 cells x 12 genes of integer counts with explicitly stored zeros; row 9 is all zeros."""
    rng = np.random.default_rng(seed)
    dense = rng.poisson(1.2, (40, G)).astype(np.float32)
    dense[9] = 0
    mask = (dense > 0) | (rng.random(dense.shape) < 0.3)  # store some zeros too
    mask[9, :4] = True
    rows, cols = np.nonzero(mask)
    X = sp.csr_matrix((dense[rows, cols], (rows, cols)), shape=dense.shape)
    assert (X.data == 0).sum() > 20  # csr_matrix((data, (i, j))) keeps explicit zeros
    return X


def _tahoe_parquet(X: sp.csr_matrix, obs: pd.DataFrame, path: Path) -> None:
    genes, expr = [], []
    for i in range(X.shape[0]):  # test fixture only
        lo, hi = X.indptr[i], X.indptr[i + 1]
        genes.append([CLS_TOKEN] + (X.indices[lo:hi] + 3).tolist())
        expr.append([CLS_VALUE] + X.data[lo:hi].tolist())
    cols = {"genes": pa.array(genes, pa.list_(pa.int64())),
            "expressions": pa.array(expr, pa.list_(pa.float32()))}  # fmt: skip
    for c in ("drug", "sample", "BARCODE_SUB_LIB_ID", "cell_line_id", "moa-fine", "plate"):
        cols[c] = pa.array(obs[c].astype(str).tolist(), pa.string())
    pq.write_table(pa.table(cols), path)


@pytest.fixture(scope="module")
def same_counts_two_formats(tmp_path_factory):
    """One count matrix written as a Tahoe Parquet shard (+ metadata) and as an h5ad file."""
    d = tmp_path_factory.mktemp("two_formats")
    X = _counts()
    n = X.shape[0]
    rng = np.random.default_rng(1)
    drug = rng.choice(["DMSO_TF", "drugA"], n)
    conc = np.where(drug == "DMSO_TF", 0.0, 0.5)
    sample = np.array([f"{dr}_{c}" for dr, c in zip(drug, conc, strict=True)], dtype=object)
    obs = pd.DataFrame({"drug": drug, "sample": sample, "cell_line_id": rng.choice(["L1", "L2"], n),
                        "moa-fine": np.where(drug == "DMSO_TF", "unclear", "kinase"),
                        "plate": "plate1", "conc": conc,
                        "BARCODE_SUB_LIB_ID": [f"c{i:03d}" for i in range(n)]})  # fmt: skip
    symbols = ["MT-CO1", "MT-ND1"] + [f"G{j}" for j in range(2, G)]
    pq.write_table(pa.table({"gene_symbol": symbols, "ensembl_id": [f"E{j}" for j in range(G)],
                             "token_id": np.arange(3, 3 + G, dtype=np.int64)}), d / "genes.parquet")  # fmt: skip
    meta = pd.DataFrame({"sample": ["DMSO_TF_0.0", "drugA_0.5"], "plate": "plate1",
                         "drug": ["DMSO_TF", "drugA"],
                         "drugname_drugconc": ["[('DMSO_TF', 0.0, 'uM')]", "[('drugA', 0.5, 'uM')]"]})  # fmt: skip
    _tahoe_parquet(X, obs, d / "cells.parquet")
    a = ad.AnnData(X.copy(), obs=obs.set_index("BARCODE_SUB_LIB_ID").rename_axis(None),
                   var=pd.DataFrame({"symbol": symbols}, index=[f"E{j}" for j in range(G)]))  # fmt: skip
    a.write_h5ad(d / "cells.h5ad")
    with h5py.File(d / "cells.h5ad") as f:
        assert (f["X/data"][:] == 0).sum() == (X.data == 0).sum()  # the zeros are stored
    return d, X, meta


OBS_MAP = {"drug": "drug", "dose": "conc", "cell_line": "cell_line_id", "plate": "plate",
           "sample": "sample", "moa_fine": "moa-fine"}  # fmt: skip


@pytest.mark.parametrize("min_genes", [0, 3])
def test_parquet_and_h5ad_give_the_same_summaries_for_the_same_counts(
    same_counts_two_formats, min_genes
):
    d, X, meta = same_counts_two_formats
    vocab_p = vocab_from_gene_metadata(pq.read_table(d / "genes.parquet"))
    lp = load_shard(d / "cells.parquet", Shard("00000", 0, 0, None), vocab_p,
                    sample_doses(meta, "meta"), Filters(min_genes=min_genes))  # fmt: skip
    vocab_h, _ = h5ad_vocab(d / "cells.h5ad", gene_symbol_column="symbol")
    lh = load_h5ad_shard(d / "cells.h5ad", 0, None, OBS_MAP, "DMSO_TF", shard_name="00000",
                         filters=Filters(min_genes=min_genes))  # fmt: skip
    for ls in (lp, lh):
        assert (ls.X.data != 0).all() and ls.zero_count_rows == 1
        assert 9 not in ls.obs["file_row"].tolist()  # no count at all: removed even at 0
    expressed = np.diff((X != 0).astype(np.int8).tocsr().indptr)
    assert lp.filter_counts == lh.filter_counts == {
        "input": 40, "removed_by_min_genes": int((expressed < max(min_genes, 1)).sum()),
        "kept": int((expressed >= max(min_genes, 1)).sum()),
    }  # fmt: skip
    (cp, gp, bp), (ch, gh, bh) = summarize(lp, vocab_p), summarize(lh, vocab_h)
    assert cp.equals(ch), cp.to_pandas().compare(ch.to_pandas())
    assert gp.equals(gh) and bp.equals(bh)
    kept = lp.obs["file_row"].to_numpy()
    np.testing.assert_array_equal(cp.column("n_genes").to_numpy(), expressed[kept])
    np.testing.assert_array_equal(
        gp.column("n_cells").to_numpy(), np.diff((X[kept] != 0).tocsc().indptr)
    )


def test_a_file_of_zeros_is_a_warning_naming_the_file(small_table, ctx, tmp_path):
    zeros = [
        [CLS_VALUE] + [0.0] * (len(e) - 1) for e in small_table.column("expressions").to_pylist()
    ]
    t = small_table.set_column(small_table.schema.get_field_index("expressions"), "expressions",
                               pa.array(zeros, pa.list_(pa.float32())))  # fmt: skip
    n = t.num_rows
    path, ls = _load(t, tmp_path, ctx, Filters(min_genes=0), name="zeros")
    assert ls.zero_count_rows == n and ls.filter_counts["kept"] == 0
    assert ls.filter_counts["removed_by_min_genes"] == n
    good_path, good = _load(small_table, tmp_path, ctx, Filters(min_genes=0), name="good")
    recs = [_qc_record(ls, path), _qc_record(good, good_path, "00001")]
    assert filter_warnings(recs, {}) == [
        f"{path}: all {n} rows have no non-zero count (a file of zeros?); every cell of it is "
        "removed (counted in removed_by_min_genes)"
    ]
    # two row-range shards of one file: the file is all zeros only when every shard is
    _, a = _load(t.slice(0, n // 2), tmp_path, ctx, Filters(min_genes=0), name="za")
    part = {**_qc_record(a, path), "shard": "00000-0000"}
    mixed = {**_qc_record(good, path), "shard": "00000-0001"}  # same file, rows with counts
    assert filter_warnings([part, mixed], {}) == []


# --- 3. a gene twice in one cell ----------------------------------------------------------------
def test_a_token_twice_in_one_row_is_an_error_naming_file_and_row(small_table, ctx, tmp_path):
    g = small_table.column("genes").to_pylist()[BAD_ROW]
    e = small_table.column("expressions").to_pylist()[BAD_ROW]
    t = _set_row(small_table, "genes", BAD_ROW, g + [g[5]], pa.list_(pa.int64()))
    t = _set_row(t, "expressions", BAD_ROW, e + [3.0], pa.list_(pa.float32()))
    with pytest.raises(InputError) as err:
        _load(t, tmp_path, ctx, name="twice")
    assert str(err.value) == (
        f"{tmp_path / 'twice.parquet'}, row {BAD_ROW}: token id {g[5]} appears 2 times in "
        "'genes' (one count per gene expected)"
    )


def test_an_h5ad_column_twice_in_one_row_is_an_error_naming_the_row(
    same_counts_two_formats, tmp_path
):
    d, X, _ = same_counts_two_formats
    bad = 17
    lo, hi = X.indptr[bad], X.indptr[bad + 1]
    indices = X.indices.copy()
    indices[lo + 1] = indices[lo]  # row 17 stores its first column twice
    Y = sp.csr_matrix((X.data, indices, X.indptr), shape=X.shape)
    a = ad.read_h5ad(d / "cells.h5ad")
    a.X = Y
    a.write_h5ad(tmp_path / "twice.h5ad")
    with pytest.raises(InputError) as err:
        load_h5ad_shard(tmp_path / "twice.h5ad", 10, 30, OBS_MAP, "DMSO_TF")
    assert str(err.value) == (
        f"{tmp_path / 'twice.h5ad'}, row {bad}: X: column {indices[lo]} is stored more than once "
        "in the row (one count per gene expected)"
    )
    assert hi > lo + 1
    # unsorted but distinct columns are fine (sorted on reading)
    order = np.arange(X.nnz)
    order[lo : lo + 2] = order[lo : lo + 2][::-1]
    a.X = sp.csr_matrix((X.data[order], X.indices[order], X.indptr), shape=X.shape)
    a.write_h5ad(tmp_path / "unsorted.h5ad")
    got = load_h5ad_shard(tmp_path / "unsorted.h5ad", 0, None, OBS_MAP, "DMSO_TF")
    assert got.X.has_sorted_indices


# --- 4. drug_metadata joins ---------------------------------------------------------------------
def _groups(drugs: list[str], n_genes: int = 6, seed: int = 0):
    rng = np.random.default_rng(seed)
    k = len(drugs)
    groups = pd.DataFrame({"sample": [f"s{i}" for i in range(k)], "cell_line_id": "L1",
                           "drug": drugs, "dose_uM": [0.0 if d == "DMSO_TF" else 0.5 for d in drugs],
                           "n_cells": 10})  # fmt: skip
    counts = sp.csr_matrix(rng.poisson(20, (k, n_genes)).astype(np.float64))
    return counts, groups


def test_drugs_missing_from_drug_metadata_are_a_warning_naming_table_and_drugs(tmp_path):
    meta = pd.DataFrame({"drug": ["A", "B"], "targets": ["EGFR", "MTOR"],
                         "moa-fine": ["EGFR inhibitor", "mTOR inhibitor"]})  # fmt: skip
    counts, groups = _groups(["A", "B", "C", "DMSO_TF", "D "])
    seen: list[str] = []
    cond, X, _ = condition_table(counts, groups, meta, np.arange(3), list("xyz"), "DMSO_TF",
                                 drug_metadata_path="dm.parquet", warn=seen.append)  # fmt: skip
    assert seen == ["dm.parquet: 2 drug(s) of the data are not in it (MoA 'unknown', no "
                    "targets): 'C', 'D'"]  # fmt: skip
    assert X.loc[cond["drug"] == "C", "moa_unknown"].tolist() == [1.0]
    seen.clear()
    condition_table(counts, groups, meta.drop(columns="moa-fine"), np.arange(3), list("xyz"),
                    "DMSO_TF", drug_metadata_path="dm.parquet", warn=seen.append)  # fmt: skip
    assert (
        seen[0] == "dm.parquet: no column 'moa-fine': every drug's MoA is 'unknown' in the features"
    )


def test_drug_listed_twice_with_different_moa_is_an_error_naming_both_rows():
    meta = pd.DataFrame({"drug": ["A", "B", "A "], "moa-fine": ["x", "y", "z"],
                         "targets": ["T", "U", "T"]})  # fmt: skip
    with pytest.raises(InputError, match=r"^dm, row 2: drug 'A' is listed twice with different "
                                         r"moa-fine \('x' in row 0, 'z'\)$"):  # fmt: skip
        drug_annotations(meta, "dm")
    same = drug_annotations(meta.assign(**{"moa-fine": ["x", "y", "x"]}), "dm")
    assert same.index.tolist() == ["A", "B"]


@needs_tahoe_meta
def test_real_drug_names_with_a_trailing_space_join_drug_metadata():
    samples = pd.read_parquet(TAHOE_META / "sample_metadata.parquet")
    drugs = pd.read_parquet(TAHOE_META / "drug_metadata.parquet")
    plate = samples[(samples["plate"] == "plate1") | samples["drug"].str.endswith(" ")]
    assert {"Erdafitinib ", "Selinexor "} <= set(plate["drug"])
    counts, groups = _groups(plate["drug"].tolist())
    seen: list[str] = []
    cond, X, _ = condition_table(counts, groups, drugs, np.arange(3), list("xyz"), "DMSO_TF",
                                 drug_metadata_path="drug_metadata", warn=seen.append)  # fmt: skip
    assert seen == [] and "moa_unknown" not in X
    moa = drugs.set_index("drug")["moa-fine"]
    for name in ("Erdafitinib ", "Selinexor "):
        row = X[(cond["drug"] == name).to_numpy()]
        assert row[f"moa_{moa[name.strip()]}"].tolist() == [1.0]


# --- 5. sample_metadata against the data ----------------------------------------------------------
def test_a_sample_whose_drug_differs_from_sample_metadata_fails_naming_sample_and_rows(
    small_table, ctx, tmp_path
):
    _, doses, meta_path = ctx
    sample = small_table.column("sample")[BAD_ROW].as_py()
    meta_row = int(np.flatnonzero(doses.index == sample)[0])
    drug = small_table.column("drug")[BAD_ROW].as_py()
    other = next(d for d in small_table.column("drug").to_pylist() if d != drug)
    with pytest.raises(InputError) as err:
        _load(_set_row(small_table, "drug", BAD_ROW, other), tmp_path, ctx, name="drug")
    assert str(err.value) == (
        f"{tmp_path / 'drug.parquet'}, row {BAD_ROW}: sample {sample!r} has drug {other!r} here "
        f"but {drug!r} in sample_metadata ({meta_path}, row {meta_row}); its dose would be "
        "joined to the wrong cells"
    )


def test_a_sample_whose_plate_differs_from_sample_metadata_fails(small_table, ctx, tmp_path):
    with pytest.raises(InputError, match=rf"row {BAD_ROW}: sample '.*' has plate 'plate9' here "
                                         r"but 'plate13' in sample_metadata"):  # fmt: skip
        _load(_set_row(small_table, "plate", BAD_ROW, "plate9"), tmp_path, ctx, name="plate")


@needs_tahoe_meta
def test_real_sample_metadata_agrees_with_trailing_space_names_and_a_changed_copy_fails():
    meta = pd.read_parquet(TAHOE_META / "sample_metadata.parquet")
    doses = sample_doses(meta, "sample_metadata.parquet")
    # cells as the data has them: the drug and plate of each sample, 'Erdafitinib ' included
    rows = np.arange(len(meta))
    sample = meta["sample"].to_numpy(dtype=object)
    cols = {
        "drug": meta["drug"].to_numpy(dtype=object),
        "plate": meta["plate"].to_numpy(dtype=object),
    }
    check_sample_metadata("data", sample, rows, cols, rows, doses)  # no error
    r = int(np.flatnonzero(meta["drug"] == "Erdafitinib ")[0])
    bad = meta.copy()
    bad.loc[r, "drug"] = "Selinexor "
    bad.loc[r, "drugname_drugconc"] = bad.loc[r, "drugname_drugconc"].replace(
        "Erdafitinib", "Selinexor"
    )
    with pytest.raises(InputError) as err:
        check_sample_metadata("data", sample, rows, cols, rows, sample_doses(bad, "bad.parquet"))
    assert str(err.value) == (
        f"data, row {r}: sample {sample[r]!r} has drug 'Erdafitinib ' here but 'Selinexor' in "
        f"sample_metadata (bad.parquet, row {r}); its dose would be joined to the wrong cells"
    )
    # the table's own drug column disagreeing with drugname_drugconc is an error too
    bad.loc[r, "drug"] = "Erdafitinib "
    with pytest.raises(InputError, match=rf"^bad, row {r}: column 'drug' is 'Erdafitinib' but "
                                         r"drugname_drugconc names 'Selinexor'$"):  # fmt: skip
        sample_doses(bad, "bad")


# --- 6. a decreasing h5ad indptr ----------------------------------------------------------------
def test_a_decreasing_indptr_names_the_bad_row_not_the_shard_start(tmp_path):
    n = 300
    rng = np.random.default_rng(0)
    X = sp.random(n, G, density=0.4, format="csr", random_state=2, dtype=np.float32)
    X.data = np.ceil(X.data * 9)
    obs = pd.DataFrame({"drug": rng.choice(["DMSO_TF", "x"], n)}, index=[f"c{i}" for i in range(n)])
    ad.AnnData(X, obs=obs).write_h5ad(tmp_path / "down.h5ad")
    with h5py.File(tmp_path / "down.h5ad", "r+") as f:
        f["X/indptr"][252] = f["X/indptr"][251] - 1  # row 251 ends before it starts
    with pytest.raises(InputError, match=r"down\.h5ad, row 251: X/indptr decreases"):
        load_h5ad_shard(tmp_path / "down.h5ad", 200, 300, {"drug": "drug"}, "DMSO_TF")
    load_h5ad_shard(tmp_path / "down.h5ad", 0, 200, {"drug": "drug"}, "DMSO_TF")  # rows before
    ad.AnnData(X, obs=obs).write_h5ad(tmp_path / "past.h5ad")
    with h5py.File(tmp_path / "past.h5ad", "r+") as f:
        f["X/indptr"][271:] = f["X/indptr"][271:] + 10_000
    with pytest.raises(InputError, match=r"past\.h5ad, row 270: X/indptr points outside X/data"):
        load_h5ad_shard(tmp_path / "past.h5ad", 200, 300, {"drug": "drug"}, "DMSO_TF")


# --- extra: sample_metadata doses -----------------------------------------------------------------
@pytest.mark.parametrize(
    "text,problem",
    [
        ("[('Drug', -0.5, 'uM')]", "dose -0.5 in drugname_drugconc is not a finite non-negative"),
        ("[('Drug', 1e999, 'uM')]", "dose inf in drugname_drugconc is not a finite non-negative"),
        ("[('Drug', 0.5, 'uM'), ('Other', 1.0, 'uM')]", "lists 2 drugs (combinations are not"),
        ("[('Drug', 0.5, 'ug/ml')]", "unknown dose unit 'ug/ml'"),
    ],
)
def test_bad_doses_in_sample_metadata_name_the_row(ctx, text, problem):
    _, _, meta_path = ctx
    meta = pq.read_table(meta_path).to_pandas()
    meta.loc[3, "drugname_drugconc"] = text
    meta.loc[3, "drug"] = "Drug"
    with pytest.raises(InputError) as err:
        sample_doses(meta, "sm.parquet")
    assert str(err.value).startswith("sm.parquet, row 3: ") and problem in str(err.value)


# --- the merge's warnings reach the console and the job log ---------------------------------------
@pytest.mark.workflow
def test_merge_warns_on_console_and_in_its_log(small_demo, small_table, tmp_path, no_host_slurm):
    root, _ = small_demo
    zeros = [
        [CLS_VALUE] + [0.0] * (len(e) - 1) for e in small_table.column("expressions").to_pylist()
    ]
    mirror = tmp_path / "mirror"
    (mirror / "data").mkdir(parents=True)
    shutil.copytree(root / "metadata", mirror / "metadata")
    shutil.copy(
        root / "data/train-00000-of-00002.parquet", mirror / "data/train-00000-of-00002.parquet"
    )
    t = small_table.set_column(small_table.schema.get_field_index("expressions"), "expressions",
                               pa.array(zeros, pa.list_(pa.float32())))  # fmt: skip
    pq.write_table(t, mirror / "data/train-00001-of-00002.parquet")
    cfg = {"source": {"kind": "local", "files": "0:2",
                      "local": {"path": str(mirror), "n_files_total": 2}},
           "filters": {"cell_lines": ["CVCL_0131", "CVCL_O131"]}}  # fmt: skip
    wd = tmp_path / "wd"
    proc = run_smk(wd, cfg, "results/merged/cells.parquet", cores=2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    expected = [
        "WARNING: config key 'filters.cell_lines': 'CVCL_O131' matches no cell in the "
        f"{2 * t.num_rows} rows read (4 distinct values there); did you mean 'CVCL_0131'?",
        f"WARNING: train-00001-of-00002.parquet: all {t.num_rows} rows have no "
        "non-zero count (a file of zeros?); every cell of it is removed (counted in "
        "removed_by_min_genes)",
    ]
    console = proc.stderr.splitlines()
    log = (wd / "results/logs/merge/cells.log").read_text()
    for line in expected:
        assert line in console, proc.stderr[-4000:]
        assert line in log, log
    qc = pd.read_csv(wd / "results/merged/filter_qc.csv")
    assert qc["zero_count_rows"].tolist() == [0, t.num_rows, t.num_rows]
