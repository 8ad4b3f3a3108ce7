"""Per-gene models of expression change (seed 003).

- :mod:`.lasso`: Lasso / linear fits per gene on condition features (CD on the Gram).
- :mod:`.plots`: validation and R² figures.
- :mod:`.targets`: the target genes' pseudobulk counts, streamed from the long table.
"""
