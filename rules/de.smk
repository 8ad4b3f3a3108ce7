# Differential expression against DMSO (seed 004's input), seed 004's up/down classification
# benchmark, and seed 003's per-gene models.

DE = config["de"]
UPDOWN = config["updown"]
PERGENE = config["pergene"]


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
    resources:
        mem_mb=mem_mb(300, 115),
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
    resources:
        mem_mb=mem_mb(300, 115),
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
    resources:
        mem_mb=mem_mb(450, 6.5, size=data_mb),
        runtime=60,
    params:
        shards=[shard_record(SHARDS[s]) for s in sorted(SHARDS)],
        files=PLAN.files,
        source=SOURCE,
        filters=config["filters"],
        normalised=config["input"]["normalised"],
        control_drug=config["control_drug"],
        max_conditions=DE["welch"]["max_conditions"],
        conditions=DE["welch"]["conditions"],
    script:
        "../workflow/scripts/de_welch.py"


rule updown:
    input:
        toptable=updown_input,
    output:
        scores=report(
            f"{R}/updown/scores.csv",
            caption="../workflow/report/updown.rst",
            category="Up/down benchmark",
        ),
        detection=f"{R}/updown/detection.json",
        importances=f"{R}/updown/rf_importances.csv",
        lasso=f"{R}/updown/lasso_coef.csv",
        pca=report(
            f"{R}/report/figures/updown_pca.png",
            caption="../workflow/report/updown_pca.rst",
            category="Up/down benchmark",
        ),
        importance_plot=report(
            f"{R}/report/figures/updown_importances.png",
            caption="../workflow/report/updown_importances.rst",
            category="Up/down benchmark",
        ),
    log:
        f"{R}/logs/updown/benchmark.log",
    benchmark:
        f"{R}/benchmarks/updown/benchmark.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb(1500, 10.5),
        runtime=60,
    params:
        seed=UPDOWN["seed"],
        cv_folds=UPDOWN["cv_folds"],
        max_rows=UPDOWN["max_rows"],
        rf_grid=UPDOWN["rf_grid"],
    script:
        "../workflow/scripts/updown.py"


rule pergene_fit:
    input:
        unpack(pergene_inputs),
    output:
        models=f"{R}/pergene/models.joblib",
        metrics=f"{R}/pergene/metrics.csv",
        features=f"{R}/pergene/features.parquet",
        targets=f"{R}/pergene/targets.parquet",
        summary=f"{R}/pergene/summary.json",
        r2_hist=report(
            f"{R}/report/figures/pergene_r2_hist.png",
            caption="../workflow/report/pergene_r2.rst",
            category="Per-gene models",
        ),
        validation=report(
            f"{R}/report/figures/pergene_validation.png",
            caption="../workflow/report/pergene_validation.rst",
            category="Per-gene models",
        ),
    log:
        f"{R}/logs/pergene/fit.log",
    benchmark:
        f"{R}/benchmarks/pergene/fit.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 2
    resources:
        mem_mb=mem_mb(350, 37),
        runtime=60,
    params:
        mode=PERGENE["mode"],
        n_top_genes=PERGENE["n_top_genes"],
        cv_folds=PERGENE["cv_folds"],
        n_alphas=PERGENE["n_alphas"],
        test_size=PERGENE["test_size"],
        seed=PERGENE["seed"],
        min_cells=DE["min_cells"],
        control=config["control_drug"],
        feature_columns=PERGENE["table"]["feature_columns"],
        gene_columns=PERGENE["table"]["gene_columns"],
    script:
        "../workflow/scripts/pergene_fit.py"


rule pergene_apply:
    input:
        models=rules.pergene_fit.output.models,
        table=pergene_apply_input,
    output:
        f"{R}/pergene/predictions.csv",
    log:
        f"{R}/logs/pergene/apply.log",
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(300),
        runtime=20,
    params:
        feature_columns=PERGENE["table"]["feature_columns"],
        kind="lasso",
    script:
        "../workflow/scripts/pergene_apply.py"
