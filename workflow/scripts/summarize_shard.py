"""Summarise one shard: per-cell table, gene statistics, pseudobulk, filter counts."""

import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.shards import vocab_from_gene_metadata
from tahoeflow.summarize import Filters, load_shard, sample_doses, summarize


def main(smk, log):
    shard = smk.params.shard
    vocab = vocab_from_gene_metadata(pq.read_table(smk.input.genes), smk.input.genes)
    doses = sample_doses(pq.read_table(smk.input.samples).to_pandas(), smk.input.samples)
    log(f"shard {shard.name}: {smk.input.data} rows {shard.row_start}..{shard.row_stop or 'end'}")
    loaded = load_shard(
        smk.input.data,
        shard,
        vocab,
        doses,
        Filters(**smk.params.filters),
        control_drug=smk.params.control_drug,
        allow_non_integer=smk.params.normalised,
        warn=log,
    )
    log(
        f"read and validated {loaded.filter_counts['input']} rows; kept {loaded.filter_counts['kept']} cells"
    )
    cells, genes, pb = summarize(loaded, vocab)
    log(f"summarised {cells.num_rows} cells, {int(loaded.X.nnz)} stored values")
    tio.write_parquet(cells, smk.output.cells)
    tio.write_parquet(genes, smk.output.genes)
    tio.write_parquet(pb, smk.output.pseudobulk)
    tio.write_json({"shard": shard.name, **loaded.filter_counts}, smk.output.qc)


run(main, snakemake)  # noqa: F821
