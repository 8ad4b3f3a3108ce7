"""Drug sensitivity from cell counts: a line's share of a well against the plate's control wells.

Tahoe-100M pools ~50 cell lines in every well. A drug that kills one line lowers that line's
share of the well's cells; one that kills every line lowers the well's total. Per (plate, drug,
dose, cell line), with the control drug's wells (``DMSO_TF``) of the same plate as reference:

* ``log2fc = log2((n + pc) / (N + pc)) - log2((n_c + pc) / (N_c + pc))``: ``n`` cells of the
  line among ``N`` cells of the treated well(s), ``n_c`` among ``N_c`` in the control wells;
* ``pvalue``: Fisher's exact test of the 2x2 table (line vs rest) x (treated vs control),
  two-sided as twice the smaller one-sided p (``scipy.stats.hypergeom``, vectorised);
* ``well_log2fc``: cells per treated well against cells per control well (overall cytotoxicity).

Pooled over the plates that hold a drug-dose: counts summed over the plates whose plate-level
row is usable; the p-value is the Cochran-Mantel-Haenszel test stratified by plate (continuity
correction 0.5, as R's ``mantelhaen.test``), so a line whose share differs between plates is
not confounded with the plate. ``qvalue`` is Benjamini-Hochberg within each level.

A plate without control wells, a well without cells or a line without control cells gives null
values and the reason in ``qc``; never an infinite ratio. The table's columns are documented in
docs/data_contract.md ("results/phenotypes/sensitivity.parquet").
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from scipy import stats

from tahoeflow import io as tio
from tahoeflow.multitest import bh_adjust

__all__ = [
    "COUNT_SCHEMA",
    "SENSITIVITY_SCHEMA",
    "QC_OK",
    "counts_from_cells",
    "add_empty_wells",
    "condition_counts",
    "fisher_pvalues",
    "cmh_pvalues",
    "sensitivity_table",
    "sensitivity_arrow",
]

KEYS = ["plate", "drug", "dose_uM"]
PLATE_SEP = "+"

COUNT_SCHEMA = pa.schema(
    [
        ("plate", pa.string()),
        ("sample", pa.string()),
        ("drug", pa.string()),
        ("dose_uM", pa.float64()),
        ("cell_line_id", pa.string()),
        ("n_cells", pa.int64()),
    ]
)
"""results/phenotypes/counts.parquet: cells per (plate, well, line); an empty well has one row
with ``cell_line_id`` null and ``n_cells`` 0."""

SENSITIVITY_SCHEMA = pa.schema(
    [
        ("level", pa.string()),
        ("plate", pa.string()),
        ("drug", pa.string()),
        ("dose_uM", pa.float64()),
        ("cell_line_id", pa.string()),
        ("n_plates", pa.int64()),
        ("n_wells", pa.int64()),
        ("n_cells", pa.int64()),
        ("n_well_cells", pa.int64()),
        ("n_control_wells", pa.int64()),
        ("n_control_cells", pa.int64()),
        ("n_control_well_cells", pa.int64()),
        ("share", pa.float64()),
        ("control_share", pa.float64()),
        ("log2fc", pa.float64()),
        ("pvalue", pa.float64()),
        ("qvalue", pa.float64()),
        ("well_log2fc", pa.float64()),
        ("qc", pa.string()),
    ]
)

QC_OK = "ok"
QC_NO_CONTROL = "no control well ({control}) on the plate"
QC_CONTROL_EMPTY = "control wells have zero cells"
QC_WELL_EMPTY = "treated well has zero cells"
QC_LINE_NO_CONTROL = "line has no control cells on the plate"
QC_ONE_LINE = "one cell line only: no test"
QC_POOLED_NONE = "no usable plate: "

_VALUE_COLUMNS = ["share", "control_share", "log2fc", "pvalue", "qvalue", "well_log2fc"]
_INT_COLUMNS = [f.name for f in SENSITIVITY_SCHEMA if f.type == pa.int64()]


def _plate_key(name: str) -> tuple:
    """Natural order: plate2 before plate10."""
    return tuple((0, int(t)) if t.isdigit() else (1, t) for t in re.split(r"(\d+)", name))


# --- counts -----------------------------------------------------------------------------------
def counts_from_cells(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells per (plate, sample, drug, dose_uM, cell_line_id) of a per-cell table (the merged
    ``cells.parquet``: one row per cell that passed the workflow's filters)."""
    missing = [c for c in COUNT_SCHEMA.names[:-1] if c not in cells.columns]
    if missing:
        raise ValueError(f"cells table lacks columns {missing}")
    keys = COUNT_SCHEMA.names[:-1]
    out = cells.groupby(keys, observed=True, sort=True, dropna=False).size()
    return out.rename("n_cells").reset_index().astype({"n_cells": np.int64})


def counts_from_cells_file(path: str | Path, batch_rows: int = 1 << 20) -> pd.DataFrame:
    """:func:`counts_from_cells` of a cells Parquet file, one record batch at a time (memory:
    one row group, one batch and the groups, not the cells), summed over the batches: the same
    table."""
    keys = COUNT_SCHEMA.names[:-1]
    f = tio.parquet_file(path)
    parts = [counts_from_cells(b.to_pandas()) for b in tio.read_batches(f, keys, batch_rows)]
    if len(parts) <= 1:
        return parts[0] if parts else counts_from_cells(f.schema_arrow.empty_table().to_pandas())
    out = pd.concat(parts, ignore_index=True)
    out = out.groupby(keys, observed=True, sort=True, dropna=False)["n_cells"].sum()
    return out.reset_index().astype({"n_cells": np.int64})


def add_empty_wells(
    counts: pd.DataFrame, wells: pd.DataFrame, control_drug: str | None = None
) -> pd.DataFrame:
    """``counts`` plus one row (``cell_line_id`` null, ``n_cells`` 0) for each well of ``wells``
    (columns ``sample``, ``plate``, ``drug``, ``dose_uM``; e.g. sample_metadata) that has no cell
    in ``counts``, on a plate that ``counts`` has and of a drug that it has or of
    ``control_drug`` (names compared without surrounding spaces): a slice of the atlas does not
    make every other drug's wells "empty", but a plate's empty control wells are reported."""
    for col in ("sample", "plate", "drug", "dose_uM"):
        if col not in wells.columns:
            raise ValueError(f"wells table lacks column {col!r}")
    if counts.empty:
        return counts
    plates = set(counts["plate"].astype(str))
    drugs = set(counts["drug"].astype(str).str.strip())
    if control_drug is not None:
        drugs.add(str(control_drug).strip())
    have = set(counts["sample"].astype(str))
    w = wells.astype({"sample": str, "plate": str, "drug": str})
    keep = w["plate"].isin(plates) & w["drug"].str.strip().isin(drugs) & ~w["sample"].isin(have)
    empty = w.loc[keep, ["plate", "sample", "drug", "dose_uM"]].assign(
        cell_line_id=None, n_cells=np.int64(0)
    )
    if empty.empty:
        return counts
    return pd.concat([counts, empty[counts.columns]], ignore_index=True)


def condition_counts(counts: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-well counts -> (cells per (plate, drug, dose_uM, cell_line_id), wells per (plate,
    drug, dose_uM) with ``n_wells`` (wells with cells) and ``n_empty_wells``)."""
    c = counts.astype({"n_cells": np.int64})
    per_well = c.groupby([*KEYS, "sample"], observed=True, dropna=False)["n_cells"].sum()
    per_well = per_well.reset_index()
    per_well["has"] = per_well["n_cells"] > 0
    wells = per_well.groupby(KEYS, observed=True).agg(n_wells=("has", "sum"), n_all=("has", "size"))
    wells["n_empty_wells"] = wells.pop("n_all") - wells["n_wells"]
    lines = c[c["cell_line_id"].notna() & (c["n_cells"] > 0)]
    cond = lines.groupby([*KEYS, "cell_line_id"], observed=True)["n_cells"].sum().reset_index()
    return cond, wells.astype(np.int64).reset_index()


# --- tests ------------------------------------------------------------------------------------
def fisher_pvalues(a, b, c, d) -> np.ndarray:
    """Two-sided Fisher exact p of the 2x2 tables [[a, b], [c, d]] (arrays), as twice the
    smaller one-sided p (capped at 1). The one-sided p are scipy's ``fisher_exact``
    ``alternative='less'`` / ``'greater'``; ``a`` is hypergeometric given the margins."""
    a, b, c, d = (np.asarray(x, dtype=np.int64) for x in (a, b, c, d))
    m, n, k = a + b + c + d, a + c, a + b
    with np.errstate(all="ignore"):
        lower = stats.hypergeom.cdf(a, m, n, k)
        upper = stats.hypergeom.sf(a - 1, m, n, k)
    return np.minimum(1.0, 2.0 * np.minimum(lower, upper))


def cmh_pvalues(a, b, c, d, group) -> tuple[np.ndarray, np.ndarray]:
    """Cochran-Mantel-Haenszel test of the 2x2 tables [[a, b], [c, d]], one stratum per row,
    stratified within ``group`` (integer codes 0..G-1). Returns (group codes, p) with the
    continuity correction of R's ``mantelhaen.test`` (``correct=TRUE``); p is NaN where every
    stratum's variance is 0."""
    a, b, c, d = (np.asarray(x, dtype=np.float64) for x in (a, b, c, d))
    group = np.asarray(group, dtype=np.int64)
    n = a + b + c + d
    expected = (a + b) * (a + c) / n
    with np.errstate(all="ignore"):
        var = (a + b) * (c + d) * (a + c) * (b + d) / (n * n * (n - 1))
    var = np.where(n > 1, var, 0.0)
    size = int(group.max()) + 1 if group.size else 0
    delta = np.bincount(group, a - expected, minlength=size)
    v = np.bincount(group, var, minlength=size)
    yates = np.minimum(0.5, np.abs(delta))
    with np.errstate(all="ignore"):
        stat = (np.abs(delta) - yates) ** 2 / v
    p = np.where(v > 0, stats.chi2.sf(stat, 1), np.nan)
    return np.arange(size), p


def _log2_ratio(num, den, pc):
    return np.log2((np.asarray(num, float) + pc) / (np.asarray(den, float) + pc))


# --- the table --------------------------------------------------------------------------------
def sensitivity_table(
    cond: pd.DataFrame,
    wells: pd.DataFrame,
    *,
    control_drug: str,
    pseudocount: float = 0.5,
) -> pd.DataFrame:
    """The sensitivity table (plate and pooled levels) from :func:`condition_counts`' output.

    Args:
        cond: cells per (plate, drug, dose_uM, cell_line_id): column ``n_cells``.
        wells: wells per (plate, drug, dose_uM): ``n_wells`` (with cells), ``n_empty_wells``.
        control_drug: the control's name (compared without surrounding spaces).
        pseudocount: added to each count of the log ratios (> 0 keeps them finite).

    Returns:
        A DataFrame with the columns of :data:`SENSITIVITY_SCHEMA` (NaN where null).
    """
    if not (np.isfinite(pseudocount) and pseudocount > 0):
        raise ValueError(f"pseudocount must be a finite number > 0, got {pseudocount!r}")
    for col in [*KEYS, "cell_line_id", "n_cells"]:
        if col not in cond.columns:
            raise ValueError(f"cond lacks column {col!r}")
    for col in [*KEYS, "n_wells", "n_empty_wells"]:
        if col not in wells.columns:
            raise ValueError(f"wells lacks column {col!r}")
    control = str(control_drug).strip()
    pc = float(pseudocount)
    cond = cond[cond["n_cells"] > 0]
    is_ctrl = cond["drug"].astype(str).str.strip() == control
    w_ctrl = wells["drug"].astype(str).str.strip() == control

    # the plate's lines (seen in any well) and its control counts
    plate_lines = cond[["plate", "cell_line_id"]].drop_duplicates()
    ctrl_line = cond[is_ctrl].groupby(["plate", "cell_line_id"], observed=True)["n_cells"].sum()
    ctrl_plate = wells[w_ctrl].groupby("plate", observed=True)[["n_wells", "n_empty_wells"]].sum()
    ctrl_cells = cond[is_ctrl].groupby("plate", observed=True)["n_cells"].sum()
    # treated conditions x the plate's lines
    treated = wells[~w_ctrl].copy()
    tot = cond[~is_ctrl].groupby(KEYS, observed=True)["n_cells"].sum().rename("n_well_cells")
    treated = treated.merge(tot.reset_index(), on=KEYS, how="left")
    df = treated.merge(plate_lines, on="plate", how="inner")
    df = df.merge(cond[~is_ctrl], on=[*KEYS, "cell_line_id"], how="left")
    df = df.merge(ctrl_line.rename("n_control_cells").reset_index(), on=["plate", "cell_line_id"],
                  how="left")  # fmt: skip
    df = df.merge(
        ctrl_plate.rename(columns={"n_wells": "n_control_wells", "n_empty_wells": "_ctrl_empty"}),
        left_on="plate", right_index=True, how="left",
    )  # fmt: skip
    df = df.merge(ctrl_cells.rename("n_control_well_cells"), left_on="plate", right_index=True,
                  how="left")  # fmt: skip
    ints = ["n_cells", "n_well_cells", "n_control_cells", "n_control_wells", "_ctrl_empty",
            "n_control_well_cells"]  # fmt: skip
    df[ints] = df[ints].fillna(0).astype(np.int64)
    has_ctrl = df["plate"].isin(ctrl_plate.index).to_numpy()

    a = df["n_cells"].to_numpy()
    nt = df["n_well_cells"].to_numpy()
    c = df["n_control_cells"].to_numpy()
    nc = df["n_control_well_cells"].to_numpy()
    qc = np.select(
        [~has_ctrl, nc == 0, nt == 0, c == 0, (nt - a) + (nc - c) == 0],
        [QC_NO_CONTROL.format(control=control), QC_CONTROL_EMPTY, QC_WELL_EMPTY,
         QC_LINE_NO_CONTROL, QC_ONE_LINE],
        QC_OK,
    ).astype(object)  # fmt: skip
    df["qc"] = qc
    ok = qc == QC_OK
    df["n_plates"] = np.int64(1)
    df["level"] = "plate"
    plate = _values(df, ok, pc)
    plate["pvalue"] = np.where(ok, fisher_pvalues(a, nt - a, c, nc - c), np.nan)
    plate["qvalue"] = bh_adjust(plate["pvalue"].to_numpy())
    pooled = _pooled(plate, pc)
    out = pd.concat([plate, pooled], ignore_index=True)
    out = out.sort_values(["level", "drug", "dose_uM", "cell_line_id", "plate"], kind="stable")
    return out[SENSITIVITY_SCHEMA.names].reset_index(drop=True)


def _values(df: pd.DataFrame, ok: np.ndarray, pc: float) -> pd.DataFrame:
    """Shares, log ratios and the per-well cytotoxicity; NaN where not ``ok``."""
    a, nt = df["n_cells"].to_numpy(), df["n_well_cells"].to_numpy()
    c, nc = df["n_control_cells"].to_numpy(), df["n_control_well_cells"].to_numpy()
    w, wc = df["n_wells"].to_numpy(), df["n_control_wells"].to_numpy()
    with np.errstate(all="ignore"):
        df["share"] = np.where(ok, a / nt, np.nan)
        df["control_share"] = np.where(ok, c / nc, np.nan)
        df["log2fc"] = np.where(ok, _log2_ratio(a, nt, pc) - _log2_ratio(c, nc, pc), np.nan)
        df["well_log2fc"] = np.where(ok, _log2_ratio(nt / w, nc / wc, pc), np.nan)
    return df


def _pooled(plate: pd.DataFrame, pc: float) -> pd.DataFrame:
    """Pooled rows: sums over the usable plates of each (drug, dose, line), CMH p-value."""
    cols = ["n_wells", "n_cells", "n_well_cells", "n_control_wells", "n_control_cells",
            "n_control_well_cells"]  # fmt: skip
    keys = ["drug", "dose_uM", "cell_line_id"]
    if plate.empty:
        return plate.iloc[0:0].assign(level="pooled")
    ok = (plate["qc"] == QC_OK).to_numpy()
    p = plate.assign(_ok=ok)
    p = p.sort_values("plate", key=lambda s: s.map(_plate_key), kind="stable")
    # a condition pools its usable plates; one without any keeps all plates' counts for the record
    grp = p.groupby(keys, observed=True, sort=False)
    any_ok = grp["_ok"].transform("any").to_numpy()
    use = p[p["_ok"] | ~any_ok]
    g = use.groupby(keys, observed=True, sort=False)
    out = g[cols].sum()
    out["n_plates"] = g["_ok"].sum().astype(np.int64)
    out["plate"] = g["plate"].agg(PLATE_SEP.join)
    out["_reason"] = g["qc"].first()
    out = out.reset_index()
    good = (out["n_plates"] > 0).to_numpy()
    out["qc"] = np.where(good, QC_OK, QC_POOLED_NONE + out["_reason"].astype(str))
    out["level"] = "pooled"
    out = _values(out, good, pc)
    # CMH over the usable plates (strata)
    u = use[use["_ok"]]
    codes = pd.MultiIndex.from_frame(out[keys]).get_indexer(pd.MultiIndex.from_frame(u[keys]))
    a, nt = u["n_cells"].to_numpy(), u["n_well_cells"].to_numpy()
    c, nc = u["n_control_cells"].to_numpy(), u["n_control_well_cells"].to_numpy()
    pv = np.full(len(out), np.nan)
    if len(u):
        idx, p_cmh = cmh_pvalues(a, nt - a, c, nc - c, codes)
        pv[idx] = p_cmh
    out["pvalue"] = np.where(good, pv, np.nan)
    out["qvalue"] = bh_adjust(out["pvalue"].to_numpy())
    return out.drop(columns="_reason")


def sensitivity_arrow(df: pd.DataFrame) -> pa.Table:
    """The table as Arrow with :data:`SENSITIVITY_SCHEMA`: NaN and ±inf become null."""
    df = df.copy()
    for col in _VALUE_COLUMNS:
        v = df[col].to_numpy(np.float64)
        df[col] = np.where(np.isfinite(v), v, np.nan)
    arrays = []
    for f in SENSITIVITY_SCHEMA:
        s = df[f.name]
        if f.type == pa.float64():
            arrays.append(pa.array(s.to_numpy(np.float64), type=f.type, from_pandas=True))
        elif f.type == pa.int64():
            arrays.append(pa.array(s.to_numpy(np.int64), type=f.type))
        else:
            arrays.append(pa.array(s.astype(object).where(s.notna(), None), type=f.type))
    return pa.Table.from_arrays(arrays, schema=SENSITIVITY_SCHEMA)
