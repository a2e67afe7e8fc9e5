"""Network model: cumulative identity, truncation maps, adapted parametrisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import lsq_linear

from gflow_jax.core import (
    AdaptedParameters,
    adapted_standard_cost,
    adapted_truncate,
    cumulative_parameters,
    input_space_forward,
    network_standard_cost,
    relu_forward,
    truncation_map,
    truncation_projector,
)

from .helpers import random_network, random_orthogonal

_batched_forward = jax.jit(jax.vmap(relu_forward, in_axes=(None, 0)))
_batched_input_space = jax.jit(jax.vmap(input_space_forward, in_axes=(None, 0)))


@pytest.mark.parametrize("seed", range(5))
def test_cumulative_identity(seed):
    """x⁽ℓ⁾ = W⁽ℓ⁾ z⁽ℓ⁾ + b⁽ℓ⁾ for a generic (non-adapted) network, to 1e-10."""
    key, kx = jax.random.split(jax.random.PRNGKey(seed))
    net = random_network(key, L=4, M=5)
    W_cum, b_cum = cumulative_parameters(net.weights, net.biases)
    x = jax.random.normal(kx, (50, 5))
    hidden = _batched_forward(net, x)[0]  # (50, L, M)
    zs = _batched_input_space(net, x)[0]
    rebuilt = jnp.einsum("lij,nlj->nli", W_cum, zs) + b_cum[None]
    np.testing.assert_allclose(rebuilt, hidden, rtol=0, atol=1e-10)
    # some units are actually off, otherwise the identity would be trivial
    assert 0.05 < float(jnp.mean(hidden == 0)) < 0.95


def test_cumulative_parameters_recursion():
    net = random_network(jax.random.PRNGKey(1), L=3, M=3)
    W_cum, b_cum = cumulative_parameters(net.weights, net.biases)
    W1, W2, W3 = net.weights
    b1, b2, b3 = net.biases
    np.testing.assert_allclose(W_cum[2], W3 @ W2 @ W1, atol=1e-12)
    np.testing.assert_allclose(b_cum[2], W3 @ (W2 @ b1 + b2) + b3, atol=1e-12)


def _cone_projection(z, theta, frame, signs):
    """Nearest point of the cone θ + Oᵀ diag(signs) R^M_+ to z, by scipy's bounded lsq."""
    A = frame.T * signs[None, :]
    res = lsq_linear(A, z - theta, bounds=(0, np.inf), method="bvls", tol=1e-14)
    return theta + A @ res.x


@pytest.mark.parametrize("seed", range(4))
def test_adapted_truncation_is_cone_projection(seed):
    """For adapted W = D O, τ is the nearest-point projection onto the cone (scipy oracle), and
    it equals the coordinatewise clamp in the rotated frame."""
    M = 4
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    frame = random_orthogonal(k1, M)
    d = jnp.array([1.3, -0.7, 2.0, -1.1])
    b = jax.random.normal(k2, (M,))
    W = d[:, None] * frame
    theta = -jnp.linalg.solve(W, b)
    params = AdaptedParameters(d=d[None], b=b[None])
    tau_fn = jax.jit(truncation_map)
    for z in 2.0 * jax.random.normal(k3, (25, M)):
        tau = tau_fn(W, b, z)
        expected = _cone_projection(
            np.asarray(z), np.asarray(theta), np.asarray(frame), np.sign(np.asarray(d))
        )
        np.testing.assert_allclose(tau, expected, atol=1e-9)
        clamp, _ = adapted_truncate(params, (frame @ z)[None])
        np.testing.assert_allclose(frame.T @ clamp[0], tau, atol=1e-12)
        proj = jax.jit(truncation_projector)(W, b, z)
        np.testing.assert_allclose(proj, proj.T, atol=1e-12)  # orthogonal projector
    del k4


def test_generic_weights_give_oblique_projector():
    """Generic W: Π = W⁻¹PW is a projector (Π² = Π) but not symmetric, so τ is not the
    nearest-point projection — the reason for the adapted parametrisation."""
    W = jnp.array([[1.0, 0.8], [0.3, 1.2]])
    b = jnp.array([-1.5, 0.2])
    z = jnp.array([0.1, 1.0])
    P = truncation_projector(W, b, z)
    assert 0 < float(jnp.trace(P)) < 2  # one unit active
    np.testing.assert_allclose(P @ P, P, atol=1e-12)
    assert float(jnp.max(jnp.abs(P - P.T))) > 0.1
    theta = -jnp.linalg.solve(W, b)
    np.testing.assert_allclose(truncation_map(W, b, z), theta + P @ (z - theta), atol=1e-12)


def test_adapted_to_network_round_trip():
    """The layer parameters of AdaptedParameters reproduce its cumulative parameters, and the
    network's hidden output is W⁽ᴸ⁾x̃ + b⁽ᴸ⁾ of the coordinatewise truncation."""
    M, L = 3, 3
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(7), 4)
    frame = random_orthogonal(k1, M)
    d = jnp.array([[1.0, 2.0, -0.5], [-1.5, 0.7, 1.0], [0.9, -1.2, 2.0]])
    params = AdaptedParameters(d=d, b=jax.random.normal(k2, (L, M)))
    net = params.to_network(frame, jax.random.normal(k3, (2, M)), jnp.zeros(2))
    W_cum, b_cum = cumulative_parameters(net.weights, net.biases)
    np.testing.assert_allclose(W_cum, params.cumulative_weights(frame), atol=1e-12)
    np.testing.assert_allclose(b_cum, params.b, atol=1e-12)
    x = jax.random.normal(k4, (30, M))
    x_tilde, _ = adapted_truncate(params, x @ frame.T)
    hidden = jax.vmap(lambda xi: relu_forward(net, xi)[0][-1])(x)
    np.testing.assert_allclose(hidden, x_tilde * d[-1][None] + params.b[-1][None], atol=1e-12)
    y = jax.random.normal(k4, (30, 2))
    np.testing.assert_allclose(
        adapted_standard_cost(params, x @ frame.T, y, net.out_weight, net.out_bias),
        network_standard_cost(net, x, y),
        rtol=1e-12,
    )


def test_network_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"net.weights must have shape \(L, M, M\)"):
        from gflow_jax.core import ReLUNetwork

        ReLUNetwork(jnp.zeros((2, 3, 4)), jnp.zeros((2, 3)), jnp.zeros((1, 3)), jnp.zeros(1))
