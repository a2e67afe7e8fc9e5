"""Measuring one trained grid point: generalisation gaps, trajectory measures (magnitude and PH
dimension, Euclidean and ρ_S), probe-representation measures over training and the windowed
monitoring curve."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ...diagnostics import cloud_measures, loss_pseudometric, trajectory_measures
from ...dynamics import evaluate, flatten_params, init_mlp, loss_matrix, unflatten_params
from ...io import load_arrays, read_stream, save_npz
from ...magnitude import pairwise_distances


def _gaps(cfg, d64, final) -> dict:
    """Train/test loss and accuracy of the final iterate and the two generalisation gaps."""
    block = cfg.training.eval_block
    tr_loss, tr_acc = evaluate(final, d64.x_train, d64.y_train, block=block)
    te_loss, te_acc = evaluate(final, d64.x_test, d64.y_test, block=block)
    return {
        "train_loss": float(tr_loss),
        "train_acc": float(tr_acc),
        "test_loss": float(te_loss),
        "test_acc": float(te_acc),
        "acc_gap": float(tr_acc - te_acc),
        "loss_gap": float(te_loss - tr_loss),
    }


def _trajectory(cfg, d64, traj, like, data, measures, curves, timings) -> list[str]:
    """Measures of the trajectory cloud under every configured metric; returns the warnings and
    fills ``timings[metric]`` (seconds per stage and the magnitude engine)."""
    ms = cfg.measures
    warn: list[str] = []
    for metric in ms.metrics:
        t0 = time.perf_counter()
        if metric == "euclidean":
            D = pairwise_distances(traj)
        else:
            n_ex = ms.loss_examples or data.n_train
            D = loss_pseudometric(loss_matrix(traj, like, d64.x_train[:n_ex], d64.y_train[:n_ex]))
        D.block_until_ready()
        distances = time.perf_counter() - t0
        m = trajectory_measures(
            D,
            n_scales=ms.n_scales,
            log10_range=tuple(ms.log10_scale_range),
            slope_window=tuple(ms.slope_window),
            alpha=ms.alpha,
            ph_sizes=tuple(ms.ph_sizes),
            ph_repeats=ms.ph_repeats,
        )
        timings[metric] = {"distances": distances, **m.seconds, "engine": m.engine}
        warn += [f"{metric}: {w}" for w in m.warnings]
        measures.update({f"traj_{metric}_{k}": v for k, v in m.values.items()})
        curves[f"{metric}/scales"] = m.scales
        curves[f"{metric}/magnitude"] = m.magnitude
        curves[f"{metric}/dimension"] = m.dimension_profile
    return warn


def _representations(cfg, mon: dict, measures: dict, curves: dict) -> None:
    """Magnitude measures of the probe representations at every monitored step, per layer."""
    curves["monitor_steps"] = mon["steps"]
    for k in ("train_loss", "train_acc", "test_loss", "test_acc"):
        curves[f"monitor/{k}"] = mon[k]
    for layer in cfg.trajectory.probe_layers:
        reps = mon[f"representations/layer{layer}"].astype(np.float64)
        values = cloud_measures(list(reps), n_scales=cfg.measures.representation_scales)
        dims = np.array([v["mag_dim_max"] for v in values])
        pmags = np.array([v["pmag_sqrt_n"] for v in values])
        curves[f"representations/layer{layer}/mag_dim_max"] = dims
        curves[f"representations/layer{layer}/pmag_sqrt_n"] = pmags
        measures[f"repr_L{layer}_mag_dim_max"] = float(dims[-1])
        measures[f"repr_L{layer}_pmag_sqrt_n"] = float(pmags[-1])


def _monitoring(cfg, pdir: Path, monitor_steps, curves: dict) -> None:
    """Euclidean measures of a sliding window of checkpoints at every monitored step."""
    tj, W = cfg.trajectory, cfg.measures.monitor_window
    stream = pdir / ("checkpoints" if tj.mode == "after_interpolation" else "trajectory")
    ck, ck_steps, _ = read_stream(stream)
    windows, mon_at = [], []
    for s in monitor_steps:
        upto = np.flatnonzero(ck_steps <= s)
        if upto.size >= 3:
            windows.append(ck[upto[-W:]].astype(np.float64))
            mon_at.append(int(s))
    values = cloud_measures(windows, n_scales=cfg.measures.representation_scales)
    curves["window/steps"] = np.asarray(mon_at, dtype=np.int64)
    curves["window/mag_dim_max"] = np.array([v["mag_dim_max"] for v in values])
    curves["window/pmag_sqrt_n"] = np.array([v["pmag_sqrt_n"] for v in values])


def measure_point(cfg, data, pdir: Path) -> dict:
    """Measures and gaps of one trained point (its streams in ``pdir``); writes
    ``curves.npz`` and returns the result (JSON-ready)."""
    t0 = time.perf_counter()
    traj, steps, _ = read_stream(pdir / "trajectory")
    traj = jnp.asarray(traj, dtype=jnp.float64)
    like = init_mlp(jax.random.PRNGKey(0), data.dim, cfg.model.hidden, data.n_classes)
    d64 = jax.tree.map(
        lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, data
    )
    result = _gaps(cfg, d64, unflatten_params(traj[-1], like))
    result.update(
        n_iterates=int(traj.shape[0]),
        first_step=int(steps[0]),
        last_step=int(steps[-1]),
        n_params=int(flatten_params(like).shape[0]),
    )
    measures: dict[str, float] = {}
    curves: dict[str, np.ndarray] = {"trajectory_steps": steps}
    timings: dict[str, dict] = {}
    warn = _trajectory(cfg, d64, traj, like, data, measures, curves, timings)
    result["trajectory_seconds"] = time.perf_counter() - t0
    result["trajectory_timings"] = timings

    t1 = time.perf_counter()
    mon = load_arrays(pdir / "monitor.npz")
    _representations(cfg, mon, measures, curves)
    _monitoring(cfg, pdir, mon["steps"], curves)
    result["representation_seconds"] = time.perf_counter() - t1

    save_npz(pdir / "curves.npz", compressed=False, **curves)
    result["measures"] = measures
    result["warnings"] = warn[:20]
    result["n_warnings"] = len(warn)
    return result
