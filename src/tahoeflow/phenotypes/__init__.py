"""Phenotype readouts: sensitivity from cell counts, cell-cycle arrest, drug-response landscape."""
