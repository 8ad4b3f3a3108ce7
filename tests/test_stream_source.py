"""``source.kind: stream`` (tahoeflow.sources.stream): rows of the hub dataset through ``datasets``
streaming, over the loopback fake hub (tests/hub_server.py with ``api=True``: the repo-info,
tree and range requests that datasets 5.2.0 and huggingface_hub 2.4.0 make).

Cases: a global row range across two files equals the same rows read from the files; with the
manifest's ``first_row`` a job reads only the files holding its rows (bytes counted by the fake
hub); a revision whose columns were renamed, data that end before the range and a revision
that does not exist fail with one line; the plan cuts the range into chunk jobs; the workflow
streams the chunks, summarises and merges them, and a lost chunk is the only job planned again
(a failed job leaves no chunk: it is written atomically).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, run_smk, write_demo
from hub_server import FAKE_COMMIT, FakeHub

from tahoeflow.config import make_plan, validate_config
from tahoeflow.errors import ArgumentError, InputError
from tahoeflow.sources.demo import DemoParams
from tahoeflow.sources.manifest import build_hub_manifest, read_first_rows, write_manifest
from tahoeflow.sources.stream import chunk_path, plan_chunks, stream_rows, stream_source
from tahoeflow.sources.tahoe import READ_COLUMNS

pytest_plugins = ["conftest_hub"]  # the ``fake_hub`` fixture

SCHEMA = REPO / "config" / "schema.yaml"
REPO_ID = "tahoebio/Tahoe-100M"
FILES = ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]


def _all_rows(root: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(root / f, columns=READ_COLUMNS) for f in FILES])


@pytest.fixture
def hub(fake_hub: FakeHub, small_demo) -> FakeHub:
    root, _ = small_demo
    shutil.copytree(root / "data", fake_hub.root / "data")
    fake_hub.api = True
    return fake_hub


# --------------------------------------------------------------------------- function level
def test_a_row_range_across_two_files_equals_the_files_rows(hub: FakeHub):
    full = _all_rows(hub.root)
    n0 = pq.ParquetFile(hub.root / FILES[0]).metadata.num_rows
    a, b = n0 - 150, n0 + 250  # the end of file 0 and the start of file 1
    lines: list[str] = []
    got = stream_rows(REPO_ID, FAKE_COMMIT, a, b, n_files_total=2, log=lines.append)
    assert got.equals(full.slice(a, b - a))
    assert got.schema.names == READ_COLUMNS  # only the needed columns


def test_with_the_manifest_a_job_reads_only_the_files_holding_its_rows(hub: FakeHub, tmp_path):
    built = build_hub_manifest(REPO_ID, FAKE_COMMIT, 2, endpoint=hub.url)
    path = tmp_path / "manifest.tsv"
    write_manifest(built.rows, path)
    first_rows = read_first_rows(path)
    n0 = built.rows[1]["first_row"]
    src = stream_source(first_rows, 2, n0 + 10, n0 + 110)
    assert src == {"files": [FILES[1]], "first_row": n0}
    assert stream_source(None, 2, 10, 20) == {"files": [], "first_row": 0}
    hub.reset_counts()
    got = stream_rows(REPO_ID, FAKE_COMMIT, n0 + 10, n0 + 110, n_files_total=2, **src)
    assert got.equals(_all_rows(hub.root).slice(n0 + 10, 100))
    assert hub.bytes_served(FILES[0]) == 0 and hub.bytes_served(FILES[1]) > 0
    # without the manifest the stream starts at row 0 and reads file 0 as well
    hub.reset_counts()
    stream_rows(REPO_ID, FAKE_COMMIT, n0 + 10, n0 + 110, n_files_total=2)
    assert hub.bytes_served(FILES[0]) > 0


def test_renamed_column_range_past_the_end_and_unknown_revision_fail_in_one_line(
    hub: FakeHub,
):
    t = pq.read_table(hub.root / FILES[0])
    pq.write_table(
        t.rename_columns([c if c != "moa-fine" else "moa_fine" for c in t.column_names]),
        hub.root / FILES[0],
    )
    with pytest.raises(InputError) as info:
        stream_rows(REPO_ID, FAKE_COMMIT, 0, 10, n_files_total=2)
    msg = str(info.value)
    assert "\n" not in msg and f"{REPO_ID}@{FAKE_COMMIT}" in msg
    assert "missing column(s) moa-fine" in msg and "moa_fine" in msg
    pq.write_table(t, hub.root / FILES[0])
    total = _all_rows(hub.root).num_rows
    with pytest.raises(ArgumentError, match=rf"'row_stop': .*end after {total} rows"):
        stream_rows(REPO_ID, FAKE_COMMIT, total - 5, total + 5, n_files_total=2)
    with pytest.raises(InputError, match=r"@0{40} \(rows 0\.\.10\): HTTP 404 \(RevisionNotFound\)"):
        stream_rows(REPO_ID, "0" * 40, 0, 10, n_files_total=2)


def test_the_plan_cuts_the_range_into_chunk_jobs():
    assert plan_chunks(150, 300, 100) == [(150, 250), (250, 350), (350, 450)]
    assert plan_chunks(0, 250, 100) == [(0, 100), (100, 200), (200, 250)]
    assert plan_chunks(7, 20000, None) == [(7, 20007)]
    cfg = validate_config(
        {"source": {"kind": "stream", "cells_per_shard": 100,
                    "stream": {"start": 150, "n_cells": 250}}},
        SCHEMA,
    )  # fmt: skip
    plan = make_plan(cfg)
    rev = cfg["source"]["hub"]["revision"]
    assert sorted(plan.shards) == ["00000", "00001", "00002"]
    assert [s.file_rows for s in plan.shards.values()] == [100, 100, 50]
    assert (
        plan.data_path(2)
        == chunk_path(rev, 350, 400)
        == (f"results/stream/{rev}/rows-000000000350-000000000400.parquet")
    )
    assert plan.metadata_path("gene") == f"resources/hub/{rev}/metadata/gene_metadata.parquet"


# --------------------------------------------------------------------------- workflow level
STREAM_DEMO = DemoParams(
    seed=11, n_files=2, cells_per_file=300, n_cell_lines=3, n_drugs=4, n_plates=1,
    control_wells_per_plate=2,
)  # fmt: skip


@pytest.fixture(scope="module")
def stream_hub(tmp_path_factory):
    base = tmp_path_factory.mktemp("streamwf")
    root = base / "repo"
    write_demo(root, STREAM_DEMO)
    shutil.rmtree(root / "truth")
    server = FakeHub(root, api=True).start()
    env = {
        "HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(base / "hf_home"), "HF_DATASETS_CACHE": str(base / "ds_cache"),
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "127.0.0.1,localhost",
        "no_proxy": "127.0.0.1,localhost",
    }  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE"):
            mp.delenv(key, raising=False)
        try:
            yield SimpleNamespace(server=server, root=root)
        finally:
            server.stop()


def _fmt(proc) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


def _stream_cfg(start: int, n_cells: int) -> dict:
    return {
        "source": {
            "kind": "stream", "cells_per_shard": 125,
            "stream": {"start": start, "n_cells": n_cells},
            "hub": {"revision": FAKE_COMMIT, "n_files_total": 2, "timeout_s": 10},
        }
    }  # fmt: skip


@pytest.mark.workflow
def test_stream_source_runs_the_normal_dag_and_resumes_only_a_lost_chunk(stream_hub, tmp_path):
    full = pa.concat_tables(
        [pq.read_table(stream_hub.root / f, columns=READ_COLUMNS) for f in FILES]
    )
    wd = tmp_path / "wd"
    cfg = _stream_cfg(250, 250)  # rows 250..500: the end of file 0 and most of file 1
    proc = run_smk(wd, cfg, "results/merged/cells.parquet", cores=2)
    assert proc.returncode == 0, _fmt(proc)
    chunks = [(250, 375), (375, 500)]
    for a, b in chunks:
        got = pq.read_table(wd / chunk_path(FAKE_COMMIT, a, b))
        assert got.equals(full.slice(a, b - a)), (a, b)
    cells = pq.read_table(wd / "results/merged/cells.parquet").to_pandas()
    streamed = set(full.slice(250, 250).column("BARCODE_SUB_LIB_ID").to_pylist())
    assert 0 < len(cells) <= 250 and set(cells["cell_id"]) <= streamed
    assert not list((wd / f"results/stream/{FAKE_COMMIT}").glob(".*"))  # no temporary left

    # a lost chunk (a run stopped half-way): only its stream job is planned again
    (wd / chunk_path(FAKE_COMMIT, 375, 500)).unlink()
    proc = run_smk(wd, cfg, "download_all", "--dry-run", cores=1)
    assert proc.returncode == 0, _fmt(proc)
    text = proc.stdout + proc.stderr
    planned = set(re.findall(r"output: \S*/rows-(\d{12})-\d{12}\.parquet", text))
    assert planned == {"000000000375"}, text[-3000:]
    assert re.search(r"^stream_shard\s+1$", text, re.M), text[-3000:]

    assert os.environ["HF_ENDPOINT"] == stream_hub.server.url
