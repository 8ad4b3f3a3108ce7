"""Snakemake entry point: fetch one file of the hub repo to output[0], verified by sha256.

Reads only the ``snakemake`` object (params repo_id, revision, filename, cache_dir,
max_retries, timeout_s; output[0]; log[0]). The token comes from HF_TOKEN via
huggingface_hub and is never logged; the endpoint from HF_ENDPOINT. A failed download ends
the job with one line ``ERROR: <file> ...: <problem>`` (sha256 mismatch, HTTP status, ...),
and so does a metadata table that lacks a column the workflow reads (a table of another
revision, with columns renamed or missing; the file is removed).
"""

from pathlib import Path

from tahoeflow.errors import InputError
from tahoeflow.logs import run
from tahoeflow.sources.hub import HubError, fetch_file
from tahoeflow.sources.manifest import check_metadata_columns


def main(smk, log):
    p = smk.params
    log(f"download {p.filename} from {p.repo_id}@{p.revision}")
    try:
        fetch_file(
            p.repo_id, p.filename, p.revision, Path(smk.output[0]),
            cache_dir=Path(p.cache_dir) if p.cache_dir else None,
            max_retries=int(p.max_retries), timeout_s=float(p.timeout_s), log=log,
        )  # fmt: skip
    except HubError as e:  # already scrubbed of secrets; one line, no library traceback
        raise InputError(
            f"{e.filename} (repo {e.repo_id}, revision {e.revision})", e.problem
        ) from None
    if p.filename.startswith("metadata/"):  # a table of another revision fails here, once
        kind = Path(p.filename).name.removesuffix("_metadata.parquet")
        try:
            check_metadata_columns(smk.output[0], kind)
        except InputError as e:
            Path(smk.output[0]).unlink(missing_ok=True)
            where = f"{p.filename} (repo {p.repo_id}, revision {p.revision})"
            raise InputError(where, e.problem) from None


run(main, snakemake)  # noqa: F821
