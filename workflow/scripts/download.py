"""Snakemake entry point: fetch one file of the hub repo to output[0], verified by sha256.

Reads only the ``snakemake`` object (params repo_id, revision, filename, cache_dir,
max_retries, timeout_s; output[0]; log[0]). The token comes from HF_TOKEN via
huggingface_hub and is never logged; the endpoint from HF_ENDPOINT.
"""

import time
from pathlib import Path

from tahoeflow.hub import fetch_file

params = snakemake.params
with open(snakemake.log[0], "w") as log_fh:

    def log(msg: str) -> None:
        log_fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}\n")
        log_fh.flush()

    log(f"download {params.filename} from {params.repo_id}@{params.revision}")
    try:
        fetch_file(
            params.repo_id,
            params.filename,
            params.revision,
            Path(snakemake.output[0]),
            cache_dir=Path(params.cache_dir) if params.cache_dir else None,
            max_retries=int(params.max_retries),
            timeout_s=float(params.timeout_s),
            log=log,
        )
    except Exception as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        raise
