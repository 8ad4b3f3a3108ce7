"""Logging for workflow scripts: timestamped phases with elapsed time, and one-line errors.

Everything written here (log lines, the ``ERROR:`` line, tracebacks) passes through
:func:`redact` first, which masks the hub token in every encoding a server or a library might
echo it in (see :func:`redact`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TextIO

from tahoeflow.errors import ArgumentError, ConfigError, InputError

REDACTED = "<redacted>"
TOKEN_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")

# Last resort: anything shaped like a Hugging Face token ("hf_" + 34 letters/digits), also
# with the "_" or the characters after it percent-encoded (any number of times) or
# JSON/Python-escaped. 16+ characters, so identifiers such as hf_hub_download stay.
_ENC_CHAR = r"(?:%(?:25)*[0-9A-Fa-f]{2}|\\u00[0-9A-Fa-f]{2}|\\x[0-9A-Fa-f]{2})"
_HF_TOKEN_LIKE = re.compile(
    rf"(?i:hf)(?:_|%(?:25)*5[fF]|\\u005[fF]|\\x5[fF])(?:[A-Za-z0-9]|{_ENC_CHAR}){{16,}}"
)
_B64_RUN = re.compile(r"[A-Za-z0-9+/_-]{16,}={0,2}")
_URLSAFE = str.maketrans("-_", "+/")
_HF_TOKEN_BYTES = re.compile(rb"hf_[A-Za-z0-9]{16,}")


def known_secrets(*extra: str | None) -> list[str]:
    """The token values this process could send to the hub (for masking only), longest first.

    ``extra`` (e.g. an explicit ``token=`` argument), ``HF_TOKEN``,
    ``HUGGING_FACE_HUB_TOKEN`` and, when ``huggingface_hub`` is already imported, its stored
    login. Values shorter than 4 characters are ignored (they would mask ordinary text).
    """
    found = {*extra, *(os.environ.get(name) for name in TOKEN_ENV_VARS), _stored_token()}
    values = {s.strip() for s in found if s and len(s.strip()) >= 4}
    return sorted(values, key=len, reverse=True)


def _stored_token() -> str | None:
    if "huggingface_hub" not in sys.modules:
        return None  # not imported: no stored login can be in use by this process
    with contextlib.suppress(Exception):
        from huggingface_hub import get_token

        return get_token()
    return None


@functools.lru_cache(maxsize=32)
def _secret_pattern(secret: str) -> re.Pattern[str]:
    """``secret`` with each character literal, percent-encoded (either case, any number of
    times: %5F, %5f, %255F), JSON/Python-escaped (\\u005f, \\x5f) or an HTML entity; a space
    also as "+" (``quote_plus``)."""
    parts = []
    for ch in secret:
        code = ord(ch)
        alts = [re.escape(ch), rf"\\u{code:04x}", rf"&#0*{code};", rf"&#x0*{code:x};"]
        if code < 256:
            alts += [rf"%(?:25)*{code:02x}", rf"\\x{code:02x}"]
        if ch == " ":
            alts.append(r"\+")
        parts.append("(?:" + "|".join(alts) + ")")
    return re.compile("".join(parts), re.IGNORECASE)


def _b64_hides(run: str, needles: list[bytes]) -> bool:
    """Whether the base64 (standard or URL-safe) text ``run`` decodes to bytes holding a
    needle or anything token-shaped. Tried from each of the 4 possible starting offsets."""
    core = run.rstrip("=").translate(_URLSAFE)
    for offset in range(4):
        piece = core[offset:]
        if len(piece) % 4 == 1:
            piece = piece[:-1]
        try:
            raw = base64.b64decode(piece + "=" * (-len(piece) % 4))
        except (binascii.Error, ValueError):
            continue
        if any(n in raw for n in needles) or _HF_TOKEN_BYTES.search(raw):
            return True
    return False


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with every hub token masked as ``<redacted>``.

    ``secrets`` defaults to :func:`known_secrets`. Masked forms of each secret: literal;
    each character percent-encoded or not (``quote``, ``quote_plus``, upper/lower-case hex,
    encoded twice), JSON/Python ``\\u``/``\\x`` escapes, HTML entities; base64 (standard or
    URL-safe, padded or not) of the token, of ``user:token`` or of a whole header: a base64
    run that decodes to bytes holding the token (or either half of it) is masked whole.
    Last resort: anything token-shaped (``hf_`` + 16 or more letters/digits, also encoded).
    """
    secrets = known_secrets() if secrets is None else [s for s in secrets if s]
    for secret in secrets:
        text = _secret_pattern(secret).sub(REDACTED, text)
    text = _HF_TOKEN_LIKE.sub(REDACTED, text)
    needles = []
    for secret in secrets:
        raw = secret.encode()
        needles.append(raw)
        if len(raw) >= 16:
            needles += [raw[: len(raw) // 2], raw[len(raw) // 2 :]]
    return _B64_RUN.sub(lambda m: REDACTED if _b64_hides(m[0], needles) else m[0], text)


class JobLog:
    """Writes ``[  12.3s] message`` lines to the job's log file (and nothing else anywhere).

    Every message is passed through :func:`redact` first.
    """

    def __init__(self, path: str | Path | None) -> None:
        self.t0 = time.perf_counter()
        self._fh: TextIO | None = None
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(path, "w", buffering=1)  # noqa: SIM115 - closed in close()

    def __call__(self, message: str) -> None:
        line = f"[{time.perf_counter() - self.t0:8.2f}s] {redact(message)}"
        if self._fh is not None:
            self._fh.write(line + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def run(main: Callable[[Any, JobLog], None], smk: Any) -> None:
    """Run a script's ``main(snakemake, log)``; bad input ends the job with one clear line.

    An :class:`InputError`, :class:`ConfigError` or :class:`ArgumentError` is written as ``ERROR: <message>`` to the log
    and to stderr, and the job exits with status 1 (Snakemake then removes its outputs). Any
    other exception keeps its traceback in the log and is re-raised; except when its traceback
    holds a secret (see :func:`redact`): then the masked traceback goes to stderr instead and
    the job exits with status 1, so the secret reaches neither the log nor the console.
    """
    log = JobLog(smk.log[0] if len(smk.log) else None)
    try:
        main(smk, log)
        log("done")
    except (InputError, ConfigError, ArgumentError) as e:
        log(f"ERROR: {e}")
        # one write of the whole line: jobs running side by side share Snakemake's stderr, and
        # print() writes the text and the newline separately (lines could interleave)
        line = f"ERROR: {redact(str(e))}\n"
        sys.stderr.flush()
        try:
            os.write(sys.stderr.fileno(), line.encode(errors="replace"))
        except (AttributeError, OSError, ValueError):  # a replaced stderr (tests, notebooks)
            sys.stderr.write(line)
        log.close()
        sys.exit(1)
    except BaseException as e:
        shown = traceback.format_exc()
        masked = redact(shown)
        log("ERROR: unexpected failure\n" + masked)
        log.close()
        if masked == shown or not isinstance(e, Exception):
            raise
        # the exception itself carries a secret: re-raising would print it (Snakemake or the
        # interpreter shows the traceback), so show the masked traceback and exit instead
        sys.stderr.write(masked)
        sys.stderr.flush()
        sys.exit(1)
    log.close()
