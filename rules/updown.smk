# The up/down classification benchmark on a DE table (seed 001): RF and Lasso on the
# table's statistics, scored by cross-validation.

UPDOWN = config["updown"]


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
        mem_mb=mem_mb(1500, 10.5, size=updown_held_mb),
        runtime=60,
    params:
        seed=UPDOWN["seed"],
        cv_folds=UPDOWN["cv_folds"],
        max_rows=UPDOWN["max_rows"],
        rf_grid=UPDOWN["rf_grid"],
    script:
        "../workflow/scripts/updown.py"
