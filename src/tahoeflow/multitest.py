"""Multiple-testing correction, one implementation for every table that reports q-values."""

from __future__ import annotations

import numpy as np
from scipy import stats


def bh_adjust(p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values, as R's ``p.adjust(method = "BH")`` computes them
    (``scipy.stats.false_discovery_control``, bit-equal to R); a NaN p-value stays NaN and is
    not counted in n."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = ~np.isnan(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out
