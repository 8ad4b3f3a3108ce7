"""The classifier forest's memory and accuracy against its bound (issue 17).

Fits seed 000's Model 2 pipeline (``classifier_inputs``: drug one-hot, ``mean_log_norm``,
``delta_mean``, ``n_genes``; the rule's preprocessing) on a model sample file, one fresh
process per setting (peak RSS is the process's), one core, and prints a JSON line each: nodes a
tree, the forest's node arrays (MB), fit seconds, train and test accuracy, peak RSS.

    python benchmarks/bench_forest.py --sample <results>/features/model_sample.parquet --trees 10

Settings (``--grid``): ``max_depth/max_leaf_nodes/max_samples`` triples, ``none`` for None.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

GRID = [
    "none/none/0.25", "none/64000/0.25", "none/32000/0.25", "none/16000/0.25",
    "none/4000/0.25", "none/1000/0.25", "20/none/0.25", "16/none/0.25", "12/none/0.25",
    "none/none/0.1",
]  # fmt: skip


def _value(text: str, kind: type) -> int | float | None:
    return None if text == "none" else kind(text)


def fit_one(sample: str, trees: int, setting: str) -> dict:
    """One forest on ``sample`` with ``setting`` (in this process)."""
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    from tahoeflow.models.classification import DEFAULT_RF_FEATURES, classifier_inputs
    from tahoeflow.models.design import tabular_preprocessor
    from tahoeflow.models.sample_file import read_sample

    depth, leaves, rows = setting.split("/")
    depth, leaves, rows = _value(depth, int), _value(leaves, int), _value(rows, float)
    cells, split, _ = read_sample(sample)
    inp = classifier_inputs(
        cells, split, DEFAULT_RF_FEATURES, trees, depth, 0, 0, 1, None, None, rows, None
    )
    d = inp.data
    rf = RandomForestClassifier(n_estimators=trees, max_depth=depth, max_leaf_nodes=leaves,
                                max_samples=rows, random_state=0, n_jobs=1)  # fmt: skip
    model = Pipeline(
        [("pre", tabular_preprocessor(d.categorical, d.numeric, scale=False)), ("rf", rf)]
    )
    t0 = time.perf_counter()
    model.fit(d.X.loc[d.train], inp.y[d.train])
    fit_s = time.perf_counter() - t0
    pred = model.predict(d.X)
    trees_ = [e.tree_ for e in rf.estimators_]
    nbytes = sum(t.node_count * 64 + t.value.nbytes for t in trees_)
    return {
        "trees": trees, "max_depth": depth, "max_leaf_nodes": leaves, "max_samples": rows,
        "n_train": int(d.n_train), "n_classes": len(inp.encoder.classes_),
        "nodes_a_tree": float(np.mean([t.node_count for t in trees_])),
        "deepest": int(max(t.max_depth for t in trees_)), "forest_mb": round(nbytes / 2**20, 1),
        "fit_s": round(fit_s, 1),
        "train_acc": round(float((pred[d.train] == inp.y[d.train]).mean()), 4),
        "test_acc": round(float((pred[d.is_test] == inp.y[d.is_test]).mean()), 4),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", required=True, help="a model_sample.parquet")
    ap.add_argument("--trees", type=int, default=10)
    ap.add_argument("--grid", nargs="+", default=GRID)
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: fit one setting here
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(fit_one(args.sample, args.trees, args.one)), flush=True)
        return 0
    for setting in args.grid:  # a fresh process each: its peak RSS is the setting's
        cmd = [sys.executable, __file__, "--sample", args.sample, "--trees", str(args.trees),
               "--one", setting]  # fmt: skip
        subprocess.run(cmd, check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
