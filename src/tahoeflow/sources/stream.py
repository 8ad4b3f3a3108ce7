"""``source.kind: stream``: a slice of a hub dataset read with ``datasets`` streaming.

The user's seeds read Tahoe-100M through ``datasets.load_dataset(repo, streaming=True)``
(seed 002 takes the first 20,000 cells). This source does the same inside the workflow: the
global row range ``[source.stream.start, start + n_cells)`` (rows numbered across the data
files in file order, as ``datasets`` streams them) is cut into chunks of
``source.cells_per_shard`` rows; one job per chunk streams its rows at the pinned revision,
with only the columns the workflow reads (:data:`STREAM_COLUMNS`), and writes them as a local
Parquet file (atomic: whole or absent; a rerun redoes only the chunks that are missing). The
chunks are then the "files" of the normal DAG (one shard each).

Without a manifest, a chunk's job streams from the first row of the dataset and discards the
rows before its start (``datasets`` has no seek: a row range deep into the dataset costs the
reading of everything before it, in every job). With the hub manifest of the revision
(``snakemake manifest``; its ``first_row`` column), each job streams only the files that hold
its rows. For more than a quick look, whole files (``source.kind: hub``) are the better
choice: they are downloaded once, verified by sha256 and cached, and a plate selection uses
the manifest to pick them.

Only :func:`stream_rows` imports ``datasets`` (slow to import); the planning helpers are cheap
(they run at parse time).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence

import pyarrow as pa

from tahoeflow.errors import ArgumentError, InputError
from tahoeflow.io import RESULTS
from tahoeflow.sources.tahoe import EXPRESSION_SCHEMA, READ_COLUMNS, data_filename

STREAM_COLUMNS = list(READ_COLUMNS)
STREAM_ROOT = f"{RESULTS}/stream"
ROW_GROUP_SIZE = 1000
BATCH_ROWS = 1000


def plan_chunks(start: int, n_cells: int, cells_per_shard: int | None) -> list[tuple[int, int]]:
    """``[(row_start, row_stop), ...]`` covering ``[start, start + n_cells)`` in chunks of
    ``cells_per_shard`` rows (the last one shorter; None: one chunk). Chunk boundaries are
    multiples of ``cells_per_shard`` counted from ``start``."""
    if start < 0 or n_cells < 1:
        raise ArgumentError(
            "start" if start < 0 else "n_cells", f"start {start} / n_cells {n_cells} select no rows"
        )
    step = cells_per_shard or n_cells
    stop = start + n_cells
    return [(a, min(a + step, stop)) for a in range(start, stop, step)]


def chunk_path(revision: str, row_start: int, row_stop: int) -> str:
    """The local Parquet file of one chunk (named by its global row range, so chunks that stay
    the same when ``n_cells`` grows keep their files)."""
    return f"{STREAM_ROOT}/{revision}/rows-{row_start:012d}-{row_stop:012d}.parquet"


def covering_files(
    first_rows: Mapping[int, tuple[int, int]], n_files_total: int, row_start: int, row_stop: int
) -> tuple[list[str], int] | None:
    """The data files holding global rows ``[row_start, row_stop)`` and the global index of
    the first row of the first one, from a manifest's ``{file: (first_row, n_rows)}``; None
    when the manifest does not cover the range (the job then streams from the start)."""
    picked = [
        f
        for f, (first, n) in sorted(first_rows.items())
        if n > 0 and first < row_stop and first + n > row_start
    ]
    if not picked:
        return None
    covered = sum(first_rows[f][1] for f in picked)
    lo = first_rows[picked[0]][0]
    contiguous = picked == list(range(picked[0], picked[0] + len(picked)))
    if not contiguous or lo > row_start or lo + covered < row_stop:
        return None
    return [data_filename(f, n_files_total) for f in picked], lo


def stream_source(
    first_rows: Mapping[int, tuple[int, int]] | None,
    n_files_total: int,
    row_start: int,
    row_stop: int,
) -> dict[str, object]:
    """The ``source`` param of a stream job: ``{"files": [...], "first_row": n}`` from a
    manifest (:func:`covering_files`), or no files and row 0 (stream from the start)."""
    got = covering_files(first_rows, n_files_total, row_start, row_stop) if first_rows else None
    return {"files": got[0], "first_row": got[1]} if got else {"files": [], "first_row": 0}


def _expected_schema(columns: Sequence[str]) -> pa.Schema:
    return pa.schema([EXPRESSION_SCHEMA.field(c) for c in columns])


def stream_rows(
    repo_id: str,
    revision: str,
    row_start: int,
    row_stop: int,
    *,
    n_files_total: int,
    files: Sequence[str] | None = None,
    first_row: int = 0,
    columns: Sequence[str] = STREAM_COLUMNS,
    log: Callable[[str], None] | None = None,
    endpoint: str | None = None,
    timeout_s: float = 60.0,
) -> pa.Table:
    """Global rows ``[row_start, row_stop)`` of ``repo_id`` at ``revision``, streamed.

    ``files`` (repo paths, in order) and ``first_row`` (the global index of the first row of
    ``files[0]``) restrict the stream to the files that hold the rows; by default every data
    file ``data/train-*-of-{n_files_total}.parquet`` is streamed from row 0. Rows are read one
    record batch at a time (Arrow; no Python loop per row) and the rows before ``row_start``
    are dropped. ``endpoint`` defaults to ``HF_ENDPOINT`` read now (``datasets`` reads it once,
    at import); Xet stays off unless ``HF_HUB_DISABLE_XET=0``, as for the downloads.

    Raises :class:`InputError` naming the repo and revision for a missing column (a revision
    whose columns were renamed), a column of another type, or an HTTP failure, and
    :class:`ArgumentError` (``row_stop``) when the data end before ``row_stop``.
    """
    import datasets
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    from tahoeflow.sources import hub, hub_errors

    say = log or (lambda _m: None)
    where = f"{repo_id}@{revision}"
    data_files = list(files) if files else f"data/train-*-of-{n_files_total:05d}.parquet"
    say(
        f"stream rows {row_start}..{row_stop} of {where} from "
        f"{len(files) if files else 'all'} data file(s), first streamed row {first_row}"
    )

    def failure(exc: BaseException) -> InputError:
        status = hub_errors.http_status(exc)
        reason = hub_errors.describe(
            exc, status, 60.0, lambda t: hub_errors.scrub(t, hub_errors.secrets_of(None))
        )
        return InputError(f"{where} (rows {row_start}..{row_stop})", reason)

    transport = (OSError, HfHubHTTPError, httpx2.HTTPError, datasets.exceptions.DatasetsError)
    endpoint = (endpoint or os.environ.get("HF_ENDPOINT") or datasets.config.HF_ENDPOINT).rstrip(
        "/"
    )
    pieces: list[pa.Table] = []
    pos = first_row
    with hub.client_settings(timeout_s), _datasets_endpoint(datasets.config, endpoint):
        try:
            ds = datasets.load_dataset(
                repo_id,
                revision=revision,
                data_files=data_files,
                split="train",
                streaming=True,
                columns=list(columns),
            )
            have = list(ds.features or {})
            missing = [c for c in columns if c not in have]
            if missing:  # name what the files hold instead (their schema, all columns)
                have = list(
                    datasets.load_dataset(
                        repo_id, revision=revision, data_files=data_files, split="train",
                        streaming=True,
                    ).features or {}
                )  # fmt: skip
                raise InputError(
                    f"{where} data files",
                    f"missing column(s) {', '.join(missing)} (the files have: "
                    f"{', '.join(have)}); a revision whose columns were renamed?",
                )
            for t in ds.with_format("arrow").iter(batch_size=BATCH_ROWS):
                n = t.num_rows  # one record batch at a time; rows outside the range dropped
                lo, hi = max(row_start - pos, 0), min(row_stop - pos, n)
                if hi > lo:
                    pieces.append(t.slice(lo, hi - lo).select(list(columns)))
                pos += n
                if pos >= row_stop:
                    break
        except transport as e:
            raise failure(e) from None
    if pos < row_stop:
        raise ArgumentError(
            "row_stop",
            f"rows {row_start}..{row_stop} asked for, but the data of {where} end after "
            f"{pos} rows (lower start or n_cells)",
        )
    want = _expected_schema(columns)
    table = pa.concat_tables(pieces) if pieces else want.empty_table()
    for field in want:
        got = table.schema.field(field.name).type
        if got != field.type:
            try:
                column = table[field.name].cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise InputError(
                    f"{where} data files", f"column '{field.name}' is {got}, expected {field.type}"
                ) from None
            table = table.set_column(table.schema.get_field_index(field.name), field, column)
    say(f"streamed {table.num_rows} rows ({pos - first_row} read from the stream)")
    return table.replace_schema_metadata(None)


@contextlib.contextmanager
def _datasets_endpoint(cfg: object, endpoint: str) -> Iterator[None]:
    """``datasets.config``'s endpoint (read once, at its import) set to ``endpoint`` meanwhile."""
    names = ("HF_ENDPOINT", "HUB_DATASETS_URL")
    saved = {n: getattr(cfg, n) for n in names}
    try:
        cfg.HF_ENDPOINT = endpoint
        cfg.HUB_DATASETS_URL = endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}"
        yield
    finally:
        for n, v in saved.items():
            setattr(cfg, n, v)


def write_chunk(table: pa.Table, path: str) -> None:
    """Write a streamed chunk as Parquet (atomic; row groups of :data:`ROW_GROUP_SIZE`)."""
    from tahoeflow.io import write_parquet

    write_parquet(table, path, row_group_size=ROW_GROUP_SIZE)
