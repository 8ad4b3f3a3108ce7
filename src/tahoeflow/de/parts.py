"""Parallel DE jobs: each job takes a part of the cell lines (a contrast never crosses lines)
and reads only that part of the merged pseudobulk."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp


def lines_of_part(cell_lines: Sequence[str], part: int, n_parts: int) -> list[str]:
    """The cell lines DE job ``part`` (of ``n_parts``) analyses: the sorted distinct lines dealt
    round-robin (line k goes to part k mod n_parts). A contrast never crosses cell lines (it may
    cross plates), so the parts are independent; with ``n_parts`` >= the number of lines each
    job has at most one line, and the jobs past the last line have none."""
    if not 0 <= part < n_parts:
        raise ValueError(f"part {part} is not in 0..{n_parts - 1}")
    return sorted(set(map(str, cell_lines)))[part::n_parts]


def pseudobulk_row_groups(counts_path: str, lines: Sequence[str]) -> list[int]:
    """Row groups of the long pseudobulk that can hold rows of ``lines``, by their
    ``cell_line_id`` statistics (min/max): with the merged pseudobulk written one line per row
    group (:func:`tahoeflow.merge.pseudobulk.write_pseudobulk`) exactly the row groups of those lines. A
    row group without statistics is kept (the rows are filtered after the read anyway)."""
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(counts_path).metadata
    want = sorted(set(map(str, lines)))
    if not want:
        return []
    out = []
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        col = next(
            (rg.column(j) for j in range(rg.num_columns)
             if rg.column(j).path_in_schema == "cell_line_id"),
            None,
        )  # fmt: skip
        st = None if col is None else col.statistics
        if st is None or not st.has_min_max:
            out.append(i)
            continue
        lo, hi = st.min, st.max
        lo = lo.decode() if isinstance(lo, bytes) else str(lo)
        hi = hi.decode() if isinstance(hi, bytes) else str(hi)
        k = int(np.searchsorted(want, lo))  # first wanted line >= min
        if k < len(want) and want[k] <= hi:
            out.append(i)
    return out


def read_pseudobulk_part(
    counts_path: str, groups_path: str, genes_path: str, part: int, n_parts: int
) -> tuple[sp.csr_matrix, pd.DataFrame, pd.DataFrame, list[str]]:
    """Read only the wells of part ``part``'s cell lines: ``(counts, groups, genes, lines)``.

    The groups table (one row per well) is read whole; of the long pseudobulk counts only the
    row groups that can hold the part's lines are decoded (:func:`pseudobulk_row_groups`: the
    merged pseudobulk has one cell line per row group), then filtered on ``cell_line_id`` (a
    file with mixed row groups gives the same rows). ``genes`` is the merged gene table
    (token_id, ensembl_id, gene_symbol), the columns of ``counts``.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tahoeflow.merge.conditions import pseudobulk_matrix

    groups = pd.read_parquet(groups_path)
    lines = lines_of_part(groups["cell_line_id"].astype(str), part, n_parts)
    groups = groups[groups["cell_line_id"].astype(str).isin(lines)].reset_index(drop=True)
    cols = [c for c in ("token_id", "ensembl_id", "gene_symbol")
            if c in pq.read_schema(genes_path).names]  # fmt: skip
    genes = pd.read_parquet(genes_path, columns=cols)
    pf = pq.ParquetFile(counts_path)
    columns = ["sample", "cell_line_id", "token_id", "count"]
    table = pf.read_row_groups(pseudobulk_row_groups(counts_path, lines), columns=columns)
    table = table.filter(pc.is_in(table.column("cell_line_id"), pa.array(lines, pa.string())))
    X = pseudobulk_matrix(table.to_pandas(), groups, genes["token_id"].to_numpy())
    return X, groups, genes, lines
