# One job per group of shards (summarize.shards_per_job; one shard each by default): validate
# the rows, build CSR, write per-cell summaries and the mergeable statistics (gene sums,
# pseudobulk) of the group, one shard at a time.


rule summarize_shard:
    input:
        data=group_data,
        genes=raw_meta("gene"),
        samples=sample_meta,
    output:
        cells=f"{R}/shards/{{group}}/cells.parquet",
        genes=f"{R}/shards/{{group}}/gene_stats.parquet",
        pseudobulk=f"{R}/shards/{{group}}/pseudobulk.parquet",
        qc=f"{R}/shards/{{group}}/qc.json",
    log:
        f"{R}/logs/summarize/{{group}}.log",
    benchmark:
        f"{R}/benchmarks/summarize/{{group}}.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=shard_mem_mb,
        runtime=lambda wc, input: 5 + int(group_size_mb(wc, input)[1] / 20),
    params:
        **SHARD_READ,
        shards=lambda wc: [shard_record(s) for s in group_shards(wc)],
        # the manifest's row count of each file, checked against its footer (untracked: a
        # function of output, which Snakemake does not record)
        file_rows=lambda wc, output: [s.file_rows for s in group_shards(wc)],
    script:
        "../workflow/scripts/summarize_shard.py"
