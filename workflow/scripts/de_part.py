"""Pseudobulk DE of the cell lines of one part (a contrast never crosses lines): one job each."""

import pyarrow as pa

from tahoeflow import io as tio
from tahoeflow.de.parts import read_pseudobulk_part
from tahoeflow.de.pipeline import pseudobulk_de
from tahoeflow.de.tables import SKIPPED_COLUMNS, table_schema
from tahoeflow.logs import run


def main(smk, log):
    p = smk.params
    part = int(smk.wildcards.part)
    X, groups, genes, lines = read_pseudobulk_part(
        smk.input.counts, smk.input.groups, smk.input.genes, part, p.n_parts
    )
    log(f"part {part} of {p.n_parts}: cell lines {lines}; {X.shape[0]} wells x {X.shape[1]} genes")
    top, skipped = pseudobulk_de(
        X, groups, genes["token_id"].to_numpy(), p.min_cells, method=p.method,
        min_control_wells=p.min_control_wells, prior_count=p.prior_count,
        gene_filter=p.voom["gene_filter"], voom_axis=p.voom["axis"], voom_fitted=p.voom["fitted"],
        control=p.control, pool_plates=p.pool_plates, genes=genes, return_skipped=True,
    )  # fmt: skip
    n_con = top[["drug", "dose_uM", "cell_line_id", "plate"]].drop_duplicates().shape[0]
    log(f"{n_con} contrasts, {len(top)} rows; {len(skipped)} skip rows")
    tio.write_parquet(
        pa.Table.from_pandas(top, schema=table_schema(p.method), preserve_index=False),
        smk.output.table,
    )
    tio.write_csv(skipped[SKIPPED_COLUMNS], smk.output.skipped)


run(main, snakemake)  # noqa: F821
