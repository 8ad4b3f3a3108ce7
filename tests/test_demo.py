"""The demo dataset has the hub's schema, realistic shape, and a consistent ground truth."""

from __future__ import annotations

import ast
import hashlib
import re

import numpy as np
import pandas as pd
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tahoeflow.sources.demo import DemoParams, Design
from tahoeflow.sources.demo_files import generate_file, write_file, write_metadata
from tahoeflow.sources.tahoe import EXPRESSION_SCHEMA, N_GENES


def test_schema_is_exactly_the_hubs(small_table):
    assert small_table.schema.remove_metadata().equals(EXPRESSION_SCHEMA)


def test_rows_look_like_tahoe(small_table):
    genes = small_table.column("genes").combine_chunks()
    expr = small_table.column("expressions").combine_chunks()
    offs = genes.offsets.to_numpy()
    g, e = genes.values.to_numpy(), expr.values.to_numpy()
    assert np.all(g[offs[:-1]] == 1) and np.all(e[offs[:-1]] == -2)
    keep = np.ones(g.size, bool)
    keep[offs[:-1]] = False
    assert g[keep].min() >= 3 and g[keep].max() <= 62_712
    assert np.all(e[keep] >= 1) and np.all(e[keep] == np.rint(e[keep]))
    nnz = np.diff(offs) - 1
    assert 1000 < nnz.mean() < 1600 and nnz.min() > 150 and nnz.max() < 7000
    ids = small_table.column("BARCODE_SUB_LIB_ID").to_pylist()
    assert len(set(ids)) == len(ids) and all(len(i) == 19 for i in ids)
    assert "DMSO_TF" in set(small_table.column("drug").to_pylist())
    assert all(c.startswith("CVCL_") for c in set(small_table.column("cell_line_id").to_pylist()))
    assert (
        len(set(small_table.column("plate").to_pylist())) == 1
    )  # one plate per file, as on the hub


def test_metadata_tables(small_demo):
    root, design = small_demo
    gm = pq.read_table(root / "metadata/gene_metadata.parquet")
    assert gm.num_rows == N_GENES and gm.column_names == ["gene_symbol", "ensembl_id", "token_id"]
    assert sum(s.startswith("MT-") for s in gm.column("gene_symbol").to_pylist()) == 37
    sm = pq.read_table(root / "metadata/sample_metadata.parquet").to_pandas()
    parsed = [ast.literal_eval(s)[0] for s in sm["drugname_drugconc"]]
    assert {p[1] for p in parsed if p[0] != "DMSO_TF"} == {0.05, 0.5, 5.0}
    assert {p[1] for p in parsed if p[0] == "DMSO_TF"} == {0.0}
    cl = pq.read_table(root / "metadata/cell_line_metadata.parquet").to_pandas()
    assert cl["Cell_ID_Cellosaur"].duplicated().any()  # one row per driver mutation
    dm = pq.read_table(root / "metadata/drug_metadata.parquet").to_pandas()
    assert "DMSO_TF" not in set(dm["drug"]) and "unclear" in set(dm["moa-fine"]) | {"unclear"}


def test_truth_effects_are_only_for_active_drugs_in_sensitive_lines(small_demo):
    root, design = small_demo
    import pandas as pd

    eff = pd.read_parquet(root / "truth/effects.parquet")
    active = {design.drug_names[d] for d in np.flatnonzero(design.active)}
    assert set(eff["drug"]) <= active and len(eff) > 0
    assert (eff["effect_ln"] != 0).all()
    assert set(eff["dose_uM"]) == {0.05, 0.5, 5.0}


def test_effects_are_visible_in_the_counts():
    """The designed log-fold change of a strong effect is recovered from simulated pseudobulks."""
    p = DemoParams(seed=1, n_files=1, cells_per_file=6000, n_cell_lines=1, n_drugs=2, n_plates=1,
                   frac_active_drugs=1.0, frac_resistant=0.0, control_wells_per_plate=2, well_sd=0.0)  # fmt: skip
    design = Design(p)
    t = generate_file(design, 0)
    eff = design.truth_effects()
    drug = eff[(eff["dose_uM"] == 5.0)].sort_values("effect_ln", key=abs)["drug"].iloc[-1]
    df = t.select(["drug", "sample"]).to_pandas()
    genes = t.column("genes").combine_chunks()
    expr = t.column("expressions").combine_chunks()
    sm = design.sample_metadata.to_pandas().set_index("sample")
    dose = (
        sm.loc[df["sample"], "drugname_drugconc"]
        .map(lambda s: ast.literal_eval(s)[0][1])
        .to_numpy()
    )

    def counts(mask):
        rows = np.flatnonzero(mask)
        tot = np.zeros(62_713)
        for r in rows:  # a test-only reference, a few hundred cells
            g = genes[int(r)].values.to_numpy()[1:]
            np.add.at(tot, g, expr[int(r)].values.to_numpy()[1:])
        return tot

    treated = counts((df["drug"] == drug).to_numpy() & (dose == 5.0))
    control = counts((df["drug"] == "DMSO_TF").to_numpy())
    # the 20 strongest effects among genes the smaller pseudobulk measures (expected >= 30
    # counts in both): real well sizes vary and a cytotoxic drug leaves fewer treated cells
    top = eff[(eff["drug"] == drug) & (eff["dose_uM"] == 5.0)]
    expected = treated.sum() * control[top["token_id"]] / control.sum() * np.exp(top["effect_ln"])
    top = top[(control[top["token_id"]] >= 30) & (expected >= 30)]
    top = top.sort_values("effect_ln", key=abs).iloc[-20:]
    assert len(top) == 20
    est = np.log2(
        (treated / treated.sum())[top["token_id"]] / (control / control.sum())[top["token_id"]]
    )
    assert np.corrcoef(est, top["log2fc_share"])[0, 1] > 0.9


def test_files_are_deterministic_and_independent(tmp_path):
    p = DemoParams(seed=5, n_files=3, cells_per_file=300, n_cell_lines=3, n_drugs=3)
    design = Design(p)
    write_file(design, 1, tmp_path / "a.parquet")
    write_file(Design(p), 1, tmp_path / "b.parquet")
    digest = [
        hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() for n in ("a.parquet", "b.parquet")
    ]
    assert digest[0] == digest[1]
    t0 = generate_file(design, 0)
    t1 = pq.read_table(tmp_path / "a.parquet")
    assert set(t0.column("BARCODE_SUB_LIB_ID").to_pylist()).isdisjoint(
        t1.column("BARCODE_SUB_LIB_ID").to_pylist()
    )


def test_bad_demo_params_name_the_key():
    from tahoeflow.errors import ArgumentError

    with pytest.raises(ArgumentError, match="'frac_active_drugs': value 2.0 is out of range"):
        DemoParams(frac_active_drugs=2.0)
    with pytest.raises(ArgumentError, match="'genes_per_effect': value 200 is out of range"):
        DemoParams(genes_per_effect=200, n_expressed_genes=100)
    # at parse time: the schema checks each range, tahoeflow.config.validate the cross-key one
    import copy

    import yaml
    from conftest import REPO

    from tahoeflow.config import validate_config
    from tahoeflow.errors import ConfigError

    cfg = copy.deepcopy(yaml.safe_load((REPO / "config/config.yaml").read_text()))
    cfg["demo"].update(genes_per_effect=200, n_expressed_genes=100)
    with pytest.raises(ConfigError, match="'demo.genes_per_effect': 200 is more than"):
        validate_config(cfg, REPO / "config/schema.yaml")


def test_lengths_per_row_are_consistent(small_table):
    assert pc.all(
        pc.equal(
            pc.list_value_length(small_table["genes"]),
            pc.list_value_length(small_table["expressions"]),
        )
    ).as_py()


# --- the real design ---------------------------------------------------------------------
def _config_demo() -> DemoParams:
    """The demo `make demo` runs (config/config.yaml's demo section)."""
    import yaml
    from conftest import REPO

    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    return DemoParams.from_dict(cfg["demo"])


def test_demo_metadata_are_the_real_tables_byte_for_byte(small_demo):
    from tahoeflow.sources.demo_tables import REAL_METADATA_DIR

    root, _ = small_demo
    for kind in ("gene", "sample", "drug", "cell_line"):
        ours = (root / f"metadata/{kind}_metadata.parquet").read_bytes()
        assert ours == (REAL_METADATA_DIR / f"{kind}_metadata.parquet").read_bytes(), kind


def test_default_slice_shows_the_real_traps_mixed_doses_and_replicate_plates():
    p = _config_demo()
    design = Design(p)
    assert design.plate_names == ["plate1", "plate7", "plate13"]
    w = design.wells.assign(d=design.well_drug)
    treated = w[w["d"] >= 0]
    # the DMSO solvate of trametinib is a treated drug of plate 7, not a control
    solvate = treated[treated["drug"] == "Trametinib (DMSO_TF solvate)"]
    assert solvate["plate"].tolist() == ["plate7"]
    # a name with a trailing space, as the real data spells it, with its real MoA
    assert "Erdafitinib " in design.drug_names
    i = design.drug_names.index("Erdafitinib ")
    assert design.drug_moa_fine[i] != "unclear" and design.drug_cid[i].endswith(".0")
    # plate 13 mixes the three doses; some drug-doses are on two or three plates
    assert set(treated.loc[treated["plate"] == "plate13", "conc"]) == {0.05, 0.5, 5.0}
    assert (treated.groupby(["drug", "conc"])["plate"].nunique() >= 2).sum() >= 10
    # 2 real DMSO wells per plate, real Cellosaurus ids, A-172 and H4 first
    assert (w[w["d"] < 0].groupby("plate").size() == 2).all()
    assert design.line_ids[:2] == ["CVCL_0131", "CVCL_1239"] and len(design.line_ids) == 8
    assert all(c.startswith("CVCL_") for c in design.line_ids)
    # every plate has a file; files hold one plate each, in plate order
    assert [len(f) for f in design.plate_files] == [1, 1, 2]
    assert [design.file_plate(i) for i in range(p.n_files)] == [0, 1, 2, 2]


def test_files_one_plate_each_sorted_by_plate_real_barcodes_and_row_groups(tmp_path):
    p = DemoParams(seed=7, n_files=4, cells_per_file=1500, n_cell_lines=3, n_drugs=6, n_plates=3)
    design = Design(p)
    plates, ids = [], []
    for i in range(p.n_files):
        path = tmp_path / f"f{i}.parquet"
        write_file(design, i, path)
        md = pq.ParquetFile(path).metadata
        assert [md.row_group(k).num_rows for k in range(md.num_row_groups)] == [1000, 500]
        t = pq.read_table(path)
        assert t.schema.remove_metadata().equals(EXPRESSION_SCHEMA)
        (plate,) = set(t.column("plate").to_pylist())
        plates.append(int(plate.removeprefix("plate")))
        bc = t.column("BARCODE_SUB_LIB_ID").to_pylist()
        assert all(re.fullmatch(r"\d{2}_\d{3}_\d{3}-lib_\d{4}", b) for b in bc)
        # round 1 is the well's position on its plate (the sample's place among the plate's
        # 96 rows of sample_metadata); the sub-library encodes the plate
        sm = design.sample_metadata.to_pandas()
        pos = (sm.groupby("plate").cumcount() + 1).set_axis(sm["sample"])
        s = t.column("sample").to_pylist()
        assert [int(b[:2]) for b in bc] == pos[s].tolist()
        assert {int(b[-4:]) // 10 - 100 for b in bc} == {plates[-1]}
        ids += bc
    assert plates == sorted(plates) and set(plates) == {1, 7, 13}
    assert len(set(ids)) == len(ids) == p.n_files * p.cells_per_file


def test_cells_per_line_and_well_follow_the_real_grid_times_survival(tmp_path):
    """Each plate's cells are apportioned exactly to (well, line) in proportion to
    obs_cell_grid's count x survival; the files hold exactly the cells truth_cells lists."""
    p = DemoParams(seed=3, n_files=3, cells_per_file=2000, n_cell_lines=4, n_drugs=8, n_plates=2,
                   frac_active_drugs=0.5)  # fmt: skip
    design = Design(p)
    truth = design.truth_cells()
    grid = pq.read_table(design.real.paths["grid"]).to_pandas()
    names = dict(zip(design.line_ids, design.line_names, strict=True))
    # real_cells: the grid's count for (drug, line, plate, dose), split over duplicate wells
    sm = design.samples
    row = truth.iloc[0]
    n_share = ((sm["drug"] == row["drug"]) & (sm["plate"] == row["plate"])
               & (sm["conc"] == row["dose_uM"])).sum()  # fmt: skip
    g = grid[(grid["drug"] == row["drug"]) & (grid["plate"] == row["plate"])
             & (grid["conc"] == row["dose_uM"]) & (grid["cell_name"] == names[row["cell_line_id"]])]  # fmt: skip
    assert row["real_cells"] == g["n_cells"].sum() / n_share > 0
    for plate, t in truth.groupby("plate"):
        w = t["real_cells"] * t["survival"]
        exact = t["n_cells"].sum() * w / w.sum()
        assert (np.abs(t["n_cells"] - exact) < 1).all(), plate
    # the files hold exactly those cells
    got = []
    for i in range(p.n_files):
        got.append(generate_file(design, i).select(["sample", "cell_line_id"]).to_pandas())
    got = pd.concat(got).value_counts().rename("n").reset_index()
    m = truth.merge(got, on=["sample", "cell_line_id"], how="left").fillna({"n": 0})
    np.testing.assert_array_equal(m["n"].to_numpy(), m["n_cells"].to_numpy())
    assert truth["n_cells"].sum() == p.n_files * p.cells_per_file


def test_cytotoxic_drugs_kill_cells_of_their_sensitive_lines_and_the_truth_says_so(tmp_path):
    design = Design(DemoParams(seed=0, n_files=4, cells_per_file=6000, n_drugs=20, n_plates=3))
    truth = design.truth_cells()
    tox = {design.drug_names[d] for d in np.flatnonzero(design.cytotoxic)}
    assert len(tox) >= 2 and tox <= set(design.truth_params()["active_drugs"])
    assert set(design.truth_params()["cytotoxic_drugs"]) == tox
    hit = truth[truth["survival"] < 1]
    assert set(hit["drug"]) == tox
    assert (truth.loc[~truth["drug"].isin(tox), "survival"] == 1).all()
    # stronger at a higher dose, in the same line
    for (drug, line), g in hit.groupby(["drug", "cell_line_id"]):
        s = g.groupby("dose_uM")["survival"].mean().sort_index()
        assert s.is_monotonic_decreasing, (drug, line)
    # visible in the cells: a (well, line) has its real count (scaled to the plate) times its
    # survival, so a killed line has fewer cells than the real count alone would give
    t = truth[truth["plate"] == "plate13"]
    scale = t["n_cells"].sum() / (t["real_cells"] * t["survival"]).sum()
    assert (np.abs(t["n_cells"] - t["real_cells"] * scale * t["survival"]) < 1).all()
    killed = t[(t["survival"] < 0.6) & (t["real_cells"] * scale >= 20)]
    assert len(killed) >= 5
    assert (killed["n_cells"] / (killed["real_cells"] * scale) < 0.65).all()
    # write_metadata writes the table (as rule demo_metadata does) beside effects.parquet
    out = {k: tmp_path / f"{k}.parquet" for k in ("gene", "sample", "drug", "cell_line",
                                                  "effects", "cells")}  # fmt: skip
    write_metadata(design, {**out, "params": tmp_path / "params.json"})
    cells = pd.read_parquet(out["cells"])
    pd.testing.assert_frame_equal(cells, truth)
    assert list(cells.columns) == ["sample", "plate", "drug", "dose_uM", "cell_line_id",
                                   "real_cells", "survival", "n_cells"]  # fmt: skip


def test_truth_files_keep_their_schema(small_demo):
    import json

    root, design = small_demo
    eff = pq.read_table(root / "truth/effects.parquet")
    assert eff.column_names == ["drug", "dose_uM", "cell_line_id", "plate", "token_id",
                                "effect_ln", "log2fc_share"]  # fmt: skip
    params = json.loads((root / "truth/params.json").read_text())
    assert {"params", "doses_uM", "dose_scale", "active_drugs", "noise_model", "well_sd",
            "libsize_sd"} <= set(params)  # fmt: skip
    assert params["design"]["plates"] == ["plate13"]


def test_more_drugs_than_the_plates_hold_is_a_config_error():
    from tahoeflow.errors import ArgumentError

    with pytest.raises(ArgumentError, match=r"'n_drugs'.*more than the 43 drugs of the plates"):
        Design(DemoParams(n_plates=1, n_drugs=45))


def test_atlas_sized_design_draws_expressed_genes_only_and_keeps_barcodes_unique():
    """The rehearsal's design (benchmarks/atlas_rehearsal.py): 14 plates, 50 lines, every drug,
    3,388 files of 28,225 cells. With silent_genes off only expressed and MT genes are drawn;
    wells of up to ~214k cells get as many sub-libraries as they need (24 a plate, not 10), so
    the barcodes of the largest well are unique and the library numbers keep 4 digits."""
    p = DemoParams(n_files=3388, cells_per_file=28225, n_plates=14, n_cell_lines=50,
                   n_drugs=None, libsize_log_mean=3.0, n_expressed_genes=4000,
                   silent_genes=False)  # fmt: skip
    d = Design(p)
    assert d.sublibs_per_plate == 24 and Design(DemoParams()).sublibs_per_plate == 10
    from tahoeflow.sources.demo_files import barcodes

    plate = int(np.argmax([d.plate_counts(i).sum(axis=1).max() for i in range(14)]))
    cell_well, _, rank = d.plate_cells(plate)
    biggest = np.bincount(cell_well).argmax()
    sel = cell_well == biggest
    assert sel.sum() > 96 * 96 * 10  # more cells than 10 sub-libraries hold
    codes = barcodes(d, cell_well[sel], rank[sel]).to_pylist()
    assert len(set(codes)) == len(codes)
    assert max(int(c.rsplit("_", 1)[1]) for c in codes) <= 9999
    t = generate_file(d, 5)
    genes = t.column("genes").combine_chunks()
    tok = genes.values.to_numpy()[genes.values.to_numpy() != 1] - 3  # no CLS marker
    assert np.isin(tok, d.drawable).all() and np.unique(tok).size > 3000
    assert 40 <= np.diff(genes.offsets.to_numpy()).mean() - 1 <= 50  # >= 50 counts a cell
