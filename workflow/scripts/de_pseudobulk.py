"""Gather the per-line DE parts: one topTable, a table-wide FDR, skips, calls, metrics, volcano.
Streamed: the parts are merged row group by row group (tahoeflow.de.gather), never held."""

import sys

import numpy as np
import pandas as pd

from tahoeflow import io as tio
from tahoeflow.de.gather import CallCounts, gather_toptables, read_conditions, up_down_table
from tahoeflow.de.pipeline import untested_reason
from tahoeflow.de.tables import (
    CONDITION_KEYS,
    SKIPPED_COLUMNS,
    stat_columns,
    table_schema,
    top_conditions,
)
from tahoeflow.de.truth import score_calls
from tahoeflow.logs import run
from tahoeflow.plots import report as rp

CALL_COLUMN = {"global": "adj.P.Val.global", "contrast": "adj.P.Val"}


def main(smk, log):
    p = smk.params
    names = stat_columns(p.method)
    lfc, per_contrast = names["logFC"], names["adj.P.Val"]
    call_col = CALL_COLUMN[p.calls_by] if p.method != "deseq2" or p.calls_by == "global" else "padj"
    calls = CallCounts(p.method, call_col, p.alpha)
    n_rows = gather_toptables(smk.input.parts, smk.output.toptable, table_schema(p.method),
                              names["P.Value"], on_chunk=calls.add)  # fmt: skip
    per = calls.table()
    frames = [pd.read_csv(f) for f in smk.input.skipped]
    skipped = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    skipped = skipped.sort_values(CONDITION_KEYS, kind="mergesort").reset_index(drop=True)
    n_contrasts = len(per)
    log(f"{len(smk.input.parts)} parts: {n_contrasts} contrasts, {n_rows} rows; "
        f"{len(skipped)} skip rows")  # fmt: skip
    tio.write_csv(skipped[SKIPPED_COLUMNS], smk.output.skipped)
    tio.write_csv(up_down_table(per, call_col), smk.output.counts)
    metrics = {
        "method": p.method,
        "n_contrasts": int(n_contrasts),
        "n_tests": int(n_rows),
        "alpha": p.alpha,
        "call_column": call_col,
        "n_called": int(per["n_called"].sum()),
        "n_called_by": {
            per_contrast: int(per["n_contrast_calls"].sum()),
            "adj.P.Val.global": int(per["n_global_calls"].sum()),
        },
        "n_skip_rows": int(len(skipped)),
        "n_contrasts_skipped": int((skipped["what"] == "contrast").sum()),
    }
    if n_rows == 0:  # nothing tested: the outputs are empty tables, and the metrics say why
        groups = pd.read_parquet(smk.input.groups)
        metrics["skipped"] = untested_reason(groups, skipped, p.control)
        line = f"WARNING: {smk.output.toptable}: DE skipped, {metrics['skipped']}"
        log(line)
        print(line, file=sys.stderr)
    elif smk.input.truth:  # the demo's simulated truth: a demo-sized table, read whole
        top = pd.read_parquet(
            smk.output.toptable,
            columns=[*CONDITION_KEYS, "gene", per_contrast, "adj.P.Val.global"],
        )
        truth = pd.read_parquet(smk.input.truth)
        metrics["vs_truth"] = {
            col: score_calls(top, truth, alpha=p.alpha, padj_col=col)
            for col in (per_contrast, "adj.P.Val.global")
        }
        del top
        log(f"against the demo's truth: {metrics['vs_truth']}")
    tio.write_json(metrics, smk.output.metrics)
    # volcano: the conditions with the most calls by the table-wide FDR, genes named by symbol;
    # only their rows are read back
    conds = top_conditions(per, p.top_volcano)
    cols = [*CONDITION_KEYS[:3], "gene", "gene_symbol", lfc, names["P.Value"], per_contrast,
            "adj.P.Val.global"]  # fmt: skip
    view = read_conditions(smk.output.toptable, conds, cols)
    view = view.rename(columns={v: k for k, v in names.items() if v != k})
    rp.volcano(view, conds, smk.output.volcano, alpha=p.alpha, padj_col="adj.P.Val.global",
               label_col="gene_symbol")  # fmt: skip
    np.seterr(all="ignore")


run(main, snakemake)  # noqa: F821
