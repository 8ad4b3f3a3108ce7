"""Drug sensitivity from cell counts (issue 19 items 1 and 4): the table, its tests, bad input,
the obs_metadata reader, the demo's ground truth and the real design."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import stats

from tahoeflow.errors import InputError
from tahoeflow.phenotypes.obs import (
    aggregate_obs,
    design_counts,
    doses_from_drugconc,
    grid_conditions,
    obs_counts,
    write_simulated_obs,
)
from tahoeflow.phenotypes.sensitivity import (
    QC_OK,
    SENSITIVITY_SCHEMA,
    add_empty_wells,
    cmh_pvalues,
    condition_counts,
    fisher_pvalues,
    sensitivity_arrow,
    sensitivity_table,
)

META = __import__("pathlib").Path(__file__).resolve().parents[1] / "resources" / "tahoe_metadata"


def counts_frame(rows):
    """(plate, sample, drug, dose_uM, cell_line_id, n_cells) rows as a count table."""
    return pd.DataFrame(
        rows, columns=["plate", "sample", "drug", "dose_uM", "cell_line_id", "n_cells"]
    ).astype({"n_cells": np.int64})


def table_of(counts, pc=0.5, control="DMSO_TF"):
    return sensitivity_table(*condition_counts(counts), control_drug=control, pseudocount=pc)


def one_plate(plate="p1", treated=(("A", 10), ("B", 90)), dmso=(("A", 50), ("B", 50)), drug="X"):
    rows = [(plate, f"{plate}_ctl", "DMSO_TF", 0.0, line, n) for line, n in dmso]
    rows += [(plate, f"{plate}_{drug}", drug, 5.0, line, n) for line, n in treated]
    return rows


# --- numbers ------------------------------------------------------------------------------------
def test_log2fc_share_fisher_and_well_change_on_a_hand_made_plate():
    t = table_of(counts_frame(one_plate()), pc=0.5)
    row = t[(t["level"] == "plate") & (t["cell_line_id"] == "A")].iloc[0]
    assert row["qc"] == QC_OK
    assert (
        row["n_cells"],
        row["n_well_cells"],
        row["n_control_cells"],
        row["n_control_well_cells"],
    ) == (10, 100, 50, 100)
    assert row["share"] == 0.1 and row["control_share"] == 0.5
    assert row["log2fc"] == pytest.approx(np.log2(10.5 / 100.5) - np.log2(50.5 / 100.5), abs=1e-12)
    less = stats.fisher_exact([[10, 90], [50, 50]], alternative="less").pvalue
    assert row["pvalue"] == pytest.approx(min(1.0, 2 * less), rel=1e-9)
    # the well has as many cells as the control well -> no overall cytotoxicity
    assert row["well_log2fc"] == pytest.approx(np.log2(100.5 / 100.5))
    # B gains what A lost; the pooled row of one plate has the plate's numbers
    b = t[(t["level"] == "plate") & (t["cell_line_id"] == "B")].iloc[0]
    assert b["log2fc"] > 0
    pooled = t[(t["level"] == "pooled") & (t["cell_line_id"] == "A")].iloc[0]
    assert pooled["plate"] == "p1" and pooled["n_plates"] == 1
    assert pooled["log2fc"] == row["log2fc"]
    # fewer cells per treated well than per control well: negative well change
    t2 = table_of(counts_frame(one_plate(treated=(("A", 5), ("B", 20)))))
    assert t2["well_log2fc"].iloc[0] == pytest.approx(np.log2(25.5 / 100.5))


def test_fisher_pvalues_are_twice_scipys_smaller_one_sided_p():
    rng = np.random.default_rng(0)
    tabs = rng.integers(0, 60, size=(40, 4))
    got = fisher_pvalues(*tabs.T)
    for (a, b, c, d), p in zip(tabs, got, strict=True):
        lo = stats.fisher_exact([[a, b], [c, d]], alternative="less").pvalue
        hi = stats.fisher_exact([[a, b], [c, d]], alternative="greater").pvalue
        assert p == pytest.approx(min(1.0, 2 * min(lo, hi)), rel=1e-9, abs=1e-300)


def test_cmh_pvalues_equal_statsmodels_mantel_haenszel_with_continuity_correction():
    from statsmodels.stats.contingency_tables import StratifiedTable

    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(5), [1, 2, 3, 2, 4])
    tabs = rng.integers(5, 200, size=(groups.size, 4))
    _, p = cmh_pvalues(*tabs.T, groups)
    for g in range(5):
        t = tabs[groups == g].reshape(-1, 2, 2).transpose(1, 2, 0).astype(float)
        want = StratifiedTable(t).test_null_odds(correction=True).pvalue
        assert p[g] == pytest.approx(want, rel=1e-9)


def test_pooled_rows_sum_the_usable_plates_and_test_stratified_by_plate():
    rows = one_plate("plate10", treated=(("A", 10), ("B", 90)))
    rows += one_plate("plate2", treated=(("A", 30), ("B", 170)), dmso=(("A", 80), ("B", 120)))
    t = table_of(counts_frame(rows))
    plate = t[(t["level"] == "plate") & (t["cell_line_id"] == "A")]
    pooled = t[(t["level"] == "pooled") & (t["cell_line_id"] == "A")].iloc[0]
    assert pooled["plate"] == "plate2+plate10"  # natural order
    assert pooled["n_plates"] == 2
    assert pooled["n_cells"] == 40 and pooled["n_well_cells"] == 300
    assert pooled["n_control_cells"] == 130 and pooled["n_control_well_cells"] == 300
    assert pooled["log2fc"] == pytest.approx(np.log2(40.5 / 300.5) - np.log2(130.5 / 300.5))
    assert pooled["pvalue"] < plate["pvalue"].max()
    _, want = cmh_pvalues([10, 30], [90, 170], [50, 80], [50, 120], [0, 0])
    assert pooled["pvalue"] == pytest.approx(want[0])
    # BH within each level over its rows
    for _, lvl in t.groupby("level"):
        np.testing.assert_allclose(lvl["qvalue"], stats.false_discovery_control(lvl["pvalue"]))


def test_a_line_absent_from_the_treated_well_gets_a_finite_negative_change():
    t = table_of(counts_frame(one_plate(treated=(("B", 100),))))
    a = t[(t["level"] == "plate") & (t["cell_line_id"] == "A")].iloc[0]
    assert a["n_cells"] == 0 and a["qc"] == QC_OK
    assert np.isfinite(a["log2fc"]) and a["log2fc"] < -5
    assert a["pvalue"] == pytest.approx(2 * stats.fisher_exact([[0, 100], [50, 50]], "less").pvalue)
    assert a["pvalue"] < 1e-15


# --- bad input ----------------------------------------------------------------------------------
def test_plate_without_control_zero_cell_well_and_line_without_control_are_null_with_a_reason():
    rows = one_plate("p1")  # fine
    rows += [("p2", "p2_X", "X", 5.0, "A", 10), ("p2", "p2_X", "X", 5.0, "B", 10)]  # no DMSO
    rows += one_plate("p3", treated=(("A", 5), ("B", 5), ("C", 7)))  # C: no control cells
    counts = counts_frame(rows)
    # a well of sample_metadata on p1 without any cell
    wells = pd.DataFrame({"sample": ["p1_Y"], "plate": ["p1"], "drug": ["X"], "dose_uM": [0.5]})
    counts = add_empty_wells(counts, wells)
    assert counts["cell_line_id"].isna().sum() == 1
    t = table_of(counts)
    plate = t[t["level"] == "plate"].set_index(["plate", "dose_uM", "cell_line_id"])
    assert plate.loc[("p2", 5.0, "A"), "qc"] == "no control well (DMSO_TF) on the plate"
    assert plate.loc[("p1", 0.5, "A"), "qc"] == "treated well has zero cells"
    assert plate.loc[("p3", 5.0, "C"), "qc"] == "line has no control cells on the plate"
    assert plate.loc[("p1", 5.0, "A"), "qc"] == QC_OK
    bad = t["qc"] != QC_OK
    assert t.loc[bad, ["share", "log2fc", "pvalue", "qvalue", "well_log2fc"]].isna().all().all()
    assert t.loc[~bad, ["log2fc", "pvalue", "qvalue", "well_log2fc"]].notna().all().all()
    # the pooled row of the zero-cell well keeps the reason
    pooled = t[(t["level"] == "pooled") & (t["dose_uM"] == 0.5)]
    assert set(pooled["qc"]) == {"no usable plate: treated well has zero cells"}
    # Arrow: the schema, nulls (never NaN or inf)
    tab = sensitivity_arrow(t)
    assert tab.schema == SENSITIVITY_SCHEMA
    for name in ("share", "log2fc", "pvalue", "qvalue", "well_log2fc"):
        col = tab.column(name)
        assert col.null_count == int(bad.sum()) or name == "share"
        v = col.drop_null().to_numpy()
        assert np.isfinite(v).all()


def test_control_wells_with_zero_cells_and_a_one_line_plate():
    counts = counts_frame([("p1", "p1_X", "X", 5.0, "A", 10)])
    wells = pd.DataFrame(
        {"sample": ["p1_c"], "plate": ["p1"], "drug": ["DMSO_TF"], "dose_uM": [0.0]}
    )
    assert add_empty_wells(counts, wells)["n_cells"].tolist() == [10]  # not the data's drug
    t = table_of(add_empty_wells(counts, wells, control_drug="DMSO_TF"))
    assert set(t["qc"]) == {
        "control wells have zero cells",
        "no usable plate: control wells have zero cells",
    }
    t1 = table_of(counts_frame(one_plate(treated=(("A", 10),), dmso=(("A", 40),))))
    assert set(t1.loc[t1["level"] == "plate", "qc"]) == {"one cell line only: no test"}
    assert t1["log2fc"].isna().all()


def test_control_name_ignores_surrounding_spaces_and_has_no_rows_of_its_own():
    t = table_of(counts_frame(one_plate()), control="DMSO_TF ")
    assert "DMSO_TF" not in set(t["drug"]) and set(t["qc"]) == {QC_OK}


def test_pseudocount_must_be_positive():
    cond, wells = condition_counts(counts_frame(one_plate()))
    with pytest.raises(ValueError, match="pseudocount"):
        sensitivity_table(cond, wells, control_drug="DMSO_TF", pseudocount=0)


def test_empty_counts_give_an_empty_table_with_the_schema():
    t = table_of(counts_frame([]))
    assert t.empty
    assert sensitivity_arrow(t).schema == SENSITIVITY_SCHEMA


# --- obs_metadata -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real():
    return (
        pd.read_parquet(META / "obs_cell_grid.parquet"),
        pd.read_parquet(META / "sample_metadata.parquet"),
        pd.read_parquet(META / "cell_line_metadata.parquet"),
    )


def test_a_simulated_obs_file_on_the_real_design_gives_the_grids_table(tmp_path, real):
    """Streaming obs_metadata (small row groups and batches) and counting per well gives the
    same table as obs_cell_grid, the real aggregate of the hub's obs_metadata."""
    grid, samples, lines = real
    scale = 0.002  # 200k cells
    path = tmp_path / "obs_metadata.parquet"
    rows, n_full = write_simulated_obs(design_counts(grid, samples, lines, scale), path,
                                       row_group_size=30_000)  # fmt: skip
    assert pq.ParquetFile(path).metadata.num_row_groups == -(-rows // 30_000) > 5
    counts = obs_counts(path, pass_filter=None, batch_size=7_000)
    assert counts["n_cells"].sum() == rows
    wells = samples.assign(dose_uM=doses_from_drugconc(samples["drugname_drugconc"], "s"))
    ours = table_of(add_empty_wells(counts, wells))
    ref = sensitivity_table(*grid_conditions(grid, samples, lines, scale), control_drug="DMSO_TF")
    pd.testing.assert_frame_equal(ours, ref)
    # pass_filter: only the `full` rows are counted
    full = obs_counts(path, pass_filter="full", batch_size=50_000)
    assert full["n_cells"].sum() == n_full < rows


def test_obs_reader_errors_name_the_file_the_column_and_the_row(tmp_path):
    base = {"plate": ["p1"] * 4, "sample": ["s1"] * 4, "drug": ["X"] * 4,
            "drugname_drugconc": ["[('X', 0.5, 'uM')]"] * 4, "cell_line": ["A", "B", "A", "B"],
            "pass_filter": ["full", "full", "minimal", "full"]}  # fmt: skip
    ok = tmp_path / "ok.parquet"
    pq.write_table(pa.table(base), ok)
    got = aggregate_obs(ok)
    assert dict(zip(got["cell_line"], got["n_cells"], strict=True)) == {"A": 1, "B": 2}
    assert obs_counts(ok)["dose_uM"].tolist() == [0.5, 0.5]
    missing = tmp_path / "missing.parquet"
    pq.write_table(pa.table({k: v for k, v in base.items() if k != "cell_line"}), missing)
    with pytest.raises(InputError, match=r"missing.parquet: missing column 'cell_line'"):
        aggregate_obs(missing)
    nulls = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({**base, "plate": ["p1", "p1", None, "p1"]}), nulls)
    with pytest.raises(InputError, match=r"nulls.parquet, row 2: column 'plate' is null"):
        aggregate_obs(nulls, batch_size=2)
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({**base, "drugname_drugconc": ["oops"] * 4}), bad)
    with pytest.raises(InputError, match=r"bad.parquet: malformed drugname_drugconc 'oops'"):
        obs_counts(bad)
    with pytest.raises(InputError, match="not a readable Parquet file"):
        aggregate_obs(tmp_path / "nothing.parquet")


# --- ground truth ---------------------------------------------------------------------------------
def test_the_demos_cytotoxic_effects_are_recovered_in_sign_and_rank():
    """The demo `make demo` runs (config/config.yaml): its cells per (well, line) are
    truth/cells.parquet's n_cells (the real count x the simulated survival, apportioned; the
    files hold exactly these, tests/test_demo.py). Measured on this slice: Spearman 0.69
    (plate rows of the cytotoxic drugs), 0.70 pooled; 22 of 28 killed rows (survival < 0.5)
    negative; the 10 most negative pooled rows all cytotoxic drugs."""
    import yaml
    from conftest import REPO

    from tahoeflow.sources.demo import DemoParams, Design

    design = Design(
        DemoParams.from_dict(yaml.safe_load((REPO / "config/config.yaml").read_text())["demo"])
    )
    truth = design.truth_cells()
    tox = set(design.truth_params()["cytotoxic_drugs"])
    assert len(tox) >= 3
    t = table_of(truth[["plate", "sample", "drug", "dose_uM", "cell_line_id", "n_cells"]])
    keys = ["drug", "dose_uM", "cell_line_id"]
    surv = truth.groupby(["plate", *keys])["survival"].mean().rename("survival").reset_index()
    plate = t[t["level"] == "plate"].merge(surv, on=["plate", *keys], validate="1:1")
    assert (plate["qc"] == QC_OK).all()
    hit = plate[plate["drug"].isin(tox)]
    rho = stats.spearmanr(np.log(hit["survival"]), hit["log2fc"]).statistic
    assert rho > 0.6, rho
    killed = plate[plate["survival"] < 0.5]
    assert len(killed) >= 20 and (killed["log2fc"] < 0).mean() >= 0.75
    pooled = t[t["level"] == "pooled"].merge(
        truth.groupby(keys)["survival"].mean().rename("survival").reset_index(), on=keys
    )
    hit = pooled[pooled["drug"].isin(tox)]
    assert stats.spearmanr(np.log(hit["survival"]), hit["log2fc"]).statistic > 0.6
    assert pooled.nsmallest(10, "log2fc")["drug"].isin(tox).sum() >= 9
    # whole wells: a cytotoxic drug at the top dose leaves fewer cells per well than DMSO
    top = t[(t["level"] == "plate") & (t["dose_uM"] == 5.0)].drop_duplicates(["plate", "drug"])
    assert (
        top.loc[top["drug"].isin(tox), "well_log2fc"].mean()
        < top.loc[~top["drug"].isin(tox), "well_log2fc"].mean() - 0.3
    )


def test_real_grid_strongest_whole_well_losses_at_5_uM_are_plausible(real, capsys):
    """On Tahoe-100M's real cell counts (obs_cell_grid, all 100.6M cells): the ten drugs with
    the largest loss of cells per well at 5 uM (pooled over plates) lose more than half the
    cells, shift the shares of >= 10 lines significantly (some lines die faster), and lose
    more at 5 uM than at 0.05 uM (a dose response). The names are printed, not asserted."""
    grid, samples, lines = real
    t = sensitivity_table(*grid_conditions(grid, samples, lines), control_drug="DMSO_TF")
    pooled = t[t["level"] == "pooled"]
    assert (pooled["qc"] == QC_OK).all()
    per = pooled.groupby(["drug", "dose_uM"]).agg(
        well_log2fc=("well_log2fc", "first"), plates=("plate", "first"),
        n_sig=("qvalue", lambda q: int((q < 0.05).sum())), min_q=("qvalue", "min"),
    ).reset_index()  # fmt: skip
    top = per[per["dose_uM"] == 5.0].nsmallest(10, "well_log2fc")
    with capsys.disabled():
        print("\nstrongest whole-well cell losses at 5 uM (log2 cells per well vs DMSO_TF):")
        for r in top.itertuples():
            print(
                f"  {r.drug!r:34} {r.well_log2fc:6.2f}  {r.plates:8} lines with q<0.05: {r.n_sig}"
            )
    assert (top["well_log2fc"] < -1).all()
    assert (top["n_sig"] >= 10).all() and (top["min_q"] < 1e-8).all()
    low = per[per["dose_uM"] == 0.05].set_index("drug")["well_log2fc"].reindex(top["drug"])
    assert (top["well_log2fc"].to_numpy() < low.to_numpy()).all()


# --- the workflow -------------------------------------------------------------------------------
@pytest.mark.workflow
def test_workflow_counts_merged_cells_then_switches_to_an_obs_file(tmp_path, real):
    """`snakemake results/phenotypes/sensitivity.parquet` on a tiny demo: the counts are the
    merged cells' (every merged cell counted once); then `phenotypes.sensitivity.from: obs` with
    a local obs file reruns only the two phenotype jobs (no download rule: a local path) and
    the table comes from that file."""
    from conftest import config_with, copy_repo, run_smk

    repo = copy_repo(tmp_path / "repo")
    wd = tmp_path / "wd"
    target = "results/phenotypes/sensitivity.parquet"
    cfg = config_with({("demo", "n_cell_lines"): 3, ("demo", "n_drugs"): 4,
                       ("demo", "n_plates"): 1, ("demo", "seed"): 1},
                      {"source": {"kind": "demo", "files": "0:2"},
                       "demo": {"n_files": 2, "cells_per_file": 400}})  # fmt: skip
    run_smk(wd, cfg, target, cores=2, check=True, repo=repo)
    cells = pq.read_table(wd / "results/merged/cells.parquet").to_pandas()
    counts = pq.read_table(wd / "results/phenotypes/counts.parquet").to_pandas()
    assert counts["n_cells"].sum() == len(cells)
    table = pq.read_table(wd / target)
    assert table.schema == SENSITIVITY_SCHEMA
    t = table.to_pandas()
    assert set(t["level"]) == {"plate", "pooled"}
    treated = cells[~cells["drug"].str.strip().eq("DMSO_TF")]
    assert set(t["drug"]) == set(treated["drug"])
    assert (t.loc[t["qc"] == QC_OK, "log2fc"].abs() < 20).all()
    # the obs source: a file of the real design (its own plates and wells)
    grid, samples, lines = real
    obs = tmp_path / "obs_metadata.parquet"
    rows, n_full = write_simulated_obs(design_counts(grid, samples, lines, 0.0005), obs)
    # without a path the hub's file is downloaded first (pinned revision, verified)
    cfg_hub = {**cfg, "phenotypes": {"sensitivity": {"from": "obs"}}}
    proc = run_smk(wd, cfg_hub, target, "-n", "--quiet", "rules", repo=repo, check=True)
    assert re.search(r"^download_obs_metadata\s+1$", proc.stdout + proc.stderr, re.M)
    cfg_obs = {**cfg, "phenotypes": {"sensitivity": {"from": "obs"}, "obs": {"path": str(obs)}}}
    proc = run_smk(wd, cfg_obs, target, cores=1, check=True, repo=repo)
    out = proc.stdout + proc.stderr  # Snakemake's "Job stats": only the two phenotype jobs ran
    assert re.search(r"^phenotype_counts\s+1$", out, re.M) and re.search(
        r"^sensitivity\s+1$", out, re.M
    )
    assert re.search(r"^total\s+2$", out, re.M), out[-2000:]
    counts = pq.read_table(wd / "results/phenotypes/counts.parquet").to_pandas()
    assert counts["n_cells"].sum() == n_full
    t = pq.read_table(wd / target).to_pandas()
    assert t.loc[t["level"] == "plate", "plate"].nunique() == 14  # the atlas's plates


@pytest.mark.parametrize("batch_rows", [1 << 20, 333, 1])
def test_counts_of_a_cells_file_streamed_equal_the_whole_table(tmp_path, batch_rows):
    """phenotype_counts reads the merged cells one record batch at a time (668 MB at 37.9M
    rehearsal cells where the whole table took 5.5 GB): the same counts, order and dtypes,
    a null cell line kept as its own group."""
    from tahoeflow.phenotypes.sensitivity import counts_from_cells, counts_from_cells_file

    rng = np.random.default_rng(2)
    n = 2000
    cells = pd.DataFrame(
        {
            "cell_id": [f"c{i}" for i in range(n)],
            "plate": rng.choice(["plate1", "plate2"], n),
            "sample": rng.choice([f"s{i}" for i in range(9)], n),
            "drug": rng.choice(["DMSO_TF", "Erdafitinib ", "X"], n),
            "dose_uM": rng.choice([0.0, 0.05, 5.0], n),
            "cell_line_id": rng.choice(["CVCL_0131", "CVCL_1239", None], n, p=[0.5, 0.45, 0.05]),
        }
    )
    path = tmp_path / "cells.parquet"
    pq.write_table(pa.Table.from_pandas(cells, preserve_index=False), path, row_group_size=500)
    want = counts_from_cells(cells)
    got = counts_from_cells_file(path, batch_rows=batch_rows)
    pd.testing.assert_frame_equal(got, want)
    assert got["n_cells"].sum() == n and got["cell_line_id"].isna().any()
