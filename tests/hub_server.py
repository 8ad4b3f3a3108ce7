"""A loopback fake of the Hugging Face Hub's file-resolve endpoint, for offline tests.

It serves the files below a local folder as one dataset repo, answering HEAD and GET on
``/datasets/{org}/{name}/resolve/{revision}/{path}`` with the headers ``huggingface_hub``
needs (see ``/work/shared/notes/tahoe.md`` section 6): ``Content-Length``, ``ETag`` and
``X-Linked-Etag`` (the file's sha256 in quotes, as the hub sends for LFS files),
``X-Linked-Size`` and ``X-Repo-Commit``. ``Range`` requests are honoured, because the client
resumes an interrupted body with one. Anything under ``/api/`` gets a harmless 404, unless
the hub is started with ``api=True``: then it also answers the three API calls that
``huggingface_hub``'s file system (``HfFileSystem``) and ``datasets`` streaming make
(huggingface_hub 2.4.0, datasets 5.2.0):

* ``GET /api/datasets/{repo}/revision/{rev}``: the repo info (``id``, ``sha``, ``siblings``);
* ``GET /api/datasets/{repo}/tree/{rev}[/{path}]?recursive=&expand=``: a folder listing, in
  pages of ``tree_page_size`` entries with a ``Link: <...>; rel="next"`` header as the hub
  sends (the client follows it);
* ``POST /api/datasets/{repo}/paths-info/{rev}`` (form fields ``paths``): the entries of the
  given paths (missing ones left out).

Entries are ``{"type": "file", "path", "size", "oid"}`` (git blob id) plus ``"lfs": {"oid":
sha256, "size", "pointerSize"}`` for ``.parquet`` files, or ``{"type": "directory", "path",
"oid"}``. :meth:`FakeHub.bytes_served` counts the body bytes sent per file, so a test can show
a client read only a footer.

Faults can be planted per file path and per request count (see :class:`Fault`), and every
request is recorded (method, path, headers) so a test can check what the client sent.
:meth:`FakeHub.set_header` replaces a response header of one file (a hostile ``X-Repo-Commit``
or ``ETag``), and :func:`echo_header` encodes an echoed ``Authorization`` header the ways a
careless server might (percent-encoded, base64, JSON-escaped ...).

Usable as a library (``with FakeHub(root) as hub: ...``) or as a script::

    python tests/hub_server.py --root DIR --port 0 [--repo-id org/name]

which prints the endpoint URL (use it as ``HF_ENDPOINT``) and serves until SIGINT/SIGTERM.
It binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, quote_plus, unquote, urlencode, urlsplit

FAKE_COMMIT = "5eed0000c0ffee00000000000000000000000001"
"""The 40-hex commit id the fake hub reports in ``X-Repo-Commit``."""

FAULT_KINDS = (
    "corrupt",
    "drop",
    "status500",
    "slow",
    "404",
    "401",
    "429",
    "redirect",
    "header",
)

ECHO_KINDS = (
    "raw",  # Bearer hf_abc
    "quote",  # urllib quote(safe=""): Bearer%20hf_abc ("_" is unreserved, stays)
    "quote_all",  # every non-alphanumeric byte: Bearer%20hf%5Fabc
    "quote_all_lower",  # the same with lower-case hex: Bearer%20hf%5fabc
    "quote_plus",  # Bearer+hf_abc
    "quote_every_byte",  # %42%65%61...
    "quote_twice",  # quote_all applied twice: Bearer%2520hf%255Fabc
    "basic",  # Basic base64("user:" + token), as in an Authorization: Basic header
    "b64_token",  # base64(token)
    "b64url_token",  # urlsafe base64(token) without padding
    "b64_header",  # base64 of the whole header value
    "json",  # JSON \u-escapes of every character: \u0042\u0065...
    "json_underscore",  # only "_" JSON-escaped: Bearer hf\u005fabc
)
"""How the ``401`` fault can echo the ``Authorization`` header (:func:`echo_header`)."""

_RESOLVE = re.compile(
    r"^/datasets/(?P<org>[^/]+)/(?P<name>[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"
)
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
_API = re.compile(
    r"^/api/datasets/(?P<org>[^/]+)/(?P<name>[^/]+)/(?P<what>revision|tree|paths-info)/"
    r"(?P<rev>[^/]+)(?:/(?P<path>.*))?$"
)


@dataclass
class Fault:
    """A misbehaviour planted on one file path.

    kind:
        ``corrupt``   serve a wrong body (same length) under the right headers;
        ``drop``      send the headers and half of the body, then close the connection;
        ``status500`` answer HTTP 500;
        ``slow``      wait ``delay_s`` before answering (set it above the client's timeout);
        ``404``       answer 404 ``EntryNotFound``, as the hub does for a missing file;
        ``401``       answer 401 and, deliberately hostile, echo the request's
                      ``Authorization`` header into the error message and body, so a test
                      can show the client scrubs secrets out of server messages; ``echo``
                      (one of :data:`ECHO_KINDS`) says how the header is encoded;
        ``429``       answer 429 Too Many Requests, with ``Retry-After: {retry_after}`` when
                      ``retry_after`` is set (any text, hostile values included);
        ``redirect``  answer 302 with ``Location: {location}{request path}`` (``location``
                      is another server's URL, e.g. a second :class:`FakeHub` standing in
                      for the hub's CDN); GET only unless ``method`` says otherwise;
        ``header``    answer normally, but with the response headers in ``headers``
                      (e.g. ``{"X-Repo-Commit": "../../x"}``) instead of the usual ones.
                      ``headers`` also replaces headers of a ``404`` fault's answer.
    times:
        applies to the first ``times`` matching requests; ``None`` means every one.
    skip:
        lets the first ``skip`` matching requests through untouched (to hit, say, only the
        client's second HEAD).
    method:
        ``"HEAD"`` or ``"GET"`` to match only that method; ``None`` matches both.
        ``corrupt``, ``drop`` and ``redirect`` only make sense for GET and default to it.
    """

    kind: str
    times: int | None = 1
    method: str | None = None
    delay_s: float = 2.0
    echo: str = "raw"
    retry_after: str | None = None
    location: str | None = None
    headers: dict[str, str] | None = None
    skip: int = 0
    used: int = field(default=0, init=False)
    seen: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.echo not in ECHO_KINDS:
            raise ValueError(f"unknown echo {self.echo!r}; expected one of {ECHO_KINDS}")
        if self.kind == "redirect" and not self.location:
            raise ValueError("a redirect fault needs location=<URL of the other server>")
        if self.method is None and self.kind in ("corrupt", "drop", "redirect"):
            self.method = "GET"

    def take(self, method: str) -> bool:
        """True (and count it) if this fault applies to a request with ``method``."""
        if self.method is not None and self.method != method:
            return False
        if self.seen < self.skip:
            self.seen += 1
            return False
        if self.times is not None and self.used >= self.times:
            return False
        self.used += 1
        return True


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # URL path, percent-decoded
    headers: dict[str, str]  # as received; keys in the client's spelling
    repo_path: str | None  # the file path inside the repo for resolve requests, else None

    def header(self, name: str) -> str | None:
        """Case-insensitive header lookup."""
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


class FakeHub:
    """Serve ``root`` as the dataset repo ``repo_id`` at revisions ``main`` and ``commit``."""

    def __init__(
        self,
        root: str | Path,
        *,
        repo_id: str = "tahoebio/Tahoe-100M",
        commit: str = FAKE_COMMIT,
        port: int = 0,
        api: bool = False,
        tree_page_size: int = 1000,
    ) -> None:
        self.root = Path(root).resolve()
        self.repo_id = repo_id
        self.commit = commit
        self._port = port
        self.api = api
        self.tree_page_size = tree_page_size
        self._served: dict[str, int] = {}
        self._lock = threading.Lock()
        self._faults: dict[str, list[Fault]] = {}
        self._requests: list[RecordedRequest] = []
        self._sha_cache: dict[tuple[str, int, int], str] = {}
        self._etags: dict[str, str] = {}
        self._headers: dict[str, dict[str, str]] = {}
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> FakeHub:
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", self._port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="fake-hub",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()  # wakes handlers sleeping in a ``slow`` fault
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeHub is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- faults and records --------------------------------------------------------------------

    def add_fault(
        self,
        path: str,
        kind: str,
        *,
        times: int | None = 1,
        method: str | None = None,
        delay_s: float = 2.0,
        echo: str = "raw",
        retry_after: str | None = None,
        location: str | None = None,
        headers: dict[str, str] | None = None,
        skip: int = 0,
    ) -> Fault:
        """Plant a fault on the repo file ``path`` (e.g. ``data/train-00000-of-03388.parquet``).

        Several faults on one path are tried in the order they were added; the first one that
        still applies to a request handles it.
        """
        fault = Fault(
            kind,
            times=times,
            method=method,
            delay_s=delay_s,
            echo=echo,
            retry_after=retry_after,
            location=location,
            headers=headers,
            skip=skip,
        )
        with self._lock:
            self._faults.setdefault(path, []).append(fault)
        return fault

    def set_etag(self, path: str, etag: str) -> None:
        """Report ``etag`` for ``path`` instead of its sha256.

        The hub sends the git blob id (a 40-hex sha1) for small files not stored in LFS.
        """
        with self._lock:
            self._etags[path] = etag

    def set_header(self, path: str, name: str, value: str) -> None:
        """Send ``name: value`` instead of the usual header (if any) when serving ``path``.

        For hostile metadata, e.g. an ``X-Repo-Commit`` or ``X-Linked-Etag`` of ``../../x``.
        Applies to successful HEAD and GET answers of that file.
        """
        with self._lock:
            self._headers.setdefault(path, {})[name] = value

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def bytes_served(self, path: str | None = None) -> int:
        """Body bytes sent for the repo file ``path`` (all files when None), ranges included."""
        with self._lock:
            if path is None:
                return sum(self._served.values())
            return self._served.get(path, 0)

    def reset_counts(self) -> None:
        """Forget the recorded requests and the bytes served."""
        with self._lock:
            self._requests.clear()
            self._served.clear()

    def requests_for(self, path: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded resolve requests for the repo file ``path`` (optionally one method only)."""
        return [
            r
            for r in self.requests
            if r.repo_path == path and (method is None or r.method == method)
        ]

    # -- internals used by the handler ---------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _take_fault(self, path: str, method: str) -> Fault | None:
        with self._lock:
            for fault in self._faults.get(path, []):
                if fault.take(method):
                    return fault
        return None

    def _file(self, repo_path: str) -> Path | None:
        candidate = (self.root / repo_path).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.is_file():
            return None
        return candidate

    def _entry(self, repo_path: str) -> dict[str, Any] | None:
        """The tree / paths-info entry of ``repo_path`` (None when it does not exist)."""
        candidate = (self.root / repo_path).resolve()
        if not candidate.is_relative_to(self.root) or not candidate.exists():
            return None
        rel = candidate.relative_to(self.root).as_posix()
        oid = hashlib.sha1(rel.encode()).hexdigest()  # noqa: S324 - a stand-in id, not security
        if candidate.is_dir():
            return {"type": "directory", "path": rel, "oid": oid}
        size = candidate.stat().st_size
        entry: dict[str, Any] = {"type": "file", "path": rel, "size": size, "oid": oid}
        if rel.endswith(".parquet"):
            entry["lfs"] = {"oid": self._sha256(candidate), "size": size, "pointerSize": 134}
        return entry

    def _sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            cached = self._sha_cache.get(key)
        if cached is not None:
            return cached
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        value = digest.hexdigest()
        with self._lock:
            self._sha_cache[key] = value
        return value


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub  # set on the per-server subclass
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output quiet; requests are recorded instead

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    # ------------------------------------------------------------------------------------------

    def _handle(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        match = _RESOLVE.match(path)
        repo_path = match["path"] if match else None
        self.hub._record(RecordedRequest(method, path, dict(self.headers.items()), repo_path))
        try:
            self._dispatch(method, path, match)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. after its timeout); nothing to answer

    def _dispatch(self, method: str, path: str, match: re.Match[str] | None) -> None:
        hub = self.hub
        if path.startswith("/api/"):
            api = _API.match(path) if hub.api else None
            if api is None:
                return self._error(method, 404, "NotFound", "the fake hub does not implement this")
            return self._api(method, api)
        if match is None:
            return self._error(method, 404, "NotFound", f"no route for {path}")
        if f"{match['org']}/{match['name']}" != hub.repo_id:
            return self._error(method, 404, "RepoNotFound", "Repository not found")
        if match["rev"] not in ("main", hub.commit):
            return self._error(method, 404, "RevisionNotFound", f"Invalid rev id: {match['rev']}")

        repo_path = match["path"]
        fault = hub._take_fault(repo_path, method)
        if fault is not None and fault.kind == "slow":
            if hub._stopping.wait(fault.delay_s):
                return
            fault = None  # after the delay, answer normally
        if fault is not None and fault.kind == "status500":
            return self._error(method, 500, None, "Internal Error (planted by the fake hub)")
        if fault is not None and fault.kind == "401":
            auth = echo_header(self.headers.get("Authorization", "<none>"), fault.echo)
            return self._error(method, 401, None, f"Invalid credentials: {auth}")
        if fault is not None and fault.kind == "429":
            extra = {} if fault.retry_after is None else {"Retry-After": fault.retry_after}
            return self._error(method, 429, None, "Too Many Requests", extra)
        if fault is not None and fault.kind == "redirect":
            self.send_response(302)
            self._repo_headers()
            self.send_header("Location", f"{fault.location}{quote(path)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None

        file = hub._file(repo_path)
        if file is None or (fault is not None and fault.kind == "404"):
            replace = fault.headers if fault is not None else None
            message = f"{repo_path} does not exist on main"
            return self._error(method, 404, "EntryNotFound", message, replace=replace)

        body = file.read_bytes()
        total = len(body)
        with hub._lock:
            sha = hub._etags.get(repo_path)
        sha = sha or hub._sha256(file)
        if fault is not None and fault.kind == "corrupt":
            body = bytes(b ^ 0xFF for b in body)  # same length, wrong bytes

        status, start, end = 200, 0, total - 1
        range_header = self.headers.get("Range")
        if range_header and total > 0:
            m = _RANGE.match(range_header.strip())
            if m is None or (m[1] == "" and m[2] == ""):
                return self._error(method, 416, None, f"bad range {range_header}")
            if m[1] == "":  # suffix range: the last N bytes
                start, end = max(total - int(m[2]), 0), total - 1
            else:
                start = int(m[1])
                end = min(int(m[2]), total - 1) if m[2] else total - 1
            if start > end or start >= total:
                return self._error(method, 416, None, f"unsatisfiable range {range_header}")
            status = 206
        part = body[start : end + 1]

        headers = {
            "X-Repo-Commit": hub.commit,
            "X-Request-Id": f"fake-{threading.get_ident()}",
            "Content-Type": "application/octet-stream",
            "Content-Length": str(len(part)),
            "Accept-Ranges": "bytes",
            "ETag": f'"{sha}"',
            "X-Linked-Etag": f'"{sha}"',
            "X-Linked-Size": str(total),
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{total}"
        with hub._lock:
            headers.update(hub._headers.get(repo_path, {}))
        if fault is not None and fault.kind == "header":
            headers.update(fault.headers or {})
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if fault is not None and fault.kind == "drop":
            self.send_header("Connection", "close")
        self.end_headers()
        if method == "HEAD":
            return
        if fault is not None and fault.kind == "drop":
            self._write(repo_path, part[: len(part) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._write(repo_path, part)

    def _write(self, repo_path: str, data: bytes) -> None:
        # counted before sending: a client that has read the bytes sees them counted
        with self.hub._lock:
            self.hub._served[repo_path] = self.hub._served.get(repo_path, 0) + len(data)
        self.wfile.write(data)

    # -- the API (FakeHub(api=True)) ------------------------------------------------------------

    def _api(self, method: str, m: re.Match[str]) -> None:
        hub = self.hub
        if f"{m['org']}/{m['name']}" != hub.repo_id:
            return self._error(method, 404, "RepoNotFound", "Repository not found")
        if m["rev"] not in ("main", hub.commit):
            return self._error(method, 404, "RevisionNotFound", f"Invalid rev id: {m['rev']}")
        if m["what"] == "revision":
            if method != "GET" or m["path"]:
                return self._error(method, 405, None, "method not allowed")
            files = [p.relative_to(hub.root).as_posix() for p in iter_tree(hub.root)]
            return self._json(
                {
                    "id": hub.repo_id,
                    "sha": hub.commit,
                    "private": False,
                    "siblings": [{"rfilename": f} for f in files],
                }
            )
        if m["what"] == "paths-info":
            if method != "POST":
                return self._error(method, 405, None, "method not allowed")
            length = int(self.headers.get("Content-Length") or 0)
            form = parse_qs(self.rfile.read(length).decode()) if length else {}
            entries = [hub._entry(p) for p in form.get("paths", [])]
            return self._json([e for e in entries if e is not None])
        # tree
        if method != "GET":
            return self._error(method, 405, None, "method not allowed")
        query = parse_qs(urlsplit(self.path).query)
        folder = (m["path"] or "").strip("/")
        base = (hub.root / folder).resolve()
        if not base.is_relative_to(hub.root) or not base.is_dir():
            return self._error(method, 404, "EntryNotFound", f"{folder} does not exist on main")
        recursive = query.get("recursive", ["False"])[0].lower() == "true"
        found = base.rglob("*") if recursive else base.iterdir()
        paths = sorted(p.relative_to(hub.root).as_posix() for p in found)
        entries = [e for e in map(hub._entry, paths) if e is not None]
        cursor = int(query.get("cursor", ["0"])[0])
        page = entries[cursor : cursor + hub.tree_page_size]
        extra = {}
        if cursor + hub.tree_page_size < len(entries):
            nxt = f"{hub.url}{urlsplit(self.path).path}?" + urlencode(
                {**{k: v[0] for k, v in query.items()}, "cursor": cursor + hub.tree_page_size}
            )
            extra["Link"] = f'<{nxt}>; rel="next"'
        return self._json(page, extra)

    def _json(self, payload: object, extra: dict[str, str] | None = None) -> None:
        body = json.dumps(payload).encode()
        self.send_response(200)
        self._repo_headers()
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _repo_headers(self, replace: dict[str, str] | None = None) -> None:
        headers = {
            "X-Repo-Commit": self.hub.commit,
            "X-Request-Id": f"fake-{threading.get_ident()}",
        }
        headers.update(replace or {})
        for name, value in headers.items():
            self.send_header(name, value)

    def _error(
        self,
        method: str,
        status: int,
        code: str | None,
        message: str,
        extra: dict[str, str] | None = None,
        replace: dict[str, str] | None = None,
    ) -> None:
        payload = json.dumps({"error": message}).encode()
        self.send_response(status)
        self._repo_headers(replace)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        if code is not None:
            self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(payload)


def echo_header(value: str, how: str) -> str:
    """``value`` (an ``Authorization`` header, ``Bearer <token>``) encoded as ``how`` says.

    See :data:`ECHO_KINDS`. The base64 kinds encode the token (the part after the first
    space) or, for ``b64_header``, the whole value.
    """
    token = value.split(" ", 1)[-1]

    def every_non_alnum(text: str, upper: bool) -> str:
        return "".join(
            c if c.isascii() and c.isalnum() else f"%{ord(c):02X}" if upper else f"%{ord(c):02x}"
            for c in text
        )

    encoders = {
        "raw": lambda: value,
        "quote": lambda: quote(value, safe=""),
        "quote_all": lambda: every_non_alnum(value, True),
        "quote_all_lower": lambda: every_non_alnum(value, False),
        "quote_plus": lambda: quote_plus(value),
        "quote_every_byte": lambda: "".join(f"%{b:02x}" for b in value.encode()),
        "quote_twice": lambda: quote(every_non_alnum(value, True), safe=""),
        "basic": lambda: "Basic " + base64.b64encode(f"user:{token}".encode()).decode(),
        "b64_token": lambda: base64.b64encode(token.encode()).decode(),
        "b64url_token": lambda: base64.urlsafe_b64encode(token.encode()).decode().rstrip("="),
        "b64_header": lambda: base64.b64encode(value.encode()).decode(),
        "json": lambda: "".join(f"\\u{ord(c):04x}" for c in value),
        "json_underscore": lambda: value.replace("_", "\\u005f"),
    }
    if how not in encoders:
        raise ValueError(f"unknown echo {how!r}; expected one of {ECHO_KINDS}")
    return encoders[how]()


def iter_tree(root: str | Path) -> Iterator[Path]:
    """Every regular file below ``root`` (sorted), handy for assertions over a whole folder."""
    yield from sorted(p for p in Path(root).rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", required=True, type=Path, help="folder served as the repo")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--repo-id", default="tahoebio/Tahoe-100M")
    args = parser.parse_args(argv)
    hub = FakeHub(args.root, repo_id=args.repo_id, port=args.port).start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    print(hub.url, flush=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        hub.stop()


if __name__ == "__main__":
    main()
