"""The one minibatch sampler: a uniformly random subset of distinct rows at every step.

Used by SGD of the effective flow, of the full network and of MLPs. A step's minibatch is drawn
among the rows of positive weight (rows of weight 0 are padding), so a problem padded with
zero-weight rows draws exactly the minibatches of the unpadded one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..core._shapes import Shapes

# batches up to this size draw with an unrolled loop (fastest vmapped on CPU)
_UNROLL = 32


def positive_rows(weights: Float[Array, " N"]) -> Int[Array, " N"]:
    """Indices of the rows of positive weight, in order, then padded with the last row.

    Entry r is the row holding the (r+1)-th positive weight; computed once per run, so that a
    minibatch's ranks map to rows by one gather per step (:func:`minibatch_indices`).
    ``weights`` ``(N,)``. Batch axis: refused (vmap over it)."""
    Shapes("positive_rows")("weights", weights, "N")
    n_rows = weights.shape[0]
    return jnp.nonzero(weights > 0, size=n_rows, fill_value=n_rows - 1)[0].astype(jnp.int32)


def floyd_ranks(key: PRNGKeyArray, n: Int[Array, ""], batch_size: int) -> Int[Array, " B"]:
    """A uniformly random ``batch_size``-subset of ``0 … n−1`` (``n`` may be traced).

    Robert Floyd's algorithm, from ``B`` uniform numbers and no sort: for ``j = n−B … n−1`` draw
    ``t`` uniform in ``0 … j`` and take ``t``, or ``j`` if ``t`` is taken already. Sorting N
    random keys per step (``argsort``) made vmapped SGD sort-bound on CPU
    (benchmarks/sweep_throughput.py). Batches of up to 32 are unrolled; larger ones run as
    a loop (the same draws, no compile time growing with B).

    ``key`` one PRNG key, ``n`` a scalar. Batch axis: refused (vmap over it).
    """
    check = Shapes("floyd_ranks")
    check.key("key", key)
    check("n", n, "")
    n = jnp.asarray(n)
    u = jax.random.uniform(key, (batch_size,))
    j = n.astype(jnp.int32) - batch_size + jnp.arange(batch_size, dtype=jnp.int32)
    draws = jnp.minimum(jnp.floor(u * (j + 1)).astype(jnp.int32), j)  # all B draws at once
    if batch_size <= _UNROLL:
        ranks: list = []
        for t in range(batch_size):
            r = draws[t]
            if ranks:
                r = jnp.where(jnp.any(jnp.stack(ranks) == r), j[t], r)
            ranks.append(r)
        return jnp.stack(ranks)

    # the same algorithm as a loop (no unrolling of large batches): slot t compared with 0..t-1
    def body(t, ranks):
        taken = jnp.any((ranks == draws[t]) & (jnp.arange(batch_size) < t))
        return ranks.at[t].set(jnp.where(taken, j[t], draws[t]))

    return jax.lax.fori_loop(0, batch_size, body, jnp.zeros(batch_size, jnp.int32))


def minibatch_indices(
    key: PRNGKeyArray,
    weights: Float[Array, " N"],
    batch_size: int,
    rows: Int[Array, " N"] | None = None,
) -> Int[Array, " B"]:
    """``batch_size`` distinct rows, a uniformly random subset of the rows of positive weight.

    :func:`floyd_ranks` draws ranks among the ``n`` positive rows; rank r maps to
    ``rows[r]`` (:func:`positive_rows`, pass it to skip recomputing it at every step). ``n`` is a
    count, so a problem padded with zero-weight rows draws exactly the minibatches of the
    unpadded one (what lets a sweep batch problems of different sizes in one program).

    ``weights`` and ``rows`` ``(N,)``, ``key`` one PRNG key. Batch axis: refused.
    """
    check = Shapes("minibatch_indices")
    check.key("key", key)
    check("weights", weights, "N")
    check("rows", rows, "N")
    rows = positive_rows(weights) if rows is None else rows
    return rows[floyd_ranks(key, jnp.sum(weights > 0), batch_size)]
