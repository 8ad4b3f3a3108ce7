"""Merging per-shard outputs. Every merge streams over the shards one at a time.

* gene statistics: element-wise sums (exact: sums of sums);
* control means: per (cell line, plate) sums and counts of ``mean_log_norm`` over control
  cells are summed first, then each shard's cells get ``delta_mean`` and are appended to
  the merged table with a ``ParquetWriter``, so memory is bounded by one shard;
* pseudobulk: summed counts per (sample, cell line, gene), streamed with int64-packed keys.

Hierarchical merges (``merge.fan_in``): partial merges of at most fan_in inputs write the same
layout as a shard (gene statistics, pseudobulk) or, for the cells, each shard's control sums
unsummed plus the sorted 64-bit hashes of the cell ids (:func:`cells_part`,
:func:`cells_part_merge`); the final merges read the partials and write the same bytes as one
merge over every shard (gene statistics: float sums up to a few ulp, another association).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.cells.summarize import CELL_COLUMNS, GENE_STAT_COLUMNS
from tahoeflow.errors import InputError

MERGED_CELL_SCHEMA = pa.schema(
    [
        *CELL_COLUMNS.items(),
        ("control_mean", pa.float64()),
        ("delta_mean", pa.float64()),
        ("control_level", pa.string()),
    ]
)


def merge_gene_stats(paths: Sequence[str | Path], gene_metadata: pa.Table, n_obs: int) -> pa.Table:
    """Sum per-shard gene statistics; add annotations, n_obs and the mean/variance over all cells.

    mean_log and var_log are the mean and the unbiased variance (ddof=1) of log1p(CP10k) over
    all ``n_obs`` cells, zeros included.
    """
    tokens, acc = _sum_stats(paths)
    meta = gene_metadata.to_pandas().set_index("token_id").reindex(tokens)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean_log = acc["sum_log"] / n_obs
        var_log = (acc["sumsq_log"] - n_obs * mean_log**2) / (n_obs - 1)
    return pa.table(
        {
            "token_id": pa.array(tokens, pa.int64()),
            "ensembl_id": pa.array(meta["ensembl_id"].astype(object).to_numpy(), pa.string()),
            "gene_symbol": pa.array(meta["gene_symbol"].astype(object).to_numpy(), pa.string()),
            **{c: acc[c] for c in GENE_STAT_COLUMNS},
            "n_obs": pa.array(np.full(tokens.size, n_obs), pa.int64()),
            "mean_log": mean_log,
            "var_log": np.maximum(var_log, 0.0),
        }
    )


def _sum_stats(paths: Sequence[str | Path]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(token ids, element-wise sums of GENE_STAT_COLUMNS), added in the order of ``paths``."""
    acc: dict[str, np.ndarray] | None = None
    tokens = None
    for p in paths:
        t = pq.read_table(p)
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


def sum_gene_stats_part(paths: Sequence[str | Path]) -> pa.Table:
    """A partial merge of gene statistics: token_id and the summed GENE_STAT_COLUMNS of
    ``paths`` (shard gene_stats tables or other partials: the same columns), in the same
    layout, so that partials merge like shards (:func:`merge_gene_stats` reads either)."""
    tokens, acc = _sum_stats(paths)
    return pa.table({"token_id": pa.array(tokens, pa.int64()), **acc})


def _shard_control(path: str | Path) -> tuple[pa.Table | None, np.ndarray]:
    """(sum and count of control mean_log_norm per (cell line, plate), or None without a
    control cell; the 64-bit hashes of the cell ids) of one shard's cells."""
    t = pq.read_table(
        path, columns=["cell_id", "cell_line_id", "plate", "is_control", "mean_log_norm"]
    )
    ids = t.column("cell_id").to_pandas()
    hashes = pd.util.hash_pandas_object(ids, index=False).to_numpy()
    t = t.filter(pc.field("is_control"))
    if not t.num_rows:
        return None, hashes
    agg = t.group_by(["cell_line_id", "plate"]).aggregate(
        [("mean_log_norm", "sum"), ("mean_log_norm", "count")]
    )
    return agg, hashes


def _sum_controls(parts: Sequence[pa.Table]) -> pd.DataFrame:
    """Per-shard control aggregates (in shard order) summed per (cell_line_id, plate)."""
    if not parts:
        return pd.DataFrame(columns=["cell_line_id", "plate", "sum", "count"])
    df = pa.concat_tables(parts).to_pandas()
    df = df.rename(columns={"mean_log_norm_sum": "sum", "mean_log_norm_count": "count"})
    return df.groupby(["cell_line_id", "plate"], as_index=False)[["sum", "count"]].sum()


def control_sums(cells_paths: Sequence[str | Path]) -> pd.DataFrame:
    """Sum and count of mean_log_norm over control cells per (cell_line_id, plate), all shards.

    The same pass checks that no cell id appears twice: it keeps one 64-bit hash per cell
    (12 bytes a cell with the shard number; the only state of the merge that grows with the
    dataset) and compares the sorted hashes once at the end.
    """
    parts, hashes, owners = [], [], []
    for i, p in enumerate(cells_paths):
        agg, h = _shard_control(p)
        hashes.append(h)
        owners.append(np.full(len(h), i, dtype=np.int32))
        if agg is not None:
            parts.append(agg)
    _check_unique(
        cells_paths,
        np.concatenate(hashes) if hashes else np.array([], np.uint64),
        np.concatenate(owners) if owners else np.array([], np.int32),
    )
    return _sum_controls(parts)


def _check_unique(paths: Sequence[str | Path], hashes: np.ndarray, owners: np.ndarray) -> None:
    order = np.argsort(hashes, kind="stable")
    h = hashes[order]
    dup = np.flatnonzero(h[1:] == h[:-1])
    if not dup.size:
        return
    # confirm with the real ids (a 64-bit hash collision is possible, if unlikely)
    for j in dup[:100]:
        a, b = owners[order[j]], owners[order[j + 1]]
        ids_a = pq.read_table(paths[a], columns=["cell_id"]).column("cell_id").to_pandas()
        ids_b = (
            ids_a
            if a == b
            else pq.read_table(paths[b], columns=["cell_id"]).column("cell_id").to_pandas()
        )
        common = (
            pd.Index(ids_a).intersection(pd.Index(ids_b)) if a != b else ids_a[ids_a.duplicated()]
        )
        if len(common):
            where = f"also appears in {paths[b]}" if a != b else "appears twice in this shard"
            raise InputError(paths[a], f"cell id {list(common)[0]!r} {where}")


# --- hierarchical merge of the cells' control sums and id hashes ---------------------------
_IDS_DTYPE = np.dtype([("hash", "<u8"), ("shard", "<i4")])
_SHARDS_KEY = b"tahoeflow.cells.shards"
_CONTROL_SCHEMA = pa.schema(
    [
        ("shard", pa.int32()),
        ("cell_line_id", pa.string()),
        ("plate", pa.string()),
        ("mean_log_norm_sum", pa.float64()),
        ("mean_log_norm_count", pa.int64()),
    ]
)
IDS_CHUNK = 1 << 22
"""Most id hashes a merge of sorted hash files holds at once (12 bytes each: 48 MB)."""


def _part_shards(sums_path: str | Path) -> dict[int, str]:
    meta = pq.read_schema(sums_path).metadata or {}
    if _SHARDS_KEY not in meta:
        raise InputError(sums_path, "not a partial merge of cells (no shard list)")
    return {int(k): v for k, v in json.loads(meta[_SHARDS_KEY]).items()}


def _write_control_part(parts: Sequence[pa.Table], shards: dict[int, str], path) -> None:
    t = pa.concat_tables(parts) if parts else _CONTROL_SCHEMA.empty_table()
    meta = {_SHARDS_KEY: tio.to_json({str(k): v for k, v in sorted(shards.items())})}
    tio.write_parquet(t.replace_schema_metadata(meta), path)


def _write_ids(ids: np.ndarray, path: str | Path) -> None:
    with tio.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, ids, allow_pickle=False)


def _ids_header(path: str | Path) -> tuple[int, int]:
    """(number of hashes, byte offset of the data) of an id hash file, from its header."""
    with open(path, "rb") as f:
        major, _ = np.lib.format.read_magic(f)
        read = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read(f)
        if dtype != _IDS_DTYPE or len(shape) != 1 or fortran:
            raise InputError(path, f"not a sorted id hash file (dtype {dtype}, shape {shape})")
        return shape[0], f.tell()


def _first_at_least(fd: int, offset: int, lo: int, hi: int, value: int) -> int:
    """Binary search of the first hash >= ``value`` in records lo..hi of an open id file (one
    8-byte read a step: no mapping, so the file's pages never count as the job's memory)."""
    size = _IDS_DTYPE.itemsize
    while lo < hi:
        mid = (lo + hi) // 2
        if int.from_bytes(os.pread(fd, 8, offset + mid * size), "little") < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


def cells_part(cells_paths: Sequence[str | Path], indices: Sequence[int], sums_out, ids_out) -> int:
    """First level of the hierarchical cells merge, over a group of shards (``indices``: their
    positions among all shards, in order). Writes ``sums_out`` (each shard's control sum and
    count per (cell line, plate), unsummed, so the final sums add in shard order exactly as a
    single-level merge does; the shards' paths in its metadata) and ``ids_out`` (the group's
    cell id hashes with their shard number, sorted: 12 bytes a cell). A cell id twice in the
    group is an InputError naming the shard(s). Returns the number of cells."""
    if len(cells_paths) != len(indices):
        raise ValueError("cells_paths and indices differ in length")
    parts, hashes, owners = [], [], []
    shards = {int(i): str(p) for i, p in zip(indices, cells_paths, strict=True)}
    for i, p in zip(indices, cells_paths, strict=True):
        agg, h = _shard_control(p)
        hashes.append(h)
        owners.append(np.full(len(h), i, dtype=np.int32))
        if agg is not None:
            cols = [agg.column(c) for c in _CONTROL_SCHEMA.names[1:]]
            shard = pa.array(np.full(agg.num_rows, i, np.int32))
            parts.append(pa.Table.from_arrays([shard, *cols], schema=_CONTROL_SCHEMA))
    h = np.concatenate(hashes) if hashes else np.array([], np.uint64)
    o = np.concatenate(owners) if owners else np.array([], np.int32)
    _check_unique(shards, h, o)
    order = np.argsort(h, kind="stable")
    ids = np.empty(h.size, _IDS_DTYPE)
    ids["hash"], ids["shard"] = h[order], o[order]
    _write_control_part(parts, shards, sums_out)
    _write_ids(ids, ids_out)
    return int(h.size)


def _merge_ids(
    ids_paths: Sequence[str | Path],
    shards: dict[int, str],
    out: str | Path | None = None,
    chunk: int = IDS_CHUNK,
) -> int:
    """Merge sorted id hash files range by range of hash values (about ``chunk`` hashes a
    range; hashes are uniform), checking across files that no cell id appears twice
    (confirmed with the real ids of the shards named in ``shards``); write the merged sorted
    file to ``out`` when given. Range bounds are found by binary search with 8-byte reads and
    ranges read and written with plain file I/O (no memory map), so memory stays at a few
    copies of one range whatever the number of cells."""
    headers = [_ids_header(p) for p in ids_paths]
    n = sum(h[0] for h in headers)
    n_ranges = max(1, -(-n // max(chunk, 1)))
    starts = [0] * len(headers)
    with contextlib.ExitStack() as stack:
        fds = [os.open(p, os.O_RDONLY) for p in ids_paths]
        for fd in fds:
            stack.callback(os.close, fd)
        f = None
        if out is not None:
            f = stack.enter_context(open(stack.enter_context(tio.atomic_path(out)), "wb"))
            header = {"descr": np.lib.format.dtype_to_descr(_IDS_DTYPE), "fortran_order": False}
            np.lib.format.write_array_header_1_0(f, {**header, "shape": (n,)})
        for b in range(n_ranges):
            edge = ((b + 1) << 64) // n_ranges  # hashes below it (uniform: ~chunk of them)
            pieces = []
            for j, (size, offset) in enumerate(headers):
                stop = (
                    size
                    if b == n_ranges - 1
                    else _first_at_least(fds[j], offset, starts[j], size, edge)
                )
                if stop > starts[j]:
                    pieces.append(
                        np.fromfile(
                            ids_paths[j],
                            dtype=_IDS_DTYPE,
                            count=stop - starts[j],
                            offset=offset + starts[j] * _IDS_DTYPE.itemsize,
                        )
                    )
                starts[j] = stop
            if not pieces:
                continue
            piece = np.concatenate(pieces)
            del pieces
            piece = piece[np.argsort(piece["hash"], kind="stable")]
            _check_unique(shards, piece["hash"], piece["shard"])
            if f is not None:
                f.write(piece.tobytes())
    return n


def cells_part_merge(
    sums_paths: Sequence[str | Path],
    ids_paths: Sequence[str | Path],
    sums_out: str | Path,
    ids_out: str | Path,
    chunk: int = IDS_CHUNK,
) -> int:
    """A higher level of the hierarchical cells merge: concatenates partial control sums (in
    order: the shards stay in order) and merges the sorted id hashes (streamed, at most about
    ``chunk`` hashes in memory), checking for a cell id in two groups. Returns the cells."""
    parts, shards = [], {}
    for p in sums_paths:
        shards.update(_part_shards(p))
        parts.append(pq.read_table(p).replace_schema_metadata(None))
    n = _merge_ids(ids_paths, shards, ids_out, chunk)
    _write_control_part(parts, shards, sums_out)
    return n


def control_sums_of_parts(
    cells_paths: Sequence[str | Path],
    sums_paths: Sequence[str | Path],
    ids_paths: Sequence[str | Path],
    chunk: int = IDS_CHUNK,
) -> pd.DataFrame:
    """What :func:`control_sums` returns, from the top level of a hierarchical merge: the same
    per-shard aggregates summed in the same order (bit-identical sums), and the duplicate check
    across the partials' sorted hashes (streamed). The partials must cover ``cells_paths``."""
    parts, shards = [], {}
    for p in sums_paths:
        shards.update(_part_shards(p))
        t = pq.read_table(p)
        if t.num_rows:
            parts.append(t.drop_columns(["shard"]).replace_schema_metadata(None))
    want = [str(p) for p in cells_paths]
    got = [shards[k] for k in sorted(shards)]
    if got != want:
        missing = sorted(set(want) - set(got))
        raise InputError(
            sums_paths[0] if sums_paths else "merge",
            f"the partial merges cover {len(got)} shard files, not the {len(want)} merged"
            + (f" (missing {missing[0]})" if missing else " (in another order)"),
        )
    _merge_ids(ids_paths, shards, None, chunk)
    return _sum_controls(parts)


def control_means(sums: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """(mean by (cell line, plate), mean by cell line across plates) of control mean_log_norm.

    Both are float64 Series, empty when there is no control cell at all (then every cell gets
    ``control_level`` "none" and a null ``delta_mean``).
    """
    sums = sums.astype({"sum": np.float64, "count": np.float64})
    by_plate = (sums["sum"] / sums["count"]).set_axis(
        pd.MultiIndex.from_frame(sums[["cell_line_id", "plate"]].astype(object))
    )
    per_line = sums.groupby("cell_line_id")[["sum", "count"]].sum()
    by_line = (per_line["sum"] / per_line["count"]).astype(np.float64)
    return by_plate, by_line


def add_delta_mean(cells: pd.DataFrame, by_plate: pd.Series, by_line: pd.Series) -> pd.DataFrame:
    """delta_mean = mean_log_norm minus the control mean of the same cell line on the same plate.

    Falls back to the cell line's control mean across plates; cells with no control get null.
    ``control_level`` says which was used: "plate", "cell_line" or "none".
    """
    key = pd.MultiIndex.from_arrays([cells["cell_line_id"], cells["plate"]])
    cm = by_plate.reindex(key).to_numpy(dtype=np.float64, na_value=np.nan)
    level = np.where(np.isnan(cm), "none", "plate").astype(object)
    fb = by_line.reindex(cells["cell_line_id"]).to_numpy(dtype=np.float64, na_value=np.nan)
    use_fb = np.isnan(cm) & ~np.isnan(fb)
    cm = np.where(use_fb, fb, cm)
    level[use_fb] = "cell_line"
    out = cells.copy()
    out["control_mean"] = cm
    out["delta_mean"] = cells["mean_log_norm"].to_numpy() - cm
    out["control_level"] = level
    return out


def merge_cells(
    cells_paths: Sequence[str | Path],
    out_path: str | Path,
    qc_path: str | Path,
    parts: tuple[Sequence[str | Path], Sequence[str | Path]] | None = None,
) -> dict[str, int]:
    """Stream shards into one cells table with delta_mean; write a QC table of control coverage.

    ``parts``: (control sums, id hashes) files of the top level of a hierarchical merge
    (:func:`cells_part`, :func:`cells_part_merge`); without them the control sums and the
    duplicate check run over the shards here. Either way the output is the same bytes.
    Raises InputError on a cell id that appears twice (naming both shards) and when no cell is
    left at all. Returns counts by control level.
    """
    sums = (
        control_sums(cells_paths)
        if parts is None
        else control_sums_of_parts(cells_paths, parts[0], parts[1])
    )
    by_plate, by_line = control_means(sums)
    counts = {"plate": 0, "cell_line": 0, "none": 0}
    qc_rows = []
    writer = None
    with tio.atomic_path(out_path) as tmp:
        try:
            for p in cells_paths:
                df = pq.read_table(p).to_pandas()
                df = add_delta_mean(df, by_plate, by_line)
                for lvl, c in df["control_level"].value_counts().items():
                    counts[lvl] += int(c)
                if len(df):
                    qc_rows.append(
                        df.groupby(["cell_line_id", "plate", "control_level"])
                        .size()
                        .rename("n_cells")
                        .reset_index()
                    )
                t = pa.Table.from_pandas(df, schema=MERGED_CELL_SCHEMA, preserve_index=False)
                if writer is None:
                    writer = pq.ParquetWriter(tmp, t.schema, compression="zstd")
                writer.write_table(t)
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            raise InputError("merge", "no shards to merge")
    qc = (
        pd.concat(qc_rows)
        .groupby(["cell_line_id", "plate", "control_level"], as_index=False)["n_cells"]
        .sum()
        if qc_rows
        else pd.DataFrame(columns=["cell_line_id", "plate", "control_level", "n_cells"])
    )
    tio.write_csv(qc.sort_values(["cell_line_id", "plate"]), qc_path)
    return counts


_PB_KEYS = ["sample", "cell_line_id", "token_id"]
PSEUDOBULK_MERGE_MIN_ROWS = 4_000_000
"""Shard tables are buffered until they hold at least this many rows (or an eighth of the
running sums) before they are reduced and added to the running sums."""
# A row's (sample, cell line, gene) packed into one int64: sample id << 29 | line id << 17 | token
_TOKEN_BITS, _LINE_BITS = 17, 12


class _Ids:
    """Ids of strings in sorted order (from the merged cells), looked up per distinct value."""

    def __init__(self, what: str, names: Sequence[str], limit: int, path: object) -> None:
        if len(names) > limit:
            raise InputError(path, f"more than {limit} distinct {what} values")
        self.what, self.names = what, list(names)
        self.ids = {n: i for i, n in enumerate(self.names)}

    def codes(self, column: pa.ChunkedArray, path: object) -> np.ndarray:
        """Ids of a column's values (dictionary-encoded first: one lookup per distinct value)."""
        enc = pc.dictionary_encode(column).combine_chunks()
        if enc.null_count:
            raise InputError(path, f"null {self.what}")
        values = enc.dictionary.to_pylist()
        unknown = [v for v in values if v not in self.ids]
        if unknown:
            raise InputError(path, f"{self.what} {unknown[0]!r} is not in the merged cells")
        local = np.array([self.ids[v] for v in values], dtype=np.int64)
        return local[enc.indices.to_numpy(zero_copy_only=False)]


_GROUP_COLUMNS = ["sample", "cell_line_id", "plate", "drug", "dose_uM", "moa_fine", "is_control"]


def _groups_of_cells(cells_path: str | Path) -> pa.Table:
    """One row per (sample, cell line) of the merged cells: its design (first value), cell
    count and summed total counts. Streamed over the file's record batches (memory: one batch
    plus the groups), sorted by sample, cell line."""
    first = [(c, "first") for c in _GROUP_COLUMNS[2:]]
    parts = []
    pf = pq.ParquetFile(cells_path)
    for b in pf.iter_batches(batch_size=1 << 20, columns=[*_GROUP_COLUMNS, "total_counts"]):
        parts.append(
            pa.Table.from_batches([b])
            .group_by(_GROUP_COLUMNS[:2], use_threads=False)
            .aggregate([*first, ([], "count_all"), ("total_counts", "sum")])
            .rename_columns([*_GROUP_COLUMNS[:2], *_GROUP_COLUMNS[2:], "n_cells", "total_counts"])
        )
    if not parts:
        raise InputError(cells_path, "no cells")
    g = (
        pa.concat_tables(parts)
        .group_by(_GROUP_COLUMNS[:2], use_threads=False)
        .aggregate([*first, ("n_cells", "sum"), ("total_counts", "sum")])
    )
    g = g.rename_columns([*_GROUP_COLUMNS, "n_cells", "total_counts"])
    return g.sort_by([(c, "ascending") for c in _GROUP_COLUMNS[:2]]).cast(
        pa.schema(
            [
                *((c, pa.string()) for c in _GROUP_COLUMNS[:4]),
                ("dose_uM", pa.float64()),
                ("moa_fine", pa.string()),
                ("is_control", pa.bool_()),
                ("n_cells", pa.int64()),
                ("total_counts", pa.float64()),
            ]
        )
    )


def _reduce(keys: list[np.ndarray], values: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Distinct keys (sorted) and the sum of the values of each (added in input order)."""
    k = np.concatenate(keys)
    uniq, inverse = np.unique(k, return_inverse=True)
    return uniq, np.bincount(inverse, weights=np.concatenate(values), minlength=uniq.size)


def _add_into(
    run_k: np.ndarray, run_v: np.ndarray, k: np.ndarray, v: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Add sorted distinct keys ``k`` (values ``v``) into the sorted distinct running sums.

    Keys already there are added in place; new keys are inserted at their sorted positions
    (one linear copy of the running arrays, only when there are new keys).
    """
    if run_k.size == 0:
        return k, v
    pos = np.searchsorted(run_k, k)
    hit = pos < run_k.size
    hit[hit] = run_k[pos[hit]] == k[hit]
    run_v[pos[hit]] += v[hit]  # positions are distinct: k is
    new = ~hit
    if new.any():
        run_k = np.insert(run_k, pos[new], k[new])
        run_v = np.insert(run_v, pos[new], v[new])
    return run_k, run_v


def _stream_sums(
    pb_paths: Sequence[str | Path], samples, lines, min_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """Sorted distinct packed keys and their summed counts over ``pb_paths`` (see
    :func:`merge_pseudobulk`)."""
    run_k, run_v = np.empty(0, np.int64), np.empty(0, np.float64)
    buf_k: list[np.ndarray] = []
    buf_v: list[np.ndarray] = []
    buffered = 0
    for p in pb_paths:
        t = pq.read_table(p, columns=[*_PB_KEYS, "count"])
        tok = t.column("token_id").to_numpy().astype(np.int64, copy=False)
        if tok.size and (tok.min() < 0 or tok.max() >= 1 << _TOKEN_BITS):
            raise InputError(p, f"token_id outside 0..{(1 << _TOKEN_BITS) - 1}")
        s = samples.codes(t.column("sample"), p)
        line = lines.codes(t.column("cell_line_id"), p)
        buf_k.append((s << (_TOKEN_BITS + _LINE_BITS)) | (line << _TOKEN_BITS) | tok)
        buf_v.append(t.column("count").to_numpy().astype(np.float64, copy=False))
        buffered += tok.size
        del t
        if buffered >= max(min_rows, run_k.size // 8):
            run_k, run_v = _add_into(run_k, run_v, *_reduce(buf_k, buf_v))
            buf_k, buf_v, buffered = [], [], 0
    if buf_k:
        run_k, run_v = _add_into(run_k, run_v, *_reduce(buf_k, buf_v))
    return run_k, run_v


class _GrowingIds(_Ids):
    """Ids in order of first appearance, for a partial merge that has no merged cells."""

    def __init__(self, what: str, limit: int) -> None:
        super().__init__(what, [], limit, what)
        self.limit = limit

    def codes(self, column: pa.ChunkedArray, path: object) -> np.ndarray:
        enc = pc.dictionary_encode(column).combine_chunks()
        if enc.null_count:
            raise InputError(path, f"null {self.what}")
        for v in enc.dictionary.to_pylist():
            if v not in self.ids:
                self.ids[v] = len(self.names)
                self.names.append(v)
        if len(self.names) > self.limit:
            raise InputError(path, f"more than {self.limit} distinct {self.what} values")
        return super().codes(column, path)


def _unpack(run_k: np.ndarray, run_v: np.ndarray, samples: _Ids, lines: _Ids) -> pa.Table:
    s_id = (run_k >> (_TOKEN_BITS + _LINE_BITS)).astype(np.int32)
    l_id = ((run_k >> _TOKEN_BITS) & ((1 << _LINE_BITS) - 1)).astype(np.int32)
    tok = run_k & ((1 << _TOKEN_BITS) - 1)
    return pa.table(
        {
            "sample": pa.DictionaryArray.from_arrays(
                s_id, pa.array(samples.names, pa.string())
            ).cast(pa.string()),
            "cell_line_id": pa.DictionaryArray.from_arrays(
                l_id, pa.array(lines.names, pa.string())
            ).cast(pa.string()),
            "token_id": pa.array(tok, pa.int64()),
            "count": pa.array(run_v, pa.float64()),
        }
    )


def pseudobulk_part(
    pb_paths: Sequence[str | Path], min_rows: int = PSEUDOBULK_MERGE_MIN_ROWS
) -> pa.Table:
    """A partial merge of pseudobulk counts: (sample, cell_line_id, token_id, count) summed
    over ``pb_paths`` (shard tables or other partials), sorted by (sample, cell line, token
    id). Memory follows the group's distinct rows (16 bytes each, plus the buffer). Sums of
    raw counts are exact integers, so merging partials gives what one merge gives."""
    samples = _GrowingIds("sample", 1 << (63 - _TOKEN_BITS - _LINE_BITS))
    lines = _GrowingIds("cell_line_id", (1 << _LINE_BITS) - 1)
    run_k, run_v = _stream_sums(pb_paths, samples, lines, min_rows)
    # renumber both in sorted name order, so that sorted keys are the output order
    s_rank = np.argsort(np.argsort(np.asarray(samples.names, dtype=object), kind="stable"))
    l_rank = np.argsort(np.argsort(np.asarray(lines.names, dtype=object), kind="stable"))
    s_id = run_k >> (_TOKEN_BITS + _LINE_BITS)
    l_id = (run_k >> _TOKEN_BITS) & ((1 << _LINE_BITS) - 1)
    key = (
        (s_rank[s_id].astype(np.int64) << (_TOKEN_BITS + _LINE_BITS))
        | (l_rank[l_id].astype(np.int64) << _TOKEN_BITS)
        | (run_k & ((1 << _TOKEN_BITS) - 1))
    )
    order = np.argsort(key, kind="stable")
    samples.names, lines.names = sorted(samples.names), sorted(lines.names)
    return _unpack(key[order], run_v[order], samples, lines)


def merge_pseudobulk(
    pb_paths: Sequence[str | Path],
    cells_path: str | Path,
    min_rows: int = PSEUDOBULK_MERGE_MIN_ROWS,
) -> tuple[pa.Table, pa.Table]:
    """(long counts per (sample, cell line, gene), one row per (sample, cell line) with its design).

    Streaming, in 16 bytes a row: each shard table is read on its own and its (sample, cell
    line, gene) packed into one int64 key (ids in the sorted order of the names in the merged
    cells, one lookup per distinct value; a name not in the cells is an error). Buffered rows
    are reduced (``np.unique`` + ``np.bincount``) once they reach an eighth of the running sums
    (at least ``min_rows``) and added into the sorted running sums: in place where the key
    exists, by ``np.insert`` where it is new. Memory follows the merged table (about 32 bytes
    per merged row at the peak, plus the buffer), not the number of shards. Sums of float64
    counts are exact for integers below 2**53 (raw counts), so the order of additions does not
    change them. The sorted keys are the output order (sample, cell line, token id). The groups
    table streams over the merged cells' record batches.
    """
    groups = _groups_of_cells(cells_path)
    # ids in sorted name order, so sorted keys are the output order
    samples = _Ids(
        "sample",
        pc.unique(groups.column("sample")).to_pylist(),
        1 << (63 - _TOKEN_BITS - _LINE_BITS),
        cells_path,
    )
    lines = _Ids(
        "cell_line_id",
        sorted(pc.unique(groups.column("cell_line_id")).to_pylist()),
        (1 << _LINE_BITS) - 1,
        cells_path,
    )
    run_k, run_v = _stream_sums(pb_paths, samples, lines, min_rows)
    counts = _unpack(run_k, run_v, samples, lines)
    del run_k
    return counts, groups


PSEUDOBULK_ROW_GROUP_ROWS = 1 << 20
"""Most rows in one row group of the merged pseudobulk (a cell line's rows may span several)."""


def write_pseudobulk(
    counts: pa.Table, path: str | Path, row_group_rows: int = PSEUDOBULK_ROW_GROUP_ROWS
) -> int:
    """Write the merged long counts sorted by cell line (then sample, token id), each cell line
    in row groups of its own (at most ``row_group_rows`` rows): a row group never holds two
    lines, so its ``cell_line_id`` statistics (min = max) let a per-line DE job decode only its
    own row groups (:func:`tahoeflow.de.core.read_pseudobulk_part`). Within a line the rows keep
    :func:`merge_pseudobulk`'s order (a stable sort). Atomic; returns the number of row groups.
    """
    if row_group_rows < 1:
        raise ValueError(f"row_group_rows must be >= 1, got {row_group_rows}")
    enc = pc.dictionary_encode(counts.column("cell_line_id")).combine_chunks()
    if enc.null_count:
        raise InputError(path, "null cell_line_id in the merged pseudobulk")
    names = enc.dictionary.to_pylist()
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(np.asarray(names, dtype=object), kind="stable")] = np.arange(len(names))
    key = rank[enc.indices.to_numpy(zero_copy_only=False)]
    order = np.argsort(key, kind="stable")
    bounds = np.flatnonzero(np.diff(key[order])) + 1
    n_groups = 0
    with (
        tio.atomic_path(path) as tmp,
        pq.ParquetWriter(tmp, counts.schema, compression="zstd") as w,
    ):
        if counts.num_rows == 0:
            w.write_table(counts)
        for idx in np.split(order, bounds) if counts.num_rows else []:
            for lo in range(0, idx.size, row_group_rows):
                w.write_table(counts.take(pa.array(idx[lo : lo + row_group_rows])))
                n_groups += 1
    return n_groups
