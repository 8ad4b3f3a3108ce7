"""Offline tests of tahoeflow.sources.hub.fetch_file against the loopback fake hub (tests/hub_server.py).

Every test talks to 127.0.0.1 only, through the real huggingface_hub client.
"""

from __future__ import annotations

import hashlib
import logging
import os
import runpy
import traceback
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hub_server import FAKE_COMMIT, FakeHub, iter_tree
from huggingface_hub import constants

from tahoeflow.errors import InputError
from tahoeflow.sources.hub import (
    DEFAULT_REPO,
    HubError,
    data_filename,
    fetch_file,
    metadata_filename,
)

pytest_plugins = ["conftest_hub"]  # the ``fake_hub`` fixture

SHARD = data_filename(7)  # data/train-00007-of-03388.parquet
TOKEN = "hf_PLANTEDtoken0123456789abcdefXYZ"
REPO_ROOT = Path(__file__).resolve().parents[1]


def _plant_parquet(hub: FakeHub, name: str = SHARD, rows: int = 300) -> bytes:
    """A few-KB parquet shaped like an expression shard; returns its bytes."""
    table = pa.table(
        {
            "genes": pa.array([[1, 5 + i % 7, 19] for i in range(rows)], pa.list_(pa.int64())),
            "expressions": pa.array(
                [[-2.0, 1.0, float(i % 3)] for i in range(rows)], pa.list_(pa.float32())
            ),
            "sample": pa.array([f"smp_{1700 + i % 5}" for i in range(rows)]),
            "plate": pa.array(["plate4"] * rows),
        }
    )
    path = hub.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="zstd")
    return path.read_bytes()


def _plant_bytes(hub: FakeHub, name: str, size: int = 48_000) -> bytes:
    data = os.urandom(size)
    path = hub.root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _fetch(tmp_path: Path, name: str = SHARD, **kw) -> tuple[Path, list[str]]:
    lines: list[str] = []
    kw.setdefault("max_retries", 3)
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


def _fails(
    tmp_path: Path, exc_type: type[Exception], name: str = SHARD, **kw
) -> tuple[Exception, list[str]]:
    lines: list[str] = []
    kw.setdefault("max_retries", 3)
    kw.setdefault("backoff_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    dest = tmp_path / "out" / Path(name).name
    with pytest.raises(exc_type) as info:
        fetch_file(
            DEFAULT_REPO,
            name,
            kw.pop("revision", "main"),
            dest,
            cache_dir=tmp_path / "cache",
            log=lines.append,
            **kw,
        )
    assert not dest.exists()
    assert list((tmp_path / "out").glob("*")) == [], (
        "a partial or temporary file was left beside dest"
    )
    return info.value, lines


# -- names -----------------------------------------------------------------------------------


def test_filenames() -> None:
    assert data_filename(0) == "data/train-00000-of-03388.parquet"
    assert data_filename(3387) == "data/train-03387-of-03388.parquet"
    assert data_filename(2, n_files=10) == "data/train-00002-of-00010.parquet"
    for bad in (-1, 3388):
        with pytest.raises(ValueError):
            data_filename(bad)
    assert metadata_filename("cell_line") == "metadata/cell_line_metadata.parquet"
    assert [metadata_filename(k) for k in ("gene", "sample", "drug")] == [
        "metadata/gene_metadata.parquet",
        "metadata/sample_metadata.parquet",
        "metadata/drug_metadata.parquet",
    ]
    with pytest.raises(ValueError, match="obs"):
        metadata_filename("obs")


# -- clean path ------------------------------------------------------------------------------


def test_clean_download_verified_and_cached(fake_hub: FakeHub, tmp_path: Path) -> None:
    source = _plant_parquet(fake_hub)
    dest, lines = _fetch(tmp_path)

    assert dest.read_bytes() == source
    assert pq.read_table(dest).num_rows == 300
    sha = hashlib.sha256(source).hexdigest()
    snapshot = (
        tmp_path / "cache" / "datasets--tahoebio--Tahoe-100M" / "snapshots" / FAKE_COMMIT / SHARD
    )
    assert snapshot.resolve().name == sha  # the blob is named by the hub's etag
    assert os.path.samefile(dest, snapshot)  # hard-linked, not a second copy
    assert len(fake_hub.requests_for(SHARD, "GET")) == 1
    assert any("verified" in ln and f"{len(source):,} bytes" in ln and SHARD in ln for ln in lines)
    assert any("attempt 1" in ln for ln in lines)

    # Again to a new place: served from the cache (HEAD only, no second body).
    dest2 = tmp_path / "again" / "x.parquet"
    fetch_file(DEFAULT_REPO, SHARD, FAKE_COMMIT, dest2, cache_dir=tmp_path / "cache")
    assert dest2.read_bytes() == source
    assert len(fake_hub.requests_for(SHARD, "GET")) == 1


def test_copy_when_hardlink_impossible(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _plant_parquet(fake_hub)

    def no_link(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    dest, lines = _fetch(tmp_path)
    assert dest.read_bytes() == source
    snapshot = (
        tmp_path / "cache" / "datasets--tahoebio--Tahoe-100M" / "snapshots" / FAKE_COMMIT / SHARD
    )
    assert not os.path.samefile(dest, snapshot)
    assert any("(copy)" in ln for ln in lines)


def test_non_lfs_file_checked_by_git_blob_id(fake_hub: FakeHub, tmp_path: Path) -> None:
    """A small non-LFS file (README) carries a git blob id (sha1) as its etag."""
    data = _plant_bytes(fake_hub, "README.md", size=900)
    git_id = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    fake_hub.set_etag("README.md", git_id)
    dest, _ = _fetch(tmp_path, "README.md")
    assert dest.read_bytes() == data
    fake_hub.set_etag("README.md", "0" * 40)  # a wrong git id is caught like a wrong sha256
    err, _ = _fails(tmp_path / "b", InputError, "README.md")
    assert "git-sha1 mismatch" in str(err)


# -- corruption ------------------------------------------------------------------------------


def test_corrupt_body_twice_is_input_error(fake_hub: FakeHub, tmp_path: Path) -> None:
    source = _plant_parquet(fake_hub)
    fake_hub.add_fault(SHARD, "corrupt", times=None)
    err, lines = _fails(tmp_path, InputError)

    sha = hashlib.sha256(source).hexdigest()
    assert SHARD in str(err) and "sha256 mismatch" in str(err) and sha in str(err)
    assert len(fake_hub.requests_for(SHARD, "GET")) == 2  # the one retry from scratch, no more
    blobs = tmp_path / "cache" / "datasets--tahoebio--Tahoe-100M" / "blobs"
    assert not (blobs / sha).exists(), "the bad blob stayed in the cache"
    assert any("downloading once more" in ln for ln in lines)


def test_corrupt_once_then_good(fake_hub: FakeHub, tmp_path: Path) -> None:
    source = _plant_parquet(fake_hub)
    fake_hub.add_fault(SHARD, "corrupt", times=1)
    dest, _ = _fetch(tmp_path)
    assert dest.read_bytes() == source
    assert len(fake_hub.requests_for(SHARD, "GET")) == 2


def test_corrupted_cache_blob_is_replaced(fake_hub: FakeHub, tmp_path: Path) -> None:
    """Silent corruption on disk (right size, wrong bytes) is caught and re-downloaded."""
    source = _plant_bytes(fake_hub, SHARD)
    dest, _ = _fetch(tmp_path)
    blob = (
        tmp_path / "cache" / "datasets--tahoebio--Tahoe-100M" / "snapshots" / FAKE_COMMIT / SHARD
    ).resolve()
    dest.unlink()
    blob.write_bytes(b"\0" * len(source))  # in place: same size
    dest, lines = _fetch(tmp_path)
    assert dest.read_bytes() == source
    assert len(fake_hub.requests_for(SHARD, "GET")) == 2
    assert any("sha256 mismatch" in ln for ln in lines)


# -- transient faults --------------------------------------------------------------------------


def test_dropped_connection_recovers(fake_hub: FakeHub, tmp_path: Path) -> None:
    source = _plant_bytes(fake_hub, SHARD)
    fake_hub.add_fault(SHARD, "drop", times=1)
    dest, _ = _fetch(tmp_path)
    assert dest.read_bytes() == source
    # The client retries the body itself. It resumes with a Range request only from whole
    # 10 MiB chunks already written, so for this small file it starts again from byte 0.
    assert len(fake_hub.requests_for(SHARD, "GET")) == 2


def test_fake_hub_serves_ranges_and_headers(fake_hub: FakeHub) -> None:
    source = _plant_bytes(fake_hub, SHARD, size=1000)
    url = f"{fake_hub.url}/datasets/{DEFAULT_REPO}/resolve/main/{SHARD}"
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=900-"})) as r:
        assert r.status == 206 and r.read() == source[900:]
        assert r.headers["Content-Range"] == "bytes 900-999/1000"
        assert r.headers["X-Linked-Etag"] == f'"{hashlib.sha256(source).hexdigest()}"'
        assert r.headers["X-Linked-Size"] == "1000" and r.headers["X-Repo-Commit"] == FAKE_COMMIT
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{fake_hub.url}/api/datasets/{DEFAULT_REPO}/revision/main")
    assert info.value.code == 404


@pytest.mark.parametrize("method", [None, "GET"])
def test_http_500_then_success(fake_hub: FakeHub, tmp_path: Path, method: str | None) -> None:
    source = _plant_parquet(fake_hub)
    fake_hub.add_fault(SHARD, "status500", times=2, method=method)
    dest, lines = _fetch(tmp_path)
    assert dest.read_bytes() == source
    assert sum("HTTP 500" in ln and "retry" in ln for ln in lines) == 2
    assert any("attempt 3" in ln and "verified" not in ln for ln in lines)


def test_http_500_forever_gives_up(fake_hub: FakeHub, tmp_path: Path) -> None:
    _plant_parquet(fake_hub)
    fake_hub.add_fault(SHARD, "status500", times=None)
    err, _ = _fails(tmp_path, HubError, max_retries=2)
    assert isinstance(err, HubError)
    assert err.status == 500 and err.transient and err.attempts == 3
    assert "HTTP 500" in str(err) and SHARD in str(err) and "main" in str(err)
    assert len(fake_hub.requests_for(SHARD)) == 3


def test_slow_head_retried_until_it_clears(fake_hub: FakeHub, tmp_path: Path) -> None:
    source = _plant_parquet(fake_hub)
    fake_hub.add_fault(SHARD, "slow", times=2, delay_s=3.0)
    dest, lines = _fetch(tmp_path, timeout_s=0.5)
    assert dest.read_bytes() == source
    assert sum("timed out" in ln for ln in lines) == 2


def test_slow_body_retried_until_it_clears(fake_hub: FakeHub, tmp_path: Path) -> None:
    source = _plant_bytes(fake_hub, SHARD)
    fake_hub.add_fault(SHARD, "slow", times=1, method="GET", delay_s=3.0)
    dest, _ = _fetch(tmp_path, timeout_s=0.5)
    assert dest.read_bytes() == source
    assert len(fake_hub.requests_for(SHARD, "GET")) == 2


def test_slow_forever_is_a_clear_error(fake_hub: FakeHub, tmp_path: Path) -> None:
    _plant_parquet(fake_hub)
    fake_hub.add_fault(SHARD, "slow", times=None, delay_s=3.0)
    err, lines = _fails(tmp_path, HubError, max_retries=2, timeout_s=0.5)
    assert isinstance(err, HubError)
    assert err.status is None and err.transient and err.attempts == 3
    assert "timed out" in str(err) and "gave up after 3 attempts" in str(err) and SHARD in str(err)
    assert len(fake_hub.requests_for(SHARD)) == 3
    assert any("giving up" in ln for ln in lines)


# -- permanent errors ----------------------------------------------------------------------------


def test_missing_file_404_not_retried(fake_hub: FakeHub, tmp_path: Path) -> None:
    name = data_filename(3)
    err, _ = _fails(tmp_path, HubError, name=name, max_retries=5)
    assert isinstance(err, HubError)
    assert err.status == 404 and not err.transient and err.attempts == 1
    assert name in str(err) and "revision main" in str(err) and "HTTP 404" in str(err)
    assert len(fake_hub.requests_for(name)) == 1


def test_planted_404_and_unknown_revision(fake_hub: FakeHub, tmp_path: Path) -> None:
    _plant_parquet(fake_hub)
    fake_hub.add_fault(SHARD, "404", times=None)
    err, _ = _fails(tmp_path, HubError)
    assert err.status == 404 and len(fake_hub.requests_for(SHARD)) == 1
    fake_hub.clear_faults()
    bad_rev = "f" * 40
    err, _ = _fails(tmp_path, HubError, revision=bad_rev)
    assert err.status == 404 and bad_rev in str(err) and "RevisionNotFound" in str(err)


# -- the token ---------------------------------------------------------------------------------


def _assert_token_absent(*texts: str, folders: list[Path]) -> None:
    for text in texts:
        assert TOKEN not in text
    for folder in folders:
        for path in iter_tree(folder):
            assert TOKEN.encode() not in path.read_bytes(), f"token written to {path}"


def test_token_sent_but_never_leaked(
    fake_hub: FakeHub,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    caplog.set_level(logging.DEBUG)
    source = _plant_parquet(fake_hub)
    fake_hub.add_fault(SHARD, "status500", times=1)
    fake_hub.add_fault(SHARD, "drop", times=1)
    dest, lines = _fetch(tmp_path)
    assert dest.read_bytes() == source

    resolve = [r for r in fake_hub.requests if r.repo_path is not None]
    assert resolve and all(r.header("Authorization") == f"Bearer {TOKEN}" for r in resolve)

    # A hostile server echoing the token into its error must not get it into our error.
    other = data_filename(8)
    _plant_parquet(fake_hub, other)
    fake_hub.add_fault(other, "401", times=None)
    hostile_logs_from = len(caplog.records)
    err, lines401 = _fails(tmp_path / "hostile", HubError, name=other)
    assert err.status == 401 and len(fake_hub.requests_for(other)) == 1
    assert err.__cause__ is None and err.__suppress_context__ is False and err.__context__ is None
    shown = "".join(traceback.format_exception(err))
    out = capsys.readouterr()
    # httpcore's own DEBUG trace prints raw *response* headers, so it shows what a hostile
    # server echoes; everything else (and all records of the honest exchange) must be clean.
    records = caplog.records[:hostile_logs_from] + [
        r for r in caplog.records[hostile_logs_from:] if not r.name.startswith("httpcore")
    ]
    _assert_token_absent(
        "\n".join(lines + lines401),
        str(err),
        repr(err),
        shown,
        "\n".join(r.getMessage() for r in records),
        out.out,
        out.err,
        folders=[tmp_path / "out", tmp_path / "hostile", tmp_path / "cache", tmp_path / "hf_home"],
    )


def test_explicit_token_argument_wins(fake_hub: FakeHub, tmp_path: Path) -> None:
    _plant_parquet(fake_hub)
    dest, lines = _fetch(tmp_path, token=TOKEN)
    assert all(r.header("Authorization") == f"Bearer {TOKEN}" for r in fake_hub.requests_for(SHARD))
    assert TOKEN not in "\n".join(lines)


# -- offline mode and the Snakemake script -----------------------------------------------------


def test_offline_mode_uses_verified_cache(
    fake_hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _plant_parquet(fake_hub)
    _fetch(tmp_path, revision=FAKE_COMMIT)
    n_requests = len(fake_hub.requests)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)

    dest = tmp_path / "offline" / "a.parquet"
    fetch_file(DEFAULT_REPO, SHARD, FAKE_COMMIT, dest, cache_dir=tmp_path / "cache")
    assert dest.read_bytes() == source
    assert len(fake_hub.requests) == n_requests  # nothing went over the network

    snapshot = (
        tmp_path / "cache" / "datasets--tahoebio--Tahoe-100M" / "snapshots" / FAKE_COMMIT / SHARD
    )
    dest.unlink()
    (tmp_path / "out" / Path(SHARD).name).unlink()
    snapshot.resolve().write_bytes(b"\1" * len(source))
    with pytest.raises(InputError, match="sha256 mismatch"):
        fetch_file(DEFAULT_REPO, SHARD, FAKE_COMMIT, dest, cache_dir=tmp_path / "cache")
    assert not dest.exists()


def test_download_script(fake_hub: FakeHub, tmp_path: Path) -> None:
    planted = fake_hub.root / metadata_filename("drug")  # a drug table: the script checks columns
    planted.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"drug": ["DMSO_TF", "Trametinib (DMSO_TF solvate)"]}), planted)
    source = planted.read_bytes()
    out = tmp_path / "results" / "drug_metadata.parquet"
    log = tmp_path / "logs" / "download.log"
    log.parent.mkdir()
    snakemake = SimpleNamespace(
        params=SimpleNamespace(
            repo_id=DEFAULT_REPO,
            revision=FAKE_COMMIT,
            filename=metadata_filename("drug"),
            cache_dir=str(tmp_path / "cache"),
            max_retries=2,
            timeout_s=5,
        ),
        output=[str(out)],
        log=[str(log)],
    )
    runpy.run_path(
        str(REPO_ROOT / "workflow" / "scripts" / "download.py"),
        init_globals={"snakemake": snakemake},
    )
    assert out.read_bytes() == source
    text = log.read_text()
    assert "metadata/drug_metadata.parquet" in text and "verified" in text
