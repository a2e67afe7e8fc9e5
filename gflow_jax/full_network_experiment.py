"""The ``sgd_vs_flow`` kind: does real training of the full network truncate?

All parameters of the ReLU network (W_ℓ, b_ℓ, ℓ = 1..L, and W_{L+1}, b_{L+1}) are trained on the
standard cost with one-hot targets y_j = scale·e_j by (:mod:`gflow_jax.full_network`)

* the exact gradient flow (diffrax),
* full-batch GD at several step sizes η (optax) and
* minibatch SGD over a grid of step sizes × batch sizes (optax),

all on the clock s = η·k and saved on one time grid. At every saved time the layer parameters are
mapped to cumulative parameters W⁽ℓ⁾, b⁽ℓ⁾ and the data are followed in input space: truncated
data x̃, truncation counts and rates, the rank of ∂x̃/∂x, how far the weights are from adapted
(‖offdiag W⁽ℓ⁾W⁽ℓ⁾ᵀ‖_F/‖W⁽ℓ⁾W⁽ℓ⁾ᵀ‖_F), NC1 in input space, Papyan NC1–NC4 on x⁽ᴸ⁾, the balance
quantities and the distance to the flow.

Run directory: ``arrays.npz`` (keys ``flow/…``, ``gd/eta=…/…``, ``sgd/eta=…,B=…/…`` plus the
data), ``metrics.jsonl`` (one row per saved time with every scalar series) and figures
(:mod:`gflow_jax.full_network_plots`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .config import ConfigError, OutputConfig, build_dataclass, require_choice, require_positive
from .data import clusters_from_config
from .experiment import metrics_rows
from .flow import SolverSettings
from .full_network import (
    NetworkProblem,
    check_network_solution,
    network_descent,
    network_diagnostics,
    parameter_distance,
    solve_network_flow,
)
from .kinds import ExperimentKind
from .network import AdaptedParameters, ReLUNetwork
from .runs import write_metrics

__all__ = [
    "SGD_VS_FLOW",
    "SgdVsFlowConfig",
    "SvfDataConfig",
    "SvfFlowConfig",
    "SvfGDConfig",
    "SvfNetworkConfig",
    "SvfSGDConfig",
    "SvfTargetConfig",
    "initial_network",
    "run_sgd_vs_flow",
    "sgd_vs_flow_config",
]


@dataclass(frozen=True)
class SvfDataConfig:
    """Gaussian or ball clusters (:func:`gflow_jax.data.make_clusters`) in R^M, M = ``dim``
    (= the hidden width); ``center`` subtracts the mean of all points."""

    n_classes: int = 3
    points_per_class: int = 20
    dim: int = 3
    radius: float = 0.3
    separation: float = 1.5
    distribution: str = "gaussian"
    layout: str = "random"
    center: bool = True


@dataclass(frozen=True)
class SvfNetworkConfig:
    """Initial network with ``layers`` square hidden layers of width M.

    ``init = "he"``: W_ℓ ~ N(0, weight_scale²·2/M) entrywise, b_ℓ ~ N(0, bias_scale²).
    ``init = "adapted"``: W⁽ℓ⁾ = D_ℓO with a random orthogonal O, d_{ℓ,k} = ±weight_scale (signs
    alternating +, −, + … over layers) and thresholds at the ``init_quantile`` of the data from
    the truncating side (the starting point of the effective theory).
    Output layer: W_{L+1} ~ N(0, output_scale²/M), b_{L+1} = 0.
    """

    layers: int = 2
    init: str = "he"
    weight_scale: float = 1.0
    bias_scale: float = 0.1
    output_scale: float = 0.5
    init_quantile: float = 0.15


@dataclass(frozen=True)
class SvfTargetConfig:
    """Reference outputs y_j = scale·e_j (one-hot, Q = n_classes)."""

    scale: float = 1.0


@dataclass(frozen=True)
class SvfFlowConfig:
    """Gradient flow (diffrax) and the common save grid s = linspace(0, t_final, n_save).

    ReLU gradient flow can *slide* along a face (the field points into the face from both
    sides); an adaptive solver then chatters at steps ~ tolerance. ``dtmin`` > 0 forces steps of
    at least ``dtmin`` there (error O(dtmin), as GD with η = dtmin on the sliding stretch: far
    below the step sizes compared), so the solve finishes; diffrax's step counts are reported.
    """

    t_final: float = 100.0
    n_save: int = 101
    solver: str = "tsit5"
    rtol: float = 1e-6
    atol: float = 1e-8
    pcoeff: float = 0.3
    icoeff: float = 0.3
    dtmin: float = 1e-3
    dt0: float = 1e-3
    max_steps: int = 400_000


@dataclass(frozen=True)
class SvfGDConfig:
    """Full-batch GD at each step size η."""

    etas: tuple[float, ...] = (0.2, 0.1, 0.05)


@dataclass(frozen=True)
class SvfSGDConfig:
    """Minibatch SGD at every (η, B) of ``etas`` × ``batch_sizes``; ``enabled = false`` skips."""

    enabled: bool = True
    etas: tuple[float, ...] = (0.2, 0.05)
    batch_sizes: tuple[int, ...] = (6, 20)


@dataclass(frozen=True)
class SgdVsFlowConfig:
    name: str = "sgd_vs_flow"
    seed: int = 0
    data: SvfDataConfig = field(default_factory=SvfDataConfig)
    network: SvfNetworkConfig = field(default_factory=SvfNetworkConfig)
    targets: SvfTargetConfig = field(default_factory=SvfTargetConfig)
    flow: SvfFlowConfig = field(default_factory=SvfFlowConfig)
    gd: SvfGDConfig = field(default_factory=SvfGDConfig)
    sgd: SvfSGDConfig = field(default_factory=SvfSGDConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self):
        _validate(self)


def _validate(cfg: SgdVsFlowConfig) -> None:
    d, n, f = cfg.data, cfg.network, cfg.flow
    if d.n_classes < 2:
        raise ConfigError("data.n_classes", f"needs at least 2 classes, got {d.n_classes}")
    for k in ("points_per_class", "dim", "radius"):
        require_positive(f"data.{k}", getattr(d, k))
    if d.separation < 0:
        raise ConfigError("data.separation", f"must be non-negative, got {d.separation}")
    require_choice("data.distribution", d.distribution, ("ball", "gaussian"))
    require_choice("data.layout", d.layout, ("diagonal", "random"))

    require_positive("network.layers", n.layers)
    require_choice("network.init", n.init, ("he", "adapted"))
    require_positive("network.weight_scale", n.weight_scale)
    require_positive("network.output_scale", n.output_scale)
    if n.bias_scale < 0:
        raise ConfigError("network.bias_scale", f"must be non-negative, got {n.bias_scale}")
    if not 0.0 <= n.init_quantile <= 1.0:
        raise ConfigError("network.init_quantile", f"must lie in [0, 1], got {n.init_quantile}")
    require_positive("targets.scale", cfg.targets.scale)

    require_choice("flow.solver", f.solver, ("tsit5", "dopri5", "dopri8", "euler"))
    for k in ("t_final", "rtol", "atol", "dt0", "max_steps"):
        require_positive(f"flow.{k}", getattr(f, k))
    if f.n_save < 2:
        raise ConfigError("flow.n_save", f"must be at least 2, got {f.n_save}")
    for k in ("dtmin", "pcoeff", "icoeff"):
        if getattr(f, k) < 0:
            raise ConfigError(f"flow.{k}", f"must be non-negative, got {getattr(f, k)}")

    interval = f.t_final / (f.n_save - 1)
    etas = [(f"gd.etas[{i}]", e) for i, e in enumerate(cfg.gd.etas)]
    if cfg.sgd.enabled:
        etas += [(f"sgd.etas[{i}]", e) for i, e in enumerate(cfg.sgd.etas)]
        n_points = d.n_classes * d.points_per_class
        for i, b in enumerate(cfg.sgd.batch_sizes):
            if not 1 <= b <= n_points:
                raise ConfigError(
                    f"sgd.batch_sizes[{i}]", f"must lie in [1, {n_points}] (number of points)"
                )
        if not cfg.sgd.etas or not cfg.sgd.batch_sizes:
            raise ConfigError("sgd", "needs etas and batch_sizes (or enabled = false)")
    for key, eta in etas:
        require_positive(key, eta)
        steps = interval / eta
        if abs(steps - round(steps)) > 1e-9 * max(steps, 1.0) or round(steps) < 1:
            raise ConfigError(
                key,
                f"save interval t_final/(n_save-1) = {interval:g} is not a whole number of "
                f"steps {eta:g}; the common clock s = eta*k needs one",
            )
    require_positive("output.snapshots", cfg.output.snapshots)
    if not cfg.name or "/" in cfg.name:
        raise ConfigError("name", f"must be a non-empty name without '/', got {cfg.name!r}")


def sgd_vs_flow_config(table: dict) -> SgdVsFlowConfig:
    """Build and validate the config from a TOML table (errors name the key)."""
    return build_dataclass(SgdVsFlowConfig, table)


# --------------------------------------------------------------------------------------------
# set-up and run


def _random_orthogonal(key, dim: int):
    q, r = jnp.linalg.qr(jax.random.normal(key, (dim, dim)))
    return q * jnp.sign(jnp.diag(r))[None, :]


def initial_network(cfg: SgdVsFlowConfig, x: jax.Array, key) -> ReLUNetwork:
    """The network at s = 0 (see :class:`SvfNetworkConfig`) for data ``x`` ``(N, M)``."""
    n, M, Q = cfg.network, cfg.data.dim, cfg.data.n_classes
    k_w, k_b, k_out, k_frame = jax.random.split(key, 4)
    out_weight = n.output_scale / math.sqrt(M) * jax.random.normal(k_out, (Q, M))
    out_bias = jnp.zeros(Q)
    if n.init == "he":
        weights = n.weight_scale * math.sqrt(2.0 / M) * jax.random.normal(k_w, (n.layers, M, M))
        biases = n.bias_scale * jax.random.normal(k_b, (n.layers, M))
        return ReLUNetwork(weights, biases, out_weight, out_bias)
    frame = _random_orthogonal(k_frame, M)
    signs = jnp.where(jnp.arange(n.layers) % 2 == 0, 1.0, -1.0)[:, None]
    d = n.weight_scale * signs * jnp.ones((1, M))
    u = x @ frame.T
    c = jnp.where(
        d > 0,
        jnp.quantile(u, n.init_quantile, axis=0)[None, :],
        jnp.quantile(u, 1.0 - n.init_quantile, axis=0)[None, :],
    )
    return AdaptedParameters.from_thresholds(d, c).to_network(frame, out_weight, out_bias)


def _eta_label(eta: float) -> str:
    return f"{eta:g}"


def _trajectory_arrays(prefix: str, nets, loss, x, labels, Q, flow_nets) -> dict:
    diag = network_diagnostics(nets, x, labels, Q)
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

    summary: dict = {}
    t0 = time.perf_counter()
    sol = check_network_solution(
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
    arrays.update(_trajectory_arrays("flow", sol.net, sol.loss, x, data.labels, Q, sol.net))
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
        arrays.update(_trajectory_arrays(prefix, traj.net, traj.loss, x, data.labels, Q, sol.net))
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


def _run_into(cfg: SgdVsFlowConfig, run_dir: Path, progress: bool) -> dict:
    arrays, summary = run_sgd_vs_flow(cfg, progress=progress)
    np.savez_compressed(run_dir / "arrays.npz", **arrays)
    write_metrics(run_dir / "metrics.jsonl", metrics_rows(arrays, _SCALARS))
    flow = summary["flow"]
    print(
        f"gflow: full-network flow solved in {flow['num_steps']} steps "
        f"({flow['num_rejected_steps']} rejected), final cost {flow['loss']:.3e}"
    )
    for name, e in summary.items():
        if isinstance(e, dict):
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


def _figures(run_dir: Path) -> list[Path]:
    from .full_network_plots import plot_sgd_vs_flow_run
    from .truncated_magnitude import plot_network_magnitude

    # magnitude of x̃(s) (input space) and of each hidden layer x⁽ℓ⁾(s) (feature space)
    return plot_sgd_vs_flow_run(run_dir) + plot_network_magnitude(run_dir)


SGD_VS_FLOW = ExperimentKind(
    name="sgd_vs_flow",
    description="gradient flow (diffrax) vs GD/SGD (optax) of all parameters of the ReLU "
    "network, tracked in input space (truncation, adaptedness, NC1-NC4)",
    from_table=sgd_vs_flow_config,
    run=_run_into,
    figures=_figures,
)
