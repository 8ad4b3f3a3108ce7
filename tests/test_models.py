"""Tests for the tahoeflow.models fitters on synthetic cells with known structure."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO, config_with
from sklearn.linear_model import Ridge
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    mean_squared_error,
    precision_recall_fscore_support,
    r2_score,
    root_mean_squared_error,
)
from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score
from sklearn.preprocessing import OneHotEncoder

from tahoeflow.config import validate_config
from tahoeflow.errors import ArgumentError, ConfigError, InputError, config_keys
from tahoeflow.models.baselines import fit_classifier_baselines
from tahoeflow.models.ceiling import r2_ceiling, ridge_fraction_of_ceiling
from tahoeflow.models.classification import fit_rf_classifier
from tahoeflow.models.compare import split_comparison
from tahoeflow.models.features import make_split
from tahoeflow.models.figures import plot_confusion, plot_importances, plot_pred_vs_true
from tahoeflow.models.persist import save_model
from tahoeflow.models.regression import (
    DEFAULT_RF_GRID,
    fit_rf_regressor_grid,
    fit_ridge,
    grid_parameters,
    ridge_pipeline,
)

NOISE = 0.6


def synth(
    n: int = 3000,
    n_drugs: int = 8,
    n_lines: int = 5,
    n_plates: int = 5,
    seed: int = 0,
    interaction: float = 0.0,
) -> tuple[pd.DataFrame, float]:
    """delta_mean = drug effect + line effect (+ drug x dose effect) + N(0, NOISE^2).

    Cell lines are separable by n_genes / mean_log_norm. Returns (cells, theoretical R2
    of the additive drug + line model = signal variance / total variance).
    """
    rng = np.random.default_rng(seed)
    drug_eff = rng.normal(0.0, 1.0, n_drugs)
    line_eff = rng.normal(0.0, 0.7, n_lines)
    doses = np.array([0.05, 0.5, 5.0])
    dd_eff = rng.normal(0.0, interaction, (n_drugs, 3))
    d = rng.integers(n_drugs, size=n)
    ln = rng.integers(n_lines, size=n)
    p = rng.integers(n_plates, size=n)
    k = rng.integers(3, size=n)
    y = drug_eff[d] + line_eff[ln] + dd_eff[d, k] + NOISE * rng.normal(size=n)
    cells = pd.DataFrame(
        {
            "cell_id": [f"cell{i:05d}" for i in range(n)],
            "plate": [f"plate{i + 1}" for i in p],
            "drug": [f"drug{i}" for i in d],
            "dose_uM": doses[k],
            "cell_line_id": [f"CVCL_{i:04d}" for i in ln],
            "moa_fine": [f"moa{i % 3}" for i in d],
            "is_control": d == 0,
            "n_genes": (1000 + 300 * ln + rng.normal(0, 40, n)).astype(np.int32),
            "total_counts": rng.gamma(5.0, 1000.0, n),
            "expr_mean": 1.5 + 0.1 * y + rng.normal(0, 0.3, n),
            "expr_std": rng.gamma(3.0, 1.0, n),
            "expr_skew": rng.normal(2.0, 0.5, n),
            "pct_mito": rng.uniform(0, 10, n),
            "mean_log_norm": 0.4 + 0.25 * ln + rng.normal(0, 0.03, n),
            "delta_mean": y,
        }
    )
    cells["sample"] = (
        "smp_" + cells["plate"] + "_" + cells["drug"] + "_" + cells["dose_uM"].astype(str)
    )
    signal = drug_eff.var() + line_eff.var()  # categories drawn uniformly
    return cells, signal / (signal + NOISE**2)


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, float, pd.DataFrame]:
    cells, theory = synth()
    return cells, theory, make_split(cells, "random", 0.2, seed=0)


# --------------------------------------------------------------------------- Model 1


def test_ridge_reaches_theoretical_r2_and_equals_sklearn(data) -> None:
    cells, theory, split = data
    res = fit_ridge(cells, split, alpha=1.0, features=["drug", "cell_line_id"], cv_folds=5, seed=0)
    m = res.metrics
    assert abs(m["test_r2"] - theory) < 0.04, (m["test_r2"], theory)
    assert abs(m["cv_r2_mean"] - theory) < 0.04
    assert m["n_train"] == 2400 and m["n_test"] == 600 and m["n_onehot_columns"] == 13

    tr = split["split"].eq("train").to_numpy()
    X = cells[["drug", "cell_line_id"]]
    enc = OneHotEncoder(handle_unknown="ignore").fit(X[tr])
    M_all = enc.transform(X)
    y = cells["delta_mean"].to_numpy()
    direct = Ridge(alpha=1.0, solver="sparse_cg", tol=1e-10).fit(M_all[tr], y[tr])
    np.testing.assert_array_equal(res.predictions["y_pred"].to_numpy(), direct.predict(M_all))
    # ... and the exact ridge solution (dense Cholesky) to ~1e-9
    exact = Ridge(alpha=1.0, solver="cholesky").fit(M_all[tr].toarray(), y[tr])
    np.testing.assert_allclose(
        res.predictions["y_pred"].to_numpy(), exact.predict(M_all.toarray()), atol=1e-8
    )
    np.testing.assert_allclose(res.model.named_steps["ridge"].coef_, exact.coef_, atol=1e-8)


def test_ridge_alpha_zero_is_least_squares(data) -> None:
    cells, _, split = data
    res = fit_ridge(cells, split, alpha=0.0, cv_folds=0)
    tr = split["split"].eq("train").to_numpy()
    cols = ["drug", "cell_line_id"]
    onehot = OneHotEncoder().fit(cells.loc[tr, cols]).transform(cells[cols]).toarray()
    A = np.column_stack([np.ones(len(onehot)), onehot])
    y = cells["delta_mean"].to_numpy()
    w = np.linalg.lstsq(A[tr], y[tr], rcond=None)[0]
    np.testing.assert_allclose(res.predictions["y_pred"].to_numpy(), A @ w, atol=1e-8)


def test_ridge_metrics_equal_sklearn_metrics(data) -> None:
    cells, _, split = data
    res = fit_ridge(
        cells, split, alpha=3.0, features=["drug", "cell_line_id", "dose"], cv_folds=4, seed=5
    )
    pred = res.predictions
    assert list(pred.columns) == ["cell_id", "split", "y_true", "y_pred"]
    for side in ("train", "test"):
        p = pred[pred["split"] == side]
        assert res.metrics[f"{side}_mse"] == pytest.approx(
            mean_squared_error(p["y_true"], p["y_pred"]), rel=1e-12
        )
        assert res.metrics[f"{side}_r2"] == pytest.approx(
            r2_score(p["y_true"], p["y_pred"]), rel=1e-12
        )
    train = cells[split["split"].eq("train").to_numpy()]
    design = pd.DataFrame(
        {
            "drug": train["drug"],
            "cell_line_id": train["cell_line_id"],
            "dose": train["dose_uM"].map("{:g}".format),
        }
    )
    scores = cross_val_score(
        ridge_pipeline(3.0),
        design,
        train["delta_mean"].to_numpy(),
        scoring="r2",
        cv=KFold(4, shuffle=True, random_state=5),
    )
    assert res.metrics["cv_r2_folds"] == pytest.approx(list(scores), rel=1e-12)
    assert res.metrics["cv_r2_mean"] == pytest.approx(scores.mean(), rel=1e-12)
    assert res.metrics["cv_r2_std"] == pytest.approx(scores.std(), rel=1e-12)
    json.dumps(res.metrics)  # JSON-ready, no NaN


def test_ridge_excludes_and_counts_null_targets(data) -> None:
    cells, _, split = data
    cells = cells.copy()
    cells.loc[cells.index[::50], "delta_mean"] = np.nan
    res = fit_ridge(cells, split, cv_folds=0)
    assert res.metrics["n_excluded_null_target"] == 60
    assert res.metrics["n_train"] + res.metrics["n_test"] == 3000 - 60
    assert res.metrics["cv_r2_mean"] is None
    assert not res.predictions["cell_id"].isin(cells.loc[cells.index[::50], "cell_id"]).any()
    assert res.predictions["y_true"].notna().all()


def test_ridge_drug_dose_interaction_feature() -> None:
    cells, _ = synth(n=3000, interaction=1.0, seed=3)
    split = make_split(cells, "random", 0.2, 0)
    additive = fit_ridge(cells, split, features=["drug", "dose", "cell_line_id"], cv_folds=0)
    inter = fit_ridge(cells, split, features=["drug_dose", "cell_line_id"], cv_folds=0)
    assert inter.metrics["n_onehot_columns"] == 8 * 3 + 5
    assert inter.metrics["test_r2"] > additive.metrics["test_r2"] + 0.1


def test_r2_ceiling_closed_form_and_bounds_ridge(data) -> None:
    cells, _, split = data
    y = cells["delta_mean"].to_numpy()
    keys = cells[["drug", "cell_line_id"]]
    groups = keys["drug"] + "/" + keys["cell_line_id"]
    means = pd.Series(y).groupby(groups.to_numpy()).transform("mean").to_numpy()
    between = np.sum((means - y.mean()) ** 2)
    total = np.sum((y - y.mean()) ** 2)
    ceiling = r2_ceiling(y, keys)
    assert ceiling == pytest.approx(between / total, rel=1e-12)
    assert ceiling == pytest.approx(r2_score(y, means), rel=1e-12)
    # same answer from a 1-D key array, and more keys can only raise it
    assert r2_ceiling(y, groups.to_numpy()) == pytest.approx(ceiling, rel=1e-12)
    assert r2_ceiling(y, cells[["drug", "cell_line_id", "plate"]]) >= ceiling
    assert np.isnan(r2_ceiling(np.ones(10), np.arange(10) % 2))
    with pytest.raises(ValueError):
        r2_ceiling(y[:5], keys)

    res = fit_ridge(cells, split, features=["drug", "cell_line_id"], cv_folds=0)
    te = res.predictions["split"].eq("test").to_numpy()
    test_keys = cells.loc[split["split"].eq("test").to_numpy(), ["drug", "cell_line_id"]]
    ceiling_test = r2_ceiling(res.predictions["y_true"][te], test_keys)
    assert ceiling_test >= res.metrics["test_r2"]
    assert ceiling_test - res.metrics["test_r2"] < 0.05  # additive truth: ridge is near the ceiling

    frac = ridge_fraction_of_ceiling(res, cells, keys=["drug", "cell_line_id"])
    assert frac["keys"] == ["drug", "cell_line_id"]
    assert frac["test_r2_ceiling"] == pytest.approx(ceiling_test, rel=1e-12)
    assert frac["test_fraction_of_ceiling"] == pytest.approx(res.metrics["test_r2"] / ceiling_test)
    assert frac["test_n_groups"] == test_keys.drop_duplicates().shape[0]
    for side in ("train", "test"):
        assert 0 < frac[f"{side}_fraction_of_ceiling"] <= 1
    default = ridge_fraction_of_ceiling(res, cells)
    assert default["keys"] == ["drug", "dose_uM", "cell_line_id", "plate"]
    assert default["test_r2_ceiling"] >= frac["test_r2_ceiling"]


# --------------------------------------------------------------------------- Model 2


def test_rf_classifier_separable_lines(data) -> None:
    cells, _, split = data
    cells = cells.copy()
    cells.loc[cells.index[::40], "delta_mean"] = np.nan  # imputed inside the pipeline
    out = fit_rf_classifier(cells, split, n_estimators=15, seed=0, cv_folds=3)
    m = out["metrics"]
    assert m["test_accuracy"] > 0.95
    assert m["cv_accuracy_mean"] > 0.95 and m["cv_kind"] == "StratifiedKFold"
    assert len(m["cv_accuracy_folds"]) == 3
    assert m["n_classes"] == 5
    json.dumps(m)

    pred = out["predictions"]
    te = pred[pred["split"] == "test"]
    tr = pred[pred["split"] == "train"]
    assert m["test_accuracy"] == accuracy_score(te["y_true"], te["y_pred"])
    assert m["train_accuracy"] == accuracy_score(tr["y_true"], tr["y_pred"])
    labels = list(out["label_encoder"].classes_)
    p, r, f, s = precision_recall_fscore_support(
        te["y_true"], te["y_pred"], labels=labels, zero_division=0
    )
    rep = out["report"].set_index("label")
    np.testing.assert_allclose(rep.loc[labels, "precision"], p)
    np.testing.assert_allclose(rep.loc[labels, "recall"], r)
    np.testing.assert_allclose(rep.loc[labels, "f1"], f)
    np.testing.assert_array_equal(rep.loc[labels, "support"], s)
    macro = precision_recall_fscore_support(
        te["y_true"], te["y_pred"], average="macro", zero_division=0
    )
    assert rep.loc["macro avg", "f1"] == pytest.approx(macro[2])
    cm = out["confusion"]
    np.testing.assert_array_equal(
        cm.to_numpy(), confusion_matrix(te["y_true"], te["y_pred"], labels=labels)
    )
    assert list(cm.index) == labels == list(cm.columns)

    imp = out["importances"]
    assert imp["importance"].is_monotonic_decreasing
    assert imp["importance"].sum() == pytest.approx(1.0)
    assert set(imp["feature"].head(2)) == {"n_genes", "mean_log_norm"}
    assert {f"drug_drug{i}" for i in range(8)} <= set(imp["feature"])

    # CV accuracy equals a direct cross_val_score with the same folds
    train = cells[split["split"].eq("train").to_numpy()]
    y = out["label_encoder"].transform(train["cell_line_id"])
    direct = cross_val_score(
        out["model"],
        train[["drug", "mean_log_norm", "delta_mean", "n_genes"]].astype({"n_genes": float}),
        y,
        cv=StratifiedKFold(3, shuffle=True, random_state=0),
        scoring="accuracy",
    )
    assert m["cv_accuracy_folds"] == pytest.approx(list(direct))


def test_rf_classifier_with_embeddings(data) -> None:
    cells, _, split = data
    rng = np.random.default_rng(1)
    emb = pd.DataFrame({"cell_id": cells["cell_id"].iloc[:-10]})
    for j in range(1, 5):
        emb[f"pc{j}"] = rng.normal(size=len(emb))
    out = fit_rf_classifier(
        cells,
        split,
        features=["drug", "n_genes"],
        n_estimators=5,
        cv_folds=0,
        embeddings=emb,
        n_pcs=3,
    )
    assert out["metrics"]["features"] == ["drug", "n_genes", "pc1", "pc2", "pc3"]
    assert out["metrics"]["n_missing_embeddings"] == 10
    assert {"pc1", "pc2", "pc3"} <= set(out["importances"]["feature"])
    assert "pc4" not in set(out["importances"]["feature"])
    assert out["metrics"]["cv_accuracy_mean"] is None
    capped = fit_rf_classifier(cells, split, n_estimators=3, cv_folds=0, max_samples=10**9)
    assert capped["metrics"]["max_samples"] == capped["metrics"]["n_train"]
    assert capped["model"].named_steps["rf"].max_samples == capped["metrics"]["n_train"]
    with pytest.raises(ArgumentError) as err:
        fit_rf_classifier(cells, split, n_estimators=5, cv_folds=0, embeddings=emb, n_pcs=9)
    assert err.value.argument == "n_pcs" and "the table has 4" in str(err.value)
    # the script names the config key behind the argument (the PCs are known only from the data)
    with pytest.raises(ConfigError) as err, config_keys(n_pcs="models.rf.n_pcs"):
        fit_rf_classifier(cells, split, n_estimators=5, cv_folds=0, embeddings=emb, n_pcs=9)
    assert err.value.key == "models.rf.n_pcs"


def test_classifier_baselines_table(data) -> None:
    cells, _, split = data
    table = fit_classifier_baselines(cells, split, seed=0, cv_folds=3, n_estimators=15)
    assert list(table["model"]) == [
        "majority_class",
        "logistic_regression",
        "linear_svm",
        "random_forest",
    ]
    assert list(table.columns) == [
        "model",
        "train_acc",
        "test_acc",
        "gap",
        "cv_acc_mean",
        "cv_acc_std",
        "cv_kind",
        "converged",
        "note",
    ]
    assert (table["note"] == "").all()
    t = table.set_index("model")
    rf = fit_rf_classifier(cells, split, n_estimators=15, seed=0, cv_folds=3)
    assert t.loc["random_forest", "test_acc"] == rf["metrics"]["test_accuracy"]
    assert t.loc["random_forest", "cv_acc_mean"] == pytest.approx(rf["metrics"]["cv_accuracy_mean"])
    train_lines = cells.loc[split["split"].eq("train").to_numpy(), "cell_line_id"]
    test_lines = cells.loc[split["split"].eq("test").to_numpy(), "cell_line_id"]
    majority = train_lines.value_counts().sort_index().idxmax()
    assert t.loc["majority_class", "test_acc"] == pytest.approx((test_lines == majority).mean())
    assert t.loc["logistic_regression", "test_acc"] > 0.9
    assert table["converged"].tolist() == [None, True, True, None]
    for col in ("train_acc", "test_acc", "cv_acc_mean"):
        assert table[col].between(0, 1).all()
    assert (table["gap"] == table["train_acc"] - table["test_acc"]).all()
    only = fit_classifier_baselines(cells, split, models=["linear_svm"], cv_folds=0)
    assert list(only["model"]) == ["linear_svm"] and only["cv_acc_mean"].isna().all()


# --------------------------------------------------------------------------- seed 001


def test_rf_regressor_grid(data) -> None:
    cells, _, split = data
    grid = {"n_estimators": [5, 10], "max_depth": [None, 4]}
    out = fit_rf_regressor_grid(cells, split, grid=grid, cv_folds=3, seed=0)
    bp = out["best_params"]
    assert (
        set(bp) == set(grid)
        and bp["n_estimators"] in grid["n_estimators"]
        and bp["max_depth"] in grid["max_depth"]
    )
    m = out["metrics"]
    pred = out["predictions"]
    te, tr = pred[pred["split"] == "test"], pred[pred["split"] == "train"]
    assert m["test_rmse"] == pytest.approx(
        root_mean_squared_error(te["y_true"], te["y_pred"]), rel=1e-12
    )
    assert m["train_rmse"] == pytest.approx(
        root_mean_squared_error(tr["y_true"], tr["y_pred"]), rel=1e-12
    )
    cv = out["cv_results"]
    assert len(cv) == 4 == m["n_candidates"]
    best_row = cv.loc[cv["rank"] == 1].iloc[0]
    assert (
        m["cv_rmse"]
        == pytest.approx(best_row["mean_cv_rmse"])
        == pytest.approx(cv["mean_cv_rmse"].min())
    )
    assert (
        best_row["n_estimators"] == bp["n_estimators"] and best_row["max_depth"] == bp["max_depth"]
    )
    assert None in list(cv["max_depth"])  # None stays None, not NaN
    assert m["test_rmse"] < cells["delta_mean"].std()  # learns something
    json.dumps(m)
    assert DEFAULT_RF_GRID == {
        "n_estimators": [50, 100],
        "max_depth": [None, 8],
        "min_samples_leaf": [1, 5],
    }


# --------------------------------------------------------------------------- leakage


def test_split_comparison_table(data) -> None:
    cells, _, _ = data
    table = split_comparison(cells, group_by="plate", test_size=0.2, seed=0, n_estimators=5)
    assert list(table["split"]) == ["random", "random", "plate", "plate"]
    assert list(table["model"]) == ["ridge", "rf_classifier"] * 2
    assert list(table["metric"]) == ["r2", "accuracy"] * 2
    np.testing.assert_allclose(table["gap"], table["train"] - table["test"])
    rand = make_split(cells, "random", 0.2, 0)
    ridge = fit_ridge(cells, rand, cv_folds=0)
    assert table.loc[0, "test"] == pytest.approx(ridge.metrics["test_r2"])
    assert table.loc[0, "test_r2_ceiling"] >= table.loc[0, "test"]
    grouped = make_split(cells, "plate", 0.2, 0)
    assert table.loc[2, "n_test"] == grouped["split"].eq("test").sum()
    custom = split_comparison(cells, {"mine": rand}, n_estimators=5)
    assert list(custom["split"]) == ["mine", "mine"]


# --------------------------------------------------------------------------- errors


def test_model_argument_errors(data) -> None:
    cells, _, split = data
    cases = [
        (lambda: fit_ridge(cells, split, alpha=float("inf")), "alpha"),
        (lambda: fit_ridge(cells, split, alpha=-1), "alpha"),
        (lambda: fit_ridge(cells, split, features=["drug", "plate_id"]), "features"),
        (lambda: fit_ridge(cells, split, features=[]), "features"),
        (lambda: fit_ridge(cells, split, features=["drug", "drug"]), "features"),
        (lambda: fit_ridge(cells, split, cv_folds=1), "cv_folds"),
        (lambda: fit_ridge(cells.head(100), split, cv_folds=5000), "cv_folds"),
        (lambda: fit_ridge(cells, split, seed=-1), "seed"),
        (lambda: fit_ridge(cells, split, n_jobs=0), "n_jobs"),
        (lambda: fit_rf_classifier(cells, split, n_estimators=0), "n_estimators"),
        (lambda: fit_rf_classifier(cells, split, max_depth=0), "max_depth"),
        (lambda: fit_rf_classifier(cells, split, max_samples=1.5), "max_samples"),
        (lambda: fit_rf_classifier(cells, split, max_samples=0), "max_samples"),
        (lambda: fit_rf_classifier(cells, split, features=["cell_line_id"]), "features"),
        (lambda: fit_rf_classifier(cells, split, n_pcs=3), "n_pcs"),  # no embeddings given
        (lambda: fit_classifier_baselines(cells, split, models=["xgboost"]), "models"),
        (lambda: fit_rf_regressor_grid(cells, split, grid={"n_trees": [5]}), "grid"),
        (lambda: fit_rf_regressor_grid(cells, split, grid={"max_depth": []}), "grid"),
        (lambda: fit_rf_regressor_grid(cells, split, grid={}), "grid"),
        (lambda: fit_rf_regressor_grid(cells, split, features=["drug", "delta_mean"]), "features"),
        (
            lambda: fit_rf_regressor_grid(cells, split, features=["mean_log_norm", "control_mean"]),
            "features",
        ),
        (lambda: fit_rf_regressor_grid(cells, split, cv_folds=0), "cv_folds"),
        (lambda: split_comparison(cells, group_by="random"), "group_by"),
        (lambda: split_comparison(cells, {}), "splits"),
    ]
    for call, argument in cases:
        with pytest.raises(ArgumentError) as err:
            call()
        assert err.value.argument == argument, (argument, str(err.value))
    # data-dependent: the script names the key; only the argument named in the block is mapped
    with pytest.raises(ConfigError) as err, config_keys(cv_folds="models.cv_folds"):
        fit_ridge(cells.head(100), split, cv_folds=5000)
    assert str(err.value) == "config key 'models.cv_folds': 5000 folds but only 87 training rows"
    with pytest.raises(ArgumentError), config_keys(cv_folds="models.cv_folds"):
        fit_ridge(cells, split, alpha=-1)


SCHEMA = REPO / "config/schema.yaml"
BASE = yaml.safe_load((REPO / "config/config.yaml").read_text())


def parse(path: str, value) -> dict:
    """Parse-time validation of the repository's config with the key ``path`` (a.b.c) set."""
    return validate_config(config_with({tuple(path.split(".")): value}, BASE), SCHEMA)


@pytest.mark.parametrize(
    ("path", "value", "words"),
    [
        ("models.ridge.alpha", float("inf"), "finite"),
        ("models.ridge.alpha", float("nan"), "finite"),
        ("models.ridge.alpha", -1, "out of range"),
        ("models.ridge.features", ["drug", "plate_id"], "not one of"),
        ("models.ridge.features", ["drug", "drug"], "non-unique"),
        ("models.cv_folds", 1, "out of range"),
        ("models.seed", -1, "out of range"),
        ("models.max_train_cells", 1, "out of range"),
        ("models.max_test_cells", 0, "out of range"),
        ("models.max_test_cells", 1.5, "should be of type"),
        ("models.rf.n_estimators", 0, "out of range"),
        ("models.rf.max_depth", 0, "out of range"),
        ("models.rf.n_pcs", 0, "out of range"),
        ("models.rf.max_samples", 1.5, "fraction"),
        ("models.rf.max_samples", 0, "out of range"),
        ("models.rf.max_leaf_nodes", 1, "out of range"),
        ("models.rf.max_leaf_nodes", 2.5, "should be of type"),
        ("models.rf_regressor.grid", {"n_trees": [5]}, "'n_trees' is not one of"),
        ("models.rf_regressor.grid", {}, "empty"),
        ("models.rf_regressor.features", ["drug", "delta_mean"], "is the target"),
        ("models.rf_regressor.features", ["mean_log_norm", "control_mean"], "target leak"),
        ("models.rf_regressor.features", ["drug", ""], "non-empty"),
        ("models.rf_regressor.features", ["drug", "drug"], "non-unique"),
        ("models.rf_regressor.cv_folds", 0, "out of range"),
        ("models.grouped_split_by", "random", "not one of"),
    ],
)
def test_model_settings_are_checked_at_parse_time(path, value, words) -> None:
    with pytest.raises(ConfigError) as err:
        parse(path, value)
    # the key, or an item of it (models.ridge.features.1)
    assert f"{err.value.key}.".startswith(f"{path}.") and words in str(err.value), str(err.value)


def test_parse_time_accepts_what_the_fitters_accept() -> None:
    for path, value in [
        ("models.rf.max_samples", 1.0),
        ("models.rf.max_samples", 500),
        ("models.rf_regressor.grid", {"criterion": ["squared_error"], "bootstrap": [True]}),
        ("models.ridge.alpha", 0),
    ]:
        parse(path, value)


def test_schema_grid_names_are_the_tunable_forest_parameters() -> None:
    schema = yaml.safe_load(SCHEMA.read_text())
    grid = schema["properties"]["models"]["properties"]["rf_regressor"]["properties"]["grid"]
    assert grid["propertyNames"]["enum"] == grid_parameters()


def test_forest_leaf_bound_caps_the_trees_and_their_memory(data) -> None:
    from sklearn.ensemble._forest import _get_n_samples_bootstrap

    from tahoeflow.models.checks import NODE_BYTES, forest_nbytes_bound, leaf_bound, rows_per_tree

    cells, _, split = data
    # rows per tree: scikit-learn's own bootstrap size
    for n, ms in [(2400, None), (2400, 0.25), (2400, 0.0999), (2400, 700), (70, 0.5)]:
        assert rows_per_tree(n, ms) == _get_n_samples_bootstrap(n, ms, None), (n, ms)
    assert leaf_bound(None, 10**6) is None
    assert leaf_bound(600, 600) is None and leaf_bound(599, 600) == 599
    # binding: every tree has at most the bound's leaves, so 2 L - 1 nodes, and the forest's
    # node arrays stay under the closed-form bound
    out = fit_rf_classifier(cells, split, n_estimators=4, cv_folds=0, max_leaf_nodes=40)
    rf = out["model"].named_steps["rf"]
    assert out["metrics"]["max_leaf_nodes"] == 40 and rf.max_leaf_nodes == 40
    trees = [e.tree_ for e in rf.estimators_]
    assert max(t.n_leaves for t in trees) == 40 and max(t.node_count for t in trees) == 79
    n_classes = len(out["label_encoder"].classes_)
    held = sum(t.node_count * NODE_BYTES + t.value.nbytes for t in trees)
    assert (
        held <= forest_nbytes_bound(4, 2400, None, 40, n_classes) == 4 * 79 * (64 + 8 * n_classes)
    )
    # unbounded trees also stay under their bound (leaves <= rows per tree)
    free = fit_rf_classifier(cells, split, n_estimators=4, cv_folds=0, max_samples=0.1)
    trees = [e.tree_ for e in free["model"].named_steps["rf"].estimators_]
    held = sum(t.node_count * NODE_BYTES + t.value.nbytes for t in trees)
    assert held <= forest_nbytes_bound(4, 2400, 0.1, None, n_classes)
    assert trees[0].value.nbytes == trees[0].node_count * 8 * n_classes  # the bytes per node
    # a bound the trees cannot reach (240 rows per tree, bound 240) is not applied: the same
    # forest as unbounded, bit for bit (scikit-learn's best-first builder would draw otherwise)
    same = fit_rf_classifier(
        cells, split, n_estimators=4, cv_folds=0, max_samples=0.1, max_leaf_nodes=240
    )
    assert same["metrics"]["max_leaf_nodes"] is None
    np.testing.assert_array_equal(same["predictions"]["y_pred"], free["predictions"]["y_pred"])
    for a, b in zip(same["model"].named_steps["rf"].estimators_, trees, strict=True):
        np.testing.assert_array_equal(a.tree_.threshold, b.threshold)
    with pytest.raises(ArgumentError, match="max_leaf_nodes"):
        fit_rf_classifier(cells, split, n_estimators=2, cv_folds=0, max_leaf_nodes=1)


def test_model_input_errors(data) -> None:
    cells, _, split = data
    with pytest.raises(InputError, match="missing column"):
        fit_ridge(cells.drop(columns=["delta_mean"]), split)
    with pytest.raises(InputError, match="no split entry"):
        fit_ridge(cells, split.iloc[10:])
    bad = cells.copy()
    bad.loc[7, "delta_mean"] = np.inf
    with pytest.raises(InputError) as err:
        fit_ridge(bad, split)
    assert err.value.row == 7
    badfeat = cells.copy()
    badfeat.loc[0, "delta_mean"] = np.nan  # dropped first: the row number must stay 11
    badfeat.loc[11, "expr_std"] = -np.inf
    with pytest.raises(InputError) as err:
        fit_rf_regressor_grid(badfeat, split, grid={"n_estimators": [2]}, cv_folds=2)
    assert err.value.row == 11 and "expr_std" in str(err.value)
    nolabel = cells.copy()
    nolabel.loc[3, "cell_line_id"] = None
    with pytest.raises(InputError, match="null 'cell_line_id'"):
        fit_rf_classifier(nolabel, split, n_estimators=2, cv_folds=0)
    all_null_test = cells.copy()
    all_null_test.loc[split["split"].eq("test").to_numpy(), "delta_mean"] = np.nan
    # not bad input: no test row has a control, so the Ridge is skipped with the reason
    skipped = fit_ridge(all_null_test, split)
    assert "0 test rows" in skipped.metrics["skipped"] and skipped.model is None


# --------------------------------------------------------------------------- figures and saving


def test_figures_and_model_are_written(data, tmp_path) -> None:
    cells, _, split = data
    res = fit_ridge(cells, split, cv_folds=0)
    rf = fit_rf_classifier(cells, split, n_estimators=5, cv_folds=0)
    outputs = {
        "pred.png": lambda p: plot_pred_vs_true(res.predictions, p),
        "cm.png": lambda p: plot_confusion(rf["confusion"], p),
        "imp.png": lambda p: plot_importances(rf["importances"], p, top=5),
        "pred.pdf": lambda p: plot_pred_vs_true(res.predictions, p),
    }
    for name, draw in outputs.items():
        path = tmp_path / "figs" / name
        draw(path)
        head = path.read_bytes()[:5]
        assert head == (b"\x89PNG\r" if name.endswith(".png") else b"%PDF-"), name
        assert path.stat().st_size > 5000
    assert not list((tmp_path / "figs").glob(".*"))  # no temporary files left
    save_model(rf["model"], tmp_path / "rf.joblib")
    import joblib

    again = joblib.load(tmp_path / "rf.joblib")
    X = (
        cells[["drug", "mean_log_norm", "delta_mean", "n_genes"]]
        .head(50)
        .astype({"n_genes": float})
    )
    np.testing.assert_array_equal(again.predict(X), rf["model"].predict(X))
