"""Summarise a group of shards (one, by default), one shard at a time: per-cell table, gene
statistics, pseudobulk, filter counts (tahoeflow.merge.shard_group: the group's layout)."""

from pathlib import Path

from tahoeflow.cells.summarize import summarize
from tahoeflow.logs import run
from tahoeflow.merge.shard_group import write_group
from tahoeflow.workflow_io import as_shard, data_paths, load_filtered_shard


def shard_summaries(smk, log):
    for record, path, file_rows in zip(
        smk.params.shards, data_paths(smk), smk.params.file_rows, strict=True
    ):
        shard = as_shard(record)
        log(f"shard {shard.name}: {path} rows {shard.row_start}..{shard.row_stop or 'end'}")
        loaded, vocab = load_filtered_shard(
            smk, log, shard=shard, data_path=path, file_rows=file_rows
        )
        cells, genes, pb = summarize(loaded, vocab)
        log(f"summarised {cells.num_rows} cells, {int(loaded.X.nnz)} stored values")
        # file, zero_count_rows and values_seen let the merge warn about a file of zeros and
        # about filter values that match nothing in any shard (summarize.filter_warnings).
        # The file's name only: outputs hold no machine paths (the same data give the same
        # bytes anywhere).
        qc = {
            "shard": shard.name,
            "file": Path(path).name,
            **loaded.filter_counts,
            "zero_count_rows": loaded.zero_count_rows,
            "values_seen": loaded.values_seen,
        }
        del loaded  # the next shard is read while this generator's frame lives on
        yield shard.name, cells, genes, pb, qc
        del cells, genes, pb


def main(smk, log):
    out = {k: smk.output[k] for k in ("cells", "genes", "pseudobulk", "qc")}
    n = write_group(shard_summaries(smk, log), out)
    log(f"{n} shard(s) written")


run(main, snakemake)  # noqa: F821
