"""The compiled kernels of the summary step against plain numpy / scipy references.

* statistics: ``shard_stats`` against the bincount formulation it replaced;
* pseudobulk: against the sparse indicator product it replaced (bit-identical sums);
* lists -> CSR: against a per-row reference, with unsorted genes (a repeated gene is an error:
  tests/test_reader_hardening.py);
* validation: the kernel's first bad position for every check, and the error of the whole
  reader (streamed in batches, problems in several rows and batches) against the sequential
  vectorised checks it replaced, message for message.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from tahoeflow.cells.csr import (
    K_EMPTY,
    K_LENGTH,
    K_MARKER,
    K_NEGATIVE,
    K_NONFINITE,
    K_NONINTEGER,
    K_VOCAB,
    N_CODES,
    _csr_kernel,
    obs_arrays,
    to_csr,
)
from tahoeflow.cells.read import read_rows, read_shard
from tahoeflow.cells.stats import keep_rows_inplace, pseudobulk, shard_stats
from tahoeflow.cells.vocab import Vocab
from tahoeflow.errors import InputError
from tahoeflow.sources.tahoe import CLS_TOKEN

G = 40
FIRST = 3


@pytest.fixture(scope="module")
def vocab() -> Vocab:
    tokens = np.arange(FIRST, FIRST + G, dtype=np.int64)
    lookup = np.full(FIRST + G + 5, -1, dtype=np.int32)  # 5 trailing ids that are not genes
    lookup[tokens] = np.arange(G, dtype=np.int32)
    is_mito = np.zeros(G, dtype=bool)
    is_mito[[2, 7, 30]] = True
    return Vocab(tokens, lookup, is_mito)


def random_csr(rng: np.random.Generator, n: int = 60, dtype=np.float32) -> sp.csr_matrix:
    """Counts with empty rows, one-value rows, constant rows, large counts (> log table)."""
    rows = []
    for i in range(n):
        kind = i % 6
        k = {0: 0, 1: 1}.get(kind, int(rng.integers(2, G)))
        cols = np.sort(rng.choice(G, size=k, replace=False))
        if kind == 2:
            vals = np.full(k, 3.0)  # constant: NaN skew
        elif kind == 3:
            vals = rng.integers(50, 5000, size=k).astype(float)  # beyond the log1p table
        else:
            vals = rng.integers(1, 12, size=k).astype(float)
        rows.append((cols, vals))
    indptr = np.cumsum([0] + [c.size for c, _ in rows])
    X = sp.csr_matrix(
        (
            np.concatenate([v for _, v in rows]).astype(dtype),
            np.concatenate([c for c, _ in rows]),
            indptr,
        ),
        shape=(n, G),
    )
    return X


def reference_stats(X: sp.csr_matrix, is_mito: np.ndarray, target_sum: float = 1e4):
    """The bincount formulation: one temporary array per quantity."""
    n, G = X.shape
    k = np.diff(X.indptr)
    rows = np.repeat(np.arange(n), k)
    x = X.data.astype(np.float64)
    s1, s2, s3 = (np.bincount(rows, weights=w, minlength=n) for w in (x, x * x, x * x * x))
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = s1 / k
        m2 = np.maximum(s2 / k - mean * mean, 0.0)
        m3 = s3 / k - 3.0 * mean * (s2 / k) + 2.0 * mean**3
        eps = np.finfo(np.float64).resolution * 10
        skew = np.where(m2 <= (eps * mean) ** 2, np.nan, m3 / m2**1.5)
        scale = np.where(s1 > 0, target_sum / s1, 0.0)
        norm = x * scale[rows]
        logn = np.log1p(norm)
        mito = np.bincount(rows, weights=x * is_mito[X.indices], minlength=n)
        cells = {
            "n_genes": k,
            "total_counts": s1,
            "expr_mean": mean,
            "expr_std": np.sqrt(m2),
            "expr_skew": skew,
            "pct_mito": 100 * mito / s1,
            "mean_log_norm": np.bincount(rows, weights=logn, minlength=n) / k,
        }
    idx = X.indices
    genes = {
        "n_cells": np.bincount(idx, minlength=G),
        "sum_log": np.bincount(idx, weights=logn, minlength=G),
        "sumsq_log": np.bincount(idx, weights=logn * logn, minlength=G),
        "sum_norm": np.bincount(idx, weights=norm, minlength=G),
        "sumsq_norm": np.bincount(idx, weights=norm * norm, minlength=G),
    }
    return cells, genes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_stats_kernel_equals_the_bincount_reference(dtype, vocab):
    rng = np.random.default_rng(0)
    X = random_csr(rng, dtype=dtype)
    if dtype == np.float64:  # normalised input: non-integer values take the log1p path
        X.data = X.data * 0.37
    cells, genes = shard_stats(X, vocab.is_mito)
    ref_c, ref_g = reference_stats(X, vocab.is_mito)
    for key, ref in ref_c.items():
        np.testing.assert_allclose(cells[key], ref, rtol=1e-12, atol=0, err_msg=key)
    for key, ref in ref_g.items():
        np.testing.assert_allclose(genes[key], ref, rtol=1e-12, atol=0, err_msg=key)
    assert cells["n_genes"].dtype == np.int32 and genes["n_cells"].dtype == np.int64
    k = cells["n_genes"]
    assert np.isnan(cells["expr_skew"][k == 1]).all()
    if dtype == np.float32:  # constant rows (exact values): NaN skew
        assert np.isnan(cells["expr_skew"][2::6][k[2::6] > 0]).all()
    assert (
        np.isnan(cells["expr_mean"][k == 0]).all()
        and np.isnan(cells["mean_log_norm"][k == 0]).all()
    )


def test_stats_kernel_handles_empty_and_unsorted_matrices(vocab):
    cells, genes = shard_stats(sp.csr_matrix((0, G), dtype=np.float32), vocab.is_mito)
    assert all(v.size == 0 for v in cells.values()) and (genes["n_cells"] == 0).all()
    rng = np.random.default_rng(1)
    X = random_csr(rng)
    Y = X.copy()
    for i in range(Y.shape[0]):  # reverse each row: same statistics
        sl = slice(Y.indptr[i], Y.indptr[i + 1])
        Y.indices[sl], Y.data[sl] = Y.indices[sl][::-1].copy(), Y.data[sl][::-1].copy()
    a, b = shard_stats(X, vocab.is_mito), shard_stats(Y, vocab.is_mito)
    for d1, d2 in zip(a, b, strict=True):
        for key in d1:
            np.testing.assert_allclose(d1[key], d2[key], rtol=1e-12, err_msg=key)


def indicator_product(X: sp.csr_matrix, codes: np.ndarray, n_groups: int) -> sp.csr_matrix:
    n = X.shape[0]
    ind = sp.csr_matrix((np.ones(n), (codes, np.arange(n))), shape=(n_groups, n))
    out = (ind @ X.astype(np.float64)).tocsr()
    out.sort_indices()
    return out


@pytest.mark.parametrize("n_groups", [1, 3, 25, 90])
def test_pseudobulk_equals_the_indicator_product_bit_for_bit(n_groups):
    rng = np.random.default_rng(n_groups)
    X = random_csr(rng, n=80)
    X.data[::7] = 0.0  # stored zeros: a group's zero sum is not stored
    codes = rng.integers(0, n_groups, size=80)
    codes[codes == n_groups - 1] = 0  # the last group is empty
    got, ref = pseudobulk(X, codes, n_groups), indicator_product(X, codes, n_groups)
    assert got.shape == ref.shape == (n_groups, G)
    np.testing.assert_array_equal(got.indptr, ref.indptr)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_array_equal(got.data, ref.data)  # same order of additions: same bits
    assert got.data.dtype == np.float64 and (got.data != 0).all()


def test_pseudobulk_dense_and_sparse_paths_agree():
    """Groups above and below the size where the kernel reads its accumulator densely."""
    rng = np.random.default_rng(5)
    n, ncol = 400, 4000
    X = sp.random(n, ncol, density=0.01, format="csr", random_state=7, dtype=np.float64)
    X.data = np.floor(X.data * 20).astype(np.float32)
    X = X.astype(np.float32)
    codes = np.where(
        np.arange(n) < 300, 0, rng.integers(1, 60, size=n)
    )  # one big group, many small
    got, ref = pseudobulk(X, codes, 60), indicator_product(X, codes, 60)
    np.testing.assert_array_equal(got.indices, ref.indices)
    np.testing.assert_array_equal(got.data, ref.data)
    np.testing.assert_array_equal(got.indptr, ref.indptr)


def test_keep_rows_inplace_equals_fancy_indexing():
    rng = np.random.default_rng(2)
    X = random_csr(rng)
    keep = rng.random(X.shape[0]) < 0.6
    ref = X[np.flatnonzero(keep)]
    got = keep_rows_inplace(X.copy(), keep)
    assert got.shape == ref.shape
    for a in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(got, a), getattr(ref, a))


# --- lists -> CSR ------------------------------------------------------------------------
def random_lists(rng: np.random.Generator, n: int, vocab: Vocab, unsorted: bool = True):
    genes, exprs = [], []
    for i in range(n):
        k = 0 if i % 9 == 4 else int(rng.integers(1, 25))  # some rows hold only the marker
        tok = rng.choice(vocab.token_ids, size=k, replace=False)  # a repeat is an error
        if not unsorted:
            tok = np.unique(tok)
        elif i % 2:
            tok = rng.permutation(tok)
        genes.append([CLS_TOKEN, *tok.tolist()])
        exprs.append([-2.0, *rng.integers(0, 9, size=tok.size).astype(float).tolist()])
    return genes, exprs


def reference_csr(genes, exprs, vocab: Vocab) -> sp.csr_matrix:
    indptr, idx, dat = [0], [], []
    for g, e in zip(genes, exprs, strict=True):
        idx += vocab.lookup[np.asarray(g[1:], dtype=np.int64)].tolist()
        dat += e[1:]
        indptr.append(len(idx))
    X = sp.csr_matrix(
        (np.asarray(dat, np.float32), np.asarray(idx, np.int32), indptr),
        shape=(len(genes), vocab.n_genes),
    )
    X.sum_duplicates()
    return X


def lists_table(genes, exprs, g_type=None, e_type=None, **obs) -> pa.Table:
    cols = {
        "genes": pa.array(genes, pa.list_(g_type or pa.int64())),
        "expressions": pa.array(exprs, pa.list_(e_type or pa.float32())),
    }
    return pa.table({**cols, **{k: pa.array(v) for k, v in obs.items()}})


@pytest.mark.parametrize("unsorted", [False, True])
def test_to_csr_equals_the_row_by_row_reference(unsorted, vocab):
    rng = np.random.default_rng(3)
    genes, exprs = random_lists(rng, 70, vocab, unsorted)
    table = lists_table(genes, exprs)
    table = pa.concat_tables([table.slice(0, 13), table.slice(13, 40), table.slice(53)])  # chunks
    X, ref = to_csr(table, vocab, "t"), reference_csr(genes, exprs, vocab)
    assert X.has_canonical_format and X.indices.dtype == np.int32 and X.data.dtype == np.float32
    assert X.indptr.dtype == np.int32
    for a in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(X, a), getattr(ref, a))


@pytest.mark.parametrize(
    "g_type,e_type",
    [(pa.int32(), pa.float64()), (pa.uint16(), pa.int64()), (pa.int64(), pa.float16())],
)
def test_to_csr_other_value_types(g_type, e_type, vocab):
    rng = np.random.default_rng(4)
    genes, exprs = random_lists(rng, 30, vocab)
    X = to_csr(lists_table(genes, exprs, g_type, e_type), vocab, "t")
    ref = reference_csr(genes, exprs, vocab)
    np.testing.assert_array_equal(X.toarray(), ref.toarray())


# --- validation ---------------------------------------------------------------------------
def kernel_first_errors(genes, exprs, vocab):
    g_off = np.cumsum([0] + [len(g) for g in genes]).astype(np.int64)
    e_off = np.cumsum([0] + [len(e) for e in exprs]).astype(np.int64)
    g_val = np.asarray([t for g in genes for t in g], dtype=np.int64)
    e_val = np.asarray([v for e in exprs for v in e], dtype=np.float32)
    err = np.full((N_CODES, 2), -1, dtype=np.int64)
    cap = max(int(g_off[-1]), 1)
    _csr_kernel(g_off, g_val, e_off, e_val, vocab.lookup, CLS_TOKEN, np.empty(len(genes) + 1, np.int64),
                np.empty(cap, np.int32), np.empty(cap, np.float32), 0, err)  # fmt: skip
    return err, g_off, e_off


def _inject(code, genes, exprs, r, vocab):
    """Make row r bad for ``code``; the value position (in the flattened lists) or -1."""
    g, e = genes[r], exprs[r]
    if code == K_LENGTH:
        e.append(1.0)
    elif code == K_EMPTY:
        g.clear()
        e.clear()
    elif code == K_MARKER:
        e[0] = 0.0 if r % 2 else float("nan")
    else:
        j = 2
        if code == K_VOCAB:
            g[j] = [-5, FIRST + G + 1, 10**9][r % 3]
        else:
            e[j] = {
                K_NONFINITE: [float("nan"), float("inf"), float("-inf")][r % 3],
                K_NEGATIVE: -3.0,
                K_NONINTEGER: 2.5,
            }[code]
        return j
    return -1


@pytest.mark.parametrize(
    "code", [K_LENGTH, K_EMPTY, K_MARKER, K_VOCAB, K_NONFINITE, K_NEGATIVE, K_NONINTEGER]
)
def test_validation_kernel_reports_the_first_bad_position_of_every_check(code, vocab):
    rng = np.random.default_rng(code)
    genes, exprs = random_lists(rng, 40, vocab, unsorted=False)
    for i in range(40):  # at least 3 genes per row so position 2 exists
        while len(genes[i]) < 4:
            genes[i].append(int(next(t for t in vocab.token_ids if t not in genes[i])))
            exprs[i].append(1.0)
    j = [_inject(code, genes, exprs, r, vocab) for r in (29, 11, 17)][1]  # rows 11, 17, 29 are bad
    err, g_off, e_off = kernel_first_errors(genes, exprs, vocab)
    assert err[code, 0] == 11
    others = [c for c in range(N_CODES) if c != code]
    assert (err[others, 0] == -1).all(), err
    if j >= 0:
        off = g_off if code == K_VOCAB else e_off
        assert err[code, 1] == off[11] + j


# the checks as they were before the fused kernel (vectorised, one after the other over the
# whole table): the reference for which error, which row and which message
def _old_flat(table, col, path):
    arr = table.column(col).combine_chunks()
    if not (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)):
        raise InputError(path, f"column '{col}' has type {arr.type}, expected a list")
    if arr.null_count:
        raise InputError(
            path,
            f"column '{col}' is null",
            row=int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]),
        )
    off = arr.offsets.to_numpy().astype(np.int64)
    values = arr.values.slice(int(off[0]), int(off[-1] - off[0]))
    if values.null_count:
        vpos = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise InputError(
            path,
            f"column '{col}' holds a null value",
            row=int(np.searchsorted(off - off[0], vpos, side="right") - 1),
        )
    return off - off[0], values.to_numpy(zero_copy_only=False), arr.type.value_type


def old_to_csr_error(table, vocab, path, row_offset=0) -> str | None:
    try:
        g_off, g_val, g_type = _old_flat(table, "genes", path)
        e_off, e_val, e_type = _old_flat(table, "expressions", path)
        if not pa.types.is_integer(g_type):
            raise InputError(path, f"column 'genes' holds {g_type}, expected integer token ids")
        if not (pa.types.is_floating(e_type) or pa.types.is_integer(e_type)):
            raise InputError(path, f"column 'expressions' holds {e_type}, expected numbers")
        n, lengths = g_off.size - 1, np.diff(g_off)
        if not np.array_equal(g_off, e_off):
            bad = int(np.flatnonzero(lengths != np.diff(e_off))[0])
            raise InputError(
                path,
                f"'genes' has {lengths[bad]} entries but 'expressions' has {np.diff(e_off)[bad]}",
                row=row_offset + bad,
            )
        if n == 0:
            return None
        first, empty = g_off[:-1], lengths == 0
        if empty.any():
            raise InputError(
                path,
                "empty 'genes' list: no marker at element 0",
                row=row_offset + int(np.flatnonzero(empty)[0]),
            )
        no_marker = (g_val[first] != CLS_TOKEN) | ~(e_val[first] < 0)
        if no_marker.any():
            r = int(np.flatnonzero(no_marker)[0])
            raise InputError(
                path,
                f"no marker at element 0 (expected genes[0]={CLS_TOKEN} and a negative expressions[0], found {g_val[first[r]]} and {e_val[first[r]]})",
                row=row_offset + r,
            )
        keep = np.ones(g_val.size, dtype=bool)
        keep[first] = False
        tokens, data, indptr = g_val[keep], e_val[keep], g_off - np.arange(n + 1)

        def row_of(pos):
            return row_offset + int(np.searchsorted(indptr, pos, side="right") - 1)

        in_range = (tokens >= 0) & (tokens < vocab.lookup.size)
        cols = np.full(tokens.size, -1, dtype=np.int32)
        cols[in_range] = vocab.lookup[tokens[in_range].astype(np.int64)]
        if (cols < 0).any():
            pos = int(np.flatnonzero(cols < 0)[0])
            raise InputError(
                path, f"token id {int(tokens[pos])} is outside the gene vocabulary", row=row_of(pos)
            )
        data = data.astype(np.float32)
        for bad, text in (
            (~np.isfinite(data), "count {} is not finite"),
            (data < 0, "negative count {}"),
            (
                data != np.rint(data),
                "non-integer count {} (raw UMI counts expected; set input.normalised: true for normalised input)",
            ),
        ):
            if bad.any():
                pos = int(np.flatnonzero(bad)[0])
                raise InputError(path, text.format(data[pos]), row=row_of(pos))
    except InputError as e:
        return str(e)
    return None


def _error_of(fn) -> str | None:
    try:
        fn()
    except InputError as e:
        return str(e)
    return None


def test_to_csr_errors_equal_the_sequential_checks_for_random_problems(vocab):
    rng = np.random.default_rng(11)
    codes = [K_LENGTH, K_EMPTY, K_MARKER, K_VOCAB, K_NONFINITE, K_NEGATIVE, K_NONINTEGER]
    seen = set()
    for trial in range(120):
        genes, exprs = random_lists(rng, 30, vocab, unsorted=False)
        for i in range(30):
            while len(genes[i]) < 4:
                genes[i].append(int(next(t for t in vocab.token_ids if t not in genes[i])))
                exprs[i].append(1.0)
        for code, row in zip(
            rng.choice(codes, size=3), rng.choice(30, size=3, replace=False), strict=True
        ):
            _inject(int(code), genes, exprs, int(row), vocab)
        table = lists_table(genes, exprs)
        table = pa.concat_tables([table.slice(0, 9), table.slice(9)])  # two batches
        expected = old_to_csr_error(table, vocab, "f.parquet", row_offset=100)
        got = _error_of(lambda t=table: to_csr(t, vocab, "f.parquet", row_offset=100))
        assert got == expected, trial
        seen.add(expected.split(": ", 1)[1][:12])
    assert len(seen) >= 6  # most kinds of problem were the reported one at least once


def test_structural_problems_equal_the_sequential_checks(vocab):
    rng = np.random.default_rng(12)
    genes, exprs = random_lists(rng, 20, vocab)
    base = lists_table(genes, exprs)
    g_null = pa.array([None if i == 15 else g for i, g in enumerate(genes)], pa.list_(pa.int64()))
    e_vnull = pa.array(
        [[*e[:1], None, *e[2:]] if i == 6 and len(e) > 1 else e for i, e in enumerate(exprs)],
        pa.list_(pa.float32()),
    )
    e_str = pa.array([[str(v) for v in e] for e in exprs], pa.list_(pa.string()))
    g_flat = pa.array([g[0] for g in genes], pa.int64())
    cases = {
        "genes null, late": base.set_column(0, "genes", g_null),
        "expressions value null": base.set_column(1, "expressions", e_vnull),
        "both: genes null wins": base.set_column(0, "genes", g_null).set_column(
            1, "expressions", e_vnull
        ),
        "expressions of strings": base.set_column(1, "expressions", e_str),
        "genes null before a type": base.set_column(0, "genes", g_null).set_column(
            1, "expressions", e_str
        ),
        "genes not a list": base.set_column(0, "genes", g_flat),
        "empty table": base.slice(0, 0),
    }
    for name, table in cases.items():
        table = pa.concat_tables([table.slice(0, 8), table.slice(8)])
        assert _error_of(lambda t=table: to_csr(t, vocab, "p")) == old_to_csr_error(
            table, vocab, "p"
        ), name


def test_allow_non_integer_warns_once_with_the_first_row(vocab):
    rng = np.random.default_rng(13)
    genes, exprs = random_lists(rng, 20, vocab, unsorted=False)
    for r in (14, 5):
        exprs[r][1:] = [v + 0.5 for v in exprs[r][1:]]
    table = lists_table(genes, exprs)
    warnings = []
    X = to_csr(table, vocab, "p", row_offset=3, allow_non_integer=True, warn=warnings.append)
    assert len(warnings) == 1 and warnings[0].startswith("warning: p, row 8: non-integer count")
    assert X[5].sum() == pytest.approx(sum(exprs[5][1:]))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("batch_rows", [2, 3, 7, 2048])
def test_streamed_reader_equals_read_rows_obs_arrays_to_csr(batch_rows, threads, vocab, tmp_path):
    """Row ranges across row groups, problems in several batches: same result, same error
    (threads > 1: Arrow's threads decode, the next batch is decoded while this one converts)."""
    rng = np.random.default_rng(14)
    n = 50
    genes, exprs = random_lists(rng, n, vocab)
    obs = {c: [f"{c}{i % 4}" for i in range(n)] for c in ("drug", "sample")}
    path = tmp_path / "ok.parquet"
    pq.write_table(lists_table(genes, exprs, **obs), path, row_group_size=10)
    for start, stop in ((0, None), (4, 33), (20, 20), (45, 90)):
        got_obs, X = read_shard(
            path, vocab, start, stop, obs_columns=["drug", "sample"], batch_rows=batch_rows,
            threads=threads,
        )  # fmt: skip
        table = read_rows(path, start, stop, columns=["genes", "expressions", "drug", "sample"])
        ref_obs = obs_arrays(table, path, ["drug", "sample"], row_offset=start)
        ref = to_csr(table, vocab, path, row_offset=start)
        assert X.shape == ref.shape
        np.testing.assert_array_equal(X.toarray(), ref.toarray())
        for c in ref_obs:
            assert got_obs[c].tolist() == ref_obs[c].tolist()
    # problems: negative count in row 5, token out of vocabulary in row 32, null sample in row 40
    exprs[5][1] = -1.0
    genes[32][1] = 10**6
    bad_obs = {**obs, "sample": [None if i == 40 else s for i, s in enumerate(obs["sample"])]}
    for name, o in (("lists", obs), ("obs first", bad_obs)):
        path = tmp_path / f"bad-{name}.parquet"
        pq.write_table(lists_table(genes, exprs, **o), path, row_group_size=10)
        got = _error_of(
            lambda p=path: read_shard(
                p,
                vocab,
                2,
                None,
                obs_columns=["drug", "sample"],
                batch_rows=batch_rows,
                threads=threads,
            )  # fmt: skip
        )
        table = read_rows(path, 2, None, columns=["genes", "expressions", "drug", "sample"])
        expected = _error_of(
            lambda t=table, p=path: obs_arrays(t, p, ["drug", "sample"], row_offset=2)
        ) or old_to_csr_error(table, vocab, path, row_offset=2)
        assert got == expected
        assert (
            "row 40: column 'sample' is null" if name == "obs first" else "row 32: token id 1000000"
        ) in got


@pytest.mark.parametrize("threads", [1, 2])
def test_a_corrupt_row_group_after_good_ones_names_the_file(threads, vocab, tmp_path):
    """A damaged data page in the third row group: an InputError naming the file, not a crash
    (and no partial result), whichever reader decodes it."""
    rng = np.random.default_rng(15)
    genes, exprs = random_lists(rng, 60, vocab, unsorted=False)
    path = tmp_path / "ok.parquet"
    pq.write_table(lists_table(genes, exprs, drug=["d"] * 60), path, row_group_size=20)
    col = pq.ParquetFile(path).metadata.row_group(2).column(0)
    start = col.dictionary_page_offset or col.data_page_offset
    raw = bytearray(path.read_bytes())
    for k in range(start + 8, start + col.total_compressed_size - 8):
        raw[k] ^= 0x5A
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(bytes(raw))
    read_shard(path, vocab, obs_columns=["drug"], threads=threads)
    with pytest.raises(
        InputError, match=r"bad\.parquet: cannot decode Parquet data \(truncated or corrupt\?\)"
    ):
        read_shard(bad, vocab, obs_columns=["drug"], threads=threads)


def test_threads_give_the_same_shard_tables_and_errors(small_demo, tmp_path):
    """threads=2 (Arrow threads decode, prefetch, stats and pseudobulk at once) changes
    nothing."""
    from tahoeflow.cells.doses import sample_doses
    from tahoeflow.cells.plan import Shard
    from tahoeflow.cells.summarize import Filters, load_shard, summarize
    from tahoeflow.cells.vocab import vocab_from_gene_metadata

    root, _ = small_demo
    vocab = vocab_from_gene_metadata(pq.read_table(root / "metadata/gene_metadata.parquet"))
    doses = sample_doses(pq.read_table(root / "metadata/sample_metadata.parquet").to_pandas(), "s")
    path = root / "data/train-00000-of-00002.parquet"
    shard = Shard("s", 0, 100, 550)
    out = []
    for threads in (1, 2):
        ls = load_shard(path, shard, vocab, doses, Filters(min_genes=900), threads=threads)
        out.append((ls.filter_counts, summarize(ls, vocab, threads=threads)))
    assert out[0][0] == out[1][0] and out[0][0]["removed_by_min_genes"] > 0
    for a, b in zip(out[0][1], out[1][1], strict=True):
        assert a.equals(b)
    table = pq.read_table(path)
    exprs = table.column("expressions").to_pylist()
    exprs[333][2] = -1.0
    bad = tmp_path / "bad.parquet"
    pq.write_table(
        table.set_column(1, "expressions", pa.array(exprs, pa.list_(pa.float32()))),
        bad,
        row_group_size=64,
    )
    errors = {
        _error_of(lambda t=t: load_shard(bad, shard, vocab, doses, Filters(), threads=t))
        for t in (1, 2)
    }
    assert len(errors) == 1 and "row 333: negative count -1.0" in errors.pop()


def test_summarize_tables_equal_shard_stats_and_the_indicator_product(vocab):
    """summarize's tables (groups from per-column codes) against the references."""
    import pandas as pd

    from tahoeflow.cells.summarize import CELL_COLUMNS, LoadedShard, summarize

    rng = np.random.default_rng(21)
    n = 90
    X = random_csr(rng, n=n)
    samples = np.array([f"s{i}" for i in rng.integers(0, 7, size=n)], dtype=object)
    lines = np.array([f"L{i}" for i in rng.integers(0, 3, size=n)], dtype=object)
    obs = pd.DataFrame(
        {
            c: np.array(["x"] * n, dtype=object)
            for c in CELL_COLUMNS
            if c in ("cell_id", "shard", "plate", "drug", "moa_fine")
        }
    )
    obs = obs.assign(
        file_row=np.arange(n), sample=samples, dose_uM=1.0, cell_line_id=lines, is_control=False
    )
    cells_t, genes_t, pb_t = summarize(LoadedShard(obs, X), vocab)
    cells, genes = shard_stats(X, vocab.is_mito)
    for key, ref in cells.items():
        np.testing.assert_allclose(cells_t.column(key).to_numpy(), ref, rtol=1e-12, err_msg=key)
    for key, ref in genes.items():
        np.testing.assert_allclose(genes_t.column(key).to_numpy(), ref, rtol=1e-12, err_msg=key)
    key = pd.MultiIndex.from_arrays([samples, lines])
    codes, uniq = pd.factorize(key, sort=True)
    ref = indicator_product(X, codes, len(uniq)).tocoo()
    assert pb_t.column("sample").to_pylist() == list(uniq.get_level_values(0)[ref.row])
    assert pb_t.column("cell_line_id").to_pylist() == list(uniq.get_level_values(1)[ref.row])
    np.testing.assert_array_equal(pb_t.column("token_id").to_numpy(), vocab.token_ids[ref.col])
    np.testing.assert_array_equal(pb_t.column("count").to_numpy(), ref.data)


# --- log-normalised HVG columns ----------------------------------------------------------------
def test_log_normalize_columns_equals_scanpy_then_subset():
    """Normalising only the kept columns = scanpy normalize_total + log1p of all genes, subset."""
    import anndata as ad
    import scanpy as sc

    from tahoeflow.cells import normalize as pp

    rng = np.random.default_rng(7)
    X = random_csr(rng, n=80)
    cols = np.sort(rng.choice(G, size=13, replace=False))
    ours = pp.log_normalize_columns(X, cols)
    assert ours.shape == (80, 13) and ours.has_sorted_indices
    # the two-step path: same structure, values to rounding (totals summed in another order)
    two_step = pp.log_normalize(X)[:, cols].tocsr()
    two_step.sort_indices()
    np.testing.assert_array_equal(ours.indptr, two_step.indptr)
    np.testing.assert_array_equal(ours.indices, two_step.indices)
    np.testing.assert_allclose(ours.data, two_step.data, rtol=1e-14, atol=0)
    # against scanpy (an independent implementation), zero-count rows included
    a = ad.AnnData(X.astype(np.float64))
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    np.testing.assert_allclose(ours.toarray(), a.X[:, cols].toarray(), rtol=1e-12, atol=0)
    assert np.diff(X.indptr).min() == 0 and ours[np.diff(X.indptr) == 0].nnz == 0


def test_log_normalize_columns_rejects_bad_columns():
    from tahoeflow.cells import normalize as pp

    X = random_csr(np.random.default_rng(0), n=10)
    with pytest.raises(ValueError, match="strictly increasing"):
        pp.log_normalize_columns(X, np.array([3, 1]))
    with pytest.raises(ValueError, match="below"):
        pp.log_normalize_columns(X, np.array([0, G]))
    assert pp.log_normalize_columns(X, np.array([], dtype=int)).shape == (10, 0)
