"""Per-shard work on cells: plan the shards, read rows into CSR, filter, summarise.

- :mod:`.plan`: shards, batches and the merge tree (parse time; never opens data).
- :mod:`.vocab`, :mod:`.doses`: gene vocabulary and the one dose-unit table.
- :mod:`.read`, :mod:`.csr`: Parquet rows -> validated CSR (cells x genes).
- :mod:`.selected`: the same checks, keeping only some genes' counts and the cells' totals
  (the passes after the summary: Gram, cell cycle).
- :mod:`.normalize`: CP10k + log1p (scanpy's normalize_total + log1p).
- :mod:`.stats`: per-cell and per-gene statistics and pseudobulk sums (compiled passes).
- :mod:`.summarize`: one shard end to end: read, filter, summarise.
"""
