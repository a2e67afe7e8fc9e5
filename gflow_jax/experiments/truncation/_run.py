"""Running a truncation experiment: the flow (diffrax) beside GD at every η and SGD (optax), on
one clock, diagnosed and written into the run directory."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import numpy as np

from ...diagnostics import truncation_diagnostics
from ...dynamics import (
    FlowSolution,
    SolverSettings,
    check_solution,
    gradient_descent,
    solve_flow,
)
from .._arrays import metrics_rows, write_run
from ._config import TruncationConfig
from ._setup import ExperimentSetup, setup_experiment


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


def descent_runs(cfg: TruncationConfig) -> list[tuple[str, float, int | None]]:
    """``(prefix, eta, batch_size)`` of every (S)GD run of ``cfg``: GD at each η, then SGD."""
    runs = [(f"gd/eta={eta:g}", eta, None) for eta in cfg.gd.etas]
    if cfg.sgd.enabled:
        runs.append(("sgd", cfg.sgd.eta, cfg.sgd.batch_size))
    return runs


def sgd_key(cfg: TruncationConfig):
    return jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1)


#: the kinds of :class:`~gflow_jax.dynamics.FlowEvents` (``kind`` 0 … 4)
EVENT_KINDS = ("cross", "stick", "meet", "glue", "release")


def exact_settings(setup: ExperimentSetup) -> SolverSettings | None:
    """The exact solver's settings when ``flow.compare_exact`` is set (its ``max_events`` that
    of the flow), else ``None``."""
    if not setup.config.flow.compare_exact:
        return None
    return SolverSettings(solver="exact", max_events=setup.settings.max_events)


def _exact_summary(exact: FlowSolution, flow_c: np.ndarray, seconds: float) -> dict:
    """Events, stuck faces and the distance of the diffrax flow to the exact solution."""
    kinds = np.asarray(exact.events.kind)
    stuck = np.asarray(exact.sliding.stuck)
    value, when = np.asarray(exact.sliding.stuck_value), np.asarray(exact.sliding.stuck_time)
    c = np.asarray(exact.params.thresholds)
    return {
        "seconds_including_compile": seconds,
        "num_events": int(exact.num_steps),
        "events_by_kind": {name: int(np.sum(kinds == i)) for i, name in enumerate(EVENT_KINDS)},
        "final_loss": float(exact.loss[-1]),
        "max_threshold_gap_to_flow": float(np.max(np.abs(c - flow_c))),
        "stuck_faces": [
            {
                "layer": int(ell),
                "coord": int(k),
                "value": float(value[ell, k]),
                "time": float(when[ell, k]),
            }
            for ell, k in zip(*np.nonzero(stuck), strict=True)
        ],
    }


def point_result(
    setup: ExperimentSetup,
    sol: FlowSolution,
    flow_seconds: float,
    descents: list[tuple],
    exact: tuple[FlowSolution, float] | None = None,
) -> tuple[dict, dict]:
    """Arrays and summary of one point from its flow solution and its (S)GD trajectories.

    ``descents``: ``(prefix, eta, batch_size, params (T, …), loss (T,), seconds)`` per run;
    ``exact``: the exact solution and its seconds (``flow.compare_exact``), kept as the
    trajectory ``exact``. Shared by :func:`run_truncation` and the batched sweep path, so both
    write the same keys.
    """
    summary: dict = {
        "flow": {
            "seconds_including_compile": flow_seconds,
            "num_steps": int(sol.num_steps),
            "num_accepted_steps": int(sol.num_accepted_steps),
            "num_rejected_steps": int(sol.num_rejected_steps),
            "final_loss": float(sol.loss[-1]),
            "dtype": str(sol.loss.dtype),
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
    if exact is not None:
        exact_sol, seconds = exact
        arrays.update(_trajectory_arrays("exact", exact_sol.params, exact_sol.loss, setup))
        summary["exact"] = _exact_summary(exact_sol, arrays["flow/thresholds"], seconds)
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
    exact = None
    if (settings := exact_settings(setup)) is not None:
        t0 = time.perf_counter()
        exact_sol = solve_flow(setup.problem, setup.params0, setup.save_ts, settings)
        exact_sol = jax.block_until_ready(check_solution(exact_sol, settings))
        exact = (exact_sol, time.perf_counter() - t0)
    descents = []
    for prefix, eta, batch in descent_runs(cfg):
        t0 = time.perf_counter()
        traj = gradient_descent(
            setup.problem,
            setup.params0,
            setup.save_ts,
            eta,
            batch_size=batch,
            key=sgd_key(cfg),
            progress=progress,
        )
        jax.block_until_ready(traj)
        seconds = time.perf_counter() - t0
        descents.append((prefix, eta, traj.batch_size, traj.params, traj.loss, seconds))
    return point_result(setup, sol, flow_seconds, descents, exact)


def write_point(run_dir: Path, arrays: dict) -> None:
    """``arrays.npz`` and ``metrics.jsonl`` of one truncation point."""
    write_run(run_dir, arrays, metrics_rows(arrays))


def run_into(cfg: TruncationConfig, run_dir: Path, progress: bool) -> dict:
    """The kind's ``run``: solve, write the arrays and metrics, print the headline numbers."""
    arrays, summary = run_truncation(setup_experiment(cfg), progress=progress)
    write_point(run_dir, arrays)
    flow = summary["flow"]
    print(
        f"gflow: flow solved in {flow['num_steps']} steps ({flow['num_rejected_steps']} rejected),"
        f" final cost {flow['final_loss']:.3e}"
    )
    if "exact" in summary:
        ex = summary["exact"]
        stuck = ", ".join(
            f"(layer {f['layer'] + 1}, coordinate {f['coord'] + 1}) at {f['value']:.6g} from "
            f"s = {f['time']:.6g}"
            for f in ex["stuck_faces"]
        )
        print(f"gflow: exact solution: {ex['num_events']} events; stuck faces: {stuck or 'none'}")
    for name, entry in summary.items():
        if name != "flow":
            print(
                f"gflow: {name}: final cost {entry['final_loss']:.3e}, max |c - c_flow| = "
                f"{entry['max_threshold_gap_to_flow']:.3e}"
            )
    return summary
