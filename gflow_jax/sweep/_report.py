"""Merging a sweep: a CSV table with one row per point and figures of final metrics per axis.

Everything is read back from the points' run directories (``status.json``, ``summary.json``,
the last row of ``metrics.jsonl``), so the same merge serves local runs, resumed sweeps and
array jobs that wrote their points on other machines.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from ..io import pyplot, read_json, save_figure, write_csv, write_json


def _flatten(prefix: str, value: Any, out: dict) -> None:
    """Scalar leaves of a JSON object, keys joined with '.'."""
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, bool | int | float | str) or value is None:
        out[prefix] = value


def _last_metrics(run_dir: Path) -> dict:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return {}
    last = None
    with path.open() as fh:
        for line in fh:
            if line.strip():
                last = line
    try:
        row = json.loads(last) if last else {}
    except json.JSONDecodeError:
        return {}
    return {k: v for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def sweep_rows(sweep_dir: str | Path) -> tuple[list[dict], list[str]]:
    """One row per point: ``point``, ``state``, ``run_dir``, ``axis:<key>`` values, ``error``,
    ``summary.<key>`` (scalar summary entries) and ``final.<key>`` (last ``metrics.jsonl`` row);
    and the axis names."""
    sweep_dir = Path(sweep_dir)
    meta = read_json(sweep_dir / "sweep.json")
    axes = list(meta["sweep"]["axes"])
    rows = []
    for p in meta["points"]:
        run_dir = sweep_dir / p["run_dir"]
        status = read_json(run_dir / "status.json", missing=None) or {"state": "missing"}
        row: dict[str, Any] = {
            "point": p["index"],
            "state": status.get("state", "missing"),
            "run_dir": p["run_dir"],
        }
        for axis in axes:
            row[f"axis:{axis}"] = p["overrides"].get(axis)
        row["error"] = status.get("error", "")
        if row["state"] == "complete":
            flat: dict = {}
            _flatten("", read_json(run_dir / "summary.json", missing=None) or {}, flat)
            row.update({f"summary.{k}": v for k, v in flat.items()})
            row.update({f"final.{k}": v for k, v in _last_metrics(run_dir).items()})
        rows.append(row)
    return rows, axes


def _numeric(value: Any) -> float | None:
    """An axis value as a number: numbers, and one-element lists of numbers (``gd.etas``)."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _plot_metrics(rows: list[dict]) -> list[str]:
    """``final.*`` metrics present in every complete point, losses first (at most 6)."""
    done = [r for r in rows if r["state"] == "complete"]
    if not done:
        return []
    keys = [k for k in done[0] if k.startswith("final.") and k != "final.s"]
    keys = [k for k in keys if all(isinstance(r.get(k), int | float) for r in done)]

    def rank(k):
        return (0 if k.endswith("loss") else 1 if "truncated" in k else 2, k)

    return sorted(keys, key=rank)[:6]


def plot_sweep(sweep_dir: str | Path, rows: list[dict], axes: list[str]) -> list[Path]:
    """``figures/final_vs_<axis>.png``: each common final metric against each axis (every
    complete point a dot, the mean over the other axes a line; failed points marked on the
    axis)."""
    plt = pyplot()
    sweep_dir = Path(sweep_dir)
    metrics = _plot_metrics(rows)
    paths = []
    if not metrics:
        return paths
    for axis in axes:
        column = f"axis:{axis}"
        values = [r[column] for r in rows]
        numeric = [_numeric(v) for v in values]
        if all(v is not None for v in numeric):
            xs = numeric
            labels = None
        else:  # categorical axis
            keys = []
            for v in values:
                if json.dumps(v) not in keys:
                    keys.append(json.dumps(v))
            xs = [float(keys.index(json.dumps(v))) for v in values]
            labels = keys
        fig, axs = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.2), squeeze=False)
        for ax, metric in zip(axs[0], metrics, strict=True):
            ok = [(x, r[metric]) for x, r in zip(xs, rows, strict=True) if r["state"] == "complete"]
            bad = [x for x, r in zip(xs, rows, strict=True) if r["state"] == "failed"]
            if ok:
                ax.plot(*zip(*ok, strict=True), "o", ms=4, alpha=0.6, color="tab:blue")
                means: dict[float, list[float]] = {}
                for x, y in ok:
                    means.setdefault(x, []).append(y)
                mx = sorted(means)
                ax.plot(mx, [sum(means[x]) / len(means[x]) for x in mx], "-", color="k", lw=1.2)
            if bad:
                ax.plot(bad, [0.0] * len(bad), "x", color="tab:red", label="failed")
                ax.legend(fontsize=7)
            if labels is not None:
                ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
            elif len({x for x in xs if x > 0}) == len(set(xs)) and len(set(xs)) > 2:
                lo, hi = min(xs), max(xs)
                if lo > 0 and hi / lo > 20:
                    ax.set_xscale("log")
            ax.set_xlabel(axis)
            ax.set_title(metric.removeprefix("final."), fontsize=9)
        fig.suptitle(f"final values vs {axis} ({len(rows)} points)", fontsize=10)
        safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", axis)
        paths.append(save_figure(fig, sweep_dir / "figures" / f"final_vs_{safe}.png", dpi=110))
    return paths


def merge_sweep(
    sweep_dir: str | Path, *, seconds: float | None = None, figures: bool = True
) -> dict:
    """Write ``summary.csv``, ``summary.json`` and the comparison figures of a sweep directory
    from its points' run directories; return the summary (counts by state, failed points with
    their errors)."""
    sweep_dir = Path(sweep_dir)
    rows, axes = sweep_rows(sweep_dir)
    write_csv(sweep_dir / "summary.csv", rows)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    summary = {
        "n_points": len(rows),
        "states": counts,
        "complete": counts.get("complete", 0) == len(rows),
        "failed": [
            {"point": r["point"], "run_dir": r["run_dir"], "error": r["error"]}
            for r in rows
            if r["state"] == "failed"
        ],
        "axes": axes,
    }
    if seconds is not None and math.isfinite(seconds):
        summary["seconds"] = seconds
    if figures:
        paths = plot_sweep(sweep_dir, rows, axes)
        summary["figures"] = [str(p.relative_to(sweep_dir)) for p in paths]
    write_json(sweep_dir / "summary.json", summary)
    return summary
