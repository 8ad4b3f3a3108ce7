# Phenotype readouts from cell counts: drug sensitivity per (line, drug, dose, plate) and pooled.

SENS = config["phenotypes"]["sensitivity"]
OBS = config["phenotypes"]["obs"]


# obs_metadata.parquet from the hub (pinned revision, sha256-verified like every hub file); only
# when it is read and no local path is given (never a rule for a user's file).
if SENS["from"] == "obs" and not OBS["path"]:

    rule download_obs_metadata:
        output:
            obs_hub_path(),
        log:
            f"{R}/logs/download/obs_metadata.log",
        localrule: HUB["download_on_submit_host"]
        conda:
            "../envs/tahoeflow.yaml"
        threads: 1
        resources:
            mem_mb=mem_mb(250),
            runtime=60,
        params:
            repo_id=HUB["repo_id"],
            revision=HUB["revision"],
            filename="metadata/obs_metadata.parquet",
            # transport settings cannot change a verified file: not rerun triggers
            cache_dir=untracked(HUB["cache_dir"]),
            max_retries=untracked(HUB["max_retries"]),
            timeout_s=untracked(HUB["timeout_s"]),
        script:
            "../workflow/scripts/download.py"


# Cells per (plate, well, drug, dose, line): from the merged cells (those that passed the
# workflow's filters) or streamed from obs_metadata in row groups (100.6M rows, bounded memory).
rule phenotype_counts:
    input:
        unpack(phenotype_count_inputs),
    output:
        f"{R}/phenotypes/counts.parquet",
    log:
        f"{R}/logs/phenotypes/counts.log",
    benchmark:
        f"{R}/benchmarks/phenotypes/counts.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 2
    resources:
        # obs: one batch of 1M rows and the groups (~600 MB measured for 100.6M rows); cells:
        # the same, batch by batch (668 MB measured at 37.9M cells)
        mem_mb=mem_mb(900, 1.5, size=merged_cells_mb),
        runtime=lambda wc: 30 if SENS["from"] == "obs" else 10,
    params:
        source=SENS["from"],
        control_drug=config["control_drug"],
        pass_filter=OBS["pass_filter"] if SENS["from"] == "obs" else None,
    script:
        "../workflow/scripts/phenotype_counts.py"


# Sensitivity per (plate, drug, dose, line) and pooled over plates (docs/data_contract.md).
rule sensitivity:
    input:
        f"{R}/phenotypes/counts.parquet",
    output:
        f"{R}/phenotypes/sensitivity.parquet",
    log:
        f"{R}/logs/phenotypes/sensitivity.log",
    benchmark:
        f"{R}/benchmarks/phenotypes/sensitivity.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(600),
        runtime=10,
    params:
        control_drug=config["control_drug"],
        pseudocount=SENS["pseudocount"],
    script:
        "../workflow/scripts/sensitivity.py"
