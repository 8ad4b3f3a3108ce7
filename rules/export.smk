# AnnData (.h5ad) exports that scanpy reads directly.


rule export_embeddings_h5ad:
    input:
        embeddings=rules.embeddings.output.parquet,
        variance=rules.pca.output.variance,
        components=rules.pca.output.components,
        kmeans=rules.embeddings.output.kmeans,
    output:
        f"{R}/anndata/embeddings.h5ad",
    log:
        f"{R}/logs/anndata/embeddings.log",
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        # whole table in memory; a target only up to embed.h5ad_max_cells (2,722 MB measured
        # at 2M cells, 592 MB of embeddings)
        mem_mb=mem_mb(400, 6),
        runtime=20,
    script:
        "../workflow/scripts/export_embeddings_h5ad.py"


rule export_pseudobulk_h5ad:
    input:
        counts=rules.merge_pseudobulk.output.counts,
        groups=rules.merge_pseudobulk.output.groups,
        genes=rules.merge_gene_stats.output[0],
    output:
        f"{R}/anndata/pseudobulk.h5ad",
    log:
        f"{R}/logs/anndata/pseudobulk.log",
    benchmark:
        f"{R}/benchmarks/anndata/pseudobulk.tsv"
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        # streamed: one record batch per cell line and a block of 4Mi entries, whatever the
        # rows (1,158 MB measured at 37.9M cells, 75.3M entries)
        mem_mb=mem_mb(1500),
        runtime=20,
    script:
        "../workflow/scripts/export_pseudobulk_h5ad.py"
