"""HVGs, PCA and KMeans over all cells without holding them in one job.

- :mod:`.hvg`: highly variable genes from merged statistics (scanpy's seurat/cell_ranger).
- :mod:`.pca`: Gram matrices per batch, their sum, PCA from the Gram, projection.
- :mod:`.hvg_cache`: the Gram jobs' HVG counts, which the projections read instead of the shards.
- :mod:`.kmeans`: KMeans / MiniBatchKMeans on the projections.
- :mod:`.table`: the embeddings table; KMeans fitted on all cells or a bounded sample, every
  cell assigned batch by batch.
"""
