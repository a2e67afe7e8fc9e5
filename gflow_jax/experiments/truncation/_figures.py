"""Figures of a truncation run, drawn from its run directory (never re-simulated)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...io import pyplot, save_figure
from .._arrays import read_run, trajectory_prefixes
from ._analysis import write_analysis
from ._magnitude import plot_truncated_magnitude


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
        f"L={n['layers']}, "
        + (f"d={n['d']}" if n.get("d") else f"|d|={n['weight_scale']}")
        + f", mode={f['mode']}, cost={f['cost']}"
    )


def _draw_faces(ax, frame: np.ndarray, thresholds: np.ndarray, d: np.ndarray, lim) -> None:
    """Face {x : (O x)_k = c_{ℓ,k}} of every unit, in the plane of the first two input axes."""
    plt = pyplot()
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
    run_dir, cfg, _, a, out = read_run(run_dir)
    ts, x, labels = a["ts"], a["data/x"], a["data/labels"]
    paths = []

    # 1. data in input space at several flow times, faces drawn
    n_snap = min(int(cfg["output"]["snapshots"]), len(ts))
    # s = 0, then log-spaced times: truncation is fast early and exponential later
    later = np.geomspace(max(ts[1], ts[-1] / 64), ts[-1], max(n_snap - 1, 1))
    idx = np.unique(np.concatenate([[0], np.searchsorted(ts, later).clip(0, len(ts) - 1)]))
    pad = 0.15 * (x.max(0) - x.min(0)).max()
    lim = [(x[:, 0].min() - pad, x[:, 0].max() + pad), (x[:, 1].min() - pad, x[:, 1].max() + pad)]
    plt = pyplot()
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
    paths.append(save_figure(fig, out / "truncation_snapshots.png"))

    # 2. cost and 3. truncated points vs s
    for key, fname, ylabel, log in (
        ("loss", "cost.png", "cost C_in" if cfg["flow"]["cost"] == "input" else "cost C", True),
        ("n_truncated", "truncated_counts.png", "points truncated", False),
        ("nc1", "nc1.png", "NC1 in input space", True),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        for name in trajectory_prefixes(a):
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
        paths.append(save_figure(fig, out / fname))
    paths.extend(plot_truncation_analysis(run_dir))
    if cfg.get("magnitude", {}).get("enabled", False):
        paths.extend(plot_truncated_magnitude(run_dir))
    return paths


def plot_truncation_analysis(run_dir: str | Path) -> list[Path]:
    """Rates against n, event times, and per-cluster spread with NC1 (``figures/``)."""
    run_dir = Path(run_dir)
    summary, t = write_analysis(run_dir)
    if "flow" not in summary:
        return []
    _, cfg, _, a, out = read_run(run_dir)
    paths = []

    plt = pyplot()
    # measured vs predicted rate, one point per inter-event interval of the flow
    fig, ax = plt.subplots(figsize=(6, 4.2))
    n, fit, pred = t["analysis/flow/rates/count"], t["analysis/flow/rates/fitted"], None
    pred = t["analysis/flow/rates/predicted"]
    ax.scatter(n, fit, s=28, c="k", label="fitted on an inter-event interval (flow)", zorder=3)
    ax.scatter(n, pred, s=80, facecolors="none", edgecolors="tab:orange", label="predicted")
    ax.set_xlabel("owned points n of the face")
    ax.set_ylabel("rate  −d/ds log|c − ȳ|")
    err = summary["flow"]["max_rel_rate_error"]
    rule = "(1+c²) n/(N d²)" if cfg["flow"]["mode"] == "joint" else "n/(N d²)"
    ax.set_title(
        f"rates vs prediction {rule}; max rel. error {err:.1e}\n{_subtitle(cfg)}"
        if err is not None
        else _subtitle(cfg),
        fontsize=9,
    )
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "rates.png"))

    # event times of every trajectory
    names = [p for p in trajectory_prefixes(a) if p in summary]
    fig, ax = plt.subplots(figsize=(6.5, 0.5 + 0.45 * len(names) + 1.5))
    for i, name in enumerate(names):
        ev = summary[name]["event_times"]
        ax.eventplot([ev], lineoffsets=i, linelengths=0.7, colors=_style(name).get("color", None))
    ax.set_yticks(range(len(names)), [_style(p)["label"] for p in names], fontsize=8)
    ax.set_xlabel("flow time s = η·k")
    ax.set_title(f"crossing (event) times\n{_subtitle(cfg)}", fontsize=9)
    paths.append(save_figure(fig, out / "events.png"))

    # per-cluster spread (max over coordinates) and NC1 of the flow, log axis
    ts = a["ts"]
    spread = t["analysis/flow/spread"].max(-1)  # (T, Q)
    fig, ax = plt.subplots(figsize=(6, 4))
    for j in range(spread.shape[1]):
        y = np.where(spread[:, j] > 0, spread[:, j], np.nan)
        ax.plot(ts, y, label=f"cluster {j}: max_k spread (0 after complete truncation)")
    nc1 = np.where(a["flow/nc1"] > 0, a["flow/nc1"], np.nan)
    ax.plot(ts, nc1, "k--", label="NC1 in input space")
    ax.set_yscale("log")
    ax.set_xlabel("flow time s")
    ax.set_title(f"collapse of the clusters (flow)\n{_subtitle(cfg)}", fontsize=9)
    ax.legend(fontsize=7)
    paths.append(save_figure(fig, out / "collapse.png"))

    # two-sided clamps: a face from below and a later one from above on the same coordinate
    d, c = a["flow/d"][0], a["flow/thresholds"]  # (L, M), (T, L, M)
    pairs = [
        (k, int(np.flatnonzero(d[:, k] > 0)[0]), int(np.flatnonzero(d[:, k] < 0)[-1]))
        for k in range(d.shape[1])
        if (d[:, k] > 0).any()
        and (d[:, k] < 0).any()
        and np.flatnonzero(d[:, k] > 0)[0] < np.flatnonzero(d[:, k] < 0)[-1]
    ]
    if pairs:
        fig, ax = plt.subplots(figsize=(6, 4))
        for k, lo, hi in pairs:
            width = c[:, hi, k] - c[:, lo, k]
            ax.plot(ts, np.where(width > 0, width, np.nan), label=f"coordinate {k}: c₂ − c₁")
            n = t["analysis/flow/cluster_counts"][-1].sum(-1)  # (L, M) owned at the end
            lam1 = n[lo, k] / (len(a["data/x"]) * d[lo, k] ** 2)
            lam2 = n[hi, k] / (len(a["data/x"]) * d[hi, k] ** 2)
            late = ts >= ts[-1] / 2
            basis = np.stack([np.exp(-lam1 * ts[late]), np.exp(-lam2 * ts[late])], axis=1)
            coef, *_ = np.linalg.lstsq(basis, width[late], rcond=None)
            ax.plot(
                ts[late],
                basis @ coef,
                "k:",
                label=f"fit A e^(−λ₁s) + B e^(−λ₂s), λ₁={lam1:.3g}, λ₂={lam2:.3g}",
            )
        ax.set_yscale("log")
        ax.set_xlabel("flow time s")
        ax.set_ylabel("width of the two-sided clamp")
        ax.set_title(f"two-sided clamps (flow)\n{_subtitle(cfg)}", fontsize=9)
        ax.legend(fontsize=7)
        paths.append(save_figure(fig, out / "two_sided_width.png"))
    return paths
