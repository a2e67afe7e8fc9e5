"""Diagnostics of full networks along a trajectory: cumulative parameters, input-space truncation,
adaptedness, Papyan NC1–NC4, the balance law, accuracy (docs/theory.md#adapted-weights,
#neural-collapse)."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..core import ReLUNetwork, cumulative_parameters, relu_forward, truncation_map
from ..core._shapes import Shapes
from ..dynamics import balance_quantities
from ._collapse import (
    CollapseConvention,
    CollapseMeasures,
    collapse_convention,
    nc1_input,
    papyan_collapse,
)


def offdiagonality(W: Float[Array, "*batch M M"]) -> Float[Array, "*batch"]:
    """‖offdiag(G)‖_F / ‖G‖_F with G = W Wᵀ: 0 exactly for adapted W (= D O), at most 1.

    ``W``: ``(*batch, M, M)``. Batch axis: accepted (any leading axes, by design).
    """
    Shapes("offdiagonality")("W", W, "*batch M M")
    G = W @ jnp.swapaxes(W, -1, -2)
    diag = jnp.diagonal(G, axis1=-2, axis2=-1)
    total = jnp.sum(G**2, axis=(-2, -1))
    return jnp.sqrt(jnp.maximum(total - jnp.sum(diag**2, axis=-1), 0.0) / total)


def parameter_distance(a: ReLUNetwork, b: ReLUNetwork) -> Float[Array, "*batch"]:
    """Euclidean distance between all parameters of two (stacked) networks, per leading index.

    Batch axis: accepted (any leading axes ``*batch``, by design); ``a`` and ``b`` must have the
    same architecture and the same leading axes. Returns ``(*batch)``.
    """
    Shapes("parameter_distance").network("a", a, lead="*batch").network("b", b, lead="*batch")
    batch = a.weights.ndim - 3  # weights are (*batch, L, M, M)
    leaves = jax.tree.leaves(jax.tree.map(lambda u, v: u - v, a, b))
    return jnp.sqrt(sum(jnp.sum(v.reshape(v.shape[:batch] + (-1,)) ** 2, -1) for v in leaves))


class NetworkDiagnostics(eqx.Module):
    """Input-space and feature-space state at each saved time (leading axis T).

    Attributes:
        x_tilde: ``(T, N, M)`` truncated data x̃ = τ_L ∘ ⋯ ∘ τ_1(x) from the cumulative parameters.
        truncated: ``(T, N, L, M)`` unit (ℓ, k) inactive at point i, i.e. the pre-activation
            (W⁽ℓ⁾z⁽ℓ⁻¹⁾ + b⁽ℓ⁾)_k < 0: the point is moved onto face (ℓ, k) in input space.
        counts: ``(T, L, M)`` n_{ℓ,k}: points truncated by face (ℓ, k).
        layer_fraction: ``(T, L)`` fraction of points truncated by at least one face of layer ℓ.
        n_truncated: ``(T,)`` points truncated by at least one face of any layer.
        rank: ``(T, N)`` rank of ∂x̃/∂x = Π_L⋯Π_1 at each point (= rank of P_L W_L ⋯ P_1 W_1,
            P_ℓ the 0/1 diagonal of active units): M minus the input directions truncated away.
        fully_truncated: ``(T,)`` points with rank 0: x̃ is locally constant (the point is pinned
            to a vertex in input space; a cluster of such points collapses by truncation alone).
        rates: ``(T, L, M)`` λ_{ℓ,k} = n_{ℓ,k} / (N |W⁽ℓ⁾[k,:]|²): the rate of
            docs/theory.md#effective-flows with d_{ℓ,k} replaced by the row norm of W⁽ℓ⁾ (equal
            to |d_{ℓ,k}| for adapted weights).
        offdiag: ``(T, L)`` adaptedness defect ‖offdiag(W⁽ℓ⁾W⁽ℓ⁾ᵀ)‖_F/‖W⁽ℓ⁾W⁽ℓ⁾ᵀ‖_F.
        min_singular: ``(T, L)`` smallest singular value of W⁽ℓ⁾ (truncation maps need it > 0).
        identity_error: ``(T,)`` max_{i,ℓ} |x⁽ℓ⁾ − (W⁽ℓ⁾z⁽ℓ⁾ + b⁽ℓ⁾)|: rounding if the cumulative
            mapping is faithful.
        nc1_input: ``(T,)`` NC1 of x̃ in input space.
        papyan: :class:`CollapseMeasures` of x⁽ᴸ⁾ with W_{L+1}, each ``(T,)``, in the
            convention asked for (``papyan.convention``).
        balance: ``(T, L, M)`` balance quantities Δ_{ℓ,k}.
        accuracy: ``(T,)`` fraction of points whose argmax output is their class.
    """

    x_tilde: Float[Array, "T N M"]
    truncated: Bool[Array, "T N L M"]
    counts: Int[Array, "T L M"]
    layer_fraction: Float[Array, "T L"]
    n_truncated: Int[Array, " T"]
    rank: Int[Array, "T N"]
    fully_truncated: Int[Array, " T"]
    rates: Float[Array, "T L M"]
    offdiag: Float[Array, "T L"]
    min_singular: Float[Array, "T L"]
    identity_error: Float[Array, " T"]
    nc1_input: Float[Array, " T"]
    papyan: CollapseMeasures
    balance: Float[Array, "T L M"]
    accuracy: Float[Array, " T"]


def _one_diagnostic(net: ReLUNetwork, x, labels, n_classes: int, collapse: CollapseConvention):
    W_cum, b_cum = cumulative_parameters(net.weights, net.biases)

    def chain(xi):
        def layer(z, Wb):
            W, b = Wb
            pre = W @ z + b
            z_next = truncation_map(W, b, z)
            return z_next, (z_next, pre < 0)

        x_tilde, (zs, hits) = jax.lax.scan(layer, xi, (W_cum, b_cum))
        return x_tilde, zs, hits

    x_tilde, zs, hits = jax.vmap(chain)(x)  # (N, M), (N, L, M), (N, L, M)

    def local_rank(hit):  # rank of P_L W_L ⋯ P_1 W_1
        def layer(J, wh):
            w, h = wh
            return jnp.where(h[:, None], 0.0, w @ J), None

        J, _ = jax.lax.scan(layer, jnp.eye(x.shape[1], dtype=x.dtype), (net.weights, hit))
        return jnp.linalg.matrix_rank(J)

    rank = jax.vmap(local_rank)(hits)
    hidden, out = jax.vmap(lambda xi: relu_forward(net, xi))(x)
    rebuilt = jnp.einsum("lij,nlj->nli", W_cum, zs) + b_cum[None]
    row_norm2 = jnp.sum(W_cum**2, axis=-1)
    counts = jnp.sum(hits, axis=0)
    papyan = papyan_collapse(
        hidden[:, -1], labels, n_classes, net.out_weight, net.out_bias, convention=collapse
    )
    return NetworkDiagnostics(
        x_tilde=x_tilde,
        truncated=hits,
        counts=counts,
        layer_fraction=jnp.mean(jnp.any(hits, axis=-1), axis=0).astype(x.dtype),
        n_truncated=jnp.sum(jnp.any(hits, axis=(-2, -1))),
        rank=rank,
        fully_truncated=jnp.sum(rank == 0),
        rates=counts / (x.shape[0] * row_norm2),
        offdiag=offdiagonality(W_cum),
        min_singular=jnp.linalg.svd(W_cum, compute_uv=False)[:, -1],
        identity_error=jnp.max(jnp.abs(rebuilt - hidden)),
        nc1_input=nc1_input(x_tilde, labels, n_classes),
        papyan=papyan,
        balance=balance_quantities(net),
        accuracy=jnp.mean((jnp.argmax(out, axis=-1) == labels).astype(x.dtype)),
    )


def network_diagnostics(
    nets: ReLUNetwork,
    x: Float[Array, "N M"],
    labels: Int[Array, " N"],
    n_classes: int,
    *,
    collapse: str | CollapseConvention = "toolkit",
) -> NetworkDiagnostics:
    """Map every saved network (leading axis T) to cumulative parameters and diagnose it.

    Per saved time: W⁽ℓ⁾, b⁽ℓ⁾ (:func:`~gflow_jax.core.cumulative_parameters`), the truncation
    chain z⁽ℓ⁾ = τ_{W⁽ℓ⁾,b⁽ℓ⁾}(z⁽ℓ⁻¹⁾) of every point, the check x⁽ℓ⁾ = W⁽ℓ⁾z⁽ℓ⁾ + b⁽ℓ⁾ against the
    layer-form forward pass, truncation counts and rates, adaptedness, NC1 in input space, Papyan
    NC1–NC4 on x⁽ᴸ⁾ in the convention ``collapse`` (a name or a
    :class:`~gflow_jax.diagnostics.CollapseConvention`, see
    :func:`~gflow_jax.diagnostics.papyan_collapse`), the balance quantities and the training
    accuracy.

    Args:
        nets: stacked networks, every leaf with one leading axis T (weights ``(T, L, M, M)``,
            biases ``(T, L, M)``, out_weight ``(T, Q, M)``, out_bias ``(T, Q)``).
        x: ``(N, M)`` inputs; ``labels`` ``(N,)``; ``n_classes`` Q.

    Batch axis: exactly the one time axis T of ``nets`` by design; a further axis (on ``nets``,
    ``x`` or ``labels``) is refused.
    """
    check = Shapes("network_diagnostics").network("nets", nets, lead="T")
    check("x", x, "N M")
    check("labels", labels, "N")
    conv = collapse_convention(collapse)
    return _network_diagnostics(nets, x, labels, int(n_classes), conv)


@eqx.filter_jit
def _network_diagnostics(nets, x, labels, n_classes: int, collapse: CollapseConvention):
    return jax.vmap(lambda n: _one_diagnostic(n, x, labels, n_classes, collapse))(nets)


@jax.jit
def hidden_representations(
    weights: Float[Array, "T L M M"], biases: Float[Array, "T L M"], x: Float[Array, "N M"]
) -> Float[Array, "T L N M"]:
    """Hidden activations x⁽ℓ⁾ = σ(W_ℓ x⁽ℓ⁻¹⁾ + b_ℓ) of every saved network (layer form,
    :func:`~gflow_jax.core.relu_forward`), ``(T, L, N, M)``, from ``weights`` ``(T, L, M, M)``,
    ``biases`` ``(T, L, M)`` and ``x`` ``(N, M)``. Batch axis: the one time axis T by design; a
    further axis is refused."""
    check = Shapes("hidden_representations")
    check("weights", weights, "T L M M")
    check("biases", biases, "T L M")
    check("x", x, "N M")

    def one(W, b):
        def layer(h, wb):
            h = jax.nn.relu(h @ wb[0].T + wb[1][None, :])
            return h, h

        return jax.lax.scan(layer, x, (W, b))[1]

    return jax.vmap(one)(weights, biases)
