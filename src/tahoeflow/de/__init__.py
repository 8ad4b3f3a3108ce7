"""Differential expression against DMSO and the up/down benchmark.

- :mod:`.edger`, :mod:`.voom`, :mod:`.lowess`, :mod:`.limma`: limma-voom as R computes it.
- :mod:`.design`: control pairing, contrasts and design matrices.
- :mod:`.pipeline`: one contrast end to end, and the per-line parts (:mod:`.parts`).
- :mod:`.gather`: the parts gathered into one toptable, streamed (exact table-wide BH).
- :mod:`.deseq2`: PyDESeq2 behind the same table layout (:mod:`.tables`).
- :mod:`.welch`: per-cell Welch tests (scanpy's rank_genes_groups t-test).
- :mod:`.truth`: FDR and power against simulated truth.
- :mod:`.updown`: up/down classification on a DE table (seed 001).
"""
