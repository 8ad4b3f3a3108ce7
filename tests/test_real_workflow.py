"""The workflow on real perturbation data (../shared/data/real), via the documented example configs."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, run_smk

REAL = REPO.parent / "shared" / "data" / "real"
pytestmark = [
    pytest.mark.workflow,
    pytest.mark.real,
    pytest.mark.skipif(
        not REAL.is_dir(),
        reason=f"real data folder {REAL} is absent (a fresh clone has no ../shared)",
    ),
]


def _example(name: str) -> dict:
    cfg = yaml.safe_load((REPO / "config/examples" / name).read_text())
    prep = cfg["source"]["h5ad"]["prepare"]
    prep["input"] = str(
        REAL / prep["input"].split("data/real/", 1)[1]
    )  # the test runs in a temp folder
    return cfg


@pytest.fixture(scope="module")
def eccite(tmp_path_factory):
    wd = tmp_path_factory.mktemp("eccite")
    cfg = _example("eccite.yaml")
    cfg["updown"] = {"max_rows": 2000, "cv_folds": 3}
    cfg["pergene"] = {"n_top_genes": 30, "cv_folds": 3}
    run_smk(wd, cfg, cores=2, check=True, timeout=900)
    return wd


def test_eccite_knockdowns_are_found_by_de(eccite):
    top = pd.read_parquet(eccite / "results/de/toptable.parquet")
    genes = pd.read_parquet(eccite / "results/h5ad/metadata/gene_metadata.parquet")
    top["symbol"] = top["gene"].map(dict(zip(genes["token_id"], genes["gene_symbol"], strict=True)))
    own = top[top["symbol"] == top["drug"]]
    for target in ("STAT1", "JAK2"):  # strong CRISPR knock-downs in this screen
        rows = own[own["drug"] == target]
        assert len(rows) >= 1 and (rows["logFC"] < -1).all() and (rows["adj.P.Val"] < 0.05).any(), (
            rows
        )


def test_eccite_anndata_exports_read_back(eccite):
    pb = ad.read_h5ad(eccite / "results/anndata/pseudobulk.h5ad")
    groups = pd.read_parquet(eccite / "results/merged/pseudobulk_groups.parquet")
    assert pb.n_obs == len(groups) and pb.n_vars == 299
    np.testing.assert_allclose(
        np.asarray(pb.X.sum(axis=1)).ravel(), groups["total_counts"].to_numpy(), rtol=1e-6
    )
    emb = ad.read_h5ad(eccite / "results/anndata/embeddings.h5ad")
    table = pd.read_parquet(eccite / "results/embed/embeddings.parquet")
    np.testing.assert_allclose(emb.obsm["X_pca"][:, 0], table["pc1"].to_numpy(), rtol=1e-6)
    assert list(emb.obs_names) == table["cell_id"].tolist()
    ratio = pd.read_csv(eccite / "results/embed/pca_variance.csv")[
        "explained_variance_ratio"
    ].to_numpy()
    np.testing.assert_allclose(emb.uns["pca"]["variance_ratio"], ratio, rtol=1e-9)


def test_l1000_braf_and_mek_inhibitors_switch_off_erk_targets(tmp_path):
    cfg = _example("l1000.yaml")
    proc = run_smk(tmp_path, cfg, "results/de/toptable.parquet", cores=2, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    top = pd.read_parquet(tmp_path / "results/de/toptable.parquet")
    genes = pd.read_parquet(tmp_path / "results/h5ad/metadata/gene_metadata.parquet")
    top["symbol"] = top["gene"].map(dict(zip(genes["token_id"], genes["gene_symbol"], strict=True)))
    for drug in ("vemurafenib", "trametinib"):
        hi = top[(top["drug"] == drug) & (top["dose_uM"] >= 3)]
        best = set(hi.nsmallest(10, "t")["symbol"])
        assert {"FOSL1", "DUSP4"} <= best, (drug, sorted(best))
        assert (hi.loc[hi["symbol"] == "FOSL1", "logFC"] < -3).all()
