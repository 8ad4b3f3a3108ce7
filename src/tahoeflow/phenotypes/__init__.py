"""Phenotype readouts: what the drugs do to the cells, beyond expression.

- :mod:`.sensitivity`: cell-count changes vs DMSO per well and pooled (Fisher, CMH, BH).
- :mod:`.obs`: the same counts straight from obs_metadata (``source.kind: obs``).
- :mod:`.cellcycle`: cell-cycle scores (scanpy's score_genes_cell_cycle) and G-arrest calls.
- :mod:`.landscape`: lines x drugs heatmaps, MoA distributions, signature embeddings.
"""
