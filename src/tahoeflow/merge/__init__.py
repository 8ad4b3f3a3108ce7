"""Merging the per-shard outputs, hierarchically with a fixed fan-in.

- :mod:`.shard_group`: the outputs of one summary job over a group of shards.
- :mod:`.cells`: per-cell tables, duplicate-id check, control means and delta_mean.
- :mod:`.gene_stats`: summed gene statistics.
- :mod:`.pseudobulk`: (sample, cell line) x gene sums, sorted by line for the DE parts.
- :mod:`.conditions`: condition-level matrices built from the merged pseudobulk.
"""
