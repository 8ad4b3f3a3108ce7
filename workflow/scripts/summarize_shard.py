"""Summarise one shard: per-cell table, gene statistics, pseudobulk, filter counts."""

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.summarize import summarize
from tahoeflow.workflow_io import load_filtered_shard


def main(smk, log):
    shard = smk.params.shard
    log(f"shard {shard.name}: {smk.input.data} rows {shard.row_start}..{shard.row_stop or 'end'}")
    loaded, vocab = load_filtered_shard(smk, log)
    cells, genes, pb = summarize(loaded, vocab)
    log(f"summarised {cells.num_rows} cells, {int(loaded.X.nnz)} stored values")
    tio.write_parquet(cells, smk.output.cells)
    tio.write_parquet(genes, smk.output.genes)
    tio.write_parquet(pb, smk.output.pseudobulk)
    tio.write_json({"shard": shard.name, **loaded.filter_counts}, smk.output.qc)


run(main, snakemake)  # noqa: F821
