"""Bad input fails with one line naming the file, the row and the problem, and no output."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import local_mirror, run_smk

from tahoeflow.cells.doses import sample_doses
from tahoeflow.cells.plan import Shard
from tahoeflow.cells.read import read_rows
from tahoeflow.cells.summarize import Filters, load_shard
from tahoeflow.cells.vocab import vocab_from_gene_metadata
from tahoeflow.errors import InputError

BAD_ROW = 7


def _replace_list_row(table: pa.Table, col: str, row: int, new_row: list, value_type) -> pa.Table:
    rows = table.column(col).to_pylist()
    rows[row] = new_row
    return table.set_column(
        table.schema.get_field_index(col), col, pa.array(rows, pa.list_(value_type))
    )


def _bad_tables(t: pa.Table) -> dict[str, tuple[pa.Table, str]]:
    g = t.column("genes").to_pylist()[BAD_ROW]
    e = t.column("expressions").to_pylist()[BAD_ROW]
    cases = {
        "length_mismatch": (
            _replace_list_row(t, "expressions", BAD_ROW, e[:-1], pa.float32()),
            "'genes' has",
        ),
        "negative": (
            _replace_list_row(t, "expressions", BAD_ROW, e[:3] + [-4.0] + e[4:], pa.float32()),
            "negative count",
        ),
        "nan": (
            _replace_list_row(
                t, "expressions", BAD_ROW, e[:3] + [float("nan")] + e[4:], pa.float32()
            ),
            "not finite",
        ),
        "non_integer": (
            _replace_list_row(t, "expressions", BAD_ROW, e[:3] + [1.5] + e[4:], pa.float32()),
            "non-integer",
        ),
        "no_marker": (
            _replace_list_row(
                _replace_list_row(t, "genes", BAD_ROW, g[1:], pa.int64()),
                "expressions",
                BAD_ROW,
                e[1:],
                pa.float32(),
            ),
            "no marker",
        ),
        "token_out_of_vocab": (
            _replace_list_row(t, "genes", BAD_ROW, g[:3] + [70_000] + g[4:], pa.int64()),
            "outside the gene vocabulary",
        ),
        "unknown_sample": (
            t.set_column(
                t.schema.get_field_index("sample"),
                "sample",
                pa.array(
                    [
                        ("smp_9999" if i == BAD_ROW else s)
                        for i, s in enumerate(t.column("sample").to_pylist())
                    ]
                ),
            ),
            "not in sample_metadata",
        ),
    }
    return cases


@pytest.fixture(scope="module")
def ctx(small_demo):
    root, _ = small_demo
    vocab = vocab_from_gene_metadata(pq.read_table(root / "metadata/gene_metadata.parquet"))
    doses = sample_doses(pq.read_table(root / "metadata/sample_metadata.parquet").to_pandas(), "s")
    return vocab, doses


@pytest.mark.parametrize(
    "case",
    [
        "length_mismatch",
        "negative",
        "nan",
        "non_integer",
        "no_marker",
        "token_out_of_vocab",
        "unknown_sample",
    ],
)
def test_bad_rows_name_file_row_and_problem(case, small_table, ctx, tmp_path):
    vocab, doses = ctx
    table, problem = _bad_tables(small_table)[case]
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path, row_group_size=100)
    with pytest.raises(InputError) as err:
        load_shard(path, Shard("x", 0, 0, None), vocab, doses, Filters())
    msg = str(err.value)
    assert msg.startswith(f"{path}, row {BAD_ROW}: ") and problem in msg and "\n" not in msg


def test_row_numbers_count_from_the_file_start_in_row_range_shards(small_table, ctx, tmp_path):
    vocab, doses = ctx
    table, _ = _bad_tables(small_table)["negative"]
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path, row_group_size=100)
    load_shard(
        path, Shard("x", 0, 100, None), vocab, doses, Filters()
    )  # the bad row is not in this range
    with pytest.raises(InputError, match=f"row {BAD_ROW}: negative"):
        load_shard(path, Shard("x", 0, 0, 100), vocab, doses, Filters())


def test_normalised_input_turns_non_integer_into_a_warning(small_table, ctx, tmp_path):
    vocab, doses = ctx
    table, _ = _bad_tables(small_table)["non_integer"]
    path = tmp_path / "norm.parquet"
    pq.write_table(table, path)
    warnings = []
    ls = load_shard(
        path,
        Shard("x", 0, 0, None),
        vocab,
        doses,
        Filters(),
        allow_non_integer=True,
        warn=warnings.append,
    )
    assert (
        ls.X.shape[0] == small_table.num_rows
        and len(warnings) == 1
        and f"row {BAD_ROW}" in warnings[0]
    )


def test_missing_column_wrong_type_truncated_and_empty(small_table, tmp_path):
    p1 = tmp_path / "missing.parquet"
    pq.write_table(small_table.drop_columns(["cell_line_id"]), p1)
    with pytest.raises(InputError, match=r"missing column\(s\) cell_line_id"):
        read_rows(p1)
    p2 = tmp_path / "wrongtype.parquet"
    pq.write_table(
        small_table.set_column(
            1,
            "expressions",
            pa.array([[str(v) for v in r] for r in small_table.column("expressions").to_pylist()]),
        ),
        p2,
    )
    vocab = vocab_from_gene_metadata(
        pa.table({"token_id": np.arange(3, 62713), "gene_symbol": ["g"] * 62710})
    )
    from tahoeflow.cells.csr import to_csr

    with pytest.raises(InputError, match="'expressions' holds string"):
        to_csr(read_rows(p2), vocab, p2)
    p3 = tmp_path / "truncated.parquet"
    data = (tmp_path / "missing.parquet").read_bytes()
    p3.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_rows(p3)
    p4 = tmp_path / "empty.parquet"
    p4.write_bytes(b"")
    with pytest.raises(InputError, match="truncated or corrupt"):
        read_rows(p4)


@pytest.mark.workflow
@pytest.mark.parametrize("case", ["negative", "truncated"])
def test_workflow_job_fails_cleanly_and_leaves_no_output(case, small_demo, small_table, tmp_path):
    root, _ = small_demo
    if case == "truncated":
        data = (root / "data/train-00000-of-00002.parquet").read_bytes()
        bad = data[: len(data) // 3]
        expect = "truncated or corrupt"
    else:
        bad = _bad_tables(small_table)["negative"][0]
        expect = f"row {BAD_ROW}: negative count"
    mirror = local_mirror(tmp_path, root, {0: bad})
    cfg = {
        "source": {
            "kind": "local",
            "files": "0:2",
            "local": {"path": str(mirror), "n_files_total": 2},
        }
    }
    proc = run_smk(tmp_path / "wd", cfg, "results/merged/cells.parquet", cores=1)
    assert proc.returncode != 0
    err_lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.startswith("ERROR: ")]
    assert (
        err_lines
        and str(mirror / "data/train-00000-of-00002.parquet") in err_lines[0]
        and expect in err_lines[0]
    )
    shard_dir = tmp_path / "wd/results/shards/00000"
    assert not shard_dir.exists() or not any(shard_dir.iterdir())
    assert not (tmp_path / "wd/results/merged/cells.parquet").exists()


def test_error_line_reaches_stderr_whole(tmp_path, capfd):
    """The ERROR line goes to the stderr file descriptor as one complete line (one os.write, so
    jobs side by side cannot interleave it) and ends the job's log; exit status 1."""
    import types

    from tahoeflow.errors import InputError
    from tahoeflow.logs import run

    def main(smk, log):
        raise InputError(tmp_path / "x.parquet", "broken", row=4)

    smk = types.SimpleNamespace(log=[str(tmp_path / "job.log")])
    with pytest.raises(SystemExit) as exc:
        run(main, smk)
    assert exc.value.code == 1
    err = capfd.readouterr().err
    assert err == f"ERROR: {tmp_path / 'x.parquet'}, row 4: broken\n"
    assert (tmp_path / "job.log").read_text().rstrip().endswith(err.rstrip())
