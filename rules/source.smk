# Inputs: the simulated demo dataset, or verified downloads from the hub. A local mirror
# (source.kind local) needs no rule: its files are the inputs. Each source's rules exist only when
# that source is chosen, so no rule can name a user's file as an output (Snakemake deletes a
# rule's outputs before it reruns it); common.smk checks the config's input paths as well.

from tahoeflow.sources.manifest import hub_manifest_path, read_first_rows
from tahoeflow.sources.stream import STREAM_ROOT, stream_source

DEMO_ROOT = f"{R}/demo"
# Tahoe-100M's real metadata tables (committed; REAL_META_DIR, rules/common.smk): the demo
# simulates expression on this design. Their content digest is the tracked param (the folder's
# path differs between checkouts).


if PLAN.kind == "demo":
    from tahoeflow.sources.demo_tables import real_metadata_digest

    REAL_META_DIGEST = real_metadata_digest(REAL_META_DIR)

    rule demo_metadata:
        output:
            gene=f"{DEMO_ROOT}/metadata/gene_metadata.parquet",
            sample=f"{DEMO_ROOT}/metadata/sample_metadata.parquet",
            drug=f"{DEMO_ROOT}/metadata/drug_metadata.parquet",
            cell_line=f"{DEMO_ROOT}/metadata/cell_line_metadata.parquet",
            effects=f"{DEMO_ROOT}/truth/effects.parquet",
            params=f"{DEMO_ROOT}/truth/params.json",
            cells=f"{DEMO_ROOT}/truth/cells.parquet",
        log:
            f"{R}/logs/demo/metadata.log",
        localrule: True
        conda:
            "../envs/tahoeflow.yaml"
        threads: 1
        resources:
            mem_mb=mem_mb(200),
            runtime=10,
        params:
            demo=config["demo"],
            real_metadata=REAL_META_DIGEST,
            metadata_dir=untracked(REAL_META_DIR),
        script:
            "../workflow/scripts/demo_metadata.py"

    rule demo_file:
        output:
            f"{DEMO_ROOT}/data/train-{{file}}-of-{{total}}.parquet",
        log:
            f"{R}/logs/demo/file_{{file}}-of-{{total}}.log",
        benchmark:
            f"{R}/benchmarks/demo/file_{{file}}-of-{{total}}.tsv"
        conda:
            "../envs/tahoeflow.yaml"
        threads: 1
        resources:
            mem_mb=mem_mb(300 + 0.11 * config["demo"]["cells_per_file"]),
            runtime=lambda wc: 5 + config["demo"]["cells_per_file"] // 5000,
        params:
            demo=config["demo"],
            real_metadata=REAL_META_DIGEST,
            metadata_dir=untracked(REAL_META_DIR),
            file_index=lambda wc: int(wc.file),
        script:
            "../workflow/scripts/demo_file.py"


HUB = config["source"]["hub"]


if PLAN.kind == "hub":

    rule download_data:
        output:
            f"{HUB['download_dir']}/{HUB['revision']}/data/train-{{file}}-of-{{total}}.parquet",
        log:
            f"{R}/logs/download/train-{{file}}-of-{{total}}.log",
        localrule: HUB["download_on_submit_host"]
        conda:
            "../envs/tahoeflow.yaml"
        threads: 1
        resources:
            mem_mb=mem_mb(250),
            runtime=30,
        params:
            repo_id=HUB["repo_id"],
            revision=HUB["revision"],
            filename=lambda wc: f"data/train-{wc.file}-of-{wc.total}.parquet",
            # transport settings cannot change a verified file: not rerun triggers
            cache_dir=untracked(HUB["cache_dir"]),
            max_retries=untracked(HUB["max_retries"]),
            timeout_s=untracked(HUB["timeout_s"]),
        script:
            "../workflow/scripts/download.py"


# The metadata tables the run reads: all four for the hub and stream sources; for source.kind obs
# (no expression files) sample_metadata (wells without cells) and drug_metadata (MoA labels),
# downloaded beside obs_metadata unless phenotypes.obs.path names a local copy.
OBS_FROM_HUB = (
    config["phenotypes"]["sensitivity"]["from"] == "obs"
    and not config["phenotypes"]["obs"]["path"]
)
HUB_META = (
    METADATA_KINDS
    if PLAN.kind in ("hub", "stream")
    else ("sample", "drug") if PLAN.kind == "obs" and OBS_FROM_HUB else ()
)


if HUB_META:

    rule download_metadata:
        output:
            f"{HUB['download_dir']}/{HUB['revision']}/metadata/{{kind}}_metadata.parquet",
        log:
            f"{R}/logs/download/{{kind}}_metadata.log",
        localrule: HUB["download_on_submit_host"]
        conda:
            "../envs/tahoeflow.yaml"
        threads: 1
        resources:
            mem_mb=mem_mb(250),
            runtime=30,
        params:
            repo_id=HUB["repo_id"],
            revision=HUB["revision"],
            filename=lambda wc: f"metadata/{wc.kind}_metadata.parquet",
            # transport settings cannot change a verified file: not rerun triggers
            cache_dir=untracked(HUB["cache_dir"]),
            max_retries=untracked(HUB["max_retries"]),
            timeout_s=untracked(HUB["timeout_s"]),
        script:
            "../workflow/scripts/download.py"

    # `snakemake --cores 4 download_all` on a host with internet fetches every file the run
    # needs; a later run (e.g. on SLURM compute nodes without internet) plans no download.
    rule download_all:
        input:
            [PLAN.data_path(f) for f in PLAN.files],
            [raw_meta(k) for k in HUB_META],
            [obs_hub_path()] if OBS_FROM_HUB else [],
        localrule: True


if PLAN.kind in ("hub", "stream"):

    # The plate manifest (file, n_rows, plates, first_row) of all data files at this revision,
    # from the Parquet footers alone (HTTP range reads, kilobytes per file). Not part of `all`:
    # run `snakemake manifest` once; the plan reads it at parse time when it exists
    # (filters.plates then plans only the files holding those plates; exact row counts).
    rule manifest:
        output:
            hub_manifest_path(HUB["download_dir"], HUB["revision"]),
        log:
            f"{R}/logs/download/manifest.log",
        localrule: True
        conda:
            "../envs/tahoeflow.yaml"
        threads: 8
        resources:
            mem_mb=mem_mb(1000),
            runtime=60,
        params:
            repo_id=HUB["repo_id"],
            revision=HUB["revision"],
            n_files_total=HUB["n_files_total"],
            # transport settings cannot change the footers read: not rerun triggers
            max_retries=untracked(HUB["max_retries"]),
            timeout_s=untracked(HUB["timeout_s"]),
        script:
            "../workflow/scripts/manifest.py"


# source.kind stream: each chunk of the row range is streamed with `datasets` into a local
# Parquet file (named by its global rows), then read like any data file.
if PLAN.kind == "stream":
    STREAM_ROWS = read_first_rows(PLAN.manifest) if PLAN.manifest else None

    rule stream_shard:
        output:
            f"{STREAM_ROOT}/{HUB['revision']}/rows-{{start}}-{{stop}}.parquet",
        log:
            f"{R}/logs/stream/rows-{{start}}-{{stop}}.log",
        wildcard_constraints:
            start=r"\d{12}",
            stop=r"\d{12}",
        localrule: HUB["download_on_submit_host"]
        conda:
            "../envs/tahoeflow.yaml"
        threads: 1
        resources:
            mem_mb=mem_mb(1000, 0.04, size=stream_rows),
            runtime=lambda wc: 10 + (int(wc.stop) - int(wc.start)) // 2000,
        params:
            repo_id=HUB["repo_id"],
            revision=HUB["revision"],
            n_files_total=HUB["n_files_total"],
            row_start=lambda wc: int(wc.start),
            row_stop=lambda wc: int(wc.stop),
            # the data files holding the chunk's rows, from the manifest's first_row column
            # (none: stream from the start); a function of output, so Snakemake does not
            # record it: it cannot change the rows
            source=lambda wc, output: stream_source(
                STREAM_ROWS, HUB["n_files_total"], int(wc.start), int(wc.stop)
            ),
        script:
            "../workflow/scripts/stream_shard.py"


H5AD = config["source"]["h5ad"]


# Convert shared real data (ECCITE-seq .rda files or an L1000 .gct plate) into an h5ad under
# results/h5ad/prepared/ (a path the workflow owns; source.h5ad.paths stays empty).
if PLAN.kind == "h5ad" and H5AD.get("prepare"):

    rule prepare_h5ad:
        input:
            H5AD["prepare"]["input"],
        output:
            prepared_path(H5AD["prepare"]["kind"]),
        log:
            f"{R}/logs/h5ad/prepare.log",
        conda:
            "../envs/tahoeflow.yaml"
        threads: 1
        resources:
            mem_mb=mem_mb(4000),
            runtime=20,
        params:
            kind=H5AD["prepare"]["kind"],
        script:
            "../workflow/scripts/prepare_h5ad.py"


# Gene and drug tables of an h5ad source, in the hub's metadata layout.
rule h5ad_metadata:
    input:
        [PLAN.data_path(f) for f in PLAN.files] if PLAN.kind == "h5ad" else [],
    output:
        gene=f"{R}/h5ad/metadata/gene_metadata.parquet",
        drug=f"{R}/h5ad/metadata/drug_metadata.parquet",
    log:
        f"{R}/logs/h5ad/metadata.log",
    localrule: True
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(1000),
        runtime=10,
    params:
        h5ad=H5AD,
    script:
        "../workflow/scripts/h5ad_metadata.py"
