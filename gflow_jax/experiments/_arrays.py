"""The layout of a run's ``arrays.npz`` shared by the kinds: trajectories are key prefixes
(``flow``, ``gd/eta=0.05``, ``sgd``, ...) and ``ts`` is the save grid."""

from __future__ import annotations

__all__ = ["metrics_rows", "trajectory_prefixes"]

_SCALAR_SERIES = ("loss", "n_truncated", "nc1")


def trajectory_prefixes(arrays: dict, series: str = "loss") -> list[str]:
    """Every trajectory (a prefix with a ``…/<series>`` array), the flow first."""
    names = sorted({k.rsplit("/", 1)[0] for k in arrays if k.endswith(f"/{series}")})
    names = [n for n in names if not n.startswith("analysis")]
    return (["flow"] if "flow" in names else []) + [n for n in names if n != "flow"]


def metrics_rows(arrays: dict, series: tuple[str, ...] = _SCALAR_SERIES) -> list[dict]:
    """One ``metrics.jsonl`` row per saved time: ``s`` and, for every trajectory, its scalar
    ``series``."""
    prefixes = sorted(trajectory_prefixes(arrays))
    rows = []
    for i, s in enumerate(arrays["ts"]):
        row = {"s": float(s)}
        for p in prefixes:
            for q in series:
                row[f"{p}/{q}"] = arrays[f"{p}/{q}"][i].item()
        rows.append(row)
    return rows
