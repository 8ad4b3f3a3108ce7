"""Merge of the per-shard cells tables, with each cell's ``delta_mean`` against the controls.

Per (cell line, plate) sums and counts of ``mean_log_norm`` over control cells are summed
first; then each shard's cells get ``delta_mean`` and are appended to the merged table with a
``ParquetWriter``, so memory is bounded by one shard. The same pass checks that no cell id
appears twice (sorted 64-bit hashes of the ids).

Hierarchical merges (``merge.fan_in``): a partial merge keeps each shard's control sums
unsummed plus the sorted hashes of its cell ids (:func:`cells_part`, :func:`cells_part_merge`);
the final merge reads the partials and writes the same bytes as one merge over every shard.
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

from tahoeflow import io as tio
from tahoeflow.cells.summarize import CELL_COLUMNS
from tahoeflow.errors import InputError

MERGED_CELL_SCHEMA = pa.schema(
    [
        *CELL_COLUMNS.items(),
        ("control_mean", pa.float64()),
        ("delta_mean", pa.float64()),
        ("control_level", pa.string()),
    ]
)


def _shard_control(path: str | Path) -> tuple[pa.Table | None, np.ndarray]:
    """(sum and count of control mean_log_norm per (cell line, plate), or None without a
    control cell; the 64-bit hashes of the cell ids) of one shard's cells."""
    t = tio.read_table(
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
        ids_a = tio.read_table(paths[a], columns=["cell_id"]).column("cell_id").to_pandas()
        ids_b = (
            ids_a
            if a == b
            else tio.read_table(paths[b], columns=["cell_id"]).column("cell_id").to_pandas()
        )
        common = (
            pd.Index(ids_a).intersection(pd.Index(ids_b)) if a != b else ids_a[ids_a.duplicated()]
        )
        if len(common):
            where = f"also appears in {paths[b]}" if a != b else "appears twice in this shard"
            raise InputError(paths[a], f"cell id {list(common)[0]!r} {where}")


# --- hierarchical merge of the cells' control sums and id hashes ---------------------------
_IDS_DTYPE = np.dtype([("hash", "<u8"), ("shard", "<i4")])
_SHARDS_KEY = b"tahoeflow.shards"
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
    meta = tio.read_schema(sums_path).metadata or {}
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
        parts.append(tio.read_table(p).replace_schema_metadata(None))
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
        t = tio.read_table(p)
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
    if not cells_paths:
        raise InputError("merge", "no shards to merge")

    def tables():
        for p in cells_paths:
            df = tio.read_table(p).to_pandas()
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
            yield pa.Table.from_pandas(df, schema=MERGED_CELL_SCHEMA, preserve_index=False)

    tio.write_parquet_batches(tables(), out_path)
    qc = (
        pd.concat(qc_rows)
        .groupby(["cell_line_id", "plate", "control_level"], as_index=False)["n_cells"]
        .sum()
        if qc_rows
        else pd.DataFrame(columns=["cell_line_id", "plate", "control_level", "n_cells"])
    )
    tio.write_csv(qc.sort_values(["cell_line_id", "plate"]), qc_path)
    return counts
