"""``source.kind: h5ad``: cells x genes raw-count .h5ad files read as row-range shards.

Tahoe-100M's per-plate h5ad release, and any AnnData file of raw counts, has this shape. A
shard is a row range ``[row_start, row_stop)`` of one file; it is read with h5py straight
from the on-disk arrays, so a job holds only its rows:

* sparse CSR ``X`` (the usual layout): ``indptr[start:stop+1]``, then exactly the slice
  ``data[lo:hi]`` / ``indices[lo:hi]`` of the stored values of those rows;
* dense ``X`` (a 2-D dataset): ``X[start:stop, :]``;
* ``obs``: only the mapped columns, and only rows ``start..stop`` of each (categorical codes
  are sliced; the categories, a few hundred strings, are read whole).

(``anndata.read_h5ad(path, backed="r")`` would also read an X row slice only, but it loads the
whole ``obs`` and ``var`` of the file when it opens it; on a plate of millions of cells that is
most of a job's memory.) The result is a :class:`~tahoeflow.cells.summarize.LoadedShard` with the
same ``obs`` columns and ``filter_counts`` keys as the Tahoe reader's, so every later step is
shared.

Genes: column ``j`` of the file gets token id ``j + 3`` (``schema.FIRST_TOKEN``), so the gene
table looks like Tahoe's ``gene_metadata`` (``token_id``, ``ensembl_id``, ``gene_symbol``) and
the per-gene statistics, pseudobulk and merges work on token ids unchanged. All files of one
run must have the same genes in the same order (:func:`check_same_genes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from tahoeflow.cells.plan import Shard, check_row_range, plan_shards
from tahoeflow.cells.vocab import Vocab
from tahoeflow.errors import ArgumentError, InputError
from tahoeflow.sources.tahoe import FIRST_TOKEN

DEFAULT_CELL_LINE = "NA"
DEFAULT_MOA = "unclear"


# --- file structure ----------------------------------------------------------------------
def open_h5ad(path: str | Path) -> h5py.File:
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "file not found")
    try:
        return h5py.File(p, "r")
    except OSError as e:
        raise InputError(
            p, f"not a readable HDF5/.h5ad file (truncated or corrupt?): {e}"
        ) from None


def matrix_node(f: h5py.File, path: object, layer: str | None) -> h5py.Group | h5py.Dataset:
    if layer is None:
        name = "X"
    elif layer == "raw":
        name = "raw/X"
    else:
        name = f"layers/{layer}"
    if name not in f:
        raise InputError(path, f"no '{name}' in the file (layer: {layer!r})")
    return f[name]


def _var_node(f: h5py.File, path: object, layer: str | None) -> h5py.Group:
    name = "raw/var" if layer == "raw" else "var"
    if name not in f:
        raise InputError(path, f"no '{name}' group in the file")
    return f[name]


def attr_str(node: h5py.HLObject, name: str, default: str = "") -> str:
    v = node.attrs.get(name, default)
    return v.decode() if isinstance(v, bytes) else str(v)


def matrix_shape(node: h5py.Group | h5py.Dataset, path: object) -> tuple[int, int]:
    if isinstance(node, h5py.Dataset):
        if node.ndim != 2:
            raise InputError(path, f"X has {node.ndim} dimensions, expected 2")
        return int(node.shape[0]), int(node.shape[1])
    if "shape" not in node.attrs:
        raise InputError(path, f"sparse matrix group '{node.name}' has no 'shape' attribute")
    shape = np.asarray(node.attrs["shape"]).astype(np.int64)
    return int(shape[0]), int(shape[1])


def h5ad_n_obs(path: str | Path, layer: str | None = None) -> int:
    """Rows (cells) of the file, from the matrix header only."""
    with open_h5ad(path) as f:
        return matrix_shape(matrix_node(f, path, layer), path)[0]


def h5ad_shape(path: str | Path, layer: str | None = None) -> tuple[int, int]:
    """(cells, genes) of the matrix, from its header."""
    with open_h5ad(path) as f:
        return matrix_shape(matrix_node(f, path, layer), path)


def h5ad_var(path: str | Path, layer: str | None = None) -> pd.DataFrame:
    """The file's ``var`` table (``raw/var`` for ``layer='raw'``), indexed by the var names."""
    import anndata as ad

    with open_h5ad(path) as f:
        node = _var_node(f, path, layer)
        try:
            var = ad.io.read_elem(node)
        except Exception as e:  # noqa: BLE001 - anndata raises many types on odd files
            raise InputError(path, f"cannot read '{node.name}': {e}") from None
    var.index = var.index.astype(str)
    return var


def h5ad_obs_columns(path: str | Path) -> list[str]:
    """Column names of the file's ``obs`` (without reading any rows)."""
    with open_h5ad(path) as f:
        if "obs" not in f:
            raise InputError(path, "no 'obs' group in the file")
        return [k for k in f["obs"] if k not in ("_index", "__categories")]


# --- genes ---------------------------------------------------------------------------------
def h5ad_gene_table(
    path: str | Path,
    *,
    gene_id_column: str | None = None,
    gene_symbol_column: str | None = None,
    layer: str | None = None,
) -> pd.DataFrame:
    """``token_id`` (column + 3), ``ensembl_id``, ``gene_symbol``: one row per column, in order.

    Ids and symbols come from the named var columns, or the var index when None.
    """
    var = h5ad_var(path, layer)
    cols = {}
    for what, arg, col in (
        ("ensembl_id", "gene_id_column", gene_id_column),
        ("gene_symbol", "gene_symbol_column", gene_symbol_column),
    ):
        if col is None:
            cols[what] = var.index.to_numpy(dtype=object)
        elif col not in var.columns:
            raise ArgumentError(
                arg,
                f"column {col!r} is not in var of {path} (columns: {', '.join(map(str, var.columns))})",
            )
        else:
            cols[what] = var[col].astype(object).where(var[col].notna(), "").astype(str).to_numpy()
    n = len(var)
    return pd.DataFrame(
        {
            "token_id": np.arange(FIRST_TOKEN, FIRST_TOKEN + n, dtype=np.int64),
            "ensembl_id": cols["ensembl_id"],
            "gene_symbol": cols["gene_symbol"],
        }
    )


def gene_metadata_table(genes: pd.DataFrame) -> pa.Table:
    """The gene table as Tahoe's ``metadata/gene_metadata.parquet`` (same columns and types)."""
    return pa.table(
        {
            "gene_symbol": pa.array(genes["gene_symbol"].astype(str).to_numpy(), pa.string()),
            "ensembl_id": pa.array(genes["ensembl_id"].astype(str).to_numpy(), pa.string()),
            "token_id": pa.array(genes["token_id"].to_numpy(np.int64), pa.int64()),
        }
    )


def vocab_from_gene_table(genes: pd.DataFrame, mito_prefix: str = "MT-") -> Vocab:
    """A :class:`~tahoeflow.cells.vocab.Vocab` whose columns are the file's columns, in order.

    Mitochondrial genes: symbols starting with ``mito_prefix`` (case-sensitive; ``mt-`` for
    mouse; empty flags none).
    """
    tokens = genes["token_id"].to_numpy(np.int64)
    if tokens.size and not np.array_equal(
        tokens, np.arange(FIRST_TOKEN, FIRST_TOKEN + tokens.size)
    ):
        raise ValueError("gene table token ids must be 3..G+2 in column order")
    lookup = np.full(FIRST_TOKEN + tokens.size, -1, dtype=np.int32)
    lookup[tokens] = np.arange(tokens.size, dtype=np.int32)
    symbols = genes["gene_symbol"].astype(str).to_numpy()
    is_mito = (
        np.char.startswith(symbols.astype(str), mito_prefix)
        if mito_prefix
        else np.zeros(tokens.size, dtype=bool)
    )
    return Vocab(tokens, lookup, np.asarray(is_mito, dtype=bool))


def h5ad_vocab(
    path: str | Path,
    *,
    gene_id_column: str | None = None,
    gene_symbol_column: str | None = None,
    layer: str | None = None,
    mito_prefix: str = "MT-",
) -> tuple[Vocab, pd.DataFrame]:
    """(Vocab, gene table) of one file."""
    genes = h5ad_gene_table(
        path, gene_id_column=gene_id_column, gene_symbol_column=gene_symbol_column, layer=layer
    )
    return vocab_from_gene_table(genes, mito_prefix), genes


def check_same_genes(paths: Sequence[str | Path], layer: str | None = None) -> None:
    """All files have the first file's var names in the same order; else an error naming one."""
    first = None
    for p in paths:
        names = h5ad_var(p, layer).index
        if first is None:
            first = (p, names)
            continue
        if not names.equals(first[1]):
            if len(names) != len(first[1]):
                why = f"{len(names)} genes, but {first[0]} has {len(first[1])}"
            else:
                j = int(np.flatnonzero(names.to_numpy() != first[1].to_numpy())[0])
                why = f"gene {j} is {names[j]!r}, but {first[1][j]!r} in {first[0]}"
            raise InputError(p, f"genes differ from the first file: {why}")


def plan_h5ad_shards(
    paths: Sequence[str | Path],
    cells_per_shard: int | None,
    layer: str | None = None,
    files: Sequence[int] | None = None,
) -> list[Shard]:
    """Shards of the files (file index = position in ``paths``; ``files`` selects some, e.g.
    from ``parse_file_selection(config["source"]["files"], len(paths))``), sized from the
    matrix headers, so the plan is exact and cheap (no data read)."""
    chosen = list(range(len(paths))) if files is None else list(files)
    rows = {i: h5ad_n_obs(paths[i], layer) for i in chosen}
    return plan_shards(chosen, cells_per_shard, rows)


# --- obs ------------------------------------------------------------------------------------
def _decode(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "S":
        return np.array([v.decode("utf-8") for v in values], dtype=object)
    if values.dtype.kind == "O":
        return np.array(
            [v.decode("utf-8") if isinstance(v, bytes) else v for v in values], dtype=object
        )
    return values


def _read_dataset(ds: h5py.Dataset, start: int, stop: int | None) -> np.ndarray:
    sl = slice(start, stop)
    if h5py.check_string_dtype(ds.dtype) is not None:
        return np.asarray(ds.asstr()[sl], dtype=object)
    return _decode(ds[sl])


def read_obs_column(
    f: h5py.File, column: str, start: int = 0, stop: int | None = None, path: object = ""
) -> np.ndarray:
    """Rows ``[start, stop)`` of one ``obs`` column (``_index`` for the names) as a numpy array.

    Categorical columns become object arrays of their categories (None for a missing code);
    nullable columns get None (strings) or NaN (numbers) where masked. Handles anndata's
    encodings from 0.7 (``__categories``) on.
    """
    node = f["obs"][column]
    enc = attr_str(node, "encoding-type")
    if isinstance(node, h5py.Dataset):
        values = _read_dataset(node, start, stop)
        ref = node.attrs.get("categories")
        if isinstance(ref, h5py.Reference):  # anndata < 0.8: codes + a reference
            cats = _read_dataset(f[ref], 0, None)
            return _categorical(values, cats)
        return values
    if enc == "categorical":
        cats = _read_dataset(node["categories"], 0, None)
        return _categorical(_read_dataset(node["codes"], start, stop), cats)
    if enc.startswith("nullable-"):
        values = _read_dataset(node["values"], start, stop)
        mask = np.asarray(node["mask"][start:stop], dtype=bool) if "mask" in node else None
        if mask is not None and mask.any():
            if values.dtype.kind in "biuf":
                values = values.astype(np.float64)
                values[mask] = np.nan
            else:
                values = values.astype(object)
                values[mask] = None
        return values
    raise InputError(path, f"obs column '{column}' has unsupported encoding {enc!r}")


def _categorical(codes: np.ndarray, categories: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes, dtype=np.int64)
    cats = np.asarray(categories, dtype=object)
    out = np.empty(codes.size, dtype=object)
    ok = (codes >= 0) & (codes < cats.size)
    out[ok] = cats[codes[ok]]
    out[~ok] = None
    return out


def show_value(value: object) -> str:
    """A value for an error message: numpy scalars as plain Python values."""
    return repr(value.item() if isinstance(value, np.generic) else value)


# --- X rows -----------------------------------------------------------------------------------
def _first_bad(data: np.ndarray, allow_non_integer: bool) -> list[tuple[str, int]]:
    """(problem, first position) for each failing check, in check order."""
    out = []
    if data.dtype.kind == "f":
        bad = ~np.isfinite(data)
        if bad.any():
            out.append(("non-finite count", int(np.argmax(bad))))
    if data.dtype.kind in "fi":
        neg = data < 0
        if neg.any():
            out.append(("negative count", int(np.argmax(neg))))
    if data.dtype.kind == "f" and not allow_non_integer:
        with np.errstate(invalid="ignore"):
            frac = np.isfinite(data) & (data != np.floor(data))
        if frac.any():
            out.append(("non-integer count", int(np.argmax(frac))))
    if data.dtype.kind not in "biuf":
        out.append((f"counts of type {data.dtype} (expected numbers)", 0))
    return out


def _value_dtype(stored: np.dtype) -> type:
    """float64 values stay float64 (log expression: DE equals R only at full precision); counts
    and float32 values are float32 (exact for integer counts below 2**24)."""
    return np.float64 if stored == np.float64 else np.float32


def read_rows_csr(
    path: str | Path,
    row_start: int,
    row_stop: int | None,
    *,
    layer: str | None = None,
    allow_non_integer: bool = False,
    warn: Callable[[str], None] | None = None,
) -> sp.csr_matrix:
    """Rows ``[row_start, row_stop)`` of the matrix as canonical CSR counts (float32; float64
    when the file stores float64, e.g. log expression, so no precision is lost).

    Reads only those rows (see the module docstring). Checks: CSR structure (``indptr``
    complete, non-decreasing, inside ``data``; column indices in range; no column twice in a
    row), finite, non-negative, integer counts (non-integers are a warning with
    ``allow_non_integer``); each error names the file and the first bad row (file-relative).
    Stored zeros are dropped, so a row's stored count is its number of expressed genes (as in
    the Parquet reader: both give the same summaries for the same counts).
    """
    with open_h5ad(path) as f:
        node = matrix_node(f, path, layer)
        n_obs, n_vars = matrix_shape(node, path)
        check_row_range(path, int(row_start), n_obs)
        stop = n_obs if row_stop is None else min(int(row_stop), n_obs)
        start = min(int(row_start), stop)
        if isinstance(node, h5py.Dataset):
            dense = np.asarray(node[start:stop, :])
            flat = dense.reshape(-1)
            for problem, pos in _first_bad(flat, allow_non_integer):
                raise InputError(
                    path, f"X: {problem} {show_value(flat[pos])}", row=start + pos // max(n_vars, 1)
                )
            _warn_non_integer(flat, allow_non_integer, warn, path, start, n_vars, dense=True)
            X = sp.csr_matrix(dense.astype(_value_dtype(dense.dtype), copy=False))
            del dense, flat
        else:
            enc = attr_str(node, "encoding-type")
            if enc == "csc_matrix":
                raise InputError(
                    path,
                    "X is stored column-major (CSC); row shards need CSR "
                    "(convert once: adata.X = adata.X.tocsr(); adata.write_h5ad(...))",
                )
            if enc not in ("csr_matrix", "") or not {"data", "indices", "indptr"} <= set(node):
                raise InputError(path, f"'{node.name}' is not a CSR matrix (encoding {enc!r})")
            indptr = np.asarray(node["indptr"][start : stop + 1], dtype=np.int64)
            if indptr.size != stop - start + 1:
                raise InputError(
                    path, f"X/indptr is truncated ({indptr.size} entries for rows {start}..{stop})",
                    row=start + max(indptr.size - 1, 0),
                )  # fmt: skip
            down = np.flatnonzero(np.diff(indptr) < 0)
            if down.size:  # row i ends before it starts
                i = int(down[0])
                raise InputError(
                    path, f"X/indptr decreases ({int(indptr[i])} then {int(indptr[i + 1])})",
                    row=start + i,
                )  # fmt: skip
            lo, hi = (int(indptr[0]), int(indptr[-1])) if indptr.size else (0, 0)
            n_stored = min(node["data"].shape[0], node["indices"].shape[0])
            if lo < 0 or hi > n_stored:
                i = int(np.argmax((indptr[1:] > n_stored) | (indptr[:-1] < 0)))
                raise InputError(
                    path, f"X/indptr points outside X/data ({n_stored} stored values)",
                    row=start + i,
                )  # fmt: skip
            data = np.asarray(node["data"][lo:hi])
            indices = np.asarray(node["indices"][lo:hi])
            indptr -= lo

            def row_of(pos: int) -> int:
                return start + int(np.searchsorted(indptr, pos, side="right")) - 1

            if indices.size and (indices.min() < 0 or indices.max() >= n_vars):
                pos = int(np.argmax((indices < 0) | (indices >= n_vars)))
                raise InputError(
                    path, f"X: column index {int(indices[pos])} outside 0..{n_vars - 1}",
                    row=row_of(pos),
                )  # fmt: skip
            for problem, pos in _first_bad(data, allow_non_integer):
                raise InputError(path, f"X: {problem} {show_value(data[pos])}", row=row_of(pos))
            _warn_non_integer(data, allow_non_integer, warn, path, start, n_vars, row_of=row_of)
            X = sp.csr_matrix(
                (
                    data.astype(_value_dtype(data.dtype), copy=False),
                    indices.astype(np.int32, copy=False),
                    indptr,
                ),  # fmt: skip
                shape=(stop - start, n_vars),
                copy=False,
            )
            if not X.has_canonical_format:  # unsorted columns, or a column twice in a row
                _check_no_repeats(X, path, start)
    X.eliminate_zeros()
    if not X.has_canonical_format:
        X.sort_indices()
    return X


def _check_no_repeats(X: sp.csr_matrix, path: object, start: int) -> None:
    """A column stored twice in one row is an error naming the row (as the Parquet reader's).

    Summing the two would make ``n_genes`` differ from what the file stores. Vectorised: the
    stored values sorted by (row, column), neighbours compared.
    """
    rows = np.repeat(np.arange(X.shape[0], dtype=np.int64), np.diff(X.indptr))
    order = np.lexsort((X.indices, rows))
    r, c = rows[order], X.indices[order]
    same = (r[1:] == r[:-1]) & (c[1:] == c[:-1])
    if same.any():
        k = int(np.argmax(same))
        raise InputError(
            path, f"X: column {int(c[k])} is stored more than once in the row (one count per "
            "gene expected)", row=start + int(r[k]),
        )  # fmt: skip


def _warn_non_integer(
    data: np.ndarray,
    allowed: bool,
    warn: Callable[[str], None] | None,
    path: object,
    start: int,
    n_vars: int,
    *,
    dense: bool = False,
    row_of: Callable[[int], int] | None = None,
) -> None:
    if not (allowed and warn and data.dtype.kind == "f"):
        return
    frac = data != np.floor(data)
    if frac.any():
        pos = int(np.argmax(frac))
        row = start + pos // max(n_vars, 1) if dense else row_of(pos)  # type: ignore[misc]
        warn(f"{path}, row {row}: non-integer counts (normalised input?); kept as they are")
