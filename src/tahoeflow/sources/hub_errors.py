"""How a failed download is judged and told: transient or final (HTTP status, Retry-After, the
exception chain), the back-off before the next try, and one line describing it with every
secret scrubbed."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import httpx2
from huggingface_hub.errors import HfHubHTTPError

from tahoeflow.logs import known_secrets, redact

MAX_BACKOFF_S = 120.0
MAX_RETRY_AFTER_S = 600.0


class Refused(OSError):
    """The hub's answer is unusable or unsafe (reported as a non-retryable error)."""


# -- error classification --------------------------------------------------------------------


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        todo += [e.__cause__, e.__context__]


def _response(exc: BaseException) -> httpx2.Response | None:
    for e in _chain(exc):
        if isinstance(e, (HfHubHTTPError, httpx2.HTTPStatusError)):
            return e.response
    return None


def http_status(exc: BaseException) -> int | None:
    response = _response(exc)
    return None if response is None else response.status_code


def is_transient(exc: BaseException) -> bool:
    status = http_status(exc)
    if status is not None:
        return status >= 500 or status in (408, 429)
    for e in _chain(exc):
        if isinstance(
            e, (httpx2.TimeoutException, httpx2.NetworkError, httpx2.RemoteProtocolError)
        ):
            return True
        if isinstance(e, OSError) and "Consistency check failed" in str(e):
            return True  # a body shorter/longer than announced: a broken transfer
    return False


def retry_after(exc: BaseException) -> float | None:
    response = _response(exc)
    if response is None:
        return None
    value = response.headers.get("Retry-After")
    try:
        return min(float(value), MAX_RETRY_AFTER_S) if value is not None else None
    except ValueError:
        return None  # an HTTP date; the exponential backoff is used instead


def backoff_delay(backoff_s: float, n: int, retry_after: float | None) -> float:
    delay = min(backoff_s * 2 ** (n - 1), MAX_BACKOFF_S) * (1 + 0.25 * random.random())
    return max(delay, retry_after or 0.0)


def describe(
    exc: BaseException, status: int | None, timeout_s: float, clean: Callable[[str], str]
) -> str:
    """One line for ``exc``. ``clean`` masks secrets in text from the server or the library; it
    is applied before anything is shortened, so no cut can leave a piece of a secret behind."""
    for e in _chain(exc):
        if isinstance(e, Refused):
            return _one_line(clean(str(e)))[:300]
    if status is not None:
        response = _response(exc)
        code = response.headers.get("X-Error-Code") if response is not None else None
        server = response.headers.get("X-Error-Message") if response is not None else None
        text = f"HTTP {status}"
        if code:
            text += f" ({code})"
        if status == 404:
            text += ": no such file, revision or repo on the hub"
        elif status in (401, 403):
            text += ": not authorised (check HF_TOKEN and that the repo is accessible)"
        if server:
            text += f"; server says: {_one_line(clean(server))[:200]}"
        return text
    for e in _chain(exc):
        if isinstance(e, httpx2.TimeoutException):
            return f"timed out (timeout_s={timeout_s:g}; {type(e).__name__})"
        if isinstance(e, (httpx2.NetworkError, httpx2.RemoteProtocolError)):
            return f"connection problem ({type(e).__name__}: {_first_line(e, clean)})"
    return f"{type(exc).__name__}: {_first_line(exc, clean)}"


def _first_line(exc: BaseException, clean: Callable[[str], str]) -> str:
    text = clean(str(exc)).strip()
    return (text.splitlines()[0] if text else "")[:300]


def _one_line(text: str) -> str:
    """``text`` on one line, without control characters (a server's text must not be able to
    start a fake log line or send terminal escape sequences)."""
    return "".join(c if c.isprintable() else " " for c in text).strip()


# -- secrets -----------------------------------------------------------------------------------


def secrets_of(token: str | None) -> list[str]:
    """Every token value the client could send, longest first (for scrubbing only)."""
    return known_secrets(token)


def scrub(text: str, secrets: list[str]) -> str:
    """Mask ``secrets`` in every encoding, and anything token-shaped (:func:`logs.redact`)."""
    return redact(text, secrets)


def fmt_bytes(n: int) -> str:
    return f"{n:,} bytes"
