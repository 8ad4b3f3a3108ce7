"""Tests for tahoeflow.pergene.lasso: the vectorised per-gene Lasso / LinearRegression fits."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Lasso, LassoCV, LinearRegression
from sklearn.metrics import r2_score
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from tahoeflow.errors import InputError
from tahoeflow.pergene import lasso as pergene

TIGHT = dict(tol=1e-10, max_iter=100_000)


def _simulate(seed=0, n=240, p=8, G=12, density=0.35, noise=1.0):
    rng = np.random.default_rng(seed)
    mix = np.eye(p) + 0.3 * rng.normal(size=(p, p))
    X = rng.normal(size=(n, p)) @ mix * rng.uniform(0.5, 3.0, size=p) + rng.normal(size=p)
    W = rng.normal(size=(p, G)) * (rng.random((p, G)) < density)
    Y = X @ W + rng.normal(size=(n, G)) * noise + rng.normal(size=G) * 3
    return X, Y, W


@pytest.fixture(scope="module")
def fitted():
    X, Y, _ = _simulate()
    genes = [f"g{i}" for i in range(Y.shape[1])]
    res = pergene.fit_pergene(X, Y, genes, cv=5, n_alphas=12, seed=4, **TIGHT)
    return X, Y, genes, res


def test_structure_matches_seed_dictionaries(fitted):
    X, Y, genes, res = fitted
    assert len(res) == 2 * len(genes)
    assert [d["kind"] for d in res[:4]] == ["lasso", "linear", "lasso", "linear"]
    for d in res:
        assert set(d) == {"gene", "model", "std", "r2", "rmse", "kind"}
        assert isinstance(d["model"], Lasso if d["kind"] == "lasso" else LinearRegression)
        assert np.isfinite([d["std"], d["r2"], d["rmse"]]).all()
    assert [d["gene"] for d in res[::2]] == genes


def test_lasso_coefficients_equal_sklearn_at_same_alpha(fitted):
    X, Y, genes, res = fitted
    train, _, _ = pergene.split_indices(len(X), test_size=0.2, cv=5, seed=4)
    rng = np.random.default_rng(0)
    for g in rng.choice(len(genes), size=5, replace=False):
        ours = res[2 * g]["model"]
        ref = Lasso(alpha=ours.alpha, **TIGHT).fit(X[train], Y[train, g])
        np.testing.assert_allclose(ours.coef_, ref.coef_, atol=1e-5, rtol=0)
        assert ours.intercept_ == pytest.approx(ref.intercept_, abs=1e-5)


def test_chosen_alpha_equals_lassocv_with_same_grid_and_folds(fitted):
    X, Y, genes, res = fitted
    train, _, folds = pergene.split_indices(len(X), test_size=0.2, cv=5, seed=4)
    grid = pergene.alpha_grid(X[train], Y[train], n_alphas=12)
    for g in [0, 3, 5, 8, 11]:
        ref = LassoCV(alphas=grid[g], cv=folds, **TIGHT).fit(X[train], Y[train, g])
        assert res[2 * g]["model"].alpha == pytest.approx(ref.alpha_, rel=1e-12)
        np.testing.assert_allclose(res[2 * g]["model"].coef_, ref.coef_, atol=1e-5)


def test_alpha_grid_is_sklearns(fitted):
    X, Y, _, _ = fitted
    from sklearn.linear_model._coordinate_descent import _alpha_grid

    grid = pergene.alpha_grid(X, Y, n_alphas=7, eps=1e-2)
    for g in range(3):
        np.testing.assert_allclose(
            grid[g], _alpha_grid(X, Y[:, g], n_alphas=7, eps=1e-2), rtol=1e-12
        )


def test_linear_regression_equals_sklearn(fitted):
    X, Y, genes, res = fitted
    train, test, folds = pergene.split_indices(len(X), test_size=0.2, cv=5, seed=4)
    for g in range(len(genes)):
        d = res[2 * g + 1]
        ref = LinearRegression().fit(X[train], Y[train, g])
        np.testing.assert_allclose(d["model"].coef_, ref.coef_, rtol=1e-9, atol=1e-10)
        assert d["model"].intercept_ == pytest.approx(ref.intercept_, rel=1e-9)
        # r2 / rmse on the held-out rows; std = sd of the K per-fold R^2 (cross_val_score)
        assert d["r2"] == pytest.approx(r2_score(Y[test, g], ref.predict(X[test])), rel=1e-9)
        rmse = np.sqrt(np.mean((Y[test, g] - ref.predict(X[test])) ** 2))
        assert d["rmse"] == pytest.approx(rmse, rel=1e-9)
        cvs = cross_val_score(LinearRegression(), X[train], Y[train, g], cv=folds)
        assert d["std"] == pytest.approx(np.std(cvs), rel=1e-7, abs=1e-12)


def test_lasso_std_is_sd_of_fold_r2_at_chosen_alpha(fitted):
    X, Y, genes, res = fitted
    train, test, folds = pergene.split_indices(len(X), test_size=0.2, cv=5, seed=4)
    g = 2
    d = res[2 * g]
    cvs = cross_val_score(Lasso(alpha=d["model"].alpha, **TIGHT), X[train], Y[train, g], cv=folds)
    assert d["std"] == pytest.approx(np.std(cvs), rel=1e-5)
    assert d["r2"] == pytest.approx(r2_score(Y[test, g], d["model"].predict(X[test])), rel=1e-9)


def test_wrapped_models_predict_and_pickle(fitted):
    X, Y, genes, res = fitted
    Xn = np.random.default_rng(1).normal(size=(7, X.shape[1]))
    for d in res[:6]:
        m = d["model"]
        np.testing.assert_allclose(m.predict(Xn), Xn @ m.coef_ + m.intercept_, rtol=1e-12)
    back = pickle.loads(pickle.dumps(res))
    np.testing.assert_allclose(back[0]["model"].predict(Xn), res[0]["model"].predict(Xn))
    tab = pergene.predict_table(res, Xn, kind="lasso")
    assert list(tab.columns) == genes and tab.shape == (7, len(genes))
    for g in (0, 7):
        np.testing.assert_allclose(tab.iloc[:, g], res[2 * g]["model"].predict(Xn), rtol=1e-12)
    lin = pergene.predict_table(res, pd.DataFrame(Xn, index=list("abcdefg")), kind="linear")
    assert list(lin.index) == list("abcdefg")
    np.testing.assert_allclose(lin.iloc[:, 1], res[3]["model"].predict(Xn), rtol=1e-12)
    summary = pergene.results_table(res)
    assert summary.shape == (2 * len(genes), 7) and summary["alpha"].notna().sum() == len(genes)


def test_sparse_truth_is_recovered():
    rng = np.random.default_rng(9)
    n, p, G = 600, 15, 10
    X = rng.normal(size=(n, p))
    W = np.zeros((p, G))
    for g in range(G):
        W[rng.choice(p, 3, replace=False), g] = rng.choice([-1, 1], 3) * rng.uniform(1, 2, 3)
    Y = X @ W + 0.5 * rng.normal(size=(n, G))
    res = pergene.fit_pergene(X, Y, None, cv=5, n_alphas=30, seed=0)
    n_zero_off = 0
    for g in range(G):
        coef = res[2 * g]["model"].coef_
        support = W[:, g] != 0
        assert np.all(coef[support] != 0)
        np.testing.assert_allclose(coef[support], W[support, g], atol=0.1)
        assert np.abs(coef[~support]).max() < 0.1  # true effects are >= 1
        n_zero_off += int(np.sum(coef[~support] == 0))
        assert res[2 * g]["r2"] > 0.9
        # the unpenalised fit keeps every spurious feature
        assert np.all(res[2 * g + 1]["model"].coef_ != 0)
    assert n_zero_off >= 0.4 * (p - 3) * G  # the Lasso zeroes out many spurious features


def test_standardize_equals_scaled_pipeline():
    X, Y, _ = _simulate(seed=2, G=4)
    res = pergene.fit_pergene(X, Y, None, cv=4, n_alphas=10, seed=1, standardize=True, **TIGHT)
    train, _, _ = pergene.split_indices(len(X), test_size=0.2, cv=4, seed=1)
    Xn = np.random.default_rng(2).normal(size=(5, X.shape[1]))
    for g in range(4):
        m = res[2 * g]["model"]
        pipe = make_pipeline(StandardScaler(), Lasso(alpha=m.alpha, **TIGHT))
        pipe.fit(X[train], Y[train, g])
        np.testing.assert_allclose(m.predict(Xn), pipe.predict(Xn), rtol=1e-6, atol=1e-6)


def test_cd_solver_matches_sklearn_on_a_correlated_design():
    rng = np.random.default_rng(5)
    n, p, G = 150, 6, 3
    z = rng.normal(size=(n, 1))
    X = 0.8 * z + 0.6 * rng.normal(size=(n, p))
    Y = X @ rng.normal(size=(p, G)) + rng.normal(size=(n, G))
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    alphas = np.array([0.01, 0.1, 0.5])
    B, n_iter = pergene.lasso_cd_gram(Xc.T @ Xc, Xc.T @ Yc, (Yc**2).sum(0), alphas, n, **TIGHT)
    assert (n_iter > 0).all()
    for g in range(G):
        ref = Lasso(alpha=alphas[g], **TIGHT).fit(X, Y[:, g])
        np.testing.assert_allclose(B[:, g], ref.coef_, atol=1e-7)


def test_cv_metrics_without_holdout():
    X, Y, _ = _simulate(seed=3, G=3)
    res = pergene.fit_pergene(X, Y, None, cv=3, n_alphas=8, seed=0, test_size=0.0)
    assert all(np.isfinite(d["r2"]) and d["rmse"] > 0 for d in res)


def test_input_validation():
    X, Y, _ = _simulate(seed=1, G=2)
    with pytest.raises(ValueError, match="gene names"):
        pergene.fit_pergene(X, Y, ["only_one"])
    Xbad = X.copy()
    Xbad[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        pergene.fit_pergene(Xbad, Y, None)


def test_load_table_drops_and_counts_missing_rows(tmp_path):
    df = pd.DataFrame(
        {
            "cell": [f"c{i}" for i in range(6)],
            "f1": [1.0, 2.0, np.nan, 4.0, 5.0, 6.0],
            "f2": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],
            "GeneA": [1, 2, 3, 4, np.nan, 6],
            "GeneB": [1, 1, 1, 1, 1, 1],
        }
    )
    csv = tmp_path / "t.csv"
    df.to_csv(csv, index=False)
    pq = tmp_path / "t.parquet"
    df.to_parquet(pq)
    for path in (csv, pq):
        X, Y, n_dropped = pergene.load_table(path, ["f1", "f2"])
        assert n_dropped == 2
        assert list(X.columns) == ["f1", "f2"] and list(Y.columns) == ["GeneA", "GeneB"]
        assert list(X.index) == [0, 1, 3, 5] and X.dtypes.eq(np.float64).all()
    X, Y, n_dropped = pergene.load_table(csv, ["f1", "f2"], gene_cols=[])
    assert n_dropped == 1 and Y.shape == (5, 0)
    with pytest.raises(InputError) as exc:
        pergene.load_table(csv, ["f1", "f3"], ["GeneA"])
    assert "t.csv" in str(exc.value) and "f3" in str(exc.value)
    with pytest.raises(InputError, match="cell"):
        pergene.load_table(csv, ["f1", "cell"], [])
