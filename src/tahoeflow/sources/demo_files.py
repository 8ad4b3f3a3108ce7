"""The demo's files: per-file cell draws (Parquet in the hub's schema, one plate per file) and
the metadata and truth tables, written atomically."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from tahoeflow import io as tio
from tahoeflow.sources.demo import BARCODES_PER_SUBLIB, Design
from tahoeflow.sources.tahoe import (
    CLS_TOKEN,
    CLS_VALUE,
    CONTROL_DRUG,
    EXPRESSION_SCHEMA,
    FIRST_TOKEN,
)


# --- per-file generation ------------------------------------------------------
def _sample_counts(
    rng: np.random.Generator, logw: np.ndarray, libsizes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multinomial counts for cells sharing one expression profile.

    Returns (nnz per cell, gene index per value, count per value), genes ascending per cell.
    Each cell's draws are generated already sorted (normalised cumulative sums of exponential
    spacings are sorted uniforms), so the inverse-CDF lookup walks the CDF forwards and the
    counts are the run lengths of the looked-up genes: no per-cell loop and no sort.
    """
    G = logw.size
    w = np.exp(logw - logw.max())
    cdf = np.cumsum(w)
    cdf /= cdf[-1]
    n = libsizes.size
    seg = libsizes + 1  # L draws need L+1 spacings
    ends = np.cumsum(seg)
    csum = np.cumsum(rng.standard_exponential(int(ends[-1])))
    seg_base = np.concatenate(([0.0], csum[ends[:-1] - 1]))
    totals = csum[ends - 1] - seg_base
    cell_of = np.repeat(np.arange(n, dtype=np.int64), seg)
    u = (csum - seg_base[cell_of]) / totals[cell_of]
    keep = np.ones(u.size, dtype=bool)
    keep[ends - 1] = False  # the last spacing of each cell closes the interval
    g = np.minimum(np.searchsorted(cdf, u[keep], side="right"), G - 1)
    key = cell_of[keep] * G + g
    starts = np.flatnonzero(np.concatenate(([True], key[1:] != key[:-1])))
    counts = np.diff(np.append(starts, key.size))
    ukey = key[starts]
    return np.bincount(ukey // G, minlength=n), ukey % G, counts


def _padded(values: np.ndarray, width: int) -> pa.Array:
    """Zero-padded decimal strings of small non-negative integers (vectorised via a lookup)."""
    table = pa.array([f"{i:0{width}d}" for i in range(int(values.max(initial=0)) + 1)])
    return table.take(pa.array(values, pa.int64()))


def barcodes(design: Design, cell_well: np.ndarray, rank: np.ndarray) -> pa.Array:
    """``BARCODE_SUB_LIB_ID`` in the real form ``01_001_052-lib_1105``: round-1 barcode = the
    well's position on its plate, rounds 2 and 3 and the sub-library from the cell's rank in
    its well; the sub-library number encodes the plate (unique over the whole demo)."""
    pos = design.wells["position"].to_numpy()[cell_well]
    plate_no = np.array([int(s.removeprefix("plate")) for s in design.plate_names])
    lib = 1000 + design.sublibs_per_plate * plate_no[design.well_plate[cell_well]]
    lib = lib + rank // BARCODES_PER_SUBLIB
    within = rank % BARCODES_PER_SUBLIB
    parts = [_padded(pos, 2), "_", _padded(within // 96 + 1, 3), "_", _padded(within % 96 + 1, 3),
             "-lib_", _padded(lib, 4)]  # fmt: skip
    return pc.binary_join_element_wise(*parts, "")


def generate_file(design: Design, file_index: int) -> pa.Table:
    """The expression table of one demo file (``cells_per_file`` rows, hub schema)."""
    p = design.p
    rng = np.random.default_rng([p.seed, 1, file_index])
    cell_well, cell_line, rank = design.file_cells(file_index)
    n = cell_well.size
    group = cell_well * p.n_cell_lines + cell_line
    order = np.argsort(group, kind="stable")
    nnz = np.zeros(n, dtype=np.int64)
    gene_parts, count_parts = [], []
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    for idx in np.split(order, bounds) if n else []:
        well, line = int(cell_well[idx[0]]), int(cell_line[idx[0]])
        mu = design.log_libsize_mean(well, line)
        lib = np.maximum(np.rint(rng.lognormal(mu, p.libsize_sd, idx.size)), 50).astype(np.int64)
        logw = design.log_weights(well, line)
        if design.drawable is None:
            k, g, c = _sample_counts(rng, logw, lib)
        else:
            k, g, c = _sample_counts(rng, logw[design.drawable], lib)
            g = design.drawable[g]
        nnz[idx] = k
        gene_parts.append(g)
        count_parts.append(c)
    # values are grouped by ``order``; reorder them to the cells' row order
    genes_sorted = np.concatenate(gene_parts) if gene_parts else np.zeros(0, np.int64)
    counts_sorted = np.concatenate(count_parts) if count_parts else np.zeros(0, np.int64)
    start_sorted = np.zeros(n, dtype=np.int64)
    start_sorted[1:] = np.cumsum(nnz[order])[:-1]
    starts = np.empty(n, dtype=np.int64)
    starts[order] = start_sorted
    offsets = np.zeros(n + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(nnz + 1)  # +1 for the marker
    total = int(offsets[-1])
    token = np.empty(total, dtype=np.int64)
    expr = np.empty(total, dtype=np.float32)
    token[offsets[:-1]] = CLS_TOKEN
    expr[offsets[:-1]] = CLS_VALUE
    row = np.repeat(np.arange(n), nnz)
    within = np.arange(row.size) - np.repeat(np.cumsum(nnz) - nnz, nnz)
    dst = offsets[:-1][row] + 1 + within
    src = starts[row] + within
    token[dst] = genes_sorted[src] + FIRST_TOKEN
    expr[dst] = counts_sorted[src]

    # per-well strings, taken per cell; DMSO_TF has no MoA, SMILES or PubChem id
    d = design.well_drug
    drug = np.where(d >= 0, np.array([*design.drug_names, ""], dtype=object)[d], CONTROL_DRUG)
    moa = np.where(d >= 0, np.array([*design.drug_moa_fine, ""], dtype=object)[d], "unclear")
    smi = np.where(d >= 0, np.array([*design.drug_smiles, ""], dtype=object)[d], "")
    cid = np.where(d >= 0, np.array([*design.drug_cid, ""], dtype=object)[d], "")
    take = pa.array(cell_well, pa.int64())

    def per_cell(values) -> pa.Array:
        return pa.array(np.asarray(values, dtype=object), pa.string()).take(take)

    offsets32 = pa.array(offsets.astype(np.int32))
    plate = design.plate_names[design.file_plate(file_index)]
    return pa.table(
        [
            pa.ListArray.from_arrays(offsets32, pa.array(token, pa.int64())),
            pa.ListArray.from_arrays(offsets32, pa.array(expr, pa.float32())),
            per_cell(drug),
            per_cell(design.sample_names),
            barcodes(design, cell_well, rank),
            pa.array(np.asarray(design.line_ids, dtype=object), pa.string()).take(
                pa.array(cell_line, pa.int64())
            ),
            per_cell(moa),
            per_cell(smi),
            per_cell(cid),
            pa.array(np.full(n, plate, dtype=object), pa.string()),
        ],
        schema=EXPRESSION_SCHEMA,
    )


def write_file(design: Design, file_index: int, path: str | Path) -> None:
    """Write demo file ``file_index`` atomically, in row groups of ``row_group_size`` rows."""
    table = generate_file(design, file_index)
    with tio.atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=design.p.row_group_size, compression="zstd")


def write_metadata(design: Design, out: dict[str, str | Path]) -> None:
    """Write the four metadata tables (byte copies of the real ones) and the ground truth.

    ``out`` keys: gene, sample, drug, cell_line, effects, params, and optionally cells
    (``truth/cells.parquet``, see :meth:`Design.truth_cells`).
    """
    for kind in ("gene", "sample", "drug", "cell_line"):
        with tio.atomic_path(out[kind]) as tmp:
            shutil.copyfile(design.real.paths[kind], tmp)
    tio.write_parquet(
        pa.Table.from_pandas(design.truth_effects(), preserve_index=False), out["effects"]
    )
    if "cells" in out:
        tio.write_parquet(
            pa.Table.from_pandas(design.truth_cells(), preserve_index=False), out["cells"]
        )
    tio.write_json(design.truth_params(), out["params"])
