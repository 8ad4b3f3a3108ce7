"""The plate manifest (tahoeflow.sources.manifest): footers only, over the loopback fake hub.

The data files here follow the real Tahoe-100M design: cells per plate in proportion to the real
``obs_cell_grid`` (14 plates, plate13 the mixed-dose plate), rows in plate order, cut into
files and row groups the way ``datasets.push_to_hub`` cuts them (contiguous, so a row group at a
plate boundary holds two plates). The fake hub (tests/hub_server.py, ``api=True``) answers the
repo-info, tree and range requests of ``huggingface_hub``'s file system and counts the bytes it
serves per file.

Cases: the manifest equals the truth computed from the rows, with kilobytes read per file and no
whole-file GET; ``filters.plates`` plans only the files that may hold the plate (function level
and in a real dry run after ``snakemake manifest``); a manifest whose row count disagrees with a
file's footer fails the shard with one line and leaves no output; a metadata table of another
revision (column renamed or missing; real tables) fails with one line naming file and column.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REPO, local_mirror, run_smk
from hub_server import FAKE_COMMIT, FakeHub

from tahoeflow.config import make_plan, validate_config
from tahoeflow.errors import ConfigError, InputError
from tahoeflow.sources.manifest import (
    FIRST_TAIL,
    build_hub_manifest,
    check_metadata_columns,
    hub_manifest_path,
    plates_from_metadata,
    plates_match,
    read_first_rows,
    read_plates,
    write_manifest,
)
from tahoeflow.sources.tahoe import EXPRESSION_SCHEMA, data_filename
from tahoeflow.workflow_io import load_filtered_shard

pytest_plugins = ["conftest_hub"]  # the ``fake_hub`` fixture

SCHEMA = REPO / "config" / "schema.yaml"
REAL = next(
    (
        p
        for p in (
            REPO / "resources/tahoe_metadata",
            REPO.parent / "shared/data/real/tahoe_metadata",
        )
        if (p / "obs_cell_grid.parquet").is_file()
    ),
    None,
)
needs_real = pytest.mark.skipif(REAL is None, reason="the real Tahoe metadata tables are absent")
N_ROWS = 6000  # rows of the whole synthetic dataset
ROWS_PER_FILE = 400
ROWS_PER_GROUP = 100
NO_STATS_FILE = 3  # written without column statistics: its plates are unknown ("*")


def real_plate_rows(total: int = N_ROWS) -> dict[str, int]:
    """Rows per plate in proportion to the real obs_cell_grid (every plate at least 1), plates
    in string order (plate1, plate10, ..., plate14, plate2, ...): a row group at a boundary
    then spans a byte range holding no third plate."""
    grid = pq.read_table(REAL / "obs_cell_grid.parquet", columns=["plate", "n_cells"]).to_pandas()
    per = grid.groupby("plate")["n_cells"].sum()
    per = per.loc[sorted(per.index)]
    rows = np.maximum(1, np.round(per.to_numpy() / per.sum() * total)).astype(int)
    return dict(zip(per.index, rows.tolist(), strict=True))


def write_dataset(root: Path, plate_rows: dict[str, int]) -> tuple[list[np.ndarray], int]:
    """Data files with the hub's schema under ``root/data``; returns each file's plate column
    and the number of files. Random gene lists make the files incompressible (~250 KB)."""
    plates = np.concatenate([np.full(n, p, dtype=object) for p, n in plate_rows.items()])
    n_files = plates.size // ROWS_PER_FILE  # whole files only (the last plate loses a few rows)
    plates = plates[: n_files * ROWS_PER_FILE]
    rng = np.random.default_rng(0)
    per_file = []
    for i in range(n_files):
        part = plates[i * ROWS_PER_FILE : (i + 1) * ROWS_PER_FILE]
        n = part.size
        genes = rng.integers(3, 62713, size=(n, 120))
        table = pa.table(
            {
                "genes": pa.array(list(genes), pa.list_(pa.int64())),
                "expressions": pa.array(
                    list(rng.integers(1, 9, (n, 120)).astype(np.float32)), pa.list_(pa.float32())
                ),  # fmt: skip
                "drug": pa.array(["DMSO_TF"] * n),
                "sample": pa.array([f"smp_{k}" for k in rng.integers(1400, 2700, n)]),
                "BARCODE_SUB_LIB_ID": pa.array([f"01_001_{k:03d}-lib_1105" for k in range(n)]),
                "cell_line_id": pa.array(["CVCL_0131"] * n),
                "moa-fine": pa.array(["unclear"] * n),
                "canonical_smiles": pa.array(["C"] * n),
                "pubchem_cid": pa.array(["1.0"] * n),
                "plate": pa.array(part.tolist()),
            },
            schema=EXPRESSION_SCHEMA,
        )
        path = root / data_filename(i, n_files)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            table, path, row_group_size=ROWS_PER_GROUP, compression="zstd",
            write_statistics=i != NO_STATS_FILE,
        )  # fmt: skip
        per_file.append(part)
    return per_file, n_files


def may_hold(part: np.ndarray, file_index: int, plate: str) -> bool:
    """From the rows: the file holds ``plate``, or its statistics cannot rule it out (a row
    group whose min..max byte range covers it, or no statistics at all)."""
    if file_index == NO_STATS_FILE:
        return True
    for g in range(0, part.size, ROWS_PER_GROUP):
        group = part[g : g + ROWS_PER_GROUP].tolist()
        if plate in group or min(group).encode() <= plate.encode() <= max(group).encode():
            return True
    return False


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    if REAL is None:
        pytest.skip("the real Tahoe metadata tables are absent")
    root = tmp_path_factory.mktemp("plates") / "repo"
    per_file, n_files = write_dataset(root, real_plate_rows())
    (root / "metadata").mkdir()
    for kind in ("gene", "sample", "drug", "cell_line"):
        shutil.copy(REAL / f"{kind}_metadata.parquet", root / f"metadata/{kind}_metadata.parquet")
    return SimpleNamespace(root=root, per_file=per_file, n_files=n_files)


def truth_rows(ds) -> list[tuple[str, int, int]]:
    out, first = [], 0
    for i, part in enumerate(ds.per_file):
        out.append((data_filename(i, ds.n_files), part.size, first))
        first += part.size
    return out


# --------------------------------------------------------------------------- function level
def test_manifest_from_footers_only_matches_the_rows_and_reads_kilobytes_per_file(
    fake_hub: FakeHub, dataset, tmp_path
):
    shutil.copytree(dataset.root / "data", fake_hub.root / "data")
    fake_hub.api = True
    fake_hub.tree_page_size = 4  # the listing of data/ comes in pages, as from the hub
    lines: list[str] = []
    built = build_hub_manifest(
        "tahoebio/Tahoe-100M", "main", dataset.n_files, endpoint=fake_hub.url, workers=4,
        log=lines.append,
    )  # fmt: skip
    assert built.commit == FAKE_COMMIT  # "main" resolved once; every read at the commit
    got = [(r["file"], r["n_rows"], r["first_row"]) for r in built.rows]
    assert got == truth_rows(dataset)
    for i, (row, part) in enumerate(zip(built.rows, dataset.per_file, strict=True)):
        if i == NO_STATS_FILE:
            assert row["plates"] == "*"
            continue
        plates = set(part.tolist())
        exact = {p for p in row["plates"].split(",") if ".." not in p}
        assert exact <= plates  # every plate listed is really there
        for p in plates:  # and every plate there is listed, or inside a listed range
            assert plates_match(row["plates"], [p]), (i, p, row["plates"])
    # a plate boundary inside a row group: both plates named as a range
    assert any(".." in r["plates"] for r in built.rows)

    # footers only: every data request is a range request, kilobytes per file
    data_gets = [r for r in fake_hub.requests if r.repo_path and r.repo_path.startswith("data/")]
    assert data_gets and all(r.header("Range") for r in data_gets)
    sizes = {n: (fake_hub.root / n).stat().st_size for n, _, _ in got}
    served = {n: fake_hub.bytes_served(n) for n in sizes}
    footer = {n: int.from_bytes((fake_hub.root / n).read_bytes()[-8:-4], "little") for n in sizes}
    first = got[0][0]
    assert served[first] <= min(FIRST_TAIL, sizes[first])
    for n in sizes:
        assert served[n] >= footer[n] + 8
        assert served[n] < sizes[n] / 3, (n, served[n], sizes[n])
        if n != first:  # later files: the guess follows the footers seen (one small read)
            assert served[n] <= footer[n] + 8 + 2048, (n, served[n], footer[n])
    assert sum(served.values()) < 0.05 * sum(sizes.values())
    assert built.bytes_read == sum(served.values())
    print(
        f"{dataset.n_files} files, {sum(sizes.values()):,} bytes; footers read: "
        f"{sum(served.values()):,} bytes, max {max(served.values()):,} per file"
    )


def test_fake_hub_api_answers_like_the_hub(fake_hub: FakeHub, dataset):
    """The API calls huggingface_hub makes: repo info, paged tree, paths-info (with LFS ids)."""
    from huggingface_hub import HfApi

    shutil.copytree(dataset.root / "data", fake_hub.root / "data")
    name = data_filename(0, dataset.n_files)
    api = HfApi(endpoint=fake_hub.url, token=False)
    with pytest.raises(Exception, match="404"):  # the API is off by default (as before)
        api.dataset_info("tahoebio/Tahoe-100M", revision="main")
    fake_hub.api, fake_hub.tree_page_size = True, 4
    assert api.dataset_info("tahoebio/Tahoe-100M", revision="main").sha == FAKE_COMMIT
    tree = list(api.list_repo_tree("tahoebio/Tahoe-100M", "data", repo_type="dataset"))
    assert sorted(f.path for f in tree) == [
        data_filename(i, dataset.n_files) for i in range(dataset.n_files)
    ]
    pages = [r for r in fake_hub.requests if "/tree/" in r.path]
    assert len(pages) == -(-dataset.n_files // 4)  # followed the Link header page by page
    info = api.get_paths_info(
        "tahoebio/Tahoe-100M", [name, "data/absent.parquet"], repo_type="dataset",
        revision=FAKE_COMMIT,
    )  # fmt: skip
    body = (fake_hub.root / name).read_bytes()
    assert [(i.path, i.size) for i in info] == [(name, len(body))]
    assert info[0].lfs.sha256 == hashlib.sha256(body).hexdigest()


def test_manifest_of_a_repo_missing_a_file_or_the_plate_column_fails_in_one_line(
    fake_hub: FakeHub, dataset
):
    shutil.copytree(dataset.root / "data", fake_hub.root / "data")
    fake_hub.api = True
    # the wrong file count (source.hub.n_files_total) names the first file and what is there
    with pytest.raises(
        InputError, match=r"train-00000-of-00100.parquet .*e.g. data/train-00000-of"
    ):
        build_hub_manifest("tahoebio/Tahoe-100M", FAKE_COMMIT, 100, endpoint=fake_hub.url)
    gone = data_filename(5, dataset.n_files)
    (fake_hub.root / gone).unlink()
    with pytest.raises(InputError, match=rf"{gone} .*not in the repo's data/ \(1 of "):
        build_hub_manifest(
            "tahoebio/Tahoe-100M", FAKE_COMMIT, dataset.n_files, endpoint=fake_hub.url
        )
    shutil.copy(dataset.root / gone, fake_hub.root / gone)
    # a file of another revision: no plate column
    name = data_filename(2, dataset.n_files)
    t = pq.read_table(fake_hub.root / name).rename_columns(
        [c if c != "plate" else "plate_id" for c in EXPRESSION_SCHEMA.names]
    )
    pq.write_table(t, fake_hub.root / name)
    with pytest.raises(InputError) as info:
        build_hub_manifest(
            "tahoebio/Tahoe-100M", FAKE_COMMIT, dataset.n_files, endpoint=fake_hub.url
        )
    msg = str(info.value)
    assert "\n" not in msg and name in msg and "no column 'plate'" in msg and "plate_id" in msg


def test_plates_match_is_conservative(tmp_path):
    empty = tmp_path / "empty.parquet"
    pq.write_table(EXPRESSION_SCHEMA.empty_table(), empty)
    assert plates_from_metadata(pq.ParquetFile(empty).metadata, empty) == "-"
    assert plates_match("plate13", ["plate13"]) and not plates_match("plate12", ["plate13"])
    assert plates_match("plate12,plate12..plate13", ["plate13"])
    # a row group with min plate1 and max plate2 may hold plate10..plate14 (byte order)
    assert plates_match("plate1..plate2", ["plate13"]) and not plates_match(
        "plate1..plate2", ["plate3"]
    )
    assert plates_match("*", ["anything"]) and not plates_match("-", ["plate1"])


def _hub_cfg(tmp_path, **source) -> dict:
    cfg = {
        "source": {
            "kind": "hub",
            "hub": {"download_dir": str(tmp_path / "hub"), "n_files_total": 20},
            **source,
        },
        "filters": {"plates": ["plate13"]},
    }
    return validate_config(cfg, SCHEMA)


def test_plate_filter_plans_only_the_files_of_that_plate(tmp_path):
    cfg = _hub_cfg(tmp_path, files="0:20")
    rows = [
        {"file": data_filename(i, 20), "n_rows": 100, "plates": p, "first_row": 100 * i}
        for i, p in enumerate(
            ["plate4"] * 5 + ["plate12", "plate12,plate12..plate13", "plate13", "plate13"]
            + ["plate13,plate13..plate14", "plate14", "*"] + ["plate9"] * 8
        )
    ]  # fmt: skip
    # no manifest yet: every selected file, and a warning naming the key
    with pytest.warns(
        UserWarning, match=r"'filters.plates': no plate manifest .*snakemake manifest"
    ):
        assert make_plan(cfg).files == list(range(20))
    path = hub_manifest_path(cfg["source"]["hub"]["download_dir"], cfg["source"]["hub"]["revision"])
    write_manifest(rows, path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plan = make_plan(cfg)
    assert plan.files == [6, 7, 8, 9, 11] and plan.manifest == path
    assert sorted(plan.shards) == ["00006", "00007", "00008", "00009", "00011"]
    assert all(s.file_rows == 100 for s in plan.shards.values())  # checked against footers
    assert read_plates(path)[11] == "*" and read_first_rows(path)[7] == (700, 100)
    # with row-range shards the manifest's exact rows size the ranges
    plan = make_plan(_hub_cfg(tmp_path, files="0:20", cells_per_shard=100))
    assert sorted(plan.shards) == [f"{f:05d}-0000" for f in (6, 7, 8, 9, 11)]
    # a plate no selected file holds (file 11, of unknown plates, not selected): one line
    cfg = _hub_cfg(tmp_path, files="0:11")
    cfg["filters"]["plates"] = ["plate77"]
    with pytest.raises(ConfigError, match=r"'filters.plates': no selected file holds 'plate77'"):
        make_plan(cfg)
    # a user's manifest (source.manifest) with plates works for a local mirror too
    local = validate_config(
        {
            "source": {"kind": "local", "files": "0:20", "manifest": path,
                       "local": {"path": str(tmp_path / "mirror"), "n_files_total": 20}},
            "filters": {"plates": ["plate4"]},
        },
        SCHEMA,
    )  # fmt: skip
    assert make_plan(local).files == [0, 1, 2, 3, 4, 11]


def test_manifest_rows_that_disagree_with_the_footer_fail_before_anything_is_read(
    small_demo, tmp_path
):
    root, _ = small_demo
    path = root / "data/train-00001-of-00002.parquet"
    real = pq.ParquetFile(path).metadata.num_rows
    smk = SimpleNamespace(
        params=SimpleNamespace(
            shard={"name": "00001", "file_index": 1, "row_start": 0, "row_stop": None,
                   "file_rows": real + 25},
            source={"kind": "local"}, filters={}, normalised=False, control_drug="DMSO_TF",
        ),
        input=SimpleNamespace(data=str(path), genes="absent.parquet", samples="absent.parquet"),
    )  # fmt: skip
    with pytest.raises(InputError) as info:
        load_filtered_shard(smk, lambda _m: None)
    msg = str(info.value)
    assert "\n" not in msg and str(path) in msg
    assert f"holds {real} rows" in msg and f"gives {real + 25}" in msg


@needs_real
@pytest.mark.parametrize(
    ("kind", "rename", "drop", "column", "hint"),
    [
        ("gene", {"token_id": "token"}, None, "token_id", "renamed to 'token'?"),
        (
            "sample",
            {"drugname_drugconc": "drugname_drug_conc"},
            None,
            "drugname_drugconc",
            "renamed",
        ),
        ("sample", None, "plate", "plate", ""),
        ("drug", {"drug": "compound"}, None, "drug", ""),
    ],
)
def test_metadata_table_of_another_revision_names_file_and_column(
    tmp_path, kind, rename, drop, column, hint
):
    src = REAL / f"{kind}_metadata.parquet"
    check_metadata_columns(src, kind)  # the real table of the pinned revision passes
    t = pq.read_table(src)
    if rename:
        t = t.rename_columns([rename.get(c, c) for c in t.column_names])
    if drop:
        t = t.drop_columns([drop])
    bad = tmp_path / f"{kind}_metadata.parquet"
    pq.write_table(t, bad)
    with pytest.raises(InputError) as info:
        check_metadata_columns(bad, kind)
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg and f"missing column '{column}'" in msg
    assert hint in msg


# --------------------------------------------------------------------------- workflow level
@pytest.fixture(scope="module")
def hub_env(dataset, tmp_path_factory):
    """A fake hub with the API, serving the plate dataset, and Snakemake's environment."""
    base = tmp_path_factory.mktemp("manifest_wf")
    root = base / "repo"
    shutil.copytree(dataset.root, root)
    server = FakeHub(root, api=True, tree_page_size=7).start()
    env = {
        "HF_ENDPOINT": server.url, "HF_HUB_DISABLE_XET": "1", "HF_HUB_OFFLINE": "0",
        "HF_HOME": str(base / "hf_home"), "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost",
    }  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_HUB_CACHE"):
            mp.delenv(key, raising=False)
        try:
            yield SimpleNamespace(server=server, root=root, base=base)
        finally:
            server.stop()


def _fmt(proc) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


@pytest.mark.workflow
def test_snakemake_manifest_then_a_plate13_dry_run_lists_exactly_its_files(
    hub_env, dataset, tmp_path
):
    server = hub_env.server
    server.reset_counts()
    wd = tmp_path / "wd"
    cfg = {
        "source": {
            "kind": "hub", "files": f"0:{dataset.n_files}",
            "hub": {"revision": FAKE_COMMIT, "n_files_total": dataset.n_files, "timeout_s": 10},
        },
        "filters": {"plates": ["plate13"]},
    }  # fmt: skip
    proc = run_smk(wd, cfg, "manifest", cores=2)
    assert proc.returncode == 0, _fmt(proc)
    manifest = wd / "resources/hub" / FAKE_COMMIT / "manifest.tsv"
    lines = manifest.read_text().splitlines()
    assert lines[0] == "file\tn_rows\tplates\tfirst_row" and len(lines) == dataset.n_files + 1
    got = [tuple(ln.split("\t")[i] for i in (0, 1, 3)) for ln in lines[1:]]
    assert got == [(f, str(n), str(r)) for f, n, r in truth_rows(dataset)]
    assert not any(p.name.startswith(".") for p in manifest.parent.iterdir())  # no temp left
    data = [n for n, _, _ in truth_rows(dataset)]
    assert max(server.bytes_served(n) for n in data) <= FIRST_TAIL
    assert all(r.header("Range") for r in server.requests if r.repo_path in data)

    proc = run_smk(wd, cfg, "--dry-run", cores=1)
    assert proc.returncode == 0, _fmt(proc)
    text = proc.stdout + proc.stderr
    downloads = {int(m) for m in re.findall(r"data/train-(\d{5})-of-\d{5}\.parquet", text)}
    shards = {int(m) for m in re.findall(r"results/shards/(\d{5})/", text)}
    want = {i for i, part in enumerate(dataset.per_file) if may_hold(part, i, "plate13")}
    holds = {i for i, part in enumerate(dataset.per_file) if "plate13" in part.tolist()}
    assert want == holds | {NO_STATS_FILE} and len(want) < dataset.n_files / 3
    assert downloads == want and shards == want, (sorted(downloads), sorted(want))
    assert "no plate manifest" not in text


@pytest.mark.workflow
def test_wrong_manifest_rows_fail_the_shard_job_in_one_line_and_leave_no_output(
    small_demo, tmp_path
):
    root, _ = small_demo
    mirror = local_mirror(tmp_path, root)
    n0, n1 = (
        pq.ParquetFile(mirror / f"data/train-0000{i}-of-00002.parquet").metadata.num_rows
        for i in (0, 1)
    )
    wd = tmp_path / "wd"
    cfg = {
        "source": {"kind": "local", "files": "0:2",
                   "local": {"path": str(mirror), "n_files_total": 2}},
    }  # fmt: skip
    shard0 = "results/shards/00000/qc.json"
    proc = run_smk(wd, cfg, shard0, cores=1)
    assert proc.returncode == 0, _fmt(proc)
    # a manifest added later (right for file 0, wrong for file 1) reruns nothing that is done:
    # the row count only checks the footer
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text(f"file\tn_rows\n0\t{n0}\n1\t{n1 - 100}\n")
    cfg["source"]["manifest"] = str(manifest)
    proc = run_smk(wd, cfg, shard0, "--dry-run", cores=1)
    assert proc.returncode == 0 and "Nothing to be done" in proc.stdout + proc.stderr, _fmt(proc)

    proc = run_smk(wd, cfg, "results/shards/00001/qc.json", cores=1)
    assert proc.returncode != 0
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("ERROR: ")]
    assert len(errors) == 1, _fmt(proc)
    assert "train-00001-of-00002.parquet" in errors[0]
    assert f"holds {n1} rows" in errors[0] and f"gives {n1 - 100}" in errors[0]
    left = [p for p in (wd / "results/shards").rglob("*") if p.is_file() and "00001" in str(p)]
    assert left == []


@pytest.mark.workflow
def test_a_downloaded_metadata_table_of_another_revision_fails_once_and_is_removed(
    hub_env, dataset, tmp_path
):
    name = "metadata/gene_metadata.parquet"
    good = (hub_env.root / name).read_bytes()
    t = pq.read_table(hub_env.root / name)
    pq.write_table(t.rename_columns(["gene_symbol", "ensembl_id", "token"]), hub_env.root / name)
    try:
        wd = tmp_path / "wd"
        cfg = {
            "source": {
                "kind": "hub", "files": "0:1",
                "hub": {"revision": FAKE_COMMIT, "n_files_total": dataset.n_files, "timeout_s": 10},
            }
        }  # fmt: skip
        target = f"resources/hub/{FAKE_COMMIT}/{name}"
        proc = run_smk(wd, cfg, target, cores=1)
    finally:
        (hub_env.root / name).write_bytes(good)
    assert proc.returncode != 0
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("ERROR: ")]
    assert len(errors) == 1, _fmt(proc)
    assert name in errors[0] and "missing column 'token_id'" in errors[0]
    assert "renamed to 'token'?" in errors[0]
    placed = wd / "resources/hub" / FAKE_COMMIT / "metadata"
    assert not placed.exists() or not [p for p in placed.iterdir()]
    assert os.environ.get("HF_ENDPOINT") == hub_env.server.url
