"""Argument checks shared by the model fitters and the feature transform.

Each raises :class:`~tahoeflow.errors.ArgumentError` naming the argument; a workflow script
that knows which config key fed it names the key with :func:`tahoeflow.errors.config_keys`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import Any

from tahoeflow.errors import ArgumentError


def check_int(value: Any, argument: str, minimum: int) -> int:
    """``value`` as an int, refusing booleans, non-integers and values below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ArgumentError(argument, f"must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_cv_folds(
    cv_folds: Any, n_train: int | None = None, allow_zero: bool = True, argument: str = "cv_folds"
) -> int:
    """0 disables CV (where allowed); otherwise at least 2 and, given ``n_train``, at most that."""
    if isinstance(cv_folds, bool) or not isinstance(cv_folds, Integral):
        raise ArgumentError(argument, f"must be an integer, got {cv_folds!r}")
    k = int(cv_folds)
    if k == 0 and allow_zero:
        return 0
    if k < 2:
        need = "0 (no CV) or >= 2" if allow_zero else ">= 2"
        raise ArgumentError(argument, f"must be {need}, got {k}")
    if n_train is not None and k > n_train:
        raise ArgumentError(argument, f"{k} folds but only {n_train} training rows")
    return k


def check_names(
    names: Any,
    argument: str,
    allowed: Sequence[str] | None = None,
    allow_empty: bool = False,
) -> list[str]:
    """A list of distinct non-empty strings (from ``allowed`` when given; empty only if allowed)."""
    if isinstance(names, str) or not isinstance(names, Sequence) or not (names or allow_empty):
        raise ArgumentError(argument, f"must be a non-empty list of names, got {names!r}")
    out = list(names)
    if not all(isinstance(f, str) and f for f in out):
        raise ArgumentError(argument, f"must be a list of non-empty strings, got {out!r}")
    if len(set(out)) != len(out):
        raise ArgumentError(argument, f"has duplicate names: {out!r}")
    if allowed is not None:
        bad = [f for f in out if f not in allowed]
        if bad:
            raise ArgumentError(argument, f"unknown name(s) {bad}; allowed: {list(allowed)}")
    return out


def check_alpha(alpha: Any) -> float:
    """A finite regularisation strength >= 0."""
    if (
        isinstance(alpha, bool)
        or not isinstance(alpha, Real)
        or not math.isfinite(float(alpha))
        or float(alpha) < 0
    ):
        raise ArgumentError("alpha", f"must be a finite number >= 0, got {alpha!r}")
    return float(alpha)


def check_max_train_cells(value: Any) -> int | None:
    """None (no cap) or an integer >= 2."""
    return None if value is None else check_int(value, "max_train_cells", 2)


def check_max_samples(value: Any) -> int | float | None:
    """RandomForest's ``max_samples``: None (n rows per tree), an int >= 1, or a fraction in (0, 1]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ArgumentError(
            "max_samples", f"must be None, an integer >= 1 or a fraction in (0, 1], got {value!r}"
        )
    if isinstance(value, Integral):
        return check_int(value, "max_samples", 1)
    v = float(value)
    if not 0.0 < v <= 1.0:
        raise ArgumentError("max_samples", f"a fraction must lie in (0, 1], got {value!r}")
    return v


def check_max_leaf_nodes(value: Any) -> int | None:
    """RandomForest's ``max_leaf_nodes``: None (unbounded) or an int >= 2."""
    return None if value is None else check_int(value, "max_leaf_nodes", 2)


def rows_per_tree(n_rows: int, max_samples: int | float | None) -> int:
    """Rows a forest draws per tree from ``n_rows`` (scikit-learn's bootstrap size): all of
    them for None, an int as given (at most ``n_rows``), a fraction truncated (at least 1)."""
    if max_samples is None:
        return n_rows
    if isinstance(max_samples, Integral):
        return min(int(max_samples), n_rows)
    return max(int(n_rows * float(max_samples)), 1)


def leaf_bound(max_leaf_nodes: int | None, n_rows_per_tree: int) -> int | None:
    """The ``max_leaf_nodes`` a forest is given: None where the bound cannot bind.

    A tree grown on ``n_rows_per_tree`` rows has at most that many leaves, so a bound at or
    above it changes nothing but scikit-learn's builder (best-first instead of depth-first,
    which draws the per-node features in another order): passing None then keeps the
    unbounded forest bit for bit.
    """
    if max_leaf_nodes is None or max_leaf_nodes >= n_rows_per_tree:
        return None
    return max_leaf_nodes


NODE_BYTES = 64
"""Bytes of one scikit-learn tree node besides its values (``Tree.nodes``' record)."""


def forest_nbytes_bound(
    n_estimators: int,
    n_rows: int,
    max_samples: int | float | None,
    max_leaf_nodes: int | None,
    n_values: int,
) -> int:
    """Upper bound of a fitted forest's node arrays, in bytes.

    A binary tree with ``l`` leaves has ``2 l - 1`` nodes; its leaves are at most the rows
    it draws and, with a bound, ``max_leaf_nodes``. Each node holds :data:`NODE_BYTES` and
    ``n_values`` float64 values (the classes of a classifier, 1 for a regressor).
    """
    rows = rows_per_tree(n_rows, max_samples)
    leaves = max(min(rows, max_leaf_nodes or rows), 1)
    return n_estimators * (2 * leaves - 1) * (NODE_BYTES + 8 * n_values)


def check_forest(n_estimators: Any, max_depth: Any) -> tuple[int, int | None]:
    """Trees (>= 1) and depth (None or >= 1) of a random forest."""
    n = check_int(n_estimators, "n_estimators", 1)
    d = None if max_depth is None else check_int(max_depth, "max_depth", 1)
    return n, d
