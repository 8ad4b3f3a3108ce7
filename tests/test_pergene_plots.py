"""Plot helpers of tahoeflow.pergene.plots (UMAP / t-SNE validation figure, R^2 histograms).

Kept apart from test_pergene.py because importing and JIT-compiling umap-learn takes ~20 s.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from tahoeflow.pergene.lasso import fit_pergene, predict_table
from tahoeflow.pergene.plots import plot_r2_hist, plot_validation


def _png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000


def test_plot_validation_and_r2_hist(tmp_path):
    rng = np.random.default_rng(0)
    n, p, G = 120, 5, 25
    X = rng.normal(size=(n, p))
    Y = X @ rng.normal(size=(p, G)) + rng.normal(size=(n, G))
    genes = [f"g{i}" for i in range(G)]
    res = fit_pergene(X, Y, genes, cv=3, n_alphas=8, seed=0)
    pred = predict_table(res, rng.normal(size=(40, p)))
    obs = pd.DataFrame(rng.normal(size=(50, G + 3)), columns=genes + ["x1", "x2", "x3"])
    plot_validation(pred, obs, tmp_path / "val.png", seed=0)
    plot_r2_hist(res, tmp_path / "r2.png")
    assert _png(tmp_path / "val.png") and _png(tmp_path / "r2.png")


def test_validation_figure_embeds_at_most_max_points_rows(tmp_path, monkeypatch):
    from tahoeflow.pergene import plots

    a = np.arange(30.0)[:, None] * np.ones((1, 4))
    assert plots._sample_rows(a, None, 0) is a and plots._sample_rows(a, 30, 0) is a
    s = plots._sample_rows(a, 12, 0)
    assert s.shape == (12, 4) and np.all(np.diff(s[:, 0]) > 0) and set(s[:, 0]) <= set(a[:, 0])
    np.testing.assert_array_equal(s, plots._sample_rows(a, 12, 0))  # seeded
    seen = []
    real = plots._embed_inputs
    monkeypatch.setattr(
        plots,
        "_embed_inputs",
        lambda p, o, k, seed: seen.append((len(p), len(o))) or real(p, o, k, seed),
    )
    rng = np.random.default_rng(1)
    plots.plot_validation(rng.normal(size=(90, 6)), rng.normal(size=(25, 6)), tmp_path / "v.png",
                          seed=0, max_points=40)  # fmt: skip
    assert seen == [(40, 25)] and _png(tmp_path / "v.png")
