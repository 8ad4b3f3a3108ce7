# Merges stream over the shards one at a time (memory bounded by a shard).


rule merge_cells:
    input:
        cells=shard_outputs("cells.parquet"),
        qc=shard_outputs("qc.json"),
    output:
        cells=f"{R}/merged/cells.parquet",
        control_qc=f"{R}/merged/control_qc.csv",
        filter_qc=f"{R}/merged/filter_qc.csv",
    log:
        f"{R}/logs/merge/cells.log",
    benchmark:
        f"{R}/benchmarks/merge/cells.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(250, 60, size=per_shard_mb),
        runtime=30,
    params:
        filters=config["filters"],
    script:
        "../workflow/scripts/merge_cells.py"


rule merge_gene_stats:
    input:
        stats=shard_outputs("gene_stats.parquet"),
        qc=shard_outputs("qc.json"),
        genes=raw_meta("gene"),
    output:
        f"{R}/merged/gene_stats.parquet",
    log:
        f"{R}/logs/merge/gene_stats.log",
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(300),
        runtime=20,
    script:
        "../workflow/scripts/merge_gene_stats.py"


rule merge_pseudobulk:
    input:
        pseudobulk=shard_outputs("pseudobulk.parquet"),
        cells=f"{R}/merged/cells.parquet",
    output:
        counts=f"{R}/merged/pseudobulk.parquet",
        groups=f"{R}/merged/pseudobulk_groups.parquet",
    log:
        f"{R}/logs/merge/pseudobulk.log",
    benchmark:
        f"{R}/benchmarks/merge/pseudobulk.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(450, 15),
        runtime=30,
    script:
        "../workflow/scripts/merge_pseudobulk.py"
