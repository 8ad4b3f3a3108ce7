"""Logging for workflow scripts: timestamped phases with elapsed time, and one-line errors."""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from .errors import ConfigError, InputError


class JobLog:
    """Writes ``[  12.3s] message`` lines to the job's log file (and nothing else anywhere)."""

    def __init__(self, path: str | Path | None) -> None:
        self.t0 = time.perf_counter()
        self._fh: TextIO | None = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "w", buffering=1)  # noqa: SIM115 - closed in close()

    def __call__(self, message: str) -> None:
        line = f"[{time.perf_counter() - self.t0:8.2f}s] {message}"
        if self._fh is not None:
            self._fh.write(line + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def run(main: Callable[[Any, JobLog], None], smk: Any) -> None:
    """Run a script's ``main(snakemake, log)``; bad input ends the job with one clear line.

    An :class:`InputError` or :class:`ConfigError` is written as ``ERROR: <message>`` to the log
    and to stderr, and the job exits with status 1 (Snakemake then removes its outputs). Any
    other exception keeps its traceback in the log.
    """
    log = JobLog(smk.log[0] if len(smk.log) else None)
    try:
        main(smk, log)
        log("done")
    except (InputError, ConfigError) as e:
        log(f"ERROR: {e}")
        # one write of the whole line: jobs running side by side share Snakemake's stderr, and
        # print() writes the text and the newline separately (lines could interleave)
        line = f"ERROR: {e}\n"
        sys.stderr.flush()
        try:
            os.write(sys.stderr.fileno(), line.encode(errors="replace"))
        except (AttributeError, OSError, ValueError):  # a replaced stderr (tests, notebooks)
            sys.stderr.write(line)
        log.close()
        sys.exit(1)
    except BaseException:
        log("ERROR: unexpected failure\n" + traceback.format_exc())
        log.close()
        raise
    log.close()
