"""The persistent-homology dimension dim⁰_PH of a point cloud from minimum-spanning-tree lengths of
subsamples (Birdal et al. 2021; Dupuis et al. 2023, arXiv 2302.02766; docs/theory.md#ph-dimension).

The MST of each subsample is scipy's (``scipy.sparse.csgraph.minimum_spanning_tree``); its edge
lengths are the finite degree-0 persistence lifetimes of the Vietoris–Rips filtration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from jaxtyping import ArrayLike
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import pdist, squareform

from ..core._shapes import Shapes
from ..magnitude import canonical_metric, check_distance_matrix


def mst_lengths(D: ArrayLike) -> np.ndarray:
    """``(n − 1,)`` edge lengths of a minimum spanning tree of the distance matrix ``D`` (n, n),
    sorted.

    scipy reads entries of a dense graph within 1e-8 of 0 as missing edges, so the tree is found
    on the weights 1 + d_ij / max d (the same tree: a spanning tree's weight shifts by a
    constant) and its lengths are read from ``D``. Zero distances (duplicates, pseudometric ties
    such as ρ_S = 0) are edges of length 0. Batch axis: refused.
    """
    D = np.asarray(D, dtype=np.float64)
    Shapes("mst_lengths")("D", D, "n n")
    n = D.shape[0]
    if n < 2:
        return np.zeros(0)
    scale = float(np.max(D))
    if not scale > 0:
        return np.zeros(n - 1)
    tree = minimum_spanning_tree(np.triu(1.0 + D / scale, 1)).tocoo()
    if tree.nnz != n - 1:  # cannot happen for a finite matrix: every pair is an edge
        raise RuntimeError(f"the spanning tree has {tree.nnz} edges, expected {n - 1}")
    return np.sort(D[tree.row, tree.col])


@dataclass(frozen=True)
class PHDimension:
    """The PH⁰ dimension of a cloud and the fit it came from.

    Attributes:
        dimension: dim⁰_PH = α/(1 − m), m the fitted slope; ``inf`` when m ≥ 1 (E_α⁰ grows at
            least linearly over the sampled range).
        slope: m, the least-squares slope of log E_α⁰(X_n) against log n.
        r_squared: coefficient of determination of that fit.
        sizes: ``(S,)`` the subsample sizes n.
        e_alpha: ``(S, R)`` E_α⁰ = Σ_{e∈MST} |e|^α of every subsample (R repeats per size).
        alpha: α.
        n_points: size of the whole cloud.
    """

    dimension: float
    slope: float
    r_squared: float
    sizes: np.ndarray
    e_alpha: np.ndarray
    alpha: float
    n_points: int


def ph_sizes(n_points: int, min_points: int, max_points: int, step: int) -> np.ndarray:
    """The subsample sizes min_points, min_points + step, … ≤ min(max_points, n_points)."""
    if min_points < 2 or step < 1 or max_points < min_points:
        raise ValueError(
            f"need 2 ≤ min_points ≤ max_points and step ≥ 1, got {min_points}, {max_points}, {step}"
        )
    sizes = np.arange(min_points, min(max_points, n_points) + 1, step)
    if sizes.size < 2:
        raise ValueError(
            f"a cloud of {n_points} points allows fewer than two subsample sizes in"
            f" [{min_points}, {max_points}] (step {step})"
        )
    return sizes


def ph_dimension(
    X: ArrayLike,
    *,
    metric: str = "euclidean",
    alpha: float = 1.0,
    min_points: int = 200,
    max_points: int = 1000,
    step: int = 50,
    n_repeats: int = 1,
    seed: int = 0,
) -> PHDimension:
    """The persistent-homology dimension dim⁰_PH of a point cloud (docs/theory.md#ph-dimension).

    For every size n in ``min_points, min_points + step, …, ≤ max_points`` (sizes beyond the
    cloud are dropped), draw ``n_repeats`` subsamples X_n of n distinct points uniformly without
    replacement and compute E_α⁰(X_n) = Σ_{e∈MST(X_n)} |e|^α (:func:`mst_lengths`). With m the
    least-squares slope of log E_α⁰ against log n (all repeats pooled),

        dim⁰_PH = α / (1 − m)

    (Birdal et al. 2021: α = 1, n from 200 to 1000 in steps of 50). Subsample distances are taken
    in the units of the input (scipy's ``pdist`` for points); the estimate is scale-invariant
    (d → c·d shifts log E_α⁰ only).

    Args:
        X: ``(N, p)`` points, or with ``metric="precomputed"`` an ``(N, N)`` distance matrix
            (e.g. ρ_S from :func:`~gflow_jax.diagnostics.loss_pseudometric`).
        metric: ``"euclidean"``, ``"cityblock"``, ``"chebyshev"`` or ``"precomputed"``.
        alpha: the exponent α > 0 (the estimate is consistent for α < the dimension).
        min_points, max_points, step: the range of subsample sizes.
        n_repeats: subsamples per size.
        seed: seed of the subsampling (``numpy.random.default_rng``); the same seed draws the
            same subsamples for the same N, whatever the metric.

    Raises:
        ValueError: fewer than two sizes fit in the cloud, a bad α, or an invalid matrix.

    Batch axis: refused (``X`` must be ``(N, p)`` or ``(N, N)``).
    """
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be positive and finite, got {alpha}")
    if n_repeats < 1:
        raise ValueError(f"n_repeats must be at least 1, got {n_repeats}")
    metric = canonical_metric(metric)
    X = np.asarray(X, dtype=np.float64)
    Shapes("ph_dimension")("X", X, "N N" if metric == "precomputed" else "N p")
    if metric == "precomputed":
        X = np.asarray(check_distance_matrix(X))
    if not np.all(np.isfinite(X)):
        raise ValueError("ph_dimension: X contains NaN or inf")
    N = X.shape[0]
    sizes = ph_sizes(N, min_points, max_points, step)
    rng = np.random.default_rng(seed)
    E = np.empty((sizes.size, n_repeats))
    for i, n in enumerate(sizes):
        for r in range(n_repeats):
            idx = np.sort(rng.choice(N, size=int(n), replace=False))
            if metric == "precomputed":
                D = X[np.ix_(idx, idx)]
            else:
                D = squareform(pdist(X[idx], metric=metric))
            E[i, r] = np.sum(mst_lengths(D) ** alpha)
    logn = np.repeat(np.log(sizes.astype(float)), n_repeats)
    with np.errstate(divide="ignore"):
        logE = np.log(E).ravel()
    if not np.all(np.isfinite(logE)):  # a subsample of coinciding points: E = 0
        return PHDimension(math.nan, math.nan, math.nan, sizes, E, float(alpha), N)
    slope, intercept = np.polyfit(logn, logE, 1)
    resid = logE - (slope * logn + intercept)
    total = np.sum((logE - logE.mean()) ** 2)
    r2 = 1.0 - float(np.sum(resid**2) / total) if total > 0 else math.nan
    dimension = alpha / (1.0 - slope) if slope < 1.0 else math.inf
    return PHDimension(float(dimension), float(slope), r2, sizes, E, float(alpha), N)
