"""The ``spectral_gap`` kind (docs/theory.md#spectral-gap): the flow of the standard cost with the
cumulative output map frozen, for an injective and a non-injective output map, against the bound
|e(s)| ≤ e^{−(N_j/N)μs}|e(0)| and the exact solution."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ..core import AdaptedParameters, make_clusters
from ..diagnostics import cluster_error, gap_matrix
from ..dynamics import FlowProblem, SolverSettings, check_solution, solve_flow
from ..io import pyplot, save_figure
from ._arrays import read_run, write_run
from ._config import (
    ConfigBase,
    ConfigError,
    FlowConfig,
    OutputConfig,
    require_positive,
)
from ._registry import ExperimentKind

__all__ = ["KIND", "SpectralGapConfig", "run_spectral_gap"]


@dataclass(frozen=True)
class SpectralGapConfig(ConfigBase):
    """``kind = "spectral_gap"``: one layer (L = 1) in dimension ``dim``; cluster 0 is fully
    truncated from the start (thresholds ``offset`` away from its target, which lies ``margin``
    beyond the cluster), cluster 1 lies far above and is never truncated. The flow runs once
    with an injective output map (Q = ``dim``) and once with Q = ``q_small`` < ``dim``;
    ``[flow]``: the save grid and the solver."""

    name: str = "spectral_gap"
    seed: int = 0
    dim: int = 3
    q_small: int = 2
    points_per_class: int = 20
    radius: float = 0.5
    separation: float = 4.0
    margin: float = 1.0
    offset: float = 0.3
    weight_scale: float = 1.0
    flow: FlowConfig = field(default_factory=FlowConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def validate(self) -> None:
        if self.dim < 2:
            raise ConfigError("dim", f"must be at least 2, got {self.dim}")
        if not 1 <= self.q_small < self.dim:
            raise ConfigError("q_small", f"must lie in [1, dim = {self.dim})")
        for k in ("points_per_class", "radius", "separation", "margin", "offset"):
            require_positive(k, getattr(self, k))
        require_positive("weight_scale", self.weight_scale)
        if self.separation <= 2 * self.radius + self.margin + self.offset:
            raise ConfigError(
                "separation", "too small: cluster 1 must stay out of reach of the thresholds"
            )


def run_spectral_gap(cfg: SpectralGapConfig) -> tuple[dict, dict]:
    """Flow of the ``"output"`` cost for an injective and a non-injective output map.

    Returns ``(arrays, summary)`` with, per case, e(s), the bound e^{−(N_j/N)μs}|e(0)|, the
    exact solution expm(−(N_j/N)K s) e(0) (eigendecomposition of K) and μ.
    """
    k_data, k_dir, k_w1, k_w2 = jax.random.split(jax.random.PRNGKey(cfg.seed), 4)
    data = make_clusters(
        k_data, n_classes=2, n_per_class=cfg.points_per_class, dim=cfg.dim,
        radius=cfg.radius, separation=cfg.separation,
    )  # fmt: skip
    u = data.x
    top = jnp.max(jnp.where(data.labels[:, None] == 0, u, -jnp.inf), axis=0)
    target = top + cfg.margin  # cluster 0's target, beyond the cluster in every coordinate
    targets = jnp.stack([target, data.centers[1]])[data.labels]
    direction = jax.random.normal(k_dir, (cfg.dim,))
    c0 = target + cfg.offset * direction / jnp.linalg.norm(direction)
    d = jnp.full((1, cfg.dim), cfg.weight_scale)
    params0 = AdaptedParameters.from_thresholds(d, c0[None, :])
    ts = jnp.linspace(0.0, cfg.flow.t_final, cfg.flow.n_save)
    settings = SolverSettings.from_config(cfg.flow)
    frac = cfg.points_per_class / data.n_points  # N_j / N
    arrays = {"ts": np.asarray(ts), "target": np.asarray(target)}
    summary = {"N_j/N": frac}
    for name, q, key in (("injective", cfg.dim, k_w1), ("not_injective", cfg.q_small, k_w2)):
        w_out = jax.random.normal(key, (q, cfg.dim)) / np.sqrt(cfg.dim)
        problem = FlowProblem(u, targets, out_weight=w_out, cost="output")
        t0 = time.perf_counter()
        sol = check_solution(solve_flow(problem, params0, ts, settings), settings)
        seconds = time.perf_counter() - t0
        e = cluster_error(sol.params.thresholds[:, 0], sol.params.d[:, 0], target)
        K, mu = gap_matrix(d[0], w_out)
        lam, vec = np.linalg.eigh(np.asarray(K))
        e0 = np.asarray(e[0])
        exact = (vec * np.exp(-frac * np.outer(np.asarray(ts), lam))[:, None, :]) @ (vec.T @ e0)
        norm = np.linalg.norm(np.asarray(e), axis=1)
        bound = np.exp(-frac * float(mu) * np.asarray(ts)) * norm[0]
        truncated = np.all(np.asarray(sol.params.thresholds[:, 0]) > np.asarray(top), axis=1)
        arrays.update(
            {
                f"{name}/e": np.asarray(e),
                f"{name}/e_norm": norm,
                f"{name}/bound": bound,
                f"{name}/exact": exact,
                f"{name}/eigenvalues": lam,
                f"{name}/eigenvectors": vec,
                f"{name}/loss": np.asarray(sol.loss),
            }
        )
        summary[name] = {
            "Q": q,
            "mu": float(mu),
            "max_bound_violation": float(np.max(norm - bound)),
            "max_abs_error_vs_exact": float(np.max(np.abs(np.asarray(e) - exact))),
            "final_e_norm": float(norm[-1]),
            "kernel_component": float(abs(vec[:, 0] @ np.asarray(e[-1])))
            if lam[0] < 1e-12
            else None,
            "cluster_stayed_truncated": bool(truncated.all()),
            "num_steps": int(sol.num_steps),
            "seconds_including_compile": seconds,
        }
    return arrays, summary


def _run_into(cfg: SpectralGapConfig, run_dir: Path, progress: bool) -> dict:
    del progress
    arrays, summary = run_spectral_gap(cfg)
    write_run(
        run_dir,
        arrays,
        [
            {"s": float(s), **{f"{c}/e_norm": float(arrays[f"{c}/e_norm"][i]) for c in _CASES}}
            for i, s in enumerate(arrays["ts"])
        ],
    )
    for case in _CASES:
        entry = summary[case]
        print(
            f"gflow: {case} (Q = {entry['Q']}): mu = {entry['mu']:.3e}, max(|e| − bound) = "
            f"{entry['max_bound_violation']:.1e}, "
            f"|e − e_exact| ≤ {entry['max_abs_error_vs_exact']:.1e}"
        )
    return summary


_CASES = ("injective", "not_injective")


def _figures(run_dir: Path) -> list[Path]:
    plt = pyplot()
    _, cfg, summary, a, out = read_run(run_dir)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, case in zip(axes, _CASES, strict=True):
        entry = summary[case]
        ax.semilogy(a["ts"], a[f"{case}/e_norm"], "k", lw=2, label="|e(s)| along the flow")
        ax.semilogy(
            a["ts"],
            a[f"{case}/bound"],
            "tab:red",
            ls="--",
            label=r"bound $e^{-(N_j/N)\mu s}\,|e(0)|$",
        )
        ax.set_xlabel("flow time s")
        ax.set_ylabel("|e(s)|  (input units)")
        ax.set_title(
            f"{case.replace('_', ' ')}: Q = {entry['Q']}, M = {cfg['dim']}, "
            + (f"μ = {entry['mu']:.3g}" if abs(entry["mu"]) > 1e-12 else "μ = 0 (to rounding)"),
            fontsize=9,
        )
        ax.legend(fontsize=8)
    fig.suptitle(
        "Spectral gap of the standard cost: e = W⁽ℓ⁾(θ_ℓ − ỹ_j) for a fully truncated cluster, "
        f"N_j/N = {summary['N_j/N']:.2f}, d = {cfg['weight_scale']}",
        fontsize=9,
    )
    return [save_figure(fig, out / "spectral_gap.png")]


KIND = ExperimentKind(
    "spectral_gap", "spectral gap of the standard cost", SpectralGapConfig, _run_into, _figures,
    main_figure="spectral_gap.png",
)  # fmt: skip
