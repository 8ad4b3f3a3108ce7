"""A simulated dataset with Tahoe-100M's exact schema and hub layout, and a known ground truth.

Everything is deterministic from ``DemoParams.seed``. The *design* (genes, cell lines, drugs,
plates, wells, expression programs, true effects) is cheap and recomputed by every job; each
expression file is then generated independently from its own random stream, so files can be
written by parallel jobs, one at a time, and the dataset can grow to millions of cells without
ever being held in memory.

Generative model (natural-log scale; written to ``truth/params.json``):

* gene g has a baseline log-weight ``b_g`` (about 18k expressed genes, the rest near-silent),
  13 ``MT-`` genes carry a few percent of the reads;
* cell line l adds an expression program ``c_lg`` on 800 genes and a library-size offset;
* plate p adds a small batch shift ``a_pg`` on every expressed gene and a library-size factor;
* well (sample s, cell line l) adds replicate noise ``w_slg ~ N(0, well_sd^2)``;
* an *active* drug d at dose k in a *sensitive* line l adds ``e_dklg = beta_dg * dose_scale_k *
  sens_dl`` on its target genes (``genes_per_effect`` of them); most drugs are inactive;
* cell i of well s, line l: library size ``L_i ~ LogNormal(mu_l + plate + drug, libsize_sd)``
  and counts ``~ Multinomial(L_i, softmax(b + c_l + a_p + w_sl + e_dkl))``.

The truth table holds every non-zero ``e_dklg`` and the exact log2 fold change of the
gene's expected share against DMSO of the same line on the same plate.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import io as tio
from .schema import CLS_TOKEN, CLS_VALUE, CONTROL_DRUG, EXPRESSION_SCHEMA, FIRST_TOKEN, N_GENES

DOSES_UM = (0.05, 0.5, 5.0)
DOSE_SCALE = (0.3, 0.65, 1.0)
MT_SYMBOLS = [
    "MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3",
    "MT-ND3", "MT-ND4L", "MT-ND4", "MT-ND5", "MT-ND6", "MT-CYB",
]  # fmt: skip
GBM_LINES = [  # seed 000's seven glioblastoma lines come first
    ("CVCL_0131", "A-172"), ("CVCL_1239", "H4"), ("CVCL_0021", "U-251MG"),
    ("CVCL_0022", "U-87MG"), ("CVCL_S471", "U-343MG"), ("CVCL_5735", "D-54MG"),
    ("CVCL_RU29", "BT048"),
]  # fmt: skip
SEED_DRUGS = [
    "(R)-Verapamil (hydrochloride)", "Aliskiren", "Palmatine (chloride)", "Quinestrol",
    "Isocorydine", "Megestrol", "Pasireotide (acetate)", "Terfenadine", "Temsirolimus",
]  # fmt: skip
MOAS = [
    ("unclear", "unclear"),
    ("DNA synthesis/repair inhibitor", "DNA damage"),
    ("mTOR inhibitor", "kinase inhibitor"),
    ("HDAC inhibitor", "epigenetic"),
    ("Tubulin polymerisation inhibitor", "cytoskeleton"),
    ("Calcium channel blocker", "ion channel"),
    ("EGFR inhibitor", "kinase inhibitor"),
    ("Proteasome inhibitor", "protein degradation"),
]
MOA_WEIGHTS = np.array([0.55, 0.12, 0.08, 0.07, 0.06, 0.05, 0.04, 0.03])
DRIVERS = ["TP53", "PTEN", "EGFR", "CDKN2A", "NF1", "PIK3CA", "RB1", "KRAS", "BRAF", "IDH1"]


@dataclass(frozen=True)
class DemoParams:
    """Size and shape of the demo dataset. Defaults give a whole-DAG run of a few minutes."""

    seed: int = 0
    n_files: int = 4
    cells_per_file: int = 5000
    row_group_size: int = 1000
    n_cell_lines: int = 8
    n_drugs: int = 24
    n_plates: int = 2
    control_wells_per_plate: int = 4
    frac_active_drugs: float = 0.35
    genes_per_effect: int = 150
    effect_sd: float = 1.0
    frac_resistant: float = 0.25
    well_sd: float = 0.05
    libsize_log_mean: float = 7.6
    libsize_sd: float = 0.4
    n_expressed_genes: int = 18_000

    def __post_init__(self) -> None:
        checks = {
            "n_files": self.n_files >= 1,
            "cells_per_file": self.cells_per_file >= 1,
            "row_group_size": self.row_group_size >= 1,
            "n_cell_lines": 1 <= self.n_cell_lines <= 999,
            "n_drugs": self.n_drugs >= 1,
            "n_plates": self.n_plates >= 1,
            "control_wells_per_plate": self.control_wells_per_plate >= 1,
            "frac_active_drugs": 0.0 <= self.frac_active_drugs <= 1.0,
            "frac_resistant": 0.0 <= self.frac_resistant <= 1.0,
            "genes_per_effect": 1 <= self.genes_per_effect <= self.n_expressed_genes,
            "n_expressed_genes": 100 <= self.n_expressed_genes <= N_GENES,
        }
        for key, ok in checks.items():
            if not ok:
                from .errors import ConfigError

                raise ConfigError(f"demo.{key}", f"value {getattr(self, key)!r} is out of range")

    @classmethod
    def from_dict(cls, d: dict) -> DemoParams:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class Design:
    """The fixed part of the demo (everything except the per-cell draws)."""

    def __init__(self, p: DemoParams) -> None:
        self.p = p
        rng = np.random.default_rng([p.seed, 0])
        G = N_GENES
        # genes: MT genes spread through the vocabulary, the expressed set chosen at random
        self.mt_idx = np.sort(rng.choice(G, size=len(MT_SYMBOLS), replace=False))
        others = np.setdiff1d(np.arange(G), self.mt_idx)
        self.expressed = np.sort(rng.choice(others, size=p.n_expressed_genes, replace=False))
        base = np.full(G, -9.0) + rng.normal(0, 0.5, G)  # near-silent background
        base[self.expressed] = rng.normal(0.0, 2.0, self.expressed.size)
        base[self.mt_idx] = rng.normal(4.0, 0.4, self.mt_idx.size)
        self.base = base
        # cell lines: Zipf-like abundances (seed 000 saw one line 4x the next)
        L = p.n_cell_lines
        self.line_ids = [
            GBM_LINES[i][0] if i < len(GBM_LINES) else f"CVCL_X{i:03d}" for i in range(L)
        ]
        self.line_names = [
            GBM_LINES[i][1] if i < len(GBM_LINES) else f"LINE-{i:03d}" for i in range(L)
        ]
        w = 1.0 / np.arange(1, L + 1) ** 1.1
        self.line_weights = w / w.sum()
        self.line_prog_genes = np.stack(
            [rng.choice(self.expressed, size=800, replace=False) for _ in range(L)]
        )
        self.line_prog = rng.normal(0.0, 0.9, (L, 800))
        self.line_lib = rng.normal(0.0, 0.3, L)
        self.line_mt = rng.normal(0.0, 0.3, L)
        # plates
        P = p.n_plates
        self.plate_names = [f"plate{i + 1}" for i in range(P)]
        self.plate_shift = rng.normal(0.0, 0.08, (P, self.expressed.size))
        self.plate_lib = rng.normal(0.0, 0.1, P)
        # drugs
        D = p.n_drugs
        self.drug_names = [
            SEED_DRUGS[i] if i < len(SEED_DRUGS) else f"Compound-{i:03d}" for i in range(D)
        ]
        moa_idx = rng.choice(len(MOAS), size=D, p=MOA_WEIGHTS)
        self.drug_moa_fine = [MOAS[k][0] for k in moa_idx]
        self.drug_moa_broad = [MOAS[k][1] for k in moa_idx]
        self.drug_plate = np.arange(D) % P
        n_active = int(round(p.frac_active_drugs * D))
        self.active = np.zeros(D, dtype=bool)
        self.active[rng.choice(D, size=n_active, replace=False)] = True
        # targets prefer well-expressed genes so that effects are measurable
        wexp = np.exp(base[self.expressed] * 0.5)
        wexp /= wexp.sum()
        self.effect_genes = np.stack(
            [
                np.sort(rng.choice(self.expressed, size=p.genes_per_effect, replace=False, p=wexp))
                for _ in range(D)
            ]
        )
        self.effect_beta = rng.normal(0.0, p.effect_sd, (D, p.genes_per_effect))
        sens = rng.uniform(0.5, 1.5, (D, L))
        sens[rng.random((D, L)) < p.frac_resistant] = 0.0
        sens[~self.active] = 0.0
        self.sens = sens
        self.drug_lib = np.where(self.active, rng.normal(0.0, 0.5, D), 0.0)
        # wells (samples): each plate has its drugs at 3 doses plus control wells
        rows = []
        for pi in range(P):
            for d in np.flatnonzero(self.drug_plate == pi):
                for k in range(len(DOSES_UM)):
                    rows.append((pi, int(d), k))
            for _ in range(p.control_wells_per_plate):
                rows.append((pi, -1, -1))
        self.well_plate = np.array([r[0] for r in rows])
        self.well_drug = np.array([r[1] for r in rows])
        self.well_dose = np.array([r[2] for r in rows])
        self.sample_names = [f"smp_{1000 + i}" for i in range(len(rows))]
        self.well_weight = rng.uniform(0.6, 1.4, len(rows))  # uneven well sizes

    # --- per-group expression -------------------------------------------------
    def log_weights(self, well: int, line: int) -> np.ndarray:
        """Unnormalised log expression weights of (well, cell line), all genes."""
        p = self.p
        lw = self.base.copy()
        lw[self.line_prog_genes[line]] += self.line_prog[line]
        lw[self.mt_idx] += self.line_mt[line]
        plate = self.well_plate[well]
        noise = np.random.default_rng([p.seed, 3, well, line]).normal(
            0, p.well_sd, self.expressed.size
        )
        lw[self.expressed] += self.plate_shift[plate] + noise
        d = self.well_drug[well]
        if d >= 0 and self.sens[d, line] > 0:
            lw[self.effect_genes[d]] += (
                self.effect_beta[d] * DOSE_SCALE[self.well_dose[well]] * self.sens[d, line]
            )
        return lw

    def log_libsize_mean(self, well: int, line: int) -> float:
        d = self.well_drug[well]
        # a drug's effect on library size (e.g. cytotoxic stress) is the same in every line, so
        # the per-cell summaries carry a condition signal that a drug x dose model can learn
        drug = 0.0 if d < 0 else self.drug_lib[d] * DOSE_SCALE[self.well_dose[well]]
        return (
            self.p.libsize_log_mean
            + self.line_lib[line]
            + self.plate_lib[self.well_plate[well]]
            + drug
        )

    def file_plate(self, file_index: int) -> int:
        """Files are contiguous per plate, as on the hub (each file holds one plate)."""
        return file_index * self.p.n_plates // self.p.n_files

    # --- tables ---------------------------------------------------------------
    @cached_property
    def gene_metadata(self) -> pa.Table:
        G = N_GENES
        symbols = np.array([f"GENE{i:05d}" for i in range(G)], dtype=object)
        symbols[self.mt_idx] = MT_SYMBOLS
        return pa.table(
            {
                "gene_symbol": pa.array(symbols, pa.string()),
                "ensembl_id": pa.array([f"ENSG{900000 + i:011d}" for i in range(G)], pa.string()),
                "token_id": pa.array(np.arange(FIRST_TOKEN, FIRST_TOKEN + G), pa.int64()),
            }
        )

    def drug_label(self, well: int) -> tuple[str, float]:
        d = self.well_drug[well]
        if d < 0:
            return CONTROL_DRUG, 0.0
        return self.drug_names[d], DOSES_UM[self.well_dose[well]]

    @cached_property
    def sample_metadata(self) -> pa.Table:
        drugs, concs = zip(
            *(self.drug_label(w) for w in range(len(self.sample_names))), strict=True
        )
        return pa.table(
            {
                "sample": self.sample_names,
                "plate": [self.plate_names[p] for p in self.well_plate],
                "mean_gene_count": np.full(len(drugs), 1250.0),
                "mean_tscp_count": np.full(len(drugs), float(np.exp(self.p.libsize_log_mean))),
                "mean_mread_count": np.full(
                    len(drugs), float(np.exp(self.p.libsize_log_mean)) * 1.6
                ),
                "mean_pcnt_mito": np.full(len(drugs), 3.0),
                "drug": list(drugs),
                "drugname_drugconc": [
                    f"[({d!r}, {c}, 'uM')]" for d, c in zip(drugs, concs, strict=True)
                ],
            }
        )

    @cached_property
    def drug_metadata(self) -> pa.Table:
        # DMSO_TF is not in drug_metadata, as on the hub: joins must be left joins
        D = self.p.n_drugs
        targets = [
            ",".join(DRIVERS[(d + j) % len(DRIVERS)] for j in range(1 + d % 3)) for d in range(D)
        ]
        return pa.table(
            {
                "drug": self.drug_names,
                "targets": targets,
                "moa-broad": self.drug_moa_broad,
                "moa-fine": self.drug_moa_fine,
                "human-approved": ["yes" if d % 2 else "no" for d in range(D)],
                "clinical-trials": ["yes" if d % 3 else "no" for d in range(D)],
                "gpt-notes-approval": ["" for _ in range(D)],
                "canonical_smiles": [smiles(d) for d in range(D)],
                "pubchem_cid": [f"{1000.0 + 7 * d:.1f}" for d in range(D)],
            }
        )

    @cached_property
    def cell_line_metadata(self) -> pa.Table:
        rows = []
        for i, (cid, name) in enumerate(zip(self.line_ids, self.line_names, strict=True)):
            for j in range(1 + i % 3):  # one row per driver mutation
                rows.append(
                    {
                        "cell_name": name,
                        "Cell_ID_DepMap": f"ACH-{i:06d}",
                        "Cell_ID_Cellosaur": cid,
                        "Organ": "Brain" if i < len(GBM_LINES) else "Other",
                        "Driver_Gene_Symbol": DRIVERS[(i + j) % len(DRIVERS)],
                        "Driver_VarZyg": "Hom" if j % 2 else "Het",
                        "Driver_VarType": "Missense",
                        "Driver_ProtEffect_or_CdnaEffect": f"p.R{100 + i + j}H",
                        "Driver_Mech_InferDM": "LoF" if j % 2 else "GoF",
                        "Driver_GeneType_DM": "Suppressor" if j % 2 else "Oncogene",
                    }
                )
        return pa.Table.from_pylist(rows)

    def truth_effects(self) -> pd.DataFrame:
        """Every non-zero designed effect, with the exact log2 change of the gene's expected share.

        The share change includes the renormalisation of the softmax, so it is the quantity
        a perfect differential-expression method (log CPM against DMSO of the same line and
        plate) estimates, up to the well noise.
        """
        frames = []
        for d in np.flatnonzero(self.active):
            for line in range(self.p.n_cell_lines):
                if self.sens[d, line] == 0:
                    continue
                ctrl = self.base.copy()
                ctrl[self.line_prog_genes[line]] += self.line_prog[line]
                ctrl[self.mt_idx] += self.line_mt[line]
                ctrl[self.expressed] += self.plate_shift[self.drug_plate[d]]
                for k, dose in enumerate(DOSES_UM):
                    e = self.effect_beta[d] * DOSE_SCALE[k] * self.sens[d, line]
                    g = self.effect_genes[d]
                    shifted = ctrl.copy()
                    shifted[g] += e
                    log_norm_shift = _logsumexp(shifted) - _logsumexp(ctrl)
                    frames.append(
                        pd.DataFrame(
                            {
                                "drug": self.drug_names[d],
                                "dose_uM": dose,
                                "cell_line_id": self.line_ids[line],
                                "plate": self.plate_names[self.drug_plate[d]],
                                "token_id": (g + FIRST_TOKEN).astype(np.int64),
                                "effect_ln": e,
                                "log2fc_share": (e - log_norm_shift) / np.log(2.0),
                            }
                        )
                    )
        cols = ["drug", "dose_uM", "cell_line_id", "plate", "token_id", "effect_ln", "log2fc_share"]
        if not frames:
            return pd.DataFrame(
                {
                    c: pd.Series(dtype=t)
                    for c, t in zip(
                        cols, ["str", "f8", "str", "str", "i8", "f8", "f8"], strict=True
                    )
                }
            )
        return pd.concat(frames, ignore_index=True)[cols]

    def truth_params(self) -> dict:
        return {
            "params": dataclasses.asdict(self.p),
            "doses_uM": list(DOSES_UM),
            "dose_scale": list(DOSE_SCALE),
            "active_drugs": [self.drug_names[d] for d in np.flatnonzero(self.active)],
            "noise_model": (
                "counts ~ Multinomial(L, softmax(base + line program + plate shift + well noise + "
                "drug effect)); L ~ LogNormal(libsize_log_mean + line + plate + drug offsets, libsize_sd)"
            ),
            "well_sd": self.p.well_sd,
            "libsize_sd": self.p.libsize_sd,
        }


def smiles(d: int) -> str:
    return "C" * (1 + d % 5) + "(=O)N" + "c1ccccc1" * (d % 2)


def _logsumexp(x: np.ndarray) -> float:
    m = float(x.max())
    return m + float(np.log(np.exp(x - m).sum()))


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


def generate_file(design: Design, file_index: int) -> pa.Table:
    """The expression table of one demo file (``cells_per_file`` rows, hub schema)."""
    p = design.p
    rng = np.random.default_rng([p.seed, 1, file_index])
    n = p.cells_per_file
    plate = design.file_plate(file_index)
    wells = np.flatnonzero(design.well_plate == plate)
    ww = design.well_weight[wells] / design.well_weight[wells].sum()
    cell_well = wells[rng.choice(wells.size, size=n, p=ww)]
    cell_line = rng.choice(p.n_cell_lines, size=n, p=design.line_weights)
    group = cell_well * p.n_cell_lines + cell_line
    order = np.argsort(group, kind="stable")
    nnz = np.zeros(n, dtype=np.int64)
    gene_parts, count_parts = [], []
    bounds = np.flatnonzero(np.diff(group[order])) + 1
    for idx in np.split(order, bounds):
        well, line = int(cell_well[idx[0]]), int(cell_line[idx[0]])
        mu = design.log_libsize_mean(well, line)
        lib = np.maximum(np.rint(rng.lognormal(mu, p.libsize_sd, idx.size)), 50).astype(np.int64)
        k, g, c = _sample_counts(rng, design.log_weights(well, line), lib)
        nnz[idx] = k
        gene_parts.append(g)
        count_parts.append(c)
    # values are grouped by ``order``; reorder them to the cells' row order
    genes_sorted = np.concatenate(gene_parts)
    counts_sorted = np.concatenate(count_parts)
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

    gidx = file_index * p.cells_per_file + np.arange(n)
    barcodes = [
        f"{(g // 1_000_000) % 100:02d}_{(g // 1000) % 1000:03d}_{g % 1000:03d}-lib_{1000 + plate + 1}"
        for g in gidx
    ]
    drug_of_well = {w: design.drug_label(w)[0] for w in wells}
    dmask = design.well_drug[cell_well]
    drugs = [drug_of_well[w] for w in cell_well]
    moa = np.where(
        dmask >= 0, np.array(design.drug_moa_fine + ["unclear"], dtype=object)[dmask], "unclear"
    )
    smi = np.where(
        dmask >= 0, np.array([smiles(d) for d in range(p.n_drugs)] + [""], dtype=object)[dmask], ""
    )
    cid = np.where(
        dmask >= 0,
        np.array([f"{1000.0 + 7 * d:.1f}" for d in range(p.n_drugs)] + [""], dtype=object)[dmask],
        "",
    )
    offsets32 = pa.array(offsets.astype(np.int32))
    return pa.table(
        [
            pa.ListArray.from_arrays(offsets32, pa.array(token, pa.int64())),
            pa.ListArray.from_arrays(offsets32, pa.array(expr, pa.float32())),
            pa.array(drugs, pa.string()),
            pa.array([design.sample_names[w] for w in cell_well], pa.string()),
            pa.array(barcodes, pa.string()),
            pa.array([design.line_ids[i] for i in cell_line], pa.string()),
            pa.array(moa, pa.string()),
            pa.array(smi, pa.string()),
            pa.array(cid, pa.string()),
            pa.array(np.full(n, design.plate_names[plate], dtype=object), pa.string()),
        ],
        schema=EXPRESSION_SCHEMA,
    )


def write_file(design: Design, file_index: int, path: str | Path) -> None:
    """Write demo file ``file_index`` atomically, in row groups of ``row_group_size`` rows."""
    table = generate_file(design, file_index)
    with tio.atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=design.p.row_group_size, compression="zstd")


def write_metadata(design: Design, out: dict[str, str | Path]) -> None:
    """Write the four metadata tables and the ground truth.

    ``out`` keys: gene, sample, drug, cell_line, effects, params.
    """
    tio.write_parquet(design.gene_metadata, out["gene"])
    tio.write_parquet(design.sample_metadata, out["sample"])
    tio.write_parquet(design.drug_metadata, out["drug"])
    tio.write_parquet(design.cell_line_metadata, out["cell_line"])
    tio.write_parquet(
        pa.Table.from_pandas(design.truth_effects(), preserve_index=False), out["effects"]
    )
    tio.write_json(design.truth_params(), out["params"])
