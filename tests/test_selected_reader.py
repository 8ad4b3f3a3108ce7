"""The Gram pass's reader (``cells.selected.read_selected``) against the full reader.

Its counts, totals, cell ids and filter counts must be ``select_columns(load_shard(...).X,
columns)``'s, bit for bit, so the Gram matrices and HVG caches do not move; and a bad file
must raise the full reader's error for the lists.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tahoeflow.cells.doses import sample_doses
from tahoeflow.cells.normalize import select_columns
from tahoeflow.cells.plan import Shard
from tahoeflow.cells.read import read_shard
from tahoeflow.cells.selected import CELL_ID_COLUMN, read_selected
from tahoeflow.cells.summarize import Filters, drop_stored_zeros, filter_cells, load_shard
from tahoeflow.cells.vocab import Vocab, vocab_from_gene_metadata
from tahoeflow.errors import InputError
from tahoeflow.sources.tahoe import CLS_TOKEN


def assert_same(got, ref_counts, ref_totals, ref_ids):
    counts, totals, ids = got.counts, got.totals, got.obs[CELL_ID_COLUMN]
    assert counts.shape == ref_counts.shape
    for a in ("indptr", "indices", "data"):
        x, y = getattr(counts, a), getattr(ref_counts, a)
        assert x.dtype == y.dtype, a
        np.testing.assert_array_equal(x, y)
    assert totals.dtype == ref_totals.dtype == np.float64
    np.testing.assert_array_equal(totals, ref_totals)  # the same bits: no tolerance
    assert ids.tolist() == list(ref_ids)


@pytest.mark.parametrize(
    "filters,rows",
    [
        (Filters(), (0, None)),
        (Filters(min_genes=900), (100, 550)),
        (Filters(cell_lines=["CVCL_0459 "], drugs=["DMSO_TF", "Fumaric acid"]), (37, 801)),
        (Filters(plates=["no such plate"]), (0, None)),  # every cell filtered out
    ],
)
def test_equals_select_columns_of_the_full_reader_on_the_demo(small_demo, filters, rows):
    root, _ = small_demo
    vocab = vocab_from_gene_metadata(pq.read_table(root / "metadata/gene_metadata.parquet"))
    doses = sample_doses(pq.read_table(root / "metadata/sample_metadata.parquet").to_pandas(), "s")
    path = root / "data/train-00000-of-00002.parquet"
    shard = Shard("s", 0, *rows)
    ref = load_shard(path, shard, vocab, doses, filters)
    assert (ref.X.shape[0] == 0) == bool(filters.plates)
    cols = np.sort(np.random.default_rng(0).choice(vocab.n_genes, 300, replace=False))
    ref_counts, ref_totals = select_columns(ref.X, cols)
    obs = ["sample", "drug", "cell_line_id"]
    got = read_selected(path, shard, vocab, cols, filters, obs_columns=obs)
    assert_same(got, ref_counts, ref_totals, ref.obs["cell_id"])
    assert got.filter_counts == ref.filter_counts
    for c in obs:
        assert got.obs[c].tolist() == ref.obs[c].tolist(), c


G, FIRST = 50, 3


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    tokens = np.arange(FIRST, FIRST + G, dtype=np.int64)
    lookup = np.full(FIRST + G + 5, -1, dtype=np.int32)
    lookup[tokens] = np.arange(G, dtype=np.int32)
    return Vocab(tokens, lookup, np.zeros(G, dtype=bool))


def write_lists(path, rng, n, vocab, fractional=False, **edits):
    """Rows with unsorted genes, stored zeros, marker-only rows and (``fractional``) values
    whose float64 sum depends on the order of addition."""
    genes, exprs = [], []
    for i in range(n):
        k = 0 if i % 11 == 4 else int(rng.integers(1, 30))
        tok = rng.choice(vocab.token_ids, size=k, replace=False)
        if i % 3 == 0:
            tok = np.sort(tok)
        vals = rng.integers(0, 6, size=k).astype(np.float32)  # zeros are stored, then dropped
        if fractional:
            vals = (vals * 10 ** rng.uniform(-9, 9, size=k)).astype(np.float32)
        genes.append([CLS_TOKEN, *tok.tolist()])
        exprs.append([-1.0, *vals.tolist()])
    for r, (g, e) in edits.items():
        genes[int(r[1:])], exprs[int(r[1:])] = g, e
    ids = [f"c{i:04d}" for i in range(n)]
    table = pa.table(
        {
            "genes": pa.array(genes, pa.list_(pa.int64())),
            "expressions": pa.array(exprs, pa.list_(pa.float32())),
            CELL_ID_COLUMN: ids,
            "cell_line_id": [f"L{i % 3}" for i in range(n)],
        }
    )
    pq.write_table(table, path, row_group_size=23)
    return path


def full_reference(path, shard, vocab, cols, min_genes, allow_non_integer=False):
    """load_shard's steps after reading (no sample metadata here): zeros, filter, select."""
    obs, X = read_shard(
        path, vocab, shard.row_start, shard.row_stop,
        obs_columns=[CELL_ID_COLUMN, "cell_line_id"], allow_non_integer=allow_non_integer,
    )  # fmt: skip
    drop_stored_zeros(X)
    n_genes = np.diff(X.indptr)
    keep, counts, _ = filter_cells(
        Filters(cell_lines=["L1", "L2"], min_genes=min_genes), obs["cell_line_id"],
        np.empty(len(n_genes), object), np.empty(len(n_genes), object), n_genes,
    )  # fmt: skip
    sel, totals = select_columns(X[keep], cols)
    return sel, totals, obs[CELL_ID_COLUMN][keep], counts


@pytest.mark.parametrize("fractional", [False, True])
@pytest.mark.parametrize("rows", [(0, None), (10, 97), (50, 50)])
def test_unsorted_rows_zeros_and_order_dependent_sums(vocab, tmp_path, fractional, rows):
    rng = np.random.default_rng(7)
    path = write_lists(tmp_path / "x.parquet", rng, 120, vocab, fractional)
    shard = Shard("x", 0, *rows)
    cols = np.array([0, 3, 4, 17, 30, 49])
    for min_genes in (0, 8):
        ref = full_reference(path, shard, vocab, cols, min_genes, allow_non_integer=fractional)
        got = read_selected(
            path, shard, vocab, cols, Filters(cell_lines=["L1", "L2"], min_genes=min_genes),
            allow_non_integer=fractional, batch_rows=17,
        )  # fmt: skip
        assert_same(got, *ref[:3])
        assert got.filter_counts == ref[3]
    if fractional:  # the totals do depend on the order of addition: file order differs
        table = pq.read_table(path)
        g, e = table.column("genes").to_pylist(), table.column("expressions").to_pylist()
        differ = 0
        for gi, ei in zip(g, e, strict=True):
            v = np.asarray(ei[1:], np.float32).astype(np.float64)
            in_file = sum(v.tolist())
            in_order = sum(v[np.argsort(gi[1:], kind="stable")].tolist())
            differ += in_file != in_order
        assert differ > 5


def test_bad_lists_give_the_full_readers_error(vocab, tmp_path):
    rng = np.random.default_rng(8)
    cases = {
        "negative": {"r40": ([CLS_TOKEN, 5, 6], [-1.0, 2.0, -3.0])},
        "repeat": {"r70": ([CLS_TOKEN, 9, 5, 9], [-1.0, 1.0, 2.0, 3.0])},
        "vocab": {"r55": ([CLS_TOKEN, 10**6], [-1.0, 1.0])},
        "marker": {"r30": ([5, 6], [1.0, 2.0])},
        "length": {"r90": ([CLS_TOKEN, 5], [-1.0])},
        "non-integer": {"r33": ([CLS_TOKEN, 5], [-1.0, 1.5])},
    }
    shard = Shard("x", 0, 20, None)
    for name, edit in cases.items():
        path = write_lists(tmp_path / f"{name}.parquet", rng, 100, vocab, **edit)
        with pytest.raises(InputError) as full:
            read_shard(path, vocab, 20, None, obs_columns=[CELL_ID_COLUMN])
        with pytest.raises(InputError) as sel:
            read_selected(path, shard, vocab, np.array([1, 2]), Filters(), batch_rows=16)
        assert str(sel.value) == str(full.value), name
        assert f"row {next(iter(edit))[1:]}" in str(sel.value)


def test_cell_cycle_scores_from_the_selected_genes_equal_the_full_readers(small_demo):
    """cell_cycle_batch's path (only the scored genes read) against score_cells on the full
    counts: the same scores, bit for bit."""
    from tahoeflow.cells.normalize import log_normalize_selected
    from tahoeflow.phenotypes.cellcycle import Scorer, score_cells, score_normalized, scored_genes

    root, _ = small_demo
    vocab = vocab_from_gene_metadata(pq.read_table(root / "metadata/gene_metadata.parquet"))
    doses = sample_doses(pq.read_table(root / "metadata/sample_metadata.parquet").to_pandas(), "s")
    path = root / "data/train-00001-of-00002.parquet"
    shard = Shard("s", 1, 0, None)
    rng = np.random.default_rng(3)
    pick = rng.permutation(vocab.token_ids)  # pool genes are token ids, in no particular order
    scorer = Scorer(s=pick[:40], s_ctrl=pick[30:90], g2m=pick[90:140], g2m_ctrl=pick[140:200])
    ref = score_cells(load_shard(path, shard, vocab, doses, Filters()).X, scorer, vocab.lookup)
    tokens = scored_genes(scorer)
    sel = read_selected(path, shard, vocab, np.sort(vocab.lookup[tokens]), Filters())
    got = score_normalized(
        log_normalize_selected(sel.counts, sel.totals), scorer, vocab.lookup[tokens]
    )
    assert ref[0].size > 100 and np.unique(ref[2]).size == 3
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a, b)
