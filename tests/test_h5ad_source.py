"""source.kind h5ad: row-range shards of cells x genes .h5ad files (sparse and dense X)."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from tahoeflow.cells.summarize import CELL_COLUMNS, Filters, summarize
from tahoeflow.config import h5ad_settings
from tahoeflow.errors import ArgumentError, ConfigError, InputError, config_keys
from tahoeflow.sources.h5ad import (
    check_same_genes,
    gene_metadata_table,
    h5ad_gene_table,
    h5ad_n_obs,
    h5ad_obs_columns,
    h5ad_shape,
    h5ad_var,
    h5ad_vocab,
    plan_h5ad_shards,
    read_rows_csr,
)
from tahoeflow.sources.h5ad_settings import validate_obs_map
from tahoeflow.sources.h5ad_shard import load_h5ad_shard

OBS_MAP = {"drug": "treatment", "dose": "conc", "cell_line": "line", "plate": "batch",
           "sample": "well", "moa_fine": "moa"}  # fmt: skip


def make_adata(n: int = 300, g: int = 40, seed: int = 0, dense: bool = False) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    X = sp.random(n, g, density=0.3, format="csr", random_state=seed, dtype=np.float32)
    X.data = np.ceil(X.data * 20).astype(np.float32)
    obs = pd.DataFrame(
        {
            "treatment": pd.Categorical(rng.choice(["DMSO", "drugA", "drugB"], n)),
            "conc": rng.choice([0.5, 5.0], n),
            "line": pd.Categorical(rng.choice(["L1", "L2", "L3"], n)),
            "batch": rng.choice(["p1", "p2"], n).astype(object),
            "well": pd.Categorical(rng.choice([f"w{i}" for i in range(8)], n)),
            "moa": pd.Categorical(rng.choice(["kinase", "other"], n)),
        },
        index=[f"cell{i:05d}" for i in range(n)],
    )
    symbols = ["MT-CO1", "MT-ND1"] + [f"GENE{j}" for j in range(2, g)]
    var = pd.DataFrame({"symbol": symbols}, index=[f"ENSG{j:06d}" for j in range(g)])
    return ad.AnnData(X.toarray() if dense else X, obs=obs, var=var)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, tuple[Path, ad.AnnData]]:
    d = tmp_path_factory.mktemp("h5ad")
    out = {}
    for kind in ("sparse", "dense"):
        a = make_adata(dense=kind == "dense")
        a.write_h5ad(d / f"{kind}.h5ad")
        out[kind] = (d / f"{kind}.h5ad", a)
    return out


def dense_of(X) -> np.ndarray:
    return X.toarray() if sp.issparse(X) else np.asarray(X)


@pytest.mark.parametrize("kind", ["sparse", "dense"])
@pytest.mark.parametrize("rows", [(0, 300), (37, 161), (250, None), (299, 300), (120, 120)])
def test_row_range_equals_in_memory_slice(files, kind, rows):
    path, a = files[kind]
    start, stop = rows
    loaded = load_h5ad_shard(
        path, start, stop, OBS_MAP, "DMSO", filters=Filters(min_genes=0), shard_name="00000-0001"
    )
    end = a.n_obs if stop is None else stop
    expect = dense_of(a.X)[start:end]
    assert isinstance(loaded.X, sp.csr_matrix) and loaded.X.dtype == np.float32
    assert loaded.X.has_canonical_format
    np.testing.assert_array_equal(loaded.X.toarray(), expect)
    np.testing.assert_array_equal(np.diff(loaded.X.indptr), (expect != 0).sum(axis=1))
    obs = loaded.obs
    assert list(obs.columns) == list(CELL_COLUMNS)[:10]  # the columns load_shard produces
    src = a.obs.iloc[start:end]
    np.testing.assert_array_equal(obs["cell_id"], src.index)
    np.testing.assert_array_equal(obs["file_row"], np.arange(start, end))
    np.testing.assert_array_equal(obs["drug"], src["treatment"].astype(str))
    np.testing.assert_array_equal(obs["cell_line_id"], src["line"].astype(str))
    np.testing.assert_array_equal(obs["plate"], src["batch"].astype(str))
    np.testing.assert_array_equal(obs["sample"], src["well"].astype(str))
    np.testing.assert_array_equal(obs["moa_fine"], src["moa"].astype(str))
    ctrl = (src["treatment"] == "DMSO").to_numpy()
    np.testing.assert_array_equal(obs["is_control"], ctrl)
    np.testing.assert_array_equal(obs["dose_uM"], np.where(ctrl, 0.0, src["conc"]))
    assert (obs["shard"] == "00000-0001").all()
    assert loaded.filter_counts == {"input": end - start, "removed_by_min_genes": 0,
                                    "kept": end - start}  # fmt: skip


def test_read_rows_csr_matches_backed_anndata(files):
    path, _ = files["sparse"]
    backed = ad.read_h5ad(path, backed="r")
    try:
        np.testing.assert_array_equal(
            read_rows_csr(path, 10, 90).toarray(), backed.X[10:90].toarray()
        )
    finally:
        backed.file.close()


def test_unmapped_fields_get_defaults(files):
    path, a = files["sparse"]
    loaded = load_h5ad_shard(
        path, 0, 50, {"drug": "treatment"}, "DMSO", filters=Filters(min_genes=0)
    )
    obs = loaded.obs
    np.testing.assert_array_equal(obs["cell_id"], a.obs_names[:50])
    assert (obs["plate"] == "sparse").all()  # the file's stem
    assert (obs["cell_line_id"] == "NA").all() and (obs["moa_fine"] == "unclear").all()
    assert (obs["dose_uM"] == 0.0).all()
    np.testing.assert_array_equal(
        obs["sample"], ["sparse|" + d + "|0" for d in a.obs["treatment"].astype(str)[:50]]
    )


def test_filters_counts_and_units(files):
    path, a = files["sparse"]
    f = Filters(cell_lines=["L1", "L2"], drugs=["DMSO", "drugA"], plates=["p1"], min_genes=13)
    loaded = load_h5ad_shard(path, 0, None, OBS_MAP, "DMSO", filters=f, dose_unit="nM")
    o = a.obs
    k1 = o["line"].isin(["L1", "L2"]).to_numpy()
    k2 = k1 & o["treatment"].isin(["DMSO", "drugA"]).to_numpy()
    k3 = k2 & (o["batch"] == "p1").to_numpy()
    k4 = k3 & (np.diff(a.X.indptr) >= 13)
    assert loaded.filter_counts == {
        "input": a.n_obs,
        "removed_by_cell_lines": int((~k1).sum()),
        "removed_by_drugs": int((k1 & ~k2).sum()),
        "removed_by_plates": int((k2 & ~k3).sum()),
        "removed_by_min_genes": int((k3 & ~k4).sum()),
        "kept": int(k4.sum()),
    }
    np.testing.assert_array_equal(loaded.obs["file_row"], np.flatnonzero(k4))
    np.testing.assert_array_equal(loaded.X.toarray(), a.X[k4].toarray())
    treated = ~loaded.obs["is_control"].to_numpy()
    np.testing.assert_allclose(
        loaded.obs["dose_uM"][treated], o["conc"].to_numpy()[k4][treated] * 1e-3
    )


def test_summaries_follow_the_data_contract(files):
    path, a = files["sparse"]
    vocab, genes = h5ad_vocab(path, gene_symbol_column="symbol")
    loaded = load_h5ad_shard(path, 0, None, OBS_MAP, "DMSO", filters=Filters(min_genes=1))
    cells, gene_stats, pb = summarize(loaded, vocab)
    assert cells.column_names == list(CELL_COLUMNS)
    assert gene_stats.column("token_id").to_pylist() == genes["token_id"].tolist()
    X = loaded.X.toarray()
    mito = X[:, :2].sum(axis=1) / X.sum(axis=1) * 100
    np.testing.assert_allclose(cells.column("pct_mito").to_numpy(), mito)
    assert pb.column("count").to_numpy().sum() == pytest.approx(X.sum())


def test_gene_table_and_vocab(files, tmp_path):
    path, a = files["sparse"]
    genes = h5ad_gene_table(path, gene_symbol_column="symbol")
    assert list(genes.columns) == ["token_id", "ensembl_id", "gene_symbol"]
    np.testing.assert_array_equal(genes["token_id"], np.arange(3, 3 + a.n_vars))
    np.testing.assert_array_equal(genes["ensembl_id"], a.var_names)
    vocab, _ = h5ad_vocab(path, gene_symbol_column="symbol")
    assert vocab.is_mito.tolist() == [True, True] + [False] * (a.n_vars - 2)
    assert vocab.lookup[3] == 0 and vocab.lookup[:3].tolist() == [-1, -1, -1]
    assert not h5ad_vocab(path, gene_symbol_column="symbol", mito_prefix="")[0].is_mito.any()
    assert not h5ad_vocab(path)[0].is_mito.any()  # the index holds ids, not symbols
    t = gene_metadata_table(genes)
    assert t.column_names == ["gene_symbol", "ensembl_id", "token_id"]
    with pytest.raises(ArgumentError, match=r"'gene_symbol_column'.*'nope' is not in var of"):
        h5ad_gene_table(path, gene_symbol_column="nope")
    # the workflow script names the config key
    with (
        pytest.raises(ConfigError, match=r"source\.h5ad\.gene_symbol_column.*'nope'"),
        config_keys(gene_symbol_column="source.h5ad.gene_symbol_column"),
    ):
        h5ad_gene_table(path, gene_symbol_column="nope")
    assert h5ad_n_obs(path) == a.n_obs and h5ad_shape(files["dense"][0]) == a.shape
    assert h5ad_var(path)["symbol"].tolist() == a.var["symbol"].tolist()
    assert set(h5ad_obs_columns(path)) == set(a.obs.columns)
    check_same_genes([path, files["dense"][0]])
    other = make_adata(g=40)
    other.var_names = [f"X{j}" for j in range(40)]
    other.write_h5ad(tmp_path / "other.h5ad")
    with pytest.raises(InputError, match=r"other\.h5ad: genes differ.*gene 0 is 'X0'"):
        check_same_genes([path, tmp_path / "other.h5ad"])


def test_plan_shards_from_headers(files):
    shards = plan_h5ad_shards([files["sparse"][0], files["dense"][0]], 128)
    assert [(s.name, s.file_index, s.row_start, s.row_stop) for s in shards] == [
        ("00000-0000", 0, 0, 128), ("00000-0001", 0, 128, 256), ("00000-0002", 0, 256, None),
        ("00001-0000", 1, 0, 128), ("00001-0001", 1, 128, 256), ("00001-0002", 1, 256, None),
    ]  # fmt: skip
    only = plan_h5ad_shards([files["sparse"][0], files["dense"][0]], None, files=[1])
    assert [(s.name, s.file_index, s.row_start, s.row_stop) for s in only] == [
        ("00001", 1, 0, None)
    ]


def test_layers_and_raw(tmp_path):
    a = make_adata(n=60)
    counts = a.X.copy()
    a.layers["counts"] = counts
    a.raw = a.copy()
    a.X = sp.csr_matrix(np.log1p(counts.toarray()).astype(np.float32))
    a.write_h5ad(tmp_path / "l.h5ad")
    for layer in ("counts", "raw"):
        got = load_h5ad_shard(tmp_path / "l.h5ad", 5, 25, OBS_MAP, "DMSO", layer=layer,
                              filters=Filters(min_genes=0))  # fmt: skip
        np.testing.assert_array_equal(got.X.toarray(), counts[5:25].toarray())
    with pytest.raises(InputError, match="non-integer count"):
        load_h5ad_shard(tmp_path / "l.h5ad", 0, 10, OBS_MAP, "DMSO")
    with pytest.raises(InputError, match=r"no 'layers/nope' in the file \(layer: 'nope'\)"):
        load_h5ad_shard(tmp_path / "l.h5ad", 0, 10, OBS_MAP, "DMSO", layer="nope")


def _write_with(tmp_path: Path, name: str, kind: str = "sparse", **edit) -> Path:
    a = make_adata(n=50, dense=kind == "dense")
    X = dense_of(a.X)
    for (r, c), v in edit.get("values", {}).items():
        X[r, c] = v
    a.X = X if kind == "dense" else sp.csr_matrix(X)
    for col, (r, v) in edit.get("obs", {}).items():
        vals = a.obs[col].astype(object).to_numpy()
        vals[r] = v
        if all(isinstance(x, float) for x in vals):
            a.obs[col] = vals.astype(np.float64)
        elif v is None:
            a.obs[col] = pd.Categorical(vals)  # a missing category code (-1)
        else:
            a.obs[col] = [str(x) for x in vals]  # numbers as text, one of them not a number
    path = tmp_path / name
    a.write_h5ad(path)
    return path


@pytest.mark.parametrize("kind", ["sparse", "dense"])
@pytest.mark.parametrize(
    "value,problem", [(-3.0, "negative count"), (np.nan, "non-finite count"),
                      (2.5, "non-integer count"), (np.inf, "non-finite count")],
)  # fmt: skip
def test_bad_counts_name_file_and_row(tmp_path, kind, value, problem):
    path = _write_with(tmp_path, f"bad_{kind}.h5ad", kind, values={(17, 4): value, (30, 1): value})
    with pytest.raises(InputError, match=rf"bad_{kind}\.h5ad, row 17: X: {problem}") as e:
        load_h5ad_shard(path, 10, 40, OBS_MAP, "DMSO")
    assert e.value.row == 17
    # a range that does not hold the bad rows reads fine
    load_h5ad_shard(path, 40, 50, OBS_MAP, "DMSO")


def test_non_integer_allowed_warns(tmp_path):
    path = _write_with(tmp_path, "norm.h5ad", values={(21, 3): 0.25})
    seen: list[str] = []
    got = load_h5ad_shard(
        path, 0, None, OBS_MAP, "DMSO", allow_non_integer=True, warn=seen.append,
        filters=Filters(min_genes=0),
    )  # fmt: skip
    assert got.X[21, 3] == np.float32(0.25)
    assert len(seen) == 1 and "norm.h5ad, row 21: non-integer" in seen[0]


def test_obs_problems_name_the_config_key_and_row(tmp_path, files):
    path, _ = files["sparse"]
    with pytest.raises(
        ArgumentError, match=r"'obs_map': dose: obs column 'concentration' is not in"
    ):
        load_h5ad_shard(path, 0, 10, {**OBS_MAP, "dose": "concentration"}, "DMSO")
    with (
        pytest.raises(
            ConfigError, match=r"'source\.h5ad\.obs_map': dose: .*'concentration' is not in"
        ),
        config_keys(obs_map="source.h5ad.obs_map"),
    ):
        load_h5ad_shard(path, 0, 10, {**OBS_MAP, "dose": "concentration"}, "DMSO")
    with pytest.raises(ArgumentError, match=r"'obs_map': dosage: unknown name"):
        load_h5ad_shard(path, 0, 10, {**OBS_MAP, "dosage": "conc"}, "DMSO")
    with pytest.raises(ArgumentError, match=r"'obs_map': drug: is required"):
        validate_obs_map({"dose": "conc"})
    with pytest.raises(ArgumentError, match=r"'dose_unit': 'g' is not one of"):
        load_h5ad_shard(path, 0, 10, OBS_MAP, "DMSO", dose_unit="g")
    bad = _write_with(tmp_path, "nulls.h5ad", obs={"treatment": (33, None)})
    with pytest.raises(
        InputError,
        match=r"nulls\.h5ad, row 33: obs column 'treatment' \(obs_map\['drug'\]\) is missing",
    ):
        load_h5ad_shard(bad, 0, None, OBS_MAP, "DMSO")
    bad = _write_with(tmp_path, "dose.h5ad", obs={"conc": (8, -1.0)})
    with pytest.raises(InputError, match=r"dose\.h5ad, row 8: .*obs_map\['dose'\]\): dose -1\.0"):
        load_h5ad_shard(bad, 0, None, OBS_MAP, "no-control")
    # a control cell's dose is not used (it is 0.0), so it may be anything
    got = load_h5ad_shard(bad, 8, 9, OBS_MAP, ad.read_h5ad(bad).obs["treatment"].iloc[8],
                          filters=Filters(min_genes=0))  # fmt: skip
    assert got.obs["dose_uM"].tolist() == [0.0]
    bad = _write_with(tmp_path, "dose_text.h5ad", obs={"conc": (3, "lots")})
    with pytest.raises(InputError, match=r"row 3: .*dose 'lots' is not a finite"):
        load_h5ad_shard(bad, 0, None, OBS_MAP, "DMSO-none")


def test_unreadable_and_csc_files(tmp_path):
    with pytest.raises(InputError, match="missing.h5ad: file not found"):
        h5ad_n_obs(tmp_path / "missing.h5ad")
    (tmp_path / "junk.h5ad").write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match="junk.h5ad: not a readable HDF5"):
        load_h5ad_shard(tmp_path / "junk.h5ad", 0, 10, OBS_MAP, "DMSO")
    a = make_adata(n=30)
    a.X = sp.csc_matrix(a.X)
    a.write_h5ad(tmp_path / "csc.h5ad")
    with pytest.raises(InputError, match=r"csc\.h5ad: X is stored column-major \(CSC\)"):
        load_h5ad_shard(tmp_path / "csc.h5ad", 0, 10, OBS_MAP, "DMSO")
    a = make_adata(n=30)
    a.write_h5ad(tmp_path / "oob.h5ad")
    with h5py.File(tmp_path / "oob.h5ad", "r+") as f:
        f["X/indices"][f["X/indptr"][12]] = 999
    with pytest.raises(InputError, match=r"oob\.h5ad, row 12: X: column index 999 outside 0\.\.39"):
        load_h5ad_shard(tmp_path / "oob.h5ad", 0, None, OBS_MAP, "DMSO")


def test_h5ad_settings_are_checked_at_parse_time():
    s = h5ad_settings({"paths": "a.h5ad", "obs_map": {"drug": "d", "dose": None}})
    assert s.paths == ("a.h5ad",) and s.obs_map == {"drug": "d"} and s.layer is None
    assert s.control_value is None and s.prepare_kind is None  # control: top-level control_drug
    s = h5ad_settings(
        {"paths": [], "obs_map": {"drug": "perturbation"},
         "prepare": {"kind": "eccite", "input": "../shared/data/real/papalexi_eccite"}}
    )  # fmt: skip
    assert s.prepare_kind == "eccite" and s.prepare_input.endswith("papalexi_eccite")
    ok = {"paths": ["a"], "obs_map": {"drug": "d"}}
    for section, key in [
        ({"obs_map": {"drug": "d"}}, "source.h5ad.paths"),
        ({**ok, "control_value": ""}, "source.h5ad.control_value"),
        ({**ok, "dose_unit": "g"}, "source.h5ad.dose_unit"),
        ({**ok, "colour": 1}, "source.h5ad.colour"),
        ({**ok, "obs_map": {"drug": "d", "dosage": "x"}}, "source.h5ad.obs_map.dosage"),
        ({**ok, "prepare": {"kind": "gtex", "input": "x"}}, "source.h5ad.prepare.kind"),
        ({**ok, "prepare": {"kind": "l1000"}}, "source.h5ad.prepare.input"),
    ]:
        with pytest.raises(ConfigError, match=rf"'{key}'"):
            h5ad_settings(section)


def _write_big(path: Path, n: int, g: int = 500, k: int = 50) -> None:
    """n rows of k stored counts each, written by anndata (CSR)."""
    rng = np.random.default_rng(n)
    idx = np.sort((rng.integers(0, g, size=(n, 1)) + np.arange(k) * (g // k)) % g, axis=1)
    X = sp.csr_matrix(
        (rng.integers(1, 9, n * k).astype(np.float32), idx.ravel().astype(np.int32),
         np.arange(0, n * k + 1, k)), shape=(n, g),
    )  # fmt: skip
    obs = pd.DataFrame(
        {"drug": pd.Categorical(rng.choice(["DMSO", "a", "b"], n)), "dose": np.ones(n)},
        index=[f"cell{i:08d}" for i in range(n)],
    )
    ad.AnnData(X, obs=obs, var=pd.DataFrame(index=[f"g{j}" for j in range(g)])).write_h5ad(path)


def test_memory_is_bounded_by_the_shard(tmp_path):
    """Peak Python-side allocations of a 1k-row shard read do not grow with the file (10k vs 40k)."""
    peaks = {}
    for n in (10_000, 40_000):
        path = tmp_path / f"big{n}.h5ad"
        _write_big(path, n)
        tracemalloc.start()
        try:
            got = load_h5ad_shard(path, 5_000, 6_000, {"drug": "drug", "dose": "dose"}, "DMSO")
            peaks[n] = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert got.X.shape == (1_000, 500) and got.X.nnz == 50_000
    file_x_bytes = 40_000 * 50 * 8  # data float32 + indices int32 of the larger file
    assert peaks[40_000] < 1.25 * peaks[10_000] + 64_000, peaks
    assert peaks[40_000] < file_x_bytes / 8, (peaks, file_x_bytes)


def test_float64_values_stay_float64_and_counts_float32(tmp_path):
    """Log expression stored as float64 keeps full precision (DE on it equals R's limma to
    1e-12, not 6e-6); integer counts keep the compact float32."""
    a = make_adata(n=30, g=10)
    logx = a.copy()
    logx.X = sp.csr_matrix(np.log2(1.0 + a.X.toarray().astype(np.float64) / 3.0))
    logx.write_h5ad(tmp_path / "log.h5ad")
    a.write_h5ad(tmp_path / "counts.h5ad")
    got = read_rows_csr(tmp_path / "log.h5ad", 0, None, allow_non_integer=True)
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got.toarray(), logx.X.toarray())
    assert read_rows_csr(tmp_path / "counts.h5ad", 0, None).dtype == np.float32
