"""The ``rates`` kind: measured truncation rates against n/(N d²), many (N, d) in one solve.

Each configuration is one cluster of N points in one dimension (uniform in [0, 1], seeded by N), one
face truncating from below with weight d, threshold c(0) midway between the ``initial_owned``-th and
the next point (so it starts owning that many) and target ỹ = ``target`` beyond the cluster, so the
face sweeps through every point (docs/theory.md#closed-forms, sweep and complete truncation). All
``len(points) × len(d)`` configurations share one array shape — smaller N are padded with
zero-weight rows (:class:`~gflow_jax.dynamics.FlowProblem` ``weights``) — and are solved by **one**
vmapped, compiled diffrax solve on a per-configuration time grid s = d²·σ. On every inter-event
interval the rate −d/ds log|c − ỹ| is fitted from the saved states and compared with n/(N d²), and
with the exact event-driven solution (:func:`~gflow_jax.dynamics.solve_face`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ..core import AdaptedParameters
from ..diagnostics import interval_rates, rate_diagnostics
from ..dynamics import FlowProblem, SolverSettings, check_solution, solve_face, solve_flow
from ..io import pyplot, save_figure
from ._arrays import read_run, write_run
from ._config import (
    ConfigBase,
    ConfigError,
    OutputConfig,
    SolverConfig,
    require_positive,
)
from ._registry import ExperimentKind

__all__ = ["KIND", "RatesConfig", "run_rates"]


@dataclass(frozen=True)
class RatesConfig(ConfigBase):
    """Grid of (N, d) for the ``rates`` kind.

    ``sigma_final`` and ``n_save`` set the save grid in reduced time σ = s/d² (event times scale
    with d²); a fraction ``dense_fraction`` of the ``n_save`` saves fall in [0, sigma_dense],
    where the crossings happen. ``[flow]``: the solver.
    """

    name: str = "rates"
    seed: int = 0
    points: tuple[int, ...] = (10, 20, 40, 80)
    d: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0)
    target: float = 1.5
    initial_owned: int = 1
    sigma_final: float = 12.0
    sigma_dense: float = 3.0
    dense_fraction: float = 0.8
    n_save: int = 1200
    flow: SolverConfig = field(default_factory=SolverConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self) -> None:
        if not self.points:
            raise ConfigError("points", "give at least one number of points")
        for i, n in enumerate(self.points):
            if n < 2:
                raise ConfigError(f"points[{i}]", f"need at least 2 points, got {n}")
        if not self.d:
            raise ConfigError("d", "give at least one weight d")
        for i, v in enumerate(self.d):
            if v == 0.0:
                raise ConfigError(f"d[{i}]", "is 0: singular weight")
        if not 1 <= self.initial_owned < min(self.points):
            raise ConfigError("initial_owned", f"must lie in [1, {min(self.points)}) (points)")
        if self.target <= 1.0:
            raise ConfigError("target", "must exceed 1 (the cluster spans [0, 1]) for a sweep")
        for k in ("sigma_final", "sigma_dense"):
            require_positive(k, getattr(self, k))
        if not self.sigma_dense < self.sigma_final:
            raise ConfigError("sigma_dense", "must be smaller than sigma_final")
        if not 0.0 < self.dense_fraction < 1.0:
            raise ConfigError("dense_fraction", "must lie in (0, 1)")
        if self.n_save < 10:
            raise ConfigError("n_save", f"must be at least 10, got {self.n_save}")


def _grid(cfg: RatesConfig) -> tuple[np.ndarray, np.ndarray]:
    n, d = np.meshgrid(np.asarray(cfg.points), np.asarray(cfg.d, dtype=float), indexing="ij")
    return n.ravel(), d.ravel()


def _sigma(cfg: RatesConfig) -> np.ndarray:
    n_dense = int(round(cfg.dense_fraction * cfg.n_save))
    dense = np.linspace(0.0, cfg.sigma_dense, n_dense, endpoint=False)
    sparse = np.linspace(cfg.sigma_dense, cfg.sigma_final, cfg.n_save - n_dense)
    return np.concatenate([dense, sparse])


@eqx.filter_jit
def _solve_all(problems: FlowProblem, params0: AdaptedParameters, ts, settings: SolverSettings):
    """One compiled solve of every configuration (vmapped over the leading axis)."""
    return eqx.filter_vmap(lambda p, x, t: solve_flow(p, x, t, settings))(problems, params0, ts)


def run_rates(cfg: RatesConfig, *, progress: bool = False) -> tuple[dict, dict]:
    """Solve every (N, d) of ``cfg`` in one vmapped solve; fit and predict rates.

    Returns ``(arrays, summary)``; ``arrays["intervals/…"]`` has one row per (configuration,
    inter-event interval) with the fitted and predicted rates.
    """
    del progress  # a single compiled solve: diffrax's meter does not run under vmap
    n_points, d = _grid(cfg)
    n_max = int(n_points.max())
    key = jax.random.PRNGKey(cfg.seed)
    rows, c0 = [], []
    for n in n_points:  # the same cluster for every d at a given N
        xi = np.sort(np.asarray(jax.random.uniform(jax.random.fold_in(key, int(n)), (int(n),))))
        u = np.concatenate([xi, np.full(n_max - n, 10.0)])  # padding: weight 0, never owned
        w = np.concatenate([np.ones(n), np.zeros(n_max - n)])
        rows.append((u, w, xi))
        c0.append(0.5 * (xi[cfg.initial_owned - 1] + xi[cfg.initial_owned]))
    u = jnp.asarray(np.stack([r[0] for r in rows]))[:, :, None]  # (B, N_max, 1)
    w = jnp.asarray(np.stack([r[1] for r in rows]))
    targets = jnp.full_like(u, cfg.target)
    problems = eqx.filter_vmap(lambda uu, tt, ww: FlowProblem(uu, tt, weights=ww))(u, targets, w)
    params0 = AdaptedParameters.from_thresholds(
        jnp.asarray(d)[:, None, None], jnp.asarray(c0)[:, None, None]
    )
    sigma = _sigma(cfg)
    ts = jnp.asarray(d[:, None] ** 2 * sigma[None, :])
    settings = SolverSettings.from_config(cfg.flow)
    t0 = time.perf_counter()
    sol = _solve_all(problems, params0, ts, settings)
    jax.block_until_ready(sol)
    seconds = time.perf_counter() - t0
    if not bool(jnp.all(sol.success)):
        bad = np.flatnonzero(~np.asarray(sol.success))
        raise RuntimeError(
            f"diffrax did not finish configurations {bad.tolist()} (N, d) = "
            f"{[(int(n_points[b]), float(d[b])) for b in bad]}: raise flow.max_steps"
        )
    check_solution(jax.tree.map(lambda x: x[0], sol), settings)

    table: dict[str, list] = {k: [] for k in ("config", "N", "d", "count", "fitted", "predicted")}
    exact_gap, event_gap = [], []
    c_all = np.asarray(sol.params.thresholds)  # (B, T, 1, 1)
    for i in range(len(d)):
        problem = jax.tree.map(lambda x, i=i: x[i], problems)
        params = jax.tree.map(lambda x, i=i: x[i], sol.params)
        fitted = interval_rates(np.asarray(ts[i]), c_all[i], rate_diagnostics(problem, params))
        m = len(fitted["fitted"])
        table["config"] += [i] * m
        table["N"] += [int(n_points[i])] * m
        table["d"] += [float(d[i])] * m
        table["count"] += (fitted["count"] * n_points[i] / n_max).round(9).tolist()  # real n
        for k in ("fitted", "predicted"):
            table[k] += fitted[k].tolist()
        face = solve_face(rows[i][2], cfg.target, c0[i], float(d[i]), int(n_points[i]))
        exact_gap.append(float(np.max(np.abs(c_all[i, :, 0, 0] - face(np.asarray(ts[i]))))))
        event_gap.append(face.complete_time)
    arrays = {f"intervals/{k}": np.asarray(v) for k, v in table.items()}
    arrays.update(
        {
            "ts": np.asarray(ts),
            "thresholds": c_all[:, :, 0, 0],
            "config/N": n_points,
            "config/d": d,
            "exact/max_abs_error": np.asarray(exact_gap),
            "exact/complete_time": np.asarray(event_gap),
        }
    )
    rel = np.abs(arrays["intervals/fitted"] / arrays["intervals/predicted"] - 1)
    summary = {
        "configurations": len(d),
        "solve_seconds_including_compile": seconds,
        "num_steps_max": int(np.max(sol.num_steps)),
        "num_rejected_steps_total": int(np.sum(sol.num_rejected_steps)),
        "intervals": len(rel),
        "max_rel_rate_error": float(rel.max()),
        "max_abs_error_vs_event_driven": float(np.max(exact_gap)),
    }
    return arrays, summary


def _run_into(cfg: RatesConfig, run_dir: Path, progress: bool) -> dict:
    arrays, summary = run_rates(cfg, progress=progress)
    write_run(
        run_dir,
        arrays,
        [
            {"N": int(n), "d": float(dd), "max_abs_error_vs_event_driven": float(e)}
            for n, dd, e in zip(
                arrays["config/N"], arrays["config/d"], arrays["exact/max_abs_error"], strict=True
            )
        ],
    )
    print(
        f"gflow: {summary['configurations']} configurations in one solve "
        f"({summary['solve_seconds_including_compile']:.2f} s with compilation); "
        f"{summary['intervals']} intervals, max |fitted/predicted − 1| = "
        f"{summary['max_rel_rate_error']:.2e}, max |c − c_exact| = "
        f"{summary['max_abs_error_vs_event_driven']:.2e}"
    )
    return summary


def _figures(run_dir: Path) -> list[Path]:
    plt = pyplot()
    _, cfg, summary, a, out = read_run(run_dir)
    n, N, d = a["intervals/count"], a["intervals/N"], a["intervals/d"]
    fitted, pred = a["intervals/fitted"], a["intervals/predicted"]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 4.5))
    markers = dict(zip(sorted(set(N.tolist())), "osD^v<>p*h", strict=False))
    cmap = plt.get_cmap("viridis")
    d_values = sorted(set(d.tolist()))
    color = {dd: cmap(j / max(len(d_values) - 1, 1)) for j, dd in enumerate(d_values)}
    for NN, mk in markers.items():
        for dd in d_values:
            sel = (N == NN) & (d == dd)
            ax0.scatter(
                n[sel], fitted[sel] * NN * dd**2, marker=mk, s=22, facecolors="none",
                edgecolors=color[dd], linewidths=0.9,
            )  # fmt: skip
    top = n.max()
    ax0.plot([0, top], [0, top], "k--", lw=1)
    # two small legends: marker = N, colour = d (not one entry per configuration)
    by_n = [
        plt.Line2D([], [], marker=mk, ls="", color="0.3", label=f"N = {NN}")
        for NN, mk in markers.items()
    ]
    by_d = [
        plt.Line2D([], [], marker="o", ls="", color=color[dd], label=f"d = {dd:g}")
        for dd in d_values
    ]
    guide = [plt.Line2D([], [], color="k", ls="--", label="rate·N d² = n")]
    first = ax0.legend(
        handles=by_n + guide, fontsize=7, loc="upper left", title="N", title_fontsize=7
    )
    ax0.add_artist(first)
    ax0.legend(handles=by_d, fontsize=7, loc="lower right", title="d", title_fontsize=7)
    ax0.set_xlabel("owned points n (one point per inter-event interval)")
    ax0.set_ylabel("fitted rate × N d²")
    # where the two sides coincide, their relative difference on a log axis
    rel = np.abs(fitted / pred - 1)
    for dd in d_values:
        sel = d == dd
        ax1.loglog(pred[sel], np.where(rel[sel] > 0, rel[sel], np.nan), ".", ms=4, color=color[dd])
    ax1.axhline(summary["max_rel_rate_error"], color="k", ls=":", lw=1)
    ax1.set_xlabel("predicted rate n/(N d²)  (per unit of s)")
    ax1.set_ylabel("|fitted/predicted − 1|")
    ax1.set_title(
        f"relative error per interval; max {summary['max_rel_rate_error']:.1e} (dotted)",
        fontsize=9,
    )
    fig.suptitle(
        f"Truncation rates: {summary['configurations']} configurations (N ∈ {cfg['points']}, "
        f"d ∈ {cfg['d']}) in one vmapped solve; ỹ = {cfg['target']}, "
        f"{cfg['initial_owned']} point(s) owned at s = 0, "
        f"rtol = {cfg['flow']['rtol']}",
        fontsize=9,
    )
    return [save_figure(fig, out / "rates.png")]


KIND = ExperimentKind(
    "rates", "truncation rates n/(N d²), many (N, d) in one solve", RatesConfig, _run_into,
    _figures, main_figure="rates.png",
)  # fmt: skip
