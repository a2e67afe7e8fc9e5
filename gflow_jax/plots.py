"""Figures of a truncation run, drawn from its run directory (never re-simulated)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .runs import load_arrays  # noqa: E402

__all__ = ["plot_truncation_run"]


def _trajectories(arrays: dict) -> list[str]:
    names = sorted({k.rsplit("/", 1)[0] for k in arrays if k.endswith("/loss")})
    return ["flow"] + [n for n in names if n != "flow"]


def _style(name: str) -> dict:
    if name == "flow":
        return {"color": "k", "lw": 2.2, "label": "effective flow (diffrax)"}
    if name == "sgd":
        return {"color": "tab:red", "lw": 1.0, "alpha": 0.8, "label": "SGD (optax)"}
    return {"lw": 1.2, "ls": "--", "label": f"GD {name.split('/', 1)[1]} (optax)"}


def _subtitle(cfg: dict) -> str:
    d, n, f = cfg["data"], cfg["network"], cfg["flow"]
    return (
        f"N={d['n_classes'] * d['points_per_class']}, M={d['dim']}, Q={d['n_classes']}, "
        f"L={n['layers']}, |d|={n['weight_scale']}, mode={f['mode']}, cost={f['cost']}"
    )


def _draw_faces(ax, frame: np.ndarray, thresholds: np.ndarray, d: np.ndarray, lim) -> None:
    """Face {x : (O x)_k = c_{ℓ,k}} of every unit, in the plane of the first two input axes."""
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    t = np.linspace(-1e3, 1e3, 2)
    for layer in range(thresholds.shape[0]):
        for k in range(thresholds.shape[1]):
            normal = frame[k, :2]
            if np.linalg.norm(normal) < 1e-12:
                continue
            point = thresholds[layer, k] * normal / (normal @ normal)
            direction = np.array([-normal[1], normal[0]])
            line = point[None, :] + t[:, None] * direction[None, :]
            ax.plot(
                line[:, 0],
                line[:, 1],
                color=colors[layer % len(colors)],
                lw=1.0,
                ls="-" if d[layer, k] > 0 else ":",
                label=f"layer {layer + 1} faces ({'below' if d[layer, k] > 0 else 'above'})"
                if k == 0
                else None,
            )
    ax.set_xlim(*lim[0])
    ax.set_ylim(*lim[1])


def plot_truncation_run(run_dir: str | Path) -> list[Path]:
    """Write the run's figures into ``run_dir/figures`` and return their paths."""
    run_dir = Path(run_dir)
    cfg = json.loads((run_dir / "config.json").read_text())
    a = load_arrays(run_dir)
    out = run_dir / "figures"
    out.mkdir(exist_ok=True)
    ts, x, labels = a["ts"], a["data/x"], a["data/labels"]
    paths = []

    # 1. data in input space at several flow times, faces drawn
    n_snap = min(int(cfg["output"]["snapshots"]), len(ts))
    # s = 0, then log-spaced times: truncation is fast early and exponential later
    later = np.geomspace(max(ts[1], ts[-1] / 64), ts[-1], max(n_snap - 1, 1))
    idx = np.unique(np.concatenate([[0], np.searchsorted(ts, later).clip(0, len(ts) - 1)]))
    pad = 0.15 * (x.max(0) - x.min(0)).max()
    lim = [(x[:, 0].min() - pad, x[:, 0].max() + pad), (x[:, 1].min() - pad, x[:, 1].max() + pad)]
    fig, axes = plt.subplots(1, len(idx), figsize=(3.6 * len(idx), 3.8), squeeze=False)
    for ax, i in zip(axes[0], idx, strict=True):
        ax.scatter(x[:, 0], x[:, 1], c="0.85", s=10, label="data x")
        xt = a["flow/x_tilde"][i]
        ax.scatter(xt[:, 0], xt[:, 1], c=labels, cmap="coolwarm", s=12, label="truncated x̃")
        ax.scatter(
            *a["targets"][:, :2].T,
            marker="*",
            s=120,
            c="gold",
            edgecolor="k",
            label="targets ỹ",
            zorder=5,
        )
        _draw_faces(ax, a["frame"], a["flow/thresholds"][i], a["flow/d"][i], lim)
        ax.set_title(f"s = {ts[i]:.3g}, truncated {a['flow/n_truncated'][i]}/{len(x)}")
        ax.set_aspect("equal", adjustable="box")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    note = "" if x.shape[1] == 2 else " (first two input coordinates)"
    fig.suptitle(f"Dynamical truncation in input space{note}\n{_subtitle(cfg)}", fontsize=10)
    fig.tight_layout()
    paths.append(out / "truncation_snapshots.png")
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    # 2. cost and 3. truncated points vs s
    for key, fname, ylabel, log in (
        ("loss", "cost.png", "cost C_in" if cfg["flow"]["cost"] == "input" else "cost C", True),
        ("n_truncated", "truncated_counts.png", "points truncated", False),
        ("nc1", "nc1.png", "NC1 in input space", True),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in _trajectories(a):
            y = a[f"{name}/{key}"]
            if log:
                y = np.where(y > 0, y, np.nan)
            ax.plot(ts, y, **_style(name))
        ax.set_xlabel("flow time s = η·k")
        ax.set_ylabel(ylabel)
        if log:
            ax.set_yscale("log")
        ax.set_title(_subtitle(cfg), fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        paths.append(out / fname)
        fig.savefig(paths[-1], dpi=120)
        plt.close(fig)
    return paths
