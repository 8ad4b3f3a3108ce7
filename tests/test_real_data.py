"""Converters of the shared real datasets (ECCITE-seq CRISPR screen, L1000 plate) and findings.

The data live outside the repository in ``../shared/data/real`` (relative to the repo root);
these tests skip when it is absent (a fresh clone has none).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import yaml

from tahoeflow.errors import InputError
from tahoeflow.sources.real_data import (
    assign_guides,
    eccite_to_anndata,
    l1000_to_anndata,
    read_gct,
    target_knockdown,
    top_changed_genes,
)

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real"
ECCITE = REAL / "papalexi_eccite"
GCT = REAL / "l1000_a375" / "LJP005_A375_24H_X1_B19.gct"

needs_eccite = pytest.mark.skipif(
    not (ECCITE / "response_matrix_lowmoi.rda").is_file(),
    reason=f"real ECCITE-seq data not found at {ECCITE} (../shared/data/real is not in a clone)",
)
needs_l1000 = pytest.mark.skipif(
    not GCT.is_file(),
    reason=f"real L1000 plate not found at {GCT} (../shared/data/real is not in a clone)",
)


def example_settings(name: str):
    """config/examples/<name>.yaml and its validated source.h5ad section."""
    from tahoeflow.config import h5ad_settings

    cfg = yaml.safe_load((REPO / "config" / "examples" / f"{name}.yaml").read_text())
    return cfg, h5ad_settings(cfg["source"]["h5ad"])


@pytest.fixture(scope="module")
def eccite():
    return eccite_to_anndata(ECCITE)


@pytest.fixture(scope="module")
def l1000():
    return l1000_to_anndata(GCT)


# --- synthetic (always run) -------------------------------------------------------------------
def test_assign_guides_rule():
    counts = sp.csr_matrix(
        np.array([[0, 5, 1], [0, 0, 0], [3, 3, 0], [1, 0, 2], [0, 0, 7]], dtype=float)
    )
    best, top, share = assign_guides(counts)
    assert best.tolist() == [1, -1, -2, 2, 2]  # max UMI; none -> -1; tie -> -2
    assert top.tolist() == [5, 0, 3, 2, 7]
    np.testing.assert_allclose(share, [5 / 6, 0, 0.5, 2 / 3, 1])


def test_example_configs_name_the_real_data():
    for name, kind in (("eccite", "eccite"), ("l1000", "l1000")):
        cfg, s = example_settings(name)
        assert cfg["source"]["kind"] == "h5ad" and s.prepare_kind == kind
        assert s.prepare_input.startswith("../shared/data/real/")
        assert s.paths == (f"results/h5ad/prepared/{kind}.h5ad",)  # the workflow's own path


def test_read_gct_layout_and_errors(tmp_path):
    text = (
        "#1.3\n2\t3\t1\t2\n"
        "id\tsym\tw1\tw2\tw3\n"
        "pert_iname\tna\tDMSO\tdrugX\tdrugX\n"
        "pert_type\tna\tctl_vehicle\ttrt_cp\ttrt_cp\n"
        "p1\tGENE1\t1.5\t2\t3\n"
        "p2\tGENE2\t4\t5\t6.25\n"
    )
    (tmp_path / "ok.gct").write_text(text)
    values, rows, cols = read_gct(tmp_path / "ok.gct")
    assert values.shape == (2, 3) and values.loc["p2", "w3"] == 6.25
    assert rows["sym"].tolist() == ["GENE1", "GENE2"]
    assert cols["pert_type"].tolist() == ["ctl_vehicle", "trt_cp", "trt_cp"]
    (tmp_path / "short.gct").write_text(text.replace("p2\tGENE2\t4\t5\t6.25", "p2\tGENE2\t4\t5"))
    with pytest.raises(InputError, match=r"short\.gct, row 6: line has 4 fields, expected 5"):
        read_gct(tmp_path / "short.gct")
    (tmp_path / "text.gct").write_text(text.replace("6.25", "high"))
    with pytest.raises(InputError, match=r"text\.gct, row 6: non-numeric value"):
        read_gct(tmp_path / "text.gct")
    (tmp_path / "v.gct").write_text(text.replace("#1.3", "#2.0"))
    with pytest.raises(InputError, match="unsupported GCT version"):
        read_gct(tmp_path / "v.gct")


# --- ECCITE-seq ---------------------------------------------------------------------------------
@pytest.mark.real
@needs_eccite
def test_eccite_shape_counts_and_guides(eccite):
    a = eccite
    assert a.shape == (20_729, 299)
    assert sp.issparse(a.X) and a.X.dtype == np.float32
    assert np.all(a.X.data == np.round(a.X.data)) and a.X.data.min() >= 1
    assert a.X.nnz == 1_390_126  # every stored triplet of the dgTMatrix
    ga = a.uns["guide_assignment"]
    assert ga["n_cells"] == 20_729 and ga["n_assigned"] == 20_729
    assert ga["n_unassigned"] == 0 and ga["n_ambiguous"] == 0
    assert ga["n_share_below_half"] == 966  # top guide has < 50% of the cell's guide UMIs
    assert ga["n_targets"] == 26 and ga["n_targets_assigned"] == 25
    vc = a.obs["perturbation"].value_counts()
    assert vc["non-targeting"] == 2_386 == int(a.obs["is_control"].sum())
    # 25 targets + the controls: the 3 PD-L1 (CD274) guides have 182 UMIs in all and are
    # never a cell's top guide
    assert len(vc[vc > 0]) == 26 and "CD274" not in set(a.obs["perturbation"])
    assert vc["IFNGR1"] == 1_341 and vc["SPI1"] == 48
    assert a.obs["batch"].value_counts().to_dict() == {
        "rep_1": 9_428, "rep_2": 6_001, "rep_3": 5_300,
    }  # fmt: skip
    assert a.obs["guide"].astype(str).str.startswith("NT").sum() == 2_386
    # samples (replicate x guide): 9 non-targeting guides in each of the 3 replicates
    ctrl_samples = a.obs.loc[a.obs["is_control"], "sample"].astype(str).unique()
    assert len(ctrl_samples) == 27 and all(s.split(":")[1].startswith("NT") for s in ctrl_samples)


@pytest.mark.real
@needs_eccite
def test_eccite_guides_knock_down_their_own_target(eccite):
    """Cells with guides for a measured gene express less of it than non-targeting cells."""
    kd = target_knockdown(eccite).set_index("target")
    # the 9 targets that are also among the 299 measured genes
    assert set(kd.index) == {"STAT1", "JAK2", "STAT2", "STAT3", "CMTM6", "NFKBIA", "IFNGR2",
                             "TNFRSF14", "UBE2L6"}  # fmt: skip
    assert (kd["log2_ratio"] < -0.35).all() and (kd["pvalue"] < 1e-10).all()
    # the strongest: STAT1 and JAK2 at about a quarter of the control level
    assert kd.loc["STAT1", "log2_ratio"] < -2.0 and kd.loc["JAK2", "log2_ratio"] < -1.9
    assert kd.loc["STAT1", "pvalue"] < 1e-150 and kd.loc["JAK2", "pvalue"] < 1e-150
    assert list(kd.index[:2]) == ["STAT1", "JAK2"]


@pytest.mark.real
@needs_eccite
def test_eccite_reads_through_the_h5ad_source(eccite, tmp_path):
    from tahoeflow.cells.summarize import Filters
    from tahoeflow.export.h5ad import write_h5ad
    from tahoeflow.sources.h5ad import h5ad_vocab
    from tahoeflow.sources.h5ad_shard import load_h5ad_shard

    path = tmp_path / "eccite.h5ad"
    write_h5ad(eccite, path, compression=None)
    cfg, s = example_settings("eccite")
    got = load_h5ad_shard(path, 5_000, 9_000, s.obs_map, cfg["control_drug"],
                          filters=Filters(min_genes=0), shard_name="00000-0001")  # fmt: skip
    np.testing.assert_array_equal(got.X.toarray(), eccite.X[5_000:9_000].toarray())
    np.testing.assert_array_equal(
        got.obs["drug"], eccite.obs["perturbation"].astype(str)[5_000:9_000]
    )
    assert got.obs["is_control"].sum() == eccite.obs["is_control"][5_000:9_000].sum()
    assert set(got.obs["plate"]) <= {"rep_1", "rep_2", "rep_3"}
    assert (got.obs["cell_line_id"] == "THP-1").all()
    assert got.obs["sample"].str.match(r"^rep_[123]:").all()
    vocab, genes = h5ad_vocab(path, gene_symbol_column=s.gene_symbol_column)
    assert vocab.is_mito.sum() == 1 and genes.loc[vocab.is_mito, "gene_symbol"].item() == "MT-ATP8"


# --- L1000 ---------------------------------------------------------------------------------------
@pytest.mark.real
@needs_l1000
def test_l1000_shape_controls_and_values(l1000):
    a = l1000
    assert a.shape == (377, 978)
    assert a.X.dtype == np.float64 and 3.2 < a.X.min() < 3.3 and a.X.max() == 15.0
    ctrl = a.obs["is_control"].to_numpy()
    assert ctrl.sum() == 26
    assert set(a.obs["drug"][ctrl]) == {"DMSO"} and (a.obs["dose_uM"][ctrl] == 0).all()
    assert (a.obs["pert_type"] == "trt_poscon").sum() == 23
    treated = a.obs["pert_type"] == "trt_cp"
    assert a.obs.loc[treated, "drug"].nunique() == 55
    assert sorted(np.round(a.obs.loc[treated, "dose_uM"].unique(), 2)) == [
        0.04, 0.12, 0.37, 1.11, 3.33, 10.0,
    ]  # fmt: skip
    assert set(a.obs["cell_line"]) == {"A375"}
    assert a.var_names.is_unique  # probe ids
    assert {"DUSP4", "FOSL1", "CCNA2", "HMOX1"} <= set(a.var["gene_symbol"])


@pytest.mark.real
@needs_l1000
def test_l1000_braf_and_mek_inhibitors_shut_down_mapk_targets(l1000):
    """A375 carries BRAF V600E: vemurafenib and trametinib switch off ERK's target genes."""
    for drug in ("vemurafenib", "trametinib"):
        top = top_changed_genes(l1000, drug, min_dose_uM=3.0, n=5).set_index("gene_symbol")
        assert {"FOSL1", "DUSP4"} <= set(top.index), (drug, top)
        assert top.loc["FOSL1", "log2fc"] < -4.0 and top.loc["DUSP4", "log2fc"] < -4.0
        assert top.attrs["n_control"] == 26
    dusp6 = top_changed_genes(l1000, "vemurafenib", min_dose_uM=3.0, n=978)
    assert dusp6.set_index("gene_symbol").loc["DUSP6", "log2fc"] < -5.0


@pytest.mark.real
@needs_l1000
def test_l1000_reads_through_the_h5ad_source_as_non_counts(l1000, tmp_path):
    from tahoeflow.cells.summarize import Filters
    from tahoeflow.sources.h5ad_shard import load_h5ad_shard
    from tahoeflow.sources.real_data import prepare_h5ad

    path = tmp_path / "results" / "h5ad" / "l1000.h5ad"
    prepare_h5ad("l1000", GCT, path)  # what the workflow's prepare rule runs
    cfg, s = example_settings("l1000")
    obs_map = s.obs_map
    assert cfg["input"]["normalised"] is True and cfg["control_drug"] == "DMSO"
    with pytest.raises(InputError, match=r"l1000\.h5ad, row 0: X: non-integer count"):
        load_h5ad_shard(path, 0, None, obs_map, "DMSO")
    warnings: list[str] = []
    got = load_h5ad_shard(path, 0, None, obs_map, cfg["control_drug"], allow_non_integer=True,
                          warn=warnings.append, filters=Filters(min_genes=0))  # fmt: skip
    assert len(warnings) == 1 and got.X.shape == (377, 978)
    assert got.obs["is_control"].sum() == 26
    np.testing.assert_array_equal(got.X.toarray(), l1000.X)
