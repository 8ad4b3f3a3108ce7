"""Outputs for other tools: :mod:`.h5ad` builds embeddings and pseudobulks as AnnData,
:mod:`.pseudobulk_h5ad` writes the pseudobulk h5ad block by block from the long table
(:mod:`.long_counts` reads that table in record batches)."""
