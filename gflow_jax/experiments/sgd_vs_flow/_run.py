"""The ``sgd_vs_flow`` kind: does real training of the full network truncate?

All parameters of the ReLU network (W_ℓ, b_ℓ, ℓ = 1..L, and W_{L+1}, b_{L+1}) are trained on the
standard cost with one-hot targets y_j = scale·e_j by

* the exact gradient flow (diffrax),
* full-batch GD at several step sizes η (optax) and
* minibatch SGD over a grid of step sizes × batch sizes (optax),

all on the clock s = η·k and saved on one time grid. At every saved time the layer parameters are
mapped to cumulative parameters W⁽ℓ⁾, b⁽ℓ⁾ and the data are followed in input space: truncated
data x̃, truncation counts and rates, the rank of ∂x̃/∂x, how far the weights are from adapted
(‖offdiag W⁽ℓ⁾W⁽ℓ⁾ᵀ‖_F/‖W⁽ℓ⁾W⁽ℓ⁾ᵀ‖_F), NC1 in input space, Papyan NC1–NC4 on x⁽ᴸ⁾, the balance
quantities and the distance to the flow. The Papyan measures follow the config's
``[collapse]`` convention, recorded in the run's config and in ``summary["collapse"]``.

Run directory: ``arrays.npz`` (keys ``flow/…``, ``gd/eta=…/…``, ``sgd/eta=…,B=…/…`` plus the
data), ``metrics.jsonl`` (one row per saved time with every scalar series) and figures.
"""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ...diagnostics import network_diagnostics, parameter_distance
from ...dynamics import (
    NetworkProblem,
    SolverSettings,
    check_solution,
    network_descent,
    solve_network_flow,
)
from .._arrays import metrics_rows, write_run
from .._config import clusters_from_config
from ._config import SgdVsFlowConfig, initial_network


def _eta_label(eta: float) -> str:
    return f"{eta:g}"


def _trajectory_arrays(prefix: str, nets, loss, x, labels, Q, flow_nets, collapse) -> dict:
    diag = network_diagnostics(nets, x, labels, Q, collapse=collapse)
    N, L, M = diag.truncated.shape[1:]
    bal = np.asarray(diag.balance)
    out = {
        "loss": loss,
        "accuracy": diag.accuracy,
        "weights": nets.weights,
        "biases": nets.biases,
        "out_weight": nets.out_weight,
        "out_bias": nets.out_bias,
        "x_tilde": diag.x_tilde,
        "counts": diag.counts,
        "layer_fraction": diag.layer_fraction,
        "truncated_fraction": jnp.sum(diag.counts, axis=(-2, -1)) / (N * L * M),
        "n_truncated": diag.n_truncated,
        "rank": diag.rank,
        "mean_rank": jnp.mean(diag.rank, axis=-1),
        "fully_truncated": diag.fully_truncated,
        "rates": diag.rates,
        "offdiag": diag.offdiag,
        "offdiag_max": jnp.max(diag.offdiag, axis=-1),
        "min_singular": diag.min_singular,
        "identity_error": diag.identity_error,
        "nc1_input": diag.nc1_input,
        "balance": bal,
        "balance_drift": np.max(np.abs(bal - bal[:1]), axis=(-2, -1)),
        "gap_to_flow": parameter_distance(nets, flow_nets),
    }
    for name in (
        "nc1",
        "nc2_equinorm",
        "nc2_equinorm_w",
        "nc2_equiangle",
        "nc2_maxangle",
        "nc3",
        "nc4",
    ):
        out[name] = getattr(diag.papyan, name)
    return {f"{prefix}/{k}": np.asarray(v) for k, v in out.items()}


def _final(arrays: dict, prefix: str) -> dict:
    keys = ("loss", "accuracy", "nc1_input", "nc1", "nc2_equinorm", "nc2_maxangle", "nc3", "nc4")
    entry = {k: float(arrays[f"{prefix}/{k}"][-1]) for k in keys}
    entry.update(
        truncated_fraction=float(arrays[f"{prefix}/truncated_fraction"][-1]),
        fully_truncated=int(arrays[f"{prefix}/fully_truncated"][-1]),
        mean_rank=float(arrays[f"{prefix}/mean_rank"][-1]),
        offdiag=arrays[f"{prefix}/offdiag"][-1].tolist(),
        min_singular=arrays[f"{prefix}/min_singular"][-1].tolist(),
        max_balance_drift=float(arrays[f"{prefix}/balance_drift"].max()),
        max_gap_to_flow=float(arrays[f"{prefix}/gap_to_flow"].max()),
        max_identity_error=float(arrays[f"{prefix}/identity_error"].max()),
    )
    return entry


def run_sgd_vs_flow(cfg: SgdVsFlowConfig, *, progress: bool = False) -> tuple[dict, dict]:
    """Flow, GD at every η and SGD at every (η, B) from one initial network; diagnose all.

    Returns ``(arrays, summary)``: NumPy arrays keyed ``"<trajectory>/<series>"`` plus ``ts`` and
    the data, and a JSON-ready summary (solver statistics, timings, final values, the fitted
    order of the GD–flow discrepancy in η).
    """
    key = jax.random.PRNGKey(cfg.seed)
    k_data, k_net, k_sgd = jax.random.split(key, 3)
    dc = cfg.data
    data = clusters_from_config(k_data, dc)
    x = data.x - jnp.mean(data.x, axis=0, keepdims=True) if dc.center else data.x
    Q = dc.n_classes
    problem = NetworkProblem(x, cfg.targets.scale * jnp.eye(Q)[data.labels])
    net0 = initial_network(cfg, x, k_net)
    fc = cfg.flow
    settings = SolverSettings.from_config(fc)
    ts = jnp.linspace(0.0, fc.t_final, fc.n_save)

    collapse = cfg.collapse.options()
    summary: dict = {"collapse": {"convention": cfg.collapse.convention, **collapse.as_dict()}}
    t0 = time.perf_counter()
    sol = check_solution(
        solve_network_flow(problem, net0, ts, settings, progress=progress), settings
    )
    jax.block_until_ready(sol)
    summary["flow"] = {
        "seconds_including_compile": time.perf_counter() - t0,
        "num_steps": int(sol.num_steps),
        "num_accepted_steps": int(sol.num_accepted_steps),
        "num_rejected_steps": int(sol.num_rejected_steps),
    }
    arrays = {
        "ts": np.asarray(ts),
        "data/x": np.asarray(x),
        "data/labels": np.asarray(data.labels),
    }
    arrays.update(
        _trajectory_arrays("flow", sol.params, sol.loss, x, data.labels, Q, sol.params, collapse)
    )
    summary["flow"].update(_final(arrays, "flow"))

    runs = [(f"gd/eta={_eta_label(e)}", e, None) for e in cfg.gd.etas]
    if cfg.sgd.enabled:
        runs += [
            (f"sgd/eta={_eta_label(e)},B={b}", e, b)
            for e in cfg.sgd.etas
            for b in cfg.sgd.batch_sizes
        ]
    for i, (prefix, eta, batch) in enumerate(runs):
        t0 = time.perf_counter()
        traj = network_descent(
            problem,
            net0,
            ts,
            eta,
            batch_size=batch,
            key=jax.random.fold_in(k_sgd, i),
            progress=progress,
        )
        jax.block_until_ready(traj)
        arrays.update(
            _trajectory_arrays(
                prefix, traj.params, traj.loss, x, data.labels, Q, sol.params, collapse
            )
        )
        summary[prefix] = {
            "eta": eta,
            "batch_size": problem.n_points if batch is None else batch,
            "seconds": time.perf_counter() - t0,
            **_final(arrays, prefix),
        }

    gd = [(e, summary[f"gd/eta={_eta_label(e)}"]["max_gap_to_flow"]) for e in cfg.gd.etas]
    if len(gd) >= 2:
        gd.sort(reverse=True)
        e, g = np.log(np.array(gd)).T
        summary["gd_discrepancy_order"] = float(np.polyfit(e, g, 1)[0])
        # local orders between consecutive step sizes (1 in the asymptotic regime)
        summary["gd_discrepancy_local_orders"] = (np.diff(g) / np.diff(e)).tolist()
    return arrays, summary


_SCALARS = (
    "loss",
    "accuracy",
    "nc1_input",
    "nc1",
    "nc2_equinorm",
    "nc2_maxangle",
    "nc3",
    "nc4",
    "truncated_fraction",
    "fully_truncated",
    "mean_rank",
    "offdiag_max",
    "balance_drift",
    "gap_to_flow",
)


def run_into(cfg: SgdVsFlowConfig, run_dir: Path, progress: bool) -> dict:
    arrays, summary = run_sgd_vs_flow(cfg, progress=progress)
    write_run(run_dir, arrays, metrics_rows(arrays, _SCALARS))
    flow = summary["flow"]
    print(
        f"gflow: full-network flow solved in {flow['num_steps']} steps "
        f"({flow['num_rejected_steps']} rejected), final cost {flow['loss']:.3e}"
    )
    for name, e in summary.items():
        if isinstance(e, dict) and "loss" in e:
            print(
                f"gflow: {name}: cost {e['loss']:.3e}, NC1 {e['nc1']:.3e}, NC1_in "
                f"{e['nc1_input']:.3e}, truncated {e['truncated_fraction']:.2f}, "
                f"max |θ - θ_flow| {e['max_gap_to_flow']:.3e}"
            )
    if "gd_discrepancy_order" in summary:
        local = ", ".join(f"{o:.2f}" for o in summary["gd_discrepancy_local_orders"])
        print(
            f"gflow: GD-flow discrepancy ~ eta^{summary['gd_discrepancy_order']:.2f} "
            f"(local orders from the largest eta down: {local})"
        )
    return summary
