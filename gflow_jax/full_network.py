"""Gradient flow, GD and SGD of *all* parameters of the ReLU network (MATH.md Part A).

The state is a :class:`~gflow_jax.network.ReLUNetwork` (W_ℓ, b_ℓ for ℓ = 1..L and the output
layer W_{L+1}, b_{L+1}); the cost is the standard cost

    C = (1/2N) Σ_i |x⁽ᴸ⁺¹⁾_i − y_i|²

with no constraint on the weights (this is the comparison mode of MATH.md "Adapted weights": the
adapted set W⁽ℓ⁾W⁽ℓ⁾ᵀ diagonal is *not* preserved). Three dynamics on one clock s:

* :func:`solve_network_flow` — the gradient flow ∂_s θ = −∇C(θ), integrated with diffrax (Tsit5 +
  PIDController by default, :class:`~gflow_jax.flow.SolverSettings`, the conventions of
  :func:`gflow_jax.flow.solve_flow`);
* :func:`network_descent` with ``batch_size = N`` — full-batch GD with ``optax.sgd(η)``; iterate k
  sits at s = η·k, and it is the flow's explicit Euler scheme;
* :func:`network_descent` with ``batch_size = B < N`` — minibatch SGD: at every step a fresh
  uniform B-subset (without replacement) and the gradient of the minibatch mean.

η *and* B are traced: one compiled program serves every step size and batch size (the minibatch is
a 0/1 mask over all N points, so shapes do not depend on B).

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

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from .collapse import CollapseMeasures, nc1_input, papyan_collapse
from .flow import SolverSettings, integrate_gradient_flow
from .network import ReLUNetwork, cumulative_parameters, relu_forward, truncation_map
from .progress import scan_progress
from .training import steps_per_interval

__all__ = [
    "NetworkDiagnostics",
    "NetworkFlowSolution",
    "NetworkProblem",
    "NetworkTrajectory",
    "balance_quantities",
    "check_network_solution",
    "network_descent",
    "network_diagnostics",
    "network_gradient",
    "network_loss",
    "offdiagonality",
    "parameter_distance",
    "solve_network_flow",
]


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


# --------------------------------------------------------------------------------------------
# gradient flow (diffrax)


class NetworkFlowSolution(eqx.Module):
    """Saved states of a full-network gradient-flow solve.

    Attributes:
        ts: ``(T,)`` save times s.
        net: ReLUNetwork with a leading ``(T,)`` axis on every leaf.
        loss: ``(T,)`` cost C at each save time.
        num_steps, num_accepted_steps, num_rejected_steps: diffrax statistics (the field jumps
            where a point crosses a ReLU face, so steps get rejected).
        success: whether the solve reached the final time with a finite state.
    """

    ts: Float[Array, " T"]
    net: ReLUNetwork
    loss: Float[Array, " T"]
    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_rejected_steps: Int[Array, ""]
    success: Bool[Array, ""]


def solve_network_flow(
    problem: NetworkProblem,
    net0: ReLUNetwork,
    save_ts: Float[Array, " T"],
    settings: SolverSettings | None = None,
    *,
    progress: bool = False,
) -> NetworkFlowSolution:
    """Integrate ∂_s θ = −∇C(θ) for all network parameters over ``[save_ts[0], save_ts[-1]]``.

    Same conventions as :func:`gflow_jax.flow.solve_flow`: adaptive steps with a PIDController
    (``settings.solver="euler"`` takes fixed steps ``dt0``: explicit Euler = full-batch GD with
    η = dt0), failures reported in ``success`` (see :func:`check_network_solution`). The
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
    loss = jax.vmap(lambda n: network_loss(n, problem))(sol.ys)
    return NetworkFlowSolution(
        ts=save_ts,
        net=sol.ys,
        loss=loss,
        num_steps=sol.stats["num_steps"],
        num_accepted_steps=sol.stats["num_accepted_steps"],
        num_rejected_steps=sol.stats["num_rejected_steps"],
        success=(sol.result == diffrax.RESULTS.successful) & jnp.all(jnp.isfinite(loss)),
    )


def check_network_solution(
    solution: NetworkFlowSolution, settings: SolverSettings
) -> NetworkFlowSolution:
    """Raise a clear error if a single (un-batched) full-network solve failed."""
    if not bool(solution.success):
        raise RuntimeError(
            f"full-network gradient-flow solve failed to reach s = {float(solution.ts[-1])} after "
            f"{int(solution.num_steps)} steps ({int(solution.num_rejected_steps)} rejected; "
            f"max_steps = {settings.max_steps}). Raise flow.max_steps, loosen rtol/atol, or "
            "shorten flow.t_final."
        )
    return solution


# --------------------------------------------------------------------------------------------
# GD / SGD (optax)


class NetworkTrajectory(eqx.Module):
    """(S)GD iterates saved on a time grid s = η·k.

    Attributes:
        ts: ``(T,)`` save times.
        net: ReLUNetwork with a leading ``(T,)`` axis.
        loss: ``(T,)`` full-data cost C at each save time.
        eta: step size η.
        batch_size: minibatch size B (``N`` for full-batch GD).
    """

    ts: Float[Array, " T"]
    net: ReLUNetwork
    loss: Float[Array, " T"]
    eta: Float[Array, ""]
    batch_size: Int[Array, ""]


def _batch_weights(key: PRNGKeyArray, n_points: int, batch_size: Int[Array, ""]):
    """w_i = 1/B for the first B points of a uniform random permutation, 0 otherwise."""
    position = jnp.argsort(jax.random.permutation(key, n_points))  # place of i in the order
    chosen = position < batch_size
    return jnp.where(chosen, 1.0 / batch_size, 0.0)


@eqx.filter_jit
def _descend(
    problem: NetworkProblem,
    net0: ReLUNetwork,
    eta: Float[Array, ""],
    batch_size: Int[Array, ""],
    n_steps: Int[Array, " T-1"],
    key: PRNGKeyArray,
    progress: bool,
):
    optimizer = optax.sgd(learning_rate=eta)
    n_points = problem.n_points

    def step(k, carry):
        net, opt_state, key_i = carry
        weights = _batch_weights(jax.random.fold_in(key_i, k), n_points, batch_size)
        grads = network_gradient(net, problem, weights)
        updates, opt_state = optimizer.update(grads, opt_state, net)
        return optax.apply_updates(net, updates), opt_state, key_i

    def interval(state, xs):
        n_k, key_i = xs
        net, opt_state = state
        net, opt_state, _ = jax.lax.fori_loop(0, n_k, step, (net, opt_state, key_i))
        return (net, opt_state), net

    keys = jax.random.split(key, n_steps.shape[0])
    interval = scan_progress(interval, n_steps.shape[0], "full-network (S)GD", progress)
    _, saved = jax.lax.scan(interval, (net0, optimizer.init(net0)), (n_steps, keys))
    nets = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), net0, saved)
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
) -> NetworkTrajectory:
    """Full-batch GD (``batch_size=None`` or N) or minibatch SGD of all parameters, ``optax.sgd``.

    Args:
        save_ts: ``(T,)`` save times; every gap a whole number of steps η
            (:func:`gflow_jax.training.steps_per_interval` raises otherwise).
        eta: step size η (traced: a new η reuses the compiled program).
        batch_size: B ∈ [1, N] (traced too); a fresh uniform B-subset every step.
        key: PRNG key for the minibatches (required when B < N).
    """
    n_steps = steps_per_interval(np.asarray(save_ts), eta)
    n_points = problem.n_points
    batch_size = n_points if batch_size is None else batch_size
    if int(batch_size) != batch_size or not 1 <= batch_size <= n_points:
        raise ValueError(f"batch_size must be an integer in [1, {n_points}], got {batch_size!r}")
    if batch_size < n_points and key is None:
        raise ValueError("minibatch SGD needs a PRNG key")
    key = jax.random.PRNGKey(0) if key is None else key
    eta_arr = jnp.asarray(eta, dtype=jnp.result_type(float))
    b_arr = jnp.asarray(int(batch_size))
    nets, loss = _descend(problem, net0, eta_arr, b_arr, jnp.asarray(n_steps), key, progress)
    return NetworkTrajectory(
        ts=jnp.asarray(save_ts), net=nets, loss=loss, eta=eta_arr, batch_size=b_arr
    )


# --------------------------------------------------------------------------------------------
# invariants and diagnostics


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


def offdiagonality(W: Float[Array, "*batch M M"]) -> Float[Array, "*batch"]:
    """‖offdiag(G)‖_F / ‖G‖_F with G = W Wᵀ: 0 exactly for adapted W (= D O), at most 1."""
    G = W @ jnp.swapaxes(W, -1, -2)
    diag = jnp.diagonal(G, axis1=-2, axis2=-1)
    total = jnp.sum(G**2, axis=(-2, -1))
    return jnp.sqrt(jnp.maximum(total - jnp.sum(diag**2, axis=-1), 0.0) / total)


def parameter_distance(a: ReLUNetwork, b: ReLUNetwork) -> Float[Array, "*batch"]:
    """Euclidean distance between all parameters of two (stacked) networks, per leading index."""
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
        rates: ``(T, L, M)`` λ_{ℓ,k} = n_{ℓ,k} / (N |W⁽ℓ⁾[k,:]|²): the MATH.md rate with d_{ℓ,k}
            replaced by the row norm of W⁽ℓ⁾ (equal to |d_{ℓ,k}| for adapted weights).
        offdiag: ``(T, L)`` adaptedness defect ‖offdiag(W⁽ℓ⁾W⁽ℓ⁾ᵀ)‖_F/‖W⁽ℓ⁾W⁽ℓ⁾ᵀ‖_F.
        min_singular: ``(T, L)`` smallest singular value of W⁽ℓ⁾ (truncation maps need it > 0).
        identity_error: ``(T,)`` max_{i,ℓ} |x⁽ℓ⁾ − (W⁽ℓ⁾z⁽ℓ⁾ + b⁽ℓ⁾)|: rounding if the cumulative
            mapping is faithful.
        nc1_input: ``(T,)`` NC1 of x̃ in input space.
        papyan: :class:`~gflow_jax.collapse.CollapseMeasures` of x⁽ᴸ⁾ with W_{L+1}, each ``(T,)``.
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


def _one_diagnostic(net: ReLUNetwork, x, labels, n_classes: int):
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
    papyan = papyan_collapse(hidden[:, -1], labels, n_classes, net.out_weight, net.out_bias)
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


@eqx.filter_jit
def network_diagnostics(
    nets: ReLUNetwork, x: Float[Array, "N M"], labels: Int[Array, " N"], n_classes: int
) -> NetworkDiagnostics:
    """Map every saved network (leading axis T) to cumulative parameters and diagnose it.

    Per saved time: W⁽ℓ⁾, b⁽ℓ⁾ (:func:`~gflow_jax.network.cumulative_parameters`), the truncation
    chain z⁽ℓ⁾ = τ_{W⁽ℓ⁾,b⁽ℓ⁾}(z⁽ℓ⁻¹⁾) of every point, the check x⁽ℓ⁾ = W⁽ℓ⁾z⁽ℓ⁾ + b⁽ℓ⁾ against the
    layer-form forward pass, truncation counts and rates, adaptedness, NC1 in input space, Papyan
    NC1–NC4 on x⁽ᴸ⁾, the balance quantities and the training accuracy.
    """
    return jax.vmap(lambda n: _one_diagnostic(n, x, labels, n_classes))(nets)
