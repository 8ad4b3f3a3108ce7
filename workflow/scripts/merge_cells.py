"""Merge per-shard cell tables; add delta_mean against DMSO of the same line and plate."""

import json

import pandas as pd

from tahoeflow import io as tio
from tahoeflow.errors import InputError
from tahoeflow.logs import run
from tahoeflow.merge import merge_cells


def main(smk, log):
    qc = pd.DataFrame([json.loads(open(p).read()) for p in smk.input.qc]).fillna(0)
    total = qc.drop(columns="shard").sum(numeric_only=True)
    if total["kept"] == 0:
        steps = [c for c in qc.columns if c.startswith("removed_by_")]
        last = [s for s in steps if total[s] > 0]
        detail = ", ".join(
            f"{s.removeprefix('removed_by_')} removed {int(total[s])}" for s in steps
        )
        culprit = (
            f"filters.{last[-1].removeprefix('removed_by_')}" if last else "the input (no rows)"
        )
        raise InputError(
            "filters",
            f"zero cells left after the filters ({int(total['input'])} read; {detail}); the last cells were removed by {culprit}",
        )
    tio.write_csv(
        pd.concat([qc, total.to_frame().T.assign(shard="total")], ignore_index=True),
        smk.output.filter_qc,
    )
    log(f"merging {len(smk.input.cells)} shards, {int(total['kept'])} cells")
    counts = merge_cells(smk.input.cells, smk.output.cells, smk.output.control_qc)
    log(f"delta_mean control level counts: {counts}")


run(main, snakemake)  # noqa: F821
