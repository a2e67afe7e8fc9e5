"""Truncation state along a solution (flow or (S)GD): truncated data, owned counts, NC1 in input
space, per-cluster counts and spreads (docs/theory.md#effective-flows)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..core import AdaptedParameters, adapted_truncate, last_truncations
from ..core._shapes import Shapes
from ._collapse import nc1_input


class TruncationDiagnostics(eqx.Module):
    """Truncation state at each saved time (leading axis T).

    Attributes:
        x_tilde: ``(T, N, M)`` truncated data x̃ in the common frame.
        truncated: ``(T, N, L, M)`` point moved onto face (ℓ, k) by layer ℓ.
        counts: ``(T, L, M)`` n_{ℓ,k}: points truncated at (ℓ, k) and not re-truncated later.
        n_truncated: ``(T,)`` points truncated by at least one face.
        nc1: ``(T,)`` NC1 in input space.
    """

    x_tilde: Float[Array, "T N M"]
    truncated: Bool[Array, "T N L M"]
    counts: Int[Array, "T L M"]
    n_truncated: Int[Array, " T"]
    nc1: Float[Array, " T"]


@eqx.filter_jit
def truncation_diagnostics(
    params: AdaptedParameters, u: Float[Array, "N M"], labels: Int[Array, " N"], n_classes: int
) -> TruncationDiagnostics:
    """Diagnostics for a stack of parameters ``params`` (d, b ``(T, L, M)``) on data ``u``
    ``(N, M)`` with ``labels`` ``(N,)``. Batch axis: the one time axis T of ``params`` by
    design; a further axis is refused."""
    check = Shapes("truncation_diagnostics").adapted("params", params, lead="T")
    check("u", u, "N M")
    check("labels", labels, "N")

    def one(p):
        x_tilde, hits = adapted_truncate(p, u)
        counts = jnp.sum(last_truncations(hits), axis=0)
        n_trunc = jnp.sum(jnp.any(hits, axis=(-2, -1)))
        return x_tilde, hits, counts, n_trunc, nc1_input(x_tilde, labels, n_classes)

    return TruncationDiagnostics(*jax.vmap(one)(params))


def cluster_spread(
    x_tilde: Float[Array, "T N M"], labels: Int[Array, " N"], n_classes: int
) -> Float[Array, "T Q M"]:
    """max − min of x̃ within each cluster, per coordinate: exactly 0 once a cluster's coordinate
    is completely truncated (every point pinned to the same face). ``x_tilde`` ``(T, N, M)``,
    ``labels`` ``(N,)``. Batch axis: the one time axis T by design; a further axis is refused.
    """
    check = Shapes("cluster_spread")
    check("x_tilde", x_tilde, "T N M")
    check("labels", labels, "N")
    one_hot = jax.nn.one_hot(labels, n_classes, dtype=bool)[None, :, :, None]  # (1, N, Q, 1)
    x = x_tilde[:, :, None, :]
    hi = jnp.max(jnp.where(one_hot, x, -jnp.inf), axis=1)
    lo = jnp.min(jnp.where(one_hot, x, jnp.inf), axis=1)
    return hi - lo


def cluster_counts(
    truncated: Bool[Array, "T N L M"], labels: Int[Array, " N"], n_classes: int
) -> Int[Array, "T L M Q"]:
    """n_{ℓ,k,j}(s): points of cluster j owned by face (ℓ, k) (truncated there, not later).
    ``truncated`` ``(T, N, L, M)``, ``labels`` ``(N,)``. Batch axis: the one time axis T by
    design; a further axis is refused."""
    check = Shapes("cluster_counts")
    check("truncated", truncated, "T N L M")
    check("labels", labels, "N")
    owner = jax.vmap(last_truncations)(truncated)
    one_hot = jax.nn.one_hot(labels, n_classes, dtype=jnp.int32)
    return jnp.einsum("tnlm,nq->tlmq", owner.astype(jnp.int32), one_hot)
