"""Magnitude dimension, convergence scale and E_α of a point cloud
(docs/theory.md#magnitude-dimension)."""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from ._adaptive import AdaptiveSettings, solve_adaptive
from ._api import (
    MagnitudeFunction,
    Method,
    _check_method,
    _check_scales,
    _core,
    _engine,
    _groups,
    magnitude_function,
)
from ._distances import canonical_metric, distance_matrix


class MagnitudeDimension(eqx.Module):
    """Magnitude dimension estimates of a cloud (docs/theory.md#magnitude-dimension).

    Attributes:
        max: the maximum of the instantaneous dimension profile over the evaluated scales
            (refined on a shrinking grid when requested).
        argmax_scale: the scale t where it is attained.
        slope: least-squares slope of log|tX| against log t over the scales inside ``window``.
        window: ``(t_min, t_max)`` the scale window of the slope (inclusive).
        profile: the :class:`MagnitudeFunction` the estimates were read from.
    """

    max: float
    argmax_scale: float
    slope: float
    window: tuple[float, float]
    profile: MagnitudeFunction


def magnitude_dimension(
    X: ArrayLike,
    scales: ArrayLike,
    *,
    metric: str = "euclidean",
    window: tuple[float, float] | None = None,
    refine: bool = False,
    **kwargs,
) -> MagnitudeDimension:
    """Magnitude dimension: the maximum of the exact profile and the log-log slope.

    Args:
        X: as in :func:`magnitude_function`.
        scales: as in :func:`magnitude_function` (at least two).
        metric: as in :func:`magnitude_function`.
        window: ``(t_min, t_max)`` scales used for the least-squares slope of log|tX| against
            log t; default: all given scales. At least two scales must fall inside.
        refine: refine the profile maximum between the neighbours of the best evaluated scale
            (six rounds of eight batched solves on a shrinking log grid).

    Batch axis: refused (one cloud; loop over clouds).
    """
    s = _check_scales(scales, "magnitude_dimension")
    if s.size < 2:
        raise ValueError("magnitude_dimension needs at least two scales")
    metric = canonical_metric(metric)
    D = distance_matrix(X, metric, "magnitude_dimension")
    result = magnitude_function(D, s, metric="precomputed", **kwargs)
    result = dataclasses.replace(result, metric=metric)
    profile = np.asarray(result.dimension)
    k = int(np.nanargmax(profile))
    best_t, best = float(s[k]), float(profile[k])
    if refine:
        order = np.argsort(s)
        pos = int(np.flatnonzero(order == k)[0])
        lo = float(s[order[max(pos - 1, 0)]])
        hi = float(s[order[min(pos + 1, s.size - 1)]])
        best_t, best = _refine_max(D, lo, hi, kwargs, best_t, best)
    if window is None:
        window = (float(s.min()), float(s.max()))
    t_min, t_max = float(window[0]), float(window[1])
    inside = (s >= t_min) & (s <= t_max)
    if inside.sum() < 2:
        raise ValueError(f"the window {window} holds fewer than two of the given scales")
    slope = float(np.polyfit(np.log(s[inside]), np.log(np.asarray(result.magnitude)[inside]), 1)[0])
    return MagnitudeDimension(
        max=best, argmax_scale=best_t, slope=slope, window=(t_min, t_max), profile=result
    )


def _refine_max(D, lo, hi, kwargs, best_t, best, rounds=6, points=8):
    """Refine the maximum of dim(t) on [lo, hi]: each round evaluates ``points`` log-spaced
    scales in one batched solve and keeps the neighbours of the best one (the bracket shrinks
    by about points/2 per round; dim is smooth and unimodal near its maximum)."""
    a, b = math.log(lo), math.log(hi)
    for _ in range(rounds):
        u = np.linspace(a, b, points)
        r = magnitude_function(D, np.exp(u), metric="precomputed", **kwargs)
        prof = np.asarray(r.dimension)
        k = int(np.nanargmax(prof))
        if prof[k] > best:
            best_t, best = float(np.exp(u[k])), float(prof[k])
        a, b = u[max(k - 1, 0)], u[min(k + 1, points - 1)]
    return best_t, best


def convergence_scale(
    X: ArrayLike,
    *,
    metric: str = "euclidean",
    fraction: float = 0.95,
    rtol: float = 1e-10,
    method: Method = "auto",
) -> float:
    """The scale t_conv with |t_conv X| = fraction · (number of distinct points).

    A coarse log grid brackets the crossing; safeguarded Newton steps in log t with the exact
    derivative d|tX|/dt then converge to relative accuracy ``rtol`` in t. ``method`` picks the
    engine as in :func:`magnitude_function`. ``X``: ``(n, p)`` points, or ``(n, n)`` with
    ``metric="precomputed"``. Batch axis: refused (one cloud).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    metric = canonical_metric(metric)
    D = distance_matrix(X, metric, "convergence_scale")
    keep, _, _ = _groups(D, 0.0)
    index = np.flatnonzero(np.asarray(keep))
    if index.size < 2:
        raise ValueError("the convergence scale needs at least two distinct points")
    Du = np.asarray(D)[index][:, index]
    target = fraction * index.size
    off = Du[~np.eye(index.size, dtype=bool)]
    lo, hi = 1e-3 / off.max(), 60.0 / off.min()

    engine = _engine(_check_method(method), index.size)
    Du_dev = jnp.asarray(Du)

    def mag(ts):
        # the distinct points, no padding: every Newton step reuses one compilation (S = 1)
        ts = np.atleast_1d(np.asarray(ts, dtype=np.float64))
        if engine in ("cholesky", "device"):  # the JAX core, on the default device
            r = _core(Du_dev, jnp.asarray(ts))
            return np.asarray(r.magnitude), np.asarray(r.derivative)
        out = solve_adaptive(Du_dev, ts, AdaptiveSettings())
        return out["magnitude"], out["derivative"]

    grid = np.geomspace(lo, hi, 16)
    values, _ = mag(grid)
    above = np.flatnonzero(values >= target)
    if above.size == 0 or above[0] == 0:
        raise RuntimeError("could not bracket the convergence scale")  # pragma: no cover
    a, b = math.log(grid[above[0] - 1]), math.log(grid[above[0]])
    u = 0.5 * (a + b)
    for _ in range(100):
        value, deriv = mag(math.exp(u))
        f = value[0] - target
        if f >= 0:
            b = u
        else:
            a = u
        slope = math.exp(u) * deriv[0]
        step = -f / slope if slope > 0 else 0.0
        u_new = u + step
        if not (a < u_new < b) or step == 0.0:
            u_new = 0.5 * (a + b)
        if abs(u_new - u) < rtol or (b - a) < rtol:
            u = u_new
            break
        u = u_new
    return float(math.exp(u))


def e_alpha(X: ArrayLike, alpha: float = 1.0, *, metric: str = "euclidean") -> float:
    """E_α = Σ over the edges e of a minimum spanning tree of |e|^α (the PH₀ lifetimes of the
    Vietoris–Rips filtration raised to α). Prim's algorithm on the distance matrix, O(n²).
    ``X``: ``(n, p)`` points, or ``(n, n)`` with ``metric="precomputed"``. Batch axis: refused
    (one cloud)."""
    if not (alpha > 0 and math.isfinite(alpha)):
        raise ValueError(f"alpha must be positive and finite, got {alpha}")
    D = distance_matrix(X, canonical_metric(metric), "e_alpha")
    return float(jnp.sum(_mst_edges(D) ** alpha))


@jax.jit
def _mst_edges(D: Float[Array, "n n"]) -> Float[Array, " n-1"]:
    """Lengths of the n − 1 edges of a minimum spanning tree (Prim)."""
    n = D.shape[0]
    inf = jnp.asarray(jnp.inf, dtype=D.dtype)

    def body(k, state):
        in_tree, best, edges = state
        j = jnp.argmin(jnp.where(in_tree, inf, best))
        edges = edges.at[k].set(best[j])
        in_tree = in_tree.at[j].set(True)
        return in_tree, jnp.minimum(best, D[j]), edges

    in_tree = jnp.zeros((n,), dtype=bool).at[0].set(True)
    state = (in_tree, D[0], jnp.zeros((n - 1,), dtype=D.dtype))
    return jax.lax.fori_loop(0, n - 1, body, state)[2]
