"""Converters from the shared real datasets into cells x genes AnnData (read by the h5ad source).

Two public datasets are kept outside the repository (``../shared/data/real``, see its README):

* ``papalexi_eccite/``: an ECCITE-seq CRISPR screen (Papalexi et al. 2021, THP-1 cells, low
  MOI), stored as R ``.rda`` files: raw UMI counts (299 genes x 20,729 cells, a ``dgTMatrix``),
  guide-RNA UMI counts (110 guides x 20,729 cells), the guide -> target table and per-cell
  covariates (``bio_rep``). :func:`eccite_to_anndata` gives cells x genes counts with each
  cell's guide, its target (the *perturbation*, which plays the drug's part) and its batch.
* ``l1000_a375/*.gct``: one LINCS L1000 plate (A375, 24 h; 978 landmark genes x 377 wells) in
  GCT 1.3 text. :func:`l1000_to_anndata` gives wells x genes of **log2 expression (not
  counts)**, with the column metadata as ``obs``.

The workflow calls these from a rule that writes into ``results/`` (never into the repository).
Nothing here downloads anything.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from tahoeflow.errors import InputError

ECCITE_CONTROL = "non-targeting"
"""The ``grna_target`` of the non-targeting (control) guides in the ECCITE data."""
ECCITE_CELL_LINE = "THP-1"
UNASSIGNED = "unassigned"
"""Perturbation of a cell without any guide UMI."""
AMBIGUOUS = "ambiguous"
"""Perturbation of a cell whose top guide UMI count is shared by two or more guides."""
L1000_CONTROL = "DMSO"
"""``pert_iname`` of the L1000 vehicle-control wells (``pert_type == ctl_vehicle``)."""
L1000_MISSING = "-666"
"""The L1000 metadata's code for a missing value."""


# --- ECCITE-seq (R .rda) -----------------------------------------------------------------
def _read_rda_object(path: Path) -> object:
    """The single object stored in an .rda file (``rdata.read_rda``), with a clear error."""
    import rdata

    if not path.is_file():
        raise InputError(path, "file not found")
    with warnings.catch_warnings():  # "Missing constructor for R class dgTMatrix": expected
        warnings.simplefilter("ignore", UserWarning)
        try:
            objects = rdata.read_rda(str(path))
        except Exception as e:  # noqa: BLE001 - rdata raises many types on bad input
            raise InputError(path, f"not a readable .rda file: {e}") from None
    if len(objects) != 1:
        raise InputError(path, f"expected one R object, found {len(objects)}")
    return next(iter(objects.values()))


def _dgt_matrix(obj: object, path: Path) -> tuple[sp.csr_matrix, list[str] | None]:
    """A Matrix::dgTMatrix (slots i, j, x, Dim, Dimnames; 0-based triplets) as (CSR, row names).

    Repeated (i, j) triplets are summed, as R's Matrix package does.
    """
    for slot in ("i", "j", "x", "Dim"):
        if not hasattr(obj, slot):
            raise InputError(path, f"not a dgTMatrix: no slot '{slot}'")
    i = np.asarray(obj.i, dtype=np.int64)
    j = np.asarray(obj.j, dtype=np.int64)
    x = np.asarray(obj.x, dtype=np.float64)
    shape = tuple(int(d) for d in np.asarray(obj.Dim))
    if len(shape) != 2 or not (i.size == j.size == x.size):
        raise InputError(path, "dgTMatrix slots i, j, x differ in length or Dim is not 2-D")
    if i.size and (i.min() < 0 or i.max() >= shape[0] or j.min() < 0 or j.max() >= shape[1]):
        raise InputError(path, f"dgTMatrix indices fall outside Dim {shape}")
    m = sp.coo_matrix((x, (i, j)), shape=shape).tocsr()
    m.sum_duplicates()
    dimnames = getattr(obj, "Dimnames", None)
    rows = None
    if dimnames is not None and len(dimnames) >= 1 and dimnames[0] is not None:
        rows = [str(v) for v in dimnames[0]]
        if len(rows) != shape[0]:
            raise InputError(path, f"{len(rows)} row names for {shape[0]} rows")
    return m, rows


def assign_guides(guide_counts: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each cell's guide by the max-UMI rule: (guide column or -1, top UMIs, share of guide UMIs).

    Rule: a cell gets the guide with the most UMIs. A cell with no guide UMI gets -1 (reported
    as ``unassigned``); a cell whose top count is shared by two or more guides gets -2
    (``ambiguous``). ``guide_counts`` is cells x guides.
    """
    m = sp.csr_matrix(guide_counts)
    n = m.shape[0]
    total = np.asarray(m.sum(axis=1)).ravel()
    top = np.zeros(n)
    best = np.full(n, -1, dtype=np.int64)
    n_top = np.zeros(n, dtype=np.int64)
    for r in range(n):  # 20k rows of a few values each: fast enough in Python
        lo, hi = m.indptr[r], m.indptr[r + 1]
        if hi == lo:
            continue
        vals = m.data[lo:hi]
        t = vals.max()
        if t <= 0:
            continue
        top[r] = t
        at = np.flatnonzero(vals == t)
        n_top[r] = at.size
        best[r] = m.indices[lo + at[0]] if at.size == 1 else -2
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(total > 0, top / total, 0.0)
    return best, top, share


def eccite_to_anndata(directory: str | Path, suffix: str = "lowmoi") -> ad.AnnData:
    """The ECCITE-seq screen as cells x genes raw UMI counts (CSR float32) with guide calls.

    ``obs`` (index ``cell_id`` = ``cell_00001``.., the 1-based column of the R matrices):
    ``perturbation`` (the guide's target gene, ``non-targeting`` for controls, or
    ``unassigned`` / ``ambiguous``, see :func:`assign_guides`), ``guide``, ``guide_umis`` (the
    top guide's UMIs), ``guide_share`` (its share of the cell's guide UMIs), ``n_guides``
    (guides with >= 1 UMI), ``batch`` (``bio_rep``), ``sample`` (``<bio_rep>:<guide>``: cells
    of one guide in one replicate, the screen's analogue of a Tahoe well), ``cell_line``
    (THP-1), ``is_control``.
    ``var`` is indexed by gene symbol. ``uns["guide_assignment"]`` counts the calls.
    """
    d = Path(directory)
    resp_path = d / f"response_matrix_{suffix}.rda"
    grna_path = d / f"grna_matrix_{suffix}.rda"
    target_path = d / f"grna_target_data_frame_{suffix}.rda"
    cov_path = d / f"extra_covariates_{suffix}.rda"

    genes_x_cells, gene_names = _dgt_matrix(_read_rda_object(resp_path), resp_path)
    guides_x_cells, guide_names = _dgt_matrix(_read_rda_object(grna_path), grna_path)
    n_cells = genes_x_cells.shape[1]
    if guides_x_cells.shape[1] != n_cells:
        raise InputError(
            grna_path, f"{guides_x_cells.shape[1]} cells, but the response matrix has {n_cells}"
        )
    if gene_names is None or guide_names is None:
        raise InputError(resp_path if gene_names is None else grna_path, "no row names")
    counts = genes_x_cells.T.tocsr()
    if counts.nnz and (np.any(counts.data < 0) or np.any(counts.data != np.round(counts.data))):
        raise InputError(resp_path, "counts are not non-negative integers")

    targets = _read_rda_object(target_path)
    if not isinstance(targets, pd.DataFrame) or not {"grna_id", "grna_target"} <= set(
        targets.columns
    ):
        raise InputError(target_path, "expected a data frame with grna_id, grna_target")
    target_of = dict(
        zip(targets["grna_id"].astype(str), targets["grna_target"].astype(str), strict=True)
    )
    missing = [g for g in guide_names if g not in target_of]
    if missing:
        raise InputError(target_path, f"guide {missing[0]!r} has no target")

    best, top, share = assign_guides(guides_x_cells.T.tocsr())
    guide = np.where(
        best >= 0,
        np.asarray(guide_names, dtype=object)[np.maximum(best, 0)],
        np.where(best == -1, UNASSIGNED, AMBIGUOUS),
    ).astype(object)
    perturbation = np.array(
        [target_of.get(g, g) for g in guide], dtype=object
    )  # unassigned / ambiguous stay as they are

    covariates = _read_rda_object(cov_path)
    if not isinstance(covariates, pd.DataFrame) or len(covariates) != n_cells:
        raise InputError(cov_path, f"expected a data frame with {n_cells} rows")
    if "bio_rep" not in covariates.columns:
        raise InputError(cov_path, "missing column 'bio_rep'")

    cell_ids = pd.Index([f"cell_{k:05d}" for k in range(1, n_cells + 1)], name="cell_id")
    obs = pd.DataFrame(
        {
            "perturbation": perturbation,
            "guide": guide,
            "guide_umis": top.astype(np.int64),
            "guide_share": share,
            "n_guides": np.diff(guides_x_cells.T.tocsr().indptr).astype(np.int64),
            "batch": covariates["bio_rep"].astype(str).to_numpy(),
            "sample": covariates["bio_rep"].astype(str).to_numpy() + ":" + guide.astype(str),
            "cell_line": ECCITE_CELL_LINE,
            "is_control": perturbation == ECCITE_CONTROL,
        },
        index=cell_ids,
    )
    for col in ("perturbation", "guide", "batch", "sample", "cell_line"):
        obs[col] = obs[col].astype("category")
    var = pd.DataFrame({"gene_symbol": gene_names}, index=pd.Index(gene_names, name="gene"))
    if var.index.has_duplicates:
        raise InputError(resp_path, f"duplicated gene {var.index[var.index.duplicated()][0]!r}")
    adata = ad.AnnData(X=counts.astype(np.float32), obs=obs, var=var)
    adata.uns["source"] = "Papalexi et al. 2021 ECCITE-seq (GSE153056), sceptre example data"
    adata.uns["control_value"] = ECCITE_CONTROL
    adata.uns["guide_assignment"] = {
        "rule": "max-UMI guide; no guide UMI -> unassigned; tied top count -> ambiguous",
        "n_cells": int(n_cells),
        "n_assigned": int((best >= 0).sum()),
        "n_unassigned": int((best == -1).sum()),
        "n_ambiguous": int((best == -2).sum()),
        "n_share_below_half": int(((share < 0.5) & (best >= 0)).sum()),
        "n_control": int(obs["is_control"].sum()),
        "n_targets": int(len({t for t in target_of.values() if t != ECCITE_CONTROL})),
        "n_targets_assigned": int(len(set(perturbation) - {ECCITE_CONTROL, UNASSIGNED, AMBIGUOUS})),
    }
    return adata


# --- L1000 GCT ---------------------------------------------------------------------------
def read_gct(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(values rows x columns, row metadata, column metadata) of a GCT 1.2 or 1.3 file.

    GCT 1.3: line 1 ``#1.3``; line 2 ``rows cols n_row_meta n_col_meta``; line 3 the header
    (``id``, the row-metadata names, the column ids); then one line per column-metadata field
    (its name, ``n_row_meta`` fillers, one value per column); then one line per data row (row
    id, its metadata, one value per column). GCT 1.2 has no metadata counts and a ``Name``,
    ``Description`` header. Metadata are kept as strings; values are float64.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "file not found")
    with open(p, encoding="utf-8") as f:
        lines = f.read().splitlines()
    if len(lines) < 3:
        raise InputError(p, "too short for a GCT file")
    version = lines[0].strip()
    dims = lines[1].split("\t")
    try:
        ints = [int(x) for x in dims if x.strip()]
    except ValueError:
        raise InputError(p, f"line 2 must hold integers, got {lines[1]!r}") from None
    if version == "#1.3":
        if len(ints) != 4:
            raise InputError(p, "GCT 1.3 line 2 must hold rows, cols, n_row_meta, n_col_meta")
        n_rows, n_cols, n_rmeta, n_cmeta = ints
    elif version == "#1.2":
        if len(ints) != 2:
            raise InputError(p, "GCT 1.2 line 2 must hold rows, cols")
        n_rows, n_cols = ints
        n_rmeta, n_cmeta = 1, 0
    else:
        raise InputError(p, f"unsupported GCT version {version!r} (need #1.2 or #1.3)")
    header = lines[2].split("\t")
    if len(header) != 1 + n_rmeta + n_cols:
        raise InputError(
            p, f"header has {len(header)} fields, expected {1 + n_rmeta + n_cols}", row=2
        )
    col_ids = header[1 + n_rmeta :]
    rmeta_names = header[1 : 1 + n_rmeta]
    if len(lines) < 3 + n_cmeta + n_rows:
        raise InputError(p, f"expected {3 + n_cmeta + n_rows} lines, found {len(lines)}")

    def fields(k: int) -> list[str]:
        parts = lines[k].split("\t")
        if len(parts) != len(header):
            raise InputError(p, f"line has {len(parts)} fields, expected {len(header)}", row=k)
        return parts

    cmeta = {}
    for k in range(3, 3 + n_cmeta):
        parts = fields(k)
        cmeta[parts[0]] = parts[1 + n_rmeta :]
    col_meta = pd.DataFrame(cmeta, index=pd.Index(col_ids, name="id"))
    row_ids, rmeta_rows = [], []
    values = np.empty((n_rows, n_cols), dtype=np.float64)
    for r, k in enumerate(range(3 + n_cmeta, 3 + n_cmeta + n_rows)):
        parts = fields(k)
        row_ids.append(parts[0])
        rmeta_rows.append(parts[1 : 1 + n_rmeta])
        try:
            values[r] = np.asarray(parts[1 + n_rmeta :], dtype=np.float64)
        except ValueError as e:
            raise InputError(p, f"non-numeric value: {e}", row=k) from None
    row_meta = pd.DataFrame(rmeta_rows, columns=rmeta_names, index=pd.Index(row_ids, name="id"))
    return pd.DataFrame(values, index=row_meta.index, columns=col_meta.index), row_meta, col_meta


def _dose_um(dose: pd.Series, unit: pd.Series) -> np.ndarray:
    """Numeric dose in µM; missing (``-666``) -> NaN."""
    scale = {"um": 1.0, "µm": 1.0, "nm": 1e-3, "mm": 1e3}
    out = pd.to_numeric(dose.where(dose != L1000_MISSING), errors="coerce").to_numpy(float)
    factor = unit.str.lower().map(scale).fillna(1.0).to_numpy(float)
    return out * factor


def l1000_to_anndata(path: str | Path) -> ad.AnnData:
    """An L1000 GCT plate as wells x genes (float64 log2 expression, **not counts**).

    ``obs`` (index: the well's column id) holds every column-metadata field as a string plus
    ``drug`` (``pert_iname``), ``dose_uM`` (``pert_dose`` in µM; 0.0 for vehicle controls),
    ``cell_line`` (``cell_id``), ``plate`` (``det_plate``), ``sample`` (the column id),
    ``is_control`` (``pert_type == ctl_vehicle``). ``var`` (index: probe id) holds the row
    metadata (``pr_gene_symbol`` ...) and ``gene_symbol``.
    """
    p = Path(path)
    values, row_meta, col_meta = read_gct(p)
    for col in ("pert_iname", "pert_type", "pert_dose", "cell_id"):
        if col not in col_meta.columns:
            raise InputError(p, f"missing column metadata '{col}'")
    obs = col_meta.copy()
    obs["drug"] = obs["pert_iname"]
    is_control = (obs["pert_type"] == "ctl_vehicle").to_numpy()
    unit = obs["pert_dose_unit"] if "pert_dose_unit" in obs else pd.Series("um", index=obs.index)
    dose = _dose_um(obs["pert_dose"], unit)
    dose[is_control] = 0.0
    obs["dose_uM"] = dose
    obs["cell_line"] = obs["cell_id"]
    obs["plate"] = obs["det_plate"] if "det_plate" in obs else p.stem
    obs["sample"] = obs.index.to_numpy()
    obs["is_control"] = is_control
    var = row_meta.copy()
    if "pr_gene_symbol" in var.columns:
        var["gene_symbol"] = var["pr_gene_symbol"]
    X = np.ascontiguousarray(values.to_numpy().T, dtype=np.float64)
    adata = ad.AnnData(X=X, obs=obs, var=var)
    adata.uns["source"] = f"LINCS L1000 plate {p.stem} (cmapPy test fixture)"
    adata.uns["values"] = "L1000 level 3 (QNORM) log2 expression; not counts"
    adata.uns["control_value"] = L1000_CONTROL
    return adata


# --- simple analyses used by the tests and the README ---------------------------------------
def target_knockdown(
    adata: ad.AnnData,
    targets: Sequence[str] | None = None,
    perturbation_col: str = "perturbation",
    control_value: str = ECCITE_CONTROL,
) -> pd.DataFrame:
    """Own-target expression in cells with guides for a gene vs control cells.

    For each target gene that is also a measured gene: mean log1p(CP10k) (library size over
    the measured genes) in cells carrying its guides and in control cells, the log2 ratio of
    mean CP10k, and a two-sided Mann-Whitney U p-value. Sorted by log2 ratio (strongest
    knock-down first).
    """
    from scipy.stats import mannwhitneyu

    X = sp.csr_matrix(adata.X, dtype=np.float64)
    total = np.asarray(X.sum(axis=1)).ravel()
    scale = np.divide(1e4, total, out=np.zeros_like(total), where=total > 0)
    norm = (sp.diags(scale) @ X).tocsc()
    pert = adata.obs[perturbation_col].astype(str).to_numpy()
    ctrl = pert == control_value
    genes = adata.var_names.astype(str)
    if targets is None:
        targets = sorted(set(pert) & set(genes))
    rows = []
    for t in targets:
        if t not in genes:
            continue
        g = genes.get_loc(t)
        col = np.asarray(norm[:, g].todense()).ravel()
        on = pert == t
        if not on.any() or not ctrl.any():
            continue
        a, b = col[on], col[ctrl]
        p = float(mannwhitneyu(a, b, alternative="two-sided").pvalue)
        rows.append(
            {
                "target": t,
                "n_cells": int(on.sum()),
                "n_control": int(ctrl.sum()),
                "mean_cp10k": float(a.mean()),
                "mean_cp10k_control": float(b.mean()),
                "mean_log1p": float(np.log1p(a).mean()),
                "mean_log1p_control": float(np.log1p(b).mean()),
                "log2_ratio": float(np.log2((a.mean() + 1e-9) / (b.mean() + 1e-9))),
                "pvalue": p,
            }
        )
    return pd.DataFrame(rows).sort_values("log2_ratio", ignore_index=True)


def top_changed_genes(
    adata: ad.AnnData,
    drug: str,
    *,
    min_dose_uM: float = 0.0,
    n: int = 10,
    drug_col: str = "drug",
    symbol_col: str = "gene_symbol",
) -> pd.DataFrame:
    """Genes most changed by ``drug`` vs the control wells (log2 values, e.g. L1000).

    Per gene: mean over the drug's wells (dose >= ``min_dose_uM``) minus the control mean
    (a log2 fold change), and that difference over the control wells' standard deviation
    (a z-score). The ``n`` largest absolute z-scores, largest first.
    """
    X = np.asarray(adata.X, dtype=np.float64)
    obs = adata.obs
    ctrl = obs["is_control"].to_numpy(bool)
    on = (obs[drug_col].astype(str) == drug).to_numpy() & (
        obs["dose_uM"].to_numpy(float) >= min_dose_uM
    )
    if not on.any():
        raise ValueError(f"no wells of {drug!r} at >= {min_dose_uM} uM")
    diff = X[on].mean(axis=0) - X[ctrl].mean(axis=0)
    sd = X[ctrl].std(axis=0, ddof=1)
    z = diff / np.maximum(sd, 1e-6)
    sym = adata.var[symbol_col].astype(str).to_numpy() if symbol_col in adata.var else None
    out = pd.DataFrame(
        {
            "probe": adata.var_names.astype(str),
            "gene_symbol": sym if sym is not None else adata.var_names.astype(str),
            "log2fc": diff,
            "z": z,
        }
    )
    order = np.argsort(-np.abs(z), kind="stable")[:n]
    out = out.iloc[order].reset_index(drop=True)
    out.attrs["n_wells"] = int(on.sum())
    out.attrs["n_control"] = int(ctrl.sum())
    return out


# --- for the workflow's prepare rule -------------------------------------------------------
def prepare_h5ad(kind: str, source: str | Path, output: str | Path) -> ad.AnnData:
    """Convert the shared real data (``eccite``: the .rda folder; ``l1000``: the .gct file)
    and write it atomically to ``output`` (under results/, never the repository)."""
    from tahoeflow.export.h5ad import write_h5ad

    if kind == "eccite":
        adata = eccite_to_anndata(source)
    elif kind == "l1000":
        adata = l1000_to_anndata(source)
    else:
        raise ValueError(f"unknown real dataset {kind!r} (eccite or l1000)")
    write_h5ad(adata, output)
    return adata
