"""A simulated dataset on Tahoe-100M's real design, with the hub's schema and a known truth.

The design is the real one (``resources/tahoe_metadata/``, Tahoe-100M's own metadata tables at
revision 2dc57900b7981cfcf5e211527169a0b006546a95, CC0-1.0): the 62,710 real genes (token ids
3..62712, 37 ``MT-`` genes), the real samples (wells), plates, drugs (names exactly as the data
spells them, ``'Erdafitinib '`` with its trailing space and ``Trametinib (DMSO_TF solvate)``
included), doses (``drugname_drugconc``), MoA, SMILES and PubChem ids, and the real cell lines
(Cellosaurus ids). The metadata tables the demo writes are byte copies of the real ones. Only
the expression values are simulated.

**The slice.** ``n_plates`` plates in the order of :data:`PLATE_ORDER` (plate 13, which mixes
the three doses, then plate 7, which holds the solvate drug, then plate 1, which holds
'Erdafitinib '); the ``n_cell_lines`` first lines of :func:`line_order` (seed 000's A-172 and
H4, the two of its seven glioblastoma lines that Tahoe has, then the others by abundance);
the wells of the ``n_drugs`` first drugs of :func:`drug_order` on those plates (the real traps
first, then the drugs with the most wells: several doses or several plates) and
``control_wells_per_plate`` of the 2 real DMSO_TF wells of each plate.

**Cells.** ``n_files * cells_per_file`` cells. Files hold one plate each, sorted by plate number,
and each plate gets files in proportion to its cells. A plate's cells are apportioned exactly
(largest remainder) to its (well, cell line) groups in proportion to the real cell counts of
``obs_cell_grid`` (cells per drug, line, plate and dose; a count shared by two wells of the same
drug and dose is split between them) times the simulated survival below, then shuffled (a
seeded permutation per plate), so lines, drugs and wells are interleaved within each file as on
the hub. ``BARCODE_SUB_LIB_ID`` has the real form ``01_001_052-lib_1105``: the first barcode is
the well's position on its plate, the sub-library encodes the plate.

Generative model (natural-log scale; written to ``truth/params.json``):

* gene g has a baseline log-weight ``b_g`` (``n_expressed_genes`` expressed genes, the rest
  near-silent); the 13 protein-coding ``MT-`` genes and the 2 mitochondrial rRNAs carry a few
  percent of the reads, the 22 ``MT-T*`` tRNAs little;
* cell line l adds an expression program ``c_lg`` on 800 genes and a library-size offset;
* plate p adds a small batch shift ``a_pg`` on every expressed gene and a library-size factor;
* well (sample s, cell line l) adds replicate noise ``w_slg ~ N(0, well_sd^2)``;
* an *active* drug d at dose k in a *sensitive* line l adds ``e_dklg = beta_dg * dose_scale_k *
  sens_dl`` on its target genes (``genes_per_effect`` of them); most drugs are inactive;
* a *cytotoxic* drug (half of the active ones) also kills cells of its sensitive lines: the
  line's share of the well is multiplied by ``survival_dkl = exp(-tox_d * dose_scale_k *
  sens_dl)`` (``truth/cells.parquet`` lists every (well, line) with its survival and cells);
* cell i of well s, line l: library size ``L_i ~ LogNormal(mu_l + plate + drug, libsize_sd)``,
  where an active drug shifts the log library size by 0.3-0.8 at the top dose in every line
  (down for a cytotoxic one);
  and counts ``~ Multinomial(L_i, softmax(b + c_l + a_p + w_sl + e_dkl))``.

The truth table holds every non-zero ``e_dklg`` and the exact log2 fold change of the gene's
expected share against DMSO of the same line on the same plate.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from tahoeflow.errors import ArgumentError, InputError
from tahoeflow.sources.demo_tables import (
    PLATE_ORDER,
    REAL_METADATA_DIR,
    REAL_REVISION,
    apportion,
    drug_order,
    line_order,
    real_tables,
    sample_table,
)
from tahoeflow.sources.tahoe import (
    CONTROL_DRUG,
    FIRST_TOKEN,
    N_GENES,
)

DOSES_UM = (0.05, 0.5, 5.0)
DOSE_SCALE = (0.3, 0.65, 1.0)

CYTOTOXIC_FRACTION = 0.5
"""Share of the active drugs that also kill cells of their sensitive lines."""
BARCODES_PER_SUBLIB = 96 * 96
SUBLIBS_PER_PLATE = 10


@dataclass(frozen=True)
class DemoParams:
    """Size and shape of the demo (the demo keys of config/schema.yaml, with their defaults)."""

    seed: int = 0
    n_files: int = 4
    cells_per_file: int = 5000
    row_group_size: int = 1000
    n_cell_lines: int = 8
    n_drugs: int | None = 20
    n_plates: int = 3
    control_wells_per_plate: int = 2
    frac_active_drugs: float = 0.35
    genes_per_effect: int = 150
    effect_sd: float = 1.0
    frac_resistant: float = 0.25
    well_sd: float = 0.05
    libsize_log_mean: float = 7.6
    libsize_sd: float = 0.4
    n_expressed_genes: int = 18_000
    silent_genes: bool = True  # False: only expressed and MT genes are drawn (atlas rehearsal)

    def __post_init__(self) -> None:
        checks = {
            "n_files": self.n_files >= 1,
            "cells_per_file": self.cells_per_file >= 1,
            "row_group_size": self.row_group_size >= 1,
            "n_cell_lines": 1 <= self.n_cell_lines <= 50,
            "n_drugs": self.n_drugs is None or self.n_drugs >= 1,
            "n_plates": 1 <= self.n_plates <= len(PLATE_ORDER),
            "control_wells_per_plate": self.control_wells_per_plate >= 1,
            "frac_active_drugs": 0.0 <= self.frac_active_drugs <= 1.0,
            "frac_resistant": 0.0 <= self.frac_resistant <= 1.0,
            "genes_per_effect": 1 <= self.genes_per_effect <= self.n_expressed_genes,
            "n_expressed_genes": 100 <= self.n_expressed_genes <= N_GENES - 37,
        }
        for key, ok in checks.items():
            if not ok:
                raise ArgumentError(key, f"value {getattr(self, key)!r} is out of range")

    @classmethod
    def from_dict(cls, d: dict) -> DemoParams:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class Design:
    """The fixed part of the demo (everything except the per-cell draws)."""

    def __init__(self, p: DemoParams, metadata_dir: str | Path | None = None) -> None:
        self.p = p
        real = real_tables(Path(metadata_dir) if metadata_dir else REAL_METADATA_DIR)
        self.real = real
        # the hub's metadata tables, exactly as committed (only the counts are simulated)
        self.gene_metadata: pa.Table = real.gene
        self.sample_metadata: pa.Table = real.sample
        self.drug_metadata: pa.Table = real.drug
        self.cell_line_metadata: pa.Table = real.cell_line
        rng = np.random.default_rng([p.seed, 0])
        G = N_GENES
        # genes: the real ones (column g is token g + 3); MT genes by their real symbols
        self.gene_symbols = np.asarray(real.gene.column("gene_symbol").to_pylist(), dtype=object)
        sym = self.gene_symbols.astype(str)
        self.mt_idx = np.flatnonzero(np.char.startswith(sym, "MT-"))
        others = np.setdiff1d(np.arange(G), self.mt_idx)
        self.expressed = np.sort(rng.choice(others, size=p.n_expressed_genes, replace=False))
        base = np.full(G, -9.0) + rng.normal(0, 0.5, G)  # near-silent background
        base[self.expressed] = rng.normal(0.0, 2.0, self.expressed.size)
        mt_sym = sym[self.mt_idx]
        trna = np.char.startswith(mt_sym, "MT-T")
        rrna = np.char.startswith(mt_sym, "MT-RNR")
        level = np.where(trna, -1.0, np.where(rrna, 3.0, 4.0))
        base[self.mt_idx] = level + rng.normal(0, 0.4, self.mt_idx.size)
        self.base = base
        # cell lines: the real ones, seed 000's two glioblastoma lines first
        L = p.n_cell_lines
        lines = line_order(real)[:L]
        self.line_ids = [c for c, _ in lines]
        self.line_names = [n for _, n in lines]
        self.line_prog_genes = np.stack(
            [rng.choice(self.expressed, size=800, replace=False) for _ in range(L)]
        )
        self.line_prog = rng.normal(0.0, 0.9, (L, 800))
        self.line_lib = rng.normal(0.0, 0.3, L)
        self.line_mt = rng.normal(0.0, 0.3, L)
        # plates: the first n_plates of PLATE_ORDER, named in file order (by plate number)
        chosen = list(PLATE_ORDER[: p.n_plates])
        self.plate_names = sorted(chosen, key=lambda s: int(s.removeprefix("plate")))
        self.plate_priority = [self.plate_names.index(x) for x in chosen]
        P = len(self.plate_names)
        self.plate_shift = rng.normal(0.0, 0.08, (P, self.expressed.size))
        self.plate_lib = rng.normal(0.0, 0.1, P)
        # wells: the real samples of those plates, for the first n_drugs drugs + DMSO_TF
        samples = sample_table(real)
        self.samples = samples
        on = samples[samples["plate"].isin(self.plate_names)]
        order = drug_order(on)
        if p.n_drugs is not None and p.n_drugs > len(order):
            raise ArgumentError(
                "n_drugs", f"{p.n_drugs} is more than the {len(order)} drugs of the plates "
                f"{', '.join(self.plate_names)} (n_plates: {p.n_plates})",
            )  # fmt: skip
        self.drug_names = order if p.n_drugs is None else order[: p.n_drugs]
        D = len(self.drug_names)
        ctrl = on[on["is_control"]].groupby("plate").head(min(p.control_wells_per_plate, 2))
        wells = pd.concat([on[on["drug"].isin(self.drug_names) & ~on["is_control"]], ctrl])
        wells = wells.assign(_p=wells["plate"].map(self.plate_names.index))
        wells = wells.sort_values(["_p", "row"]).reset_index(drop=True)
        self.wells = wells
        self.well_row = wells["row"].to_numpy()
        self.sample_names = wells["sample"].tolist()
        self.well_plate = wells["_p"].to_numpy()
        d_index = {d: i for i, d in enumerate(self.drug_names)}
        self.well_drug = np.array([-1 if c else d_index[d] for d, c in
                                   zip(wells["drug"], wells["is_control"], strict=True)])  # fmt: skip
        self.well_conc = wells["conc"].to_numpy(np.float64)
        self.well_dose = np.array([DOSES_UM.index(c) if c in DOSES_UM else -1
                                   for c in self.well_conc])  # fmt: skip
        if np.any((self.well_drug >= 0) & (self.well_dose < 0)):
            raise InputError(
                real.paths["sample"], "a treated well has a dose other than 0.05/0.5/5 uM"
            )
        # drug annotations from drug_metadata, joined on the name without surrounding spaces
        dm = real.drug.select(["drug", "moa-fine", "canonical_smiles", "pubchem_cid"]).to_pandas()
        dm = dm.assign(drug=dm["drug"].str.strip()).drop_duplicates("drug").set_index("drug")
        key = pd.Index([d.strip() for d in self.drug_names])
        self.drug_moa_fine = dm["moa-fine"].reindex(key).fillna("unclear").tolist()
        self.drug_smiles = dm["canonical_smiles"].reindex(key).fillna("").tolist()
        cid = dm["pubchem_cid"].reindex(key).to_numpy(np.float64)
        # the expression files store the PubChem id as a float-formatted string ("1923.0")
        self.drug_cid = ["" if np.isnan(c) else str(float(c)) for c in cid]
        # effects
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
        # library-size effect of each active drug: 0.3-0.8 on the log scale at the top dose,
        # either way (a condition signal in every per-cell summary)
        lib_effect = rng.choice([-1.0, 1.0], D) * rng.uniform(0.3, 0.8, D)
        self.drug_lib = np.where(self.active, lib_effect, 0.0)
        # cytotoxicity: half of the active drugs kill cells of their sensitive lines
        n_tox = int(round(CYTOTOXIC_FRACTION * n_active))
        self.tox = np.zeros(D)
        tox_drugs = rng.choice(np.flatnonzero(self.active), size=n_tox, replace=False)
        self.tox[tox_drugs] = rng.uniform(0.4, 1.0, n_tox)
        self.cytotoxic = self.tox > 0
        self.drug_lib[self.cytotoxic] = -np.abs(self.drug_lib[self.cytotoxic])  # dying cells
        # cells per (well, line): the real counts, then the survival
        self.real_cells = self._real_cells()
        dose_scale = np.where(self.well_dose >= 0, np.take(DOSE_SCALE, self.well_dose), 0.0)
        tox_w = np.where(self.well_drug >= 0, self.tox[self.well_drug], 0.0)
        sens_w = np.where(self.well_drug[:, None] >= 0, sens[self.well_drug], 0.0)
        self.survival = np.exp(-(tox_w * dose_scale)[:, None] * sens_w)
        self.cell_weight = self.real_cells * self.survival  # (wells, lines)
        # compatibility: marginal well sizes and line shares
        self.well_weight = self.cell_weight.sum(axis=1)
        lw = self.cell_weight.sum(axis=0)
        self.line_weights = lw / lw.sum() if lw.sum() > 0 else np.full(L, 1.0 / L)
        self.plate_files = self._plate_files()

    # --- cells ----------------------------------------------------------------
    def _real_cells(self) -> np.ndarray:
        """Cells of obs_cell_grid per (well, line); a count that two wells of the same drug,
        dose and plate share is split evenly between them."""
        s, w = self.samples, self.wells
        keys = ["drug", "plate", "conc"]
        n_share = s.groupby(keys).size().rename("n_share")
        grid = self.real.grid.merge(n_share.reset_index(), on=keys, how="inner")
        grid = grid[grid["cell_name"].isin(self.line_names)]
        idx = pd.MultiIndex.from_frame(grid[[*keys, "cell_name"]])
        per = pd.Series(
            grid["n_cells"].to_numpy(np.float64) / grid["n_share"].to_numpy(), index=idx
        )
        want = pd.MultiIndex.from_arrays(
            [np.repeat(w[k].to_numpy(), len(self.line_names)) for k in keys]
            + [np.tile(np.asarray(self.line_names, dtype=object), len(w))]
        )
        per = per[~per.index.duplicated()]
        vals = per.reindex(want).fillna(0.0).to_numpy()
        return vals.reshape(len(w), len(self.line_names))

    def _plate_files(self) -> list[list[int]]:
        """File indices of each plate: plates in file order, files in proportion to cells."""
        P, F = len(self.plate_names), self.p.n_files
        per_plate = np.array([self.cell_weight[self.well_plate == i].sum() for i in range(P)])
        n = np.zeros(P, dtype=np.int64)
        if F >= P:
            n = 1 + apportion(F - P, per_plate)
        else:
            n[np.asarray(self.plate_priority[:F])] = 1
        ends = np.cumsum(n)
        return [list(range(int(e - k), int(e))) for e, k in zip(ends, n, strict=True)]

    def file_plate(self, file_index: int) -> int:
        """Files are contiguous per plate, as on the hub (each file holds one plate)."""
        for i, files in enumerate(self.plate_files):
            if file_index in files:
                return i
        raise ValueError(f"file {file_index} is not in the demo (n_files {self.p.n_files})")

    @functools.lru_cache(maxsize=2)  # noqa: B019 (a Design lives as long as its job)
    def plate_counts(self, plate: int) -> np.ndarray:
        """Exact cells per (well of the plate, line): the plate's rows apportioned."""
        rows = len(self.plate_files[plate]) * self.p.cells_per_file
        wells = np.flatnonzero(self.well_plate == plate)
        return apportion(rows, self.cell_weight[wells].ravel()).reshape(wells.size, -1)

    @functools.lru_cache(maxsize=2)  # noqa: B019
    def plate_cells(self, plate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(well, line, rank of the cell within its well) of every row of the plate's files."""
        L = self.p.n_cell_lines
        wells = np.flatnonzero(self.well_plate == plate)
        counts = self.plate_counts(plate).ravel()
        groups = np.repeat(np.arange(counts.size), counts)
        plate_no = int(self.plate_names[plate].removeprefix("plate"))
        seq = groups[np.random.default_rng([self.p.seed, 2, plate_no]).permutation(groups.size)]
        cell_well = wells[seq // L]
        order = np.argsort(cell_well, kind="stable")
        first = np.searchsorted(cell_well[order], cell_well[order])
        rank = np.empty(seq.size, dtype=np.int64)
        rank[order] = np.arange(seq.size) - first
        return cell_well, seq % L, rank

    @functools.cached_property
    def sublibs_per_plate(self) -> int:
        """Sub-libraries per plate in the barcodes: SUBLIBS_PER_PLATE, or as many as the
        largest well needs (an atlas-sized demo), so that every barcode is unique."""
        largest = max((int(self.plate_counts(i).sum(axis=1).max(initial=0))
                       for i, f in enumerate(self.plate_files) if f), default=0)  # fmt: skip
        n = max(SUBLIBS_PER_PLATE, -(-largest // BARCODES_PER_SUBLIB))
        if 1000 + n * (int(self.plate_names[-1].removeprefix("plate")) + 1) > 10_000:
            raise ArgumentError("cells_per_file", "too many cells per well for unique barcodes")
        return n

    @functools.cached_property
    def drawable(self) -> np.ndarray | None:
        """Genes a cell's counts are drawn from: all (None), or with ``silent_genes`` off the
        expressed and MT genes only, so a draw looks up a CDF over those genes."""
        if self.p.silent_genes:
            return None
        return np.union1d(self.expressed, self.mt_idx)

    def file_cells(self, file_index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(well, line, rank within well) of the rows of one file."""
        plate = self.file_plate(file_index)
        j = self.plate_files[plate].index(file_index)
        n = self.p.cells_per_file
        return tuple(a[j * n : (j + 1) * n] for a in self.plate_cells(plate))

    # --- per-group expression -------------------------------------------------
    def log_weights(self, well: int, line: int) -> np.ndarray:
        """Unnormalised log expression weights of (well, cell line), all genes."""
        p = self.p
        lw = self.base.copy()
        lw[self.line_prog_genes[line]] += self.line_prog[line]
        lw[self.mt_idx] += self.line_mt[line]
        plate = self.well_plate[well]
        noise = np.random.default_rng([p.seed, 3, int(self.well_row[well]), line]).normal(
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

    def drug_label(self, well: int) -> tuple[str, float]:
        d = self.well_drug[well]
        if d < 0:
            return CONTROL_DRUG, 0.0
        return self.drug_names[d], DOSES_UM[self.well_dose[well]]

    def truth_effects(self) -> pd.DataFrame:
        """Every non-zero designed effect, with the exact log2 change of the gene's expected share.

        One row set per (active drug, dose, plate) of the design and sensitive line: a
        drug-dose on two plates has the same effect on both, measured against each plate's
        DMSO. The share change includes the renormalisation of the softmax, so it is the
        quantity a perfect differential-expression method (log CPM against DMSO of the same line
        and plate) estimates, up to the well noise. ``drug`` is spelled as in the data.
        """
        frames = []
        seen = set()
        for w in np.flatnonzero(self.well_drug >= 0):
            d, k, pi = int(self.well_drug[w]), int(self.well_dose[w]), int(self.well_plate[w])
            if not self.active[d] or (d, k, pi) in seen:
                continue
            seen.add((d, k, pi))
            for line in range(self.p.n_cell_lines):
                if self.sens[d, line] == 0:
                    continue
                ctrl = self.base.copy()
                ctrl[self.line_prog_genes[line]] += self.line_prog[line]
                ctrl[self.mt_idx] += self.line_mt[line]
                ctrl[self.expressed] += self.plate_shift[pi]
                e = self.effect_beta[d] * DOSE_SCALE[k] * self.sens[d, line]
                g = self.effect_genes[d]
                shifted = ctrl.copy()
                shifted[g] += e
                log_norm_shift = _logsumexp(shifted) - _logsumexp(ctrl)
                frames.append(
                    pd.DataFrame(
                        {
                            "drug": self.drug_names[d],
                            "dose_uM": DOSES_UM[k],
                            "cell_line_id": self.line_ids[line],
                            "plate": self.plate_names[pi],
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

    def truth_cells(self) -> pd.DataFrame:
        """One row per (well, line) of the design: the real cells of obs_cell_grid behind it
        (``real_cells``), the simulated ``survival`` (1 unless the drug is cytotoxic in that
        line) and the exact number of demo cells (``n_cells``; 0 on a plate without a file)."""
        L = self.p.n_cell_lines
        n = np.zeros_like(self.real_cells, dtype=np.int64)
        for pi, files in enumerate(self.plate_files):
            if files:
                n[self.well_plate == pi] = self.plate_counts(pi)
        drug, dose = zip(*(self.drug_label(w) for w in range(len(self.sample_names))), strict=True)
        return pd.DataFrame(
            {
                "sample": np.repeat(self.sample_names, L),
                "plate": np.repeat([self.plate_names[i] for i in self.well_plate], L),
                "drug": np.repeat(np.asarray(drug, dtype=object), L),
                "dose_uM": np.repeat(np.asarray(dose, dtype=np.float64), L),
                "cell_line_id": np.tile(np.asarray(self.line_ids, dtype=object), len(drug)),
                "real_cells": self.real_cells.ravel(),
                "survival": self.survival.ravel(),
                "n_cells": n.ravel(),
            }
        )

    def truth_params(self) -> dict:
        return {
            "params": dataclasses.asdict(self.p),
            "doses_uM": list(DOSES_UM),
            "dose_scale": list(DOSE_SCALE),
            "active_drugs": [self.drug_names[d] for d in np.flatnonzero(self.active)],
            "cytotoxic_drugs": {
                self.drug_names[d]: float(self.tox[d]) for d in np.flatnonzero(self.cytotoxic)
            },
            "design": {
                "metadata": f"Tahoe-100M (tahoebio/Tahoe-100M) revision {REAL_REVISION}, CC0-1.0",
                "plates": list(self.plate_names),
                "files_per_plate": {
                    self.plate_names[i]: len(f) for i, f in enumerate(self.plate_files)
                },
                "cell_lines": dict(zip(self.line_ids, self.line_names, strict=True)),
                "drugs": list(self.drug_names),
                "wells": len(self.sample_names),
            },
            "noise_model": (
                "counts ~ Multinomial(L, softmax(base + line program + plate shift + well noise + "
                "drug effect)); L ~ LogNormal(libsize_log_mean + line + plate + drug offsets, libsize_sd)"
            ),
            "cell_model": (
                "cells per (well, line) apportioned in proportion to obs_cell_grid's real count x "
                "survival, survival = exp(-tox_drug * dose_scale * sens_drug_line) for cytotoxic drugs"
            ),
            "well_sd": self.p.well_sd,
            "libsize_sd": self.p.libsize_sd,
        }


def _logsumexp(x: np.ndarray) -> float:
    m = float(x.max())
    return m + float(np.log(np.exp(x - m).sum()))
