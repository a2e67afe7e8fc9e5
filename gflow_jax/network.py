"""Deep ReLU networks, their cumulative parameters, and the truncation maps of MATH.md Part A.

Notation (MATH.md): ``L`` hidden layers of width ``M``, output dimension ``Q``. The hidden layers
are x⁽ℓ⁾ = σ(W_ℓ x⁽ℓ⁻¹⁾ + b_ℓ) with square invertible W_ℓ; the output is
x⁽ᴸ⁺¹⁾ = W_{L+1} x⁽ᴸ⁾ + b_{L+1}. Cumulative parameters W⁽ℓ⁾ = W_ℓ⋯W_1 and
b⁽ℓ⁾ = W_ℓ b⁽ℓ⁻¹⁾ + b_ℓ turn the network into a chain of *truncations of the input space*:

    z⁽⁰⁾ = x,   z⁽ℓ⁾ = τ_{W⁽ℓ⁾,b⁽ℓ⁾}(z⁽ℓ⁻¹⁾),   τ_{W,b}(z) = W⁻¹(σ(Wz + b) − b),

and exactly x⁽ℓ⁾ = W⁽ℓ⁾ z⁽ℓ⁾ + b⁽ℓ⁾.

Two parametrisations live here:

* :class:`ReLUNetwork` — unconstrained layer parameters (W_ℓ, b_ℓ) stacked along a leading layer
  axis, used by the full-network comparisons.
* :class:`AdaptedParameters` — the adapted parametrisation W⁽ℓ⁾ = D_ℓ O with a common orthogonal
  frame O (held fixed, outside the pytree that flows) and cumulative biases b⁽ℓ⁾. In the rotated
  frame u = O z truncation is coordinatewise with thresholds c_{ℓ,k} = −b⁽ℓ⁾_k / d_{ℓ,k}.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

__all__ = [
    "AdaptedParameters",
    "ReLUNetwork",
    "adapted_truncate",
    "cumulative_parameters",
    "input_space_forward",
    "last_truncations",
    "relu_forward",
    "truncation_map",
    "truncation_projector",
]


class ReLUNetwork(eqx.Module):
    """A deep ReLU network with square hidden layers.

    Attributes:
        weights: ``(L, M, M)`` hidden-layer weights W_ℓ (invertible).
        biases: ``(L, M)`` hidden-layer biases b_ℓ.
        out_weight: ``(Q, M)`` output weight W_{L+1}.
        out_bias: ``(Q,)`` output bias b_{L+1}.
    """

    weights: Float[Array, "L M M"]
    biases: Float[Array, "L M"]
    out_weight: Float[Array, "Q M"]
    out_bias: Float[Array, " Q"]

    def __check_init__(self):
        L, M, M2 = self.weights.shape
        if M != M2:
            raise ValueError(f"hidden weights must be square, got shape {self.weights.shape}")
        if self.biases.shape != (L, M):
            raise ValueError(f"biases must have shape {(L, M)}, got {self.biases.shape}")
        if self.out_weight.ndim != 2 or self.out_weight.shape[1] != M:
            raise ValueError(f"out_weight must have shape (Q, {M}), got {self.out_weight.shape}")
        if self.out_bias.shape != (self.out_weight.shape[0],):
            raise ValueError(
                f"out_bias must have shape ({self.out_weight.shape[0]},), got {self.out_bias.shape}"
            )

    @property
    def depth(self) -> int:
        """Number of hidden layers L."""
        return self.weights.shape[0]

    @property
    def width(self) -> int:
        """Hidden width M (= input dimension)."""
        return self.weights.shape[1]


def relu_forward(
    net: ReLUNetwork, x: Float[Array, " M"]
) -> tuple[Float[Array, "L M"], Float[Array, " Q"]]:
    """Layer form of the forward pass for one input.

    Returns the hidden activations x⁽ℓ⁾, ``(L, M)``, and the output x⁽ᴸ⁺¹⁾, ``(Q,)``.
    """

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

    Returns stacked ``(L, M, M)`` and ``(L, M)`` arrays.
    """
    M = weights.shape[-1]

    def step(carry, wb):
        W_cum, b_cum = carry
        w, b = wb
        W_cum, b_cum = w @ W_cum, w @ b_cum + b
        return (W_cum, b_cum), (W_cum, b_cum)

    init = (jnp.eye(M, dtype=weights.dtype), jnp.zeros(M, dtype=biases.dtype))
    _, (W_cum, b_cum) = jax.lax.scan(step, init, (weights, biases))
    return W_cum, b_cum


def truncation_map(
    W: Float[Array, "M M"], b: Float[Array, " M"], z: Float[Array, " M"]
) -> Float[Array, " M"]:
    """τ_{W,b}(z) = W⁻¹(σ(Wz + b) − b) (MATH.md, truncation map), for one point ``z``."""
    return jnp.linalg.solve(W, jax.nn.relu(W @ z + b) - b)


def truncation_projector(
    W: Float[Array, "M M"], b: Float[Array, " M"], z: Float[Array, " M"]
) -> Float[Array, "M M"]:
    """Π(z) = W⁻¹ P W with P the 0/1 diagonal of units active at z: τ(z) = θ + Π(z)(z − θ).

    Π is a projector (Π² = Π); it is orthogonal (Π = Πᵀ) exactly for adapted W.
    """
    active = (W @ z + b > 0).astype(W.dtype)
    return jnp.linalg.solve(W, active[:, None] * W)


def input_space_forward(
    net: ReLUNetwork, x: Float[Array, " M"]
) -> tuple[Float[Array, "L M"], Float[Array, " M"]]:
    """Input-space form of the forward pass: the chain z⁽ℓ⁾ = τ_ℓ(z⁽ℓ⁻¹⁾) for one input.

    Returns the truncated points z⁽ℓ⁾, ``(L, M)``, and the truncated datum x̃ = z⁽ᴸ⁾.
    """
    W_cum, b_cum = cumulative_parameters(net.weights, net.biases)

    def layer(z, Wb):
        z = truncation_map(*Wb, z)
        return z, z

    x_tilde, zs = jax.lax.scan(layer, x, (W_cum, b_cum))
    return zs, x_tilde


class AdaptedParameters(eqx.Module):
    """Adapted cumulative parameters W⁽ℓ⁾ = D_ℓ O, b⁽ℓ⁾ (the effective-flow state).

    The common orthogonal frame O is *not* part of this pytree: it is frozen and the effective
    flow works in the rotated frame u = O x (see :func:`adapted_truncate`).

    Attributes:
        d: ``(L, M)`` diagonals d_{ℓ,k} of D_ℓ (non-zero; the sign picks the truncation side).
        b: ``(L, M)`` cumulative biases b⁽ℓ⁾.
    """

    d: Float[Array, "L M"]
    b: Float[Array, "L M"]

    @property
    def thresholds(self) -> Float[Array, "L M"]:
        """Thresholds c_{ℓ,k} = −b⁽ℓ⁾_k / d_{ℓ,k} (the cone apex θ_ℓ in the rotated frame)."""
        return -self.b / self.d

    @classmethod
    def from_thresholds(cls, d: Float[Array, "L M"], c: Float[Array, "L M"]) -> AdaptedParameters:
        """Parameters with weights ``d`` whose thresholds are ``c`` (b = −c·d)."""
        return cls(d=d, b=-c * d)

    def cumulative_weights(self, frame: Float[Array, "M M"]) -> Float[Array, "L M M"]:
        """W⁽ℓ⁾ = D_ℓ O, ``(L, M, M)``."""
        return self.d[:, :, None] * frame[None, :, :]

    def to_network(
        self,
        frame: Float[Array, "M M"],
        out_weight: Float[Array, "Q M"],
        out_bias: Float[Array, " Q"],
    ) -> ReLUNetwork:
        """The layer parameters of the same network: W_1 = D_1 O, W_ℓ = D_ℓ D_{ℓ−1}⁻¹ (ℓ ≥ 2),
        b_ℓ = b⁽ℓ⁾ − W_ℓ b⁽ℓ⁻¹⁾."""
        d, b = self.d, self.b
        first = d[0][:, None] * frame
        ratio = d[1:] / d[:-1]
        later = jax.vmap(jnp.diag)(ratio)
        weights = jnp.concatenate([first[None], later], axis=0)
        biases = jnp.concatenate([b[:1], b[1:] - ratio * b[:-1]], axis=0)
        return ReLUNetwork(weights, biases, out_weight, out_bias)


def adapted_truncate(
    params: AdaptedParameters, u: Float[Array, "*batch M"]
) -> tuple[Float[Array, "*batch M"], Float[Array, "*batch L M"]]:
    """Coordinatewise truncation chain in the rotated frame u = O x (MATH.md, adapted weights).

    τ_ℓ(u)_k = max(u_k, c_{ℓ,k}) if d_{ℓ,k} > 0 and min(u_k, c_{ℓ,k}) if d_{ℓ,k} < 0. A point
    exactly on a face counts as *not* truncated (``where(u < c, c, u)``), which fixes the
    subgradient autodiff takes there.

    Returns:
        x_tilde: truncated data, same shape as ``u``.
        truncated: ``(*batch, L, M)`` boolean — point truncated at (ℓ, k) (its coordinate was
            moved onto the face by that layer).
    """
    c = params.thresholds
    positive = params.d > 0

    def layer(z, layer_params):
        c_l, pos_l = (jnp.broadcast_to(a, z.shape) for a in layer_params)
        hit = jnp.where(pos_l, z < c_l, z > c_l)
        return jnp.where(hit, c_l, z), hit

    x_tilde, hits = jax.lax.scan(layer, u, (c, positive))
    return x_tilde, jnp.moveaxis(hits, 0, -2)


def last_truncations(truncated: Bool[Array, "*batch L M"]) -> Bool[Array, "*batch L M"]:
    """Truncations that survive to the output: truncated at (ℓ, k) and not re-truncated in
    coordinate k by a later layer. Only these points move with c_{ℓ,k}; their count is
    n_{ℓ,k} of MATH.md (the rate λ_{ℓ,k} = n_{ℓ,k}/(N d²_{ℓ,k}))."""
    later = jnp.flip(jnp.cumsum(jnp.flip(truncated, axis=-2), axis=-2), axis=-2) > 0
    later = jnp.concatenate([later[..., 1:, :], jnp.zeros_like(later[..., :1, :])], axis=-2)
    return truncated & ~later
