# Embeddings at atlas scale in one streaming pass over the shards: HVGs from the merged gene
# statistics, Gram matrices per group of shards (which keep the groups' HVG counts), one
# eigendecomposition, projections per group from those counts, KMeans. A group
# (embed.shards_per_job) is read one shard at a time.


rule hvg:
    input:
        f"{R}/merged/gene_stats.parquet",
    output:
        f"{R}/embed/hvg.parquet",
    log:
        f"{R}/logs/embed/hvg.log",
    localrule: True
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(250),
        runtime=10,
    params:
        n_top=config["embed"]["hvg"]["n_top"],
        flavor=config["embed"]["hvg"]["flavor"],
    script:
        "../workflow/scripts/hvg.py"


rule gram_batch:
    input:
        data=batch_data,
        genes=raw_meta("gene"),
        samples=sample_meta,
        hvg=rules.hvg.output[0],
    output:
        gram=temp(f"{R}/embed/gram/{{batch}}.npz"),
        # the shards' HVG counts, so that project_batch does not decode the shards again; kept
        # (not temp), so a KMeans-only change reruns the projections without the Gram pass
        cache=f"{R}/embed/hvg_counts/{{batch}}.parquet",
    log:
        f"{R}/logs/embed/gram_{{batch}}.log",
    benchmark:
        f"{R}/benchmarks/embed/gram_{{batch}}.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(550, 6.5, size=largest_shard_mb),
        runtime=batch_runtime,
    params:
        **SHARD_READ,
        shards=lambda wc: [shard_record(s) for s in batch_shards(wc)],
    script:
        "../workflow/scripts/gram_batch.py"


rule pca:
    input:
        grams=expand(f"{R}/embed/gram/{{batch}}.npz", batch=sorted(BATCHES)),
        hvg=f"{R}/embed/hvg.parquet",
    output:
        model=f"{R}/embed/pca.npz",
        variance=f"{R}/embed/pca_variance.csv",
        components=f"{R}/embed/components.parquet",
    log:
        f"{R}/logs/embed/pca.log",
    benchmark:
        f"{R}/benchmarks/embed/pca.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb(400),
        runtime=20,
    params:
        n_components=config["embed"]["n_components"],
        center=config["embed"]["center"],
    script:
        "../workflow/scripts/pca.py"


rule project_batch:
    input:
        cache=f"{R}/embed/hvg_counts/{{batch}}.parquet",
        model=rules.pca.output.model,
    output:
        temp(f"{R}/embed/proj/{{batch}}.parquet"),
    log:
        f"{R}/logs/embed/project_{{batch}}.log",
    benchmark:
        f"{R}/benchmarks/embed/project_{{batch}}.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        # one shard's cached counts at a time: ~6 bytes a stored value as Arrow, ~32 as CSR,
        # its log1p float64 copy and the rows densified block by block
        mem_mb=mem_mb(400, 8, size=largest_cache_shard_mb),
        runtime=cache_runtime,
    script:
        "../workflow/scripts/project_batch.py"


rule embeddings:
    input:
        proj=expand(f"{R}/embed/proj/{{batch}}.parquet", batch=sorted(BATCHES)),
        cells=f"{R}/merged/cells.parquet",
    output:
        parquet=f"{R}/embed/embeddings.parquet",
        kmeans=f"{R}/embed/kmeans.json",
    log:
        f"{R}/logs/embed/embeddings.log",
    benchmark:
        f"{R}/benchmarks/embed/embeddings.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb(400, 10, size=embeddings_held_mb),
        runtime=30,
    params:
        n_clusters=config["embed"]["kmeans"]["n_clusters"],
        minibatch_threshold=config["embed"]["kmeans"]["minibatch_threshold"],
        seed=config["embed"]["kmeans"]["seed"],
        n_init=config["embed"]["kmeans"]["n_init"],
        batch_size=config["embed"]["kmeans"]["batch_size"],
        max_fit_cells=config["embed"]["kmeans"]["max_fit_cells"],
    script:
        "../workflow/scripts/embeddings.py"


# Seed 002's CSV of the embeddings table, written from the Parquet one row group at a time.
# A target (rules/common.smk final_outputs) only while the planned cells are at most
# embed.csv_max_cells; above it nothing asks for it and only the Parquet exists.
rule embeddings_csv:
    input:
        rules.embeddings.output.parquet,
    output:
        f"{R}/embed/embeddings.csv",
    log:
        f"{R}/logs/embed/embeddings_csv.log",
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(300),
        runtime=30,
    script:
        "../workflow/scripts/embeddings_csv.py"
