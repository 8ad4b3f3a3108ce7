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
        mem_mb=mem_mb(300, 3),
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
    conda:
        "../envs/tahoeflow.yaml"
    threads: 1
    resources:
        mem_mb=mem_mb(200, 90),
        runtime=20,
    script:
        "../workflow/scripts/export_pseudobulk_h5ad.py"
