"""Security and output hygiene (issue 12): secrets in every encoding, CSV formula injection,
strict JSON, and hostile behaviour of the hub (against the loopback fake, tests/hub_server.py).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import runpy
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest
from hub_server import ECHO_KINDS, FakeHub, echo_header, iter_tree

from tahoeflow import io as tio
from tahoeflow import logs
from tahoeflow.sources.hub import DEFAULT_REPO, HubError, data_filename, fetch_file

pytest_plugins = ["conftest_hub"]  # the ``fake_hub`` fixture

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "workflow" / "scripts" / "download.py"
SHARD = data_filename(5)
TOKEN = "hf_PLANTEDsecret" + "Q7x" + "0123456789abcdefZ"  # 36 characters, like a real one


# -- a leak detector independent of the scrubber -------------------------------------------


def _b64_cores(secret: str) -> set[str]:
    """Pieces of base64 that appear whenever ``secret`` is base64-encoded after any prefix.

    Bytes of a 3-byte group wholly inside the secret encode the same way whatever precedes
    them (given the alignment), so for each of the 3 alignments the encoding minus its first
    and last 4-character blocks is a fixed substring; also its URL-safe spelling.
    """
    cores = set()
    for k in range(3):
        enc = base64.b64encode(b"\0" * k + secret.encode()).decode()
        core = enc[4:-4]
        cores |= {core, core.replace("+", "-").replace("/", "_")}
    return cores


def leaks(text: str, secret: str = TOKEN) -> list[str]:
    """How ``secret`` shows in ``text``: literal, any 12-character piece, percent/JSON/base64."""
    found = []
    body = secret[3:]  # the part after "hf_"
    pieces = [body[i : i + 12] for i in range(len(body) - 11)]
    if any(piece in text for piece in pieces):
        found.append("literal piece")
    for kind in ECHO_KINDS:
        if kind.startswith(("b64", "basic")):
            continue
        # these encodings work character by character, so a piece encodes on its own
        for form in [echo_header(secret, kind)] + [echo_header(p, kind) for p in pieces]:
            if form in text or form.lower() in text.lower():
                found.append(kind)
                break
    if any(core in text for core in _b64_cores(secret)):
        found.append("base64")
    return found


def test_leak_detector_sees_every_echo_kind() -> None:
    for kind in ECHO_KINDS:
        assert leaks(f"xx {echo_header('Bearer ' + TOKEN, kind)} yy"), kind
    assert leaks(TOKEN[:20]) and not leaks("nothing to see hf_hub_download")


# -- case 1: the token in every encoding, in the console and the log --------------------------


def _plant(hub: FakeHub, name: str = SHARD, size: int = 20_000) -> bytes:
    data = os.urandom(size)
    path = hub.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _run_download(tmp_path: Path, name: str, **params) -> tuple[Path, Path]:
    out = tmp_path / "results" / Path(name).name
    log = tmp_path / "logs" / "download.log"
    smk = SimpleNamespace(
        params=SimpleNamespace(
            repo_id=DEFAULT_REPO,
            revision=params.pop("revision", "main"),
            filename=name,
            cache_dir=str(tmp_path / "cache"),
            max_retries=params.pop("max_retries", 1),
            timeout_s=params.pop("timeout_s", 5),
        ),
        output=[str(out)],
        log=[str(log)],
    )
    runpy.run_path(str(SCRIPT), init_globals={"snakemake": smk})
    return out, log


@pytest.mark.parametrize("echo", ECHO_KINDS)
def test_echoed_token_scrubbed_in_every_encoding(
    fake_hub: FakeHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    echo: str,
) -> None:
    """A hostile 401 echoes ``Authorization: Bearer <token>`` encoded as ``echo``."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    _plant(fake_hub)
    fake_hub.add_fault(SHARD, "401", times=None, echo=echo)
    with pytest.raises(SystemExit) as info:
        _run_download(tmp_path, SHARD)
    assert info.value.code == 1
    sent = fake_hub.requests_for(SHARD)
    assert sent and sent[0].header("Authorization") == f"Bearer {TOKEN}"
    out = capfd.readouterr()
    log = (tmp_path / "logs" / "download.log").read_text()
    # the error still says what happened, and that the server said something
    assert f"ERROR: {SHARD}" in out.err and "HTTP 401" in out.err and "server says" in out.err
    assert "HTTP 401" in log
    for where, text in (("stderr", out.err), ("stdout", out.out), ("log", log)):
        assert leaks(text) == [], f"token leaked to {where} as {leaks(text)}: {text[-400:]}"
    for path in iter_tree(tmp_path):
        assert leaks(path.read_bytes().decode(errors="replace")) == [], path


def test_hub_error_scrubs_every_encoding_at_once(fake_hub: FakeHub, tmp_path: Path) -> None:
    """The explicit ``token=`` argument is scrubbed too, from HubError and from ``log``."""
    _plant(fake_hub)
    for echo in ECHO_KINDS:
        fake_hub.clear_faults()
        fake_hub.add_fault(SHARD, "401", times=None, echo=echo)
        lines: list[str] = []
        with pytest.raises(HubError) as info:
            fetch_file(
                DEFAULT_REPO,
                SHARD,
                "main",
                tmp_path / echo / "x.parquet",
                cache_dir=tmp_path / "cache",
                token=TOKEN,
                log=lines.append,
                max_retries=0,
            )
        err = info.value
        assert err.status == 401 and "<redacted>" in str(err), (echo, str(err))
        assert leaks(str(err) + repr(err) + err.problem + "\n".join(lines)) == [], echo


def test_last_resort_scrubs_unknown_hf_tokens(tmp_path: Path) -> None:
    """A token the process does not know (not the one it was given) is still masked."""
    other = "hf_" + "Zq81" * 9
    text = logs.redact(f"a {other} b hf%5F{other[3:]} c hf\\u005f{other[3:]} d hf_hub_download")
    assert leaks(text, other) == []
    assert text.endswith(" d hf_hub_download") and text.startswith("a ")
    # ordinary log text is left exactly as it is, with a token known
    sha = hashlib.sha256(b"x").hexdigest()
    for line in (
        f"data/train-00005-of-03388.parquet: 20,000 bytes, expected sha {sha}, commit main",
        f"{tmp_path}/results/shards/00005/cells.parquet (hardlink), 0.14 s in all",
        "cell ids AAACCCAAGTGGTGAC-1_01_001-lib_1105 HF_HUB_DISABLE_XET=1 dXNlcjpwYXNz",
    ):
        assert logs.redact(line, [TOKEN]) == line
    log = logs.JobLog(tmp_path / "x.log")
    log(f"header was Bearer {other}")
    log.close()
    assert other not in (tmp_path / "x.log").read_text()


# -- case 2: CSV formula injection -------------------------------------------------------------

HOSTILE = ["=cmd|' /C calc'!A0", "+1", "-x", "@SUM(1)", "\tTAB", "\rCR", "plain", "a=b"]
NEUTRAL = ["'=cmd|' /C calc'!A0", "'+1", "'-x", "'@SUM(1)", "'\tTAB", "'\rCR", "plain", "a=b"]


def _csv_cells(path: Path) -> list[list[str]]:
    """The raw text cells, read with Arrow (which, unlike pandas' C parser, keeps a bare
    carriage return inside a cell) or the csv module."""
    import csv

    with path.open(newline="") as fh:
        return list(csv.reader(fh))


def test_csv_text_cells_neutralised_numbers_untouched(tmp_path: Path) -> None:
    df = pd.DataFrame(
        {
            "drug": HOSTILE,
            "value": [-1.5, 2.0, -3.0, 4.0, 5.0, -6.25, 7.0, 8.0],
            "count": np.arange(-4, 4),
            "line": pd.Categorical(["-x", "ok"] * 4),
            "mixed": [-1.5, "=1", 3, None, "ok", "+", 0, "-"],
        }
    )
    before = df.copy()
    path = tmp_path / "t.csv"
    tio.write_csv(df, path)
    pd.testing.assert_frame_equal(df, before)  # the caller's frame is not modified
    rows = _csv_cells(path)
    assert rows[0] == ["drug", "value", "count", "line", "mixed"]
    body = rows[1:]
    assert [r[0] for r in body] == NEUTRAL
    assert [r[1] for r in body] == ["-1.5", "2.0", "-3.0", "4.0", "5.0", "-6.25", "7.0", "8.0"]
    assert [r[2] for r in body] == ["-4", "-3", "-2", "-1", "0", "1", "2", "3"]
    assert [r[3] for r in body] == ["'-x", "ok"] * 4
    assert [r[4] for r in body] == ["-1.5", "'=1", "3", "", "ok", "'+", "0", "'-"]
    back = pd.read_csv(path)
    assert back["value"].tolist() == df["value"].tolist()  # numbers read back exactly


def test_csv_labels_and_index_neutralised(tmp_path: Path) -> None:
    """A confusion matrix: class labels (from the hub) in the header and the index."""
    labels = ["=HYPERLINK(1)", "@x", "ok"]
    df = pd.DataFrame(np.eye(3, dtype=np.int64) - 1, index=labels, columns=labels)
    path = tmp_path / "confusion.csv"
    tio.write_csv(df, path, index=True)
    rows = _csv_cells(path)
    assert rows[0] == ["", "'=HYPERLINK(1)", "'@x", "ok"]
    assert [r[0] for r in rows[1:]] == ["'=HYPERLINK(1)", "'@x", "ok"]
    assert rows[1][1:] == ["0", "-1", "-1"]


def test_csv_table_neutralised_parquet_exact(tmp_path: Path) -> None:
    """The Arrow writer (embeddings.csv) neutralises text; the Parquet copy stays exact."""
    n = len(HOSTILE)
    table = pa.table(
        {
            "pc1": pa.array(np.linspace(-1.5, 2.0, n), pa.float32()),
            "cell_id": HOSTILE,
            "drug": pa.array(HOSTILE[::-1]).dictionary_encode(),
            "cluster": pa.array(np.arange(-2, n - 2), pa.int32()),
            "=name": pa.array([None] * (n - 1) + ["-y"], pa.large_string()),
        }
    )
    tio.write_csv_table(table, tmp_path / "e.csv")
    back = pcsv.read_csv(
        tmp_path / "e.csv",
        convert_options=pcsv.ConvertOptions(
            column_types={"cell_id": pa.string(), "drug": pa.string(), "'=name": pa.string()},
            strings_can_be_null=True,
        ),
    )
    assert back.column_names == ["pc1", "cell_id", "drug", "cluster", "'=name"]
    assert back["cell_id"].to_pylist() == NEUTRAL
    assert back["drug"].to_pylist() == NEUTRAL[::-1]
    assert back["'=name"].to_pylist() == [None] * (n - 1) + ["'-y"]
    assert back["pc1"].to_pylist()[0] == -1.5 and back["cluster"].to_pylist()[0] == -2
    assert np.array_equal(
        back["pc1"].to_numpy().astype(np.float32), table["pc1"].to_numpy(), equal_nan=True
    )
    tio.write_parquet(table, tmp_path / "e.parquet")
    assert pq.read_table(tmp_path / "e.parquet").equals(table)


def _calls_outside_io(pattern: str) -> list[str]:
    """``path:line`` of every ``pattern`` match in src/ and workflow/ outside io.py."""
    import re

    hits = []
    rx = re.compile(pattern)
    for folder in ("src", "workflow"):
        for path in sorted((REPO_ROOT / folder).rglob("*.py")):
            if path.name == "io.py" and path.parent.name == "tahoeflow":
                continue
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if rx.search(line):
                    hits.append(f"{path.relative_to(REPO_ROOT)}:{n}")
    return hits


# Machine-read TSVs that the workflow itself parses back (never meant for a spreadsheet):
# neutralising would change their values (the manifest's "-" marks an empty file).
MACHINE_TSV = {"src/tahoeflow/sources/manifest.py"}


def test_every_csv_goes_through_io() -> None:
    writers = r"\.to_csv\(|csv\.writer\(|DictWriter\(|savetxt\(|csv\.write_csv\("
    hits = [h for h in _calls_outside_io(writers) if h.split(":")[0] not in MACHINE_TSV]
    assert hits == []


# -- case 3: strict JSON -----------------------------------------------------------------------


def _strict(text: str) -> object:
    def refuse(name: str) -> object:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_json_non_finite_become_null(tmp_path: Path) -> None:
    obj = {
        "nan": float("nan"),
        "inf": math.inf,
        "np": [np.float32("nan"), np.float64("-inf"), np.float64(1.5), np.int64(-3)],
        "nested": {"deep": [{"x": (float("nan"), 2.0)}], "arr": np.array([[1.0, np.nan]])},
        "ints": np.array([1, 2]),
        "ok": -0.25,
    }
    tio.write_json(obj, tmp_path / "m.json")
    back = _strict((tmp_path / "m.json").read_text())
    assert back == {
        "nan": None,
        "inf": None,
        "np": [None, None, 1.5, -3],
        "nested": {"deep": [{"x": [None, 2.0]}], "arr": [[1.0, None]]},
        "ints": [1, 2],
        "ok": -0.25,
    }
    compact = tmp_path / "c.json"
    tio.write_json([math.nan], compact, indent=None, separators=(",", ":"))
    assert compact.read_text() == "[null]\n"


def test_detection_json_with_nan_threshold_is_strict(tmp_path: Path) -> None:
    """results/updown/detection.json: a feature that separates nothing has threshold NaN."""
    from tahoeflow.de.updown import detect_deterministic_target

    df = pd.DataFrame({"logFC": [-2.0, -1.0, 1.0, 2.0], "B": [0.5, 3.0, 0.1, 2.0]})
    det = detect_deterministic_target(df, ["logFC", "B"])
    assert math.isnan(det["per_feature"].set_index("feature").loc["B", "threshold"])
    det = dict(det)
    det["per_feature"] = det["per_feature"].to_dict(orient="records")  # as the script does
    tio.write_json(det, tmp_path / "detection.json")
    back = _strict((tmp_path / "detection.json").read_text())
    by = {r["feature"]: r for r in back["per_feature"]}
    assert by["B"]["threshold"] is None and by["logFC"]["threshold"] == 0.0


def test_no_json_written_outside_io() -> None:
    assert _calls_outside_io(r"json\.dumps?\(") == []


# -- extra cases: a hostile or broken hub ------------------------------------------------------


def _fetch(tmp_path: Path, name: str = SHARD, **kw) -> tuple[Path, list[str]]:
    lines: list[str] = []
    kw.setdefault("max_retries", 2)
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    dest = tmp_path / "out" / Path(name).name
    fetch_file(
        DEFAULT_REPO,
        name,
        kw.pop("revision", "main"),
        dest,
        cache_dir=tmp_path / "cache",
        log=lines.append,
        **kw,
    )
    return dest, lines


def _fetch_fails(tmp_path: Path, name: str = SHARD, **kw) -> HubError:
    with pytest.raises(HubError) as info:
        _fetch(tmp_path, name, **kw)
    out = tmp_path / "out"
    assert not out.exists() or list(out.iterdir()) == [], "partial or temporary file left"
    return info.value


def _files_outside(root: Path, inside: list[Path]) -> list[str]:
    """Files below ``root`` that are not below any of ``inside``."""
    return [
        str(p.relative_to(root))
        for p in iter_tree(root)
        if not any(p.is_relative_to(folder) for folder in inside)
    ]


@pytest.mark.parametrize(
    "fault",
    [
        # the client library's own HEAD (the second one) names the blob "../../../../x"
        dict(kind="header", skip=1, headers={"X-Linked-Etag": '"../../../../../escaped_blob"'}),
        # ... or the snapshot folder
        dict(kind="header", skip=1, headers={"X-Repo-Commit": "../../../escaped_commit"}),
        # a 404 whose commit header would name the ".no_exist" marker folder
        dict(kind="404", skip=1, headers={"X-Repo-Commit": "../../../../escaped_404"}),
        # every HEAD sends a commit id that is a path
        dict(kind="header", times=None, headers={"X-Repo-Commit": "../../../../escaped_c1"}),
    ],
    ids=["etag-2nd-head", "commit-2nd-head", "404-commit", "commit-every-head"],
)
def test_hub_metadata_cannot_write_outside_the_cache(
    fake_hub: FakeHub, tmp_path: Path, fault: dict
) -> None:
    """The hub's etag and commit id become cache paths; ``../`` in them is refused."""
    _plant(fake_hub)
    fake_hub.add_fault(SHARD, method="HEAD", **fault)
    work = tmp_path / "work"
    err = _fetch_fails(work)
    assert not err.transient and err.attempts == 1
    assert "the hub" in err.problem and "escaped" in err.problem  # says what was refused
    assert _files_outside(tmp_path, [work / "cache", fake_hub.root]) == []
    assert not any("escaped" in str(p) for p in iter_tree(tmp_path))


@pytest.mark.parametrize("retry_after", ["100000", "1e9", "nan", "-5", "inf"])
def test_429_storm_bounded_by_max_retries(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, retry_after: str
) -> None:
    """A 429 on every GET with a hostile Retry-After: max_retries + 1 GETs in all, every
    sleep finite and at most 600 s (the client library alone would sleep 100001 s, 5 times
    per attempt)."""
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    _plant(fake_hub)
    fake_hub.add_fault(SHARD, "429", times=None, method="GET", retry_after=retry_after)
    err = _fetch_fails(tmp_path, max_retries=2)
    assert err.status == 429 and err.transient and err.attempts == 3
    assert len(fake_hub.requests_for(SHARD, "GET")) == 3
    assert len(sleeps) == 2 and all(0 <= s <= 600 and math.isfinite(s) for s in sleeps), sleeps


def test_dropped_body_forever_bounded_no_partial_file(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every GET breaks off half-way: max_retries + 1 GETs (the library alone retried each
    attempt 5 more times, sleeping 1 s each), and no partial file anywhere."""
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    _plant(fake_hub)
    fake_hub.add_fault(SHARD, "drop", times=None)
    err = _fetch_fails(tmp_path, max_retries=2)
    assert err.transient and err.attempts == 3 and err.status is None
    assert "broke off" in err.problem or "connection problem" in err.problem
    assert len(fake_hub.requests_for(SHARD, "GET")) == 3
    assert len(sleeps) == 2
    leftovers = [p.name for p in iter_tree(tmp_path / "cache") if p.suffix != ".lock"]
    assert leftovers == ["CACHEDIR.TAG"], leftovers  # no blob, no .incomplete


def test_body_resumed_after_progress_within_bound(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body that breaks off after some bytes is resumed from them (Range), but at most
    max_retries times per attempt; then a fresh attempt."""
    from huggingface_hub import constants

    monkeypatch.setattr(time, "sleep", lambda s: None)
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1000)
    source = _plant(fake_hub, size=8000)
    fake_hub.add_fault(SHARD, "drop", times=1)
    dest, _ = _fetch(tmp_path, max_retries=2)
    assert dest.read_bytes() == source
    gets = fake_hub.requests_for(SHARD, "GET")
    assert [r.header("Range") for r in gets] == [None, "bytes=4000-"]  # kept the first half

    fake_hub.clear_faults()
    fake_hub.add_fault(SHARD, "drop", times=None)
    n0 = len(fake_hub.requests_for(SHARD, "GET"))
    err = _fetch_fails(tmp_path / "again", max_retries=2)
    gets = fake_hub.requests_for(SHARD, "GET")[n0:]
    # each of the 3 attempts: one GET from 0 and at most 2 resumes with progress
    assert err.attempts == 3 and len(gets) <= 9
    assert sum(r.header("Range") is None for r in gets) == 3


def test_redirect_to_another_host_gets_no_token(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub sends LFS bodies from a CDN host (302): the token must not follow."""
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    source = _plant(fake_hub)
    with FakeHub(fake_hub.root) as cdn:
        fake_hub.add_fault(SHARD, "redirect", times=None, location=cdn.url)
        dest, lines = _fetch(tmp_path)
        cdn_gets = cdn.requests_for(SHARD, "GET")
    assert dest.read_bytes() == source
    assert len(cdn_gets) == 1 and cdn_gets[0].header("Authorization") is None
    assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in fake_hub.requests)
    assert leaks("\n".join(lines)) == []


def test_token_in_unexpected_traceback_is_masked(
    fake_hub: FakeHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """A library bug raises an exception whose text holds the Authorization header: the job
    fails with the traceback (type and place kept), the token masked in log and console."""
    import tahoeflow.sources.hub as hub_module

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    _plant(fake_hub)
    real = hub_module.get_hf_file_metadata

    def buggy(url, **kw):
        real(url, **kw)  # talks to the fake hub, with the token
        raise TypeError(f"cannot merge headers {{'authorization': 'Bearer {TOKEN}'}}")

    monkeypatch.setattr(hub_module, "get_hf_file_metadata", buggy)
    with pytest.raises(SystemExit) as info:
        _run_download(tmp_path, SHARD)
    assert info.value.code == 1
    assert fake_hub.requests_for(SHARD, "HEAD")[0].header("Authorization") == f"Bearer {TOKEN}"
    out = capfd.readouterr()
    log = (tmp_path / "logs" / "download.log").read_text()
    for text in (out.err, log):
        assert "TypeError: cannot merge headers" in text and "<redacted>" in text
        assert "Traceback" in text and "buggy" in text
        assert leaks(text) == []
    assert leaks(out.out) == []


def test_csv_with_mixed_object_columns_like_cv_results(tmp_path):
    """scikit-learn's cv_results_ has object columns of dicts and of numbers mixed with None."""
    import pandas as pd

    df = pd.DataFrame(
        {"params": [{"max_depth": 3}, {"max_depth": None}], "param_max_depth": [3, None],
         "label": ["=evil", 1.5], "score": [-0.5, 0.25]}
    )  # fmt: skip
    path = tmp_path / "cv.csv"
    tio.write_csv(df, path)
    back = pd.read_csv(path)
    assert back["label"].tolist() == ["'=evil", "1.5"]
    assert back["score"].tolist() == [-0.5, 0.25]
    assert back["params"].tolist() == ["{'max_depth': 3}", "{'max_depth': None}"]
