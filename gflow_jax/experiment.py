"""The truncation experiment: effective flow (diffrax) beside GD and SGD (optax) on one clock.

``setup_experiment`` turns a validated :class:`~gflow_jax.config.ExperimentConfig` into arrays;
``run_truncation`` solves and diagnoses; :mod:`gflow_jax.runs` writes the run directory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from .config import ExperimentConfig, config_from_dict
from .costs import pulled_back_targets
from .data import ClusteredData, clusters_from_config
from .flow import FlowProblem, FlowSolution, SolverSettings, check_solution, solve_flow
from .kinds import ExperimentKind
from .network import AdaptedParameters
from .runs import write_metrics
from .training import descend, gradient_descent, steps_per_interval
from .truncation import truncation_diagnostics

__all__ = [
    "TRUNCATION",
    "ExperimentSetup",
    "random_frame",
    "run_truncation",
    "run_truncation_batch",
    "setup_experiment",
]


@dataclass(frozen=True)
class ExperimentSetup:
    """Arrays of one experiment at s = 0.

    ``frame`` is the orthogonal O of W⁽ℓ⁾ = D_ℓ O; ``problem.u = x Oᵀ`` is the data in the common
    frame and ``targets_input`` the targets ỹ_j in input space, ``(Q, M)``.
    """

    config: ExperimentConfig
    data: ClusteredData
    frame: Float[Array, "M M"]
    params0: AdaptedParameters
    problem: FlowProblem
    targets_input: Float[Array, "Q M"]
    save_ts: Float[Array, " T"]
    settings: SolverSettings


def random_frame(key, dim: int) -> Float[Array, "M M"]:
    """A Haar-random orthogonal matrix (QR of a Gaussian with the sign fix)."""
    q, r = jnp.linalg.qr(jax.random.normal(key, (dim, dim)))
    return q * jnp.sign(jnp.diag(r))[None, :]


def _initial_weights(cfg: ExperimentConfig) -> Float[Array, "L M"]:
    net, dim = cfg.network, cfg.data.dim
    if net.d:
        return jnp.asarray(net.d, dtype=float)
    signs = jnp.asarray(net.signs, dtype=float)[:, None]
    return net.weight_scale * signs * jnp.ones((1, dim))


def _initial_thresholds(u: Float[Array, "N M"], d: Float[Array, "L M"], q: float):
    """c_{ℓ,k} at the q-quantile of u_k counted from the truncating side of d_{ℓ,k}."""
    lower = jnp.quantile(u, q, axis=0)
    upper = jnp.quantile(u, 1.0 - q, axis=0)
    return jnp.where(d > 0, lower[None, :], upper[None, :])


def setup_experiment(cfg: ExperimentConfig) -> ExperimentSetup:
    """Data, frame, initial adapted parameters, targets and the flow problem of ``cfg``."""
    k_data, k_frame, k_out = jax.random.split(jax.random.PRNGKey(cfg.seed), 3)
    dc = cfg.data
    data = clusters_from_config(k_data, dc)
    M, Q = dc.dim, dc.n_classes
    frame = jnp.eye(M) if cfg.network.frame == "identity" else random_frame(k_frame, M)
    u = data.x @ frame.T
    d = _initial_weights(cfg)
    params0 = AdaptedParameters.from_thresholds(
        d, _initial_thresholds(u, d, cfg.network.init_quantile)
    )

    if cfg.targets.kind == "prescribed":
        targets_input = jnp.asarray(cfg.targets.points, dtype=float)
        out_weight, out_bias = jnp.zeros((1, M)), jnp.zeros(1)
        y = jnp.zeros((data.n_points, 1))
    else:
        out_weight = cfg.targets.output_scale / np.sqrt(M) * jax.random.normal(k_out, (Q, M))
        out_bias = jnp.zeros(Q)
        y_classes = jnp.eye(Q)
        W_out_cum = out_weight @ params0.cumulative_weights(frame)[-1]
        b_out_cum = out_weight @ params0.b[-1] + out_bias
        targets_input = pulled_back_targets(W_out_cum, b_out_cum, y_classes)
        y = y_classes[data.labels]
    if not bool(jnp.all(jnp.isfinite(targets_input))):
        raise ValueError("pulled-back targets are not finite (singular output layer?)")
    problem = FlowProblem(
        u=u,
        targets=(targets_input @ frame.T)[data.labels],
        y=y,
        out_weight=out_weight,
        out_bias=out_bias,
        mode=cfg.flow.mode,
        cost=cfg.flow.cost,
    )
    fc = cfg.flow
    settings = SolverSettings.from_config(fc)
    return ExperimentSetup(
        config=cfg,
        data=data,
        frame=frame,
        params0=params0,
        problem=problem,
        targets_input=targets_input,
        save_ts=jnp.linspace(0.0, fc.t_final, fc.n_save),
        settings=settings,
    )


def _trajectory_arrays(prefix: str, params, loss, setup: ExperimentSetup) -> dict[str, np.ndarray]:
    diag = truncation_diagnostics(params, setup.problem.u, setup.data.labels, setup.data.n_classes)
    return {
        f"{prefix}/loss": np.asarray(loss),
        f"{prefix}/d": np.asarray(params.d),
        f"{prefix}/b": np.asarray(params.b),
        f"{prefix}/thresholds": np.asarray(params.thresholds),
        f"{prefix}/x_tilde": np.asarray(diag.x_tilde @ setup.frame),  # back to input space
        f"{prefix}/counts": np.asarray(diag.counts),
        f"{prefix}/n_truncated": np.asarray(diag.n_truncated),
        f"{prefix}/nc1": np.asarray(diag.nc1),
    }


def _descent_runs(cfg: ExperimentConfig) -> list[tuple[str, float, int | None]]:
    """``(prefix, eta, batch_size)`` of every (S)GD run of ``cfg``: GD at each η, then SGD."""
    runs = [(f"gd/eta={eta:g}", eta, None) for eta in cfg.gd.etas]
    if cfg.sgd.enabled:
        runs.append(("sgd", cfg.sgd.eta, cfg.sgd.batch_size))
    return runs


def _sgd_key(cfg: ExperimentConfig):
    return jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1)


def _point_result(
    setup: ExperimentSetup, sol: FlowSolution, flow_seconds: float, descents: list[tuple]
) -> tuple[dict, dict]:
    """Arrays and summary of one point from its flow solution and its (S)GD trajectories.

    ``descents``: ``(prefix, eta, batch_size, params (T, …), loss (T,), seconds)`` per run.
    Shared by :func:`run_truncation` and the batched sweep path, so both write the same keys.
    """
    summary: dict = {
        "flow": {
            "seconds_including_compile": flow_seconds,
            "num_steps": int(sol.num_steps),
            "num_accepted_steps": int(sol.num_accepted_steps),
            "num_rejected_steps": int(sol.num_rejected_steps),
            "final_loss": float(sol.loss[-1]),
        }
    }
    arrays = {
        "ts": np.asarray(setup.save_ts),
        "data/x": np.asarray(setup.data.x),
        "data/labels": np.asarray(setup.data.labels),
        "data/centers": np.asarray(setup.data.centers),
        "targets": np.asarray(setup.targets_input),
        "frame": np.asarray(setup.frame),
    }
    arrays.update(_trajectory_arrays("flow", sol.params, sol.loss, setup))
    for prefix, eta, batch_size, params, loss, seconds in descents:
        arrays.update(_trajectory_arrays(prefix, params, loss, setup))
        gap = np.abs(arrays[f"{prefix}/thresholds"] - arrays["flow/thresholds"])
        summary[prefix] = {
            "eta": eta,
            "batch_size": batch_size,
            "seconds": seconds,
            "final_loss": float(loss[-1]),
            "max_threshold_gap_to_flow": float(gap.max()),
        }
    return arrays, summary


def run_truncation(setup: ExperimentSetup, *, progress: bool = False) -> tuple[dict, dict]:
    """Solve the flow, run GD at every η and SGD, and diagnose all of them.

    Returns ``(arrays, summary)``: arrays keyed ``"flow/…"``, ``"gd/eta=…/…"``, ``"sgd/…"`` plus
    the data, and a JSON-ready summary (solver statistics, timings, GD-vs-flow discrepancies).
    """
    cfg = setup.config
    t0 = time.perf_counter()
    sol = check_solution(
        solve_flow(setup.problem, setup.params0, setup.save_ts, setup.settings, progress=progress),
        setup.settings,
    )
    jax.block_until_ready(sol)
    flow_seconds = time.perf_counter() - t0
    descents = []
    for prefix, eta, batch in _descent_runs(cfg):
        t0 = time.perf_counter()
        traj = gradient_descent(
            setup.problem,
            setup.params0,
            setup.save_ts,
            eta,
            batch_size=batch,
            key=_sgd_key(cfg),
            progress=progress,
        )
        jax.block_until_ready(traj)
        seconds = time.perf_counter() - t0
        descents.append((prefix, eta, traj.batch_size, traj.params, traj.loss, seconds))
    return _point_result(setup, sol, flow_seconds, descents)


_SCALAR_SERIES = ("loss", "n_truncated", "nc1")


def metrics_rows(arrays: dict, series: tuple[str, ...] = _SCALAR_SERIES) -> list[dict]:
    """One ``metrics.jsonl`` row per saved time: ``s`` and, for every trajectory (a prefix with
    a ``…/loss`` array), its scalar ``series``."""
    prefixes = sorted({k.rsplit("/", 1)[0] for k in arrays if k.endswith("/loss")})
    rows = []
    for i, s in enumerate(arrays["ts"]):
        row = {"s": float(s)}
        for p in prefixes:
            for q in series:
                row[f"{p}/{q}"] = arrays[f"{p}/{q}"][i].item()
        rows.append(row)
    return rows


def _write_point(run_dir: Path, arrays: dict) -> None:
    np.savez_compressed(run_dir / "arrays.npz", **arrays)
    write_metrics(run_dir / "metrics.jsonl", metrics_rows(arrays))


def _run_into(cfg: ExperimentConfig, run_dir: Path, progress: bool) -> dict:
    arrays, summary = run_truncation(setup_experiment(cfg), progress=progress)
    _write_point(run_dir, arrays)
    flow = summary["flow"]
    print(
        f"gflow: flow solved in {flow['num_steps']} steps ({flow['num_rejected_steps']} rejected),"
        f" final cost {flow['final_loss']:.3e}"
    )
    for name, entry in summary.items():
        if name != "flow":
            print(
                f"gflow: {name}: final cost {entry['final_loss']:.3e}, max |c - c_flow| = "
                f"{entry['max_threshold_gap_to_flow']:.3e}"
            )
    return summary


# --------------------------------------------------------------------------------------------
# batched sweeps (``gflow sweep``): one vmapped program per group of same-shape points


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
) -> dict:
    """One truncation point as a pure function of arrays (vmapped over a group by the sweep):
    the flow solve, full-batch GD at each of its E step sizes (η and the step counts per save
    interval are traced: a new η does not recompile, and each member takes its own number of
    steps) and SGD with minibatch ``sgd_batch`` (static; ``problem.n_points`` = full batch)."""
    out = {"flow": solve_flow(problem, params0, save_ts, settings)}
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
    )


def _pad_problem(problem: FlowProblem, n_rows: int) -> FlowProblem:
    """``problem`` with zero-weight rows appended up to ``n_rows`` (copies of its last row): the
    same cost, gradient and minibatches (:func:`~gflow_jax.training.minibatch_indices`)."""
    extra = n_rows - problem.n_points
    if extra == 0:
        return problem

    def pad(a):
        return jnp.concatenate([a, jnp.repeat(a[-1:], extra, axis=0)])

    return FlowProblem(
        pad(problem.u),
        pad(problem.targets),
        pad(problem.y),
        problem.out_weight,
        problem.out_bias,
        mode=problem.mode,
        cost=problem.cost,
        gradient=problem.gradient,
        weights=jnp.concatenate([problem.weights, jnp.zeros(extra, problem.weights.dtype)]),
    )


def _member_args(setup: ExperimentSetup, n_rows: int) -> tuple:
    cfg = setup.config
    save_ts = np.asarray(setup.save_ts)
    problem = _pad_problem(setup.problem, n_rows)
    gd_etas = gd_steps = sgd_eta = sgd_steps = sgd_batch = None
    if cfg.gd.etas:
        gd_etas = jnp.asarray(cfg.gd.etas, float)
        gd_steps = jnp.asarray(np.stack([steps_per_interval(save_ts, e) for e in cfg.gd.etas]))
    if cfg.sgd.enabled:
        sgd_eta = jnp.asarray(cfg.sgd.eta, float)
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
        _sgd_key(cfg),
        sgd_batch,
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
    arrays, summary = _point_result(setup, sol, seconds, descents)
    summary["sweep_batch"] = batch_info
    return arrays, summary


def run_truncation_batch(
    configs: list[ExperimentConfig],
    run_dirs: list[Path],
    *,
    devices: list | None = None,
    max_batch: int = 256,
    log=print,
):
    """Run many truncation configs as few vmapped programs (the kind's ``run_batch``).

    Points are grouped by :func:`_group_key` (array shapes and static settings; a group may mix
    numbers of points N, padded with zero-weight rows). Each group runs in chunks of
    :func:`~gflow_jax.sweep_devices.padded_batch_size` points, each chunk one call of one
    compiled program (flow solve, GD at every η and SGD, all vmapped; sharded over ``devices``).
    Yields ``(i, summary)`` once ``run_dirs[i]`` holds ``arrays.npz`` and ``metrics.jsonl``
    (exactly the keys of ``gflow run``), or ``(i, exception)`` for a point that failed.
    """
    from .sweep_devices import call_batched, pad_batch, padded_batch_size, resolve_devices, stack

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
        size = padded_batch_size(len(members), len(devices), max_batch)
        for start in range(0, len(members), size):
            chunk = members[start : start + size]
            if len(chunk) < size:
                log(
                    f"truncation batch: {len(chunk)} points padded to a batch of {size} "
                    f"({len(devices)} device(s) × {size // len(devices)})"
                )
            t0 = time.perf_counter()
            args = pad_batch(stack([_member_args(setup, n_rows) for _, setup in chunk]), size)
            out = jax.tree.map(np.asarray, call_batched(_batch_member, args, devices))
            seconds = time.perf_counter() - t0
            info = {
                "points": len(chunk),
                "batch_size": size,
                "devices": len(devices),
                "n_rows": n_rows,
                "seconds_including_compile": seconds,
            }
            for j, (i, setup) in enumerate(chunk):
                try:
                    arrays, summary = _unpack_point(setup, out, j, seconds / len(chunk), info)
                    _write_point(run_dirs[i], arrays)
                except Exception as err:
                    result = err
                else:
                    result = summary
                yield i, result


def _figures(run_dir: Path) -> list[Path]:
    from .plots import plot_truncation_run

    return plot_truncation_run(run_dir)


TRUNCATION = ExperimentKind(
    name="truncation",
    description="effective flow (diffrax) beside GD/SGD (optax) of the adapted network",
    from_table=config_from_dict,
    run=_run_into,
    figures=_figures,
    run_batch=run_truncation_batch,
)
