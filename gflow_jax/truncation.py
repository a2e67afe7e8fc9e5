"""Truncation diagnostics along a solution (flow or (S)GD), MATH.md Part A."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from .collapse import nc1_input
from .network import AdaptedParameters, adapted_truncate, last_truncations

__all__ = ["TruncationDiagnostics", "truncation_diagnostics"]


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
    """Diagnostics for a stack of parameters ``params`` (leading time axis) on data ``u``."""

    def one(p):
        x_tilde, hits = adapted_truncate(p, u)
        counts = jnp.sum(last_truncations(hits), axis=0)
        n_trunc = jnp.sum(jnp.any(hits, axis=(-2, -1)))
        return x_tilde, hits, counts, n_trunc, nc1_input(x_tilde, labels, n_classes)

    return TruncationDiagnostics(*jax.vmap(one)(params))
