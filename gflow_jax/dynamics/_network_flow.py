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
from ..core._shapes import Shapes
from ._descent import DescentTrajectory, descent_loop, run_descent
from ._integrate import integrate_gradient_flow
from ._network_sliding import solve_network_sliding
from ._sampling import minibatch_indices
from ._settings import ADAPTIVE, SolverSettings
from ._solution import FlowSolution


class NetworkProblem(eqx.Module):
    """Training data of the full-network dynamics.

    Attributes:
        x: ``(N, M)`` inputs x_{j,i}.
        y: ``(N, Q)`` reference output of each point (y_j of its class).

    Batch axis: refused by the constructor (one data set).
    """

    x: Float[Array, "N M"]
    y: Float[Array, "N Q"]

    def __check_init__(self):
        _check_problem(Shapes("NetworkProblem"), self, "")

    @property
    def n_points(self) -> int:
        return self.x.shape[0]


def _check_problem(s: Shapes, problem: NetworkProblem, name: str = "problem.") -> Shapes:
    """x ``(N, M)`` and y ``(N, Q)`` (M and Q those of a network checked before)."""
    s(f"{name}x", problem.x, "N M")
    s(f"{name}y", problem.y, "N Q")
    return s


def _check_call(function: str, net, problem, save_ts=None, weights=None) -> Shapes:
    s = _check_problem(Shapes(function).network("net" if save_ts is None else "net0", net), problem)
    s("save_ts", save_ts, "T")
    s("weights", weights, "N")
    return s


def _point_losses(net: ReLUNetwork, x: Float[Array, "N M"], y: Float[Array, "N Q"]):
    out = jax.vmap(lambda xi: relu_forward(net, xi)[1])(x)
    return 0.5 * jnp.sum((out - y) ** 2, axis=-1)


def network_loss(
    net: ReLUNetwork,
    problem: NetworkProblem,
    weights: Float[Array, " N"] | None = None,
) -> Float[Array, ""]:
    """Standard cost C = (1/2N) Σ_i |x⁽ᴸ⁺¹⁾_i − y_i|², or Σ_i w_i ½|x⁽ᴸ⁺¹⁾_i − y_i|² with
    per-point ``weights`` ``(N,)`` (a minibatch: w_i = 1/B on the batch, 0 elsewhere). Batch
    axis: refused on ``net`` and the problem (vmap over networks)."""
    _check_call("network_loss", net, problem, weights=weights)
    losses = _point_losses(net, problem.x, problem.y)
    return jnp.mean(losses) if weights is None else jnp.sum(weights * losses)


def network_gradient(
    net: ReLUNetwork, problem: NetworkProblem, weights: Float[Array, " N"] | None = None
) -> ReLUNetwork:
    """∇C with respect to every leaf of ``net`` (autodiff; a ReLUNetwork of gradients).
    Shapes as in :func:`network_loss`. Batch axis: refused."""
    _check_call("network_gradient", net, problem, weights=weights)
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
    solve; ``solver``, ``max_steps``, ``dtmin``, ``events`` and ``max_events`` are static.

    The field jumps where a pre-activation z_{ℓ,k,i} of a hidden unit (ℓ, k) at a training point
    i crosses 0; where both one-sided fields push z towards 0 the solution *slides*: z stays at
    0 and ReLU' = α ∈ [0, 1] there, α chosen so that dz/ds = 0 (docs/theory.md#sliding, the full
    network). The plain solve (``events=False``, the default) integrates across the jumps by
    step-size control alone: on a sliding mode it chatters until ``max_steps`` (a reported
    failure; :func:`~gflow_jax.dynamics.check_solution` then suggests events), and with
    ``dtmin > 0`` it "succeeds" by forcing steps through the chatter. With ``events=True`` and
    an adaptive solver every crossing is located by a diffrax event and resolved there: crossed,
    or held at 0 with the Filippov α (solved at every evaluation of the field) until α leaves
    [0, 1]; ``events`` of the solution lists them (unit ``coord`` of ``layer`` at ``point``;
    ``value`` the slope after the event), at most ``max_events`` in all and at most
    ``MAX_HELD`` (16) pairs held at once, else ``success = False`` and
    :func:`~gflow_jax.dynamics.check_solution` names the unit and point. ``sliding`` is
    ``None``. ``"euler"`` ignores ``events``.

    Batch axis: refused on ``net0`` and the problem (one solve; vmap for many); ``save_ts``
    ``(T,)``.
    """
    _check_call("solve_network_flow", net0, problem, save_ts=save_ts)
    settings = SolverSettings() if settings is None else settings
    if settings.solver == "exact":
        raise ValueError(
            'solve_network_flow: settings.solver "exact" solves the bias-only effective flow '
            f"only; use one of {(*ADAPTIVE, 'euler')} for the full network"
        )
    if settings.events and settings.solver in ADAPTIVE:
        return solve_network_sliding(problem, net0, jnp.asarray(save_ts), settings)
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

    Batch axis: refused on ``net0``, the problem and ``key``.
    """
    _check_call("network_descent", net0, problem, save_ts=save_ts).key("key", key)
    return run_descent(_descend, problem, net0, save_ts, eta, batch_size, key, progress)


def balance_quantities(net: ReLUNetwork) -> Float[Array, "L M"]:
    """Δ_{ℓ,k} = |W_ℓ[k,:]|² + b_{ℓ,k}² − |W_{ℓ+1}[:,k]|² for every hidden neuron (ℓ, k).

    Conserved by the gradient flow of any cost of the network function (module docstring); the
    diagonal of W_ℓW_ℓᵀ + b_ℓb_ℓᵀ − W_{ℓ+1}ᵀW_{ℓ+1}, with W_{L+1} the output weight.

    Batch axis: accepted. ``net`` may be stacked with any leading axes ``*batch`` on every leaf
    (e.g. the saves ``(T, …)`` of :func:`solve_network_flow`), and the result is then
    ``(*batch, L, M)``; the leaves must agree on those axes.
    """
    Shapes("balance_quantities").network("net", net, lead="*batch")
    incoming = jnp.sum(net.weights**2, axis=-1) + net.biases**2  # (*batch, L, M)
    later = jnp.sum(net.weights[..., 1:, :, :] ** 2, axis=-2)  # columns of W_2..W_L
    last = jnp.sum(net.out_weight**2, axis=-2)[..., None, :]  # columns of W_{L+1}
    return incoming - jnp.concatenate([later, last], axis=-2)
