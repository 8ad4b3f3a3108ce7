"""The plate manifest of a hub dataset, built from the Parquet footers alone.

A manifest is a TSV with one row per expression file, in file order::

    file                                  n_rows  plates   first_row
    data/train-00000-of-03388.parquet     28225   plate4   0
    data/train-00001-of-03388.parquet     28225   plate4   28225

``n_rows`` is the row count of the file's footer, ``first_row`` the global index of its first
row (the rows of all earlier files; ``datasets`` streams the files in this order), and
``plates`` the plates its rows hold, from the row-group statistics (min/max) of the ``plate``
column: a comma-separated list of the plates of row groups whose min equals their max, plus
``a..b`` for a row group whose min and max differ (it holds plates between ``a`` and ``b`` in
byte order, which cannot be listed), ``*`` when a row group has no statistics (any plate),
and ``-`` for a file without rows. A selection by plate (:func:`plates_match`) keeps a file whenever it *may* hold a
wanted plate, so an unknown never drops a file.

:func:`build_hub_manifest` reads the footers over HTTP range requests through
``huggingface_hub``'s file system (``HfFileSystem``) at one commit: one listing of ``data/``
(paged), then per file one range read of its tail (a second only when the footer is longer
than the first guess; the guess follows the largest footer seen), never a whole file (only a
file smaller than the first read, 16 KiB, is read whole). For Tahoe-100M a footer is tens of
kilobytes (an estimate: 29 row groups x 10 columns; not measured here), so the 3,388 files
take a few hundred MB of reads instead of 338 GB. The workflow's ``manifest`` rule writes it to
``{source.hub.download_dir}/{revision}/manifest.tsv`` (:func:`hub_manifest_path`), where the
plan then finds it (see README, "Plate manifest").

Also here: :func:`check_file_rows` (a data file's footer against the manifest the plan used)
and :func:`check_metadata_columns` (a metadata table against the columns the workflow reads:
a table of another revision with columns renamed or missing fails its download with one line).
"""

from __future__ import annotations

import csv
import difflib
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from tahoeflow.errors import ArgumentError, InputError
from tahoeflow.io import atomic_path
from tahoeflow.sources.tahoe import data_filename

MANIFEST_COLUMNS = ("file", "n_rows", "plates", "first_row")
ANY_PLATE = "*"
NO_PLATE = "-"
PLATE_COLUMN = "plate"
FIRST_TAIL = 16 << 10
"""Bytes of the first file's tail read first; a longer footer costs one more read, and later
files start with the largest footer seen (a Tahoe-100M footer: 29 row groups x 10 columns,
an estimated 50-80 KB)."""
MAX_FOOTER = 64 << 20
"""A footer longer than this is refused (a corrupt length field, or not a Parquet file)."""

REQUIRED_METADATA_COLUMNS: dict[str, tuple[str, ...]] = {
    "gene": ("token_id", "ensembl_id", "gene_symbol"),
    "sample": ("sample", "plate", "drug", "drugname_drugconc"),
    "drug": ("drug",),
    "cell_line": (),
}
"""Columns of each hub metadata table that the workflow reads (revision 2dc57900... has them)."""


def hub_manifest_path(download_dir: str, revision: str) -> str:
    """Where the ``manifest`` rule writes the manifest of ``revision`` (cached per revision)."""
    return f"{str(download_dir).rstrip('/')}/{revision}/manifest.tsv"


# --- plates ------------------------------------------------------------------------------
def _plate_key(name: str) -> tuple:
    """Natural order: plate2 before plate10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def plates_from_metadata(md: pq.FileMetaData, where: object) -> str:
    """The ``plates`` field of a file from its footer (see the module doc).

    Raises :class:`InputError` when the file has no ``plate`` column.
    """
    names = [md.schema.column(i).path for i in range(md.num_columns)]
    if PLATE_COLUMN not in names:
        top = sorted({n.split(".")[0] for n in names})
        raise InputError(
            where,
            f"no column '{PLATE_COLUMN}' in its Parquet footer (columns: {', '.join(top)}); "
            "a file of another revision?",
        )
    j = names.index(PLATE_COLUMN)
    exact: set[str] = set()
    ranges: set[str] = set()
    for g in range(md.num_row_groups):
        rg = md.row_group(g)
        if rg.num_rows == 0:
            continue
        st = rg.column(j).statistics
        if st is None or not st.has_min_max:
            return ANY_PLATE
        lo, hi = _text(st.min), _text(st.max)
        if lo == hi:
            exact.add(lo)
        else:
            ranges.add(f"{lo}..{hi}")
    return ",".join(sorted(exact, key=_plate_key) + sorted(ranges)) or NO_PLATE


def _text(v: object) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def plates_match(field: str, wanted: Iterable[str]) -> bool:
    """Whether a file whose ``plates`` field is ``field`` may hold any plate of ``wanted``."""
    wanted = [w.strip() for w in wanted]
    for part in field.split(","):
        part = part.strip()
        if part == ANY_PLATE:
            return True
        if ".." in part:
            lo, hi = part.split("..", 1)
            lo_b, hi_b = lo.encode(), hi.encode()
            if any(lo_b <= w.encode() <= hi_b for w in wanted):
                return True
        elif part in wanted:
            return True
    return False


def select_by_plate(
    files: Sequence[int], plates: Mapping[int, str], wanted: Sequence[str], where: object
) -> list[int]:
    """The files of ``files`` that may hold a plate of ``wanted`` (per the manifest ``where``).

    A file the manifest does not list is kept (nothing is known about it). Raises
    :class:`ArgumentError` (``wanted``) when no file may hold any wanted plate.
    """
    kept = [f for f in files if f not in plates or plates_match(plates[f], wanted)]
    if not kept:
        known = sorted(
            {
                p
                for f in files
                for p in plates[f].split(",")
                if p not in ("", ANY_PLATE, NO_PLATE) and ".." not in p
            },  # fmt: skip
            key=_plate_key,
        )
        shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        raise ArgumentError(
            "wanted",
            f"no selected file holds {', '.join(map(repr, wanted))} according to the manifest "
            f"{where} (the selected files hold: {shown or 'no plate'})",
        )
    return kept


# --- reading and writing the TSV -----------------------------------------------------------
def read_plates(path: str | Path) -> dict[int, str] | None:
    """``{file index: plates field}`` of a manifest, or None when it has no ``plates`` column.

    Raises :class:`InputError` naming the manifest and row for a file or plates it cannot read.
    """
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if reader.fieldnames is None or "plates" not in reader.fieldnames:
            return None
        out: dict[int, str] = {}
        for i, rec in enumerate(reader):
            f = rec.get("file") or ""
            try:
                idx = int(f) if f.isdigit() else int(Path(f).name.split("-")[1])
            except (ValueError, IndexError):
                raise InputError(path, f"cannot read file {f!r}", row=i) from None
            field = (rec.get("plates") or "").strip()
            if not field:
                raise InputError(path, f"empty plates (write {ANY_PLATE} for unknown)", row=i)
            out[idx] = field
    return out


def read_first_rows(path: str | Path) -> dict[int, tuple[int, int]] | None:
    """``{file index: (first_row, n_rows)}`` of a manifest, or None without ``first_row``.

    Raises :class:`InputError` naming the manifest and row for a value it cannot read.
    """
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        if reader.fieldnames is None or "first_row" not in reader.fieldnames:
            return None
        out = {}
        for i, rec in enumerate(reader):
            f = rec.get("file") or ""
            try:
                idx = int(f) if f.isdigit() else int(Path(f).name.split("-")[1])
                out[idx] = (int(rec.get("first_row") or ""), int(rec.get("n_rows") or ""))
            except (ValueError, IndexError):
                raise InputError(
                    path, f"cannot read first_row {rec.get('first_row')!r}", row=i
                ) from None
    return out


def write_manifest(rows: Sequence[Mapping[str, object]], path: str | Path) -> None:
    """Write the manifest TSV atomically (a reader never sees half a manifest)."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(MANIFEST_COLUMNS)
        for r in rows:
            w.writerow([r[c] for c in MANIFEST_COLUMNS])


# --- footers ----------------------------------------------------------------------------------
class _TailGuess:
    """How many tail bytes to read first: the largest footer seen so far (files of one dataset
    have footers of similar length), at least 1 KiB, at most :data:`FIRST_TAIL` to start."""

    def __init__(self, first: int = FIRST_TAIL) -> None:
        self.value = first
        self._seen = False
        self._lock = threading.Lock()

    def update(self, footer_len: int) -> None:
        want = max(1024, footer_len + 8 + 512)
        with self._lock:
            self.value = want if not self._seen else max(self.value, want)
            self._seen = True


def footer_metadata(
    read_range: Callable[[int, int], bytes], size: int, where: object, guess: int = FIRST_TAIL
) -> tuple[pq.FileMetaData, int, int]:
    """Parse a Parquet footer from the file's tail only.

    ``read_range(start, stop)`` returns bytes ``[start, stop)`` of a file of ``size`` bytes.
    Returns (metadata, footer length, bytes read). One read when the footer fits in ``guess``
    bytes, else a second for the rest. Raises :class:`InputError` for a file that is not
    Parquet (no ``PAR1`` trailer, or a footer length that does not fit the file).
    """
    if size < 12:
        raise InputError(where, f"{size} bytes: too small to be a Parquet file")
    first = min(size, max(guess, 8))
    tail = read_range(size - first, size)
    read = len(tail)
    if len(tail) != first or tail[-4:] != b"PAR1":
        raise InputError(where, "not a Parquet file (no PAR1 trailer at its end)")
    flen = int.from_bytes(tail[-8:-4], "little")
    if flen <= 0 or flen + 12 > size or flen > MAX_FOOTER:
        raise InputError(where, f"footer length {flen} does not fit a {size}-byte file")
    if flen + 8 > len(tail):
        more = read_range(size - flen - 8, size - len(tail))
        read += len(more)
        tail = more + tail
    try:
        md = pq.ParquetFile(pa.BufferReader(tail[-(flen + 8) :])).metadata
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(where, f"unreadable Parquet footer: {e}") from None
    return md, flen, read


def check_file_rows(path: str | Path, expected: int) -> None:
    """Raise :class:`InputError` when the footer of ``path`` does not hold ``expected`` rows
    (the count the plan took from a manifest)."""
    try:
        n = pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(
            path, f"not a readable Parquet file (truncated or corrupt?): {e}"
        ) from None
    if n != expected:
        raise InputError(
            path,
            f"its Parquet footer holds {n} rows, but the manifest the plan used gives {expected} "
            "(source.manifest, or the hub manifest of this revision): the shards' row ranges "
            "would be wrong; fix or rebuild the manifest (`snakemake manifest`)",
        )


def check_metadata_columns(path: str | Path, kind: str) -> None:
    """Raise :class:`InputError` naming the file and the first missing column when the
    metadata table ``kind`` (gene, sample, drug, cell_line) lacks a column the workflow reads
    (e.g. a table of another revision, with the column renamed). Reads the schema only."""
    try:
        names = pq.read_schema(path).names
    except (pa.ArrowInvalid, OSError) as e:
        raise InputError(path, f"not a readable Parquet file: {e}") from None
    for col in REQUIRED_METADATA_COLUMNS.get(kind, ()):
        if col not in names:
            close = difflib.get_close_matches(col, names, n=1, cutoff=0.6)
            hint = f"; renamed to {close[0]!r}?" if close else ""
            raise InputError(
                path,
                f"missing column '{col}' of the {kind} metadata (has: {', '.join(names)}){hint} "
                "- a table of another revision?",
            )


# --- the hub ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class HubManifest:
    rows: list[dict[str, object]]
    commit: str
    bytes_read: int
    requests: int


def build_hub_manifest(
    repo_id: str,
    revision: str,
    n_files_total: int,
    *,
    endpoint: str | None = None,
    token: str | bool | None = None,
    workers: int = 8,
    timeout_s: float = 60.0,
    max_retries: int = 5,
    backoff_s: float = 0.5,
    log: Callable[[str], None] | None = None,
) -> HubManifest:
    """Rows of the manifest of ``repo_id`` at ``revision`` from the footers of its
    ``n_files_total`` data files (see the module doc). A branch is resolved to its commit once;
    every read is made at that commit.

    Raises :class:`InputError` for a missing data file, a file without a ``plate`` column, or
    one that is not Parquet, and :class:`tahoeflow.sources.hub.HubError`-style one-line InputErrors for
    HTTP failures that outlast ``max_retries``.
    """
    from huggingface_hub import HfApi, HfFileSystem
    from huggingface_hub.hf_file_system import safe_revision

    from tahoeflow.sources import hub, hub_errors

    say = log or (lambda _m: None)
    endpoint = endpoint or _env_endpoint()
    secrets = hub_errors.secrets_of(token if isinstance(token, str) else None)
    repo_at = f"{repo_id}@{revision}"

    def attempt(what: str, fn: Callable[[], object]) -> object:
        failures = 0
        while True:
            try:
                return fn()
            except InputError:
                raise
            except Exception as exc:  # classified below
                status = hub_errors.http_status(exc)
                transient = hub_errors.is_transient(exc)
                reason = hub_errors.describe(
                    exc, status, timeout_s, lambda t: hub_errors.scrub(t, secrets)
                )
                if status is None and not transient and not isinstance(exc, OSError):
                    raise
            failures += 1
            if not transient or failures > max_retries:
                tries = f" after {failures} attempts" if transient else ""
                raise InputError(f"{what} (repo {repo_at})", f"{reason}{tries}") from None
            delay = hub_errors.backoff_delay(backoff_s, failures, None)
            say(f"{what}: {reason}; retry {failures}/{max_retries} in {delay:.2f} s")
            time.sleep(delay)

    with hub.client_settings(timeout_s):
        fs = HfFileSystem(endpoint=endpoint, token=token, skip_instance_cache=True)
        api = HfApi(endpoint=endpoint, token=token)
        info = attempt(
            "repo info", lambda: api.dataset_info(repo_id, revision=revision, timeout=timeout_s)
        )
        commit = getattr(info, "sha", None) or revision
        if not hub.HEX40.match(commit):
            raise InputError(f"repo {repo_at}", f"the hub sent an invalid commit id {commit!r:.80}")
        say(f"{repo_at} is commit {commit}")
        root = f"datasets/{repo_id}@{safe_revision(commit)}"
        listing = attempt("listing of data/", lambda: fs.ls(f"{root}/data", detail=True))
        sizes = {e["name"][len(root) + 1 :]: int(e["size"]) for e in listing}
        names = [data_filename(i, n_files_total) for i in range(n_files_total)]
        missing = [n for n in names if n not in sizes]
        if missing:
            others = sorted(n for n in sizes if n.endswith(".parquet") and n not in names)
            extra = f"; it has {len(others)} other data files, e.g. {others[0]}" if others else ""
            raise InputError(
                f"{missing[0]} (repo {repo_id}, revision {commit})",
                f"not in the repo's data/ ({len(missing)} of source.hub.n_files_total="
                f"{n_files_total} files missing{extra})",
            )
        say(f"listed {len(sizes)} files in data/; reading {n_files_total} footers")
        guess = _TailGuess()
        counter = {"bytes": 0, "requests": 0}
        lock = threading.Lock()

        def one(name: str) -> tuple[int, str]:
            size = sizes[name]
            where = f"{name} (repo {repo_id}, revision {commit})"

            def read_range(start: int, stop: int) -> bytes:
                with fs.open(f"{root}/{name}", "rb", cache_type="none", size=size) as fh:
                    fh.seek(start)
                    data = fh.read(stop - start)
                with lock:
                    counter["requests"] += 1
                return data

            md, flen, nbytes = attempt(
                name, lambda: footer_metadata(read_range, size, where, guess.value)
            )
            guess.update(flen)
            with lock:
                counter["bytes"] += nbytes
            return md.num_rows, plates_from_metadata(md, where)

        t0 = time.monotonic()
        results = [one(names[0])]  # alone first: its footer length sets the others' guess
        with ThreadPoolExecutor(max(1, workers)) as pool:
            results += pool.map(one, names[1:])
    rows, first = [], 0
    for name, (n, plates) in zip(names, results, strict=True):
        rows.append({"file": name, "n_rows": n, "plates": plates, "first_row": first})
        first += n
    say(
        f"{n_files_total} footers in {time.monotonic() - t0:.1f} s: {counter['bytes']:,} bytes "
        f"in {counter['requests']} range requests ({counter['bytes'] / n_files_total:,.0f} "
        f"bytes per file), {first:,} rows"
    )
    return HubManifest(rows, commit, counter["bytes"], counter["requests"])


def _env_endpoint() -> str | None:
    import os

    value = os.environ.get("HF_ENDPOINT")
    return value.rstrip("/") if value else None
