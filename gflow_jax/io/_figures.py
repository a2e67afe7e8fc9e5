"""Figures: the one place that chooses matplotlib's backend and writes a figure.

Plotting code calls :func:`pyplot` (never ``import matplotlib.pyplot`` itself) so that the
non-interactive ``Agg`` backend is chosen once, before pyplot is imported, and matplotlib is
only imported by code that draws.
"""

from __future__ import annotations

from pathlib import Path


def pyplot():
    """``matplotlib.pyplot`` with the non-interactive ``Agg`` backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(
    fig, path: str | Path, *, dpi: int = 120, rect: tuple | None = None, layout: bool = True
) -> Path:
    """``tight_layout`` (within ``rect``, figure coordinates, if given; ``layout=False``: the
    caller laid the figure out), write ``path`` (its
    folder created if missing) at ``dpi`` with the bounding box fitted to everything drawn (no
    label or legend is clipped), close the figure; returns ``path``."""
    plt = pyplot()
    path = Path(path)
    if layout:
        fig.tight_layout(rect=rect)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight", pad_inches=0.08)
    plt.close(fig)
    return path


def time_axis(ax, ts) -> None:
    """Flow time on a symlog axis from 0 (truncation is fast early, collapse exponential)."""
    if len(ts) > 1 and ts[1] > ts[0]:
        ax.set_xscale("symlog", linthresh=float(ts[1] - ts[0]) * 4)
        ax.set_xlim(float(ts[0]), float(ts[-1]))
