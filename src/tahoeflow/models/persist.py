"""Saving fitted models (joblib, atomic) and loading them back."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import joblib

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
