"""Snakemake entry point: the plate manifest of the hub dataset, from the Parquet footers only.

Reads params repo_id, revision, n_files_total, max_retries, timeout_s; writes output[0] (TSV
file, n_rows, plates, first_row; atomic). Uses ``threads`` parallel range reads through
huggingface_hub's file system (HF_ENDPOINT, HF_TOKEN as for the downloads). A missing data
file, a file without a ``plate`` column or an HTTP failure ends the job with one line.
"""

from tahoeflow.logs import run
from tahoeflow.sources.manifest import build_hub_manifest, write_manifest


def main(smk, log):
    p = smk.params
    log(f"manifest of {p.repo_id}@{p.revision}: {p.n_files_total} data files, footers only")
    built = build_hub_manifest(
        p.repo_id, p.revision, int(p.n_files_total),
        workers=int(smk.threads), timeout_s=float(p.timeout_s), max_retries=int(p.max_retries),
        log=log,
    )  # fmt: skip
    write_manifest(built.rows, smk.output[0])
    log(f"wrote {smk.output[0]} (commit {built.commit})")


run(main, snakemake)  # noqa: F821
