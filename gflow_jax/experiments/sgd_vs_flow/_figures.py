"""Figures of an ``sgd_vs_flow`` run, drawn from its run directory alone (never re-simulated)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ...io import pyplot, save_figure
from .._arrays import read_run


def _trajectories(arrays: dict) -> list[str]:
    names = sorted({k.rsplit("/", 1)[0] for k in arrays if k.endswith("/loss")})
    gd = sorted((n for n in names if n.startswith("gd/")), key=_eta, reverse=True)
    sgd = sorted((n for n in names if n.startswith("sgd/")), key=lambda n: (-_eta(n), _batch(n)))
    return ["flow", *gd, *sgd]


def _eta(name: str) -> float:
    return float(name.split("eta=", 1)[1].split(",", 1)[0])


def _batch(name: str) -> int:
    return int(name.split("B=", 1)[1])


def _style(name: str, etas: list[float], batches: list[int]) -> dict:
    plt = pyplot()
    if name == "flow":
        return {"color": "k", "lw": 2.4, "label": "gradient flow (diffrax)", "zorder": 5}
    if name.startswith("gd/"):
        i = etas.index(_eta(name))
        return {
            "color": plt.cm.Blues(0.45 + 0.5 * i / max(len(etas) - 1, 1)),
            "lw": 1.4,
            "ls": "--",
            "label": f"GD η={_eta(name):g}",
        }
    i = etas.index(_eta(name))
    j = batches.index(_batch(name))
    return {
        "color": plt.cm.Oranges(0.45 + 0.5 * i / max(len(etas) - 1, 1)),
        "lw": 1.0,
        "ls": ("-", ":", "-.", (0, (5, 1)))[j % 4],
        "alpha": 0.9,
        "label": f"SGD η={_eta(name):g}, B={_batch(name)}",
    }


def _collapse_labels(cfg: dict) -> tuple[str, str, str]:
    """NC3's and NC4's panel titles and the ideal values, in the run's recorded convention
    (runs recorded before ``[collapse]`` existed used the toolkit's)."""
    c = {"global_mean": "class_means", "ddof": 0, "nc3": "norm", "nc4": "agreement"}
    c.update({k: v for k, v in cfg.get("collapse", {}).items() if v not in ("", -1)})
    nc3 = "NC3 ‖W/‖W‖ − M̄/‖M̄‖‖" + ("²" if c["nc3"] == "squared" else "")
    agree = c["nc4"] == "agreement"
    nc4 = f"NC4 nearest-centre {'=' if agree else '≠'} argmax (fraction)"
    mean = "mean of class means" if c["global_mean"] == "class_means" else "mean of features"
    ideal = f"ideal: 0, 0, 0, 0, 0, {1 if agree else 0}; μ_G = {mean}, ddof = {c['ddof']}"
    return nc3, nc4, ideal


def _subtitle(cfg: dict) -> str:
    d, n = cfg["data"], cfg["network"]
    N = d["n_classes"] * d["points_per_class"]
    return f"N={N}, M={d['dim']}, Q={d['n_classes']}, L={n['layers']}, init={n['init']}"


class _Series(NamedTuple):
    """How a saved series (``<trajectory>/<key>`` of ``arrays.npz``) is drawn in its panel."""

    title: str
    ylabel: str
    log: bool = True  # non-positive values are left out on the log axis
    reduce: Callable = np.max  # a per-layer series: reduced over the layers


#: every series drawn in the time-series figures (:data:`_FIGURES`), declared once; the titles of
#: NC3 and NC4 follow the run's collapse convention (:func:`_collapse_labels`)
_SERIES = {
    "loss": _Series("cost C", "cost C"),
    "accuracy": _Series("training accuracy", "accuracy", log=False),
    "gap_to_flow": _Series("‖θ(s) − θ_flow(s)‖ (all parameters)", "‖θ − θ_flow‖"),
    "nc1_input": _Series("NC1 in input space (truncated data x̃)", "NC1_in"),
    "nc1": _Series("NC1 = tr(Σ_W Σ_B⁺)/Q on x⁽ᴸ⁾", "NC1"),
    "nc2_equinorm": _Series("NC2 equinorm: CV of ‖μ_c − μ_G‖", "CV of the norms"),
    "nc2_maxangle": _Series("NC2 equiangle: mean |cos + 1/(Q−1)|", "angle defect"),
    "nc3": _Series("NC3", "NC3"),
    "nc4": _Series("NC4", "fraction of points", log=False),
    "truncated_fraction": _Series(
        "truncated (point, unit) pairs / (N·L·M)", "fraction of pairs", log=False
    ),
    "mean_rank": _Series("mean rank of ∂x̃/∂x (M = fully free, 0 = pinned)", "mean rank", log=False),
    "fully_truncated": _Series("points pinned (rank 0)", "points", log=False),
    "offdiag": _Series(
        "max_ℓ ‖offdiag W⁽ℓ⁾W⁽ℓ⁾ᵀ‖_F/‖W⁽ℓ⁾W⁽ℓ⁾ᵀ‖_F (0 = adapted)", "off-diagonal ratio", log=False
    ),
    "min_singular": _Series("min_ℓ σ_min(W⁽ℓ⁾)", "σ_min", reduce=np.min),
    "balance_drift": _Series("balance drift max|Δ_{ℓ,k}(s) − Δ_{ℓ,k}(0)|", "max |Δ(s) − Δ(0)|"),
}

#: the time-series figures: file, title (``{sub}``: the run's subtitle, ``{ideal}``: the ideal
#: values of the collapse measures) and the series of its panels, in order
_FIGURES = (
    (
        "loss.png",
        "Full network: gradient flow vs GD vs SGD on the clock s = η·k\n{sub}",
        ("loss", "accuracy", "gap_to_flow"),
    ),
    (
        "collapse.png",
        "Neural collapse ({ideal})\n{sub}",
        ("nc1_input", "nc1", "nc2_equinorm", "nc2_maxangle", "nc3", "nc4"),
    ),
    (
        "truncation.png",
        "Truncation in input space, adaptedness and the balance law\n{sub}",
        (
            "truncated_fraction",
            "mean_rank",
            "fully_truncated",
            "offdiag",
            "min_singular",
            "balance_drift",
        ),
    ),
)

S_LABEL = "flow time s = η·k"


def _legend_below(fig, handles, labels) -> None:
    fig.tight_layout()
    fig.legend(
        handles, labels, loc="upper center", bbox_to_anchor=(0.5, 0.0),
        ncol=min(len(labels), 5), fontsize=8, frameon=False,
    )  # fmt: skip


def _series_panels(a, ts, names, styles, keys, titles, fig_title, path, ncols=3):
    """One panel per series ``keys`` (:data:`_SERIES`; ``titles`` overrides panel titles)."""
    plt = pyplot()
    nrows = -(-len(keys) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.4 * nrows), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=False):
        series = _SERIES[key]
        for name in names:
            y = np.asarray(a[f"{name}/{key}"], dtype=float)
            if y.ndim > 1:  # per layer
                y = series.reduce(y.reshape(len(ts), -1), axis=-1)
            if series.log:
                y = np.where(y > 0, y, np.nan)
            ax.plot(ts, y, **styles[name])
        ax.set_title(titles.get(key, series.title), fontsize=9)
        ax.set_xlabel(S_LABEL)
        ax.set_ylabel(series.ylabel)
        if series.log:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(keys) :]:
        ax.axis("off")
    fig.suptitle(fig_title, fontsize=10)
    _legend_below(fig, *axes[0, 0].get_legend_handles_labels())
    return save_figure(fig, path, dpi=110, layout=False)


def plot_sgd_vs_flow_run(run_dir: str | Path) -> list[Path]:
    """Write the run's figures into ``run_dir/figures`` and return their paths."""
    plt = pyplot()
    _, cfg, _, a, out = read_run(run_dir)
    ts = a["ts"]
    names = _trajectories(a)
    etas = sorted({_eta(n) for n in names if n != "flow"}, reverse=True)
    batches = sorted({_batch(n) for n in names if n.startswith("sgd/")})
    styles = {n: _style(n, etas, batches) for n in names}
    sub = _subtitle(cfg)
    nc3_title, nc4_title, ideal = _collapse_labels(cfg)
    titles = {"nc3": nc3_title, "nc4": nc4_title}
    paths = [
        _series_panels(
            a, ts, names, styles, keys, titles, title.format(sub=sub, ideal=ideal), out / fname
        )
        for fname, title, keys in _FIGURES
    ]

    # discrepancy to the flow vs η
    fig, ax = plt.subplots(figsize=(5.6, 4.2))
    gd = [n for n in names if n.startswith("gd/")]
    all_etas = sorted({_eta(n) for n in names if n != "flow"})
    if gd:
        e = np.array([_eta(n) for n in gd])
        g = np.array([a[f"{n}/gap_to_flow"].max() for n in gd])
        order = (
            f", fitted order {np.polyfit(np.log(e), np.log(g), 1)[0]:.2f}" if len(gd) > 1 else ""
        )
        ax.loglog(e, g, "o-", color="tab:blue", label=f"GD (full batch){order}")
        if len(gd) >= 2:
            ax.loglog(e, g[-1] * (e / e[-1]), "k:", lw=1, label="guide: slope 1 (first order)")
    for b in batches:
        sg = [n for n in names if n.startswith("sgd/") and _batch(n) == b]
        ax.loglog(
            [_eta(n) for n in sg],
            [a[f"{n}/gap_to_flow"].max() for n in sg],
            "s--",
            label=f"SGD B={b}",
        )
    ax.set_xticks(all_etas, [f"{v:g}" for v in all_etas])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel("step size η")
    ax.set_ylabel("max_s ‖θ(s) − θ_flow(s)‖")
    ax.set_title(f"Discrepancy to the gradient flow\n{sub}", fontsize=9)
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "discrepancy.png", dpi=110))

    # truncated data in input space at s = 0 and s = t_final
    x, labels = a["data/x"], a["data/labels"]
    shown = ["flow"] + [n for n in names if n.startswith("sgd/")][:1]
    fig, axes = plt.subplots(len(shown), 2, figsize=(8.2, 3.9 * len(shown)), squeeze=False)
    for row, name in zip(axes, shown, strict=True):
        # limits: the data and this trajectory's final x̃ (early x̃ may lie outside)
        final = np.concatenate([x, a[f"{name}/x_tilde"][-1]])
        lo, hi = final.min(0), final.max(0)
        pad = 0.1 * (hi - lo).max()
        for ax, i in zip(row, (0, len(ts) - 1), strict=True):
            xt = a[f"{name}/x_tilde"][i]
            ax.scatter(x[:, 0], x[:, 1], c="0.85", s=10, label="data x")
            ax.scatter(xt[:, 0], xt[:, 1], c=labels, cmap="viridis", s=14, label="truncated x̃")
            ax.set_title(
                f"{name}, s = {ts[i]:.3g}: NC1_in = {a[f'{name}/nc1_input'][i]:.3g}, "
                f"mean rank {a[f'{name}/mean_rank'][i]:.2f}",
                fontsize=8,
            )
            ax.set_xlim(lo[0] - pad, hi[0] + pad)
            ax.set_ylim(lo[1] - pad, hi[1] + pad)
            ax.set_xlabel("input coordinate x₁")
            ax.set_ylabel("input coordinate x₂")
    axes[0, 0].legend(fontsize=7)
    note = "" if x.shape[1] == 2 else " (first two input coordinates)"
    fig.suptitle(f"Truncated data x̃ in input space{note}\n{sub}", fontsize=10)
    paths.append(save_figure(fig, out / "input_space.png", dpi=110))
    return paths
