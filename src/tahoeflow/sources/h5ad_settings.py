"""Settings of ``source.kind: h5ad``: what to read and how obs columns map to our fields.

Light (no HDF5 import): the config check (:func:`tahoeflow.config.h5ad_settings`) and the
workflow's parse step use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tahoeflow.errors import ArgumentError
from tahoeflow.io import RESULTS

OBS_MAP_KEYS = ("drug", "dose", "cell_line", "sample", "plate", "cell_id", "moa_fine")
"""Keys of ``source.h5ad.obs_map`` (our name -> an obs column of the file); only drug is required."""


@dataclass(frozen=True)
class H5adSettings:
    """What an h5ad source reads (parsed from the ``source.h5ad`` config by
    :func:`tahoeflow.config.h5ad_settings`)."""

    paths: tuple[str, ...]
    obs_map: Mapping[str, str]
    control_value: str | None = None  # None: the top-level control_drug
    layer: str | None = None
    dose_unit: str = "uM"
    gene_id_column: str | None = None
    gene_symbol_column: str | None = None
    mito_prefix: str = "MT-"
    prepare_kind: str | None = None  # eccite | l1000: build paths[0] from the shared real data
    prepare_input: str | None = None


PREPARE_KINDS = ("eccite", "l1000")
PREPARED_DIR = f"{RESULTS}/h5ad/prepared"


def prepared_path(kind: str) -> str:
    """Where the prepare step writes the h5ad it builds from shared real data of ``kind``."""
    return f"{PREPARED_DIR}/{kind}.h5ad"


def obs_map_problem(obs_map: object) -> tuple[str | None, str] | None:
    """(our name or None, problem) for the first problem of an ``obs_map``; None when fine.

    It maps names of :data:`OBS_MAP_KEYS` to obs column names (a None column: unmapped);
    ``drug`` is required.
    """
    if not isinstance(obs_map, Mapping):
        return None, "must map our names (drug, dose, ...) to obs columns"
    for name, col in obs_map.items():
        if name not in OBS_MAP_KEYS:
            return str(name), f"unknown name (known: {', '.join(OBS_MAP_KEYS)})"
        if col is not None and (not isinstance(col, str) or not col):
            return str(name), "must be an obs column name or null"
    if obs_map.get("drug") is None:
        return "drug", "is required (the obs column holding the perturbation)"
    return None


def validate_obs_map(obs_map: object) -> dict[str, str]:
    """``obs_map`` as a dict without the unmapped (None) names; :class:`ArgumentError`
    (``obs_map``) naming the first problem (see :func:`obs_map_problem`)."""
    problem = obs_map_problem(obs_map)
    if problem is not None:
        name, why = problem
        raise ArgumentError("obs_map", f"{name}: {why}" if name else why)
    return {str(k): v for k, v in obs_map.items() if v is not None}  # type: ignore[union-attr]
