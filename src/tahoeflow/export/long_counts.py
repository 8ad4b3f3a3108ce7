"""Read the merged long pseudobulk (``merged/pseudobulk.parquet``) in record batches.

The long table (one row per non-zero (sample, cell line, gene)) is far larger than any
matrix built from it for a few genes or a block of groups, so the readers here never hold it
whole: :class:`GroupIndex` maps a batch's (sample, cell line) strings to rows of the groups
table through the batch's dictionaries, :func:`check_tokens` maps its token ids to gene
positions.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from tahoeflow.errors import InputError

#: columns of the long table
COLUMNS = ("sample", "cell_line_id", "token_id", "count")


class GroupIndex:
    """(sample, cell line) -> row of the groups table, for whole Arrow columns at once.

    Keys are coded as ``sample_code * n_lines + line_code`` over the sorted distinct
    samples and lines of ``groups`` and looked up by binary search (memory: the groups).
    """

    def __init__(self, groups: pd.DataFrame, path: object = "groups") -> None:
        missing = [c for c in ("sample", "cell_line_id") if c not in groups.columns]
        if missing:
            raise InputError(path, f"missing column(s) {', '.join(missing)}")
        s = groups["sample"].astype(str).to_numpy()
        ln = groups["cell_line_id"].astype(str).to_numpy()
        self.samples = pd.Index(np.unique(s))
        self.lines = pd.Index(np.unique(ln))
        key = self.samples.get_indexer(s).astype(np.int64) * len(self.lines) + (
            self.lines.get_indexer(ln)
        )
        order = np.argsort(key, kind="stable")
        self.keys = key[order]
        if self.keys.size and (np.diff(self.keys) == 0).any():
            dup = order[1:][np.diff(self.keys) == 0][0]
            raise InputError(path, f"repeated (sample, cell line) '{s[dup]}|{ln[dup]}'", row=dup)
        self.rows = order
        self.n = len(groups)

    @staticmethod
    def _codes(col: pa.Array | pa.ChunkedArray, index: pd.Index) -> np.ndarray:
        """Position of every value of ``col`` in ``index`` (-1: absent or null)."""
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        if pa.types.is_dictionary(col.type):
            lookup = index.get_indexer(col.dictionary.to_numpy(zero_copy_only=False).astype(str))
            idx = col.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
            out = np.where(idx >= 0, lookup[np.maximum(idx, 0)] if lookup.size else -1, -1)
            return out.astype(np.int64)
        values = col.to_numpy(zero_copy_only=False)
        out = index.get_indexer(values.astype(str)).astype(np.int64)
        if col.null_count:
            out[np.asarray(col.is_null())] = -1
        return out

    def rows_of(self, sample: pa.Array, line: pa.Array) -> np.ndarray:
        """Groups-table row of each (sample, line) pair; -1 where the pair is not a group."""
        s = self._codes(sample, self.samples)
        ln = self._codes(line, self.lines)
        ok = (s >= 0) & (ln >= 0)
        key = np.where(ok, s * len(self.lines) + ln, -1)
        pos = np.searchsorted(self.keys, key)
        pos = np.minimum(pos, max(self.keys.size - 1, 0))
        found = ok & (self.keys.size > 0)
        if self.keys.size:
            found &= self.keys[pos] == key
        return np.where(found, self.rows[pos] if self.keys.size else -1, -1)


def missing_group_error(
    path: object, batch: pa.RecordBatch, rows: np.ndarray, offset: int
) -> InputError:
    """The error for the first row of ``batch`` whose group is not in the groups table."""
    k = int(np.argmax(rows < 0))
    s, ln = batch.column("sample")[k].as_py(), batch.column("cell_line_id")[k].as_py()
    return InputError(path, f"group '{s}|{ln}' is not in the groups table", row=offset + k)


def check_tokens(
    path: object, tokens: np.ndarray, sorted_tokens: np.ndarray, order: np.ndarray, offset: int
) -> np.ndarray:
    """Gene position of every token (``sorted_tokens`` = genes' tokens sorted, ``order`` their
    positions); an InputError naming the first row whose token is not a gene."""
    pos = np.minimum(np.searchsorted(sorted_tokens, tokens), max(sorted_tokens.size - 1, 0))
    bad = (sorted_tokens[pos] != tokens) if sorted_tokens.size else np.ones(tokens.size, bool)
    if bad.any():
        k = int(np.argmax(bad))
        raise InputError(
            path, f"token_id {int(tokens[k])} is not in the gene table", row=offset + k
        )
    return order[pos]


def token_lookup(token_ids: Sequence[int] | np.ndarray, path: object = "genes"):
    """``(sorted tokens, their positions)`` for :func:`check_tokens`; repeated tokens fail."""
    t = np.asarray(token_ids, dtype=np.int64)
    order = np.argsort(t, kind="stable")
    st = t[order]
    if st.size and (np.diff(st) == 0).any():
        raise InputError(path, f"repeated token_id {int(st[1:][np.diff(st) == 0][0])}")
    return st, order


def open_counts(path: str | os.PathLike[str]):
    """The long table's ``ParquetFile`` (sample and cell_line_id read as dictionaries); a
    file without the long table's columns is an InputError naming it."""
    import pyarrow.parquet as pq

    from tahoeflow.io import parquet_file

    pf = parquet_file(path)
    names = set(pf.schema_arrow.names)
    missing = [c for c in COLUMNS if c not in names]
    if missing:
        raise InputError(path, f"missing column(s) {', '.join(missing)} (not a long pseudobulk?)")
    return pq.ParquetFile(path, read_dictionary=["sample", "cell_line_id"])
