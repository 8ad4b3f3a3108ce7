"""Gather the per-line DE parts: one topTable, a table-wide FDR, skips, calls, metrics, volcano."""

import sys

import numpy as np
import pandas as pd
import pyarrow as pa

from tahoeflow import io as tio
from tahoeflow.de.pipeline import untested_reason
from tahoeflow.de.tables import (
    CONDITION_KEYS,
    SKIPPED_COLUMNS,
    global_adjust,
    stat_columns,
    table_schema,
    volcano_conditions,
)
from tahoeflow.de.truth import score_calls
from tahoeflow.logs import run
from tahoeflow.plots import report as rp

CALL_COLUMN = {"global": "adj.P.Val.global", "contrast": "adj.P.Val"}


def main(smk, log):
    p = smk.params
    schema = table_schema(p.method)
    parts = [pd.read_parquet(f) for f in smk.input.parts]
    top = pd.concat(parts, ignore_index=True) if parts else schema.empty_table().to_pandas()
    top = top.sort_values([*CONDITION_KEYS, "gene"], kind="mergesort").reset_index(drop=True)
    top = global_adjust(top, p.method)  # BH over every test of the whole table
    frames = [pd.read_csv(f) for f in smk.input.skipped]
    skipped = pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
    skipped = skipped.sort_values(CONDITION_KEYS, kind="mergesort").reset_index(drop=True)
    n_contrasts = top[CONDITION_KEYS].drop_duplicates().shape[0]
    log(f"{len(parts)} parts: {n_contrasts} contrasts, {len(top)} rows; {len(skipped)} skip rows")
    tio.write_parquet(pa.Table.from_pandas(top, schema=schema, preserve_index=False),
                      smk.output.toptable)  # fmt: skip
    tio.write_csv(skipped[SKIPPED_COLUMNS], smk.output.skipped)

    names = stat_columns(p.method)
    lfc, per_contrast = names["logFC"], names["adj.P.Val"]
    call_col = CALL_COLUMN[p.calls_by] if p.method != "deseq2" or p.calls_by == "global" else "padj"
    called = top[top[call_col] < p.alpha]
    ud = (
        top[CONDITION_KEYS].drop_duplicates()
        .merge(called[called[lfc] > 0].groupby(CONDITION_KEYS).size().rename("n_up").reset_index(), how="left")
        .merge(called[called[lfc] < 0].groupby(CONDITION_KEYS).size().rename("n_down").reset_index(), how="left")
        .fillna({"n_up": 0, "n_down": 0})
        .astype({"n_up": int, "n_down": int})
    )  # fmt: skip
    ud["call_column"] = call_col
    ud = ud.sort_values(CONDITION_KEYS).reset_index(drop=True)
    tio.write_csv(ud, smk.output.counts)
    metrics = {
        "method": p.method,
        "n_contrasts": int(n_contrasts),
        "n_tests": int(len(top)),
        "alpha": p.alpha,
        "call_column": call_col,
        "n_called": int(len(called)),
        "n_called_by": {
            per_contrast: int((top[per_contrast] < p.alpha).sum()),
            "adj.P.Val.global": int((top["adj.P.Val.global"] < p.alpha).sum()),
        },
        "n_skip_rows": int(len(skipped)),
        "n_contrasts_skipped": int((skipped["what"] == "contrast").sum()),
    }
    if top.empty:  # nothing tested: the outputs are empty tables, and the metrics say why
        groups = pd.read_parquet(smk.input.groups)
        metrics["skipped"] = untested_reason(groups, skipped, p.control)
        line = f"WARNING: {smk.output.toptable}: DE skipped, {metrics['skipped']}"
        log(line)
        print(line, file=sys.stderr)
    elif smk.input.truth:
        truth = pd.read_parquet(smk.input.truth)
        metrics["vs_truth"] = {
            col: score_calls(top, truth, alpha=p.alpha, padj_col=col)
            for col in (per_contrast, "adj.P.Val.global")
        }
        log(f"against the demo's truth: {metrics['vs_truth']}")
    tio.write_json(metrics, smk.output.metrics)
    # volcano: the conditions with the most calls by the table-wide FDR, genes named by symbol
    conds = volcano_conditions(top, p.top_volcano, p.alpha)
    view = top.rename(columns={v: k for k, v in names.items() if v != k})
    rp.volcano(view, conds, smk.output.volcano, alpha=p.alpha, padj_col="adj.P.Val.global",
               label_col="gene_symbol")  # fmt: skip
    np.seterr(all="ignore")


run(main, snakemake)  # noqa: F821
