"""Figures of a truncation run, drawn from its run directory (never re-simulated).

Every figure has labelled axes with their units (flow time s = η·k, input coordinates x₁, x₂).
Where GD, SGD and the flow coincide at plotting resolution (cost, truncated counts, NC1) a
second panel shows each descent's difference to the flow, on a log axis where it is a positive
quantity. A figure whose premise does not hold for the run is not drawn (``two_sided_width.png``
only for a cluster clamped from both sides on one coordinate, in bias mode; ``sliding.png``
only for a face that sticks, with ``flow.compare_exact``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...io import pyplot, save_figure, time_axis
from .._arrays import read_run, trajectory_prefixes
from ._analysis import write_analysis
from ._magnitude import plot_truncated_magnitude
from ._sliding import plot_sliding

S_LABEL = "flow time s = η·k"


def _style(name: str) -> dict:
    plt = pyplot()
    if name == "flow":
        return {"color": "k", "lw": 2.2, "label": "effective flow (diffrax)", "zorder": 5}
    if name == "exact":
        return {"color": "gold", "lw": 1.3, "ls": (0, (4, 2)), "label": "exact solution "
                "(event-driven)", "zorder": 6}  # fmt: skip
    if name == "sgd":
        return {"color": "tab:red", "lw": 1.0, "alpha": 0.85, "label": "SGD (optax)"}
    eta = name.split("=", 1)[1]
    shade = plt.cm.Blues(0.55 + 0.4 * min(float(eta) / 0.1, 1.0))
    return {"color": shade, "lw": 1.4, "ls": "--", "label": f"GD η = {eta} (optax)"}


def _subtitle(cfg: dict) -> str:
    d, n, f = cfg["data"], cfg["network"], cfg["flow"]
    return (
        f"N={d['n_classes'] * d['points_per_class']}, M={d['dim']}, Q={d['n_classes']}, "
        f"L={n['layers']}, "
        + (f"d={n['d']}" if n.get("d") else f"|d|={n['weight_scale']}")
        + f", mode={f['mode']}, cost={f['cost']}"
    )


def _positive(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=float)
    return np.where(y > 0, y, np.nan)


def _draw_faces(ax, frame: np.ndarray, thresholds: np.ndarray, d: np.ndarray, lim) -> None:
    """Face {x : (O x)_k = c_{ℓ,k}} of every unit, in the plane of the first two input axes."""
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:purple")
    t = np.linspace(-1e3, 1e3, 2)
    for layer in range(thresholds.shape[0]):
        for k in range(thresholds.shape[1]):
            normal = frame[k, :2]
            if np.linalg.norm(normal) < 1e-12:
                continue
            point = thresholds[layer, k] * normal / (normal @ normal)
            direction = np.array([-normal[1], normal[0]])
            line = point[None, :] + t[:, None] * direction[None, :]
            side = "from below" if d[layer, k] > 0 else "from above"
            ax.plot(
                line[:, 0],
                line[:, 1],
                color=colors[layer % len(colors)],
                lw=1.1,
                ls="-" if d[layer, k] > 0 else ":",
                label=f"layer {layer + 1} faces (truncate {side})" if k == 0 else None,
            )
    ax.set_xlim(*lim[0])
    ax.set_ylim(*lim[1])


def _snapshots(a: dict, cfg: dict, out: Path) -> Path:
    """The data, the truncated data x̃ and the faces at s = 0 and log-spaced later times."""
    plt = pyplot()
    ts, x, labels = a["ts"], a["data/x"], a["data/labels"]
    n_snap = min(int(cfg["output"]["snapshots"]), len(ts))
    later = np.geomspace(max(ts[1], ts[-1] / 64), ts[-1], max(n_snap - 1, 1))
    idx = np.unique(np.concatenate([[0], np.searchsorted(ts, later).clip(0, len(ts) - 1)]))
    pad = 0.15 * (x.max(0) - x.min(0)).max()
    lim = [(x[:, 0].min() - pad, x[:, 0].max() + pad), (x[:, 1].min() - pad, x[:, 1].max() + pad)]
    fig, axes = plt.subplots(1, len(idx), figsize=(3.3 * len(idx), 3.9), squeeze=False)
    for ax, i in zip(axes[0], idx, strict=True):
        ax.scatter(x[:, 0], x[:, 1], c="0.82", s=10, label="data x")
        xt = a["flow/x_tilde"][i]
        ax.scatter(xt[:, 0], xt[:, 1], c=labels, cmap="coolwarm", s=12, label="truncated data x̃")
        ax.scatter(
            *a["targets"][:, :2].T, marker="*", s=130, c="gold", edgecolor="k",
            label="targets ỹ_j", zorder=6,
        )  # fmt: skip
        _draw_faces(ax, a["frame"], a["flow/thresholds"][i], a["flow/d"][i], lim)
        ax.set_title(f"s = {ts[i]:.3g}: {a['flow/n_truncated'][i]}/{len(x)} truncated", fontsize=9)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("input coordinate x₁")
    axes[0, 0].set_ylabel("input coordinate x₂")
    handles, names = axes[0, 0].get_legend_handles_labels()
    note = "" if x.shape[1] == 2 else " (first two input coordinates)"
    fig.suptitle(f"Dynamical truncation in input space, flow{note}\n{_subtitle(cfg)}", fontsize=10)
    fig.tight_layout()
    fig.legend(
        handles, names, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=min(len(names), 5),
        fontsize=8, frameon=False,
    )  # fmt: skip
    return save_figure(fig, out / "truncation_snapshots.png", layout=False)


def _with_difference(a, cfg, out, fname, key, ylabel, *, log: bool, relative: bool) -> Path:
    """Top: ``key`` of every trajectory. Bottom: each descent's difference to the flow —
    |y − y_flow|/|y_flow| on a log axis (``relative``) or y − y_flow (integer counts)."""
    plt = pyplot()
    ts = a["ts"]
    names = trajectory_prefixes(a)
    descents = [n for n in names if n != "flow"]
    rows = 2 if descents and "flow" in names else 1
    fig, axes = plt.subplots(
        rows, 1, figsize=(6.4, 3.2 + 2.3 * (rows - 1)), sharex=True, squeeze=False,
        gridspec_kw={"height_ratios": [3, 2][:rows]},
    )  # fmt: skip
    top = axes[0, 0]
    for name in names:
        y = a[f"{name}/{key}"]
        if log:
            top.plot(ts, _positive(y), **_style(name))
        else:
            top.step(ts, y, where="post", **_style(name))
    top.set_ylabel(ylabel)
    if log:
        top.set_yscale("log")
    top.legend(fontsize=8)
    top.set_title(_subtitle(cfg), fontsize=9)
    if rows == 2:
        bottom = axes[1, 0]
        flow = np.asarray(a[f"flow/{key}"], dtype=float)
        for name in descents:
            y = np.asarray(a[f"{name}/{key}"], dtype=float)
            if relative:  # only where the flow's value is above rounding (squared quantities)
                floor = 1e-24 * np.nanmax(np.abs(flow))
                scale = np.where(np.abs(flow) > floor, np.abs(flow), np.nan)
                bottom.plot(ts, _positive(np.abs(y - flow) / scale), **_style(name))
            else:
                bottom.step(ts, y - flow, where="post", **_style(name))
        if relative:
            bottom.set_yscale("log")
            bottom.set_ylabel("|descent − flow| / flow")
            bottom.set_xlim(ts[0], ts[-1])
        else:
            bottom.axhline(0.0, color="k", lw=0.8)
            bottom.set_ylabel("descent − flow")
            bottom.yaxis.get_major_locator().set_params(integer=True)
        bottom.set_title("difference to the effective flow (same clock)", fontsize=9)
    axes[-1, 0].set_xlabel(S_LABEL)
    if not relative:
        for ax in axes[:, 0]:
            time_axis(ax, ts)  # crossings are early: symlog time from 0
    return save_figure(fig, out / fname)


def plot_truncation_run(run_dir: str | Path) -> list[Path]:
    """Write the run's figures into ``run_dir/figures`` and return their paths."""
    run_dir, cfg, _, a, out = read_run(run_dir)
    cost = "cost C_in (input layer)" if cfg["flow"]["cost"] == "input" else "cost C"
    paths = [
        _snapshots(a, cfg, out),
        _with_difference(a, cfg, out, "cost.png", "loss", cost, log=True, relative=True),
        _with_difference(
            a, cfg, out, "truncated_counts.png", "n_truncated",
            "truncated (point, unit) pairs", log=False, relative=False,
        ),
        _with_difference(
            a, cfg, out, "nc1.png", "nc1", "NC1 in input space", log=True, relative=True
        ),
    ]  # fmt: skip
    paths.extend(plot_truncation_analysis(run_dir))
    if cfg.get("magnitude", {}).get("enabled", False):
        paths.extend(plot_truncated_magnitude(run_dir))
    return paths


def clamped_clusters(d: np.ndarray, counts: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(coordinate k, lower face ℓ₁, upper face ℓ₂, cluster j)`` for every cluster clamped
    from both sides: on coordinate k a face from below (d > 0) and a later one from above
    (d < 0) both own points, and only points of cluster j, at the end of the run.

    ``d``: ``(L, M)`` weights; ``counts``: ``(L, M, Q)`` points of each cluster owned per face."""
    found = []
    for k in range(d.shape[1]):
        below, above = np.flatnonzero(d[:, k] > 0), np.flatnonzero(d[:, k] < 0)
        if not below.size or not above.size or below[0] > above[-1]:
            continue
        lo, hi = int(below[0]), int(above[-1])
        for j in range(counts.shape[-1]):
            own_lo, own_hi = counts[lo, k], counts[hi, k]
            only_j = own_lo.sum() == own_lo[j] and own_hi.sum() == own_hi[j]
            if own_lo[j] > 0 and own_hi[j] > 0 and only_j:
                found.append((k, lo, hi, j))
    return found


def _two_sided(a, t, summary, cfg, out) -> Path | None:
    """Clamp width c₂ − c₁ of each doubly clamped cluster against the closed form
    A e^{−λ₁s} + B e^{−λ₂s}, λ = n/(N d²), fitted (A, B) after the last crossing event."""
    if cfg["flow"]["mode"] != "bias":
        return None  # the closed form is that of the bias-only flow
    d, c, ts = a["flow/d"][0], a["flow/thresholds"], a["ts"]
    counts = t["analysis/flow/cluster_counts"][-1]  # (L, M, Q)
    clamps = clamped_clusters(d, counts)
    if not clamps:
        return None
    plt = pyplot()
    n_points = len(a["data/x"])
    settled = max(summary["flow"]["event_times"], default=0.0)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for k, lo, hi, j in clamps:
        width = c[:, hi, k] - c[:, lo, k]
        ax.plot(ts, _positive(width), lw=2.6, alpha=0.6, label=f"cluster {j}, coordinate {k + 1}")
        lam1 = counts[lo, k].sum() / (n_points * d[lo, k] ** 2)
        lam2 = counts[hi, k].sum() / (n_points * d[hi, k] ** 2)
        late = (ts > settled) & (width > 1e-12 * np.abs(width).max())
        if late.sum() < 3:
            continue
        basis = np.stack([np.exp(-lam1 * ts[late]), np.exp(-lam2 * ts[late])], axis=1)
        weight = 1.0 / width[late]  # relative least squares: every decade counts
        coef, *_ = np.linalg.lstsq(basis * weight[:, None], np.ones(late.sum()), rcond=None)
        fit = basis @ coef
        off = np.max(np.abs(fit / width[late] - 1))
        ax.plot(
            ts[late], fit, ls=(0, (1, 1.5)), lw=1.4, color="k", zorder=6,
            label=f"A e^(−λ₁s) + B e^(−λ₂s), predicted λ₁ = {lam1:.3g}, λ₂ = {lam2:.3g}; "
            f"max rel. deviation {off:.1e}",
        )  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel(S_LABEL)
    ax.set_ylabel("clamp width c₂ − c₁ (input units)")
    ax.set_title(f"two-sided clamps (flow); fit after the last event\n{_subtitle(cfg)}", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, out / "two_sided_width.png")


def plot_truncation_analysis(run_dir: str | Path) -> list[Path]:
    """Rates against n, event times, per-cluster spread with NC1, and the width of two-sided
    clamps (``figures/``)."""
    run_dir = Path(run_dir)
    summary, t = write_analysis(run_dir)
    if "flow" not in summary:
        return []
    _, cfg, _, a, out = read_run(run_dir)
    ts = a["ts"]
    paths = []

    plt = pyplot()
    # measured vs predicted rate, one point per inter-event interval of the flow
    fig, ax = plt.subplots(figsize=(6.2, 4.2))
    n, fit = t["analysis/flow/rates/count"], t["analysis/flow/rates/fitted"]
    pred = t["analysis/flow/rates/predicted"]
    ax.scatter(n, fit, s=28, c="k", label="fitted on an inter-event interval (flow)", zorder=3)
    ax.scatter(n, pred, s=80, facecolors="none", edgecolors="tab:orange", label="predicted")
    ax.set_xlabel("points n owned by the face")
    ax.set_ylabel("rate −d/ds log|c − ȳ|  (per unit of s)")
    err = summary["flow"]["max_rel_rate_error"]
    rule = "(1+c²) n/(N d²)" if cfg["flow"]["mode"] == "joint" else "n/(N d²)"
    head = f"rates vs prediction {rule}"
    if err is not None:
        head += f"; max rel. error {err:.1e}"
    ax.set_title(f"{head}\n{_subtitle(cfg)}", fontsize=9)
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "rates.png"))

    # event times of every trajectory
    names = [p for p in trajectory_prefixes(a) if p in summary]
    fig, ax = plt.subplots(figsize=(6.6, 1.6 + 0.45 * len(names)))
    for i, name in enumerate(names):
        ev = summary[name]["event_times"]
        ax.eventplot([ev], lineoffsets=i, linelengths=0.7, colors=[_style(name)["color"]])
    ax.set_yticks(range(len(names)), [_style(p)["label"] for p in names], fontsize=8)
    ax.set_xlabel(S_LABEL)
    time_axis(ax, ts)
    ax.set_title(f"crossing (event) times\n{_subtitle(cfg)}", fontsize=9)
    paths.append(save_figure(fig, out / "events.png"))

    # per-cluster spread (max over coordinates) and NC1 of the flow, log axis
    spread = t["analysis/flow/spread"].max(-1)  # (T, Q)
    complete = np.asarray(summary["flow"]["complete_truncation_times"], dtype=float).max(-1)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for j in range(spread.shape[1]):
        line = ax.plot(ts, _positive(spread[:, j]), lw=1.6, label=f"cluster {j}: max_k spread")
        if np.isfinite(complete[j]):
            ax.axvline(complete[j], color=line[0].get_color(), ls=":", lw=1.0)
    ax.plot(ts, _positive(a["flow/nc1"]), "k--", label="NC1 in input space")
    ax.set_yscale("log")
    ax.set_xlabel(S_LABEL)
    ax.set_ylabel("spread (input units) / NC1")
    time_axis(ax, ts)
    ax.set_title(
        "collapse of the clusters (flow); dotted: complete truncation (spread exactly 0)\n"
        + _subtitle(cfg),
        fontsize=9,
    )
    ax.legend(fontsize=8)
    paths.append(save_figure(fig, out / "collapse.png"))

    two_sided = _two_sided(a, t, summary, cfg, out)
    if two_sided is not None:
        paths.append(two_sided)
    elif (out / "two_sided_width.png").is_file():
        (out / "two_sided_width.png").unlink()  # drawn by an older version: premise fails
    sliding = plot_sliding(run_dir, _style, S_LABEL, _subtitle(cfg))
    if sliding is not None:
        paths.append(sliding)
    return paths
