"""Gradient descent and minibatch SGD (optax) of the effective-flow parameters.

GD with step η is compared with the flow on the common clock s = η·k (MATH.md, Gradient descent
vs gradient flow). It descends the very same masked gradient as the flow
(:meth:`FlowProblem.descent_direction`), so full-batch GD *is* the flow's explicit Euler scheme.

States are saved on the flow's save grid: between consecutive save times Δs/η steps are taken, so
every save interval must be a whole number of steps (checked before anything runs).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .flow import FlowProblem
from .network import AdaptedParameters
from .progress import scan_progress

__all__ = [
    "DescentTrajectory",
    "descend",
    "floyd_ranks",
    "gradient_descent",
    "minibatch_indices",
    "positive_rows",
    "steps_per_interval",
]


class DescentTrajectory(eqx.Module):
    """(S)GD iterates saved on a time grid.

    Attributes:
        ts: ``(T,)`` save times s = η·k.
        params: AdaptedParameters with a leading ``(T,)`` axis.
        loss: ``(T,)`` full-data cost at each save time.
        eta: step size η.
        batch_size: minibatch size (``N`` for full-batch GD).
    """

    ts: Float[Array, " T"]
    params: AdaptedParameters
    loss: Float[Array, " T"]
    eta: Float[Array, ""]
    batch_size: int = eqx.field(static=True)


def steps_per_interval(save_ts: np.ndarray, eta: float, *, rtol: float = 1e-9) -> np.ndarray:
    """Number of steps η between consecutive save times; error if Δs is not a multiple of η."""
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


def positive_rows(weights: Float[Array, " N"]) -> Int[Array, " N"]:
    """Indices of the rows of positive weight, in order, then padded with the last row.

    Entry r is the row holding the (r+1)-th positive weight; computed once per run, so that a
    minibatch's ranks map to rows by one gather per step (:func:`minibatch_indices`)."""
    n_rows = weights.shape[0]
    return jnp.nonzero(weights > 0, size=n_rows, fill_value=n_rows - 1)[0].astype(jnp.int32)


def floyd_ranks(key: PRNGKeyArray, n: Int[Array, ""], batch_size: int) -> Int[Array, " B"]:
    """A uniformly random ``batch_size``-subset of ``0 … n−1`` (``n`` may be traced).

    Robert Floyd's algorithm, from ``B`` uniform numbers and no sort: for ``j = n−B … n−1`` draw
    ``t`` uniform in ``0 … j`` and take ``t``, or ``j`` if ``t`` is taken already. Sorting N
    random keys per step (``argsort``) made vmapped SGD sort-bound on CPU
    (benchmarks/sweep_throughput.py).
    """
    u = jax.random.uniform(key, (batch_size,))
    j = n.astype(jnp.int32) - batch_size + jnp.arange(batch_size, dtype=jnp.int32)
    draws = jnp.minimum(jnp.floor(u * (j + 1)).astype(jnp.int32), j)  # all B draws at once
    ranks: list = []
    for t in range(batch_size):
        r = draws[t]
        if ranks:
            r = jnp.where(jnp.any(jnp.stack(ranks) == r), j[t], r)
        ranks.append(r)
    return jnp.stack(ranks)


def minibatch_indices(
    key: PRNGKeyArray,
    weights: Float[Array, " N"],
    batch_size: int,
    rows: Int[Array, " N"] | None = None,
) -> Int[Array, " B"]:
    """``batch_size`` distinct rows, a uniformly random subset of the rows of positive weight.

    :func:`floyd_ranks` draws ranks among the ``n`` positive rows; rank r maps to
    ``rows[r]`` (:func:`positive_rows`, pass it to skip recomputing it at every step). ``n`` is a
    count, so a problem padded with zero-weight rows draws exactly the minibatches of the
    unpadded one (what lets a sweep batch problems of different sizes in one program).
    """
    rows = positive_rows(weights) if rows is None else rows
    return rows[floyd_ranks(key, jnp.sum(weights > 0), batch_size)]


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
    ``params0``, ``eta``, ``n_steps`` and ``key`` (step counts may differ per batch member: each
    interval is a ``fori_loop`` with a traced trip count). ``batch_size == problem.n_points`` is
    full-batch GD."""
    optimizer = optax.sgd(learning_rate=eta)
    n_points = problem.n_points
    # minibatches are drawn among rows of positive weight; rescaling by n_pos/n_rows keeps the
    # minibatch cost an unbiased estimate of the full cost (exactly 1 without padding rows)
    n_positive = jnp.sum(problem.weights > 0)
    rescale = n_positive / n_points
    rows = positive_rows(problem.weights)

    def step(state, key_k):
        params, opt_state = state
        if batch_size == n_points:
            batch = problem
        else:
            batch = problem.subset(minibatch_indices(key_k, problem.weights, batch_size, rows))
            batch = eqx.tree_at(lambda p: p.weights, batch, batch.weights * rescale)
        # optax minimises: feed it the negated descent direction (= masked gradient).
        grads = jax.tree.map(jnp.negative, batch.descent_direction(params))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    def interval(state, xs):
        n_k, key_i = xs
        params, opt_state = state

        def body(k, carry):
            return step(carry, jax.random.fold_in(key_i, k))[0]

        params, opt_state = jax.lax.fori_loop(0, n_k, body, (params, opt_state))
        return (params, opt_state), params

    keys = jax.random.split(key, n_steps.shape[0])
    interval = scan_progress(
        interval, n_steps.shape[0], "GD" if batch_size == n_points else "SGD", progress
    )
    init = (params0, optimizer.init(params0))
    _, saved = jax.lax.scan(interval, init, (n_steps, keys))
    params = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), params0, saved)
    return params, jax.vmap(problem.loss)(params)


_descend = eqx.filter_jit(descend)


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
    estimate of the full cost. ``eta`` is traced, so new step
    sizes reuse the compiled program; the step counts per save interval are arrays too.

    Args:
        save_ts: ``(T,)`` save times (the flow's grid); every gap a multiple of ``eta``.
        eta: step size η; iterate k sits at flow time s = η·k.
        batch_size: minibatch size B ≤ N.
        key: PRNG key for minibatches (required for SGD).
    """
    n_steps = steps_per_interval(np.asarray(save_ts), eta)
    n_points = problem.n_points
    batch_size = n_points if batch_size is None else int(batch_size)
    if not 1 <= batch_size <= n_points:
        raise ValueError(f"batch_size must be in [1, {n_points}], got {batch_size}")
    if batch_size < n_points and key is None:
        raise ValueError("minibatch SGD needs a PRNG key")
    key = jax.random.PRNGKey(0) if key is None else key
    eta_arr = jnp.asarray(eta, dtype=jnp.result_type(float))
    params, loss = _descend(
        problem, params0, eta_arr, jnp.asarray(n_steps), key, batch_size, progress
    )
    return DescentTrajectory(
        ts=jnp.asarray(save_ts), params=params, loss=loss, eta=eta_arr, batch_size=batch_size
    )
