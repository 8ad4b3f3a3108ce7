"""Atomic output writing: every file the workflow writes appears whole or not at all."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temporary file lives in the same directory (so the rename is atomic on POSIX) and is
    removed on any exception, including a full disk (ENOSPC) half-way through a write.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # A job killed by SIGKILL (or the OOM killer) cannot clean up; Snakemake runs one job per
    # output at a time, so an earlier temporary file of this target is stale.
    for stale in target.parent.glob(f".{glob.escape(target.name)}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual mode
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_parquet(table: pa.Table, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write ``table`` atomically. Deterministic: no timestamps or writer-specific metadata."""
    kwargs.setdefault("compression", "zstd")
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **kwargs)


def write_text(text: str, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(obj: Any, path: str | os.PathLike[str]) -> None:
    write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n", path)


def write_csv(df: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """Write a pandas DataFrame as CSV atomically (index off unless asked)."""
    kwargs.setdefault("index", False)
    with atomic_path(path) as tmp:
        df.to_csv(tmp, **kwargs)


def write_csv_table(table: pa.Table, path: str | os.PathLike[str]) -> None:
    """Write an Arrow table as CSV atomically with Arrow's C++ writer (header, quotes only
    where needed; floats in their shortest round-trip form). Several times faster than
    pandas ``to_csv`` for wide numeric tables such as the embeddings."""
    import pyarrow.csv as pcsv

    with atomic_path(path) as tmp:
        pcsv.write_csv(table, tmp, pcsv.WriteOptions(quoting_style="needed"))


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o)}")
