"""Magnitude of the truncated data in a truncation run directory: computed once
(``truncated_magnitude.{npz,json}``) and drawn (``figures/truncated_magnitude.png``,
``figures/cluster_magnitude.png``)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ...diagnostics import magnitude_increases, truncated_magnitude
from ...diagnostics._truncated_magnitude import SCALE_CONVENTION
from ...io import (
    load_arrays,
    pyplot,
    read_json,
    save_figure,
    save_npz,
    time_axis,
    write_json,
)
from ...magnitude import cloud_magnitudes, magnitude_scales
from ...magnitude._core import FAILED, LU
from .._arrays import trajectory_prefixes


def _magnitude_settings(cfg: dict) -> dict:
    mc = dict(cfg.get("magnitude") or {})
    return {
        "t_min": float(mc.get("t_min", 0.1)),
        "t_max": float(mc.get("t_max", 100.0)),
        "n_scales": int(mc.get("n_scales", 32)),
        "scales": list(mc.get("scales", [])),
        "per_cluster": bool(mc.get("per_cluster", True)),
    }


def write_truncated_magnitude(run_dir: str | Path) -> tuple[dict, dict]:
    """Compute the truncated-data magnitude of every trajectory of a truncation run and store
    ``truncated_magnitude.npz`` and ``truncated_magnitude.json`` (once; later calls read them).

    Keys: ``scales``, ``targets/magnitude`` (S,) = |t{ỹ_j}|, and per trajectory ``<traj>/…``:
    ``magnitude``, ``dimension``, ``positive_magnitude``, ``condition``, ``residual``,
    ``solver`` (T, S), ``n_unique`` (T,); with ``per_cluster``: ``cluster_magnitude``,
    ``cluster_dimension`` (T, Q, S) and ``cluster_n_unique`` (T, Q). The JSON summary holds the
    scale convention, the monotonicity of |tX̃(s)| per scale (:func:`magnitude_increases`),
    the final gap to |t{ỹ_j}|, solver and duplicate reports, and timings.
    """
    run_dir = Path(run_dir)
    jpath, npath = run_dir / "truncated_magnitude.json", run_dir / "truncated_magnitude.npz"
    if jpath.is_file() and npath.is_file():
        return read_json(jpath), load_arrays(npath)
    cfg = read_json(run_dir / "config.json")
    settings = _magnitude_settings(cfg)
    s = magnitude_scales(
        settings["t_min"], settings["t_max"], settings["n_scales"], settings["scales"]
    )
    a = load_arrays(run_dir)
    ts, labels, targets = a["ts"], a["data/labels"], a["targets"]
    Q = int(targets.shape[0])
    tables: dict[str, np.ndarray] = {"scales": s, "ts": ts}
    target_mag = cloud_magnitudes(targets[None], s)
    tables["targets/magnitude"] = np.asarray(target_mag.magnitude[0])
    summary: dict = {
        "scale_convention": SCALE_CONVENTION,
        "metric": "euclidean (input space)",
        "scales": s.tolist(),
        "duplicates": "exact duplicates merged: the magnitude is that of the distinct points",
        "targets_magnitude": tables["targets/magnitude"].tolist(),
    }
    for prefix in trajectory_prefixes(a, "x_tilde"):
        t0 = time.perf_counter()
        r = truncated_magnitude(
            a[f"{prefix}/x_tilde"],
            s,
            labels=labels,
            n_classes=Q,
            per_cluster=settings["per_cluster"],
        )
        seconds = time.perf_counter() - t0
        w = r.whole
        for key in ("magnitude", "dimension", "positive_magnitude", "condition", "residual"):
            tables[f"{prefix}/{key}"] = np.asarray(getattr(w, key))
        tables[f"{prefix}/solver"] = np.asarray(w.solver)
        tables[f"{prefix}/n_unique"] = np.asarray(w.n_unique)
        entry = {
            "seconds_including_compile": seconds,
            "n_unique_first_last": [int(w.n_unique[0]), int(w.n_unique[-1])],
            "final_magnitude": tables[f"{prefix}/magnitude"][-1].tolist(),
            "max_abs_final_gap_to_targets": float(
                np.max(np.abs(tables[f"{prefix}/magnitude"][-1] - tables["targets/magnitude"]))
            ),
            "monotonicity": magnitude_increases(ts, tables[f"{prefix}/magnitude"]),
            "max_condition": float(np.nanmax(tables[f"{prefix}/condition"])),
            "max_residual": float(np.nanmax(tables[f"{prefix}/residual"])),
            "lu_fallbacks": int((tables[f"{prefix}/solver"] == LU).sum()),
            "failed_solves": int((tables[f"{prefix}/solver"] == FAILED).sum()),
            "dimension_max_first_last": [
                float(np.nanmax(tables[f"{prefix}/dimension"][0])),
                float(np.nanmax(tables[f"{prefix}/dimension"][-1])),
            ],
        }
        if r.clusters is not None:
            cm = r.cluster_field("magnitude")
            tables[f"{prefix}/cluster_magnitude"] = cm
            tables[f"{prefix}/cluster_dimension"] = r.cluster_field("dimension")
            tables[f"{prefix}/cluster_n_unique"] = r.cluster_field("n_unique")
            one = np.all(r.cluster_field("n_unique") == 1, axis=0)  # (Q,) at the end?
            first_one = [
                float(ts[np.argmax(r.cluster_field("n_unique")[:, j] == 1)])
                if (r.cluster_field("n_unique")[:, j] == 1).any()
                else None
                for j in range(Q)
            ]
            entry["cluster_final_magnitude_minus_one"] = (cm[-1] - 1.0).max(-1).tolist()
            entry["cluster_first_single_point_s"] = first_one
            entry["cluster_single_point_throughout"] = one.tolist()
            entry["cluster_failed_solves"] = int((np.asarray(r.clusters.solver) == FAILED).sum())
        summary[prefix] = entry
    save_npz(npath, **tables)
    write_json(jpath, summary)
    return summary, tables


def plot_truncated_magnitude(run_dir: str | Path, n_lines: int = 5) -> list[Path]:
    """Figures (``figures/``): |tX̃(s)| against s at ``n_lines`` scales with the flow's
    truncation events marked and |t{ỹ_j}| dashed, beside the magnitude dimension profile
    dim_t(X̃(s)) over (s, t); per-cluster |tX̃_j(s)| − 1 on a log axis next to NC1."""
    plt = pyplot()
    run_dir = Path(run_dir)
    summary, t = write_truncated_magnitude(run_dir)
    if "flow" not in summary:
        return []
    a = load_arrays(run_dir)
    out = run_dir / "figures"
    out.mkdir(exist_ok=True)
    ts, s = t["ts"], t["scales"]
    events = []
    if (run_dir / "analysis.json").is_file():
        analysis = read_json(run_dir / "analysis.json")
        events = list(analysis.get("flow", {}).get("event_times", []))
    pick = np.unique(np.linspace(0, s.size - 1, min(n_lines, s.size)).round().astype(int))
    colors = plt.cm.viridis(np.linspace(0, 0.9, pick.size))
    paths = []

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.4))
    for c, i in zip(colors, pick, strict=True):
        ax.plot(ts, t["flow/magnitude"][:, i], color=c, lw=1.6, label=f"t = {s[i]:.3g}")
        ax.axhline(t["targets/magnitude"][i], color=c, ls=":", lw=1.0)
    ax.vlines(events, 0.97, 1.0, transform=ax.get_xaxis_transform(), color="tab:red", lw=0.6)
    ax.set_yscale("log")
    ax.set_xlabel("flow time s")
    ax.set_ylabel("|tX̃(s)|  (distinct points)")
    ax.set_title(
        f"magnitude of the truncated data (flow); dotted: |t{{ỹ_j}}|;\n"
        f"red ticks: {len(events)} truncation events (analysis.json)",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    time_axis(ax, ts)
    dim = t["flow/dimension"].T  # (S, T)
    mesh = bx.pcolormesh(ts, s, dim, shading="nearest", cmap="magma")
    bx.set_yscale("log")
    time_axis(bx, ts)
    bx.set_xlabel("flow time s")
    bx.set_ylabel("scale t")
    bx.set_title("magnitude dimension dim_t = d log|tX̃(s)| / d log t (exact)", fontsize=9)
    fig.colorbar(mesh, ax=bx)
    fig.suptitle(f"{run_dir.name}: {SCALE_CONVENTION}", fontsize=8)
    paths.append(save_figure(fig, out / "truncated_magnitude.png"))

    if "flow/cluster_magnitude" in t:
        cm = t["flow/cluster_magnitude"]  # (T, Q, S)
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
        styles = ("-", "--", "-.", ":")
        for j in range(cm.shape[1]):
            for c, i in zip(colors, pick, strict=True):
                y = cm[:, j, i] - 1.0
                ax.plot(
                    ts,
                    np.where(y > 0, y, np.nan),
                    color=c,
                    ls=styles[j % 4],
                    label=f"cluster {j}, t = {s[i]:.3g}" if j < 2 else None,
                )
        ax.set_yscale("log")
        ax.set_xlabel("flow time s")
        ax.set_ylabel("|tX̃_j(s)| − 1  (exactly 0 once the cluster is one point)")
        ax.set_title("per-cluster magnitude (flow)", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
        for name in sorted({k.rsplit("/", 1)[0] for k in a if k.endswith("/nc1")}):
            y = a[f"{name}/nc1"]
            bx.plot(
                ts,
                np.where(y > 0, y, np.nan),
                lw=2.0 if name == "flow" else 1.0,
                color="k" if name == "flow" else None,
                label=name,
            )
        bx.set_yscale("log")
        bx.set_xlabel("flow time s")
        bx.set_ylabel("NC1 in input space")
        bx.set_title("NC1 in input space: (1/N) Σ |x̃ − mean_j x̃|²", fontsize=9)
        bx.legend(fontsize=7)
        for axis in (ax, bx):
            time_axis(axis, ts)
        paths.append(save_figure(fig, out / "cluster_magnitude.png"))
    return paths
