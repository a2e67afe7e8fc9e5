"""Figures of a ``magnitude_generalization`` run, from its run directory only."""

from __future__ import annotations

from pathlib import Path

from ...io import load_arrays, pyplot, read_json, save_figure
from ._table import GAPS

_SCATTER = (
    "traj_euclidean_mag_dim_max",
    "traj_loss_mag_dim_max",
    "traj_euclidean_pmag_sqrt_n",
    "traj_loss_pmag_sqrt_n",
    "traj_euclidean_e_alpha",
    "traj_loss_e_alpha",
    "traj_euclidean_ph_dim",
    "traj_loss_ph_dim",
)


def _load_results(run_dir: Path) -> tuple[dict, list[dict]]:
    cfg = read_json(run_dir / "config.json")
    results = []
    for path in sorted((run_dir / "points").glob("*/result.json")):
        r = read_json(path)
        if r.get("status") == "ok":
            results.append(r)
    return cfg, results


def _colours(values, cmap):
    plt = pyplot()
    vals = sorted(set(values))
    cm = plt.get_cmap(cmap)
    return {v: cm(i / max(len(vals) - 1, 1)) for i, v in enumerate(vals)}


class _Style:
    """Colours by learning rate and batch size, line styles by batch size, the subtitle."""

    def __init__(self, cfg: dict, results: list[dict]):
        self.lr = _colours([r["lr"] for r in results], "viridis")
        self.bs = _colours([r["batch_size"] for r in results], "plasma")
        line_styles = ("-", "--", ":", "-.")
        batch_sizes = sorted({r["batch_size"] for r in results})
        self.ls = {bs: line_styles[i % 4] for i, bs in enumerate(batch_sizes)}
        self.sub = (
            f"{cfg['data']['source']}, MLP {cfg['model']['hidden']}, "
            f"{cfg['training']['optimizer']}, K = {cfg['trajectory']['n_iterates']} "
            f"({cfg['trajectory']['mode']})"
        )

    def line(self, r: dict, lw: float) -> dict:
        return {"color": self.lr[r["lr"]], "ls": self.ls[r["batch_size"]], "lw": lw, "alpha": 0.8}


def _magnitude_curves(cfg, results, curves, st: _Style, fig_dir: Path) -> Path:
    """Magnitude functions and dimension profiles of every trajectory, per metric."""
    plt = pyplot()
    metrics = cfg["measures"]["metrics"]
    fig, axes = plt.subplots(2, len(metrics), figsize=(5.5 * len(metrics), 8), squeeze=False)
    for j, metric in enumerate(metrics):
        for r in results:
            c = curves[r["id"]]
            diam = r["measures"][f"traj_{metric}_diameter"]
            kw = st.line(r, 0.9)
            axes[0, j].loglog(c[f"{metric}/scales"] * diam, c[f"{metric}/magnitude"], **kw)
            axes[1, j].semilogx(c[f"{metric}/scales"] * diam, c[f"{metric}/dimension"], **kw)
        name = "Euclidean (weights)" if metric == "euclidean" else "ρ_S (losses)"
        axes[0, j].set(title=f"trajectory magnitude, {name}", ylabel="|tX|")
        axes[1, j].set(xlabel="t · diam", ylabel="dim(t) = d log|tX| / d log t")
    for lr, col in st.lr.items():
        axes[0, 0].plot([], [], color=col, label=f"lr {lr:g}")
    for bs, ls in st.ls.items():
        axes[0, 0].plot([], [], color="k", ls=ls, label=f"bs {bs}")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Magnitude of training trajectories — {st.sub}", fontsize=10)
    return save_figure(fig, fig_dir / "magnitude_curves.png")


def _measure_vs_gap(cfg, results, table, st: _Style, fig_dir: Path) -> list[Path]:
    """Each headline measure against each gap, coloured by learning rate and by batch size."""
    plt = pyplot()
    paths = []
    names = [n for n in _SCATTER if n in table]
    layers = cfg["trajectory"]["probe_layers"]
    if layers and f"repr_L{layers[-1]}_mag_dim_max" in table:
        names.append(f"repr_L{layers[-1]}_mag_dim_max")
    for gap in GAPS:
        fig, axes = plt.subplots(2, len(names), figsize=(3.3 * len(names), 6.4), squeeze=False)
        for j, n in enumerate(names):
            x = [r["measures"][n] for r in results]
            y = [r[gap] for r in results]
            for i, (key, cols) in enumerate((("lr", st.lr), ("batch_size", st.bs))):
                axes[i, j].scatter(x, y, c=[cols[r[key]] for r in results], s=18)
                axes[i, j].set_xlabel(n, fontsize=7)
            row = table[n]
            axes[0, j].set_title(
                f"τ={row[f'tau[{gap}]']:.2f}  Ψ={row[f'Psi[{gap}]']:.2f}  "
                f"τ|H={row[f'tau_given[{gap}]']:.2f}",
                fontsize=8,
            )
        axes[0, 0].set_ylabel(f"{gap} (colour: lr)")
        axes[1, 0].set_ylabel(f"{gap} (colour: batch size)")
        for lr, col in st.lr.items():
            axes[0, -1].scatter([], [], color=col, label=f"lr {lr:g}")
        for bs, col in st.bs.items():
            axes[1, -1].scatter([], [], color=col, label=f"bs {bs}")
        axes[0, -1].legend(fontsize=6)
        axes[1, -1].legend(fontsize=6)
        fig.suptitle(f"Measures vs generalisation gap ({gap}) — {st.sub}", fontsize=10)
        paths.append(save_figure(fig, fig_dir / f"measure_vs_{gap}.png"))
    return paths


def _monitoring(cfg, results, curves, early, st: _Style, fig_dir: Path) -> Path:
    """Windowed trajectory dimension, probe-representation dimension and the accuracy gap during
    training, and τ(window dimension at a step, final gap)."""
    plt = pyplot()
    layers = cfg["trajectory"]["probe_layers"]
    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    for r in results:
        c = curves[r["id"]]
        kw = st.line(r, 0.8)
        axes[0].plot(c["window/steps"], c["window/mag_dim_max"], **kw)
        if layers:
            key = f"representations/layer{layers[-1]}/mag_dim_max"
            axes[1].plot(c["monitor_steps"], c[key], **kw)
        axes[2].plot(c["monitor_steps"], c["monitor/train_acc"] - c["monitor/test_acc"], **kw)
    axes[0].set(
        xlabel="step",
        ylabel="max dim",
        title=f"window of {cfg['measures']['monitor_window']} checkpoints (Euclidean)",
    )
    if layers:
        axes[1].set(
            xlabel="step", ylabel="max dim", title=f"probe representations, layer {layers[-1]}"
        )
    axes[2].set(xlabel="step", ylabel="train acc − test acc", title="accuracy gap during training")
    for gap in GAPS:
        if early.get("steps"):
            axes[3].plot(early["steps"], early[f"tau[{gap}]"], marker=".", label=gap)
    axes[3].axhline(0, color="k", lw=0.5)
    axes[3].set(
        xlabel="step",
        ylabel=f"Kendall τ_{cfg.get('statistics', {}).get('kendall_variant', 'b')}",
        title="τ(window dim at step, final gap)",
        ylim=(-1, 1),
    )
    axes[3].legend(fontsize=8)
    fig.suptitle(f"Monitoring during training — {st.sub}", fontsize=10)
    return save_figure(fig, fig_dir / "monitoring.png")


def _statistics(rows: list[dict], statistics: dict, st: _Style, fig_dir: Path) -> Path:
    """τ, Ψ and τ given (lr, bs) of every measure with their bootstrap intervals, per gap."""
    plt = pyplot()
    names = [r["measure"] for r in rows]
    fig, axes = plt.subplots(1, len(GAPS), figsize=(13, 0.28 * len(names) + 1.8), sharey=True)
    y = list(range(len(names)))
    for ax, gap in zip(axes, GAPS, strict=True):
        for k, (q, colour) in enumerate((("tau", "C0"), ("Psi", "C2"), ("tau_given", "C3"))):
            v = [r[f"{q}[{gap}]"] for r in rows]
            lo = [r[f"{q}[{gap}]"] - r[f"{q}_lo[{gap}]"] for r in rows]
            hi = [r[f"{q}_hi[{gap}]"] - r[f"{q}[{gap}]"] for r in rows]
            yy = [i + (k - 1) * 0.25 for i in y]
            ax.errorbar(v, yy, xerr=[lo, hi], fmt="o", ms=3, lw=1, color=colour, label=q)
        ax.axvline(0, color="k", lw=0.6)
        ax.set(title=gap, xlim=(-1, 1), xlabel=f"Kendall τ_{statistics['kendall_variant']}")
    axes[0].set_yticks(y, names, fontsize=7)
    axes[0].invert_yaxis()
    axes[0].legend(fontsize=7, loc="lower left")
    fig.suptitle(
        f"Kendall statistics with {statistics['level']:.0%} bootstrap intervals "
        f"({statistics['n_bootstrap']} resamples); τ_given: conditional on (lr, batch size) — "
        f"{st.sub}",
        fontsize=9,
    )
    return save_figure(fig, fig_dir / "statistics.png")


def plot_magnitude_generalization(run_dir: str | Path) -> list[Path]:
    """Log-log magnitude curves, measure-vs-gap scatter (coloured by lr and by batch size),
    monitoring curves and the Kendall statistics with intervals of a ``magnitude_generalization``
    run directory."""
    run_dir = Path(run_dir)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    cfg, results = _load_results(run_dir)
    if not results:
        return []
    curves = {r["id"]: load_arrays(run_dir / "points" / r["id"] / "curves.npz") for r in results}
    correlations = read_json(run_dir / "correlations.json")
    table = {row["measure"]: row for row in correlations["table"]}
    st = _Style(cfg, results)
    return [
        _magnitude_curves(cfg, results, curves, st, fig_dir),
        *_measure_vs_gap(cfg, results, table, st, fig_dir),
        _monitoring(cfg, results, curves, correlations.get("early_warning", {}), st, fig_dir),
        _statistics(correlations["table"], correlations["statistics"], st, fig_dir),
    ]
