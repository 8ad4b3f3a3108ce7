# Cell-cycle scores and the G-arrest index; the drug-response landscape.
# Cell cycle: the control-gene draw needs the expression bins over all cells, so it comes from
# the merged gene statistics; each group of shards (embed.shards_per_job) is then scored in one
# job. This is one more read of the shards (not folded into project_batch: that would tie the
# scores to the embed stage and rerun the embedding and its consumers on any cell-cycle change).

CELL_CYCLE_CFG = config["phenotypes"]["cell_cycle"]
LANDSCAPE_CFG = config["phenotypes"]["landscape"]
PHENO_OUT = f"{R}/phenotypes"
CELL_CYCLE_LISTS = str(Path(workflow.basedir) / "resources" / "cell_cycle_genes.tsv")


# Scores from expression: not with source.kind obs (it takes obs_metadata's phases).
if PLAN.kind != "obs":

    rule cell_cycle_genes:
        input:
            stats=rules.merge_gene_stats.output[0],
        output:
            f"{PHENO_OUT}/cell_cycle/genes.json",
        log:
            f"{R}/logs/phenotypes/cell_cycle_genes.log",
        localrule: True
        conda:
            "../envs/tahoeflow.yaml"
        threads: 1
        resources:
            mem_mb=mem_mb(250),
            runtime=10,
        params:
            # the committed gene lists: their content is the rerun trigger, not the checkout's path
            lists=untracked(CELL_CYCLE_LISTS),
            lists_sha256=hashlib.sha256(Path(CELL_CYCLE_LISTS).read_bytes()).hexdigest(),
            n_bins=CELL_CYCLE_CFG["n_bins"],
            seed=CELL_CYCLE_CFG["seed"],
        script:
            "../workflow/scripts/cell_cycle_genes.py"

    rule cell_cycle_batch:
        input:
            data=batch_data,
            genes=raw_meta("gene"),
            samples=sample_meta,
            draw=rules.cell_cycle_genes.output[0],
        output:
            f"{PHENO_OUT}/cell_cycle/scores/{{batch}}.parquet",
        log:
            f"{R}/logs/phenotypes/cell_cycle_{{batch}}.log",
        benchmark:
            f"{R}/benchmarks/phenotypes/cell_cycle_{{batch}}.tsv"
        conda:
            "../envs/tahoeflow.yaml"
        threads: 1
        resources:
            mem_mb=mem_mb(500, 6.5, size=largest_shard_mb),
            runtime=batch_runtime,
        params:
            **SHARD_READ,
            shards=lambda wc: [shard_record(s) for s in batch_shards(wc)],
        script:
            "../workflow/scripts/cell_cycle_batch.py"


rule cell_cycle:
    input:
        unpack(cell_cycle_inputs),
    output:
        table=f"{PHENO_OUT}/cell_cycle.parquet",
        metrics=f"{PHENO_OUT}/cell_cycle.json",
        figure=report(
            f"{PHENO_OUT}/cell_cycle_arrest.png",
            caption="../workflow/report/cell_cycle.rst",
            category="Phenotypes",
        ),
    log:
        f"{R}/logs/phenotypes/cell_cycle.log",
    benchmark:
        f"{R}/benchmarks/phenotypes/cell_cycle.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(600),
        runtime=20,
    params:
        pseudocount=CELL_CYCLE_CFG["pseudocount"],
        min_cells=CELL_CYCLE_CFG["min_cells"],
        alpha=CELL_CYCLE_CFG["alpha"],
        control_drug=config["control_drug"],
        pass_filter=(
            config["phenotypes"]["obs"]["pass_filter"]
            if config["phenotypes"]["sensitivity"]["from"] == "obs"
            else None
        ),
    script:
        "../workflow/scripts/cell_cycle.py"


rule landscape:
    input:
        sensitivity=f"{PHENO_OUT}/sensitivity.parquet",
        toptable=landscape_toptable,
        drugs=drug_meta(),
    output:
        heatmap=report(
            f"{PHENO_OUT}/landscape/sensitivity_heatmap.png",
            caption="../workflow/report/landscape_heatmap.rst",
            category="Phenotypes",
        ),
        moa=report(
            f"{PHENO_OUT}/landscape/moa_sensitivity.png",
            caption="../workflow/report/landscape_moa.rst",
            category="Phenotypes",
        ),
        pca=report(
            f"{PHENO_OUT}/landscape/signature_pca.png",
            caption="../workflow/report/landscape_pca.rst",
            category="Phenotypes",
        ),
        umap=report(
            f"{PHENO_OUT}/landscape/signature_umap.png",
            caption="../workflow/report/landscape_umap.rst",
            category="Phenotypes",
        ),
        metrics=f"{PHENO_OUT}/landscape/metrics.json",
    log:
        f"{R}/logs/phenotypes/landscape.log",
    benchmark:
        f"{R}/benchmarks/phenotypes/landscape.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(600, 1, size=signature_mb),
        runtime=30,
    params:
        moa_column=LANDSCAPE_CFG["moa_column"],
        exclude_moa=LANDSCAPE_CFG["exclude_moa"],
        signature=LANDSCAPE_CFG["signature"],
        no_toptable=landscape_no_toptable(),
        n_permutations=LANDSCAPE_CFG["n_permutations"],
        seed=LANDSCAPE_CFG["seed"],
    script:
        "../workflow/scripts/landscape.py"
