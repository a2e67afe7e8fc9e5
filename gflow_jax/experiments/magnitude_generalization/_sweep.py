"""The sweep of a ``magnitude_generalization`` run (resumable point by point) and its
aggregation: the correlation table of every measure against both generalisation gaps."""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ...diagnostics import kendall_tau
from ...io import (
    load_arrays,
    progress_bar,
    read_json,
    save_npz,
    write_csv,
    write_json,
    write_metrics,
)
from ._config import MagnitudeGeneralizationConfig
from ._measure import measure_point
from ._table import (
    GAPS,
    correlation_table,
    format_table,
    gap_summary,
    markdown_table,
    run_summary,
)
from ._train import dataset, grid_points, train_group


def _finish_point(cfg, data, p: dict, pdir: Path) -> dict:
    """``result.json`` of one trained point: its measures, or the error (a failed point must
    not kill the sweep)."""
    t0 = time.perf_counter()
    training = read_json(pdir / "training.json")
    result = {k: p[k] for k in ("id", "lr", "batch_size", "seed")}
    result["training"] = training
    if training["status"] != "ok":
        result.update(status="failed", error=training["error"])
    else:
        try:
            result.update(measure_point(cfg, data, pdir))
            result["status"] = "ok"
        except Exception as err:
            result.update(
                status="failed",
                error=f"{type(err).__name__}: {err}",
                traceback=traceback.format_exc(limit=5),
            )
    result["measure_seconds"] = time.perf_counter() - t0
    write_json(pdir / "result.json", result)
    return result


def run_sweep(
    cfg: MagnitudeGeneralizationConfig,
    run_dir: str | Path,
    progress: bool = False,
    *,
    on_point_done: Callable[[str], None] | None = None,
) -> dict:
    """Run (or finish) the whole sweep into ``run_dir``; return the JSON summary.

    Finished points (``points/<id>/result.json``) are skipped, so calling this again on an
    interrupted directory completes it. ``on_point_done(point_id)`` is called after each point
    is written (a hook: tests raise ``KeyboardInterrupt`` from it).
    """
    run_dir = Path(run_dir)
    root = run_dir / "points"
    root.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    data = dataset(cfg)
    points = grid_points(cfg)
    for p in points:
        (root / p["id"]).mkdir(exist_ok=True)
    finished = {p["id"] for p in points if (root / p["id"] / "result.json").is_file()}
    bar = progress_bar(len(points), "sweep", enabled=progress, initial=len(finished), unit="net")
    timings = {"train_seconds": 0.0, "measure_seconds": 0.0}
    try:
        for bs in cfg.grid.batch_sizes:
            group = [p for p in points if p["batch_size"] == bs]
            if all(p["id"] in finished for p in group):
                continue
            pending = {p["id"] for p in group if not (root / p["id"] / "training.json").is_file()}
            if pending:
                timings["train_seconds"] += train_group(
                    cfg, data, bs, group, pending, root, progress
                )
            for p in group:
                if p["id"] in finished:
                    continue
                result = _finish_point(cfg, data, p, root / p["id"])
                timings["measure_seconds"] += result["measure_seconds"]
                finished.add(p["id"])
                bar.update(1)
                if on_point_done is not None:
                    on_point_done(p["id"])
    finally:
        bar.close()
    summary = aggregate(cfg, run_dir, points)
    summary["timings"] = {
        **timings,
        "this_call_seconds": time.perf_counter() - t_start,
        "note": "times of this call only (a resumed run does not re-count finished points)",
    }
    return summary


# --------------------------------------------------------------------------------------------
# aggregation: correlation table


def _early_warning(cfg, run_dir: Path, ok: list[dict]) -> dict:
    """Kendall τ (the run's ``statistics.kendall_variant``) between the windowed trajectory
    dimension at each monitor step and the final gap."""
    series = {}
    for r in ok:
        z = load_arrays(run_dir / "points" / r["id"] / "curves.npz")
        series[r["id"]] = dict(
            zip(z["window/steps"].tolist(), z["window/mag_dim_max"], strict=True)
        )
    if not series:
        return {}
    common = sorted(set.intersection(*(set(s) for s in series.values())))
    out = {"steps": common}
    variant = cfg.statistics.kendall_variant
    for gap in GAPS:
        out[f"tau[{gap}]"] = [
            kendall_tau([series[r["id"]][s] for r in ok], [r[gap] for r in ok], variant=variant)
            for s in common
        ]
    return out


def aggregate(cfg, run_dir: Path, points: list[dict]) -> dict:
    results = []
    for p in points:
        result = read_json(run_dir / "points" / p["id"] / "result.json", missing=None)
        if result is not None:
            results.append(result)
    ok = [r for r in results if r.get("status") == "ok"]
    st = cfg.statistics
    rows, cells = correlation_table(results, st)
    print(format_table(rows, len(ok), len(points), st), end="")
    write_csv(run_dir / "table.csv", rows)
    (run_dir / "table.md").write_text(
        "".join(f"### {gap}\n\n{markdown_table(rows, gap)}\n" for gap in GAPS)
    )
    early = _early_warning(cfg, run_dir, ok)
    gaps = gap_summary(ok) if ok else {}
    statistics = {
        "kendall_variant": st.kendall_variant,
        "n_bootstrap": st.n_bootstrap,
        "level": st.level,
        "seed": st.seed,
        "granulated_over": ["lr", "bs"],
        "conditioned_on": ["lr", "bs"],
    }
    write_json(
        run_dir / "correlations.json",
        {
            "statistics": statistics,
            "gaps": gaps,
            "table": rows,
            "cell_taus": cells,
            "early_warning": early,
        },
    )
    metric_rows = []
    for r in results:
        row = {k: r.get(k) for k in ("id", "lr", "batch_size", "seed", "status")}
        row.update({k: r.get(k) for k in ("train_acc", "test_acc", *GAPS, "error")})
        row.update(r.get("measures", {}))
        metric_rows.append(row)
    write_metrics(run_dir / "metrics.jsonl", metric_rows)
    names = [row["measure"] for row in rows]
    arrays = {
        "lr": np.array([r["lr"] for r in ok]),
        "batch_size": np.array([r["batch_size"] for r in ok]),
        "seed": np.array([r["seed"] for r in ok]),
        **{gap: np.array([r[gap] for r in ok]) for gap in GAPS},
        **{f"measure/{n}": np.array([r["measures"].get(n, np.nan) for r in ok]) for n in names},
    }
    save_npz(run_dir / "arrays.npz", **arrays)
    failed = {r["id"]: r.get("error") for r in results if r.get("status") != "ok"}
    return {
        "n_points": len(points),
        "n_finished": len(results),
        "n_ok": len(ok),
        "failed": failed,
        "scale_convention": (
            "Z_ij = exp(-t d_ij) on raw distances (weight-space Euclidean; rho_S in nats); "
            "PMag at t = sqrt(n) and t = 0.01 with n the number of iterates; magnitude "
            "function/dimension on t = 10^u / diameter"
        ),
        "statistics": statistics,
        "gaps": gaps,
        "magnitude_seconds": _magnitude_seconds(ok),
        **(run_summary(ok, cells) if ok else {}),
        "table": rows,
    }


def _magnitude_seconds(ok: list[dict]) -> dict:
    """Median and total seconds of the trajectory magnitude per metric, and the engine."""
    out = {}
    for metric in sorted({m for r in ok for m in r.get("trajectory_timings", {})}):
        t = [r["trajectory_timings"][metric] for r in ok if metric in r["trajectory_timings"]]
        secs = np.array([x["magnitude"] for x in t])
        out[metric] = {
            "median": float(np.median(secs)),
            "total": float(secs.sum()),
            "engines": sorted({x["engine"] for x in t}),
        }
    return out


def _run(cfg: MagnitudeGeneralizationConfig, run_dir: Path, progress: bool) -> dict:
    return run_sweep(cfg, run_dir, progress)
