"""Static shard planning: which files, which row ranges, how jobs group them.

A *shard* is a row range of one expression file. Shards are known from the config alone
(file selection, ``cells_per_shard`` and the rows per file), so Snakemake sees every job in
a dry run and no checkpoint is needed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from tahoeflow.errors import ArgumentError, InputError


@dataclass(frozen=True)
class Shard:
    name: str
    file_index: int
    row_start: int
    row_stop: int | None  # None: to the end of the file
    file_rows: int | None = None  # the file's rows per the plan's manifest (checked when read)


_RANGE = re.compile(r"^\s*(\d+)\s*(?::\s*(\d+)\s*)?$")


def parse_file_selection(spec: object, n_files_total: int) -> list[int]:
    """File indices from a list of ints and/or ``"a:b"`` range strings (b exclusive).

    ``"0:40"`` -> 0..39; ``[3, "10:12"]`` -> [3, 10, 11]. Sorted, unique, each < n_files_total.
    Raises :class:`ArgumentError` (``spec``) for an unreadable, empty or out-of-range item.
    """
    items: Iterable[object] = spec if isinstance(spec, list | tuple) else [spec]
    out: set[int] = set()
    for item in items:
        if isinstance(item, bool):
            raise ArgumentError("spec", f"{item!r} is not a file index or 'start:stop' range")
        if isinstance(item, int):
            lo, hi = item, item + 1
        else:
            m = _RANGE.match(str(item))
            if not m:
                raise ArgumentError("spec", f"{item!r} is not a file index or 'start:stop' range")
            lo = int(m.group(1))
            hi = int(m.group(2)) if m.group(2) is not None else lo + 1
            if hi <= lo:
                why = "its stop equals its start" if hi == lo else "its stop is before its start"
                raise ArgumentError(
                    "spec", f"range {item!r} is empty ({why}; the stop is exclusive)"
                )
        if lo < 0 or hi > n_files_total:
            raise ArgumentError("spec", f"{item!r} is outside 0..{n_files_total - 1}")
        out.update(range(lo, hi))
    if not out:
        raise ArgumentError("spec", "selects no files")
    return sorted(out)


def plan_shards(
    files: Sequence[int],
    cells_per_shard: int | None,
    rows_per_file: Mapping[int, int | None] | int | None,
) -> list[Shard]:
    """One shard per file, or row ranges of ``cells_per_shard`` rows.

    ``rows_per_file`` gives each file's row count: a mapping (exact counts from a manifest or
    a file header), or one count for every file. A count sizes the ranges so that every shard
    starts below it (20,729 rows in shards of 5,000: five shards, the last one 729 rows); the
    last range of a file reads to the end of the file, so a nominal count that is slightly
    off never loses rows. A file counted 0 rows gets no shard at all. ``None`` (for a file, or
    for all) means the count is not known when planning (e.g. a file a rule has yet to
    write): that file is one shard reading all its rows, never a guess that could plan a range
    past its end.

    Raises :class:`ArgumentError` (``files``) when the selected files hold no rows.
    """
    shards = []
    for f in files:
        n = rows_per_file.get(f) if isinstance(rows_per_file, Mapping) else rows_per_file
        if n is not None and n <= 0:
            continue  # known to be empty: a shard would read nothing
        if not cells_per_shard:
            shards.append(Shard(f"{f:05d}", f, 0, None))
            continue
        k = 1 if n is None else -(-n // cells_per_shard)
        for j in range(k):
            stop = None if j == k - 1 else (j + 1) * cells_per_shard
            shards.append(Shard(f"{f:05d}-{j:04d}", f, j * cells_per_shard, stop))
    if files and not shards:
        raise ArgumentError(
            "files", f"the {len(files)} selected file(s) hold no rows (0 rows each)"
        )
    return shards


def plan_batches(shard_names: Sequence[str], per_job: int) -> dict[str, list[str]]:
    """Consecutive groups of at most ``per_job`` shards (in sorted order), named ``b00000``...

    The embedding passes (Gram matrices, projections) run one job per group: each job streams
    its shards one at a time (memory of one shard), and a job's Python start, imports and
    numba cache loads (~1.5 s) are paid once per group instead of once per shard. Concatenating
    the groups in name order gives the shards in sorted order.
    """
    if per_job < 1:
        raise ArgumentError("per_job", f"must be >= 1, got {per_job}")
    names = sorted(shard_names)
    return {f"b{i // per_job:05d}": names[i : i + per_job] for i in range(0, len(names), per_job)}


def plan_summary_groups(shard_names: Sequence[str], per_job: int) -> dict[str, list[str]]:
    """Consecutive groups of at most ``per_job`` shards (sorted order) for the summary jobs.

    A group of one shard is named as the shard (its outputs keep the shard's paths); a larger
    one ``<first>_<last>``. Each summary job reads its shards one at a time, so a job's memory
    is one shard's plus the group's summed statistics; the Python start, imports and numba
    cache loads are paid once per group. Name order is shard order.
    """
    if per_job < 1:
        raise ArgumentError("per_job", f"must be >= 1, got {per_job}")
    names = sorted(shard_names)
    groups = (names[i : i + per_job] for i in range(0, len(names), per_job))
    return {g[0] if len(g) == 1 else f"{g[0]}_{g[-1]}": g for g in groups}


def plan_merge_tree(
    shard_names: Sequence[str], fan_in: int
) -> tuple[dict[str, list[str]], list[str]]:
    """The hierarchy of a merge with at most ``fan_in`` inputs per job: ``(nodes, top)``.

    ``nodes`` maps each partial merge (``L1-00000``, ...) to its inputs: consecutive groups of
    ``fan_in`` shards (sorted order; the hub's files are sorted by plate, so a group holds one
    plate's files or two) at level 1, groups of ``fan_in`` level-k nodes at level k+1, until
    at most ``fan_in`` remain. ``top`` is what the final merge reads: those nodes, or the
    shards themselves when there are at most ``fan_in`` (no partial merge). Reading the
    leaves under ``top`` in order gives the shards in sorted order.
    """
    if fan_in < 2:
        raise ArgumentError("fan_in", f"must be >= 2, got {fan_in}")
    nodes: dict[str, list[str]] = {}
    level, current = 0, sorted(shard_names)
    while len(current) > fan_in:
        level += 1
        groups = {
            f"L{level}-{i // fan_in:05d}": current[i : i + fan_in]
            for i in range(0, len(current), fan_in)
        }
        nodes.update(groups)
        current = list(groups)
    return nodes, current


def check_row_range(path: object, row_start: int, n_rows: int) -> None:
    """A shard that starts past a file's last row was planned from a wrong row count."""
    if row_start > 0 and row_start >= n_rows:
        raise InputError(
            path,
            f"the shard starts at row {row_start} but the file has {n_rows} rows: the plan "
            "assumed more rows (set source.rows_per_file or a source.manifest with the true "
            "counts)",
        )
