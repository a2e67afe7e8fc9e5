"""The figure of a face that sticks at a data value (docs/theory.md#sliding), drawn from a run
with ``flow.compare_exact`` (experiments/sliding.toml): c(s) of the diffrax flow, the exact
solution and every GD/SGD trajectory on one clock, the stick value (the data value where both
one-sided fields point at each other) as a horizontal line and the stick time as a vertical one;
below, each trajectory's distance to the exact solution (GD chatters around the stick value
with amplitude O(η)).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...io import pyplot, save_figure
from .._arrays import read_run, trajectory_prefixes

FIGURE = "sliding.png"
MAX_PANELS = 3


def stuck_faces(summary: dict | None) -> list[dict]:
    """The faces the exact solver found stuck at the end (``layer``, ``coord``, ``value``,
    ``time``), earliest first; empty without ``flow.compare_exact``."""
    faces = ((summary or {}).get("exact") or {}).get("stuck_faces", [])
    return sorted(faces, key=lambda f: f["time"])


def _zoom(ax, ts, a, names, ell, k, value, when, style) -> None:
    """An inset around the stick value after the stick time, where GD chatters."""
    late = ts >= when
    if late.sum() < 2:
        return
    spread = max(
        (np.max(np.abs(a[f"{name}/thresholds"][late, ell, k] - value)) for name in names),
        default=0.0,
    )
    half = 1.5 * spread if spread > 0 else 1e-3 * max(1.0, abs(value))
    inset = ax.inset_axes([0.3, 0.47, 0.66, 0.27])
    for name in names:
        inset.plot(
            ts[late], a[f"{name}/thresholds"][late, ell, k], **{**style(name), "label": None}
        )
    inset.axhline(value, color="tab:red", lw=1.0, ls="-.")
    inset.set_ylim(value - half, value + half)
    inset.set_xlim(when, min(ts[-1], when + 0.25 * (ts[-1] - ts[0])))
    inset.tick_params(labelsize=6)
    inset.set_title("after the stick time, zoomed", fontsize=7)


def plot_sliding(run_dir: str | Path, style, s_label: str, subtitle: str) -> Path | None:
    """``figures/sliding.png`` for the first :data:`MAX_PANELS` stuck faces of the run, or
    ``None`` (and a stale figure removed) when no face sticks or the run has no exact solution.

    ``style(prefix)`` gives each trajectory's line style, ``s_label`` the time axis label and
    ``subtitle`` the run's one-line description (shared with the kind's other figures)."""
    run_dir, cfg, summary, a, out = read_run(run_dir)
    faces = stuck_faces(summary)[:MAX_PANELS]
    if not faces or "exact/thresholds" not in a:
        if (out / FIGURE).is_file():
            (out / FIGURE).unlink()  # drawn by an earlier run of the same directory
        return None
    plt = pyplot()
    ts = a["ts"]
    names = trajectory_prefixes(a, "thresholds")
    fig, axes = plt.subplots(
        2, len(faces), figsize=(6.2 * len(faces), 6.6), sharex="col", squeeze=False,
        gridspec_kw={"height_ratios": [3, 2]},
    )  # fmt: skip
    for col, face in enumerate(faces):
        ell, k, value, when = face["layer"], face["coord"], face["value"], face["time"]
        top, bottom = axes[0, col], axes[1, col]
        exact = a["exact/thresholds"][:, ell, k]
        for name in names:
            c = a[f"{name}/thresholds"][:, ell, k]
            top.plot(ts, c, **style(name))
            if name != "exact":
                gap = np.abs(c - exact)
                bottom.plot(ts, np.where(gap > 0, gap, np.nan), **style(name))
        top.axhline(value, color="tab:red", lw=1.0, ls="-.", zorder=1,
                    label=f"stick value ξ = {value:.6g} (a data value)")  # fmt: skip
        for ax in (top, bottom):
            ax.axvline(when, color="tab:green", lw=1.0, ls=":", zorder=1,
                       label=f"stick time s = {when:.6g} (exact solver)")  # fmt: skip
        _zoom(top, ts, a, names, ell, k, value, when, style)
        top.set_ylabel(f"threshold c (layer {ell + 1}, coordinate {k + 1}), input units")
        top.set_title(f"face (layer {ell + 1}, coordinate {k + 1}) sticks at ξ = {value:.4g}",
                      fontsize=9)  # fmt: skip
        top.legend(fontsize=7)
        bottom.set_yscale("log")
        bottom.set_ylabel("|c − c_exact|")
        bottom.set_xlabel(s_label)
        bottom.set_xlim(ts[0], ts[-1])
        bottom.set_title("distance to the exact solution (same clock; 0 is not drawn)", fontsize=9)
    fig.suptitle(
        "Filippov sliding: both one-sided fields point at the data value, the face stays there"
        f"\n{subtitle}",
        fontsize=10,
    )
    return save_figure(fig, out / FIGURE)
