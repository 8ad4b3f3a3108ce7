"""Download files of the Tahoe-100M Hugging Face dataset repo, verified by sha256.

:func:`fetch_file` wraps :func:`huggingface_hub.hf_hub_download` (the real client, with its
cache) and adds what a long unattended workflow needs:

* **Verification.** The expected checksum is the hub's own: for an LFS file (every parquet
  file in the repo) the ``X-Linked-Etag``/``ETag`` of a HEAD on the resolve URL is the file's
  sha256 (the LFS oid). The downloaded file is hashed in chunks and compared. On a mismatch
  the bad cached blob is deleted and the file is downloaded once more from scratch; a second
  mismatch raises :class:`~tahoeflow.errors.InputError`. (Third-party reports describe a
  Tahoe shard with the right size on disk but undecodable pages, so size alone is not enough.)
* **Retries** with exponential backoff on connection errors, timeouts, HTTP 5xx, 408 and 429
  (honouring ``Retry-After``, capped at 600 s). No retry on other 4xx (404, 401, ...): those
  raise :class:`HubError` at once, naming the file, revision and HTTP status. ``max_retries``
  bounds them all: the client library's own retries (5 per request, sleeping whatever
  ``Retry-After`` a server asks for, with no cap) are switched off, so an attempt makes one
  HEAD and one GET; only a body that broke off *after making progress* is resumed within the
  attempt (from the bytes already received), at most ``max_retries`` times.
* **Hub metadata is untrusted.** The commit id and the etag the hub sends become path
  components of the cache (``snapshots/{commit}/``, ``blobs/{etag}``). A commit id that is
  not 40 hex digits is refused, and the library's own HEAD must report exactly the etag and
  commit of ours (a hub that changes its answer, e.g. to ``../../x``, is refused before
  anything is written).
* **Atomic placement.** The verified file appears at ``dest`` whole or not at all: it is
  hard-linked (or, across file systems, copied) from the cache into a temporary file beside
  ``dest`` and renamed. A hard link shares the cache's disk blocks, which matters at 338 GB.
* **Secrets.** The token is never logged, printed, put in an exception message or written to a
  file by this module; every message that could carry text from the server or the client
  library is scrubbed of it, and library exceptions are not chained onto ours.

Environment and the ``huggingface_hub`` import-time trap
-------------------------------------------------------
``huggingface_hub`` reads most of its settings (``HF_ENDPOINT``, ``HF_HUB_OFFLINE``,
``HF_HUB_DISABLE_XET``, ``HF_HUB_DOWNLOAD_TIMEOUT``, ``HF_HOME`` ...) into
``huggingface_hub.constants`` **once, at import**. Setting the variables later has no effect.
:func:`fetch_file` therefore reads what it needs at *call* time:

* the endpoint: ``endpoint=`` or else ``os.environ["HF_ENDPOINT"]``, passed explicitly to the
  client (``None`` falls back to the client's import-time default, https://huggingface.co);
* ``HF_HUB_DISABLE_XET``: **defaults to on** here (unset means disabled). Xet is the hub's
  chunk-deduplicating storage protocol; the ``hf_xet`` client talks to separate CAS servers,
  which a plain HTTP mirror, the loopback test server and some cluster networks (proxies,
  firewalls; one team saw Xet downloads hang) do not provide. Plain HTTP from the hub's CDN
  is fast enough for whole-file parquet downloads. Set ``HF_HUB_DISABLE_XET=0`` to use Xet;
* ``timeout_s`` is applied to both the HEAD and the body download.

The last two are set by temporarily patching ``huggingface_hub.constants`` under a
process-wide lock, so concurrent :func:`fetch_file` calls in *threads* of one process run one
at a time. Snakemake runs each download as its own process, so this costs nothing there.
``HF_HUB_OFFLINE`` is still the client's import-time value: in offline mode a cached file is
returned and checked against its blob name (the hub's etag, recorded when it was cached).
The token defaults, as usual, to ``HF_TOKEN`` or the stored login (read at call time).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx2
from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
from huggingface_hub import file_download as _file_download
from huggingface_hub.errors import HfHubHTTPError

from tahoeflow.errors import InputError
from tahoeflow.io import atomic_path
from tahoeflow.sources import tahoe as schema
from tahoeflow.sources.hub_errors import (
    Refused,
    backoff_delay,
    describe,
    fmt_bytes,
    http_status,
    is_transient,
    retry_after,
    scrub,
    secrets_of,
)

__all__ = [
    "DEFAULT_REPO",
    "N_DATA_FILES",
    "METADATA_KINDS",
    "HubError",
    "data_filename",
    "metadata_filename",
    "fetch_file",
]

DEFAULT_REPO = "tahoebio/Tahoe-100M"
N_DATA_FILES = schema.N_FILES_HUB
METADATA_KINDS = ("gene", "sample", "drug", "cell_line")

_CHUNK = 8 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX40 = re.compile(r"^[0-9a-f]{40}$")
_SETTINGS_LOCK = threading.RLock()
# The library's functions as imported, wrapped per attempt by :func:`_library_guard`.
_LIB_HTTP_GET = _file_download.http_get
_LIB_STREAM_BACKOFF = _file_download.http_stream_backoff
_LIB_FILE_METADATA = _file_download.get_hf_file_metadata


class HubError(RuntimeError):
    """A file could not be fetched from the hub (not a checksum problem).

    ``status`` is the HTTP status when there was one; ``transient`` says whether the failure
    was of a kind that was retried (connection, timeout, 5xx, 408, 429) before giving up.
    """

    def __init__(
        self,
        filename: str,
        repo_id: str,
        revision: str,
        problem: str,
        *,
        status: int | None = None,
        transient: bool = False,
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{filename} (repo {repo_id}, revision {revision}): {problem}")
        self.filename = filename
        self.repo_id = repo_id
        self.revision = revision
        self.problem = problem
        self.status = status
        self.transient = transient
        self.attempts = attempts


def data_filename(i: int, n_files: int = N_DATA_FILES) -> str:
    """Repo path of expression shard ``i``: ``data/train-{i:05d}-of-{n_files:05d}.parquet``."""
    if not 0 <= i < n_files:
        raise ValueError(f"shard index {i} outside 0..{n_files - 1}")
    return schema.data_filename(i, n_files)


def metadata_filename(kind: str) -> str:
    """Repo path of a metadata table: ``metadata/{kind}_metadata.parquet``.

    ``kind`` is one of ``gene``, ``sample``, ``drug``, ``cell_line``.
    """
    if kind not in METADATA_KINDS:
        raise ValueError(f"unknown metadata kind {kind!r}; expected one of {METADATA_KINDS}")
    return schema.metadata_filename(kind)


def fetch_file(
    repo_id: str,
    filename: str,
    revision: str,
    dest: Path,
    *,
    cache_dir: Path | None = None,
    token: str | None = None,
    max_retries: int = 5,
    backoff_s: float = 0.5,
    timeout_s: float = 60.0,
    log: Callable[[str], None] | None = None,
    endpoint: str | None = None,
) -> Path:
    """Download ``filename`` of dataset repo ``repo_id`` at ``revision`` to ``dest``, verified.

    Args:
        repo_id: dataset repo, e.g. :data:`DEFAULT_REPO`.
        filename: path inside the repo, e.g. ``data_filename(0)``.
        revision: a 40-hex commit id (recommended: reproducible) or a branch/tag such as
            ``main``. A branch is resolved once per attempt and the file is downloaded at the
            commit the hub reported, so the checksum and the bytes always match each other.
        dest: where the verified file is placed (atomically; parent folders are created).
        cache_dir: ``huggingface_hub`` cache folder; default: the client's (``HF_HUB_CACHE``
            as it was at import).
        token: hub token; default ``HF_TOKEN`` or the stored login. Never logged.
        max_retries: retries after the first attempt for transient failures; the sha256
            mismatch retry is separate (exactly one).
        backoff_s: first retry delay; doubles each retry (capped at 120 s, up to +25 %
            jitter). A 429/503 ``Retry-After`` longer than that is honoured (up to 600 s).
        timeout_s: connect/read timeout of each HTTP request (not of the whole download).
        log: called with one-line progress messages (file, bytes, attempt, elapsed).
        endpoint: hub URL; default ``os.environ["HF_ENDPOINT"]`` read now, else the client's.

    Returns:
        ``dest``.

    Raises:
        InputError: the bytes did not match the hub's sha256 twice (``dest`` not created).
        HubError: a non-retryable HTTP error (404, 401, ...), or retries exhausted.
    """
    dest = Path(dest)
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    if endpoint is None:
        endpoint = os.environ.get("HF_ENDPOINT") or None
    if endpoint is not None:
        endpoint = endpoint.rstrip("/")
    secrets = secrets_of(token)

    def say(msg: str) -> None:
        if log is not None:
            log(scrub(msg, secrets))

    def fail(problem: str, status: int | None, transient: bool, attempts: int) -> HubError:
        return HubError(
            filename,
            repo_id,
            revision,
            scrub(problem, secrets),
            status=status,
            transient=transient,
            attempts=attempts,
        )

    failures = 0  # transient failures so far
    mismatch_seen = False
    force = False
    started = time.monotonic()
    while True:
        attempt = failures + 1 + int(mismatch_seen)
        t0 = time.monotonic()
        error: BaseException | None = None
        try:
            with client_settings(timeout_s):
                cached, expected, size = _download(
                    repo_id,
                    filename,
                    revision,
                    cache_dir,
                    token,
                    timeout_s,
                    endpoint,
                    force,
                    say,
                    attempt,
                    max_retries,
                )
            elapsed = time.monotonic() - t0
            rate = size / elapsed / 1e6 if elapsed > 0 else float("inf")
            say(
                f"{filename}: attempt {attempt}: have {fmt_bytes(size)} after {elapsed:.2f} s "
                f"({rate:.1f} MB/s incl. HEAD; cache hits are instant)"
            )
            how, actual = _place_verified(cached, dest, expected)
        except _Mismatch as mm:
            _evict(mm.cached)
            detail = f"{mm.algo} mismatch: expected {mm.expected}, got {mm.actual}"
            if mismatch_seen or constants.is_offline_mode():
                say(f"{filename}: {detail}; giving up")
                raise InputError(filename, detail) from None
            say(
                f"{filename}: {detail}; deleted the cached copy, downloading once more from scratch"
            )
            mismatch_seen = True
            force = True
            continue
        except Exception as exc:  # classified below; anything unknown is re-raised as is
            error = exc
        else:
            total = time.monotonic() - started
            say(
                f"{filename}: verified {fmt_bytes(size)} (sha {actual[:12]}...) -> {dest} "
                f"({how}), {total:.2f} s in all"
            )
            return dest

        # Failure handling happens outside the ``except`` block so that the library's exception
        # (whose text may carry server messages) is never chained onto ours.
        status = http_status(error)
        transient = is_transient(error)
        reason = describe(error, status, timeout_s, lambda text: scrub(text, secrets))
        elapsed = time.monotonic() - t0
        if not transient:
            if status is None and not isinstance(error, (OSError, httpx2.HTTPError)):
                raise error  # a programming error or similar: keep its traceback
            say(
                f"{filename}: attempt {attempt} failed after {elapsed:.2f} s: {reason}; not retrying"
            )
            raise fail(reason, status=status, transient=False, attempts=attempt)
        failures += 1
        if failures > max_retries:
            say(f"{filename}: attempt {attempt} failed after {elapsed:.2f} s: {reason}; giving up")
            raise fail(
                f"gave up after {attempt} attempts; last error: {reason}",
                status=status,
                transient=True,
                attempts=attempt,
            )
        delay = backoff_delay(backoff_s, failures, retry_after(error))
        say(
            f"{filename}: attempt {attempt} failed after {elapsed:.2f} s: {reason}; "
            f"retry {failures}/{max_retries} in {delay:.2f} s"
        )
        time.sleep(delay)
        del error


# -- the download itself ---------------------------------------------------------------------


class _Mismatch(Exception):
    def __init__(self, cached: Path, algo: str, expected: str, actual: str) -> None:
        super().__init__(f"{algo} mismatch")
        self.cached = cached
        self.algo = algo
        self.expected = expected
        self.actual = actual


def _download(
    repo_id: str,
    filename: str,
    revision: str,
    cache_dir: Path | None,
    token: str | None,
    timeout_s: float,
    endpoint: str | None,
    force: bool,
    say: Callable[[str], None],
    attempt: int,
    max_resumes: int = 0,
) -> tuple[Path, str, int]:
    """One attempt: HEAD for the checksum, then ``hf_hub_download``. Returns (cached, etag, size)."""
    if constants.is_offline_mode():
        # No HEAD possible: the blob's name in the cache is the etag the hub reported when the
        # file was downloaded, so it still pins the expected content.
        cached = Path(
            hf_hub_download(
                repo_id,
                filename,
                repo_type="dataset",
                revision=revision,
                cache_dir=cache_dir,
                token=token,
            )
        )
        expected = cached.resolve().name
        if not (_HEX64.match(expected) or HEX40.match(expected)):
            raise OSError(
                "offline mode, and the cached copy is not a blob named by the hub's checksum, "
                "so it cannot be verified"
            )
        say(f"{filename}: offline mode: using the cached copy (blob {expected[:12]}...)")
        return cached, expected, cached.stat().st_size

    url = hf_hub_url(repo_id, filename, repo_type="dataset", revision=revision, endpoint=endpoint)
    say(f"{filename}: attempt {attempt}: HEAD {repo_id}@{revision}")
    meta = get_hf_file_metadata(url, token=token, timeout=timeout_s, endpoint=endpoint)
    expected = (meta.etag or "").lower()
    if not (_HEX64.match(expected) or HEX40.match(expected)):
        # Raised as an OSError so it is reported as a (non-retryable) hub problem.
        raise Refused(f"the hub sent no usable checksum for this file (etag {meta.etag!r:.80})")
    if meta.commit_hash and not HEX40.match(meta.commit_hash):
        raise Refused(f"the hub sent an invalid commit id {meta.commit_hash!r:.80}")
    commit = meta.commit_hash or revision
    size_txt = fmt_bytes(meta.size) if meta.size is not None else "unknown size"
    say(f"{filename}: {size_txt}, expected sha {expected[:12]}..., commit {commit[:12]}")
    pinned = commit if HEX40.match(commit) else None
    with _library_guard(expected, pinned, max_resumes):
        cached = Path(
            hf_hub_download(
                repo_id,
                filename,
                repo_type="dataset",
                revision=commit,
                cache_dir=cache_dir,
                token=token,
                endpoint=endpoint,
                etag_timeout=timeout_s,
                force_download=force,
            )
        )
    return cached, expected, cached.stat().st_size


@contextlib.contextmanager
def _library_guard(expected: str, commit: str | None, max_resumes: int) -> Iterator[None]:
    """Inside ``hf_hub_download``: pin the library's HEAD to ours and bound its retries.

    * its HEAD must report etag ``expected`` and (when known) commit ``commit``: both become
      cache paths (``blobs/{etag}``, ``snapshots/{commit}/``), and a 404's commit header
      becomes ``.no_exist/{commit}/``; anything else is refused (:class:`Refused`);
    * its GET is not retried on 408/429 (those come back to :func:`fetch_file`'s loop, which
      caps ``Retry-After``), and a body that breaks off is resumed only when it made progress
      since the last try, at most ``max_resumes`` times.

    Module attributes of ``huggingface_hub.file_download`` are swapped under the settings lock.
    """
    calls = 0

    def http_get(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1  # the first call is the download, any later one a resume
        if calls - 1 > max_resumes:
            raise httpx2.RemoteProtocolError(
                f"the body broke off {calls - 1} times in this attempt"
            )
        kwargs["_nb_retries"] = 0  # no retry unless bytes arrived (the library resets it then)
        return _LIB_HTTP_GET(*args, **kwargs)

    def file_metadata(*args: object, **kwargs: object) -> object:
        try:
            meta = _LIB_FILE_METADATA(*args, **kwargs)
        except HfHubHTTPError as e:
            sent = e.response.headers.get("X-Repo-Commit") if e.response is not None else None
            if sent is not None and not HEX40.match(sent):
                raise Refused(f"the hub sent an invalid commit id {sent!r:.80}") from None
            raise
        etag = (meta.etag or "").lower()
        if etag != expected:
            raise Refused(
                f"the hub's checksum changed between two requests ({expected[:12]}... "
                f"then {meta.etag!r:.80})"
            )
        if meta.commit_hash is not None and not (
            meta.commit_hash == commit if commit else HEX40.match(meta.commit_hash)
        ):
            raise Refused(
                f"the hub's commit changed between two requests ({commit}, then "
                f"{meta.commit_hash!r:.80})"
            )
        return meta

    hooks = {
        "http_get": http_get,
        "http_stream_backoff": functools.partial(_LIB_STREAM_BACKOFF, max_retries=0),
        "get_hf_file_metadata": file_metadata,
    }
    with _patched(_file_download, hooks):
        yield


def _place_verified(cached: Path, dest: Path, expected: str) -> tuple[str, str]:
    """Link or copy ``cached`` to ``dest`` atomically, hashing exactly the bytes placed there."""
    blob = cached.resolve()
    algo = "sha256" if _HEX64.match(expected) else "git-sha1"
    with atomic_path(dest) as tmp:
        try:
            tmp.unlink()
            os.link(blob, tmp)
        except OSError:  # another file system, or links not allowed: copy instead
            how, actual = "copy", _copy_hashing(blob, tmp, algo)
        else:
            how, actual = "hardlink", _hash_file(tmp, algo)
        if actual != expected:
            raise _Mismatch(cached, algo, expected, actual)
    return how, actual


def _new_hash(algo: str, size: int) -> hashlib._Hash:
    if algo == "sha256":
        return hashlib.sha256()
    # Non-LFS files: the hub's etag is the git blob id, sha1 of "blob <size>\0<content>".
    h = hashlib.sha1()  # noqa: S324 - git's object id, not a security use
    h.update(b"blob %d\0" % size)
    return h


def _hash_file(path: Path, algo: str) -> str:
    h = _new_hash(algo, path.stat().st_size)
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _copy_hashing(src: Path, dst: Path, algo: str) -> str:
    h = _new_hash(algo, src.stat().st_size)
    with src.open("rb") as fin, dst.open("wb") as fout:
        while chunk := fin.read(_CHUNK):
            h.update(chunk)
            fout.write(chunk)
        fout.flush()
        os.fsync(fout.fileno())
    shutil.copymode(src, dst)
    return h.hexdigest()


def _evict(cached: Path) -> None:
    """Delete a cached file and the blob it points to, so the next attempt downloads afresh."""
    with contextlib.suppress(OSError):
        blob = cached.resolve()
        blob.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        cached.unlink(missing_ok=True)


@contextlib.contextmanager
def client_settings(timeout_s: float) -> Iterator[None]:
    """Apply call-time settings to ``huggingface_hub.constants`` (read by the client per request)."""
    disable_xet = os.environ.get("HF_HUB_DISABLE_XET", "1").strip().upper() in {
        "1",
        "ON",
        "YES",
        "TRUE",
    }
    patch = {
        "HF_HUB_DISABLE_XET": disable_xet,
        "HF_HUB_DOWNLOAD_TIMEOUT": timeout_s,
        "HF_HUB_ETAG_TIMEOUT": timeout_s,
    }
    with _patched(constants, patch):
        yield


@contextlib.contextmanager
def _patched(module: object, values: dict[str, object]) -> Iterator[None]:
    """Set attributes of ``module`` for the duration of the block (one patch at a time)."""
    with _SETTINGS_LOCK:
        saved = {name: getattr(module, name) for name in values}
        try:
            for name, value in values.items():
                setattr(module, name, value)
            yield
        finally:
            for name, value in saved.items():
                setattr(module, name, value)
