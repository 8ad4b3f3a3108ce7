"""The gene vocabulary: token id -> column of the expression matrix."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from tahoeflow.errors import InputError


@dataclass(frozen=True)
class Vocab:
    """Token id -> column position, and per-column annotations."""

    token_ids: np.ndarray  # (G,) int64, column order
    lookup: np.ndarray  # (max_token+1,) int32, -1 where not a gene
    is_mito: np.ndarray  # (G,) bool

    @property
    def n_genes(self) -> int:
        return int(self.token_ids.size)


def has_columns(columns: Sequence[str]) -> str:
    """The columns a metadata table does have, for an error about one it lacks."""
    return f"it has {', '.join(map(str, columns))}: a table of another revision?"


def vocab_from_gene_metadata(table: pa.Table, path: object = "gene_metadata") -> Vocab:
    """Columns in token-id order; MT genes flagged by a ``MT-`` symbol prefix."""
    for col in ("token_id", "gene_symbol"):
        if col not in table.column_names:
            raise InputError(path, f"missing column '{col}' ({has_columns(table.column_names)})")
    tok = table.column("token_id")
    if not pa.types.is_integer(tok.type) or tok.null_count:
        raise InputError(
            path, f"token_id must be integers without nulls (it is {tok.type}, {tok.null_count} "
            "null): a table of another revision?",
        )  # fmt: skip
    tokens = tok.to_numpy().astype(np.int64)
    order = np.argsort(tokens, kind="stable")
    tokens = tokens[order]
    if tokens.size == 0 or tokens[0] < 0:
        raise InputError(path, "token_id must be non-negative")
    if np.any(tokens[1:] == tokens[:-1]):
        dup = int(order[1:][tokens[1:] == tokens[:-1]][0])
        raise InputError(
            path, f"duplicated token_id {int(tokens[1:][tokens[1:] == tokens[:-1]][0])}", row=dup
        )
    lookup = np.full(int(tokens[-1]) + 1, -1, dtype=np.int32)
    lookup[tokens] = np.arange(tokens.size, dtype=np.int32)
    symbols = np.asarray(table.column("gene_symbol").fill_null("").to_pylist(), dtype=object)[order]
    is_mito = np.char.startswith(symbols.astype(str), "MT-")
    return Vocab(tokens, lookup, is_mito)
