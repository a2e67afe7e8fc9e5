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

import numpy as np

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


_ETA = re.compile(r"^(?P<family>[^/]+)/eta=(?P<eta>[^/,]+)(?P<rest>[^/]*)$")
_GAPS = ("max_threshold_gap_to_flow", "max_gap_to_flow")


def _trajectory_alias(names: list[str]) -> dict[str, str]:
    """Names of one point's trajectories that hold across a sweep: ``gd/eta=0.05`` becomes
    ``gd`` (the point's GD run of largest η; the next ones ``gd[1]``, ...), so that a sweep over
    ``gd.etas`` compares GD with GD."""
    alias, families = {}, {}
    for name in names:
        m = _ETA.match(name)
        if m:
            families.setdefault((m["family"], m["rest"]), []).append((float(m["eta"]), name))
    for (family, rest), members in families.items():
        for i, (_, name) in enumerate(sorted(members, reverse=True)):
            alias[name] = f"{family}{rest}" + (f"[{i}]" if i else "")
    return alias


def _series(row: dict) -> dict[tuple[str, str], float]:
    """``(series, trajectory) → value`` of a complete row: final metrics and each trajectory's
    distance to the flow (trajectory ``""`` for metrics that belong to no trajectory)."""
    found: dict[tuple[str, str], float] = {}
    raw = []
    for key, value in row.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        if key.startswith("final.") and key != "final.s":
            traj, _, series = key.removeprefix("final.").rpartition("/")
            raw.append((series, traj, value))
        elif key.startswith("summary.") and key.endswith(_GAPS):
            traj, _, _ = key.removeprefix("summary.").rpartition(".")
            raw.append(("distance to the flow", traj, value))
    alias = _trajectory_alias(sorted({t for _, t, _ in raw}))
    for series, traj, value in raw:
        found[(series, alias.get(traj, traj))] = float(value)
    return found


def _panels(series_rows: list[dict]) -> list[tuple[str, list[str]]]:
    """Series present in every complete point, with their trajectories (at most 6 panels of 6
    lines): cost first, then truncated counts, distance to the flow, NC1, the rest."""
    if not series_rows:
        return []
    common = set(series_rows[0])
    for r in series_rows[1:]:
        common &= set(r)
    by_series: dict[str, list[str]] = {}
    for series, traj in sorted(common):
        by_series.setdefault(series, []).append(traj)
    order = ("loss", "n_truncated", "distance to the flow", "nc1")

    def rank(item):
        name = item[0]
        return (order.index(name) if name in order else len(order), name)

    def flow_first(trajs):
        return sorted(trajs, key=lambda t: (t != "flow", t))[:6]

    return [(name, flow_first(trajs)) for name, trajs in sorted(by_series.items(), key=rank)][:6]


_TITLES = {
    "loss": "final cost",
    "n_truncated": "final truncated (point, unit) pairs",
    "nc1": "final NC1 in input space",
    "distance to the flow": "max over s of the distance to the flow",
}


def _axis_positions(rows: list[dict], column: str) -> tuple[list[float], list[str] | None]:
    values = [r[column] for r in rows]
    numeric = [_numeric(v) for v in values]
    if all(v is not None for v in numeric):
        return numeric, None
    keys: list[str] = []
    for v in values:
        if json.dumps(v) not in keys:
            keys.append(json.dumps(v))
    return [float(keys.index(json.dumps(v))) for v in values], keys


def plot_sweep(sweep_dir: str | Path, rows: list[dict], axes: list[str]) -> list[Path]:
    """``figures/final_vs_<axis>.png``: small multiples, one panel per final metric (cost,
    truncated counts, each descent's distance to the flow, NC1, ...), one line per trajectory
    (flow, GD, SGD: the mean over the other axes; dots: the points), against each axis; failed
    points are marked with a red x on the axis."""
    plt = pyplot()
    sweep_dir = Path(sweep_dir)
    done = [(i, _series(r)) for i, r in enumerate(rows) if r["state"] == "complete"]
    panels = _panels([s for _, s in done])
    paths: list[Path] = []
    if not panels:
        return paths
    trajectories = sorted({t for _, ts in panels for t in ts}, key=lambda t: (t != "flow", t))
    colors = {t: ("k" if t == "flow" else f"C{i}") for i, t in enumerate(trajectories)}
    for axis in axes:
        xs, labels = _axis_positions(rows, f"axis:{axis}")
        ncols = min(3, len(panels))
        nrows = -(-len(panels) // ncols)
        fig, grid = plt.subplots(nrows, ncols, figsize=(4.3 * ncols, 3.3 * nrows), squeeze=False)
        for ax, (series, trajs) in zip(grid.flat, panels, strict=False):
            values = []
            for traj in trajs:
                pts = [(xs[i], s[(series, traj)]) for i, s in done]
                values += [y for _, y in pts]
                ax.plot(*zip(*pts, strict=True), "o", ms=3, alpha=0.35, color=colors[traj])
                means: dict[float, list[float]] = {}
                for x, y in pts:
                    means.setdefault(x, []).append(y)
                mx = sorted(means)
                label = traj or series
                ax.plot(mx, [np.mean(means[x]) for x in mx], "-", color=colors[traj], label=label)
            bad = [x for x, r in zip(xs, rows, strict=True) if r["state"] == "failed"]
            if bad:
                ax.plot(bad, [0.02] * len(bad), "x", color="tab:red", ms=7,
                        transform=ax.get_xaxis_transform(), label="failed point")  # fmt: skip
            positive = [v for v in values if v > 0]
            if len(positive) == len(values) and positive and max(positive) > 100 * min(positive):
                ax.set_yscale("log")
            ax.set_title(_TITLES.get(series, series), fontsize=9)
            ax.set_ylabel(series, fontsize=8)
        for ax in list(grid.flat)[len(panels) :]:
            ax.axis("off")
        for ax in list(grid.flat)[: len(panels)]:
            ax.set_xlabel(axis)
            if labels is not None:
                ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize=7)
            elif len(set(xs)) > 2 and min(xs) > 0 and max(xs) / min(xs) > 20:
                ax.set_xscale("log")
        handles, names = {}, {}
        for ax in grid.flat:
            for h, n in zip(*ax.get_legend_handles_labels(), strict=True):
                handles.setdefault(n, h)
                names[n] = n
        fig.suptitle(
            f"final values against {axis}: lines the mean over the other axes, dots the "
            f"{len(rows)} points",
            fontsize=10,
        )
        fig.tight_layout()
        fig.legend(
            list(handles.values()), list(names), loc="upper center", bbox_to_anchor=(0.5, 0.0),
            ncol=min(len(names), 6), fontsize=8, frameon=False,
        )  # fmt: skip
        safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", axis)
        out = sweep_dir / "figures" / f"final_vs_{safe}.png"
        paths.append(save_figure(fig, out, dpi=110, layout=False))
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
