"""Truncation analysis of a finished run, from its saved states (docs/theory.md#closed-forms).

For the flow and for every GD/SGD trajectory of a truncation run (and the exact solution, with
``flow.compare_exact``): rates fitted on each inter-event interval against the prediction
n/(N d²) (×(1 + c²) for the joint flow), event (crossing) times and the faces that stick at a
data value (``stick_events``, docs/theory.md#sliding), per-cluster counts and spreads,
complete-truncation times, faces shared by several clusters with their weighted-mean fixed point
c* = Σ_j n_j ỹ_j / n, and the residual cost.
Nothing is re-simulated: every number is a function of the saved parameters and the data.
"""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ...core import AdaptedParameters, last_truncations
from ...diagnostics import (
    cluster_counts,
    cluster_spread,
    event_times,
    interval_rates,
    rate_diagnostics,
    truncation_diagnostics,
)
from ...dynamics import FlowProblem, solve_face
from ...io import load_arrays, read_json, save_npz, write_json
from .._arrays import trajectory_prefixes


def _problem(arrays: dict, mode: str) -> tuple[FlowProblem, np.ndarray]:
    frame = jnp.asarray(arrays["frame"])
    labels = np.asarray(arrays["data/labels"])
    u = jnp.asarray(arrays["data/x"]) @ frame.T
    targets = (jnp.asarray(arrays["targets"]) @ frame.T)[labels]
    return FlowProblem(u, targets, mode=mode), labels


def held_at_data(ts, c, d, owner, u, targets, n_total, events) -> dict[str, np.ndarray]:
    """Stick rows (columns of :func:`~gflow_jax.diagnostics.event_times`) for the faces that
    are held exactly at a data value without the owned set changing there — the diffrax flow
    with events located and the exact solution put a stuck face *on* the value, where by the tie
    convention the point is not owned, so no crossing is seen between saves.

    A face counts when its saved c sits at one data value ξ of its coordinate (to 1e-9
    relative) from a save i₀ > 0 to the end, has no stick row in ``events`` yet, and the closed
    form (:func:`~gflow_jax.dynamics.solve_face` from the save before, on the points it owned
    there and those at ξ) sticks at ξ: the row's time is where it gets there.
    ``owner``: ``(T, N, L, M)`` the points each face owns at each save."""
    rows = []
    stuck = events["stick"] > 0
    faces = np.stack([events["layer"][stuck], events["coord"][stuck]], axis=1).astype(int)
    known = {tuple(face) for face in faces.tolist()}
    T, L, M = c.shape
    for ell in range(L):
        for k in range(M):
            col, data = c[:, ell, k], u[:, k]
            xi = data[np.argmin(np.abs(data - col[-1]))]
            at = np.abs(col - xi) <= 1e-9 * max(1.0, abs(xi))
            if (ell, k) in known or not at[-1] or at.all():
                continue
            i0 = T - int(np.argmin(at[::-1]))  # first save of the final run at ξ
            cand = owner[i0 - 1, :, ell, k] | (data == xi)
            face = solve_face(
                data[cand], targets[cand, k], col[i0 - 1], d[i0 - 1, ell, k], n_total,
                s_final=ts[i0] - ts[i0 - 1],
            )  # fmt: skip
            if np.isfinite(face.stick_time) and face.stick_value == xi:
                n_after = face.counts[-1]
                rows.append((ell, k, ts[i0 - 1] + face.stick_time, n_after, n_after, xi, 1.0))
    table = np.array(rows, dtype=float).reshape(-1, len(events))
    return {name: table[:, i] for i, name in enumerate(events)}


def _chatter(ts, c, events, i) -> float:
    """How far the face of stick row ``i`` strays from its value after the stick time: 0 for a
    flow held on the value, O(η) for (S)GD chattering around it (docs/theory.md#sliding)."""
    ell, k = int(events["layer"][i]), int(events["coord"][i])
    after = ts >= events["time"][i]
    if not after.any():
        return 0.0
    return float(np.max(np.abs(c[after, ell, k] - events["value"][i])))


def analyse_trajectory(
    arrays: dict, prefix: str, *, mode: str = "bias"
) -> tuple[dict, dict[str, np.ndarray]]:
    """Analysis of trajectory ``prefix`` (``"flow"``, ``"gd/eta=…"``, ``"sgd"``) of a run.

    Returns ``(summary, tables)``: a JSON-ready summary and arrays (``rates/…``, ``events/…``,
    ``cluster_counts``, ``spread``) to store beside the run's arrays.
    """
    problem, labels = _problem(arrays, mode)
    ts = np.asarray(arrays["ts"])
    params = AdaptedParameters(
        d=jnp.asarray(arrays[f"{prefix}/d"]), b=jnp.asarray(arrays[f"{prefix}/b"])
    )
    n_classes = int(arrays["targets"].shape[0])
    n_points = problem.u.shape[0]
    diag = truncation_diagnostics(params, problem.u, jnp.asarray(labels), n_classes)
    rates = rate_diagnostics(problem, params)
    c = np.asarray(params.thresholds)
    fitted = interval_rates(ts, c, rates)
    events = event_times(
        ts, c, np.asarray(params.d), np.asarray(diag.truncated), problem.u, problem.targets
    )
    owner = np.asarray(jax.vmap(last_truncations)(diag.truncated))
    held = held_at_data(
        ts, c, np.asarray(params.d), owner, np.asarray(problem.u), np.asarray(problem.targets),
        n_points, events,
    )  # fmt: skip
    events = {name: np.concatenate([events[name], held[name]]) for name in events}
    per_cluster = np.asarray(cluster_counts(diag.truncated, jnp.asarray(labels), n_classes))
    spread = np.asarray(cluster_spread(diag.x_tilde, jnp.asarray(labels), n_classes))

    # complete truncation of cluster j in coordinate k: first save from which the spread is 0
    zero = spread == 0.0  # (T, Q, M)
    stays = np.flip(np.logical_and.accumulate(np.flip(zero, 0), 0), 0)
    complete = np.where(stays.any(0), ts[np.argmax(stays, 0)], np.inf)  # (Q, M)

    # faces owning points of several clusters at the final time: general (non-separated) case
    final = per_cluster[-1]  # (L, M, Q)
    target_k = np.asarray(arrays["targets"]) @ np.asarray(arrays["frame"]).T  # (Q, M) in frame
    shared = []
    for ell, k in zip(*np.nonzero((final > 0).sum(-1) >= 2), strict=True):
        n_j = final[ell, k]
        c_star = float(n_j @ target_k[:, k] / n_j.sum())
        shared.append(
            {
                "layer": int(ell),
                "coord": int(k),
                "clusters": [int(j) for j in np.nonzero(n_j)[0]],
                "counts": [int(x) for x in n_j],
                "fixed_point": c_star,
                "final_threshold": float(c[-1, ell, k]),
            }
        )
    stick = events["stick"] > 0  # a face held at a data value (docs/theory.md#sliding)
    sticks = [
        {"layer": int(events["layer"][i]), "coord": int(events["coord"][i]),
         "time": float(events["time"][i]), "value": float(events["value"][i]),
         "amplitude": _chatter(ts, c, events, i)}
        for i in np.flatnonzero(stick)
    ]  # fmt: skip
    err = np.abs(fitted["fitted"] - fitted["predicted"]) / np.maximum(fitted["predicted"], 1e-300)
    summary = {
        "n_points": int(n_points),
        "intervals": int(len(fitted["fitted"])),
        "max_rel_rate_error": float(err.max()) if err.size else None,
        "n_events": int(len(events["time"])),
        "event_times": events["time"].tolist(),
        "stick_events": sticks,
        "complete_truncation_times": complete.tolist(),
        "final_spread_max": float(spread[-1].max()),
        "final_nc1": float(diag.nc1[-1]),
        "residual_cost": float(arrays[f"{prefix}/loss"][-1]),
        "shared_faces": shared,
    }
    tables = {f"rates/{k}": v for k, v in fitted.items()}
    tables.update({f"events/{k}": v for k, v in events.items()})
    tables["cluster_counts"] = per_cluster
    tables["spread"] = spread
    return summary, tables


def _event_index(tables: dict, prefix: str) -> dict[tuple, float]:
    """First time of each crossing, keyed by (layer, coord, crossed value, direction)."""
    col = {k: tables[f"analysis/{prefix}/events/{k}"] for k in ("layer", "coord", "value")}
    time = tables[f"analysis/{prefix}/events/time"]
    up = (
        tables[f"analysis/{prefix}/events/count_after"]
        > tables[f"analysis/{prefix}/events/count_before"]
    )
    index: dict[tuple, float] = {}
    for i in range(len(time)):
        key = (int(col["layer"][i]), int(col["coord"][i]), float(col["value"][i]), bool(up[i]))
        index.setdefault(key, float(time[i]))
    return index


def analyse_truncation_arrays(arrays: dict, cfg: dict) -> tuple[dict, dict[str, np.ndarray]]:
    """:func:`analyse_trajectory` for every trajectory of a truncation run (input cost only:
    the rates n/(N d²) are those of C_in). Keys of the arrays are prefixed ``analysis/<traj>/``.

    For GD and SGD, event times are located between saves by the flow's closed form, so they
    are the flow-equivalent crossing times at the resolution of the run's save grid; each is
    matched to the flow's crossing of the same data value by the same face
    (``max_event_time_gap_to_flow``, ``matched_events``, ``unmatched_events``)."""
    if cfg["flow"]["cost"] != "input":
        return {"skipped": "rates and events are defined for the input-layer cost"}, {}
    prefixes = sorted(trajectory_prefixes(arrays, "thresholds"))
    summary, tables = {}, {}
    for prefix in prefixes:
        s, t = analyse_trajectory(arrays, prefix, mode=cfg["flow"]["mode"])
        summary[prefix] = s
        tables.update({f"analysis/{prefix}/{k}": v for k, v in t.items()})
    if "flow" in summary:
        flow_events = _event_index(tables, "flow")
        for prefix in prefixes:
            if prefix == "flow":
                continue
            mine = _event_index(tables, prefix)
            common = sorted(set(mine) & set(flow_events))
            gap = [abs(mine[key] - flow_events[key]) for key in common]
            summary[prefix]["matched_events"] = len(common)
            summary[prefix]["unmatched_events"] = len(set(mine) ^ set(flow_events))
            summary[prefix]["max_event_time_gap_to_flow"] = float(max(gap, default=0.0))
    return summary, tables


def write_analysis(run_dir: str | Path) -> tuple[dict, dict]:
    """Compute :func:`analyse_truncation_arrays` of a run from its saved states and store it as
    ``analysis.json`` and ``analysis.npz`` (once; later calls read the files)."""
    run_dir = Path(run_dir)
    if (run_dir / "analysis.json").is_file() and (run_dir / "analysis.npz").is_file():
        return read_json(run_dir / "analysis.json"), load_arrays(run_dir / "analysis.npz")
    cfg = read_json(run_dir / "config.json")
    summary, tables = analyse_truncation_arrays(load_arrays(run_dir), cfg)
    save_npz(run_dir / "analysis.npz", **tables)
    write_json(run_dir / "analysis.json", summary)
    return summary, tables
