"""Deep ReLU networks, their cumulative parameters, and the truncation maps
(docs/theory.md#network-and-truncation-maps).

Notation: ``L`` hidden layers of width ``M``, output dimension ``Q``. The hidden layers are
x⁽ℓ⁾ = σ(W_ℓ x⁽ℓ⁻¹⁾ + b_ℓ) with square invertible W_ℓ; the output is
x⁽ᴸ⁺¹⁾ = W_{L+1} x⁽ᴸ⁾ + b_{L+1}.
Cumulative parameters W⁽ℓ⁾ = W_ℓ⋯W_1 and b⁽ℓ⁾ = W_ℓ b⁽ℓ⁻¹⁾ + b_ℓ turn the network into a chain of
*truncations of the input space*:

    z⁽⁰⁾ = x,   z⁽ℓ⁾ = τ_{W⁽ℓ⁾,b⁽ℓ⁾}(z⁽ℓ⁻¹⁾),   τ_{W,b}(z) = W⁻¹(σ(Wz + b) − b),

and exactly x⁽ℓ⁾ = W⁽ℓ⁾ z⁽ℓ⁾ + b⁽ℓ⁾. :class:`ReLUNetwork` holds unconstrained layer parameters
(W_ℓ, b_ℓ) stacked along a leading layer axis; the adapted parametrisation lives in
:mod:`gflow_jax.core._adapted`.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from ._shapes import Shapes, axis_size


class ReLUNetwork(eqx.Module):
    """A deep ReLU network with square hidden layers.

    Attributes:
        weights: ``(L, M, M)`` hidden-layer weights W_ℓ (invertible).
        biases: ``(L, M)`` hidden-layer biases b_ℓ.
        out_weight: ``(Q, M)`` output weight W_{L+1}.
        out_bias: ``(Q,)`` output bias b_{L+1}.
        depth: number of hidden layers L (read from ``weights``).
        width: hidden width M (= input dimension).

    Batch axis: refused by the constructor (one network). Stacked networks, every leaf with the
    same leading axes (the saves of :func:`~gflow_jax.dynamics.solve_network_flow`), come out of
    jax transformations and are taken by the functions that say so.
    """

    weights: Float[Array, "L M M"]
    biases: Float[Array, "L M"]
    out_weight: Float[Array, "Q M"]
    out_bias: Float[Array, " Q"]

    def __check_init__(self):
        # one network; stacked networks (a leading axis, e.g. the saves of a flow) come out of
        # jax transformations, which do not run this check
        Shapes("ReLUNetwork").network("net", self)

    depth = axis_size("weights", 0, "Number of hidden layers L.")
    width = axis_size("weights", 1, "Hidden width M (= input dimension).")


def relu_forward(
    net: ReLUNetwork, x: Float[Array, " M"]
) -> tuple[Float[Array, "L M"], Float[Array, " Q"]]:
    """Layer form of the forward pass for one input.

    Returns the hidden activations x⁽ℓ⁾, ``(L, M)``, and the output x⁽ᴸ⁺¹⁾, ``(Q,)``. Batch axis:
    refused on ``net`` and ``x`` (vmap over points or networks).
    """
    Shapes("relu_forward").network("net", net)("x", x, "M")

    def layer(h, wb):
        w, b = wb
        h = jax.nn.relu(w @ h + b)
        return h, h

    h, hidden = jax.lax.scan(layer, x, (net.weights, net.biases))
    return hidden, net.out_weight @ h + net.out_bias


def cumulative_parameters(
    weights: Float[Array, "L M M"], biases: Float[Array, "L M"]
) -> tuple[Float[Array, "L M M"], Float[Array, "L M"]]:
    """Cumulative parameters W⁽ℓ⁾ = W_ℓ W⁽ℓ⁻¹⁾ and b⁽ℓ⁾ = W_ℓ b⁽ℓ⁻¹⁾ + b_ℓ (W⁽⁰⁾ = I, b⁽⁰⁾ = 0).

    Returns stacked ``(L, M, M)`` and ``(L, M)`` arrays. Batch axis: refused (vmap over
    networks).
    """
    s = Shapes("cumulative_parameters")
    s("weights", weights, "L M M")
    s("biases", biases, "L M")
    M = weights.shape[-1]

    def step(carry, wb):
        W_cum, b_cum = carry
        w, b = wb
        W_cum, b_cum = w @ W_cum, w @ b_cum + b
        return (W_cum, b_cum), (W_cum, b_cum)

    init = (jnp.eye(M, dtype=weights.dtype), jnp.zeros(M, dtype=biases.dtype))
    _, (W_cum, b_cum) = jax.lax.scan(step, init, (weights, biases))
    return W_cum, b_cum


def _check_map(function: str, W, b, z) -> None:
    s = Shapes(function)
    s("W", W, "M M")
    s("b", b, "M")
    s("z", z, "M")


def truncation_map(
    W: Float[Array, "M M"], b: Float[Array, " M"], z: Float[Array, " M"]
) -> Float[Array, " M"]:
    """τ_{W,b}(z) = W⁻¹(σ(Wz + b) − b) for one point ``z`` ``(M,)`` with W ``(M, M)``, b ``(M,)``
    (docs/theory.md#network-and-truncation-maps). Batch axis: refused (vmap over points)."""
    _check_map("truncation_map", W, b, z)
    return jnp.linalg.solve(W, jax.nn.relu(W @ z + b) - b)


def truncation_projector(
    W: Float[Array, "M M"], b: Float[Array, " M"], z: Float[Array, " M"]
) -> Float[Array, "M M"]:
    """Π(z) = W⁻¹ P W with P the 0/1 diagonal of units active at z: τ(z) = θ + Π(z)(z − θ).

    Π is a projector (Π² = Π); it is orthogonal (Π = Πᵀ) exactly for adapted W. Shapes as in
    :func:`truncation_map`. Batch axis: refused.
    """
    _check_map("truncation_projector", W, b, z)
    active = (W @ z + b > 0).astype(W.dtype)
    return jnp.linalg.solve(W, active[:, None] * W)


def input_space_forward(
    net: ReLUNetwork, x: Float[Array, " M"]
) -> tuple[Float[Array, "L M"], Float[Array, " M"]]:
    """Input-space form of the forward pass: the chain z⁽ℓ⁾ = τ_ℓ(z⁽ℓ⁻¹⁾) for one input.

    Returns the truncated points z⁽ℓ⁾, ``(L, M)``, and the truncated datum x̃ = z⁽ᴸ⁾. Batch axis:
    refused on ``net`` and ``x`` (vmap over points or networks).
    """
    Shapes("input_space_forward").network("net", net)("x", x, "M")
    W_cum, b_cum = cumulative_parameters(net.weights, net.biases)

    def layer(z, Wb):
        z = truncation_map(*Wb, z)
        return z, z

    x_tilde, zs = jax.lax.scan(layer, x, (W_cum, b_cum))
    return zs, x_tilde


def random_orthogonal(key: PRNGKeyArray, dim: int) -> Float[Array, "M M"]:
    """A Haar-random ``(dim, dim)`` orthogonal matrix (QR of a Gaussian matrix with the signs of
    R's diagonal fixed), e.g. the common frame O of adapted weights. ``key``: one PRNG key.
    Batch axis: refused (vmap over keys)."""
    Shapes("random_orthogonal").key("key", key)
    q, r = jnp.linalg.qr(jax.random.normal(key, (dim, dim)))
    return q * jnp.sign(jnp.diag(r))[None, :]
