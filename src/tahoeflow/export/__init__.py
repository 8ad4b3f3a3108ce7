"""Outputs for other tools: :mod:`.h5ad` writes embeddings and pseudobulks as AnnData."""
