"""The input-cost gradient in O(L·M·log N) per evaluation, from sorted data and prefix sums.

In the common frame C_in separates over coordinates k, and the composite truncation of
coordinate k by layers 1..ℓ is a monotone clamp  z⁽ℓ⁾(u) = min(max(u, a_ℓ), β_ℓ)  with
a_ℓ = max(a_{ℓ−1}, c_ℓ), β_ℓ = max(β_{ℓ−1}, c_ℓ) for d_ℓ > 0 and β_ℓ = min(β_{ℓ−1}, c_ℓ) for
d_ℓ < 0 (a_0 = −∞, β_0 = +∞). Hence the points truncated by layer ℓ form a half-line of the raw
coordinate u (``{u < cut_ℓ}`` or ``{u > cut_ℓ}``), and the points *owned* by (ℓ, k) — truncated
at ℓ and not re-truncated later — form an interval of the sorted values. Their count is n_{ℓ,k}
and, with prefix sums of the sorted targets,

    ∂C_in/∂c_{ℓ,k} = g_{ℓ,k} = (1/N) Σ_{owned i} (c_{ℓ,k} − ỹ_{i,k})
                   = (n_{ℓ,k} c_{ℓ,k} − Σ_{owned} ỹ_{i,k}) / N          (docs/theory.md#gradient)

With per-point weights ω (:mod:`gflow_jax.core._costs`) every sum is weighted: n_{ℓ,k} = Σ_owned ω_i
and Σ_owned ω_i ỹ_{i,k}, from prefix sums in the same sorted order.

is exact — the same number autodiff and the Π-matrix formula give, without touching every point.
A point exactly on a face counts as not truncated, as in
:func:`~gflow_jax.core.adapted_truncate`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._shapes import Shapes


class SortedData(eqx.Module):
    """Per-coordinate sorted data and prefix sums of the matching targets.

    Attributes:
        values: ``(M, N)`` each coordinate's values u_{·,k}, sorted ascending.
        target_prefix: ``(M, N + 1)`` prefix sums of ω ỹ_{·,k} in that order (leading 0).
        weight_prefix: ``(M, N + 1)`` prefix sums of the point weights ω in that order.
        run_end: ``(M, N)`` one past the last index holding the same value as index i (ties).
    """

    values: Float[Array, "M N"]
    target_prefix: Float[Array, "M N+1"]
    weight_prefix: Float[Array, "M N+1"]
    run_end: Int[Array, "M N"]


def sort_data(
    u: Float[Array, "N M"],
    targets: Float[Array, "N M"],
    weights: Float[Array, " N"] | None = None,
) -> SortedData:
    """Sort every coordinate of ``u`` ``(N, M)`` and accumulate (weighted) targets ``(N, M)``
    in the same order; ``weights`` ``(N,)``. Batch axis: refused (vmap over it)."""
    c = Shapes("sort_data")
    c("u", u, "N M")
    c("targets", targets, "N M")
    c("weights", weights, "N")
    if weights is None:
        weights = jnp.ones(u.shape[0], u.dtype)
    order = jnp.argsort(u, axis=0)
    values = jnp.take_along_axis(u, order, axis=0).T
    w = weights[order].T  # (M, N)
    sorted_targets = jnp.take_along_axis(targets, order, axis=0).T
    zero = jnp.zeros((u.shape[1], 1), dtype=sorted_targets.dtype)
    prefix = jnp.concatenate([zero, jnp.cumsum(w * sorted_targets, axis=1)], axis=1)
    weight_prefix = jnp.concatenate([zero, jnp.cumsum(w, axis=1)], axis=1)
    run_end = jax.vmap(lambda v: jnp.searchsorted(v, v, side="right"))(values)
    return SortedData(values, prefix, weight_prefix, run_end.astype(jnp.int32))


def search_left(values: Float[Array, " N"], cuts: Float[Array, "*Q"]) -> Int[Array, "*Q"]:
    """#{u < cut} for sorted ``values``, without a loop: the cut is placed among every B-th
    value first (B ≈ √N), then within its block of B values — two vectorised comparisons of
    O(√N) each per cut, where a binary search would take log₂N dependent steps (each a kernel
    launch inside a compiled loop)."""
    n = values.shape[0]
    block = max(1, int(round(n**0.5)))
    n_blocks = -(-n // block)
    padded = jnp.concatenate([values, jnp.full(n_blocks * block - n, jnp.inf, values.dtype)])
    blocks = padded.reshape(n_blocks, block)
    # the block holding the first value ≥ cut: blocks whose last value < cut come before it
    last = blocks[:, -1].reshape((1,) * jnp.ndim(cuts) + (n_blocks,))
    first = jnp.sum(last < cuts[..., None], axis=-1)
    inside = blocks[jnp.minimum(first, n_blocks - 1)]  # (*Q, B)
    within = jnp.sum(inside < cuts[..., None], axis=-1)
    return jnp.minimum(first * block + within, n).astype(jnp.int32)


def value_counts(values: Float[Array, " N"], run_end: Int[Array, " N"], cuts: Float[Array, " Q"]):
    """#{u < cut} and #{u ≤ cut} of one coordinate: one search (:func:`search_left`), then the
    length of the run of values equal to the cut (``run_end``) gives the second count without
    searching."""
    n_points = values.shape[0]
    below = search_left(values, cuts)
    index = jnp.minimum(below, n_points - 1)
    tie = (below < n_points) & (values[index] == cuts)
    return below, jnp.where(tie, run_end[index], below)


def _less(x, rx, y, ry):
    """(x, rx) < (y, ry) lexicographically; ranks ``None`` are all zero."""
    return x < y if rx is None else (x < y) | ((x == y) & (rx < ry))


def _pair_max(x, rx, y, ry):
    if rx is None:
        return jnp.maximum(x, y), None
    first = _less(x, rx, y, ry)
    return jnp.where(first, y, x), jnp.where(first, ry, rx)


def _pair_min(x, rx, y, ry):
    if rx is None:
        return jnp.minimum(x, y), None
    first = _less(x, rx, y, ry)
    return jnp.where(first, x, y), jnp.where(first, rx, ry)


def _cuts(c, positive, ranks):
    """Each layer's cut on the raw coordinate (docs/theory.md#meeting-faces): the composite clamp
    z⁽ℓ⁻¹⁾(u) = min(max(u, a), β) meets face ℓ, which truncates {u < cut} (from below) or
    {u > cut} (from above); ±inf for all or none. Values compare as (value, rank) pairs."""
    inf = jnp.asarray(jnp.inf, dtype=c.dtype)
    zero = None if ranks is None else jnp.zeros(c.shape[1:], ranks.dtype)
    a, ra = jnp.full(c.shape[1:], -inf), zero
    beta, rb = jnp.full(c.shape[1:], inf), zero
    cuts = []
    for ell in range(c.shape[0]):
        c_l, pos = c[ell], positive[ell]
        r_l = None if ranks is None else ranks[ell]
        below_all = _less(beta, rb, c_l, r_l)  # β < c: every z < c
        below_none = ~_less(a, ra, c_l, r_l)  # a ≥ c: no z < c
        above_none = ~_less(c_l, r_l, beta, rb)  # β ≤ c: no z > c
        above_all = _less(c_l, r_l, a, ra)  # a > c: every z > c
        cut_below = jnp.where(below_all, inf, jnp.where(below_none, -inf, c_l))
        cut_above = jnp.where(above_none, inf, jnp.where(above_all, -inf, c_l))
        cuts.append(jnp.where(pos, cut_below, cut_above))
        a_new, ra_new = _pair_max(a, ra, c_l, r_l)
        a = jnp.where(pos, a_new, a)
        hi, rhi = _pair_max(beta, rb, c_l, r_l)
        lo, rlo = _pair_min(beta, rb, c_l, r_l)
        beta = jnp.where(pos, hi, lo)
        if ranks is not None:
            ra = jnp.where(pos, ra_new, ra)
            rb = jnp.where(pos, rhi, rlo)
    return jnp.stack(cuts)


def threshold_gradient(
    thresholds: Float[Array, "L M"],
    d: Float[Array, "L M"],
    data: SortedData,
    ranks: Int[Array, "L M"] | None = None,
) -> tuple[Float[Array, "L M"], Float[Array, "L M"]]:
    """∂C_in/∂c_{ℓ,k} and the (weighted) counts n_{ℓ,k} of owned points, both ``(L, M)``.

    With unit weights n_{ℓ,k} is the integer number of owned points (as a float).

    Args:
        thresholds: c_{ℓ,k} = −b⁽ℓ⁾_k / d_{ℓ,k}.
        d: the diagonals d_{ℓ,k} (only their signs matter here).
        data: :func:`sort_data` of the problem's data and targets.
        ranks: optional integer tie-breaks: a face at exactly the value of a data point or of
            another face is taken as displaced by an infinitesimal ``rank·ε`` (data points have
            rank 0). ``None`` (all 0) is the convention everywhere else: a point exactly on a
            face is not truncated, and of two equal faces the earlier truncates. The exact
            solver uses ranks to evaluate the field on either side of a discontinuity
            (docs/theory.md#sliding).

    Batch axis: refused (vmap over it).
    """
    check = Shapes("threshold_gradient")
    check("thresholds", thresholds, "L M")
    check("d", d, "L M")
    check("data.values", data.values, "M N")
    check("ranks", ranks, "L M")
    lo, hi = owned_intervals(thresholds, d > 0, data, ranks)

    def interval_sum(prefix):  # Σ over sorted positions lo..hi-1, per (ℓ, k)
        prefix = prefix.T  # (N + 1, M)
        return jnp.take_along_axis(prefix, hi, axis=0) - jnp.take_along_axis(prefix, lo, axis=0)

    n = interval_sum(data.weight_prefix)
    return (n * thresholds - interval_sum(data.target_prefix)) / data.values.shape[1], n


def owned_intervals(
    thresholds: Float[Array, "L M"],
    positive: Bool[Array, "L M"],
    data: SortedData,
    ranks: Int[Array, "L M"] | None = None,
) -> tuple[Int[Array, "L M"], Int[Array, "L M"]]:
    """The sorted positions ``lo ≤ i < hi`` of the points each face (ℓ, k) owns, ``(L, M)``
    each (``positive``: faces from below, d > 0; ``ranks`` as in :func:`threshold_gradient`):
    :func:`intervals_from_counts` of :func:`cut_counts`. Batch axis: refused."""
    below, at_most, _ = cut_counts(thresholds, positive, data, ranks)
    return intervals_from_counts(below, at_most, positive, data.values.shape[1])


def cut_counts(
    thresholds: Float[Array, "L M"],
    positive: Bool[Array, "L M"],
    data: SortedData,
    ranks: Int[Array, "L M"] | None = None,
    own: tuple[Int[Array, "L M"], Int[Array, "L M"]] | None = None,
) -> tuple[Int[Array, "L M"], Int[Array, "L M"], Float[Array, "L M"]]:
    """#{u < cut} and #{u ≤ cut} of every layer's cut, ties broken by ``ranks`` (a face ε above
    a data value counts it as below), and the cuts (:func:`_cuts`: the face's value, or ±inf
    where earlier layers leave it all or nothing), ``(L, M)`` each. ``own``: the counts of the
    thresholds themselves (:func:`value_counts`), if known: then nothing is searched."""
    cuts = _cuts(thresholds, positive, ranks)  # (L, M)
    if own is None:
        below, at_most = jax.vmap(value_counts, in_axes=(0, 0, 1), out_axes=1)(
            data.values, data.run_end, cuts
        )
    else:  # a cut is the threshold itself or ±inf (none or all of the values below it)
        n = data.values.shape[1]
        outside = jnp.where(cuts < thresholds, 0, n)
        below, at_most = (jnp.where(cuts == thresholds, a, outside) for a in own)
    if ranks is not None:  # a face ε above a data value owns it (from below) or not (from above)
        below, at_most = jnp.where(ranks > 0, at_most, below), jnp.where(ranks < 0, below, at_most)
    return below, at_most, cuts


def intervals_from_counts(below, at_most, positive, n_points: int):
    """The owned positions ``lo ≤ i < hi`` from the counts of :func:`cut_counts`; layers along
    axis 0, any trailing axes (elementwise, no search)."""
    # Later layers re-truncate {u < A_ℓ} ∪ {u > B_ℓ} with A_ℓ (B_ℓ) the largest (smallest) later
    # cut from below (above). Counting is monotone, so #{u < A_ℓ} is the largest later count and
    # #{u ≤ B_ℓ} the smallest: no further searches.
    later_below = jax.lax.cummax(jnp.where(positive, below, 0), axis=0, reverse=True)
    later_at_most = jax.lax.cummin(jnp.where(positive, n_points, at_most), axis=0, reverse=True)
    first = jnp.concatenate([later_below[1:], jnp.zeros_like(below[:1])])
    last = jnp.concatenate([later_at_most[1:], jnp.full_like(at_most[:1], n_points)])
    lo = jnp.where(positive, first, jnp.maximum(first, at_most))
    hi = jnp.maximum(jnp.where(positive, jnp.minimum(last, below), last), lo)
    return lo, hi
