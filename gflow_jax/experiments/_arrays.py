"""The files of a run directory as the kinds write and read them: ``arrays.npz`` (trajectories
are key prefixes — ``flow``, ``gd/eta=0.05``, ``sgd``, ... — and ``ts`` is the save grid) with
``metrics.jsonl`` beside it, and what the figures of a run read back."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from ..io import load_arrays, read_json, save_npz, write_metrics

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


def write_run(run_dir: Path, arrays: dict, rows: list[dict]) -> None:
    """``arrays.npz`` and ``metrics.jsonl`` (one row per line) of a run."""
    save_npz(Path(run_dir) / "arrays.npz", **arrays)
    write_metrics(Path(run_dir) / "metrics.jsonl", rows)


class RunFiles(NamedTuple):
    """A run directory as its figures read it: ``config.json``, ``summary.json`` (``None``
    before the run finished), ``arrays.npz`` and the ``figures/`` folder (created)."""

    dir: Path
    config: dict
    summary: dict | None
    arrays: dict
    figures: Path


def read_run(run_dir: str | Path) -> RunFiles:
    """The :class:`RunFiles` of ``run_dir``; ``FileNotFoundError`` naming what is missing."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    arrays = load_arrays(run_dir)
    figures = run_dir / "figures"
    figures.mkdir(exist_ok=True)
    return RunFiles(
        run_dir, config, read_json(run_dir / "summary.json", missing=None), arrays, figures
    )
