"""Tahoe-100M's real metadata (resources/tahoe_metadata/, revision 2dc57900...): the facts the
code relies on, each checked on the real tables, and the code's behaviour on them.

Nothing here edits a real table to make it look like a fact; the bad-input cases at the end
start from the real tables and change them the way another revision would.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from conftest import REPO

from tahoeflow.cells.doses import sample_doses
from tahoeflow.cells.plan import Shard
from tahoeflow.cells.summarize import Filters, filter_cells, filter_warnings, load_shard
from tahoeflow.cells.vocab import vocab_from_gene_metadata
from tahoeflow.errors import InputError
from tahoeflow.merge.conditions import condition_table, drug_annotations
from tahoeflow.sources.demo import DemoParams, Design
from tahoeflow.sources.demo_files import generate_file
from tahoeflow.sources.demo_tables import REAL_METADATA_DIR, REAL_REVISION
from tahoeflow.sources.tahoe import CONTROL_DRUG, EXPRESSION_SCHEMA, FIRST_TOKEN, N_GENES

META = REAL_METADATA_DIR
SEED000_GBM = [
    "CVCL_0131",
    "CVCL_0021",
    "CVCL_0022",
    "CVCL_S471",
    "CVCL_5735",
    "CVCL_1239",
    "CVCL_RU29",
]  # fmt: skip  (README's example filter: seed 000's 7 glioblastoma lines)


def table(kind: str) -> pa.Table:
    return pq.read_table(META / f"{kind}.parquet")


@pytest.fixture(scope="module")
def samples() -> pd.DataFrame:
    s = table("sample_metadata").to_pandas()
    parsed = [ast.literal_eval(t)[0] for t in s["drugname_drugconc"]]
    s["dc_name"] = [p[0] for p in parsed]
    s["conc"] = [float(p[1]) for p in parsed]
    s["unit"] = [p[2] for p in parsed]
    return s


@pytest.fixture(scope="module")
def grid() -> pd.DataFrame:
    return table("obs_cell_grid").to_pandas()


@pytest.fixture(scope="module")
def lines() -> pd.DataFrame:
    return table("cell_line_metadata").to_pandas()


# --- provenance -----------------------------------------------------------------------------
def test_the_tables_are_committed_with_source_revision_and_licence():
    names = {"gene_metadata", "sample_metadata", "drug_metadata", "cell_line_metadata",
             "obs_cell_grid"}  # fmt: skip
    assert {p.stem for p in META.glob("*.parquet")} == names
    readme = (META / "README.md").read_text()
    assert "tahoebio/Tahoe-100M" in readme and REAL_REVISION in readme and "CC0-1.0" in readme
    assert REAL_REVISION in (REPO / "config/config.yaml").read_text()  # the pinned revision
    # not ignored by git (a fresh clone must have them)
    import subprocess

    ignored = subprocess.run(
        ["git", "check-ignore", "-q", str(META / "gene_metadata.parquet")], cwd=REPO
    )
    assert ignored.returncode == 1


# --- gene_metadata --------------------------------------------------------------------------
def test_genes_tokens_and_the_37_mt_genes():
    gm = table("gene_metadata")
    assert gm.num_rows == N_GENES == 62_710
    tokens = gm.column("token_id").to_numpy()
    np.testing.assert_array_equal(tokens, np.arange(FIRST_TOKEN, FIRST_TOKEN + N_GENES))
    assert tokens[0] == 3 and tokens[-1] == 62_712
    symbols = pd.Series(gm.column("gene_symbol").to_pylist())
    mt = symbols[symbols.str.startswith("MT-")]
    assert len(mt) == 37
    # 13 protein-coding genes, 2 rRNAs, 22 tRNAs; none of the many MT1*/MTND* lookalikes
    assert mt.str.match(r"MT-(ND|CO|ATP|CYB)").sum() == 13
    assert mt.str.startswith("MT-RNR").sum() == 2 and mt.str.startswith("MT-T").sum() == 22
    assert symbols.str.upper().str.startswith("MT").sum() > 400
    # the reader flags exactly those 37 (case-sensitive "MT-" prefix)
    vocab = vocab_from_gene_metadata(gm, "gene_metadata")
    assert vocab.is_mito.sum() == 37
    np.testing.assert_array_equal(np.flatnonzero(vocab.is_mito), mt.index.to_numpy())


def test_gene_ids_ensembl_unique_and_symbols_at_this_revision():
    """Ensembl ids are unique (the h5ad exports index genes by them). At this revision the
    symbols are unique too (0 duplicates, also ignoring case) - contrary to third-party notes
    that say they are not; the code never keys genes by symbol, so either way is handled."""
    gm = table("gene_metadata").to_pandas()
    assert gm["ensembl_id"].is_unique and gm["ensembl_id"].str.match(r"^ENSG\d{11}$").all()
    assert gm["gene_symbol"].notna().all()
    assert gm["gene_symbol"].duplicated().sum() == 0
    assert gm["gene_symbol"].str.upper().duplicated().sum() == 0


# --- sample_metadata ------------------------------------------------------------------------
def test_1344_samples_are_14_plates_of_96_wells_with_2_dmso_wells_each(samples):
    assert len(samples) == 1344 and samples["sample"].is_unique
    per_plate = samples.groupby("plate").size()
    assert len(per_plate) == 14 and (per_plate == 96).all()
    assert sorted(per_plate.index, key=lambda p: int(p[5:])) == [f"plate{i}" for i in range(1, 15)]
    dmso = samples[samples["drug"] == CONTROL_DRUG].groupby("plate").size()
    assert len(dmso) == 14 and (dmso == 2).all()
    assert set(samples.loc[samples["drug"] == CONTROL_DRUG, "drugname_drugconc"]) == {
        "[('DMSO_TF', 0.0, 'uM')]"
    }
    assert set(samples["unit"]) == {"uM"}


def test_the_dmso_solvate_trametinib_is_a_drug_not_a_control(samples, tmp_path):
    solvate = "Trametinib (DMSO_TF solvate)"
    rows = samples[samples["drug"] == solvate]
    assert rows[["plate", "conc"]].values.tolist() == [
        ["plate7", 0.05], ["plate8", 0.5], ["plate9", 5.0]
    ]  # fmt: skip
    # contains the control's name, so any substring match would make it a control
    assert CONTROL_DRUG in solvate
    # the reader: its cells are treated cells, with its dose (demo file of plate 7 on the
    # real design, read with the real metadata)
    design = Design(DemoParams(seed=2, n_files=1, cells_per_file=400, n_cell_lines=2, n_drugs=3,
                               n_plates=2))  # fmt: skip
    assert design.plate_names == ["plate7", "plate13"] and design.drug_names[0] == solvate
    design2 = Design(DemoParams(seed=2, n_files=2, cells_per_file=400, n_cell_lines=2, n_drugs=3,
                                n_plates=2))  # fmt: skip
    path = tmp_path / "plate7.parquet"
    pq.write_table(generate_file(design2, 0), path)
    doses = sample_doses(samples.drop(columns=["dc_name", "conc", "unit"]), "sample_metadata")
    loaded = load_shard(path, Shard("00000", 0, 0, None),
                        vocab_from_gene_metadata(table("gene_metadata")), doses, Filters())  # fmt: skip
    obs = loaded.obs
    assert set(obs["plate"]) == {"plate7"}
    sol = obs[obs["drug"] == solvate]
    assert len(sol) > 0 and not sol["is_control"].any() and set(sol["dose_uM"]) == {0.05}
    ctrl = obs[obs["is_control"]]
    assert len(ctrl) > 0 and set(ctrl["drug"]) == {CONTROL_DRUG} and set(ctrl["dose_uM"]) == {0.0}


def test_no_code_matches_the_control_by_substring():
    """Controls are recognised by equality only: no ``contains`` / ``startswith`` /
    ``match_substring`` / regex search / ``in`` on a line that names the control."""
    pattern = re.compile(
        r"(contains\(|match_substring|startswith\(|endswith\(|\.find\(|re\.search|re\.match"
        r"|\bin\s+(drug|name)|(control|CONTROL_DRUG|DMSO)\w*\s+in\s)"
    )
    bad = []
    files = [*(REPO / "src/tahoeflow").glob("*.py"), *(REPO / "workflow/scripts").glob("*.py"),
             *(REPO / "rules").glob("*.smk")]  # fmt: skip
    for path in files:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"control|CONTROL_DRUG|DMSO", code) and pattern.search(code):
                if '"""' in code or code.strip().startswith(('f"', '"', "'")):
                    continue  # text, not a test on a name
                bad.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not bad, "\n".join(bad)


def test_trailing_spaces_in_two_drug_names_and_the_join_to_drug_metadata(samples, grid):
    spaced = sorted(set(samples.loc[samples["drug"] != samples["drug"].str.strip(), "drug"]))
    assert spaced == ["Erdafitinib ", "Selinexor "]
    assert set(samples.loc[samples["drug"].isin(spaced), "dc_name"]) == set(spaced)
    assert set(grid.loc[grid["drug"].str.strip() != grid["drug"], "drug"]) == set(spaced)
    dm = table("drug_metadata").to_pandas()
    assert not set(spaced) & set(dm["drug"]) and {s.strip() for s in spaced} <= set(dm["drug"])
    # an exact join loses them; condition_table joins without the spaces: their real MoA
    moa = dm.set_index("drug")["moa-fine"]
    groups = pd.DataFrame({
        "sample": ["a", "b", "c", "d"], "drug": ["Erdafitinib ", "Selinexor ", CONTROL_DRUG,
                                                 CONTROL_DRUG],
        "dose_uM": [0.05, 5.0, 0.0, 0.0], "cell_line_id": ["CVCL_0131"] * 4, "n_cells": [30] * 4,
    })  # fmt: skip
    warned = []
    cond, X, _ = condition_table(
        sp.csr_matrix(np.ones((4, 3))), groups, dm, np.arange(3), ["g1", "g2", "g3"],
        CONTROL_DRUG, warn=warned.append,
    )  # fmt: skip
    assert not warned  # no drug of the data is "absent" from drug_metadata
    for drug in spaced:
        row = (cond["drug"] == drug).to_numpy()
        assert X.loc[row, f"moa_{moa[drug.strip()]}"].iloc[0] == 1.0
    assert drug_annotations(dm).index.is_unique


def test_doses_plates_and_replicates_across_plates(samples):
    treated = samples[samples["drug"] != CONTROL_DRUG]
    assert set(treated["conc"]) == {0.05, 0.5, 5.0}
    for plate in ("plate1", "plate4", "plate7", "plate10"):
        assert set(treated.loc[treated["plate"] == plate, "conc"]) == {0.05}
    p13 = treated[treated["plate"] == "plate13"]["conc"].value_counts()
    assert p13.to_dict() == {0.05: 39, 0.5: 30, 5.0: 25}
    # every other plate holds one dose, apart from one Adagrasib well at 0.05
    for _plate, g in treated[~treated["plate"].isin(["plate1", "plate4", "plate7", "plate10",
                                                    "plate13"])].groupby("plate"):  # fmt: skip
        assert g["conc"].value_counts().iloc[0] == 93
        assert g.loc[g["conc"] == 0.05, "drug"].tolist() == ["Adagrasib"]
    on_plates = treated.groupby(["drug", "conc"])["plate"].nunique()
    assert (on_plates > 1).sum() == 156
    # the workflow parses every real dose, named by the real drug column (spaces ignored)
    doses = sample_doses(samples.drop(columns=["dc_name", "conc", "unit"]), "sample_metadata")
    np.testing.assert_array_equal(doses.to_numpy(), samples["conc"].to_numpy())


# --- drug_metadata and cell_line_metadata ---------------------------------------------------
def test_drug_metadata_379_drugs_without_dmso_and_pubchem_cid_as_double():
    dm = table("drug_metadata")
    assert dm.num_rows == 379 and dm.to_pandas()["drug"].is_unique
    assert CONTROL_DRUG not in set(dm.column("drug").to_pylist())
    assert dm.schema.field("pubchem_cid").type == pa.float64()
    assert EXPRESSION_SCHEMA.field("pubchem_cid").type == pa.string()  # the shards' type
    # the demo writes the shards' form ("1923.0") from the double
    design = Design(DemoParams(n_files=1, cells_per_file=10, n_cell_lines=1, n_drugs=4,
                               n_plates=1))  # fmt: skip
    cid = dm.to_pandas().set_index("drug")["pubchem_cid"]
    for name, text in zip(design.drug_names, design.drug_cid, strict=True):
        assert text == ("" if np.isnan(cid[name.strip()]) else str(float(cid[name.strip()])))
        assert text.endswith(".0") or text == ""


def test_cell_line_metadata_one_row_per_driver_and_the_50_lines_of_the_data(lines, grid):
    assert len(lines) == 1000 and lines["cell_name"].nunique() == 102
    per_name = lines.groupby("cell_name")["Cell_ID_Cellosaur"].nunique()
    assert (per_name == 1).all()  # one Cellosaurus id per name, repeated per driver mutation
    used = set(grid["cell_name"])
    assert len(used) == 50 and used <= set(lines["cell_name"])
    ids = lines.drop_duplicates("cell_name").set_index("cell_name")["Cell_ID_Cellosaur"]
    assert ids[sorted(used)].nunique() == 50
    assert grid["n_cells"].sum() == 100_648_790 and len(grid) == 65_943


def test_seed000_glioblastoma_filter_selects_two_lines_and_warns_for_five(lines, grid):
    ids = lines.drop_duplicates("cell_name").set_index("cell_name")
    tahoe = ids.loc[sorted(set(grid["cell_name"]))]
    in_tahoe = [c for c in SEED000_GBM if c in set(tahoe["Cell_ID_Cellosaur"])]
    assert in_tahoe == ["CVCL_0131", "CVCL_1239"]
    assert tahoe.set_index("Cell_ID_Cellosaur").loc[in_tahoe, "Organ"].tolist() == [
        "CNS/Brain", "CNS/Brain"
    ]  # fmt: skip
    cns = tahoe[tahoe["Organ"] == "CNS/Brain"]
    assert sorted(cns.index) == ["A-172", "H4", "SW 1088"]
    assert ids.loc["SW 1088", "Cell_ID_Cellosaur"] == "CVCL_1715"
    # README's example filter on data holding all 50 lines: keeps A-172 and H4 only, and the
    # merge warns once for each of the other five ids
    data_lines = np.repeat(tahoe["Cell_ID_Cellosaur"].to_numpy(), 3)
    n = data_lines.size
    keep, counts, seen = filter_cells(
        Filters(cell_lines=SEED000_GBM), data_lines, np.full(n, "x", dtype=object),
        np.full(n, "plate1", dtype=object), np.full(n, 100),
    )  # fmt: skip
    assert set(data_lines[keep]) == {"CVCL_0131", "CVCL_1239"} and counts["kept"] == 6
    warnings = filter_warnings([{**counts, "values_seen": seen}], {"cell_lines": SEED000_GBM})
    assert len(warnings) == 5
    for cid in ("CVCL_0021", "CVCL_0022", "CVCL_S471", "CVCL_5735", "CVCL_RU29"):
        assert sum(cid in w and "filters.cell_lines" in w for w in warnings) == 1


# --- bad input: metadata tables of another revision ------------------------------------------
def _renamed(kind: str, old: str, new: str) -> pa.Table:
    t = table(kind)
    return t.rename_columns([new if c == old else c for c in t.column_names])


def test_gene_metadata_with_a_renamed_column_names_file_column_and_what_it_has():
    with pytest.raises(InputError) as info:
        vocab_from_gene_metadata(
            _renamed("gene_metadata", "gene_symbol", "gene_name"), "gm.parquet"
        )
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("gm.parquet: missing column 'gene_symbol'")
    assert "gene_name, ensembl_id, token_id" in msg and "another revision" in msg


def test_gene_metadata_with_null_or_text_token_ids_is_an_error():
    gm = table("gene_metadata")
    tok = gm.column("token_id").to_pylist()
    for bad in (pa.array([None, *tok[1:]], pa.int64()), pa.array([f"t{t}" for t in tok])):
        t = gm.set_column(gm.column_names.index("token_id"), "token_id", bad)
        with pytest.raises(InputError, match=r"^gm\.parquet: token_id must be integers"):
            vocab_from_gene_metadata(t, "gm.parquet")


def test_sample_and_drug_metadata_with_renamed_columns(samples):
    sm = table("sample_metadata").to_pandas().rename(columns={"drugname_drugconc": "drug_conc"})
    with pytest.raises(InputError, match=r"^sm\.parquet: missing column 'drugname_drugconc' "
                                         r"\(it has sample, plate, .*drug_conc"):  # fmt: skip
        sample_doses(sm, "sm.parquet")
    dm = table("drug_metadata").to_pandas().rename(columns={"drug": "compound"})
    with pytest.raises(InputError, match=r"^dm\.parquet: missing column 'drug' \(it has compound"):
        drug_annotations(dm, "dm.parquet")


def test_a_sample_of_the_data_absent_from_sample_metadata_names_file_row_and_sample(
    samples, tmp_path
):
    """The data of plate 13 read with a sample_metadata that lacks plate 13 (as a table of
    another revision or release could): an error naming the file, the row and the sample."""
    design = Design(DemoParams(seed=4, n_files=1, cells_per_file=300, n_cell_lines=2, n_drugs=2,
                               n_plates=1))  # fmt: skip
    path = tmp_path / "train-00000-of-00001.parquet"
    t = generate_file(design, 0)
    pq.write_table(t, path)
    other = samples[samples["plate"] != "plate13"].drop(columns=["dc_name", "conc", "unit"])
    with pytest.raises(InputError) as info:
        load_shard(path, Shard("00000", 0, 0, None),
                   vocab_from_gene_metadata(table("gene_metadata")),
                   sample_doses(other, "sample_metadata.parquet"), Filters())  # fmt: skip
    first = t.column("sample")[0].as_py()
    assert str(info.value) == (f"{path}, row 0: sample {first!r} is not in sample_metadata")


def test_demo_refuses_real_tables_of_another_revision(tmp_path):
    import shutil

    for p in Path(META).glob("*.parquet"):
        shutil.copy(p, tmp_path / p.name)
    pq.write_table(_renamed("obs_cell_grid", "cell_name", "cell_line"),
                   tmp_path / "obs_cell_grid.parquet")  # fmt: skip
    with pytest.raises(InputError) as info:
        Design(DemoParams(), tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'obs_cell_grid.parquet'}: missing column(s) cell_name")
    assert "\n" not in msg and REAL_REVISION in msg
