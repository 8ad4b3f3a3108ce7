"""Parallel DE jobs: each job takes a part of the cell lines (a contrast never crosses lines)
and reads only that part of the merged pseudobulk."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from tahoeflow.de.design import CONTROL_DRUG


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


WORK_ROW_GROUP = 1 << 16
"""Rows of a row group of :func:`de_part`'s per-line work files (read back one batch each)."""
WORK_PAGE_BYTES = 1 << 16
"""Data page bytes of those work files (a reader holds one page a column)."""


def _drug_chunks(g: pd.DataFrame, control: str, n: int) -> list[np.ndarray]:
    """Row sets of a line's groups: the control wells with the wells of ``n`` treated drugs at
    a time, drugs in sorted order (each chunk's table then follows the previous one's); the
    whole table when it has no treated well."""
    if n < 1:
        raise ValueError(f"drugs_per_chunk must be >= 1, got {n}")
    is_ctrl = (g["drug"] == control).to_numpy()
    drugs = sorted(set(g.loc[~is_ctrl, "drug"]))
    if not drugs:
        return [np.arange(len(g))]
    return [
        np.flatnonzero(is_ctrl | g["drug"].isin(drugs[i : i + n]).to_numpy())
        for i in range(0, len(drugs), n)
    ]


def read_pseudobulk_line(
    counts_path: str, groups: pd.DataFrame, line: str, token_ids: np.ndarray
) -> tuple[sp.csr_matrix, pd.DataFrame]:
    """The wells of one cell line: ``(counts, groups)``, ``groups`` the line's rows of the
    groups table (index reset), ``counts`` their CSR over ``token_ids``. Only the line's row
    groups are decoded, with the string columns as dictionaries (no Python string a row)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from tahoeflow.errors import InputError

    g = groups[groups["cell_line_id"].astype(str) == str(line)].reset_index(drop=True)
    pf = pq.ParquetFile(counts_path, read_dictionary=["sample", "cell_line_id"])
    columns = ["sample", "cell_line_id", "token_id", "count"]
    t = pf.read_row_groups(pseudobulk_row_groups(counts_path, [line]), columns=columns)
    lines = pc.cast(t.column("cell_line_id"), pa.string())
    t = t.filter(pc.equal(lines, pa.scalar(str(line), pa.string())))
    sample = t.column("sample").combine_chunks()
    if not isinstance(sample, pa.DictionaryArray):
        sample = sample.dictionary_encode()
    key = pd.Index(g["sample"].astype(str))
    row_of = key.get_indexer(sample.dictionary.to_pandas().astype(str))
    rows = row_of[sample.indices.to_numpy(zero_copy_only=False)] if len(sample) else row_of[:0]
    cols = pd.Index(token_ids).get_indexer(t.column("token_id").to_numpy())
    if (rows < 0).any() or (cols < 0).any():
        raise InputError(
            counts_path,
            "counts reference a (sample, cell line) group or gene that is not in the tables",
        )
    X = sp.csr_matrix(
        (t.column("count").to_numpy().astype(np.float64, copy=False), (rows, cols)),
        shape=(len(g), len(token_ids)),
    )
    return X, g


def de_part(
    counts_path: str,
    groups_path: str,
    genes_path: str,
    part: int,
    n_parts: int,
    table_out: str,
    skipped_out: str,
    *,
    method: str = "voom",
    control: str = CONTROL_DRUG,
    drugs_per_chunk: int = 32,
    log=print,
    **de_options,
) -> tuple[int, int, int]:
    """DE job ``part`` of ``n_parts``: :func:`~tahoeflow.de.pipeline.pseudobulk_de` one cell line
    at a time (:func:`read_pseudobulk_line`), each line's table to a work file, then gathered
    (:func:`~tahoeflow.de.gather.gather_toptables`, ``adj.P.Val.global`` over the part) into
    ``table_out`` sorted by condition keys then gene; the skips to ``skipped_out``. The files
    are those of one :func:`pseudobulk_de` call on all of the part's wells; memory is one line's
    pseudobulk and the DE table of ``drugs_per_chunk`` of its drugs (a contrast needs its own
    wells and the line's controls only). Returns (lines, contrasts, rows)."""
    from pathlib import Path

    import pyarrow.parquet as pq

    from tahoeflow import io as tio
    from tahoeflow.de.gather import gather_toptables, work_dir
    from tahoeflow.de.pipeline import pseudobulk_de
    from tahoeflow.de.tables import CONDITION_KEYS, SKIPPED_COLUMNS, stat_columns, table_schema

    groups = pd.read_parquet(groups_path)
    lines = lines_of_part(groups["cell_line_id"].astype(str), part, n_parts)
    cols = [c for c in ("token_id", "ensembl_id", "gene_symbol")
            if c in pq.read_schema(genes_path).names]  # fmt: skip
    genes = pd.read_parquet(genes_path, columns=cols)
    token_ids = genes["token_id"].to_numpy()
    schema = table_schema(method)
    log(f"part {part} of {n_parts}: cell lines {lines}; {len(token_ids)} genes")
    skips = []
    n_con = 0
    Path(table_out).parent.mkdir(parents=True, exist_ok=True)
    with work_dir(table_out, "lines") as work:
        files = []
        for k, line in enumerate(lines):
            X, g = read_pseudobulk_line(counts_path, groups, line, token_ids)
            path = Path(work) / f"{k}.parquet"
            n_line = n_rows_line = 0
            with pq.ParquetWriter(path, schema, data_page_size=WORK_PAGE_BYTES) as w:
                for rows in _drug_chunks(g, control, drugs_per_chunk):
                    top, skipped = pseudobulk_de(
                        X[rows], g.iloc[rows].reset_index(drop=True), token_ids,
                        method=method, genes=genes, return_skipped=True, control=control,
                        **de_options,
                    )  # fmt: skip
                    n_line += top[CONDITION_KEYS].drop_duplicates().shape[0]
                    n_rows_line += len(top)
                    t = pa.Table.from_pandas(top, schema=schema, preserve_index=False)
                    w.write_table(t, row_group_size=WORK_ROW_GROUP)
                    skips.append(skipped)
                    del top, t
            n_con += n_line
            log(f"{line}: {X.shape[0]} wells; {n_line} contrasts, {n_rows_line} rows")
            files.append(path)
            del X, g
        if files:
            n_rows = gather_toptables(files, table_out, schema, stat_columns(method)["P.Value"])
        else:
            from tahoeflow.de.tables import empty_toptable

            empty = empty_toptable(token_ids.dtype, method)
            tio.write_parquet(
                pa.Table.from_pandas(empty, schema=schema, preserve_index=False), table_out
            )
            n_rows = 0
    full = [s for s in skips if len(s)]
    if full:
        skipped = pd.concat(full, ignore_index=True)
        skipped = skipped.sort_values(CONDITION_KEYS, kind="mergesort").reset_index(drop=True)
    elif skips:
        skipped = skips[0]
    else:
        skipped = pd.DataFrame({c: [] for c in SKIPPED_COLUMNS})
    tio.write_csv(skipped[SKIPPED_COLUMNS], skipped_out)
    return len(lines), n_con, n_rows
