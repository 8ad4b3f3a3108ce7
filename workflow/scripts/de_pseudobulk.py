"""Pseudobulk DE of every (drug, dose, cell line) against DMSO of the same line and plate."""

import sys

import numpy as np
import pandas as pd
import pyarrow as pa

from tahoeflow import io as tio
from tahoeflow import report as rp
from tahoeflow.conditions import pseudobulk_matrix
from tahoeflow.de import TOPTABLE_SCHEMA, pseudobulk_de, score_calls, untested_reason
from tahoeflow.logs import run


def main(smk, log):
    p = smk.params
    groups = pd.read_parquet(smk.input.groups)
    counts = pd.read_parquet(smk.input.counts)
    tokens = pd.read_parquet(smk.input.genes, columns=["token_id"])["token_id"].to_numpy()
    X = pseudobulk_matrix(counts, groups, tokens)
    log(f"pseudobulk: {X.shape[0]} wells x {X.shape[1]} genes, {X.nnz} non-zero")
    top, skipped = pseudobulk_de(
        X, groups, tokens, p.min_cells, method=p.method, min_control_wells=p.min_control_wells, prior_count=p.prior_count,
        control=p.control, return_skipped=True,
    )  # fmt: skip
    log(
        f"{top[['drug', 'dose_uM', 'cell_line_id', 'plate']].drop_duplicates().shape[0]} contrasts, {len(top)} rows; {len(skipped)} skipped"
    )
    tio.write_parquet(
        pa.Table.from_pandas(top, schema=TOPTABLE_SCHEMA, preserve_index=False),
        smk.output.toptable,
    )
    tio.write_csv(skipped, smk.output.skipped)
    called = top[top["adj.P.Val"] < p.alpha]
    keys = ["drug", "dose_uM", "cell_line_id", "plate"]
    ud = (
        top[keys].drop_duplicates()
        .merge(called[called["logFC"] > 0].groupby(keys).size().rename("n_up").reset_index(), how="left")
        .merge(called[called["logFC"] < 0].groupby(keys).size().rename("n_down").reset_index(), how="left")
        .fillna({"n_up": 0, "n_down": 0})
        .astype({"n_up": int, "n_down": int})
    )  # fmt: skip
    ud = ud.sort_values(["drug", "dose_uM", "cell_line_id", "plate"]).reset_index(drop=True)
    tio.write_csv(ud, smk.output.counts)
    metrics = {
        "n_contrasts": int(len(ud)),
        "n_tests": int(len(top)),
        "n_called": int(len(called)),
        "alpha": p.alpha,
    }
    if top.empty:  # nothing tested: the outputs are empty tables, and the metrics say why
        metrics["skipped"] = untested_reason(groups, skipped, p.control)
        line = f"WARNING: {smk.output.toptable}: DE skipped, {metrics['skipped']}"
        log(line)
        print(line, file=sys.stderr)
    elif smk.input.truth:
        truth = pd.read_parquet(smk.input.truth)
        metrics["vs_truth"] = score_calls(top, truth, alpha=p.alpha)
        log(f"against the demo's truth: {metrics['vs_truth']}")
    tio.write_json(metrics, smk.output.metrics)
    order = (ud["n_up"] + ud["n_down"]).to_numpy().argsort(kind="stable")[::-1][: p.top_volcano]
    conds = [
        tuple(r)
        for r in ud.iloc[order][["drug", "dose_uM", "cell_line_id"]].itertuples(index=False)
    ]
    rp.volcano(top, conds, smk.output.volcano, alpha=p.alpha)
    np.seterr(all="ignore")


run(main, snakemake)  # noqa: F821
