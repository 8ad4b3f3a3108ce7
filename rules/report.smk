# Figures registered with report(): `snakemake --report report.html` embeds them, with the
# metric tables, in one self-contained HTML file.
FIG = f"{R}/report/figures"
CAP = "../workflow/report"


rule report_figures:
    input:
        data=PLAN.data_path(first_shard().file_index),
        genes=raw_meta("gene"),
        samples=sample_meta,
        cells=rules.merge_cells.output.cells,
        embeddings=rules.embeddings.output.parquet,
        variance=rules.pca.output.variance,
        ridge=rules.ridge.output.predictions,
        ridge_metrics=rules.ridge.output.metrics,
        rf_metrics=rules.rf_classifier.output.metrics,
        confusion=rules.rf_classifier.output.confusion,
        importances=rules.rf_classifier.output.importances,
        rf_regressor=rules.rf_regressor.output.metrics,
        kmeans=rules.embeddings.output.kmeans,
    output:
        values=report(
            f"{FIG}/fig1_expression_values.png",
            caption=f"{CAP}/fig1_values.rst",
            category="Data exploration",
        ),
        genes=report(
            f"{FIG}/fig2_genes_per_cell.png",
            caption=f"{CAP}/fig2_genes.rst",
            category="Data exploration",
        ),
        drugs=report(
            f"{FIG}/fig3_top_drugs.png",
            caption=f"{CAP}/fig3_drugs.rst",
            category="Data exploration",
        ),
        lines=report(
            f"{FIG}/cell_lines.png",
            caption=f"{CAP}/cell_lines.rst",
            category="Data exploration",
        ),
        moa=report(
            f"{FIG}/moa.png", caption=f"{CAP}/moa.rst", category="Data exploration"
        ),
        ridge=report(
            f"{FIG}/ridge_pred_vs_true.png",
            caption=f"{CAP}/ridge.rst",
            category="Models",
        ),
        confusion=report(
            f"{FIG}/rf_confusion.png",
            caption=f"{CAP}/confusion.rst",
            category="Models",
        ),
        importances=report(
            f"{FIG}/rf_importances.png",
            caption=f"{CAP}/importances.rst",
            category="Models",
        ),
        scree=report(
            f"{FIG}/scree.png", caption=f"{CAP}/scree.rst", category="Embeddings"
        ),
        pc_cluster=report(
            f"{FIG}/pc1_pc2_cluster.png",
            caption=f"{CAP}/pc_cluster.rst",
            category="Embeddings",
        ),
        pc_line=report(
            f"{FIG}/pc1_pc2_cell_line.png",
            caption=f"{CAP}/pc_line.rst",
            category="Embeddings",
        ),
        metrics=report(
            f"{R}/report/metrics_summary.csv",
            caption=f"{CAP}/table.rst",
            category="Models",
        ),
    log:
        f"{R}/logs/report/figures.log",
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(450, 4),
        runtime=20,
    params:
        **SHARD_READ,
        shard=shard_record(first_shard()),
        max_cells=5000,
    script:
        "../workflow/scripts/report_figures.py"
