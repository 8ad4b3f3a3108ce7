"""Drug sensitivity from cell counts (results/phenotypes/sensitivity.parquet; docs/data_contract.md)."""

import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.phenotypes.sensitivity import (
    QC_OK,
    condition_counts,
    sensitivity_arrow,
    sensitivity_table,
)


def main(smk, log):
    p = smk.params
    counts = pq.read_table(smk.input[0]).to_pandas()
    cond, wells = condition_counts(counts)
    table = sensitivity_table(
        cond, wells, control_drug=p.control_drug, pseudocount=float(p.pseudocount)
    )
    tio.write_parquet(sensitivity_arrow(table), smk.output[0])
    for level, t in table.groupby("level"):
        bad = t.loc[t["qc"] != QC_OK, "qc"].value_counts()
        sig = int((t["qvalue"] < 0.05).sum())
        log(f"{level}: {len(t):,} rows, {sig:,} with q < 0.05; not ok: {bad.to_dict()}")


run(main, snakemake)  # noqa: F821
