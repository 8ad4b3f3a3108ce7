# Per-gene Lasso / linear models of expression change on condition features (seed 003),
# fitted on the pseudobulk conditions and applied to a table of new conditions.

PERGENE = config["pergene"]


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
        # bounded by groups x (target genes + 1) and conditions x features, never the long
        # table (1,375 MB measured at 37.9M cells: 33,435 groups, 30,828 conditions, 200 genes)
        mem_mb=mem_mb(2500),
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
        # the table to predict and its predictions (752 MB measured for 30,828 conditions)
        mem_mb=mem_mb(1300),
        runtime=20,
    params:
        feature_columns=PERGENE["table"]["feature_columns"],
        kind="lasso",
    script:
        "../workflow/scripts/pergene_apply.py"
