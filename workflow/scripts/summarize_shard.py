"""Summarise one shard: per-cell table, gene statistics, pseudobulk, filter counts."""

from pathlib import Path

from tahoeflow import io as tio
from tahoeflow.cells.summarize import summarize
from tahoeflow.logs import run
from tahoeflow.workflow_io import as_shard, load_filtered_shard


def main(smk, log):
    shard = as_shard(smk.params.shard)
    log(f"shard {shard.name}: {smk.input.data} rows {shard.row_start}..{shard.row_stop or 'end'}")
    loaded, vocab = load_filtered_shard(smk, log)
    cells, genes, pb = summarize(loaded, vocab)
    log(f"summarised {cells.num_rows} cells, {int(loaded.X.nnz)} stored values")
    tio.write_parquet(cells, smk.output.cells)
    tio.write_parquet(genes, smk.output.genes)
    tio.write_parquet(pb, smk.output.pseudobulk)
    # file, zero_count_rows and values_seen let the merge warn about a file of zeros and about
    # filter values that match nothing in any shard (summarize.filter_warnings). The file's
    # name only: outputs hold no machine paths (the same data give the same bytes anywhere).
    tio.write_json(
        {
            "shard": shard.name,
            "file": Path(smk.input.data).name,
            **loaded.filter_counts,
            "zero_count_rows": loaded.zero_count_rows,
            "values_seen": loaded.values_seen,
        },
        smk.output.qc,
    )


run(main, snakemake)  # noqa: F821
