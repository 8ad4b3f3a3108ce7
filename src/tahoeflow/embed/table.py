"""The embeddings table (seed 002's layout): each cell's PCs, its metadata and its KMeans cluster.

Up to ``max_fit_cells`` cells, KMeans is fitted on all of them and the table is built in one
piece. Above it, the job never holds every cell: KMeans is fitted on a seeded uniform sample of
``max_fit_cells`` cells (read row by row from the projections), then every cell is assigned to
its nearest centre one projection file at a time, and the table is written one batch at a
time. Memory is then bounded by the sample and one batch, not by the number of cells.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.embed.kmeans import fit_kmeans, kmeans
from tahoeflow.errors import ArgumentError

META = ["cell_id", "sample", "plate", "drug", "dose_uM", "cell_line_id", "moa_fine"]
"""Columns of the merged cells table carried into the embeddings table."""


def pc_columns(schema: pa.Schema) -> list[str]:
    return [c for c in schema.names if c.startswith("pc")]


def sample_rows(n_total: int, n_sample: int, seed: int) -> np.ndarray:
    """``n_sample`` distinct row numbers of ``0..n_total-1``, sorted (seeded, uniform)."""
    rng = np.random.default_rng([seed, 2])
    return np.sort(rng.choice(n_total, size=n_sample, replace=False))


def read_pcs(path: str | os.PathLike[str], rows: np.ndarray | None = None) -> np.ndarray:
    """PCs of one projection file as float32 (cells x PCs), all rows or the given ones."""
    t = pq.read_table(path)
    return read_pcs_table(t if rows is None else t.take(pa.array(rows)))


def _cells_in_slices(path: str | os.PathLike[str], sizes: Sequence[int]) -> Iterator[pa.Table]:
    """The merged cells' ``META`` columns, cut into consecutive tables of ``sizes`` rows."""
    batches = tio.read_batches(pq.ParquetFile(path), META, 65_536)
    pending: list[pa.RecordBatch] = []
    have = 0
    for size in sizes:
        while have < size:
            b = next(batches, None)
            if b is None:
                raise ArgumentError("cells_path", f"{path} holds fewer rows than the projections")
            pending.append(b)
            have += b.num_rows
        t = pa.Table.from_batches(pending)
        yield t.slice(0, size)
        rest = t.slice(size)
        pending, have = rest.to_batches(), rest.num_rows
    if have or next(batches, None) is not None:
        raise ArgumentError("cells_path", f"{path} holds more rows than the projections")


def _check_order(cells: pa.Table, proj: pa.Table) -> None:
    if cells.num_rows != proj.num_rows or not cells.column("cell_id").equals(
        proj.column("cell_id")
    ):
        raise RuntimeError("projections and merged cells are not in the same order")


def _table(proj: pa.Table, cells: pa.Table, labels: np.ndarray) -> pa.Table:
    return pa.table(
        {
            **{c: proj.column(c) for c in pc_columns(proj.schema)},
            **{c: cells.column(c) for c in META},
            "cluster": pa.array(labels, pa.int32()),
        }
    )


def write_embeddings(
    proj_paths: Sequence[str | os.PathLike[str]],
    cells_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    n_clusters: int,
    seed: int,
    minibatch_threshold: int,
    batch_size: int,
    n_init: int,
    max_fit_cells: int | None,
    log: Any = print,
) -> dict[str, Any]:
    """Cluster the projections and write the embeddings table; returns ``kmeans.json``'s dict.

    ``max_fit_cells``: None or at least the number of cells fits on every cell (the table is
    then identical to a fit on all cells); below it KMeans is fitted on a seeded sample and
    ``inertia`` is the sum over all cells of the squared distance to their assigned centre.
    """
    sizes = [pq.ParquetFile(p).metadata.num_rows for p in proj_paths]
    n = int(sum(sizes))
    if max_fit_cells is not None and max_fit_cells < 2:
        raise ArgumentError("max_fit_cells", f"must be at least 2 or None, got {max_fit_cells!r}")
    settings = {"seed": seed, "minibatch_threshold": minibatch_threshold,
                "batch_size": batch_size, "n_init": n_init}  # fmt: skip
    info: dict[str, Any] = {"n_clusters": n_clusters, "n_init": n_init, "batch_size": batch_size}
    if max_fit_cells is None or n <= max_fit_cells:
        proj = pa.concat_tables([pq.read_table(p) for p in proj_paths])
        Z = read_pcs_table(proj)
        labels, _, inertia, method = kmeans(Z, n_clusters, **settings)
        log(f"{method} with {n_clusters} clusters on {n} cells: inertia {inertia:.4g}")
        cells = pq.read_table(cells_path, columns=META)
        _check_order(cells, proj)
        tio.write_parquet(_table(proj, cells, labels), out_path)
        return {"method": method, **info, "inertia": inertia, "n_cells": n}

    # fit on a sample, read file by file (one file's projections at a time)
    rows = sample_rows(n, max_fit_cells, seed)
    starts = np.cumsum([0, *sizes])
    parts = [
        read_pcs(p, rows[(rows >= a) & (rows < b)] - a)
        for p, a, b in zip(proj_paths, starts[:-1], starts[1:], strict=True)
    ]
    model, method = fit_kmeans(np.concatenate(parts), n_clusters, **settings)
    del parts
    log(f"{method} with {n_clusters} clusters fitted on {max_fit_cells} of {n} cells")
    from threadpoolctl import threadpool_limits

    inertia = 0.0

    def tables():
        nonlocal inertia
        for p, cells in zip(proj_paths, _cells_in_slices(cells_path, sizes), strict=True):
            proj = pq.read_table(p)
            _check_order(cells, proj)
            Z = read_pcs_table(proj)
            with threadpool_limits(limits=1):
                labels = model.predict(Z).astype(np.int32)
                inertia += float(-model.score(Z))
            yield _table(proj, cells, labels)

    tio.write_parquet_batches(tables(), out_path)
    log(f"assigned {n} cells: inertia {inertia:.4g}")
    return {"method": method, **info, "inertia": inertia, "n_cells": n,
            "fit_sample": {"n_cells": int(max_fit_cells), "seed": seed}}  # fmt: skip


def read_pcs_table(proj: pa.Table) -> np.ndarray:
    """PCs of a projection table as float32 (cells x PCs)."""
    return np.column_stack([proj.column(c).to_numpy() for c in pc_columns(proj.schema)]).astype(
        np.float32, copy=False
    )
