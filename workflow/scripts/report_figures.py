"""Draw the report figures and the metric summary table."""

import json

import pandas as pd

from tahoeflow import io as tio
from tahoeflow.logs import run
from tahoeflow.plots import report as rp
from tahoeflow.workflow_io import load_filtered_shard


def main(smk, log):
    i, o = smk.input, smk.output
    loaded, _ = load_filtered_shard(smk, log)
    rp.value_histogram(loaded.X[: smk.params.max_cells].data, o.values)
    # per-cell tables: aggregates streamed by row group, or a bounded sample (tahoeflow.plots.report)
    values, counts = rp.parquet_int_counts(i.cells, "n_genes")
    rp.genes_per_cell(values, o.genes, counts=counts)
    for col, path, title, top in (
        ("drug", o.drugs, "Top 10 drugs", 10),
        ("cell_line_id", o.lines, "Cells per cell line", 50),
        ("moa_fine", o.moa, "Cells per mechanism of action (moa-fine)", 20),
    ):
        rp.top_counts(rp.parquet_value_counts(i.cells, col), path, title, top, aggregated=True)
    metrics = {
        name: json.loads(open(path).read())
        for name, path in (
            ("ridge", i.ridge_metrics),
            ("rf_classifier", i.rf_metrics),
            ("rf_regressor", i.rf_regressor),
            ("kmeans", i.kmeans),
        )
    }
    # a skipped model's figures say why instead of plotting empty tables
    rp.model_figures(
        metrics,
        {"ridge": i.ridge, "confusion": i.confusion, "importances": i.importances},
        {"ridge": o.ridge, "confusion": o.confusion, "importances": o.importances},
    )
    rp.scree(pd.read_csv(i.variance)["explained_variance_ratio"].to_numpy(), o.scree)
    emb = rp.parquet_sample(i.embeddings, ["pc1", "pc2", "cluster", "cell_line_id"], rp.MAX_POINTS)
    rp.pc_scatter(
        emb["pc1"], emb["pc2"], emb["cluster"], o.pc_cluster, "PC1 vs PC2 by KMeans cluster"
    )
    rp.pc_scatter(emb["pc1"], emb["pc2"], emb["cell_line_id"], o.pc_line, "PC1 vs PC2 by cell line")
    tio.write_csv(rp.metrics_summary(metrics), o.metrics)
    log(f"{len(o)} report outputs written")


run(main, snakemake)  # noqa: F821
