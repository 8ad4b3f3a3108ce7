"""Phase fractions and the G-arrest index per (line, drug, dose, plate) and pooled, vs DMSO.

The phases are the workflow's own scores (cell_cycle_batch) or, with
phenotypes.sensitivity.from: obs, the phases Tahoe's obs_metadata carries for every cell.
"""

import json
import sys

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.phenotypes import cellcycle as cc


def main(smk, log):
    def warn(message):  # one line, to the job log and to stderr
        log(message)
        print(message, file=sys.stderr, flush=True)

    p = smk.params
    if hasattr(smk.input, "obs"):
        counts, why = cc.obs_phase_counts(
            smk.input.obs, control_drug=p.control_drug, pass_filter=p.pass_filter, log=log
        )
        draw = {"source": "obs_metadata"} if why is None else {"skipped": why}
        if counts is None:
            counts = cc.phase_counts(cc.empty_cells())
    else:
        draw = json.loads(open(smk.input.draw).read())
        cols = [*cc.KEYS, "is_control", "phase"]
        counts = pd.concat(
            [cc.phase_counts(pq.read_table(f, columns=cols).to_pandas()) for f in smk.input.scores],
            ignore_index=True,
        )
    n_phase = {ph: int(counts[f"n_{ph}"].sum()) for ph in cc.PHASES}
    table = cc.arrest_table(counts, pseudocount=p.pseudocount, min_cells=p.min_cells)
    tio.write_parquet(pa.Table.from_pandas(table, preserve_index=False), smk.output.table)
    metrics = cc.summary(table, n_phase, draw, p.alpha)
    if "skipped" in metrics:
        warn(f"WARNING: {smk.output.table}: cell-cycle arrest skipped, {metrics['skipped']}")
    no_dmso = int(table["qc"].str.startswith("no ").sum())
    if no_dmso:
        warn(f"WARNING: {smk.output.table}: {no_dmso} row(s) have no DMSO cells of their cell "
             "line on the plate(s): no G-arrest index (qc column)")  # fmt: skip
    tio.write_json(metrics, smk.output.metrics)
    cc.plot_arrest(table, smk.output.figure, p.alpha, reason=metrics.get("skipped"))
    log(f"{len(table)} rows; phases {n_phase}")


run(main, snakemake)  # noqa: F821
