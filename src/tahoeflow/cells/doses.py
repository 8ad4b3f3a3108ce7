"""Doses: Tahoe's ``drugname_drugconc`` strings and dose units, in µM.

One unit table (:data:`UNIT_TO_UM`) serves the sample metadata of the Parquet sources
(:func:`sample_doses`), the h5ad source's ``dose_unit`` and the phenotype tables.
"""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd

from tahoeflow.cells.vocab import has_columns
from tahoeflow.errors import InputError


def parse_drugconc(text: str) -> tuple[str, float, str]:
    """``"[('Drug', 0.5, 'uM')]"`` -> ("Drug", 0.5, "uM"). Raises ValueError when malformed."""
    value = ast.literal_eval(text)
    if (
        not isinstance(value, list)
        or len(value) < 1
        or not isinstance(value[0], tuple)
        or len(value[0]) != 3
        or not isinstance(value[0][0], str)
        or isinstance(value[0][1], bool)
        or not isinstance(value[0][1], int | float)
        or not isinstance(value[0][2], str)
    ):
        raise ValueError(f"expected [('name', dose, 'unit')], got {text!r}")
    if len(value) > 1:  # taking the first would join one drug's dose to a combination
        raise ValueError(f"lists {len(value)} drugs (combinations are not supported): {text!r}")
    name, dose, unit = value[0]
    return name, float(dose), unit


UNIT_TO_UM = {"uM": 1.0, "µM": 1.0, "nM": 1e-3, "mM": 1e3, "M": 1e6}
"""Dose units and their factor to µM: Tahoe's ``drugname_drugconc`` and an h5ad source's
``dose_unit`` both use this table."""


def dose_unit_problem(unit: object) -> str | None:
    """Why ``unit`` is not a dose unit of :data:`UNIT_TO_UM`, or None when it is one."""
    if isinstance(unit, str) and unit in UNIT_TO_UM:
        return None
    return f"{unit!r} is not one of {', '.join(UNIT_TO_UM)}"


def dose_in_um(text: str) -> float:
    """Dose in µM of one ``drugname_drugconc`` value; ValueError when malformed or its unit
    is unknown (no check of sign or finiteness: :func:`sample_doses` reports those by row)."""
    _, dose, unit = parse_drugconc(text)
    if unit not in UNIT_TO_UM:
        raise ValueError(f"unknown dose unit {unit!r} in drugname_drugconc")
    return dose * UNIT_TO_UM[unit]


def sample_doses(sample_metadata: pd.DataFrame, path: object) -> pd.Series:
    """Dose in µM per sample, parsed from ``drugname_drugconc``; errors name the row.

    A dose must be finite and non-negative, with a known unit; the ``drug`` column, where
    present, must name the drug of ``drugname_drugconc`` (surrounding spaces ignored: Tahoe's
    own table has 'Erdafitinib ' in both). ``attrs`` keeps what ``load_shard`` checks the data
    against: ``path``, and ``drug`` / ``plate`` per sample (spaces stripped; ``plate`` only
    where the table has it).
    """
    for col in ("sample", "drugname_drugconc"):
        if col not in sample_metadata.columns:
            raise InputError(
                path, f"missing column '{col}' ({has_columns(sample_metadata.columns)})"
            )
    doses = np.empty(len(sample_metadata))
    names = np.empty(len(sample_metadata), dtype=object)
    for i, text in enumerate(sample_metadata["drugname_drugconc"].astype(str)):  # ~1.3k rows
        try:
            name, dose, unit = parse_drugconc(text)
        except (ValueError, SyntaxError) as e:
            raise InputError(path, f"malformed drugname_drugconc: {e}", row=i) from None
        if unit not in UNIT_TO_UM:
            raise InputError(path, f"unknown dose unit {unit!r} in drugname_drugconc", row=i)
        if not (np.isfinite(dose) and dose >= 0):
            raise InputError(
                path, f"dose {dose!r} in drugname_drugconc is not a finite non-negative number",
                row=i,
            )  # fmt: skip
        doses[i] = dose * UNIT_TO_UM[unit]
        names[i] = name.strip()
    if "drug" in sample_metadata.columns:
        col = sample_metadata["drug"].astype(str).str.strip().to_numpy(dtype=object)
        bad = np.flatnonzero(col != names)
        if bad.size:
            i = int(bad[0])
            raise InputError(
                path, f"column 'drug' is {col[i]!r} but drugname_drugconc names {names[i]!r}",
                row=i,
            )  # fmt: skip
    s = pd.Series(doses, index=sample_metadata["sample"].astype(str).to_numpy())
    if s.index.has_duplicates:
        raise InputError(path, f"duplicated sample {s.index[s.index.duplicated()][0]!r}")
    # tuples, not arrays: pandas compares attrs with == when it combines Series
    s.attrs["path"] = str(path)
    s.attrs["drug"] = tuple(names)
    if "plate" in sample_metadata.columns:
        s.attrs["plate"] = tuple(sample_metadata["plate"].astype(str).str.strip())
    return s
