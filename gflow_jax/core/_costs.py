"""Costs and their closed-form gradients (docs/theory.md#input-layer-cost, #gradient).

* Standard cost C = (1/2N) Σ_{j,i} |x⁽ᴸ⁺¹⁾_{j,i} − y_j|².
* Input-layer cost C_in = (1/2N) Σ_{j,i} |x̃_{j,i} − ỹ_j|² with pulled-back targets
  ỹ_j = (W⁽ᴸ⁺¹⁾)⁺(y_j − b⁽ᴸ⁺¹⁾).

Targets are passed *per point* (``(N, ·)`` arrays, row i the target of point i) so every cost is
a mean over rows. Optional per-point ``weights`` ω (``(N,)``, non-negative, mean 1 over the full
data set) turn it into (1/N) Σ_i ω_i f_i: rows of weight 0 are padding (so problems with different
numbers of points share one array shape in a vmapped sweep), and ω_i = N_rows/N_real on real
rows makes the normalisation that of the N_real real points. ``None`` means all ones.

Every function here takes one network or one set of parameters and one data set: a leading
batch axis on any argument is refused with a ``ValueError`` naming it (vmap over the batch).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._adapted import AdaptedParameters, adapted_truncate, last_truncations
from ._network import ReLUNetwork, input_space_forward, relu_forward, truncation_projector
from ._shapes import Shapes


def pulled_back_targets(
    out_weight_cum: Float[Array, "Q M"],
    out_bias_cum: Float[Array, " Q"],
    y: Float[Array, "C Q"],
) -> Float[Array, "C M"]:
    """ỹ_j = (W⁽ᴸ⁺¹⁾)⁺ (y_j − b⁽ᴸ⁺¹⁾) for each reference output y_j.

    W⁽ᴸ⁺¹⁾ = W_{L+1} W⁽ᴸ⁾ is ``(Q, M)``; with Q < M the Moore–Penrose pseudo-inverse gives the
    minimum-norm preimage (any preimage has the same standard cost). ``out_bias_cum`` ``(Q,)``,
    ``y`` ``(C, Q)``; returns ``(C, M)``. Batch axis: refused (vmap over it).
    """
    s = Shapes("pulled_back_targets")
    s("out_weight_cum", out_weight_cum, "Q M")
    s("out_bias_cum", out_bias_cum, "Q")
    s("y", y, "C Q")
    return (jnp.linalg.pinv(out_weight_cum) @ (y - out_bias_cum[None, :]).T).T


def _check_data(function: str, params, u, targets, weights) -> Shapes:
    s = Shapes(function).adapted("params", params)
    s("u", u, "N M")
    s("targets", targets, "N M")
    s("weights", weights, "N")
    return s


def _weighted_mean(values: Float[Array, " N"], weights: Float[Array, " N"] | None):
    return jnp.mean(values if weights is None else weights * values)


def adapted_input_cost(
    params: AdaptedParameters,
    u: Float[Array, "N M"],
    targets: Float[Array, "N M"],
    weights: Float[Array, " N"] | None = None,
) -> Float[Array, ""]:
    """C_in for adapted parameters (d, b ``(L, M)``), data ``u`` ``(N, M)`` and targets
    ``(N, M)`` in the rotated frame u = O x; ``weights`` ``(N,)``. Batch axis: refused (vmap over
    it)."""
    _check_data("adapted_input_cost", params, u, targets, weights)
    x_tilde, _ = adapted_truncate(params, u)
    return 0.5 * _weighted_mean(jnp.sum((x_tilde - targets) ** 2, axis=-1), weights)


def adapted_output_cost(
    params: AdaptedParameters,
    u: Float[Array, "N M"],
    targets: Float[Array, "N M"],
    out_weight_cum: Float[Array, "Q M"],
    weights: Float[Array, " N"] | None = None,
) -> Float[Array, ""]:
    """Standard cost in input-space form, C = (1/2N) Σ |W⁽ᴸ⁺¹⁾(x̃ − ỹ)|², with the cumulative
    output map W⁽ᴸ⁺¹⁾ (``(Q, M)``, in the rotated frame) frozen: the metric A = W⁽ᴸ⁺¹⁾ᵀW⁽ᴸ⁺¹⁾
    couples the coordinates (docs/theory.md#effective-flows, flow 4, and #spectral-gap). Equals C
    exactly when ỹ are exact preimages of the reference outputs. Shapes as in
    :func:`adapted_input_cost`, ``out_weight_cum`` ``(Q, M)``. Batch axis: refused."""
    s = _check_data("adapted_output_cost", params, u, targets, weights)
    s("out_weight_cum", out_weight_cum, "Q M")
    x_tilde, _ = adapted_truncate(params, u)
    out = (x_tilde - targets) @ out_weight_cum.T
    return 0.5 * _weighted_mean(jnp.sum(out**2, axis=-1), weights)


def adapted_standard_cost(
    params: AdaptedParameters,
    u: Float[Array, "N M"],
    y: Float[Array, "N Q"],
    out_weight: Float[Array, "Q M"],
    out_bias: Float[Array, " Q"],
    weights: Float[Array, " N"] | None = None,
) -> Float[Array, ""]:
    """Standard cost C for adapted parameters: x⁽ᴸ⁾ = W⁽ᴸ⁾x̃ + b⁽ᴸ⁾ = d_L ⊙ ũ + b_L in the
    rotated frame, then x⁽ᴸ⁺¹⁾ = W_{L+1} x⁽ᴸ⁾ + b_{L+1}. ``u`` ``(N, M)``, ``y`` ``(N, Q)``,
    ``out_weight`` ``(Q, M)``, ``out_bias`` ``(Q,)``, ``weights`` ``(N,)``. Batch axis: refused."""
    s = Shapes("adapted_standard_cost").adapted("params", params)
    s("u", u, "N M")
    s("y", y, "N Q")
    s("out_weight", out_weight, "Q M")
    s("out_bias", out_bias, "Q")
    s("weights", weights, "N")
    x_tilde, _ = adapted_truncate(params, u)
    hidden = x_tilde * params.d[-1][None, :] + params.b[-1][None, :]
    out = hidden @ out_weight.T + out_bias[None, :]
    return 0.5 * _weighted_mean(jnp.sum((out - y) ** 2, axis=-1), weights)


def adapted_input_cost_gradient(
    params: AdaptedParameters,
    u: Float[Array, "N M"],
    targets: Float[Array, "N M"],
    weights: Float[Array, " N"] | None = None,
) -> AdaptedParameters:
    """Closed-form ∇C_in in the adapted parametrisation (docs/theory.md#gradient).

    In the common frame ∇_θ C_in reduces to g_{ℓ,k} = (1/N) Σ_i 1[i truncated at (ℓ,k) and not
    re-truncated later] (x̃_{i,k} − ỹ_{i,k}); since C_in depends on (d, b) only through
    c = −b/d, ∇_b = −g/d and ∇_d = −g·c/d. Shapes as in :func:`adapted_input_cost`. Batch axis:
    refused.
    """
    _check_data("adapted_input_cost_gradient", params, u, targets, weights)
    x_tilde, hits = adapted_truncate(params, u)  # hits: (N, L, M)
    owner = last_truncations(hits)
    residual = x_tilde - targets
    if weights is not None:
        residual = weights[:, None] * residual
    g = jnp.mean(owner * residual[:, None, :], axis=0)
    return AdaptedParameters(d=-g * params.thresholds / params.d, b=-g / params.d)


def _network_cost(function: str, forward, net, x, name: str, aim, spec: str) -> Array:
    """(1/2N) Σ_i |forward(net, x_i)[1] − aim_i|², the costs of a generic network, after checking
    ``net``, ``x`` ``(N, M)`` and ``aim`` (named ``name``, shape ``spec``); errors name
    ``function``."""
    s = Shapes(function).network("net", net)
    s("x", x, "N M")
    s(name, aim, spec)
    image = jax.vmap(lambda xi: forward(net, xi)[1])(x)
    return 0.5 * jnp.mean(jnp.sum((image - aim) ** 2, axis=-1))


def network_input_cost(
    net: ReLUNetwork, x: Float[Array, "N M"], targets: Float[Array, "N M"]
) -> Float[Array, ""]:
    """C_in of a generic network through the general truncation maps (no adaptedness);
    ``x`` and ``targets`` ``(N, M)``. Batch axis: refused."""
    return _network_cost(
        "network_input_cost", input_space_forward, net, x, "targets", targets, "N M"
    )


def network_standard_cost(
    net: ReLUNetwork, x: Float[Array, "N M"], y: Float[Array, "N Q"]
) -> Float[Array, ""]:
    """Standard cost C = (1/2N) Σ |x⁽ᴸ⁺¹⁾ − y|² of a generic network; ``x`` ``(N, M)``,
    ``y`` ``(N, Q)``. Batch axis: refused."""
    return _network_cost("network_standard_cost", relu_forward, net, x, "y", y, "N Q")


def general_input_cost_gradient(
    W_cum: Float[Array, "L M M"],
    b_cum: Float[Array, "L M"],
    x: Float[Array, "N M"],
    targets: Float[Array, "N M"],
) -> Float[Array, "L M"]:
    """Closed-form ∇_{b⁽ℓ⁾} C_in for generic cumulative weights (docs/theory.md#gradient):

        ∇_{θ_ℓ} C_in = (1/N) Σ (Π^c_ℓ)ᵀ Π_{ℓ+1}ᵀ ⋯ Π_Lᵀ (x̃ − ỹ),   ∇_{b⁽ℓ⁾} = −(W⁽ℓ⁾)⁻ᵀ ∇_{θ_ℓ},

    with Π_ℓ = (W⁽ℓ⁾)⁻¹ P_ℓ W⁽ℓ⁾ evaluated at z⁽ℓ⁻¹⁾ and Π^c = I − Π. Costs O(N L M³): a
    reference implementation for tests and small problems. ``W_cum`` ``(L, M, M)``, ``b_cum``
    ``(L, M)``, ``x`` and ``targets`` ``(N, M)``; returns ``(L, M)``. Batch axis: refused.
    """
    s = Shapes("general_input_cost_gradient")
    s("W_cum", W_cum, "L M M")
    s("b_cum", b_cum, "L M")
    s("x", x, "N M")
    s("targets", targets, "N M")
    M = x.shape[-1]

    def per_point(xi, ti):
        def fwd(z, Wb):
            W, b = Wb
            return jnp.linalg.solve(W, jax.nn.relu(W @ z + b) - b), truncation_projector(W, b, z)

        x_tilde, projectors = jax.lax.scan(fwd, xi, (W_cum, b_cum))

        def bwd(v, proj):  # v = Π_{ℓ+1}ᵀ ⋯ Π_Lᵀ r
            return proj.T @ v, (jnp.eye(M) - proj).T @ v

        _, grad_theta = jax.lax.scan(bwd, x_tilde - ti, projectors, reverse=True)
        return grad_theta

    grad_theta = jnp.mean(jax.vmap(per_point)(x, targets), axis=0)
    return -jnp.linalg.solve(jnp.swapaxes(W_cum, -1, -2), grad_theta[..., None])[..., 0]
