"""Tests for tahoeflow.models.features: splits, the seed-000 transformer, matrix IO."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import config_with
from test_models import BASE, SCHEMA, parse

from tahoeflow.config import validate_config
from tahoeflow.errors import ArgumentError, ConfigError, InputError, config_keys
from tahoeflow.models.features import (
    attach_split,
    build_transformer,
    category_strings,
    fit_transform_features,
    load_matrix,
    make_split,
    matrix_names_path,
    save_matrix,
    split_frames,
)
from tahoeflow.models.persist import load_model, save_model

NUMERIC = ["expr_mean", "expr_std", "expr_skew", "n_genes"]
CATEGORICAL = ["cell_line_id", "drug", "moa_fine", "dose_uM"]


def synth_cells(n: int = 600, n_drugs: int = 6, n_plates: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    d = rng.integers(n_drugs, size=n)
    p = rng.integers(n_plates, size=n)
    dose = rng.choice([0.05, 0.5, 5.0], size=n)
    cells = pd.DataFrame(
        {
            "cell_id": [f"cell{i:05d}" for i in range(n)],
            "plate": [f"plate{i + 1}" for i in p],
            "drug": [f"drug{i}" for i in d],
            "dose_uM": dose,
            "cell_line_id": [f"CVCL_{i:04d}" for i in rng.integers(4, size=n)],
            "moa_fine": [f"moa{i % 3}" for i in d],
            "n_genes": rng.integers(500, 3000, size=n).astype(np.int32),
            "expr_mean": rng.gamma(2.0, 1.0, size=n),
            "expr_std": rng.gamma(3.0, 1.0, size=n),
            "expr_skew": rng.normal(2.0, 0.5, size=n),
        }
    )
    cells["sample"] = (
        "smp_" + cells["plate"] + "_" + cells["drug"] + "_" + cells["dose_uM"].astype(str)
    )
    return cells


# --------------------------------------------------------------------------- splits


def test_random_split_deterministic_sized_and_order_free() -> None:
    cells = synth_cells(n=501)
    a = make_split(cells, "random", 0.2, seed=7)
    b = make_split(cells, "random", 0.2, seed=7)
    pd.testing.assert_frame_equal(a, b)
    assert list(a["cell_id"]) == list(cells["cell_id"])
    assert set(a["split"]) == {"train", "test"}
    assert (a["split"] == "test").sum() == math.ceil(0.2 * 501)
    # another seed gives another split
    c = make_split(cells, "random", 0.2, seed=8)
    assert (a["split"] != c["split"]).any()
    # the assignment of a cell does not depend on the row order of the table
    shuffled = cells.sample(frac=1.0, random_state=3)
    d = make_split(shuffled, "random", 0.2, seed=7).set_index("cell_id")["split"]
    assert (d.loc[a["cell_id"]].to_numpy() == a["split"].to_numpy()).all()


@pytest.mark.parametrize("by", ["sample", "plate"])
def test_grouped_split_keeps_every_group_on_one_side(by: str) -> None:
    cells = synth_cells(n=800, n_plates=7)
    s = make_split(cells, by, 0.25, seed=1)
    joined = cells[["cell_id", by]].merge(s, on="cell_id")
    sides_per_group = joined.groupby(by)["split"].nunique()
    assert (sides_per_group == 1).all()
    n_groups = cells[by].nunique()
    test_groups = joined.loc[joined["split"] == "test", by].nunique()
    assert test_groups == math.ceil(0.25 * n_groups)
    assert make_split(cells, by, 0.25, seed=1).equals(s)
    # seeds permute the groups
    others = {
        tuple(sorted(set(cells.loc[make_split(cells, by, 0.25, k)["split"].eq("test"), by])))
        for k in range(6)
    }
    assert len(others) > 1


def test_grouped_split_clamps_so_no_side_is_empty() -> None:
    cells = synth_cells(n=100, n_plates=2)
    s = make_split(cells, "plate", 0.9, seed=0)
    assert set(s["split"]) == {"train", "test"}


SPLIT_CASES = [
    ({"by": "well"}, "by"),
    ({"test_size": 0.0}, "test_size"),
    ({"test_size": 1.0}, "test_size"),
    ({"test_size": 1.5}, "test_size"),
    ({"test_size": float("nan")}, "test_size"),
    ({"test_size": True}, "test_size"),
    ({"test_size": "0.2"}, "test_size"),
    ({"seed": -1}, "seed"),
    ({"seed": 1.5}, "seed"),
]


@pytest.mark.parametrize(("kwargs", "argument"), SPLIT_CASES)
def test_split_argument_errors(kwargs: dict, argument: str) -> None:
    args = {"by": "random", "test_size": 0.2, "seed": 0, **kwargs}
    with pytest.raises(ArgumentError) as err:
        make_split(synth_cells(n=20), **args)
    assert err.value.argument == argument


@pytest.mark.parametrize(("kwargs", "argument"), SPLIT_CASES)
def test_split_settings_are_checked_at_parse_time(kwargs: dict, argument: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(f"split.{argument}", kwargs[argument])
    assert err.value.key == f"split.{argument}"


def test_grouped_split_needs_two_groups() -> None:
    cells = synth_cells(n=30)
    cells["plate"] = "plate1"
    with pytest.raises(ArgumentError) as err:
        make_split(cells, "plate", 0.2, 0)
    assert err.value.argument == "by"
    assert "at least 2" in str(err.value)
    # known only from the cells: the split script names the key
    with pytest.raises(ConfigError) as err, config_keys(by="split.by"):
        make_split(cells, "plate", 0.2, 0)
    assert err.value.key == "split.by" and "at least 2" in str(err.value)


def test_split_input_errors() -> None:
    cells = synth_cells(n=30)
    dup = cells.copy()
    dup.loc[5, "cell_id"] = dup.loc[2, "cell_id"]
    with pytest.raises(InputError) as err:
        make_split(dup, "random", 0.2, 0)
    assert err.value.row == 5
    with pytest.raises(InputError, match="missing column"):
        make_split(cells.drop(columns=["plate"]), "plate", 0.2, 0)
    nulls = cells.copy()
    nulls.loc[4, "sample"] = None
    with pytest.raises(InputError) as err:
        make_split(nulls, "sample", 0.2, 0)
    assert err.value.row == 4
    with pytest.raises(InputError, match="at least 2 cells"):
        make_split(cells.head(1), "random", 0.5, 0)


def test_attach_split_validates() -> None:
    cells = synth_cells(n=40)
    s = make_split(cells, "random", 0.2, 0)
    with pytest.raises(InputError, match="no split entry"):
        attach_split(cells, s.iloc[1:])
    bad = s.copy()
    bad.loc[3, "split"] = "valid"
    with pytest.raises(InputError) as err:
        attach_split(cells, bad)
    assert err.value.row == 3
    with pytest.raises(InputError, match="no cell of this table is in 'test'"):
        attach_split(cells, s.assign(split="train"))
    train, test = split_frames(cells, s)
    assert len(train) + len(test) == len(cells)
    assert set(test["cell_id"]) == set(s.loc[s["split"] == "test", "cell_id"])


# --------------------------------------------------------------------------- transformer


def test_category_strings_formats_dose_and_nulls() -> None:
    out = category_strings(pd.Series([0.05, 0.5, 5.0, np.nan, 0.0, 0.05 + 1e-12]))
    assert list(out) == ["0.05", "0.5", "5", "<NA>", "0", "0.05"]
    assert list(category_strings(pd.Series(["a", None, "b"]))) == ["a", "<NA>", "b"]


def test_transformer_structure_and_train_only_fit() -> None:
    cells = synth_cells(n=400)
    s = make_split(cells, "random", 0.25, 0)
    ct, X_train, X_test, names = fit_transform_features(cells, s, NUMERIC, CATEGORICAL)
    train, test = split_frames(cells, s)
    n_poly = len(NUMERIC) + len(NUMERIC) * (len(NUMERIC) + 1) // 2  # degree 2, no bias
    n_onehot = sum(train[c].nunique() for c in CATEGORICAL)
    assert X_train.shape == (len(train), n_poly + n_onehot)
    assert X_test.shape == (len(test), n_poly + n_onehot)
    assert len(names) == X_train.shape[1]
    assert names[:4] == [f"num__{c}" for c in NUMERIC]
    assert "num__expr_mean n_genes" in names
    assert {"cat__dose_uM_0.05", "cat__dose_uM_0.5", "cat__dose_uM_5"} <= set(names)
    # scaler statistics come from the training rows only
    scaler = ct.named_transformers_["num"].named_steps["scale"]
    np.testing.assert_allclose(scaler.mean_, train[NUMERIC].mean().to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(scaler.scale_, train[NUMERIC].std(ddof=0).to_numpy(), rtol=1e-12)
    Xtr = X_train.toarray() if sp.issparse(X_train) else X_train
    np.testing.assert_allclose(Xtr[:, :4].mean(axis=0), 0.0, atol=1e-12)
    # product term = product of the z-scores
    i, j, k = (
        names.index("num__expr_mean"),
        names.index("num__n_genes"),
        names.index("num__expr_mean n_genes"),
    )
    np.testing.assert_allclose(Xtr[:, k], Xtr[:, i] * Xtr[:, j], rtol=1e-12)
    # each categorical column contributes exactly one 1 per row
    assert np.all(Xtr[:, n_poly:].sum(axis=1) == len(CATEGORICAL))


def test_mean_imputation_uses_training_mean() -> None:
    cells = synth_cells(n=200)
    cells["expr_skew"] = cells["expr_skew"].astype(float)
    s = make_split(cells, "random", 0.2, 0)
    test_ids = s.loc[s["split"] == "test", "cell_id"]
    cells.loc[cells["cell_id"] == test_ids.iloc[0], "expr_skew"] = np.nan
    ct, _, X_test, names = fit_transform_features(cells, s, NUMERIC, CATEGORICAL)
    row = np.asarray(X_test[0].todense()).ravel() if sp.issparse(X_test) else X_test[0]
    # imputed with the training mean -> z-score exactly 0 -> its square 0 too
    assert row[names.index("num__expr_skew")] == 0.0
    assert row[names.index("num__expr_skew^2")] == 0.0


def test_output_sparse_when_onehot_wide_dense_otherwise() -> None:
    cells = synth_cells(n=300, n_drugs=60)
    s = make_split(cells, "random", 0.2, 0)
    _, X_train, X_test, _ = fit_transform_features(cells, s, ["n_genes"], ["drug", "cell_line_id"])
    assert sp.issparse(X_train) and X_train.format == "csr"
    assert sp.issparse(X_test) and X_test.format == "csr"
    _, D_train, _, names = fit_transform_features(cells, s, NUMERIC, [])
    assert isinstance(D_train, np.ndarray) and D_train.shape[1] == len(names) == 14


def test_reloaded_transformer_is_bitwise_identical_and_ignores_unseen(tmp_path) -> None:
    cells = synth_cells(n=300, n_drugs=40)
    s = make_split(cells, "random", 0.2, 0)
    ct, _, _, names = fit_transform_features(cells, s, NUMERIC, CATEGORICAL)
    path = tmp_path / "models" / "transformer.joblib"
    save_model(ct, path)
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    loaded = load_model(path)

    new = synth_cells(n=50, n_drugs=40, seed=99)
    new.loc[0, "drug"] = "never_seen_drug"
    new.loc[1, "dose_uM"] = 0.123
    cols = NUMERIC + CATEGORICAL
    A = ct.transform(new[cols])
    B = loaded.transform(new[cols])
    assert sp.issparse(A) and sp.issparse(B)
    A, B = sp.csr_matrix(A), sp.csr_matrix(B)
    assert np.array_equal(A.indptr, B.indptr)
    assert np.array_equal(A.indices, B.indices)
    assert A.data.tobytes() == B.data.tobytes()

    dense = B.toarray()
    drug_cols = [i for i, n in enumerate(names) if n.startswith("cat__drug_")]
    dose_cols = [i for i, n in enumerate(names) if n.startswith("cat__dose_uM_")]
    line_cols = [i for i, n in enumerate(names) if n.startswith("cat__cell_line_id_")]
    assert dense[0, drug_cols].sum() == 0.0  # unseen drug -> all-zero block
    assert dense[1, dose_cols].sum() == 0.0  # unseen dose -> all-zero block
    assert dense[0, line_cols].sum() == 1.0  # other blocks unaffected
    assert dense[2, drug_cols].sum() == 1.0
    # numeric block of the unseen-drug row equals a transform of that row alone
    alone = np.asarray(loaded.transform(new[cols].iloc[[0]]).todense()).ravel()
    assert alone.tobytes() == dense[0].tobytes()


def test_load_model_missing_file(tmp_path) -> None:
    with pytest.raises(InputError, match="no such file"):
        load_model(tmp_path / "nope.joblib")


TRANSFORMER_CASES = [
    ("expr_mean", ["drug"], 2, "numeric"),
    (["expr_mean"], ["drug", "drug"], 2, "categorical"),
    (["expr_mean"], ["drug", ""], 2, "categorical"),
    (["drug"], ["drug"], 2, "categorical"),
    ([], [], 2, "numeric"),
    (["expr_mean"], [], 0, "poly_degree"),
]


@pytest.mark.parametrize(("numeric", "categorical", "degree", "argument"), TRANSFORMER_CASES)
def test_transformer_argument_errors(numeric, categorical, degree, argument) -> None:
    with pytest.raises(ArgumentError) as err:
        build_transformer(numeric, categorical, degree)
    assert err.value.argument == argument


@pytest.mark.parametrize(("numeric", "categorical", "degree", "argument"), TRANSFORMER_CASES)
def test_transformer_settings_are_checked_at_parse_time(
    numeric, categorical, degree, argument
) -> None:
    settings = {("features", "numeric"): numeric, ("features", "categorical"): categorical,
                ("features", "poly_degree"): degree}  # fmt: skip
    with pytest.raises(ConfigError) as err:
        validate_config(config_with(settings, BASE), SCHEMA)
    assert f"{err.value.key}.".startswith(f"features.{argument}.")  # the key or one of its items


def test_fit_transform_missing_column() -> None:
    cells = synth_cells(n=50)
    s = make_split(cells, "random", 0.2, 0)
    with pytest.raises(InputError, match="pct_mito"):
        fit_transform_features(cells, s, ["pct_mito"], ["drug"])


# --------------------------------------------------------------------------- matrices


def test_save_matrix_roundtrip(tmp_path) -> None:
    cells = synth_cells(n=120, n_drugs=30)
    s = make_split(cells, "random", 0.2, 0)
    _, X_train, _, names = fit_transform_features(cells, s, NUMERIC, CATEGORICAL)
    train, _ = split_frames(cells, s)
    path = tmp_path / "features" / "X_train.npz"
    written = save_matrix(path, X_train, names, train["cell_id"])
    assert written == (path, tmp_path / "features" / "X_train.names.json")
    assert matrix_names_path(path) == written[1]
    raw = sp.load_npz(path)  # plain scipy can read it
    assert (raw != sp.csr_matrix(X_train)).nnz == 0
    X, n, ids = load_matrix(path)
    assert X.format == "csr" and X.dtype == np.float64
    assert X.data.tobytes() == sp.csr_matrix(X_train).data.tobytes()
    assert n == names and ids == list(train["cell_id"])
    meta = json.loads(written[1].read_text())
    assert meta["shape"] == list(X_train.shape)
    # dense input is stored as CSR too
    save_matrix(tmp_path / "d.npz", np.eye(2), ["a", "b"], ["c1", "c2"])
    assert load_matrix(tmp_path / "d.npz")[0].toarray().tolist() == [[1, 0], [0, 1]]
    with pytest.raises(ValueError, match="names"):
        save_matrix(tmp_path / "e.npz", np.eye(2), ["a"], ["c1", "c2"])
