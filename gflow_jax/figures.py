"""Saving figures: the one place that lays out, writes and closes a matplotlib figure."""

from __future__ import annotations

from pathlib import Path

__all__ = ["save_figure"]


def save_figure(fig, path: Path, *, dpi: int = 120, rect: tuple | None = None) -> Path:
    """``tight_layout`` (within ``rect``, figure coordinates, if given), write ``path`` (its
    folder created if missing) at ``dpi``, close the figure; returns ``path``."""
    import matplotlib.pyplot as plt

    path = Path(path)
    if rect is None:
        fig.tight_layout()
    else:
        fig.tight_layout(rect=rect)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
