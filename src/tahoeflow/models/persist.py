"""Saving fitted models and turning metric values into plain JSON.

Metric dicts hold only JSON-ready values: NaN and infinities become None (the fitters
then say why in ``null_reasons``), numpy scalars become Python ones.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import joblib
import numpy as np

from tahoeflow.errors import InputError
from tahoeflow.io import atomic_path


def save_model(model: Any, path: str | os.PathLike[str]) -> None:
    """Pickle a fitted model, transformer or result dict with joblib, atomically."""
    with atomic_path(path) as tmp:
        joblib.dump(model, tmp)


def load_model(path: str | os.PathLike[str]) -> Any:
    """Load what :func:`save_model` wrote (joblib: only load files you trust)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such file")
    return joblib.load(p)


def json_number(x: Any) -> float | None:
    """Plain float, or None for NaN / infinite / missing (keeps metric dicts valid JSON)."""
    if x is None:
        return None
    v = float(x)
    return v if math.isfinite(v) else None


def json_value(v: Any) -> Any:
    """numpy scalars as Python ones (a non-finite float as None); anything else unchanged."""
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return json_number(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v
