"""Training the grid of a ``magnitude_generalization`` run: one vmapped program per batch size,
every trajectory streamed to disk."""

from __future__ import annotations

import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from ...core import clusters_dataset, digits_dataset
from ...dynamics import MemberRecorder, TrainingSpec, init_mlp, train_and_record
from ...io import ChunkedArrayWriter, save_npz, write_json
from ._config import MagnitudeGeneralizationConfig


def point_id(lr: float, bs: int, seed: int) -> str:
    """Directory name of one grid point, e.g. ``bs64-lr0.05-seed1``."""
    return f"bs{bs}-lr{lr:g}-seed{seed}"


#: the keys of the data section that are the keywords of :func:`~gflow_jax.clusters_dataset`
_CLUSTERS_DATASET_KEYS = (
    "n_classes",
    "points_per_class",
    "dim",
    "radius",
    "separation",
    "distribution",
    "layout",
    "test_fraction",
    "label_noise",
    "seed",
)


def dataset(cfg: MagnitudeGeneralizationConfig):
    d = cfg.data
    if d.source == "digits":
        data = digits_dataset(test_fraction=d.test_fraction, label_noise=d.label_noise, seed=d.seed)
    else:
        data = clusters_dataset(**{k: getattr(d, k) for k in _CLUSTERS_DATASET_KEYS})
    if cfg.training.dtype == "float32":
        data = jax.tree.map(
            lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a, data
        )
    return data


def init_models(cfg, data, seeds):
    dtype = jnp.float32 if cfg.training.dtype == "float32" else jnp.float64
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 0) for s in seeds])
    batch_keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 1) for s in seeds])
    models = jax.vmap(
        lambda k: init_mlp(k, data.dim, cfg.model.hidden, data.n_classes, dtype=dtype)
    )(keys)
    return models, batch_keys


def train_group(cfg, data, bs: int, points: list[dict], pending: set[str], root: Path, progress):
    """Train every (lr, seed) of batch size ``bs`` together; write the pending points."""
    tj = cfg.trajectory
    plan = tj  # the trajectory section is the recording plan
    spec = TrainingSpec(
        optimizer=cfg.training.optimizer,
        momentum=cfg.training.momentum,
        batch_size=bs,
        eval_block=cfg.training.eval_block,
    )
    models, keys = init_models(cfg, data, [p["seed"] for p in points])
    recorders = []
    for p in points:
        if p["id"] not in pending:
            recorders.append(None)
            continue
        pdir = root / p["id"]
        (pdir / "training.json").unlink(missing_ok=True)
        meta = {"lr": p["lr"], "batch_size": bs, "seed": p["seed"]}
        recorders.append(
            MemberRecorder(
                trajectory=ChunkedArrayWriter(pdir / "trajectory", meta=meta),
                checkpoints=(
                    ChunkedArrayWriter(pdir / "checkpoints", meta=meta)
                    if tj.mode == "after_interpolation"
                    else None
                ),
            )
        )
    lrs = jnp.asarray([p["lr"] for p in points], dtype=models.weights[0].dtype)
    probe = data.x_test[: tj.probe_size]
    t0 = time.perf_counter()
    outcomes = train_and_record(
        models, lrs, keys, data, probe, spec, plan, recorders, progress=progress, desc=f"bs={bs}"
    )
    seconds = time.perf_counter() - t0
    for p, o in zip(points, outcomes, strict=True):
        if p["id"] not in pending:
            continue
        pdir = root / p["id"]
        arrays = {"steps": np.asarray(o.monitor_steps, dtype=np.int64)}
        arrays.update({k: np.asarray(v) for k, v in o.monitor.items()})
        for layer, reps in zip(tj.probe_layers, o.representations, strict=True):
            arrays[f"representations/layer{layer}"] = np.stack(reps)
        save_npz(pdir / "monitor.npz", compressed=False, **arrays)
        write_json(
            pdir / "training.json",
            {
                "status": o.status,
                "error": o.error,
                "onset_step": o.onset_step,
                "end_step": o.end_step,
                "group_seconds": seconds,
                "group_size": len(points),
            },
        )
    return seconds


def grid_points(cfg) -> list[dict]:
    g = cfg.grid
    return [
        {"id": point_id(lr, bs, s), "lr": lr, "batch_size": bs, "seed": s}
        for bs in g.batch_sizes
        for lr in g.learning_rates
        for s in g.seeds
    ]
