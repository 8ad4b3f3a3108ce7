"""Merging the per-shard outputs, hierarchically with a fixed fan-in.

- :mod:`.cells`: per-cell tables, duplicate-id check, control means and delta_mean.
- :mod:`.gene_stats`: summed gene statistics.
- :mod:`.pseudobulk`: (sample, cell line) x gene sums, sorted by line for the DE parts.
- :mod:`.conditions`: condition-level matrices built from the merged pseudobulk.
"""
