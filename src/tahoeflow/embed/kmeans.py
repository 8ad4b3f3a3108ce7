"""Clustering of the embedding: KMeans, or MiniBatchKMeans above a number of cells."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from tahoeflow.embed._args import positive_int
from tahoeflow.errors import ArgumentError

__all__ = ["fit_kmeans", "kmeans"]


def fit_kmeans(
    emb: ArrayLike,
    n_clusters: int,
    *,
    seed: int,
    minibatch_threshold: int = 200_000,
    batch_size: int = 1024,
    n_init: int = 1,
    n_threads: int | None = 1,
) -> tuple[Any, str]:
    """The fitted estimator of :func:`kmeans` and its method name (to assign more cells with
    ``predict``)."""
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    X = np.asarray(emb)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"emb must be a non-empty 2-D array, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.floating):
        X = X.astype(np.float64)
    n = X.shape[0]
    if positive_int("n_clusters", n_clusters) > n:
        raise ArgumentError(
            "n_clusters", f"must be between 1 and the {n} cells, got {n_clusters!r}"
        )
    positive_int("n_init", n_init)
    positive_int("batch_size", batch_size)

    model: KMeans | MiniBatchKMeans
    if n < minibatch_threshold:
        method = "kmeans"
        model = KMeans(
            n_clusters=int(n_clusters), n_init=int(n_init), random_state=seed, algorithm="lloyd"
        )
    else:
        method = "minibatch_kmeans"
        model = MiniBatchKMeans(
            n_clusters=int(n_clusters),
            batch_size=int(batch_size),
            n_init=int(n_init),
            random_state=seed,
        )
    with threadpool_limits(limits=n_threads):
        model.fit(X)
    return model, method


def kmeans(
    emb: ArrayLike, n_clusters: int, **options: Any
) -> tuple[NDArray[np.int32], NDArray[np.floating], float, str]:
    """Cluster an embedding. Returns ``(labels int32, centers k x dims, inertia, method)``;
    ``options`` are :func:`fit_kmeans`'s (``seed`` is required).

    Below ``minibatch_threshold`` cells this runs sklearn ``KMeans`` (Lloyd, k-means++ init,
    ``n_init`` restarts), and ``method`` is ``"kmeans"``. At or above it, it runs
    ``MiniBatchKMeans(batch_size=batch_size, n_init=n_init)`` and ``method`` is
    ``"minibatch_kmeans"``. Both are seeded with ``seed``. The defaults are scikit-learn's
    (1.9.1): ``n_init="auto"`` is one run for the k-means++ init of both estimators, and
    ``MiniBatchKMeans``'s ``batch_size`` is 1024. ``n_threads`` caps the OpenMP/BLAS
    threads. With the default of 1, results are identical across runs and machines. ``None``
    keeps sklearn's default, which is faster, but the order of the multi-threaded sums can
    change the last bits of the centres between runs.

    Raises
    ------
    ArgumentError
        ``n_clusters`` below 1 or above the number of cells; ``n_init`` or ``batch_size``
        not a positive integer.
    """
    model, method = fit_kmeans(emb, n_clusters, **options)
    labels = np.asarray(model.labels_, dtype=np.int32)
    return labels, np.asarray(model.cluster_centers_), float(model.inertia_), method
