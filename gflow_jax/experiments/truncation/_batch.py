"""Batched truncation points for ``gflow sweep``: one vmapped program per group of same-shape
points, sharded over local devices, in chunks that fit the devices' memory; the next chunk is
dispatched before the results of the last are written, so the devices never wait for the host."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from ...core import (
    AdaptedParameters,
    call_batched,
    memory_batch_size,
    pad_batch,
    resolve_devices,
    stack,
)
from ...dynamics import (
    FlowProblem,
    SolverSettings,
    check_solution,
    descend,
    solve_flow,
    steps_per_interval,
)
from ._config import TruncationConfig
from ._run import exact_settings, point_result, sgd_key, write_point
from ._setup import ExperimentSetup, setup_experiment


def _batch_member(
    problem: FlowProblem,
    params0: AdaptedParameters,
    save_ts: Float[Array, " T"],
    settings: SolverSettings,
    gd_etas: Float[Array, " E"] | None,
    gd_steps: Int[Array, "E T-1"] | None,
    sgd_eta: Float[Array, ""] | None,
    sgd_steps: Int[Array, " T-1"] | None,
    key: PRNGKeyArray,
    sgd_batch: int | None,
    exact: SolverSettings | None = None,
) -> dict:
    """One truncation point as a pure function of arrays (vmapped over a group by the sweep):
    the flow solve, full-batch GD at each of its E step sizes (η and the step counts per save
    interval are traced: a new η does not recompile, and each member takes its own number of
    steps), SGD with minibatch ``sgd_batch`` (static; ``problem.n_points`` = full batch) and,
    with ``exact`` settings (``flow.compare_exact``), the exact solution."""
    out = {"flow": solve_flow(problem, params0, save_ts, settings)}
    if exact is not None:
        out["exact"] = solve_flow(problem, params0, save_ts, exact)
    if gd_etas is not None:
        out["gd"] = jax.vmap(
            lambda eta, steps: descend(problem, params0, eta, steps, key, problem.n_points, False)
        )(gd_etas, gd_steps)
    if sgd_batch is not None:
        out["sgd"] = descend(problem, params0, sgd_eta, sgd_steps, key, sgd_batch, False)
    return out


def _group_key(setup: ExperimentSetup) -> tuple:
    """Everything that fixes the compiled program except the number of points N (padded)."""
    cfg, problem, settings = setup.config, setup.problem, setup.settings
    sgd = None
    if cfg.sgd.enabled:
        sgd = "full" if cfg.sgd.batch_size == problem.n_points else cfg.sgd.batch_size
    return (
        jax.tree.structure(problem),  # mode, cost, gradient kind
        problem.u.shape[1:],
        problem.y.shape[1:],
        problem.out_weight.shape,
        setup.params0.d.shape,
        setup.save_ts.shape,
        settings.solver,
        settings.max_steps,
        settings.dtmin,
        len(cfg.gd.etas),
        sgd,
        cfg.flow.dtype,
        cfg.flow.compare_exact,
        settings.events,
        settings.max_events,
    )


def _member_args(setup: ExperimentSetup, n_rows: int) -> tuple:
    cfg = setup.config
    save_ts = np.asarray(setup.save_ts)
    problem = setup.problem.padded(n_rows)
    gd_etas = gd_steps = sgd_eta = sgd_steps = sgd_batch = None
    dtype = setup.save_ts.dtype  # the precision of the point (flow.dtype)
    if cfg.gd.etas:
        gd_etas = jnp.asarray(cfg.gd.etas, dtype)
        gd_steps = jnp.asarray(np.stack([steps_per_interval(save_ts, e) for e in cfg.gd.etas]))
    if cfg.sgd.enabled:
        sgd_eta = jnp.asarray(cfg.sgd.eta, dtype)
        sgd_steps = jnp.asarray(steps_per_interval(save_ts, cfg.sgd.eta))
        full = cfg.sgd.batch_size == setup.problem.n_points
        sgd_batch = n_rows if full else cfg.sgd.batch_size
    return (
        problem,
        setup.params0,
        setup.save_ts,
        setup.settings,  # float fields are arrays: batched, never recompiled
        gd_etas,
        gd_steps,
        sgd_eta,
        sgd_steps,
        sgd_key(cfg),
        sgd_batch,
        exact_settings(setup),
    )


def _unpack_point(setup: ExperimentSetup, out: dict, j: int, seconds: float, batch_info: dict):
    """Arrays and summary of batch member ``j`` (host arrays), as :func:`run_truncation` would
    return them for ``setup``; raises as a single run would (a failed flow solve)."""
    member = jax.tree.map(lambda a: a[j], out)
    sol = check_solution(member["flow"], setup.settings)
    cfg, n_real = setup.config, setup.problem.n_points
    descents = []
    for e, eta in enumerate(cfg.gd.etas):
        params, loss = jax.tree.map(lambda a, e=e: a[e], member["gd"])
        descents.append((f"gd/eta={eta:g}", eta, n_real, params, loss, seconds))
    if cfg.sgd.enabled:
        params, loss = member["sgd"]
        descents.append(("sgd", cfg.sgd.eta, cfg.sgd.batch_size, params, loss, seconds))
    exact = None
    if "exact" in member:
        exact = (check_solution(member["exact"], setup.settings), seconds)
    arrays, summary = point_result(setup, sol, seconds, descents, exact)
    summary["sweep_batch"] = batch_info
    return arrays, summary


def run_truncation_batch(
    configs: list[TruncationConfig],
    run_dirs: list[Path],
    *,
    devices: list | None = None,
    max_batch: int | None = None,
    log=print,
):
    """Run many truncation configs as few vmapped programs (the kind's ``run_batch``).

    Points are grouped by :func:`_group_key` (array shapes, static settings and precision; a
    group may mix numbers of points N, padded with zero-weight rows). Each group runs in chunks
    of :func:`~gflow_jax.core.memory_batch_size` points (what fits in the devices' memory,
    capped by ``max_batch`` if given),
    each chunk one call of one compiled program (flow solve, GD at every η and SGD, all vmapped;
    sharded over ``devices``); chunk k + 1 is dispatched before chunk k's results are copied
    back and written. Yields ``(i, summary)`` once ``run_dirs[i]`` holds ``arrays.npz`` and
    ``metrics.jsonl`` (exactly the keys of ``gflow run``), or ``(i, exception)`` for a point
    that failed.
    """
    devices = resolve_devices(devices)
    groups: dict[tuple, list[tuple[int, ExperimentSetup]]] = {}
    for i, cfg in enumerate(configs):
        try:
            setup = setup_experiment(cfg)
        except Exception as err:  # recorded for this point; the sweep goes on
            yield i, err
            continue
        groups.setdefault(_group_key(setup), []).append((i, setup))
    for members in groups.values():
        n_rows = max(setup.problem.n_points for _, setup in members)
        n_padded_rows = sum(setup.problem.n_points < n_rows for _, setup in members)
        if n_padded_rows:
            log(
                f"truncation batch: data of {n_padded_rows} of {len(members)} points padded to "
                f"N = {n_rows} with zero-weight rows"
            )
        one = _member_args(members[0][1], n_rows)
        size = memory_batch_size(_batch_member, one, len(members), devices, max_batch)
        if size < len(members):
            log(
                f"truncation batch: {len(members)} points in {-(-len(members) // size)} chunks "
                f"of {size} ({len(devices)} device(s))"
            )
        in_flight = None
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            if len(chunk) < size:
                log(
                    f"truncation batch: {len(chunk)} points padded to a batch of {size} "
                    f"({len(devices)} device(s) × {size // len(devices)})"
                )
            t0 = time.perf_counter()
            args = pad_batch(stack([_member_args(setup, n_rows) for _, setup in chunk]), size)
            launched = (chunk, t0, call_batched(_batch_member, args, devices))  # asynchronous
            if in_flight is not None:
                yield from _write_chunk(*in_flight, run_dirs, size, len(devices), n_rows)
            in_flight = launched
        if in_flight is not None:
            yield from _write_chunk(*in_flight, run_dirs, size, len(devices), n_rows)


def _write_chunk(chunk, t0: float, out, run_dirs, size: int, n_devices: int, n_rows: int):
    """Copy one chunk's results back and write its points (``(i, summary_or_exception)``)."""
    out = jax.tree.map(np.asarray, out)
    seconds = time.perf_counter() - t0
    info = {
        "points": len(chunk),
        "batch_size": size,
        "devices": n_devices,
        "n_rows": n_rows,
        "seconds_including_compile": seconds,
    }
    for j, (i, setup) in enumerate(chunk):
        try:
            arrays, summary = _unpack_point(setup, out, j, seconds / len(chunk), info)
            write_point(run_dirs[i], arrays)
        except Exception as err:
            result = err
        else:
            result = summary
        yield i, result
