"""Where cells come from. Each source turns its files into the same shard inputs:

- :mod:`.tahoe`: the Tahoe-100M format (token ids, schemas, file names).
- :mod:`.hub`: verified downloads at a pinned revision (huggingface_hub); :mod:`.hub_errors`:
  transient or final, back-off, one scrubbed line per failure.
- :mod:`.manifest`: file -> plates/rows tables that let the plan skip files.
- :mod:`.stream`: row-range downloads through ``datasets`` streaming.
- :mod:`.h5ad`, :mod:`.h5ad_shard`, :mod:`.h5ad_settings`: AnnData files (scanpy's format):
  the file read by row ranges, one range as a shard, the settings checked at parse time.
- :mod:`.real_data`: converters of public data sets to h5ad (``prepare``).
- :mod:`.demo_tables`, :mod:`.demo`, :mod:`.demo_files`: the offline demo: Tahoe's real
  metadata tables, the simulated design on them, and its files.
"""
