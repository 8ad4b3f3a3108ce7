"""Snakemake entry point: stream one chunk of the hub dataset into a local Parquet file.

Reads params repo_id, revision, n_files_total, row_start, row_stop and source (the data files
holding the rows and the global index of their first row, from the manifest; empty: stream
from the start); writes output[0] atomically (absent unless whole). A missing column, a
revision that does not exist or data that end before row_stop end the job with one line.
"""

from tahoeflow.errors import config_keys
from tahoeflow.logs import run
from tahoeflow.sources.stream import stream_rows, write_chunk


def main(smk, log):
    p = smk.params
    with config_keys(row_stop="source.stream"):  # the data end before the rows asked for
        table = stream_rows(
            p.repo_id, p.revision, int(p.row_start), int(p.row_stop),
            n_files_total=int(p.n_files_total), files=p.source["files"] or None,
            first_row=int(p.source["first_row"]), log=log,
        )  # fmt: skip
    write_chunk(table, smk.output[0])
    log(f"wrote {table.num_rows} rows to {smk.output[0]}")


run(main, snakemake)  # noqa: F821
