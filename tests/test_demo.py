"""The demo dataset has the hub's schema, realistic shape, and a consistent ground truth."""

from __future__ import annotations

import ast
import hashlib

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from tahoeflow.demo import DemoParams, Design, generate_file, write_file
from tahoeflow.schema import EXPRESSION_SCHEMA, N_GENES


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
    assert sum(s.startswith("MT-") for s in gm.column("gene_symbol").to_pylist()) == 13
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
    top = eff[(eff["dose_uM"] == 5.0)].sort_values("effect_ln", key=abs).iloc[-20:]
    drug = top["drug"].iloc[0]
    top = top[top["drug"] == drug]
    df = t.select(["drug", "sample"]).to_pandas()
    genes = t.column("genes").combine_chunks()
    expr = t.column("expressions").combine_chunks()
    sm = design.sample_metadata.to_pandas().set_index("sample")
    dose = (
        sm.loc[df["sample"], "drugname_drugconc"]
        .map(lambda s: ast.literal_eval(s)[0][1])
        .to_numpy()
    )

    def share(mask):
        rows = np.flatnonzero(mask)
        tot = np.zeros(62_713)
        for r in rows:  # a test-only reference, a few hundred cells
            g = genes[int(r)].values.to_numpy()[1:]
            np.add.at(tot, g, expr[int(r)].values.to_numpy()[1:])
        return tot / tot.sum()

    treated = share((df["drug"] == drug).to_numpy() & (dose == 5.0))
    control = share((df["drug"] == "DMSO_TF").to_numpy())
    est = np.log2(treated[top["token_id"]] / control[top["token_id"]])
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
    from tahoeflow.errors import ConfigError

    with pytest.raises(ConfigError, match="demo.frac_active_drugs"):
        DemoParams(frac_active_drugs=2.0)


def test_lengths_per_row_are_consistent(small_table):
    assert pc.all(
        pc.equal(
            pc.list_value_length(small_table["genes"]),
            pc.list_value_length(small_table["expressions"]),
        )
    ).as_py()
