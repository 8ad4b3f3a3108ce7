# Merges stream over the shards one at a time (memory bounded by a shard). With more shards
# than merge.fan_in they are hierarchical: partial merges of at most fan_in inputs
# (MERGE_NODES: shards, then partials; temporary files under merged/parts/), then the final
# merges over the top partials (MERGE_TOP). The merged files are the same either way.


wildcard_constraints:
    node=r"L\d+-\d+",


rule merge_part_cells:
    input:
        unpack(merge_cells_part_inputs),
    output:
        sums=temp(f"{R}/merged/parts/{{node}}/control_sums.parquet"),
        ids=temp(f"{R}/merged/parts/{{node}}/cell_ids.npy"),
    log:
        f"{R}/logs/merge/parts/{{node}}.cells.log",
    benchmark:
        f"{R}/benchmarks/merge/parts/{{node}}.cells.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(400, 60, size=input_mean_mb),
        runtime=30,
    params:
        kind="cells",
        indices=merge_part_indices,
    script:
        "../workflow/scripts/merge_part.py"


rule merge_part_gene_stats:
    input:
        merge_part_inputs("gene_stats.parquet"),
    output:
        temp(f"{R}/merged/parts/{{node}}/gene_stats.parquet"),
    log:
        f"{R}/logs/merge/parts/{{node}}.gene_stats.log",
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(300),
        runtime=20,
    params:
        kind="gene_stats",
    script:
        "../workflow/scripts/merge_part.py"


rule merge_part_pseudobulk:
    input:
        merge_part_inputs("pseudobulk.parquet"),
    output:
        temp(f"{R}/merged/parts/{{node}}/pseudobulk.parquet"),
    log:
        f"{R}/logs/merge/parts/{{node}}.pseudobulk.log",
    benchmark:
        f"{R}/benchmarks/merge/parts/{{node}}.pseudobulk.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(450, 15),
        runtime=30,
    params:
        kind="pseudobulk",
    script:
        "../workflow/scripts/merge_part.py"


rule merge_cells:
    input:
        cells=shard_outputs("cells.parquet"),
        qc=shard_outputs("qc.json"),
        sums=merge_top_parts("control_sums.parquet"),
        ids=merge_top_parts("cell_ids.npy"),
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
        # + the duplicate check over the partials' hashes: at most IDS_CHUNK (2^22) at a time
        mem_mb=mem_mb(250 + (200 if MERGE_NODES else 0), 60, size=per_group_mb),
        runtime=30,
    params:
        filters=config["filters"],
    script:
        "../workflow/scripts/merge_cells.py"


rule merge_gene_stats:
    input:
        stats=merge_top_inputs("gene_stats.parquet"),
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
        pseudobulk=merge_top_inputs("pseudobulk.parquet"),
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
        mem_mb=mem_mb(0, 1, size=pseudobulk_merge_mb),
        runtime=30,
    script:
        "../workflow/scripts/merge_pseudobulk.py"
