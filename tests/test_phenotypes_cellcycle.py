"""Cell-cycle scores (scanpy's score_genes_cell_cycle, reproduced) and the G-arrest index.

The scanpy comparison skips with a message when scanpy is not installed; with ``CI=true`` it
fails instead (CI installs the test extras).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from scipy.stats import fisher_exact

from tahoeflow.cells.stats import shard_stats
from tahoeflow.phenotypes import cellcycle as cc


def _scanpy():
    try:
        import anndata
        import scanpy
    except ImportError as e:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but scanpy is not installed ({e}): CI must run this comparison")
        pytest.skip(f"scanpy is not installed ({e}): the comparison with scanpy is skipped")
    return scanpy, anndata


def _dataset(seed=1, n_genes=3000, n_cells=600):
    """Counts over n_genes genes, the 97 listed genes among them (MLF1IP by its 2016 name)."""
    rng = np.random.default_rng(seed)
    lists = cc.read_gene_lists()
    symbols = np.array([f"G{i}" for i in range(n_genes)], dtype=object)
    pos = rng.choice(n_genes, len(lists), replace=False)
    symbols[pos] = lists["gene_symbol"].to_numpy()
    symbols[pos[lists["gene_symbol"].tolist().index("CENPU")]] = "MLF1IP"
    base = rng.gamma(0.3, 1.0, n_genes)
    X = rng.poisson(base * rng.gamma(2.0, 1.0, (n_cells, 1))).astype(np.float64)
    X[:, 7] = 0  # a gene never detected
    return sp.csr_matrix(X), symbols, lists


def test_gene_lists_are_tirosh_2016():
    lists = cc.read_gene_lists()
    assert (lists["phase"] == "S").sum() == 43 and (lists["phase"] == "G2M").sum() == 54
    assert lists["gene_symbol"].is_unique
    renamed = lists[lists["gene_symbol"] != lists["symbol_2016"]]
    assert dict(zip(renamed["symbol_2016"], renamed["gene_symbol"], strict=True)) == {
        "MLF1IP": "CENPU", "FAM64A": "PIMREG", "HN1": "JPT1"}  # fmt: skip
    # all 97 by today's names in Tahoe's gene table
    genes = pd.read_parquet(cc.GENES_PATH.parents[0] / "tahoe_metadata" / "gene_metadata.parquet")
    r = cc.resolve_genes(lists, genes["gene_symbol"])
    assert (r.s.size, r.g2m.size, r.missing) == (43, 54, {})


def test_scores_equal_scanpy_score_genes_cell_cycle():
    sc, ad = _scanpy()
    X, symbols, lists = _dataset()
    halves = [X[:250], X[250:]]  # two shards, scored separately after the merged statistics
    means = sum(shard_stats(h, np.zeros(X.shape[1], bool))[1]["sum_log"] for h in halves)
    means = means / X.shape[0]
    genes = cc.resolve_genes(lists, symbols)
    assert genes.missing == {} and "MLF1IP" in genes.s_symbols  # found by its 2016 name
    scorer = cc.make_scorer(means, genes, n_bins=25, seed=0)
    got = [cc.score_cells(h, scorer) for h in halves]
    s, g2m, phase = (np.concatenate([g[i] for g in got]) for i in range(3))

    a = ad.AnnData(X.copy())
    a.var_names = list(symbols)
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.tl.score_genes_cell_cycle(a, s_genes=genes.s_symbols, g2m_genes=genes.g2m_symbols)
    assert np.max(np.abs(a.obs["S_score"].to_numpy() - s)) < 1e-6
    assert np.max(np.abs(a.obs["G2M_score"].to_numpy() - g2m)) < 1e-6
    assert np.array_equal(a.obs["phase"].to_numpy().astype(str), phase.astype(str))
    assert set(phase) == {"G1", "S", "G2M"}
    # the draw matters: another seed's control genes give other scores
    other = cc.make_scorer(means, genes, n_bins=25, seed=1)
    s1 = np.concatenate([cc.score_cells(h, other)[0] for h in halves])
    assert np.max(np.abs(a.obs["S_score"].to_numpy() - s1)) > 1e-3


def test_score_cells_reads_columns_through_a_token_lookup():
    X, symbols, lists = _dataset(seed=2, n_cells=50)
    means = np.asarray(pp_log(X).mean(axis=0)).ravel()
    scorer = cc.make_scorer(means, cc.resolve_genes(lists, symbols))
    # the same genes as token ids 10.., columns found through a lookup array (as vocab.lookup)
    lookup = np.full(X.shape[1] + 10, -1)
    lookup[10:] = np.arange(X.shape[1])
    tok = cc.Scorer(*(v + 10 for v in (scorer.s, scorer.s_ctrl, scorer.g2m, scorer.g2m_ctrl)))
    a, b = cc.score_cells(X, scorer), cc.score_cells(X, tok, columns=lookup)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    # by hand for one cell
    L = pp_log(X).toarray()
    want = L[3, scorer.s].mean() - L[3, scorer.s_ctrl].mean()
    assert a[0][3] == pytest.approx(want, abs=1e-12)


def pp_log(X):
    from tahoeflow.cells import normalize as pp

    return pp.log_normalize(X)


def test_draw_reports_missing_genes_and_skips_without_a_list():
    lists = cc.read_gene_lists()
    symbols = [f"G{i}" for i in range(500)] + lists["gene_symbol"].tolist()[:40]  # 40 S genes
    stats = pd.DataFrame({"token_id": np.arange(len(symbols)) + 3, "gene_symbol": symbols,
                          "mean_log": np.linspace(0.0, 2.0, len(symbols))})  # fmt: skip
    draw = cc.draw_from_stats(stats, lists)
    assert "G2M-phase genes" in draw["skipped"] and "none of the 54" in draw["skipped"]
    assert len(draw["missing"]["S"]) == 3 and len(draw["missing"]["G2M"]) == 54
    assert cc.scorer_from_draw(draw) is None
    # every gene present but the S genes never detected
    symbols = [f"G{i}" for i in range(500)] + lists["gene_symbol"].tolist()
    means = np.linspace(0.1, 2.0, len(symbols))
    means[500:543] = 0.0
    stats = pd.DataFrame({"token_id": np.arange(len(symbols)) + 3, "gene_symbol": symbols,
                          "mean_log": means})  # fmt: skip
    draw = cc.draw_from_stats(stats, lists)
    assert draw["skipped"] == "none of the 43 S-phase genes is detected in any cell"
    means[500:543] = 0.5
    draw = cc.draw_from_stats(stats.assign(mean_log=means), lists)
    assert "skipped" not in draw and len(draw["s"]) == 43 and draw["missing"] == {}
    assert min(draw["s"] + draw["g2m"]) >= 3  # token ids, not positions
    assert not set(draw["s_ctrl"]) & set(draw["s"])


def _cells(spec):
    rows = []
    for plate, drug, dose, line, ctl, g1, s, g2m in spec:
        for ph, k in (("G1", g1), ("S", s), ("G2M", g2m)):
            rows += [(plate, drug, dose, line, ctl, ph)] * k
    return pd.DataFrame(rows, columns=[*cc.KEYS, "is_control", "phase"])


def test_arrest_index_fisher_test_and_pooling():
    cells = _cells([
        ("p1", "DMSO_TF", 0.0, "L1", True, 40, 40, 20),
        ("p1", "A", 5.0, "L1", False, 60, 5, 35),
        ("p2", "DMSO_TF", 0.0, "L1", True, 40, 40, 20),
        ("p2", "A", 5.0, "L1", False, 50, 10, 40),
    ])  # fmt: skip
    t = cc.arrest_table(cc.phase_counts(cells), pseudocount=0.5, min_cells=10)
    r = t[(t["level"] == "plate") & (t["plate"] == "p1")].iloc[0]
    assert (r["n_cells"], r["n_S"], r["control_n_S"], r["qc"]) == (100, 5, 40, "ok")
    assert r["frac_S"] == 0.05 and r["control_frac_G2M"] == 0.2
    assert r["g_index"] == pytest.approx(np.log2(95.5 / 101))
    assert r["g_arrest"] == pytest.approx(np.log2(95.5 / 101) - np.log2(60.5 / 101))
    assert r["pvalue"] == pytest.approx(fisher_exact([[5, 95], [40, 60]])[1], rel=1e-12)
    pooled = t[t["level"] == "pooled"].iloc[0]
    assert (pooled["plate"], pooled["n_S"], pooled["n_control_cells"]) == ("p1+p2", 15, 200)
    assert pooled["pvalue"] == pytest.approx(fisher_exact([[15, 185], [80, 120]])[1], rel=1e-12)
    plate_p = t.loc[t["level"] == "plate", "pvalue"].to_numpy()
    assert t.loc[t["level"] == "plate", "qvalue"].max() == pytest.approx(plate_p.max())


def test_plate_without_dmso_and_small_conditions_get_a_reason_not_inf():
    cells = _cells([
        ("p1", "DMSO_TF", 0.0, "L1", True, 10, 0, 0),  # every DMSO cell outside S
        ("p1", "A", 5.0, "L1", False, 0, 30, 0),       # every treated cell in S
        ("p3", "A", 5.0, "L2", False, 50, 10, 40),     # p3 has no DMSO well
        ("p1", "B", 5.0, "L1", False, 2, 1, 1),        # 4 cells
    ])  # fmt: skip
    t = cc.arrest_table(cc.phase_counts(cells), pseudocount=0.5, min_cells=10)
    num = t.select_dtypes("number").to_numpy(np.float64)
    assert not np.isinf(num).any()
    a = t[(t["drug"] == "A") & (t["cell_line_id"] == "L1") & (t["level"] == "plate")].iloc[0]
    assert a["qc"] == "ok" and a["g_arrest"] == pytest.approx(
        np.log2(0.5 / 31) - np.log2(10.5 / 11)
    )
    no = t[t["cell_line_id"] == "L2"].set_index("level")
    assert no.loc["plate", "qc"] == "no DMSO cells of this cell line on the plate"
    assert no.loc["pooled", "qc"] == "no plate with DMSO cells of this cell line"
    assert no[["g_arrest", "pvalue", "qvalue", "control_g_index"]].isna().all().all()
    small = t[t["drug"] == "B"]
    assert small["qc"].str.contains("4 treated cells").all() and small["pvalue"].isna().all()
    # the written table keeps them null (not NaN) and the metrics count the tested rows
    m = cc.summary(t, {"G1": 1, "S": 1, "G2M": 0}, {"s": [1], "g2m": [2], "s_ctrl": [3],
                                                    "g2m_ctrl": [4], "missing": {}}, 0.05)  # fmt: skip
    assert (m["n_conditions"], m["n_tested"]) == (3, 1)
    assert cc.empty_arrest_table().columns.tolist() == t.columns.tolist()


def test_obs_phases_are_used_when_obs_carries_them(tmp_path):
    obs = pd.DataFrame({
        "plate": ["plate1"] * 6, "sample": ["s1", "s1", "s1", "s2", "s2", "s2"],
        "drug": ["DMSO_TF"] * 3 + ["A"] * 3,
        "drugname_drugconc": ["[('DMSO_TF', 0.0, 'uM')]"] * 3 + ["[('A', 500.0, 'nM')]"] * 3,
        "cell_line": ["CVCL_1"] * 6, "pass_filter": ["full"] * 5 + ["minimal"],
        "S_score": np.zeros(6), "G2M_score": np.zeros(6),
        "phase": ["G1", "S", "S", "G1", "G2M", "S"],
    })  # fmt: skip
    path = tmp_path / "obs.parquet"
    pq.write_table(pa.Table.from_pandas(obs), path)
    counts, why = cc.obs_phase_counts(path, control_drug="DMSO_TF", pass_filter="full")
    assert why is None
    treated = counts[~counts["is_control"]].iloc[0]
    assert (treated["dose_uM"], treated["n_G1"], treated["n_S"], treated["n_G2M"]) == (0.5, 1, 0, 1)
    assert counts.loc[counts["is_control"], "n_S"].item() == 2
    pq.write_table(pa.Table.from_pandas(obs.drop(columns="phase")), path)
    counts, why = cc.obs_phase_counts(path, control_drug="DMSO_TF")
    assert counts is None and "no 'phase' column" in why and "S_score, G2M_score" in why
