"""Gradient flow, GD and SGD of *all* parameters of the ReLU network.

The state is a :class:`~gflow_jax.core.ReLUNetwork` (W_ℓ, b_ℓ for ℓ = 1..L and the output
layer W_{L+1}, b_{L+1}); the cost is the standard cost

    C = (1/2N) Σ_i |x⁽ᴸ⁺¹⁾_i − y_i|²

with no constraint on the weights (the comparison mode of docs/theory.md#adapted-weights: the
adapted set W⁽ℓ⁾W⁽ℓ⁾ᵀ diagonal is *not* preserved). Three dynamics on one clock s:

* :func:`solve_network_flow` — the gradient flow ∂_s θ = −∇C(θ), integrated with diffrax (Tsit5 +
  PIDController by default, :class:`~gflow_jax.dynamics.SolverSettings`, the conventions of
  :func:`~gflow_jax.dynamics.solve_flow`);
* :func:`network_descent` with ``batch_size = N`` — full-batch GD with ``optax.sgd(η)``; iterate k
  sits at s = η·k, and it is the flow's explicit Euler scheme;
* :func:`network_descent` with ``batch_size = B < N`` — minibatch SGD: at every step a fresh
  uniform B-subset (without replacement) and the gradient of the minibatch mean.

η is traced: one compiled program serves every step size (one per batch size B, which sets the
minibatch shape). Minibatches come from the one sampler
(:func:`~gflow_jax.dynamics.minibatch_indices`).

**Balance quantities.** ReLU is positively homogeneous: for α > 0 scaling neuron k of hidden layer
ℓ's incoming row W_ℓ[k, :] and bias b_ℓ[k] by α and its outgoing column W_{ℓ+1}[:, k] by 1/α leaves
the network function, hence C and every minibatch cost, unchanged. Differentiating at α = 1,
⟨∂C/∂W_ℓ[k,:], W_ℓ[k,:]⟩ + (∂C/∂b_ℓ[k]) b_ℓ[k] − ⟨∂C/∂W_{ℓ+1}[:,k], W_{ℓ+1}[:,k]⟩ = 0, so along
the gradient flow

    Δ_{ℓ,k} = |W_ℓ[k, :]|² + b_{ℓ,k}² − |W_{ℓ+1}[:, k]|²,   ℓ = 1..L, k = 1..M

(W_{L+1} the output weight; b_{L+1} does not enter) is conserved: the diagonal of
W_ℓW_ℓᵀ + b_ℓb_ℓᵀ − W_{ℓ+1}ᵀW_{ℓ+1}. Off-diagonal entries are *not* conserved (that needs
linear, not merely homogeneous, units). A GD step changes Δ by exactly
η²(|∂C/∂W_ℓ[k,:]|² + (∂C/∂b_ℓ[k])² − |∂C/∂W_{ℓ+1}[:,k]|²): O(η) drift over a fixed time.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..core import ReLUNetwork, relu_forward
from ._descent import DescentTrajectory, descent_loop, run_descent
from ._integrate import integrate_gradient_flow
from ._sampling import minibatch_indices
from ._settings import SolverSettings
from ._solution import FlowSolution


class NetworkProblem(eqx.Module):
    """Training data of the full-network dynamics.

    Attributes:
        x: ``(N, M)`` inputs x_{j,i}.
        y: ``(N, Q)`` reference output of each point (y_j of its class).
    """

    x: Float[Array, "N M"]
    y: Float[Array, "N Q"]

    def __check_init__(self):
        if self.x.ndim != 2 or self.y.ndim != 2 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"x must be (N, M) and y (N, Q) with the same N, got {self.x.shape}, {self.y.shape}"
            )

    @property
    def n_points(self) -> int:
        return self.x.shape[0]


def _point_losses(net: ReLUNetwork, x: Float[Array, "N M"], y: Float[Array, "N Q"]):
    out = jax.vmap(lambda xi: relu_forward(net, xi)[1])(x)
    return 0.5 * jnp.sum((out - y) ** 2, axis=-1)


def network_loss(
    net: ReLUNetwork,
    problem: NetworkProblem,
    weights: Float[Array, " N"] | None = None,
) -> Float[Array, ""]:
    """Standard cost C = (1/2N) Σ_i |x⁽ᴸ⁺¹⁾_i − y_i|², or Σ_i w_i ½|x⁽ᴸ⁺¹⁾_i − y_i|² with
    per-point ``weights`` (a minibatch: w_i = 1/B on the batch, 0 elsewhere)."""
    losses = _point_losses(net, problem.x, problem.y)
    return jnp.mean(losses) if weights is None else jnp.sum(weights * losses)


def network_gradient(
    net: ReLUNetwork, problem: NetworkProblem, weights: Float[Array, " N"] | None = None
) -> ReLUNetwork:
    """∇C with respect to every leaf of ``net`` (autodiff; a ReLUNetwork of gradients)."""
    return jax.grad(network_loss)(net, problem, weights)


def _vector_field(s, net: ReLUNetwork, problem: NetworkProblem) -> ReLUNetwork:
    del s
    return jax.tree.map(jnp.negative, network_gradient(net, problem))


def solve_network_flow(
    problem: NetworkProblem,
    net0: ReLUNetwork,
    save_ts: Float[Array, " T"],
    settings: SolverSettings | None = None,
    *,
    progress: bool = False,
) -> FlowSolution:
    """Integrate ∂_s θ = −∇C(θ) for all network parameters over ``[save_ts[0], save_ts[-1]]``.

    Same conventions as :func:`~gflow_jax.dynamics.solve_flow`: adaptive steps with a
    PIDController (``settings.solver="euler"`` takes fixed steps ``dt0``: explicit Euler =
    full-batch GD with η = dt0), failures reported in ``success`` (see
    :func:`~gflow_jax.dynamics.check_solution`); the state of the returned
    :class:`~gflow_jax.dynamics.FlowSolution` is a stacked :class:`~gflow_jax.core.ReLUNetwork`. The
    tolerances, controller coefficients and ``dt0`` are arrays, so new values reuse the compiled
    solve; ``solver``, ``max_steps`` and ``dtmin`` are static. ``dtmin = 0`` means no
    lower bound; with ``dtmin > 0`` steps are forced to at least ``dtmin`` (sliding modes, where
    the field points into a ReLU face from both sides, otherwise make the solver chatter).
    """
    settings = SolverSettings() if settings is None else settings
    return _solve(problem, net0, jnp.asarray(save_ts), settings, progress)


@eqx.filter_jit
def _solve(problem, net0, save_ts, settings: SolverSettings, progress: bool):
    sol = integrate_gradient_flow(_vector_field, net0, problem, save_ts, settings, progress)
    return FlowSolution.from_diffrax(
        sol, save_ts, jax.vmap(lambda n: network_loss(n, problem))(sol.ys)
    )


@eqx.filter_jit
def _descend(
    problem: NetworkProblem,
    net0: ReLUNetwork,
    eta: Float[Array, ""],
    n_steps: Int[Array, " T-1"],
    key: PRNGKeyArray,
    batch_size: int,
    progress: bool,
):
    n_points = problem.n_points
    everyone = jnp.ones(n_points, problem.x.dtype)
    rows = jnp.arange(n_points, dtype=jnp.int32)

    def direction(net, key_k):
        if batch_size == n_points:
            batch = problem
        else:
            index = minibatch_indices(key_k, everyone, batch_size, rows)
            batch = NetworkProblem(problem.x[index], problem.y[index])
        return jax.tree.map(jnp.negative, network_gradient(net, batch))

    desc = "full-network GD" if batch_size == n_points else "full-network SGD"
    nets = descent_loop(direction, net0, eta, n_steps, key, progress=progress, desc=desc)
    return nets, jax.vmap(lambda n: network_loss(n, problem))(nets)


def network_descent(
    problem: NetworkProblem,
    net0: ReLUNetwork,
    save_ts: Float[Array, " T"],
    eta: float,
    *,
    batch_size: int | None = None,
    key: PRNGKeyArray | None = None,
    progress: bool = False,
) -> DescentTrajectory:
    """Full-batch GD (``batch_size=None`` or N) or minibatch SGD of all parameters, ``optax.sgd``.

    Args:
        save_ts: ``(T,)`` save times; every gap a whole number of steps η
            (:func:`~gflow_jax.dynamics.steps_per_interval` raises otherwise).
        eta: step size η (traced: a new η reuses the compiled program).
        batch_size: B ∈ [1, N]; a fresh uniform B-subset every step (static: it sets shapes).
        key: PRNG key for the minibatches (required when B < N).
    """
    return run_descent(_descend, problem, net0, save_ts, eta, batch_size, key, progress)


def balance_quantities(net: ReLUNetwork) -> Float[Array, "L M"]:
    """Δ_{ℓ,k} = |W_ℓ[k,:]|² + b_{ℓ,k}² − |W_{ℓ+1}[:,k]|² for every hidden neuron (ℓ, k).

    Conserved by the gradient flow of any cost of the network function (module docstring); the
    diagonal of W_ℓW_ℓᵀ + b_ℓb_ℓᵀ − W_{ℓ+1}ᵀW_{ℓ+1}, with W_{L+1} the output weight.
    """
    incoming = jnp.sum(net.weights**2, axis=-1) + net.biases**2  # (L, M)
    next_weights = jnp.concatenate(
        [jnp.sum(net.weights[1:] ** 2, axis=-2), jnp.sum(net.out_weight**2, axis=0)[None]],
        axis=0,
    )
    return incoming - next_weights
