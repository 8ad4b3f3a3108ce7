"""Cell-cycle scores per cell (scanpy's ``score_genes_cell_cycle``) and the G-arrest index.

**Genes.** Tirosh et al. 2016 (Science 352:189, doi:10.1126/science.aad0501): 43 S-phase and
54 G2/M-phase human genes, the lists Seurat distributes as ``cc.genes`` and scanpy's tutorials
as ``regev_lab_cell_cycle_genes.txt``, committed in ``resources/cell_cycle_genes.tsv``
(``gene_symbol``: today's HGNC symbol, ``phase``, ``symbol_2016``: the paper's; three were
renamed since: MLF1IP -> CENPU, FAM64A -> PIMREG, HN1 -> JPT1, and Tahoe's gene table has only
the new names).

**Scores.** As ``scanpy.tl.score_genes`` (1.10+, ``ctrl_as_ref=True``): the genes of the data
are cut into expression bins by the rank of their mean log1p(CP10k) over *all* cells
(``rank(method="min") // round(n_genes / (n_bins - 1))``); for each bin holding a listed gene,
``ctrl_size`` genes are drawn from the bin without replacement (numpy's legacy ``RandomState``
seeded with ``seed``, one fresh seed per list, drawing in increasing bin order: the draw
pandas' ``Series.sample`` makes from ``np.random.seed(seed)``), the listed genes are removed
from the draw, and the control set is the union over bins. A cell's score is the mean of the
listed genes' log1p(CP10k) minus the mean over the control genes (zeros included).
``score_genes_cell_cycle`` uses ``ctrl_size = min(len(S genes), len(G2M genes))`` (43) and
calls the phase ``S``, ``G2M`` when the G2M score is higher, and ``G1`` when both are negative.

The means over all cells are the merged gene statistics (``mean_log`` of
``results/merged/gene_stats.parquet``), so the bins are those of the whole data set and every
shard can be scored on its own after the merge.

**G-arrest index** of a group of cells: log2 of the fraction of cells outside S,
``log2((G1 + G2M + pc) / (G1 + G2M + S + 2 pc))``; a condition's arrest is its index minus the
index of the DMSO cells of the same line on the same plate(s) (> 0: fewer cells in S), tested by
Fisher's exact test on (S, not S) x (treated, DMSO) counts, BH-adjusted within each level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from tahoeflow.cells import normalize as pp
from tahoeflow.multitest import bh_adjust

PHASES = ("G1", "S", "G2M")
KEYS = ["plate", "drug", "dose_uM", "cell_line_id"]
COND = ["drug", "dose_uM", "cell_line_id"]
SORT = ["level", *COND, "plate"]
GENES_PATH = Path(__file__).resolve().parents[3] / "resources" / "cell_cycle_genes.tsv"


def read_gene_lists(path: str | Path = GENES_PATH) -> pd.DataFrame:
    """The committed gene lists: ``gene_symbol``, ``phase`` (``S``/``G2M``), ``symbol_2016``."""
    df = pd.read_csv(path, sep="\t", dtype=str)
    need = {"gene_symbol", "phase", "symbol_2016"}
    if not need <= set(df.columns):
        raise ValueError(f"{path}: columns {sorted(need)} expected, found {list(df.columns)}")
    if not set(df["phase"]) <= {"S", "G2M"}:
        raise ValueError(f"{path}: phase must be S or G2M")
    return df


@dataclass
class ResolvedGenes:
    """Positions (in the gene order of the statistics) of each list's genes found in the data."""

    s: np.ndarray
    g2m: np.ndarray
    s_symbols: list[str]
    g2m_symbols: list[str]
    missing: dict[str, list[str]] = field(default_factory=dict)


def resolve_genes(lists: pd.DataFrame, symbols: Sequence[Any]) -> ResolvedGenes:
    """Find each listed gene among ``symbols`` (today's symbol first, else the 2016 one).

    Genes of neither name are reported under ``missing`` (by phase), as scanpy ignores them.
    """
    sym = pd.Index(pd.Series(list(symbols), dtype=object).fillna("").astype(str))
    pos = pd.Series(np.arange(len(sym)), index=sym)
    pos = pos[~pos.index.duplicated()]
    out: dict[str, tuple[list[int], list[str], list[str]]] = {}
    for phase in ("S", "G2M"):
        rows = lists[lists["phase"] == phase]
        idx, found, missing = [], [], []
        for new, old in zip(rows["gene_symbol"], rows["symbol_2016"], strict=True):
            hit = new if new in pos.index else old if old in pos.index else None
            if hit is None:
                missing.append(new)
            elif int(pos[hit]) not in idx:
                idx.append(int(pos[hit]))
                found.append(hit)
        out[phase] = (idx, found, missing)
    return ResolvedGenes(
        s=np.asarray(out["S"][0], dtype=np.int64),
        g2m=np.asarray(out["G2M"][0], dtype=np.int64),
        s_symbols=out["S"][1],
        g2m_symbols=out["G2M"][1],
        missing={k: v[2] for k, v in out.items() if v[2]},
    )


def control_genes(
    means: np.ndarray, genes: np.ndarray, ctrl_size: int, *, n_bins: int = 25, seed: int = 0
) -> np.ndarray:
    """Positions of the control genes scanpy's ``score_genes`` draws for ``genes`` (sorted).

    ``means``: each gene's mean expression over all cells (the gene pool, in the data's gene
    order; non-finite means are left out of the pool, as scanpy does); ``genes``: positions of
    the listed genes in that order.
    """
    means = np.asarray(means, dtype=np.float64)
    genes = np.unique(np.asarray(genes, dtype=np.int64))
    if ctrl_size < 1 or n_bins < 2:
        raise ValueError(f"ctrl_size must be >= 1 and n_bins >= 2 (got {ctrl_size}, {n_bins})")
    if genes.size == 0 or genes.min() < 0 or genes.max() >= means.size:
        raise ValueError("genes must be non-empty positions into means")
    pool = np.flatnonzero(np.isfinite(means))
    if not np.all(np.isfinite(means[genes])):
        raise ValueError("a listed gene has no finite mean")
    n_items = int(np.round(pool.size / (n_bins - 1)))
    if n_items < 1:
        raise ValueError(f"{pool.size} genes are too few for {n_bins} expression bins")
    rank = pd.Series(means[pool]).rank(method="min").to_numpy()
    cut = np.full(means.size, np.nan)
    cut[pool] = rank // n_items
    rng = np.random.RandomState(seed)
    chosen = []
    for c in np.unique(cut[genes]):
        members = pool[cut[pool] == c]
        if ctrl_size < members.size:
            members = members[rng.choice(members.size, size=ctrl_size, replace=False)]
        chosen.append(np.setdiff1d(members, genes))
    out = np.unique(np.concatenate(chosen))
    if out.size == 0:
        raise ValueError("no control genes in any expression bin")
    return out


@dataclass
class Scorer:
    """Gene positions of the two lists and their control sets (``pool`` order)."""

    s: np.ndarray
    s_ctrl: np.ndarray
    g2m: np.ndarray
    g2m_ctrl: np.ndarray

    def to_dict(self) -> dict[str, list[int]]:
        return {k: [int(v) for v in getattr(self, k)] for k in ("s", "s_ctrl", "g2m", "g2m_ctrl")}

    @classmethod
    def from_dict(cls, d: dict[str, Sequence[int]]) -> Scorer:
        return cls(
            **{k: np.asarray(d[k], dtype=np.int64) for k in ("s", "s_ctrl", "g2m", "g2m_ctrl")}
        )


def make_scorer(
    means: np.ndarray, genes: ResolvedGenes, *, n_bins: int = 25, seed: int = 0
) -> Scorer:
    """scanpy's ``score_genes_cell_cycle`` draw: ``ctrl_size = min(#S, #G2M)`` of the lists as
    passed (the found genes), one fresh seed per list."""
    if genes.s.size == 0 or genes.g2m.size == 0:
        raise ValueError("both gene lists need at least one gene of the data")
    size = min(genes.s.size, genes.g2m.size)
    return Scorer(
        s=np.sort(genes.s),
        s_ctrl=control_genes(means, genes.s, size, n_bins=n_bins, seed=seed),
        g2m=np.sort(genes.g2m),
        g2m_ctrl=control_genes(means, genes.g2m, size, n_bins=n_bins, seed=seed),
    )


def assign_phase(s_score: np.ndarray, g2m_score: np.ndarray) -> np.ndarray:
    """scanpy's rule: S; G2M where the G2M score is higher; G1 where both are negative."""
    s_score, g2m_score = np.asarray(s_score), np.asarray(g2m_score)
    phase = np.where(g2m_score > s_score, "G2M", "S").astype(object)
    phase[(s_score < 0) & (g2m_score < 0)] = "G1"
    return phase


def scored_genes(scorer: Scorer) -> np.ndarray:
    """The pool genes the scores read: the four sets' genes, sorted and unique."""
    return np.unique(np.concatenate((scorer.s, scorer.s_ctrl, scorer.g2m, scorer.g2m_ctrl)))


def score_cells(
    counts: sp.csr_matrix,
    scorer: Scorer,
    columns: np.ndarray | None = None,
    target_sum: float = pp.TARGET_SUM,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S score, G2M score, phase) of each cell of ``counts`` (cells x genes, raw counts).

    ``columns[i]``: the column of ``counts`` holding pool gene ``i`` (default: the same order).
    Each cell is normalised over all its genes (log1p(CP10k)), then only the scored genes are
    read (:func:`score_normalized`).
    """
    pos = scored_genes(scorer)
    cols = pos if columns is None else np.asarray(columns, dtype=np.int64)[pos]
    X = pp.log_normalize_columns(counts, np.sort(cols), target_sum)
    return score_normalized(X, scorer, cols)


def score_normalized(
    X: sp.csr_matrix, scorer: Scorer, cols: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S score, G2M score, phase) from log1p(CP10k) of the scored genes only.

    ``X``'s columns are ``np.sort(cols)``, where ``cols[i]`` is the column of
    ``scored_genes(scorer)[i]``; the four means are one sparse product.
    """
    sets = (scorer.s, scorer.s_ctrl, scorer.g2m, scorer.g2m_ctrl)
    pos = scored_genes(scorer)
    order = np.argsort(np.asarray(cols, dtype=np.int64))
    W = np.zeros((pos.size, 4))
    where = np.empty(pos.size, dtype=np.int64)
    where[order] = np.arange(pos.size)  # row of W (column of X) of pos[i]
    for j, genes in enumerate(sets):
        W[where[np.searchsorted(pos, genes)], j] = 1.0 / genes.size
    M = np.asarray(X @ W) if X.shape[0] else np.zeros((0, 4))
    s_score, g2m_score = M[:, 0] - M[:, 1], M[:, 2] - M[:, 3]
    return s_score, g2m_score, assign_phase(s_score, g2m_score)


# --------------------------------------------------------------------------- arrest index
def phase_counts(cells: pd.DataFrame) -> pd.DataFrame:
    """Cells per (line, drug, dose, plate, is_control) and phase: columns ``n_G1/n_S/n_G2M``."""
    need = [*KEYS, "is_control", "phase"]
    missing = [c for c in need if c not in cells.columns]
    if missing:
        raise ValueError(f"cells lack the columns {missing}")
    bad = set(cells["phase"].dropna().unique()) - set(PHASES)
    if bad or cells["phase"].isna().any():
        raise ValueError(f"phase must be one of {PHASES} (found {sorted(map(str, bad))})")
    keys = [*KEYS, "is_control"]
    n = (
        cells.groupby([*keys, "phase"], observed=True, dropna=False).size()
        .unstack("phase", fill_value=0).reindex(columns=list(PHASES), fill_value=0)
    )  # fmt: skip
    n.columns = [f"n_{p}" for p in PHASES]
    return n.reset_index()


def _g_index(non_s: np.ndarray, n: np.ndarray, pc: float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.log2((non_s + pc) / (n + 2 * pc))
    return np.where(np.isfinite(v), v, np.nan)


def _fisher(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Two-sided Fisher p of each 2x2 table [[a, b], [c, d]] (NaN where a table is marked -1)."""
    from scipy.stats import fisher_exact

    tables = np.stack([a, b, c, d], axis=1).astype(np.int64)
    p = np.full(len(tables), np.nan)
    ok = np.all(tables >= 0, axis=1)
    if not ok.any():
        return p
    uniq, inv = np.unique(tables[ok], axis=0, return_inverse=True)
    pu = np.array([fisher_exact(t.reshape(2, 2))[1] for t in uniq])  # one per distinct table
    p[ok] = pu[np.ravel(inv)]
    return p


def arrest_table(
    counts: pd.DataFrame, *, pseudocount: float = 0.5, min_cells: int = 10
) -> pd.DataFrame:
    """Phase fractions and the G-arrest index per (line, drug, dose, plate) and pooled over plates.

    ``counts``: :func:`phase_counts` (rows of one key are summed). Each treated condition is
    compared with the DMSO cells (``is_control``) of its line on the same plate; ``level``
    ``plate`` rows are one plate, ``pooled`` rows sum a condition's plates that have DMSO cells
    of the line (``plate`` joined by ``+``, as the DE table does). ``qc`` says why a row has no
    statistic (no DMSO cells of the line on the plate, fewer than ``min_cells`` treated cells);
    the statistics are then null, never infinite.
    """
    if pseudocount < 0 or min_cells < 1:
        raise ValueError("pseudocount must be >= 0 and min_cells >= 1")
    n_cols = [f"n_{p}" for p in PHASES]
    c = counts.groupby([*KEYS, "is_control"], observed=True, dropna=False)[n_cols].sum()
    c = c.reset_index()
    ctrl = (
        c[c["is_control"]].groupby(["cell_line_id", "plate"], observed=True)[n_cols].sum()
        .rename(columns=lambda x: "control_" + x).reset_index()
    )  # fmt: skip
    t = c[~c["is_control"]].drop(columns="is_control")
    t = t.merge(ctrl, on=["cell_line_id", "plate"], how="left")
    cc = [f"control_n_{p}" for p in PHASES]
    has_ctrl = t[cc].notna().all(axis=1) & (t[cc].fillna(0).sum(axis=1) > 0)
    t[cc] = t[cc].fillna(0).astype(np.int64)
    t["level"] = "plate"
    # pooled: the plates of a condition with DMSO cells of the line
    # (a condition without any such plate pools all its plates, with no DMSO cells)
    none = ~t.set_index(COND).index.isin(t[has_ctrl].set_index(COND).index)
    pooled = t[has_ctrl.to_numpy() | none].groupby(COND, observed=True, dropna=False).agg(
        plate=("plate", lambda s: "+".join(sorted(map(str, s)))),
        **{k: (k, "sum") for k in [*n_cols, *cc]},
    ).reset_index()  # fmt: skip
    pooled["level"] = "pooled"
    out = pd.concat([t, pooled], ignore_index=True)
    n = out[n_cols].sum(axis=1).to_numpy()
    nc = out[cc].sum(axis=1).to_numpy()
    out.insert(len(KEYS) + 1, "n_cells", n.astype(np.int64))
    out["n_control_cells"] = nc.astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        for p in PHASES:
            out[f"frac_{p}"] = np.where(n > 0, out[f"n_{p}"] / n, np.nan)
            out[f"control_frac_{p}"] = np.where(nc > 0, out[f"control_n_{p}"] / nc, np.nan)
    non_s = (out["n_G1"] + out["n_G2M"]).to_numpy()
    c_non_s = (out["control_n_G1"] + out["control_n_G2M"]).to_numpy()
    out["g_index"] = np.where(n > 0, _g_index(non_s, n, pseudocount), np.nan)
    out["control_g_index"] = np.where(nc > 0, _g_index(c_non_s, nc, pseudocount), np.nan)
    qc = np.full(len(out), "ok", dtype=object)
    pooled_row = (out["level"] == "pooled").to_numpy()
    qc[(nc == 0) & ~pooled_row] = "no DMSO cells of this cell line on the plate"
    qc[(nc == 0) & pooled_row] = "no plate with DMSO cells of this cell line"
    few = (nc > 0) & (n < min_cells)
    qc[few] = [f"{int(k)} treated cells (< phenotypes.cell_cycle.min_cells {min_cells})"
               for k in n[few]]  # fmt: skip
    tested = qc == "ok"
    out["g_arrest"] = np.where(tested, out["g_index"] - out["control_g_index"], np.nan)
    mark = np.where(tested, 0, -1)
    out["pvalue"] = _fisher(
        np.where(tested, out["n_S"], -1), non_s + mark, out["control_n_S"] + mark, c_non_s + mark
    )
    out["qvalue"] = np.nan
    for lvl in ("plate", "pooled"):
        m = (out["level"] == lvl).to_numpy()
        out.loc[m, "qvalue"] = bh_adjust(out.loc[m, "pvalue"].to_numpy())
    out["qc"] = qc
    cols = ["level", *KEYS, "n_cells", *n_cols, *[f"frac_{p}" for p in PHASES], "n_control_cells",
            *cc, *[f"control_frac_{p}" for p in PHASES], "g_index", "control_g_index",
            "g_arrest", "pvalue", "qvalue", "qc"]  # fmt: skip
    out = out[cols].sort_values(SORT, kind="stable", ignore_index=True)
    return out.astype({k: np.int64 for k in ["n_cells", *n_cols, "n_control_cells", *cc]})


def empty_cells() -> pd.DataFrame:
    """Cells with the columns :func:`phase_counts` reads, and no rows."""
    return pd.DataFrame({k: pd.Series(dtype=t) for k, t in (
        ("cell_line_id", object), ("drug", object), ("dose_uM", np.float64), ("plate", object),
        ("is_control", bool), ("phase", object))})  # fmt: skip


def empty_arrest_table() -> pd.DataFrame:
    """The columns of :func:`arrest_table` with no rows (a skipped cell-cycle stage)."""
    return arrest_table(phase_counts(empty_cells()))


# --------------------------------------------------------------------------- workflow steps
def draw_from_stats(
    stats: pd.DataFrame, lists: pd.DataFrame, *, n_bins: int = 25, seed: int = 0
) -> dict[str, Any]:
    """The control-gene draw from the merged gene statistics, as a JSON-able dict.

    ``stats``: ``token_id``, ``gene_symbol``, ``mean_log`` (one row per gene of the data). The
    dict holds token ids (``s``, ``s_ctrl``, ``g2m``, ``g2m_ctrl``), the symbols scored, the
    genes of the lists absent from the data (``missing``), or ``skipped`` with the reason when
    a list has no gene of the data or none of its genes is detected in any cell.
    """
    for col in ("token_id", "gene_symbol", "mean_log"):
        if col not in stats.columns:
            raise ValueError(f"gene statistics lack the column {col!r}")
    genes = resolve_genes(lists, stats["gene_symbol"].tolist())
    out: dict[str, Any] = {
        "n_bins": int(n_bins), "seed": int(seed), "n_genes": int(len(stats)),
        "s_symbols": genes.s_symbols, "g2m_symbols": genes.g2m_symbols, "missing": genes.missing,
    }  # fmt: skip
    means = stats["mean_log"].to_numpy(np.float64)
    for name, pos in (("S", genes.s), ("G2M", genes.g2m)):
        if pos.size == 0:
            out["skipped"] = (
                f"none of the {int((lists['phase'] == name).sum())} {name}-phase genes of "
                "Tirosh et al. 2016 is in the data's gene table (another species or gene naming?)"
            )
            return out
        if not np.any(means[pos] > 0):
            out["skipped"] = f"none of the {pos.size} {name}-phase genes is detected in any cell"
            return out
    try:
        scorer = make_scorer(means, genes, n_bins=n_bins, seed=seed)
    except ValueError as e:
        out["skipped"] = f"no control-gene draw: {e}"
        return out
    tokens = stats["token_id"].to_numpy(np.int64)
    out.update({k: [int(t) for t in tokens[v]] for k, v in scorer.to_dict().items()})
    return out


def scorer_from_draw(draw: dict[str, Any]) -> Scorer | None:
    """The :class:`Scorer` (token ids) of a :func:`draw_from_stats` dict; None when skipped."""
    if "skipped" in draw:
        return None
    return Scorer.from_dict(draw)


SCORE_SCHEMA = {
    "cell_id": "string", "sample": "string", "plate": "string", "drug": "string",
    "dose_uM": "float64", "cell_line_id": "string", "is_control": "bool_",
    "S_score": "float64", "G2M_score": "float64", "phase": "string",
}  # fmt: skip


def summary(table: pd.DataFrame, n_phase: dict[str, int], draw: dict[str, Any], alpha: float):
    """The metrics JSON of the cell-cycle stage (or ``{"skipped": reason, ...}``)."""
    if "skipped" in draw:
        return {"skipped": draw["skipped"], "missing_genes": draw.get("missing", {})}
    n = int(sum(n_phase.values()))
    pooled = table[table["level"] == "pooled"]
    tested = pooled[pooled["qc"] == "ok"]
    out: dict[str, Any] = {
        "n_cells": n,
        "phase_fraction": {p: (n_phase.get(p, 0) / n if n else None) for p in PHASES},
        "phases_from": draw.get("source", "scores"),
        **{f"n_{k}_genes": len(draw[k]) for k in ("s", "s_ctrl", "g2m", "g2m_ctrl") if k in draw},
        "missing_genes": draw.get("missing", {}), "alpha": alpha,
        "n_conditions": int(len(pooled)), "n_tested": int(len(tested)),
        "n_arrest": int(((tested["qvalue"] < alpha) & (tested["g_arrest"] > 0)).sum()),
        "n_s_gain": int(((tested["qvalue"] < alpha) & (tested["g_arrest"] < 0)).sum()),
    }  # fmt: skip
    if n == 0:
        out["phase_fraction"] = None
        out["null_reasons"] = {"phase_fraction": "no cell was scored"}
    return out


def plot_arrest(table: pd.DataFrame, path: str, alpha: float, reason: str | None = None) -> None:
    """G-arrest index of each pooled condition against -log10 BH-adjusted p (one PNG)."""
    from tahoeflow.plots.report import plt, skipped_figure
    from tahoeflow.plots.save import save_figure

    title = "Cell-cycle arrest vs DMSO (pooled over plates)"
    t = table[(table["level"] == "pooled") & (table["qc"] == "ok")]
    if reason or t.empty:
        skipped_figure(path, title, reason or "no condition was tested (see cell_cycle.parquet qc)")
        return
    q = t["qvalue"].clip(lower=1e-300)
    y = -np.log10(q.to_numpy())
    sig = (t["qvalue"] < alpha).to_numpy()
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    ax.scatter(t["g_arrest"][~sig], y[~sig], s=10, c="#999999", label="not significant")
    ax.scatter(t["g_arrest"][sig], y[sig], s=14, c="#C44E52", label=f"BH < {alpha:g}")
    for i in [k for k in np.argsort(-y)[:6] if sig[k]]:  # the strongest calls only
        r = t.iloc[i]
        ax.annotate(f"{str(r['drug']).strip()} {r['dose_uM']:g} uM\n{r['cell_line_id']}",
                    (r["g_arrest"], y[i]), fontsize=6)  # fmt: skip
    ax.axvline(0, color="k", lw=0.6)
    ax.set_xlabel("G-arrest index, treated - DMSO (log2 non-S fraction; > 0: fewer cells in S)")
    ax.set_ylabel("-log10 BH-adjusted p (Fisher)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    save_figure(fig, path)


def obs_phase_counts(
    path: str | Path, *, control_drug: str, pass_filter: str | None = "full", log: Any = None
) -> tuple[pd.DataFrame | None, str | None]:
    """Phase counts (:func:`phase_counts` columns) from the phases Tahoe's obs_metadata carries.

    Streams the table (``obs.aggregate_obs`` with ``phase`` as an extra key). Returns
    ``(counts, None)``, or ``(None, reason)`` when the table has no ``phase`` column.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tahoeflow.errors import InputError
    from tahoeflow.phenotypes.obs import OBS_KEYS, aggregate_obs, doses_from_drugconc

    try:
        names = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(path, f"not a readable Parquet file: {e}") from None
    if "phase" not in names:
        has = [c for c in ("S_score", "G2M_score") if c in names]
        return None, (
            f"{path} has no 'phase' column"
            + (f" (it has {', '.join(has)}; phases are read, not recomputed)" if has else "")
        )
    agg = aggregate_obs(path, pass_filter=pass_filter, keys=(*OBS_KEYS, "phase"), log=log)
    bad = sorted(set(agg["phase"]) - set(PHASES))
    if bad:
        raise InputError(path, f"phase values {bad} are not G1, S or G2M")
    agg["dose_uM"] = doses_from_drugconc(agg["drugname_drugconc"], path)
    agg = agg.rename(columns={"cell_line": "cell_line_id"})
    agg["is_control"] = agg["drug"].astype(str).str.strip() == control_drug.strip()
    n = agg.pivot_table(index=[*KEYS, "is_control"], columns="phase", values="n_cells",
                        aggfunc="sum", fill_value=0)  # fmt: skip
    n = n.reindex(columns=list(PHASES), fill_value=0)
    n.columns = [f"n_{p}" for p in PHASES]
    return n.reset_index().astype({f"n_{p}": np.int64 for p in PHASES}), None
