"""Seed 002's embeddings CSV, streamed from the Parquet table one row group at a time."""

from tahoeflow import io as tio
from tahoeflow.logs import run


def main(smk, log):
    n = tio.parquet_to_csv(smk.input[0], smk.output[0])
    log(f"{n} cells written to {smk.output[0]}")


run(main, snakemake)  # noqa: F821
