"""The one way the workflow writes a figure: laid out, saved atomically, closed.

Every figure module calls :func:`save_figure`, so the layout, resolution, format and
atomicity of the figures are decided in one place.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tahoeflow.io import atomic_path

DPI = 110
"""Resolution of the report's figures (dots per inch)."""


def save_figure(
    fig: Any, path: str | os.PathLike[str], *, dpi: float = DPI, fmt: str | None = None
) -> None:
    """Lay ``fig`` out (``tight_layout``), write it to ``path`` and close it.

    The file is written beside ``path`` under a temporary name, then renamed onto it
    (:func:`tahoeflow.io.atomic_path`), so a reader never sees half a figure. The format is
    ``fmt``, else the path's suffix (``png`` without one). Matplotlib's PNG carries no
    timestamp: the same figure gives the same bytes.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fmt = fmt or Path(path).suffix.lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=dpi)
    plt.close(fig)
