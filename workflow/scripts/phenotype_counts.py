"""Cells per (plate, well, drug, dose, line) for the sensitivity table (results/phenotypes/counts.parquet).

``params.source``: ``cells`` counts the merged cells (the cells that passed the workflow's
filters); ``obs`` streams Tahoe's obs_metadata.parquet by row groups (``params.pass_filter``).
Wells of sample_metadata without any cell (on the data's plates and drugs) get a row with
``n_cells`` 0, so the sensitivity table can say so.
"""

import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.cells.doses import sample_doses
from tahoeflow.logs import run
from tahoeflow.phenotypes.obs import obs_counts
from tahoeflow.phenotypes.sensitivity import COUNT_SCHEMA, add_empty_wells, counts_from_cells_file


def main(smk, log):
    p = smk.params
    path = smk.input.cells
    if p.source == "obs":
        pa.set_cpu_count(max(1, smk.threads))
        counts = obs_counts(path, pass_filter=p.pass_filter, log=log)
    else:
        counts = counts_from_cells_file(path)  # one record batch at a time
    log(f"{path}: {int(counts['n_cells'].sum()):,} cells in {len(counts):,} (well, line) groups")
    if smk.input.samples:
        sm = pq.read_table(smk.input.samples).to_pandas()
        doses = sample_doses(sm, smk.input.samples)
        wells = sm[["sample", "plate", "drug"]].assign(dose_uM=doses.to_numpy())
        n0 = len(counts)
        counts = add_empty_wells(counts, wells, control_drug=p.control_drug)
        if len(counts) > n0:
            log(f"{len(counts) - n0} wells of {smk.input.samples} have no cell")
    table = pa.Table.from_pandas(counts[COUNT_SCHEMA.names], schema=COUNT_SCHEMA,
                                 preserve_index=False)  # fmt: skip
    tio.write_parquet(table, smk.output[0])


run(main, snakemake)  # noqa: F821
