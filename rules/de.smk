# Differential expression against DMSO (the DE table seed 004 starts from): limma-voom or
# DESeq2 per line in parallel parts, pseudobulk Welch tests, and the merged toptable.

DE = config["de"]


DE_PARTS = list(range(DE["jobs"]))


rule de_part:
    input:
        counts=rules.merge_pseudobulk.output.counts,
        groups=rules.merge_pseudobulk.output.groups,
        genes=rules.merge_gene_stats.output[0],
    output:
        table=f"{R}/de/parts/{{part}}.parquet",
        skipped=f"{R}/de/parts/{{part}}.skipped.csv",
    log:
        f"{R}/logs/de/part_{{part}}.log",
    benchmark:
        f"{R}/benchmarks/de/part_{{part}}.tsv"
    wildcard_constraints:
        part=r"\d+",
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    # one line's pseudobulk and 32 drugs' DE table at a time, then a streamed merge of the
    # part's lines: 1,205 MB at 37.9M cells (13 lines a part)
    resources:
        mem_mb=mem_mb(2000),
        runtime=120,
    params:
        n_parts=DE["jobs"],
        method=DE["method"],
        min_cells=DE["min_cells"],
        min_control_wells=DE["min_control_wells"],
        prior_count=DE["prior_count"],
        pool_plates=DE["pool_plates"],
        voom=DE["voom"],
        control=config["control_drug"],
    script:
        "../workflow/scripts/de_part.py"


rule de_pseudobulk:
    input:
        parts=expand(f"{R}/de/parts/{{part}}.parquet", part=DE_PARTS),
        skipped=expand(f"{R}/de/parts/{{part}}.skipped.csv", part=DE_PARTS),
        groups=rules.merge_pseudobulk.output.groups,
        truth=demo_truth,
    output:
        toptable=f"{R}/de/toptable.parquet",
        skipped=f"{R}/de/skipped.csv",
        counts=report(
            f"{R}/de/up_down_counts.csv",
            caption="../workflow/report/de_counts.rst",
            category="Differential expression",
        ),
        metrics=f"{R}/de/metrics.json",
        volcano=report(
            f"{R}/report/figures/de_volcano.png",
            caption="../workflow/report/volcano.rst",
            category="Differential expression",
        ),
    log:
        f"{R}/logs/de/pseudobulk.log",
    benchmark:
        f"{R}/benchmarks/de/pseudobulk.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    # streamed: one output row group (1Mi rows) and a batch a part; 1,021 MB at 37.9M cells
    # (30.4M rows)
    resources:
        mem_mb=mem_mb(1600),
        runtime=60,
    params:
        method=DE["method"],
        alpha=DE["alpha"],
        calls_by=DE["calls_by"],
        top_volcano=DE["top_volcano"],
        control=config["control_drug"],
    script:
        "../workflow/scripts/de_pseudobulk.py"


rule de_welch:
    input:
        data=[PLAN.data_path(f) for f in PLAN.files],
        genes=raw_meta("gene"),
        samples=sample_meta,
        toptable=f"{R}/de/toptable.parquet",
    output:
        f"{R}/de/welch.parquet",
    log:
        f"{R}/logs/de/welch.log",
    benchmark:
        f"{R}/benchmarks/de/welch.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    # one shard at a time (the largest data file's MB), then the cells of the few conditions
    # and their controls; the base keeps the request above the whole-job peak measured at
    # hub-sized files before the toptable was streamed (tests/test_slurm.py) until re-measured
    resources:
        mem_mb=mem_mb(
            1450,
            6.5,
            size=lambda wildcards, input: max(
                map(os.path.getsize, as_list(input.data)), default=0
            )
            / 2**20,
        ),
        runtime=60,
    params:
        **SHARD_READ,
        shards=[shard_record(SHARDS[s]) for s in sorted(SHARDS)],
        files=PLAN.files,
        max_conditions=DE["welch"]["max_conditions"],
        conditions=DE["welch"]["conditions"],
    script:
        "../workflow/scripts/de_welch.py"
