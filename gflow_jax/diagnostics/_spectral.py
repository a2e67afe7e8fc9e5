"""Spectral gap of the standard cost (docs/theory.md#spectral-gap).

With the cumulative output map W⁽ᴸ⁺¹⁾ frozen (cost ``"output"`` of
:class:`~gflow_jax.dynamics.FlowProblem`), a cluster j fully truncated at layer ℓ sits at the apex
θ_ℓ, and e = W⁽ℓ⁾(θ_ℓ − ỹ_j) obeys ∂_s e = −(N_j/N) K e with

    K = (W⁽ℓ⁾)⁻ᵀ A (W⁽ℓ⁾)⁻¹,   A = (W⁽ᴸ⁺¹⁾)ᵀ W⁽ᴸ⁺¹⁾,

so |e(s)| ≤ e^{−(N_j/N) μ s} |e(0)| with μ = λ_min(K); μ > 0 iff W⁽ᴸ⁺¹⁾ is injective. If it is
not (Q < M), the component of e along ker K does not decay. In the adapted common frame
W⁽ℓ⁾ = D_ℓ, θ_ℓ = c_ℓ and e = d_ℓ ⊙ (c_ℓ − ỹ_j).
"""

from __future__ import annotations

import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core._shapes import Shapes


def gap_matrix(
    d_layer: Float[Array, " M"], out_weight_cum: Float[Array, "Q M"]
) -> tuple[Float[Array, "M M"], Float[Array, ""]]:
    """K = D⁻¹ A D⁻¹ (A = W⁽ᴸ⁺¹⁾ᵀW⁽ᴸ⁺¹⁾, common frame, W⁽ℓ⁾ = D) and μ = λ_min(K) ≥ 0, from
    ``d_layer`` ``(M,)`` and ``out_weight_cum`` ``(Q, M)``. Batch axis: refused (vmap)."""
    check = Shapes("gap_matrix")
    check("d_layer", d_layer, "M")
    check("out_weight_cum", out_weight_cum, "Q M")
    inv = 1.0 / d_layer
    K = inv[:, None] * (out_weight_cum.T @ out_weight_cum) * inv[None, :]
    return K, jnp.linalg.eigvalsh(K)[0]


def cluster_error(
    thresholds: Float[Array, "T M"], d_layer: Float[Array, "T M"], target: Float[Array, " M"]
) -> Float[Array, "T M"]:
    """e(s) = W⁽ℓ⁾(θ_ℓ − ỹ_j) = d_ℓ ⊙ (c_ℓ − ỹ_j) for a cluster fully truncated at layer ℓ;
    ``thresholds`` and ``d_layer`` ``(T, M)``, ``target`` ``(M,)``. Batch axis: the one time axis
    T by design; a further axis is refused."""
    check = Shapes("cluster_error")
    check("thresholds", thresholds, "T M")
    check("d_layer", d_layer, "T M")
    check("target", target, "M")
    return d_layer * (thresholds - target[None, :])
