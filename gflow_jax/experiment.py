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
from jaxtyping import Array, Float

from .config import ExperimentConfig, config_from_dict
from .costs import pulled_back_targets
from .data import ClusteredData, make_clusters
from .flow import FlowProblem, SolverSettings, check_solution, solve_flow
from .kinds import ExperimentKind
from .network import AdaptedParameters
from .runs import write_metrics
from .training import gradient_descent
from .truncation import truncation_diagnostics

__all__ = [
    "TRUNCATION",
    "ExperimentSetup",
    "random_frame",
    "run_truncation",
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
    data = make_clusters(
        k_data,
        n_classes=dc.n_classes,
        n_per_class=dc.points_per_class,
        dim=dc.dim,
        radius=dc.radius,
        separation=dc.separation,
        distribution=dc.distribution,
        layout=dc.layout,
    )
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
    settings = SolverSettings(
        rtol=fc.rtol,
        atol=fc.atol,
        pcoeff=fc.pcoeff,
        icoeff=fc.icoeff,
        dtmin=fc.dtmin,
        dt0=fc.dt0,
        solver=fc.solver,
        max_steps=fc.max_steps,
    )
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


def run_truncation(setup: ExperimentSetup, *, progress: bool = False) -> tuple[dict, dict]:
    """Solve the flow, run GD at every η and SGD, and diagnose all of them.

    Returns ``(arrays, summary)``: arrays keyed ``"flow/…"``, ``"gd/eta=…/…"``, ``"sgd/…"`` plus
    the data, and a JSON-ready summary (solver statistics, timings, GD-vs-flow discrepancies).
    """
    cfg = setup.config
    summary: dict = {}
    t0 = time.perf_counter()
    sol = check_solution(
        solve_flow(setup.problem, setup.params0, setup.save_ts, setup.settings, progress=progress),
        setup.settings,
    )
    jax.block_until_ready(sol)
    summary["flow"] = {
        "seconds_including_compile": time.perf_counter() - t0,
        "num_steps": int(sol.num_steps),
        "num_accepted_steps": int(sol.num_accepted_steps),
        "num_rejected_steps": int(sol.num_rejected_steps),
        "final_loss": float(sol.loss[-1]),
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

    runs = [(f"gd/eta={eta:g}", eta, None) for eta in cfg.gd.etas]
    if cfg.sgd.enabled:
        runs.append(("sgd", cfg.sgd.eta, cfg.sgd.batch_size))
    sgd_key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), 1)
    for prefix, eta, batch in runs:
        t0 = time.perf_counter()
        traj = gradient_descent(
            setup.problem,
            setup.params0,
            setup.save_ts,
            eta,
            batch_size=batch,
            key=sgd_key,
            progress=progress,
        )
        jax.block_until_ready(traj)
        arrays.update(_trajectory_arrays(prefix, traj.params, traj.loss, setup))
        gap = np.abs(arrays[f"{prefix}/thresholds"] - arrays["flow/thresholds"])
        summary[prefix] = {
            "eta": eta,
            "batch_size": traj.batch_size,
            "seconds": time.perf_counter() - t0,
            "final_loss": float(traj.loss[-1]),
            "max_threshold_gap_to_flow": float(gap.max()),
        }
    return arrays, summary


_SCALAR_SERIES = ("loss", "n_truncated", "nc1")


def metrics_rows(arrays: dict) -> list[dict]:
    """One ``metrics.jsonl`` row per saved time: ``s`` and every trajectory's scalar series."""
    prefixes = sorted({k.rsplit("/", 1)[0] for k in arrays if k.endswith("/loss")})
    rows = []
    for i, s in enumerate(arrays["ts"]):
        row = {"s": float(s)}
        for p in prefixes:
            for q in _SCALAR_SERIES:
                row[f"{p}/{q}"] = arrays[f"{p}/{q}"][i].item()
        rows.append(row)
    return rows


def _run_into(cfg: ExperimentConfig, run_dir: Path, progress: bool) -> dict:
    arrays, summary = run_truncation(setup_experiment(cfg), progress=progress)
    np.savez_compressed(run_dir / "arrays.npz", **arrays)
    write_metrics(run_dir / "metrics.jsonl", metrics_rows(arrays))
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


def _figures(run_dir: Path) -> list[Path]:
    from .plots import plot_truncation_run

    return plot_truncation_run(run_dir)


TRUNCATION = ExperimentKind(
    name="truncation",
    description="effective flow (diffrax) beside GD/SGD (optax) of the adapted network",
    from_table=config_from_dict,
    run=_run_into,
    figures=_figures,
)
