# One job per shard: validate the rows, build CSR, write per-cell summaries and the
# mergeable per-shard statistics (gene sums, pseudobulk).


rule summarize_shard:
    input:
        data=raw_data,
        genes=raw_meta("gene"),
        samples=sample_meta,
    output:
        cells=f"{R}/shards/{{shard}}/cells.parquet",
        genes=f"{R}/shards/{{shard}}/gene_stats.parquet",
        pseudobulk=f"{R}/shards/{{shard}}/pseudobulk.parquet",
        qc=f"{R}/shards/{{shard}}/qc.json",
    log:
        f"{R}/logs/summarize/{{shard}}.log",
    benchmark:
        f"{R}/benchmarks/summarize/{{shard}}.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=shard_mem_mb,
        runtime=lambda wc, input: 5 + int(shard_size_mb(wc, input) / 20),
    params:
        **SHARD_READ,
        shard=lambda wc: shard_record(SHARDS[wc.shard]),
        # the manifest's row count of the file, checked against its footer (untracked: a
        # function of output, which Snakemake does not record)
        file_rows=lambda wc, output: SHARDS[wc.shard].file_rows,
    script:
        "../workflow/scripts/summarize_shard.py"
