"""Per-shard summaries: one row per cell, plus per-shard statistics that merge exactly.

Statistics come from compiled single passes over the CSR arrays (numba, ``cache=True``, single
threaded): per-cell and per-gene sums in one pass (``shard_stats``), pseudobulk sums per group
of cells in another (``pseudobulk``). Each adds in the order the previous ``np.bincount`` /
sparse indicator product did; both are tested against plain numpy / scipy references in
tests/test_perf_kernels.py. (Fusing the two passes into one, visiting cells group by group,
measured no faster.)
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from tahoeflow.cells.plan import Shard
from tahoeflow.cells.read import read_shard
from tahoeflow.cells.stats import keep_rows_inplace, pseudobulk, shard_stats
from tahoeflow.cells.vocab import Vocab
from tahoeflow.errors import InputError
from tahoeflow.sources.tahoe import CONTROL_DRUG

CELL_COLUMNS = {
    "cell_id": pa.string(),
    "shard": pa.string(),
    "file_row": pa.int64(),
    "sample": pa.string(),
    "plate": pa.string(),
    "drug": pa.string(),
    "dose_uM": pa.float64(),
    "cell_line_id": pa.string(),
    "moa_fine": pa.string(),
    "is_control": pa.bool_(),
    "n_genes": pa.int32(),
    "total_counts": pa.float64(),
    "expr_mean": pa.float64(),
    "expr_std": pa.float64(),
    "expr_skew": pa.float64(),
    "pct_mito": pa.float64(),
    "mean_log_norm": pa.float64(),
}
GENE_STAT_COLUMNS = ["n_cells", "sum_log", "sumsq_log", "sum_norm", "sumsq_norm"]


# --- one shard end to end ---------------------------------------------------------
def drop_stored_zeros(X: sp.csr_matrix) -> sp.csr_matrix:
    """Remove stored zeros in place (scanpy's ``X.eliminate_zeros()``), so a row's stored
    count is its number of expressed genes in both readers; X, for chaining."""
    if X.nnz and not X.data.all():
        X.eliminate_zeros()
    return X


def check_sample_metadata(
    path: object,
    sample: np.ndarray,
    known: np.ndarray,
    columns: dict[str, np.ndarray],
    file_row: np.ndarray,
    doses: pd.Series,
) -> None:
    """Each cell's ``drug`` / ``plate`` equals its sample's in sample_metadata (spaces ignored).

    ``known``: each cell's position in ``doses`` (from :func:`sample_doses`, whose ``attrs``
    hold the metadata's drug and plate per sample). A disagreement means the metadata row
    describes another well, so its dose would be joined to the wrong cells: an error naming
    the data row, the sample and the metadata row. Vectorised over the distinct
    (sample, value) pairs.
    """
    for name, values in columns.items():
        if doses.attrs.get(name) is None or len(values) == 0:
            continue
        ref = np.asarray(doses.attrs[name], dtype=object)
        codes, uniq = pd.factorize(np.asarray(values, dtype=object))
        got = _stripped(uniq).to_numpy(dtype=object)
        pair = known.astype(np.int64) * max(len(uniq), 1) + codes
        pairs = pd.unique(pair)  # order of first appearance
        s_idx, v_idx = pairs // max(len(uniq), 1), pairs % max(len(uniq), 1)
        bad = np.flatnonzero(got[v_idx] != ref[s_idx])
        if bad.size:
            b = int(bad[0])
            r = int(np.argmax(pair == pairs[b]))
            raise InputError(
                path,
                f"sample {sample[r]!r} has {name} {uniq[v_idx[b]]!r} here but {ref[s_idx[b]]!r} "
                f"in sample_metadata ({doses.attrs.get('path', 'sample_metadata')}, row "
                f"{int(s_idx[b])}); its dose would be joined to the wrong cells",
                row=int(file_row[r]),
            )


@dataclass(frozen=True)
class Filters:
    cell_lines: Sequence[str] = ()
    drugs: Sequence[str] = ()
    plates: Sequence[str] = ()
    min_genes: int = 10


FILTER_LISTS = ("cell_lines", "drugs", "plates")
"""The list filters, in the order they apply (then ``min_genes``)."""


def _stripped(values: Sequence[object]) -> pd.Index:
    return pd.Index(np.asarray(values, dtype=object)).astype(str).str.strip()


def filter_cells(
    filters: Filters,
    cell_line: np.ndarray,
    drug: np.ndarray,
    plate: np.ndarray,
    n_genes: np.ndarray,
) -> tuple[np.ndarray, dict[str, int], dict[str, list[str]]]:
    """(keep mask, cells removed by each filter, values seen) for the filters applied in order.

    ``counts`` has ``input``, ``removed_by_<filter>`` for the active list filters (cell_lines,
    drugs, plates), ``removed_by_min_genes`` and ``kept``: a cell is counted against the first
    filter that removes it. List values match with surrounding spaces ignored on both sides
    (Tahoe's data has 'Erdafitinib ' with a trailing space). A cell without any non-zero count
    is removed by ``min_genes`` even when it is 0 (none of its summaries would mean anything).
    ``seen``: for each active list filter, the distinct values (stripped, sorted) of its column
    in the rows read, from which the merge tells which filter values match nothing.
    """
    keep = np.ones(n_genes.size, dtype=bool)
    counts = {"input": int(n_genes.size)}
    seen: dict[str, list[str]] = {}
    for name, values, allowed in zip(
        FILTER_LISTS, (cell_line, drug, plate), (filters.cell_lines, filters.drugs, filters.plates),
        strict=True,
    ):  # fmt: skip
        if allowed:
            codes, uniq = pd.factorize(np.asarray(values, dtype=object))  # few distinct values
            names = _stripped(uniq)
            ok_uniq = np.append(names.isin(_stripped(list(allowed))), False)
            ok = ok_uniq[codes]  # a code of -1 (a null) is never kept
            seen[name] = sorted(set(names))
            counts[f"removed_by_{name}"] = int((keep & ~ok).sum())
            keep &= ok
    ok = n_genes >= max(filters.min_genes, 1)
    counts["removed_by_min_genes"] = int((keep & ~ok).sum())
    keep &= ok
    counts["kept"] = int(keep.sum())
    return keep, counts, seen


@dataclass
class LoadedShard:
    obs: pd.DataFrame  # cells kept, in file order
    X: sp.csr_matrix  # counts of those cells
    filter_counts: dict[str, int] = field(
        default_factory=dict
    )  # cells removed by each filter, in order
    values_seen: dict[str, list[str]] = field(default_factory=dict)  # see filter_cells
    zero_count_rows: int = 0  # rows read without any non-zero count (before the filters)


def load_shard(
    path: str | Path,
    shard: Shard,
    vocab: Vocab,
    doses: pd.Series,
    filters: Filters,
    *,
    control_drug: str = CONTROL_DRUG,
    allow_non_integer: bool = False,
    warn: Callable[[str], None] | None = None,
    threads: int = 1,
) -> LoadedShard:
    """Read, validate and filter one shard. The same function feeds every per-shard job.

    Besides the reader's checks (``shards.read_shard``), each cell's sample must be in
    sample_metadata with the same drug and plate (:func:`check_sample_metadata`). Stored zeros
    are dropped (as the h5ad reader does). ``threads`` > 1 overlaps decoding with the
    conversion (see ``shards.read_shard``).
    """
    obs, X = read_shard(
        path, vocab, shard.row_start, shard.row_stop,
        obs_columns=["drug", "sample", "BARCODE_SUB_LIB_ID", "cell_line_id", "moa-fine", "plate"],
        allow_non_integer=allow_non_integer, warn=warn, threads=threads,
    )  # fmt: skip
    n = X.shape[0]
    file_row = shard.row_start + np.arange(n, dtype=np.int64)
    sample = obs["sample"]
    known = pd.Index(doses.index).get_indexer(sample)
    if (known < 0).any():
        r = int(np.flatnonzero(known < 0)[0])
        raise InputError(
            path, f"sample {sample[r]!r} is not in sample_metadata", row=int(file_row[r])
        )
    check_sample_metadata(path, sample, known, {"drug": obs["drug"], "plate": obs["plate"]},
                          file_row, doses)  # fmt: skip
    drop_stored_zeros(X)
    n_genes = np.diff(X.indptr)
    keep, counts, seen = filter_cells(
        filters, obs["cell_line_id"], obs["drug"], obs["plate"], n_genes
    )
    idx = np.flatnonzero(keep)
    df = pd.DataFrame(
        {
            "cell_id": obs["BARCODE_SUB_LIB_ID"][idx],
            "shard": shard.name,
            "file_row": file_row[idx],
            "sample": sample[idx],
            "plate": obs["plate"][idx],
            "drug": obs["drug"][idx],
            "dose_uM": doses.to_numpy()[known[idx]],
            "cell_line_id": obs["cell_line_id"][idx],
            "moa_fine": obs["moa-fine"][idx],
            "is_control": obs["drug"][idx] == control_drug,
        }
    )
    return LoadedShard(
        df, keep_rows_inplace(X, keep) if idx.size < n else X, counts, seen,
        int(np.count_nonzero(n_genes == 0)),
    )  # fmt: skip


# --- across shards (the merge) ----------------------------------------------------------
def sum_gene_stats_tables(
    tables: Iterable[tuple[object, pa.Table]],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(token ids, element-wise sums of GENE_STAT_COLUMNS) of ``(source, table)`` pairs, added
    in their order; a table whose genes differ from the first's is an InputError naming its
    source."""
    acc: dict[str, np.ndarray] | None = None
    tokens = None
    for p, t in tables:
        if tokens is None:
            tokens = t.column("token_id").to_numpy()
            acc = {c: t.column(c).to_numpy().copy() for c in GENE_STAT_COLUMNS}
        else:
            if not np.array_equal(tokens, t.column("token_id").to_numpy()):
                raise InputError(p, "gene order differs from the first shard's")
            for c in GENE_STAT_COLUMNS:
                acc[c] += t.column(c).to_numpy()
    if acc is None:
        raise InputError("merge", "no shard statistics to merge")
    return tokens, acc


def filter_warnings(records: Sequence[Mapping[str, Any]], filters: Mapping[str, Any]) -> list[str]:
    """One line per problem the shards' ``qc.json`` records show only together.

    * a value of ``filters.cell_lines`` / ``drugs`` / ``plates`` that matches no row of any
      shard (a letter O typed for a zero, a name from another release): the line names the
      config key and the value, and the closest value in the data;
    * a file all of whose rows have no non-zero count (each of its cells is removed by
      ``min_genes``).

    A shard record lacking ``values_seen`` / ``zero_count_rows`` is skipped for that check.
    """
    out = []
    n_input = sum(int(r.get("input", 0)) for r in records)
    for key in FILTER_LISTS:
        allowed = filters.get(key) or ()
        parts = [r["values_seen"][key] for r in records if key in (r.get("values_seen") or {})]
        if not allowed or len(parts) < len(records):
            continue
        seen = sorted({v for part in parts for v in part})
        for value in dict.fromkeys(str(v) for v in allowed):
            if value.strip() in seen:
                continue
            close = difflib.get_close_matches(value.strip(), seen, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            out.append(
                f"config key 'filters.{key}': {value!r} matches no cell in the {n_input} rows "
                f"read ({len(seen)} distinct values there){hint}"
            )
    by_file: dict[str, list[int]] = {}
    for r in records:
        if "file" in r and "zero_count_rows" in r:
            acc = by_file.setdefault(str(r["file"]), [0, 0])
            acc[0] += int(r["input"])
            acc[1] += int(r["zero_count_rows"])
    for path, (n, zero) in by_file.items():
        if n and zero == n:
            out.append(
                f"{path}: all {n} rows have no non-zero count (a file of zeros?); "
                "every cell of it is removed (counted in removed_by_min_genes)"
            )
    return out


def filter_qc_table(records: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """``filter_qc.csv``: the shards' numeric qc counts and a ``total`` row.

    Raises :class:`InputError` naming the filter that removed the last cells when none is left.
    """
    qc = pd.DataFrame(
        [{k: v for k, v in r.items() if k not in ("file", "values_seen")} for r in records]
    ).fillna(0)
    total = qc.drop(columns="shard").sum(numeric_only=True)
    if total["kept"] == 0:
        steps = [c for c in qc.columns if c.startswith("removed_by_")]
        last = [s for s in steps if total[s] > 0]
        detail = ", ".join(
            f"{s.removeprefix('removed_by_')} removed {int(total[s])}" for s in steps
        )
        culprit = (
            f"filters.{last[-1].removeprefix('removed_by_')}" if last else "the input (no rows)"
        )
        raise InputError(
            "filters",
            f"zero cells left after the filters ({int(total['input'])} read; {detail}); the "
            f"last cells were removed by {culprit}",
        )
    return pd.concat([qc, total.to_frame().T.assign(shard="total")], ignore_index=True)


def _strings(values: object) -> pa.Array:
    return pa.array(np.asarray(values, dtype=object), pa.string())


def summarize(
    loaded: LoadedShard, vocab: Vocab, threads: int = 1
) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(cells, gene_stats, pseudobulk) Arrow tables of one loaded shard (schemas: data contract).

    Two compiled passes over the counts: ``shard_stats`` (per cell and per gene) and
    ``pseudobulk`` (per group of cells); with ``threads`` > 1 they run at the same time (both
    only read X, and each adds in its own fixed order: the same bits).
    """
    X, obs = loaded.X, loaded.obs
    # groups sorted by (sample, cell line): sorted codes of each column, combined
    s_codes, s_uniq = pd.factorize(obs["sample"].to_numpy(), sort=True)
    l_codes, l_uniq = pd.factorize(obs["cell_line_id"].to_numpy(), sort=True)
    n_lines = max(len(l_uniq), 1)
    pairs, codes = np.unique(s_codes.astype(np.int64) * n_lines + l_codes, return_inverse=True)
    if threads > 1:
        with ThreadPoolExecutor(1, thread_name_prefix="tahoeflow-pseudobulk") as pool:
            pb_future = pool.submit(pseudobulk, X, codes, pairs.size)
            cs, gs = shard_stats(X, vocab.is_mito)
            pb = pb_future.result()
    else:
        cs, gs = shard_stats(X, vocab.is_mito)
        pb = pseudobulk(X, codes, pairs.size)
    cells = obs.assign(**cs)
    cells_t = pa.Table.from_pandas(
        cells, schema=pa.schema(list(CELL_COLUMNS.items())), preserve_index=False
    )
    genes_t = pa.table({"token_id": vocab.token_ids, **gs})
    per_value = np.repeat(pairs, np.diff(pb.indptr))  # the (sample, line) pair of each sum
    pb_t = pa.table(
        {
            "sample": _strings(s_uniq).take(per_value // n_lines),
            "cell_line_id": _strings(l_uniq).take(per_value % n_lines),
            "token_id": pa.array(vocab.token_ids[pb.indices], pa.int64()),
            "count": pa.array(pb.data, pa.float64()),
        }
    )
    return cells_t, genes_t, pb_t
