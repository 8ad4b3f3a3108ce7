"""Seed 004: classify genes of a limma topTable as up- (logFC > 0) or down-regulated.

The seed reports near-perfect accuracy for every model. That is expected and uninformative:
the target ``logFC > 0`` is a deterministic function of the feature ``logFC`` (and of the
moderated ``t``, which always has the sign of logFC). :func:`detect_deterministic_target`
states this plainly, and :func:`run_both` reruns the benchmark without the features that
come with the sign (logFC, t) and without B, so the two results can be put side by side.

Pipeline per model: ``Pipeline(StandardScaler, model)``; stratified 80/20 split (seeded);
cross-validated accuracy is StratifiedKFold(cv, shuffled, seeded) on the training part; test
accuracy on the held-out part. Models: RandomForest tuned by GridSearchCV (seed 004's
parameters n_estimators, max_depth, min_samples_leaf, min_samples_split), LogisticRegression,
L1 ("LASSO") LogisticRegression (liblinear), SVC (rbf), XGBoost (hist, seeded, n_jobs=1).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from tahoeflow import io as tio
from tahoeflow.errors import InputError
from tahoeflow.io import numeric_columns
from tahoeflow.plots.save import save_figure

TOPTABLE_COLUMNS = ("logFC", "AveExpr", "t", "P.Value", "adj.P.Val", "B")
DEFAULT_FEATURES = list(TOPTABLE_COLUMNS)
#: dropped for the "reduced" run: logFC and t carry the sign of the target; B as the seed's
#: follow-up asked (it is a function of t^2 and so of |logFC|, not of its sign).
SIGN_FEATURES = ("logFC", "t", "B")
#: a DESeq2 results table (``de.method: deseq2``, Tahoe's published table) in limma's names:
#: log2FoldChange is the log fold change, the Wald ``stat`` carries its sign as limma's t does,
#: pvalue and padj are the raw and BH-adjusted p-values; AveExpr is ``log2(baseMean + 1)``
#: (the mean of the normalised counts on the log2 scale). DESeq2 has no B.
DESEQ2_TO_LIMMA = {
    "log2FoldChange": "logFC",
    "stat": "t",
    "pvalue": "P.Value",
    "padj": "adj.P.Val",
}
DESEQ2_FEATURES = ("logFC", "AveExpr", "t", "P.Value", "adj.P.Val")
#: small, fast default grid over seed 004's RandomForest parameters (seed's best: 50/None/1/2)
DEFAULT_RF_GRID = {
    "n_estimators": [50, 100],
    "max_depth": [None, 10],
    "min_samples_leaf": [1, 2],
    "min_samples_split": [2],
}
MODEL_NAMES = (
    "Random Forest (Tuned)",
    "Logistic Regression",
    "LASSO Logistic Regression",
    "SVM",
    "XGBoost",
)


# --------------------------------------------------------------------------------------------
# Input
# --------------------------------------------------------------------------------------------


def _sniff_sep(path: str) -> str:
    with open(path, newline="") as fh:
        head = fh.readline()
    try:
        return csv.Sniffer().sniff(head, delimiters=",\t;").delimiter
    except csv.Error:
        return "\t" if head.count("\t") > head.count(",") else ","


def load_toptable(
    path: str | os.PathLike[str], columns: Sequence[str] = TOPTABLE_COLUMNS
) -> tuple[pd.DataFrame, int]:
    """Read a limma topTable (CSV, TSV or Parquet) and return ``(table, n_dropped)``.

    A DESeq2 results table (``log2FoldChange`` and no ``logFC``: ``de.method: deseq2``) gets
    limma's columns by :func:`deseq2_as_limma` and is checked for :data:`DESEQ2_FEATURES`
    instead (no B). ``.parquet``/``.pq`` is read as Parquet; ``.csv`` as comma-, ``.tsv``/``.tab`` as
    tab-separated; any other extension is sniffed from the header line. The table must have
    ``columns`` (default logFC, AveExpr, t, P.Value, adj.P.Val, B; an InputError names the
    file and the missing ones). Rows with NaN in those columns are dropped and counted; a
    non-numeric value raises an InputError naming its row.
    """
    p = str(path)
    if not os.path.exists(p):
        raise InputError(path, "file not found")
    low = p.lower()
    try:
        if low.endswith((".parquet", ".pq")):
            df = pd.read_parquet(p)
        else:
            if low.endswith(".csv"):
                sep = ","
            elif low.endswith((".tsv", ".tab")):
                sep = "\t"
            else:
                sep = _sniff_sep(p)
            df = pd.read_csv(p, sep=sep)
    except (ValueError, OSError) as exc:
        raise InputError(path, f"cannot read table: {exc}") from None
    return prepare_toptable(df, path, columns)


def prepare_toptable(
    df: pd.DataFrame,
    path: str | os.PathLike[str],
    columns: Sequence[str] = TOPTABLE_COLUMNS,
    row_offset: int = 0,
) -> tuple[pd.DataFrame, int]:
    """:func:`load_toptable`'s checks and conversions of a table read from ``path`` (or of rows
    ``row_offset`` onwards of it, numbered so in errors): ``(table, n_dropped)``."""
    if tuple(columns) == TOPTABLE_COLUMNS and is_deseq2_table(df.columns):
        need = [*DESEQ2_TO_LIMMA, "baseMean"]
        missing = [c for c in need if c not in df.columns]
        if missing:
            raise InputError(
                path,
                f"a DESeq2 table (it has log2FoldChange) without column(s) {', '.join(missing)} "
                f"(found: {', '.join(map(str, df.columns))})",
            )
        df = deseq2_as_limma(df)
        columns = DESEQ2_FEATURES
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(
            path,
            f"missing column(s) {', '.join(missing)} (found: {', '.join(map(str, df.columns))})",
        )
    parsed = numeric_columns(df, list(columns), path, row_offset)
    for c in columns:
        df[c] = parsed[c]
    ok = df[list(columns)].notna().all(axis=1).to_numpy()
    n_dropped = int((~ok).sum())
    df = df.loc[ok].reset_index(drop=True)
    for c in columns:
        df[c] = df[c].astype(np.float64)
    return df, n_dropped


TOPTABLE_BATCH_ROWS = 1 << 20
"""topTable rows :func:`load_toptable_sample` holds at once besides its sample."""


def load_toptable_sample(
    path: str | os.PathLike[str],
    max_rows: int | None,
    seed: int,
    batch_rows: int = TOPTABLE_BATCH_ROWS,
) -> tuple[pd.DataFrame, int, int]:
    """:func:`load_toptable`, then above ``max_rows`` rows the seeded sample
    ``df.sample(n=max_rows, random_state=seed).sort_index()``: ``(table, rows, n_dropped)``,
    ``rows`` counted before the sample.

    A Parquet topTable is read twice, a row group at a time (count, then keep the sampled
    rows): memory is one batch and the sample, where the whole table (58.9M rows on the
    whole-atlas rehearsal) took over 20 GB. The same rows, values and index as the in-memory
    way (tested); other formats are read whole.
    """
    p = str(path)
    if not p.lower().endswith((".parquet", ".pq")) or not os.path.exists(p):
        df, n_dropped = load_toptable(path)
        n = len(df)
        if max_rows and n > max_rows:
            df = df.sample(n=max_rows, random_state=seed).sort_index()
        return df, n, n_dropped
    pf = tio.parquet_file(path)

    def chunks():
        start = 0
        for batch in tio.read_batches(pf, None, batch_rows):
            yield prepare_toptable(batch.to_pandas(), path, TOPTABLE_COLUMNS, start)
            start += batch.num_rows

    kept, n_dropped = [], 0
    for chunk, dropped in chunks():
        kept.append(len(chunk))
        n_dropped += dropped
    n = sum(kept)
    take = None  # every row
    if max_rows and n > max_rows:  # the rows pandas' sample draws (RandomState.choice)
        take = np.sort(np.random.RandomState(seed).choice(n, size=max_rows, replace=False))
    parts, start = [], 0
    for chunk, _ in chunks():
        pos = np.arange(start, start + len(chunk))
        if take is not None:
            lo, hi = np.searchsorted(take, [start, start + len(chunk)])
            pos = take[lo:hi]
        if pos.size:
            parts.append(chunk.iloc[pos - start].set_axis(pd.Index(pos), axis=0))
        start += len(chunk)
    if not parts:
        return prepare_toptable(pf.schema_arrow.empty_table().to_pandas(), path)[0], n, n_dropped
    df = pd.concat(parts)
    if take is None:
        df.index = pd.RangeIndex(len(df))
    return df, n, n_dropped


def is_deseq2_table(columns: Sequence[str]) -> bool:
    """A DESeq2 results table (``log2FoldChange``) rather than a limma topTable (``logFC``)."""
    cols = set(map(str, columns))
    return "log2FoldChange" in cols and "logFC" not in cols


def deseq2_as_limma(df: pd.DataFrame) -> pd.DataFrame:
    """A DESeq2 table with limma's columns added (:data:`DESEQ2_TO_LIMMA`; ``AveExpr`` =
    ``log2(baseMean + 1)``); DESeq2's own columns stay. Non-numeric values are left to the
    caller's check."""
    out = df.copy()
    for src, dst in DESEQ2_TO_LIMMA.items():
        out[dst] = out[src]
    base = pd.to_numeric(out["baseMean"], errors="coerce")
    out["AveExpr"] = np.log2(base.where(base >= 0) + 1.0)
    return out


def toptable_features(df: pd.DataFrame) -> list[str]:
    """The benchmark's features present in a loaded table: limma's six, or for a DESeq2 table
    the five it has (no B)."""
    return [c for c in DEFAULT_FEATURES if c in df.columns]


def make_target(df: pd.DataFrame) -> np.ndarray:
    """Seed 004's target: 1 for logFC > 0 ('Upregulated'), else 0."""
    return (df["logFC"].to_numpy() > 0).astype(int)


# --------------------------------------------------------------------------------------------
# Deterministic-target detection
# --------------------------------------------------------------------------------------------


def detect_deterministic_target(df: pd.DataFrame, features: Sequence[str]) -> dict:
    """Which features separate the classes perfectly with a single threshold?

    For each feature, the classes are separable when every value of one class is strictly
    below every value of the other (either direction). Returns ``{"per_feature": DataFrame
    (feature, separable, threshold, direction), "separating": [features], "statement": str}``.
    On a limma topTable logFC always separates (threshold 0) and t does too (same sign as
    logFC); B, P.Value and AveExpr do not.
    """
    y = make_target(df)
    rows = []
    for f in features:
        x = df[f].to_numpy(dtype=np.float64)
        x1, x0 = x[y == 1], x[y == 0]
        sep, thr, direction = False, np.nan, ""
        if x1.size and x0.size:
            if x0.max() < x1.min():
                sep, thr, direction = True, (x0.max() + x1.min()) / 2, f"up when {f} > threshold"
            elif x1.max() < x0.min():
                sep, thr, direction = True, (x1.max() + x0.min()) / 2, f"up when {f} < threshold"
        rows.append({"feature": f, "separable": sep, "threshold": thr, "direction": direction})
    table = pd.DataFrame(rows, columns=["feature", "separable", "threshold", "direction"])
    separating = table.loc[table["separable"], "feature"].tolist()
    n_up, n = int(y.sum()), int(y.size)
    if separating:
        first = separating[0]
        parts = [
            f"The target (up = logFC > 0; {n_up} of {n} genes up) is a deterministic function "
            f"of {first}: a single threshold on {first} separates up from down genes perfectly, "
            "so any classifier that sees it reaches ~100% accuracy without learning anything."
        ]
        if len(separating) > 1:
            others = ", ".join(separating[1:])
            parts.append(
                f"The same holds for {others}"
                + (
                    " (the moderated t always has the sign of logFC)."
                    if "t" in separating[1:]
                    else "."
                )
            )
        nonsep = [f for f in features if f not in separating]
        if nonsep:
            parts.append(f"No single threshold separates the classes for {', '.join(nonsep)}.")
        parts.append(
            "High accuracy with these features measures the definition of the target, not "
            "biology; compare with the run without the sign-carrying features."
        )
        statement = " ".join(parts)
    else:
        statement = (
            f"No single feature among {', '.join(features)} separates up from down genes "
            "with one threshold; the target is not a trivial function of one input."
        )
    return {"per_feature": table, "separating": separating, "statement": statement}


def detection_json(detection: dict) -> dict:
    """:func:`detect_deterministic_target`'s result as strict JSON: the per-feature table as
    records, a threshold that does not exist (no separation) as None instead of NaN."""
    out = dict(detection)
    table = detection["per_feature"]
    out["per_feature"] = [
        {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
        for r in table.to_dict(orient="records")
    ]
    return out


# --------------------------------------------------------------------------------------------
# Benchmark
# --------------------------------------------------------------------------------------------

SCORE_COLUMNS = ["model", "test_accuracy", "cv_accuracy_mean", "cv_accuracy_std"]


def skip_reason(df: pd.DataFrame, *, seed: int, test_size: float = 0.2, cv: int = 5) -> str | None:
    """Why the benchmark cannot give a meaningful accuracy on this topTable; None if it can.

    It cannot when the table has no rows (e.g. DE tested nothing, or an external topTable
    holds only a header), when the target has one class only (every gene up or every gene
    down: any accuracy would be 1.0 by construction), or when the rarer class is too small
    for the stratified train/test split and the stratified ``cv``-fold CV on the training
    part (each class needs >= 2 genes on each side, and one class >= ``cv``).
    """
    y = make_target(df)
    n, n_up = int(y.size), int(y.sum())
    if n == 0:
        return "the topTable has no rows (no DE result to classify)"
    if n_up in (0, n):
        side = "up (logFC > 0)" if n_up else "down (logFC <= 0)"
        return (
            f"the target has one class only: all {n} genes are {side}; an accuracy over one "
            "class is meaningless"
        )
    counts = {"up": n_up, "down": n - n_up}
    rare = min(counts, key=counts.get)
    if counts[rare] < 2:
        return (
            f"only {counts[rare]} of {n} genes is {rare}: the stratified train/test split "
            "needs at least 2 genes of each class"
        )
    try:
        _, _, y_tr, _ = train_test_split(
            np.arange(n), y, test_size=test_size, stratify=y, random_state=seed
        )
    except ValueError as exc:
        return f"the stratified train/test split of {n} genes is impossible: {exc}"
    tr = np.bincount(y_tr, minlength=2)
    if tr.min() < 2:
        which = "up" if tr[1] < tr[0] else "down"
        return (
            f"the training split holds {int(tr.min())} {which} gene(s): a stratified CV fold "
            "would train on one class"
        )
    if tr.max() < cv:
        return f"the training split holds {int(tr.sum())} genes, too few for updown.cv_folds={cv}"
    return None


def skipped_benchmark(reason: str, features: Sequence[str] = DEFAULT_FEATURES) -> dict:
    """What :func:`run_both` returns for a topTable :func:`skip_reason` rejects: the reason,
    one score row per model with null accuracies, and empty importance / coefficient tables."""
    nulls = {c: np.nan for c in SCORE_COLUMNS[1:]}
    comp = pd.DataFrame(
        [
            {"model": m, **{f"{c}_{k}": v for k in ("full", "reduced") for c, v in nulls.items()}}
            for m in MODEL_NAMES
        ]
    )
    comp["skipped"] = reason
    return {
        "skipped": reason,
        "detection": {
            "per_feature": pd.DataFrame(columns=["feature", "separable", "threshold", "direction"]),
            "separating": [],
            "statement": f"Up/down benchmark skipped: {reason}.",
            "skipped": reason,
        },
        "full": None,
        "reduced": None,
        "features_full": list(features),
        "features_reduced": [f for f in features if f not in set(SIGN_FEATURES)],
        "comparison": comp,
    }


def _rf_grid(grid: dict | None) -> dict:
    grid = DEFAULT_RF_GRID if grid is None else grid
    return {(k if k.startswith("rf__") else f"rf__{k}"): list(v) for k, v in grid.items()}


def _models(seed: int) -> dict:
    from xgboost import XGBClassifier

    return {
        "Logistic Regression": LogisticRegression(max_iter=1000, random_state=seed),
        "LASSO Logistic Regression": LogisticRegression(
            l1_ratio=1.0, solver="liblinear", C=1.0, max_iter=1000, random_state=seed
        ),
        "SVM": SVC(kernel="rbf", random_state=seed),
        "XGBoost": XGBClassifier(
            tree_method="hist",
            n_estimators=100,
            random_state=seed,
            n_jobs=1,
            eval_metric="logloss",
            verbosity=0,
        ),
    }


def run_benchmark(
    df: pd.DataFrame,
    features: Sequence[str],
    *,
    seed: int,
    test_size: float = 0.2,
    cv: int = 5,
    rf_grid: dict | None = None,
    n_jobs: int = 1,
) -> dict:
    """Seed 004's multi-model benchmark on ``features`` of a topTable.

    Returns a dict with ``scores`` (DataFrame: model, test_accuracy, cv_accuracy_mean,
    cv_accuracy_std), ``rf_best_params``, ``rf_importances`` (feature, importance; sorted),
    ``lasso_coef`` (feature, coef on standardised features), ``pca`` (PC1, PC2, target: the
    scaled features of all rows), ``pca_explained_variance``, ``n_train``, ``n_test``.
    """
    features = list(features)
    missing = [f for f in features if f not in df.columns]
    if missing:
        raise ValueError(f"features not in table: {', '.join(missing)}")
    X = df[features].to_numpy(dtype=np.float64)
    y = make_target(df)
    reason = skip_reason(df, seed=seed, test_size=test_size, cv=cv)
    if reason is not None:  # run_both returns skipped_benchmark(reason) instead of calling this
        raise ValueError(f"up/down benchmark impossible: {reason}")
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_size, stratify=y, random_state=seed
    )
    skf = StratifiedKFold(n_splits=cv, shuffle=True, random_state=seed)

    rows = []
    rf = Pipeline(
        [("scaler", StandardScaler()), ("rf", RandomForestClassifier(random_state=seed, n_jobs=1))]
    )
    gs = GridSearchCV(rf, _rf_grid(rf_grid), cv=skf, scoring="accuracy", n_jobs=n_jobs)
    gs.fit(X_tr, y_tr)
    best = gs.best_index_
    rows.append(
        {
            "model": "Random Forest (Tuned)",
            "test_accuracy": float(gs.score(X_te, y_te)),
            "cv_accuracy_mean": float(gs.cv_results_["mean_test_score"][best]),
            "cv_accuracy_std": float(gs.cv_results_["std_test_score"][best]),
        }
    )
    rf_best = gs.best_estimator_
    importances = pd.DataFrame(
        {"feature": features, "importance": rf_best.named_steps["rf"].feature_importances_}
    ).sort_values("importance", ascending=False, kind="mergesort")

    fitted = {}
    for name, model in _models(seed).items():
        pipe = Pipeline([("scaler", StandardScaler()), ("model", model)])
        cv_scores = cross_val_score(pipe, X_tr, y_tr, cv=skf, scoring="accuracy", n_jobs=n_jobs)
        pipe.fit(X_tr, y_tr)
        fitted[name] = pipe
        rows.append(
            {
                "model": name,
                "test_accuracy": float(pipe.score(X_te, y_te)),
                "cv_accuracy_mean": float(cv_scores.mean()),
                "cv_accuracy_std": float(cv_scores.std()),
            }
        )
    lasso = fitted["LASSO Logistic Regression"].named_steps["model"]
    lasso_coef = pd.DataFrame({"feature": features, "coef": lasso.coef_.ravel()})

    Xs = StandardScaler().fit_transform(X)
    pca = PCA(n_components=min(2, len(features)), random_state=seed)
    pcs = pca.fit_transform(Xs)
    if pcs.shape[1] == 1:
        pcs = np.column_stack([pcs, np.zeros(len(pcs))])
    coords = pd.DataFrame({"PC1": pcs[:, 0], "PC2": pcs[:, 1], "target": y})
    return {
        "scores": pd.DataFrame(
            rows, columns=["model", "test_accuracy", "cv_accuracy_mean", "cv_accuracy_std"]
        ),
        "rf_best_params": {k.removeprefix("rf__"): v for k, v in gs.best_params_.items()},
        "rf_importances": importances.reset_index(drop=True),
        "lasso_coef": lasso_coef,
        "pca": coords,
        "pca_explained_variance": pca.explained_variance_ratio_.tolist(),
        "n_train": int(len(y_tr)),
        "n_test": int(len(y_te)),
    }


def run_both(
    df: pd.DataFrame,
    seed: int,
    features: Sequence[str] = DEFAULT_FEATURES,
    *,
    drop: Sequence[str] = SIGN_FEATURES,
    **kwargs,
) -> dict:
    """Benchmark with all ``features`` and without ``drop`` (logFC, t, B), side by side.

    Returns ``{"detection", "full", "reduced", "comparison"}``; ``comparison`` has per model
    the full and reduced test and CV accuracies (and a ``skipped`` column, empty here).
    ``kwargs`` go to :func:`run_benchmark`. When :func:`skip_reason` says the benchmark would
    be meaningless (no rows, one class, a class too rare to split), nothing is fitted: the
    result is :func:`skipped_benchmark` (``"skipped"`` holds the reason).
    """
    features = list(features)
    reduced = [f for f in features if f not in set(drop)]
    if not reduced:
        raise ValueError("no features left after dropping the sign-carrying ones")
    reason = skip_reason(
        df, seed=seed, test_size=kwargs.get("test_size", 0.2), cv=kwargs.get("cv", 5)
    )
    if reason is not None:
        return skipped_benchmark(reason, features)
    full_res = run_benchmark(df, features, seed=seed, **kwargs)
    red_res = run_benchmark(df, reduced, seed=seed, **kwargs)
    comp = full_res["scores"].merge(red_res["scores"], on="model", suffixes=("_full", "_reduced"))
    comp["skipped"] = ""
    return {
        "detection": detect_deterministic_target(df, features),
        "full": full_res,
        "reduced": red_res,
        "features_full": features,
        "features_reduced": reduced,
        "comparison": comp,
    }


# --------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------


def plot_pca(
    coords: pd.DataFrame | np.ndarray,
    y: np.ndarray | None,
    path: str | os.PathLike[str],
    *,
    title: str = "PCA of scaled features",
) -> None:
    """Scatter of PC1 vs PC2 coloured by up/down (``y``: 1 up, 0 down)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(coords, pd.DataFrame):
        if y is None and "target" in coords.columns:
            y = coords["target"].to_numpy()
        pcs = coords[["PC1", "PC2"]].to_numpy(dtype=np.float64)
    else:
        pcs = np.asarray(coords, dtype=np.float64)[:, :2]
    if y is None:
        raise ValueError("y (up/down labels) is required")
    y = np.asarray(y).astype(int)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for lab, name, col in ((0, "down (logFC <= 0)", "tab:blue"), (1, "up (logFC > 0)", "tab:red")):
        m = y == lab
        ax.scatter(pcs[m, 0], pcs[m, 1], s=6, alpha=0.6, c=col, label=f"{name}, n={int(m.sum())}")
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.set_title(title)
    ax.legend(loc="best", fontsize=8)
    save_figure(fig, path, dpi=120)


def plot_importances(
    importances: pd.DataFrame,
    path: str | os.PathLike[str],
    lasso_coef: pd.DataFrame | None = None,
) -> None:
    """Bar charts of RandomForest importances (and LASSO coefficients when given)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_panels = 1 if lasso_coef is None else 2
    fig, axes = plt.subplots(1, n_panels, figsize=(5 * n_panels, 4), squeeze=False)
    imp = importances.sort_values("importance", ascending=True, kind="mergesort")
    axes[0, 0].barh(imp["feature"].astype(str), imp["importance"], color="tab:green")
    axes[0, 0].set_title("Random Forest feature importance")
    if lasso_coef is not None:
        lc = lasso_coef.iloc[::-1]
        axes[0, 1].barh(lc["feature"].astype(str), lc["coef"], color="tab:purple")
        axes[0, 1].axvline(0, color="k", lw=0.8)
        axes[0, 1].set_title("LASSO logistic coefficients (scaled features)")
    save_figure(fig, path, dpi=120)
