"""Tahoe-100M's own metadata tables (``resources/tahoe_metadata/``), read and checked: the real
design the demo is built on (genes, wells, plates, drugs, doses, cell lines, cells per condition)."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow.cells.doses import dose_in_um
from tahoeflow.errors import InputError
from tahoeflow.sources.tahoe import (
    CONTROL_DRUG,
    FIRST_TOKEN,
    N_GENES,
)

REAL_METADATA_DIR = Path(__file__).resolve().parents[3] / "resources" / "tahoe_metadata"
"""Tahoe-100M's metadata tables, committed with the repository (see its README)."""
REAL_REVISION = "2dc57900b7981cfcf5e211527169a0b006546a95"
REAL_FILES = {
    "gene": "gene_metadata.parquet",
    "sample": "sample_metadata.parquet",
    "drug": "drug_metadata.parquet",
    "cell_line": "cell_line_metadata.parquet",
    "grid": "obs_cell_grid.parquet",
}
REAL_COLUMNS = {
    "gene": ("gene_symbol", "ensembl_id", "token_id"),
    "sample": ("sample", "plate", "drug", "drugname_drugconc"),
    "drug": ("drug", "moa-fine", "canonical_smiles", "pubchem_cid"),
    "cell_line": ("cell_name", "Cell_ID_Cellosaur"),
    "grid": ("drug", "cell_name", "plate", "conc", "n_cells"),
}
PLATE_ORDER = (
    "plate13", "plate7", "plate1", "plate14", "plate8", "plate9", "plate2", "plate3", "plate4",
    "plate5", "plate6", "plate10", "plate11", "plate12",
)  # fmt: skip
"""Plates in the order the demo takes them: plate13 mixes 0.05/0.5/5 uM, plate7 has the drug
'Trametinib (DMSO_TF solvate)' and shares 13 drug-doses with plate13, plate1 has 'Erdafitinib '."""
SEED000_LINES = ("CVCL_0131", "CVCL_1239")
"""A-172 and H4: the two of seed 000's seven glioblastoma lines that are among Tahoe's 50."""
TRAP_DRUGS = ("Trametinib (DMSO_TF solvate)", "Erdafitinib ", "Selinexor ")
"""Real names a careless reader gets wrong: a drug whose name contains the control's, and two
names with a trailing space (in sample_metadata and the data, not in drug_metadata)."""


# --- the real tables ----------------------------------------------------------------
@dataclass(frozen=True)
class RealTables:
    """Tahoe-100M's metadata tables as read (``gene``, ``sample``, ``drug``, ``cell_line``:
    Arrow tables, exactly the hub's; ``grid``: obs_cell_grid as pandas) and their paths."""

    paths: dict[str, Path]
    gene: pa.Table
    sample: pa.Table
    drug: pa.Table
    cell_line: pa.Table
    grid: pd.DataFrame


@functools.lru_cache(maxsize=4)
def real_tables(metadata_dir: str | Path = REAL_METADATA_DIR) -> RealTables:
    """Read and check the real metadata tables; a missing file or column is an InputError."""
    root = Path(metadata_dir)
    paths = {k: root / name for k, name in REAL_FILES.items()}
    tables = {}
    for kind, path in paths.items():
        if not path.is_file():
            raise InputError(
                path, "missing: the demo is built on Tahoe-100M's real metadata tables, "
                "committed under resources/tahoe_metadata/",
            )  # fmt: skip
        t = pq.read_table(path)
        missing = [c for c in REAL_COLUMNS[kind] if c not in t.column_names]
        if missing:
            raise InputError(
                path, f"missing column(s) {', '.join(missing)} (it has {', '.join(t.column_names)}): "
                f"not the tables of revision {REAL_REVISION}",
            )  # fmt: skip
        tables[kind] = t
    tokens = tables["gene"].column("token_id").to_numpy()
    if not np.array_equal(tokens, np.arange(FIRST_TOKEN, FIRST_TOKEN + N_GENES)):
        raise InputError(
            paths["gene"], f"token_id is not {FIRST_TOKEN}..{FIRST_TOKEN + N_GENES - 1} in order"
        )
    grid = tables.pop("grid").to_pandas()
    return RealTables(paths=paths, grid=grid, **tables)


def real_metadata_digest(metadata_dir: str | Path = REAL_METADATA_DIR) -> str:
    """sha256 over the real tables' names and bytes (a rerun trigger of the demo rules that
    does not depend on where the checkout lies); a missing file is hashed as missing."""
    h = hashlib.sha256()
    for name in sorted(REAL_FILES.values()):
        path = Path(metadata_dir) / name
        h.update(name.encode() + b"\0")
        h.update(path.read_bytes() if path.is_file() else b"<missing>")
    return h.hexdigest()


def sample_table(real: RealTables) -> pd.DataFrame:
    """sample_metadata with ``row`` (position in the table), ``conc`` (uM), ``is_control``
    (drug equal to DMSO_TF, spaces ignored: never a substring match) and ``position`` (1..96,
    the well's place among its plate's rows)."""
    s = real.sample.select(["sample", "plate", "drug", "drugname_drugconc"]).to_pandas()
    s["row"] = np.arange(len(s))
    s["conc"] = [dose_in_um(t) for t in s["drugname_drugconc"]]  # 1,344 rows
    s["is_control"] = s["drug"].str.strip() == CONTROL_DRUG
    s["position"] = s.groupby("plate").cumcount() + 1
    return s


def line_order(real: RealTables) -> list[tuple[str, str]]:
    """The 50 lines of the data as (Cellosaurus id, name): A-172 and H4 first, then the others
    by their number of cells in Tahoe-100M (most first)."""
    names = real.cell_line.select(["cell_name", "Cell_ID_Cellosaur"]).to_pandas()
    names = names.drop_duplicates("cell_name").set_index("cell_name")["Cell_ID_Cellosaur"]
    total = real.grid.groupby("cell_name")["n_cells"].sum()
    df = pd.DataFrame({"name": total.index, "cells": total.to_numpy()})
    df["cid"] = names.reindex(df["name"]).to_numpy()
    df["first"] = [SEED000_LINES.index(c) if c in SEED000_LINES else 99 for c in df["cid"]]
    df = df.sort_values(["first", "cells", "name"], ascending=[True, False, True])
    return list(zip(df["cid"], df["name"], strict=True))


def drug_order(samples: pd.DataFrame) -> list[str]:
    """Treated drugs of ``samples`` (names as the data spells them) in the demo's order: the
    real traps (:data:`TRAP_DRUGS`), then by number of wells (several doses or plates first),
    then by first appearance."""
    treated = samples[~samples["is_control"]]
    g = treated.groupby("drug", sort=False).agg(n=("row", "size"), first=("row", "min"))
    g["trap"] = [TRAP_DRUGS.index(d) if d in TRAP_DRUGS else 99 for d in g.index]
    g = g.sort_values(["trap", "n", "first"], ascending=[True, False, True])
    return list(g.index)


def apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """``total`` split in proportion to ``weights`` (largest remainder; sums to ``total``)."""
    w = np.asarray(weights, dtype=np.float64)
    if w.sum() <= 0:
        w = np.ones_like(w)
    exact = total * w / w.sum()
    out = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - out), kind="stable")
    out[order[: total - int(out.sum())]] += 1
    return out
