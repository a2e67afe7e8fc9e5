"""Gradient descent and minibatch SGD (optax) of the effective-flow parameters.

GD with step η is compared with the flow on the common clock s = η·k
(docs/theory.md#gradient-descent-and-flow). It descends the very same masked gradient as the flow
(:meth:`FlowProblem.descent_direction`), so full-batch GD *is* the flow's explicit Euler scheme.

States are saved on the flow's save grid: between consecutive save times Δs/η steps are taken, so
every save interval must be a whole number of steps (checked before anything runs).
"""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ..core import AdaptedParameters
from ..core._shapes import Shapes
from ..io import scan_progress
from ._problem import FlowProblem, check_problem
from ._sampling import minibatch_indices, positive_rows


class DescentTrajectory(eqx.Module):
    """(S)GD iterates saved on a time grid.

    Attributes:
        ts: ``(T,)`` save times s = η·k.
        params: the state (``AdaptedParameters``, ``ReLUNetwork``) with a leading ``(T,)``
            axis.
        loss: ``(T,)`` full-data cost at each save time.
        eta: step size η.
        batch_size: minibatch size (``N`` for full-batch GD).
    """

    ts: Float[Array, " T"]
    params: Any
    loss: Float[Array, " T"]
    eta: Float[Array, ""]
    batch_size: int = eqx.field(static=True)


def steps_per_interval(save_ts: np.ndarray, eta: float, *, rtol: float = 1e-9) -> np.ndarray:
    """Number of steps η between consecutive save times ``save_ts`` ``(T,)``, ``(T − 1,)``;
    error if Δs is not a multiple of η. Batch axis: refused."""
    Shapes("steps_per_interval")("save_ts", save_ts, "T")
    save_ts = np.asarray(save_ts, dtype=float)
    if not eta > 0 or not np.isfinite(eta):
        raise ValueError(f"step size eta must be positive and finite, got {eta!r}")
    gaps = np.diff(save_ts)
    steps = np.rint(gaps / eta)
    bad = np.abs(steps * eta - gaps) > rtol * np.maximum(gaps, eta) + 1e-12
    if np.any(bad) or np.any(steps < 1):
        raise ValueError(
            f"save interval {gaps[np.argmax(bad | (steps < 1))]:g} is not a positive whole number "
            f"of steps eta = {eta:g}; choose t_final/(n_save-1) as a multiple of every eta"
        )
    return steps.astype(np.int64)


def descent_loop(
    direction,
    params0: Any,
    eta: Float[Array, ""],
    n_steps: Int[Array, " T-1"],
    key: PRNGKeyArray,
    *,
    progress: bool = False,
    desc: str = "GD",
) -> Any:
    """``optax.sgd(eta)`` steps along ``direction(params, key_k)`` (the negated, possibly
    stochastic, gradient at step k), saved after each of the T − 1 save intervals.

    Interval i takes ``n_steps[i]`` steps (a traced trip count: batch members may take their own
    numbers of steps); step k of interval i uses the key ``fold_in(split(key, T − 1)[i], k)``.
    Returns the stacked states ``(T, …)`` with ``params0`` first. Pure: jit- and vmappable.
    ``params0`` is any pytree; ``eta`` a scalar, ``n_steps`` ``(T − 1,)``, ``key`` one PRNG key.
    Batch axis: refused on ``eta``, ``n_steps`` and ``key`` (vmap the loop).
    """
    check = Shapes("descent_loop")
    check("eta", eta, "")
    check("n_steps", n_steps, "T")
    check.key("key", key)
    optimizer = optax.sgd(learning_rate=eta)

    def step(k, carry):
        params, opt_state, key_i = carry
        # optax minimises: feed it the negated descent direction (= the gradient)
        grads = jax.tree.map(jnp.negative, direction(params, jax.random.fold_in(key_i, k)))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key_i

    def interval(state, xs):
        n_k, key_i = xs
        params, opt_state = state
        params, opt_state, _ = jax.lax.fori_loop(0, n_k, step, (params, opt_state, key_i))
        return (params, opt_state), params

    keys = jax.random.split(key, n_steps.shape[0])
    interval = scan_progress(interval, n_steps.shape[0], desc, progress)
    _, saved = jax.lax.scan(interval, (params0, optimizer.init(params0)), (n_steps, keys))
    return jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), params0, saved)


def descend(
    problem: FlowProblem,
    params0: AdaptedParameters,
    eta: Float[Array, ""],
    n_steps: Int[Array, " T-1"],
    key: PRNGKeyArray,
    batch_size: int,
    progress: bool,
) -> tuple[AdaptedParameters, Float[Array, " T"]]:
    """Pure (S)GD on the save grid: ``(params (T, …), loss (T,))``; vmappable over problems,
    ``params0``, ``eta``, ``n_steps`` and ``key`` (step counts may differ per batch member).
    ``batch_size == problem.n_points`` is full-batch GD. ``params0`` d, b ``(L, M)``, ``eta`` a
    scalar, ``n_steps`` ``(T − 1,)``, ``key`` one PRNG key. Batch axis: refused (vmap over it).
    """
    check = check_problem(Shapes("descend").adapted("params0", params0), problem)
    check("eta", eta, "")
    check("n_steps", n_steps, "T")
    check.key("key", key)
    n_points = problem.n_points
    # minibatches are drawn among rows of positive weight; rescaling by n_pos/n_rows keeps the
    # minibatch cost an unbiased estimate of the full cost (exactly 1 without padding rows)
    rescale = jnp.sum(problem.weights > 0) / n_points
    rows = positive_rows(problem.weights)

    def direction(params, key_k):
        if batch_size == n_points:
            return problem.descent_direction(params)
        batch = problem.subset(minibatch_indices(key_k, problem.weights, batch_size, rows))
        batch = eqx.tree_at(lambda p: p.weights, batch, batch.weights * rescale)
        return batch.descent_direction(params)

    desc = "GD" if batch_size == n_points else "SGD"
    params = descent_loop(direction, params0, eta, n_steps, key, progress=progress, desc=desc)
    return params, jax.vmap(problem.loss)(params)


_descend = eqx.filter_jit(descend)


def run_descent(
    descend,
    problem,
    params0: Any,
    save_ts: Float[Array, " T"],
    eta: float,
    batch_size: int | None,
    key: PRNGKeyArray | None,
    progress: bool,
) -> DescentTrajectory:
    """Check the step size and batch size, then run the compiled
    ``descend(problem, params0, eta, n_steps, key, batch_size, progress) -> (params, loss)`` on
    the save grid (every gap a whole number of steps η) and wrap the result."""
    n_steps = steps_per_interval(np.asarray(save_ts), eta)
    n_points = problem.n_points
    batch_size = n_points if batch_size is None else batch_size
    if int(batch_size) != batch_size or not 1 <= batch_size <= n_points:
        raise ValueError(f"batch_size must be an integer in [1, {n_points}], got {batch_size!r}")
    if batch_size < n_points and key is None:
        raise ValueError("minibatch SGD needs a PRNG key")
    key = jax.random.PRNGKey(0) if key is None else key
    eta_arr = jnp.asarray(eta, dtype=jnp.result_type(float))
    params, loss = descend(
        problem, params0, eta_arr, jnp.asarray(n_steps), key, int(batch_size), progress
    )
    return DescentTrajectory(
        ts=jnp.asarray(save_ts), params=params, loss=loss, eta=eta_arr, batch_size=int(batch_size)
    )


def gradient_descent(
    problem: FlowProblem,
    params0: AdaptedParameters,
    save_ts: Float[Array, " T"],
    eta: float,
    *,
    batch_size: int | None = None,
    key: PRNGKeyArray | None = None,
    progress: bool = False,
) -> DescentTrajectory:
    """Run full-batch GD (``batch_size=None``) or minibatch SGD with ``optax.sgd(eta)``.

    Minibatches are drawn uniformly without replacement at every step
    (:func:`minibatch_indices`); the minibatch cost is the mean over the batch, an unbiased
    estimate of the full cost. ``eta`` is traced, so new step sizes reuse the compiled program;
    the step counts per save interval are arrays too.

    Args:
        save_ts: ``(T,)`` save times (the flow's grid); every gap a multiple of ``eta``.
        eta: step size η; iterate k sits at flow time s = η·k.
        batch_size: minibatch size B ≤ N.
        key: PRNG key for minibatches (required for SGD).

    Batch axis: refused on ``problem``, ``params0`` (d, b ``(L, M)``), ``save_ts`` and ``key``.
    """
    check = check_problem(Shapes("gradient_descent").adapted("params0", params0), problem)
    check("save_ts", save_ts, "T")
    check.key("key", key)
    return run_descent(_descend, problem, params0, save_ts, eta, batch_size, key, progress)
