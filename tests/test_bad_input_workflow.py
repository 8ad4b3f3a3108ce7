"""Bad input at workflow level: real Snakemake on local mirrors with broken files.

Every case asserts a non-zero exit, one clear line naming the file and row (the
``ERROR: <file>, row <n>: <problem>`` line of :func:`tahoeflow.logs.run`) or the config key
(``Invalid configuration: config key '<key>': ...``), and that no output is left behind: the
failed shard's folder is empty and ``results/merged/`` holds nothing.

To keep the runtime small, the independent bad data files are batched into one mirror and
one ``--keep-going`` run: every failing ``summarize_shard`` job prints its own ERROR line,
and the one good file of the batch shows that the other jobs still ran. Config errors are
``-n`` dry runs (they fail at parse time). tests/test_bad_input.py covers the same problems
at function level (and negative counts / truncated files at workflow level).
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_smk

pytestmark = pytest.mark.workflow

SHARD_OUTPUTS = ("cells.parquet", "gene_stats.parquet", "pseudobulk.parquet", "qc.json")


# --------------------------------------------------------------------------- helpers
def _set_list_row(table: pa.Table, col: str, row: int, values: list, value_type) -> pa.Table:
    rows = table.column(col).to_pylist()
    rows[row] = values
    i = table.schema.get_field_index(col)
    return table.set_column(i, col, pa.array(rows, pa.list_(value_type)))


def _set_expr(table: pa.Table, row: int, pos: int, value: float) -> pa.Table:
    e = table.column("expressions").to_pylist()[row]
    return _set_list_row(table, "expressions", row, e[:pos] + [value] + e[pos + 1 :], pa.float32())


def _parquet_bytes(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, row_group_size=200)
    return sink.getvalue().to_pybytes()


def _bad_files(t: pa.Table) -> list[tuple[str, bytes, int | None, str]]:
    """(case, file bytes, bad row or None, expected problem text), one per bad data file.

    Each row-level case breaks a different row, so a right row number is not a coincidence.
    """
    g = t.column("genes").to_pylist()
    e = t.column("expressions").to_pylist()
    good = _parquet_bytes(t)
    samples = t.column("sample").to_pylist()
    r = {
        "length": 11,
        "nan": 23,
        "non_integer": 31,
        "no_marker": 42,
        "token": 57,
        "sample": 64,
        "negative": 75,
    }
    samples[r["sample"]] = "smp_not_in_metadata"
    cases = [
        ("truncated", good[: len(good) // 2], None, "truncated or corrupt"),
        ("empty_file", b"", None, "truncated or corrupt"),
        (
            "missing_column",
            _parquet_bytes(t.drop_columns(["cell_line_id"])),
            None,
            "missing column(s) cell_line_id",
        ),
        (
            "wrong_type",
            _parquet_bytes(
                t.set_column(
                    t.schema.get_field_index("expressions"),
                    "expressions",
                    pa.array([[str(v) for v in row] for row in e]),
                )
            ),
            None,
            "'expressions' holds string",
        ),
        (
            "length_mismatch",
            _parquet_bytes(
                _set_list_row(t, "expressions", r["length"], e[r["length"]][:-1], pa.float32())
            ),
            r["length"],
            "'genes' has",
        ),
        ("nan", _parquet_bytes(_set_expr(t, r["nan"], 3, float("nan"))), r["nan"], "not finite"),
        (
            "non_integer",
            _parquet_bytes(_set_expr(t, r["non_integer"], 3, 1.5)),
            r["non_integer"],
            "non-integer",
        ),
        (
            "negative",
            _parquet_bytes(_set_expr(t, r["negative"], 3, -4.0)),
            r["negative"],
            "negative count",
        ),
        (
            "no_marker",
            _parquet_bytes(
                _set_list_row(
                    _set_list_row(t, "genes", r["no_marker"], g[r["no_marker"]][1:], pa.int64()),
                    "expressions",
                    r["no_marker"],
                    e[r["no_marker"]][1:],
                    pa.float32(),
                )
            ),
            r["no_marker"],
            "no marker",
        ),
        (
            "token_out_of_vocab",
            _parquet_bytes(
                _set_list_row(
                    t,
                    "genes",
                    r["token"],
                    g[r["token"]][:3] + [70_000] + g[r["token"]][4:],
                    pa.int64(),
                )  # fmt: skip
            ),
            r["token"],
            "outside the gene vocabulary",
        ),
        (
            "sample_not_in_metadata",
            _parquet_bytes(
                t.set_column(t.schema.get_field_index("sample"), "sample", pa.array(samples))
            ),
            r["sample"],
            "not in sample_metadata",
        ),
    ]
    return cases


def make_mirror(root: Path, demo_root: Path, files: list[bytes | Path], sample_meta=None) -> Path:
    """A local mirror (hub layout) whose data file i holds ``files[i]`` (bytes or a file)."""
    shutil.copytree(demo_root / "metadata", root / "metadata")
    if sample_meta is not None:
        pq.write_table(sample_meta, root / "metadata/sample_metadata.parquet")
    (root / "data").mkdir(parents=True)
    n = len(files)
    for i, content in enumerate(files):
        dst = root / "data" / f"train-{i:05d}-of-{n:05d}.parquet"
        if isinstance(content, bytes):
            dst.write_bytes(content)
        else:
            shutil.copy(content, dst)
    return root


def local_config(mirror: Path, n_files: int, **extra) -> dict:
    return {
        "source": {
            "kind": "local",
            "files": f"0:{n_files}",
            "local": {"path": str(mirror), "n_files_total": n_files},
        },
        **extra,
    }


def error_lines(proc) -> list[str]:
    return [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.startswith("ERROR: ")]


def assert_no_merged_output(wd: Path) -> None:
    merged = wd / "results/merged"
    left = sorted(p.name for p in merged.iterdir()) if merged.exists() else []
    assert not left, f"merged outputs left behind: {left}"


def assert_shard_empty(wd: Path, shard: str) -> None:
    d = wd / "results/shards" / shard
    left = sorted(p.name for p in d.iterdir()) if d.exists() else []  # hidden .tmp files too
    assert not left, f"shard {shard} left files behind: {left}"


@pytest.fixture(scope="module", autouse=True)
def _no_host_slurm(no_host_slurm):
    """Every Snakemake run of this module skips the SLURM plugin's scontrol wait (conftest)."""


def _fmt(proc) -> str:
    return f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"


# --------------------------------------------------------------------------- data files
def test_bad_data_files_each_fail_with_one_line_and_no_output(small_demo, small_table, tmp_path):
    """11 broken data files and 1 good one in one --keep-going run."""
    root, _ = small_demo
    cases = _bad_files(small_table)
    good_file = root / "data/train-00000-of-00002.parquet"
    n = len(cases) + 1
    mirror = make_mirror(tmp_path / "mirror", root, [c[1] for c in cases] + [good_file])
    wd = tmp_path / "wd"
    proc = run_smk(
        wd, local_config(mirror, n), "results/merged/cells.parquet", "--keep-going", cores=2
    )
    assert proc.returncode != 0, _fmt(proc)
    lines = error_lines(proc)
    for i, (case, _, row, problem) in enumerate(cases):
        path = mirror / "data" / f"train-{i:05d}-of-{n:05d}.parquet"
        where = f"ERROR: {path}, row {row}: " if row is not None else f"ERROR: {path}: "
        mine = [ln for ln in lines if ln.startswith(where)]
        assert len(mine) == 1 and problem in mine[0], f"{case}: {mine or lines}\n{_fmt(proc)}"
        log = (wd / f"results/logs/summarize/{i:05d}.log").read_text()
        assert mine[0] in log, f"{case}: the job log lacks the ERROR line:\n{log}"
        assert_shard_empty(wd, f"{i:05d}")
    # the good file's shard still ran (keep-going), so the failures above were per job
    good = wd / f"results/shards/{n - 1:05d}"
    assert all((good / f).exists() for f in SHARD_OUTPUTS), _fmt(proc)
    assert len(lines) == len(cases), lines
    assert_no_merged_output(wd)


def test_non_integer_counts_are_a_warning_when_input_is_normalised(
    small_demo, small_table, tmp_path
):
    root, _ = small_demo
    bad_row = 31
    bad = _parquet_bytes(_set_expr(small_table, bad_row, 3, 1.5))
    mirror = make_mirror(
        tmp_path / "mirror", root, [bad, root / "data/train-00001-of-00002.parquet"]
    )
    wd = tmp_path / "wd"
    cfg = local_config(mirror, 2, input={"normalised": True})
    proc = run_smk(wd, cfg, "results/merged/cells.parquet", cores=2)
    assert proc.returncode == 0, _fmt(proc)
    assert not error_lines(proc)
    log = (wd / "results/logs/summarize/00000.log").read_text()
    warn = [ln for ln in log.splitlines() if f"row {bad_row}" in ln and "non-integer" in ln]
    assert len(warn) == 1 and "ERROR" not in log, log
    cells = pq.read_table(wd / "results/merged/cells.parquet")
    assert cells.num_rows > 0 and 0 in cells.column("file_row").to_pylist()


# --------------------------------------------------------------------------- merge stage
def test_zero_cells_after_filters_fails_the_merge_naming_the_filter(
    small_demo, small_table, tmp_path
):
    root, _ = small_demo
    n_cells = 2 * small_table.num_rows  # both demo files have the same size
    files = [root / f"data/train-{i:05d}-of-00002.parquet" for i in range(2)]
    mirror = make_mirror(tmp_path / "mirror", root, files)
    wd = tmp_path / "wd"
    cfg = local_config(mirror, 2, filters={"cell_lines": ["CVCL_NOPE"]})
    proc = run_smk(wd, cfg, "results/merged/cells.parquet", cores=2)
    assert proc.returncode != 0, _fmt(proc)
    lines = error_lines(proc)
    assert len(lines) == 1, _fmt(proc)
    assert "zero cells left after the filters" in lines[0], lines
    assert "removed by filters.cell_lines" in lines[0]
    assert f"{n_cells} read; cell_lines removed {n_cells}" in lines[0], lines
    assert lines[0] in (wd / "results/logs/merge/cells.log").read_text()
    assert_no_merged_output(wd)


def test_duplicated_cell_ids_across_shards_name_both_shard_files(small_demo, tmp_path):
    root, _ = small_demo
    file0 = root / "data/train-00000-of-00002.parquet"
    mirror = make_mirror(tmp_path / "mirror", root, [file0, file0])  # file 1 = copy of file 0
    wd = tmp_path / "wd"
    proc = run_smk(wd, local_config(mirror, 2), "results/merged/cells.parquet", cores=2)
    assert proc.returncode != 0, _fmt(proc)
    lines = error_lines(proc)
    assert len(lines) == 1, _fmt(proc)
    a, b = "results/shards/00000/cells.parquet", "results/shards/00001/cells.parquet"
    assert lines[0].startswith("ERROR: results/shards/0000"), lines
    assert a in lines[0] and b in lines[0] and "cell id" in lines[0], lines
    assert_no_merged_output(wd)


# --------------------------------------------------------------------------- metadata
def test_malformed_drugname_drugconc_names_metadata_file_and_row(small_demo, tmp_path):
    root, _ = small_demo
    meta = pq.read_table(root / "metadata/sample_metadata.parquet")
    bad_row = 3
    col = meta.column("drugname_drugconc").to_pylist()
    col[bad_row] = "[('Drug', 'lots', 'uM')"  # unbalanced, and the dose is not a number
    meta = meta.set_column(
        meta.schema.get_field_index("drugname_drugconc"), "drugname_drugconc", pa.array(col)
    )
    files = [root / f"data/train-{i:05d}-of-00002.parquet" for i in range(2)]
    mirror = make_mirror(tmp_path / "mirror", root, files, sample_meta=meta)
    wd = tmp_path / "wd"
    proc = run_smk(
        wd, local_config(mirror, 2), "results/merged/cells.parquet", "--keep-going", cores=2
    )
    assert proc.returncode != 0, _fmt(proc)
    lines = error_lines(proc)
    expect = f"ERROR: {mirror / 'metadata/sample_metadata.parquet'}, row {bad_row}: "
    assert len(lines) == 2 and all(ln.startswith(expect) for ln in lines), _fmt(proc)
    assert all("malformed drugname_drugconc" in ln for ln in lines)
    for shard in ("00000", "00001"):
        assert_shard_empty(wd, shard)
    assert_no_merged_output(wd)


# --------------------------------------------------------------------------- config
CONFIG_CASES = {
    "unknown_key": ({"source": {"typo": 1}}, "source.typo", "unknown key"),
    "wrong_type": ({"embed": {"n_components": "fifty"}}, "embed.n_components", "type"),
    "n_components_above_n_top": (
        {"embed": {"hvg": {"n_top": 20}, "n_components": 30}},
        "embed.n_components",
        "HVGs",
    ),
    "test_size_one": ({"split": {"test_size": 1.0}}, "split.test_size", "out of range"),
    "files_empty_list": ({"source": {"files": []}}, "source.files", ""),
    "files_empty_range": ({"source": {"files": "3:3"}}, "source.files", "empty"),
}


def test_bad_config_fails_at_parse_time_naming_the_key(tmp_path):
    """Each bad config is a dry run (``-n``): it must fail before any job is planned."""

    def one(item):
        name, (cfg, _, _) = item
        return name, run_smk(tmp_path / name, cfg, "-n", timeout=120)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = dict(pool.map(one, CONFIG_CASES.items()))
    for name, (_, key, words) in CONFIG_CASES.items():
        proc = results[name]
        text = proc.stderr + proc.stdout
        assert proc.returncode != 0, f"{name}: {_fmt(proc)}"
        hits = [
            ln
            for ln in text.splitlines()
            if f"Invalid configuration: config key '{key}': " in ln and words in ln
        ]
        assert len(hits) == 1, f"{name}: {_fmt(proc)}"
        assert "Job stats" not in text, f"{name}: jobs were planned despite a bad config"
        assert not (tmp_path / name / "results").exists()
