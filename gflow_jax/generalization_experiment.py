"""The ``magnitude_generalization`` kind: magnitude of training trajectories vs generalisation.

MATH.md Part B, trajectory protocol. A sweep over learning rate × batch size × seed trains ReLU
MLPs (:mod:`gflow_jax.mlp_training`; per batch size, every (lr, seed) pair in one vmapped,
compiled program), streams each trajectory to disk, measures it (magnitude function and
dimension, PMag at t = √n and 0.01, E_α — Euclidean and the loss pseudometric ρ_S; magnitude of
probe representations per layer over training; a windowed trajectory measure over training as
a monitoring curve), and correlates every measure with the generalisation gaps (accuracy:
train − test; loss: test − train) by Kendall τ_b and the granulated ψ_lr, ψ_bs, Ψ
(:mod:`gflow_jax.generalization`).

Run directory (besides the common files written by ``gflow run``)::

    points/<id>/trajectory/     chunked stream of the K measured iterates (index.json + chunks)
    points/<id>/checkpoints/    every k-th iterate from step 0 (monitoring curve)
    points/<id>/monitor.npz     train/test loss and accuracy, probe representations over time
    points/<id>/training.json   training outcome (written last: training of the point is done)
    points/<id>/curves.npz      magnitude curves, representation and monitoring series
    points/<id>/result.json     measures and gaps, or the error (written last: point finished)
    table.csv, correlations.json, arrays.npz, metrics.jsonl (one row per point)

Resuming (``gflow run --resume RUN_DIR``) skips points with a ``result.json`` and batch sizes
whose points all have a ``training.json``; a batch size with unfinished training is retrained
from step 0 (deterministic: the same iterates), rewriting only the unfinished points.
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .config import ConfigError, OutputConfig, build_dataclass, require_choice, require_positive
from .figures import save_figure
from .kinds import ExperimentKind
from .runs import write_json, write_metrics

__all__ = [
    "MAGNITUDE_GENERALIZATION",
    "GridConfig",
    "MagnitudeGeneralizationConfig",
    "MeasuresConfig",
    "MGDataConfig",
    "MGTrainingConfig",
    "ModelConfig",
    "TrajectoryConfig",
    "correlation_table",
    "plot_magnitude_generalization",
    "point_id",
    "run_sweep",
]

_DIGITS_SIZE = 1797


@dataclass(frozen=True)
class MGDataConfig:
    """``source = "digits"`` (scikit-learn, 1797 8×8 images) or ``"clusters"`` (Gaussian
    clusters at random centres; the cluster keys apply only to it). ``label_noise``: fraction
    of training labels replaced by another class; ``seed``: data split and noise."""

    source: str = "digits"
    test_fraction: float = 0.2
    label_noise: float = 0.0
    seed: int = 0
    n_classes: int = 4
    points_per_class: int = 50
    dim: int = 10
    radius: float = 1.0
    separation: float = 1.0


@dataclass(frozen=True)
class ModelConfig:
    """ReLU MLP with hidden widths ``hidden`` (depth = its length), He-normal initialisation."""

    hidden: tuple[int, ...] = (32, 32)


@dataclass(frozen=True)
class MGTrainingConfig:
    """Optimiser (``"sgd"`` with optional ``momentum``, or ``"adam"``) and precision.

    ``dtype = "float32"`` trains in single precision (faster on some CPUs/GPUs); measures are
    always computed in float64 from the stored iterates."""

    optimizer: str = "sgd"
    momentum: float = 0.0
    dtype: str = "float64"
    eval_block: int = 512


@dataclass(frozen=True)
class GridConfig:
    """The sweep: every (learning rate, batch size, seed)."""

    learning_rates: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2)
    batch_sizes: tuple[int, ...] = (32, 64, 128)
    seeds: tuple[int, ...] = (0, 1, 2)


@dataclass(frozen=True)
class TrajectoryConfig:
    """Recording (:class:`gflow_jax.mlp_training.RecordingPlan`) and the probe batch (the
    first ``probe_size`` test points) whose representations at ``probe_layers`` are kept."""

    mode: str = "after_interpolation"
    n_iterates: int = 1000
    every: int = 10
    chunk_steps: int = 200
    max_steps: int = 20_000
    monitor_every: int = 200
    probe_size: int = 200
    probe_layers: tuple[int, ...] = (1, 2)


@dataclass(frozen=True)
class MeasuresConfig:
    """Measures of each trajectory.

    ``metrics``: ``"euclidean"`` (weight space) and/or ``"loss"`` (ρ_S over ``loss_examples``
    training examples, 0 = all). The magnitude function/dimension grid is t = 10^u/diam for
    ``n_scales`` values of u in ``log10_scale_range``; the dimension slope uses u in
    ``slope_window``. PMag is taken at t = √n and 0.01 on raw distances (n = number of
    iterates). ``monitor_window``: checkpoints per window of the monitoring curve;
    ``representation_scales``: grid size for probe-representation clouds.
    """

    metrics: tuple[str, ...] = ("euclidean", "loss")
    n_scales: int = 16
    log10_scale_range: tuple[float, ...] = (-1.0, 4.0)
    slope_window: tuple[float, ...] = (0.0, 2.0)
    alpha: float = 1.0
    loss_examples: int = 0
    monitor_window: int = 30
    representation_scales: int = 12


@dataclass(frozen=True)
class MagnitudeGeneralizationConfig:
    name: str = "magnitude_generalization"
    data: MGDataConfig = field(default_factory=MGDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: MGTrainingConfig = field(default_factory=MGTrainingConfig)
    grid: GridConfig = field(default_factory=GridConfig)
    trajectory: TrajectoryConfig = field(default_factory=TrajectoryConfig)
    measures: MeasuresConfig = field(default_factory=MeasuresConfig)
    output: OutputConfig = field(default_factory=OutputConfig)

    def __post_init__(self):
        _validate(self)

    @property
    def n_train(self) -> int:
        d = self.data
        total = _DIGITS_SIZE if d.source == "digits" else d.n_classes * d.points_per_class
        return total - int(round(d.test_fraction * total))

    @property
    def n_test(self) -> int:
        d = self.data
        total = _DIGITS_SIZE if d.source == "digits" else d.n_classes * d.points_per_class
        return int(round(d.test_fraction * total))


def _validate(cfg: MagnitudeGeneralizationConfig) -> None:
    if not cfg.name or "/" in cfg.name:
        raise ConfigError("name", f"must be a non-empty name without '/', got {cfg.name!r}")
    d, m, tr, g, tj, ms = cfg.data, cfg.model, cfg.training, cfg.grid, cfg.trajectory, cfg.measures
    require_choice("data.source", d.source, ("digits", "clusters"))
    if not 0.0 < d.test_fraction < 1.0:
        raise ConfigError("data.test_fraction", f"must lie in (0, 1), got {d.test_fraction}")
    if not 0.0 <= d.label_noise <= 1.0:
        raise ConfigError("data.label_noise", f"must lie in [0, 1], got {d.label_noise}")
    for k in ("n_classes", "points_per_class", "dim", "radius"):
        require_positive(f"data.{k}", getattr(d, k))
    if d.source == "clusters" and d.n_classes < 2:
        raise ConfigError("data.n_classes", "needs at least 2 classes")
    if d.separation < 0:
        raise ConfigError("data.separation", f"must be non-negative, got {d.separation}")
    if cfg.n_test < 1 or cfg.n_train < 1:
        raise ConfigError("data.test_fraction", "leaves an empty train or test set")

    if not m.hidden:
        raise ConfigError("model.hidden", "needs at least one hidden layer width")
    for i, w in enumerate(m.hidden):
        require_positive(f"model.hidden[{i}]", w)

    require_choice("training.optimizer", tr.optimizer, ("sgd", "adam"))
    if not 0.0 <= tr.momentum < 1.0:
        raise ConfigError("training.momentum", f"must lie in [0, 1), got {tr.momentum}")
    require_choice("training.dtype", tr.dtype, ("float64", "float32"))
    require_positive("training.eval_block", tr.eval_block)

    for key in ("learning_rates", "batch_sizes", "seeds"):
        values = getattr(g, key)
        if not values:
            raise ConfigError(f"grid.{key}", "must not be empty")
        if len(set(values)) != len(values):
            raise ConfigError(f"grid.{key}", f"has repeated values {list(values)}")
    for i, lr in enumerate(g.learning_rates):
        require_positive(f"grid.learning_rates[{i}]", lr)
    for i, bs in enumerate(g.batch_sizes):
        if not 1 <= bs <= cfg.n_train:
            raise ConfigError(
                f"grid.batch_sizes[{i}]", f"must lie in [1, {cfg.n_train}] (training points)"
            )
    for i, s in enumerate(g.seeds):
        if s < 0:
            raise ConfigError(f"grid.seeds[{i}]", f"must be non-negative, got {s}")

    require_choice("trajectory.mode", tj.mode, ("after_interpolation", "every"))
    for k in ("n_iterates", "every", "chunk_steps", "max_steps", "monitor_every", "probe_size"):
        require_positive(f"trajectory.{k}", getattr(tj, k))
    if tj.chunk_steps % tj.every:
        raise ConfigError("trajectory.chunk_steps", f"must be a multiple of every = {tj.every}")
    if tj.monitor_every % tj.chunk_steps:
        raise ConfigError(
            "trajectory.monitor_every", f"must be a multiple of chunk_steps = {tj.chunk_steps}"
        )
    if tj.mode == "every" and tj.max_steps % tj.chunk_steps:
        raise ConfigError(
            "trajectory.max_steps", f"must be a multiple of chunk_steps = {tj.chunk_steps}"
        )
    if tj.mode == "after_interpolation" and tj.n_iterates < 3:
        raise ConfigError("trajectory.n_iterates", "needs at least 3 iterates for a dimension")
    if tj.probe_size > cfg.n_test:
        raise ConfigError("trajectory.probe_size", f"must be at most {cfg.n_test} (test points)")
    for i, layer in enumerate(tj.probe_layers):
        if not 1 <= layer <= len(m.hidden):
            raise ConfigError(
                f"trajectory.probe_layers[{i}]",
                f"must be a hidden layer in 1..{len(m.hidden)} (model.hidden)",
            )

    if not ms.metrics:
        raise ConfigError("measures.metrics", "must not be empty")
    for i, metric in enumerate(ms.metrics):
        require_choice(f"measures.metrics[{i}]", metric, ("euclidean", "loss"))
    if ms.n_scales < 3:
        raise ConfigError("measures.n_scales", f"must be at least 3, got {ms.n_scales}")
    for key in ("log10_scale_range", "slope_window"):
        lo_hi = getattr(ms, key)
        if len(lo_hi) != 2 or not lo_hi[0] < lo_hi[1]:
            raise ConfigError(f"measures.{key}", f"must be [low, high] with low < high: {lo_hi}")
    lo, hi = ms.log10_scale_range
    grid = np.linspace(lo, hi, ms.n_scales)
    inside = (grid >= ms.slope_window[0] - 1e-12) & (grid <= ms.slope_window[1] + 1e-12)
    if inside.sum() < 2:
        raise ConfigError("measures.slope_window", "holds fewer than two grid scales")
    require_positive("measures.alpha", ms.alpha)
    if ms.loss_examples < 0 or ms.loss_examples > cfg.n_train:
        raise ConfigError(
            "measures.loss_examples", f"must lie in [0, {cfg.n_train}] (0 = all training points)"
        )
    if ms.monitor_window < 3:
        raise ConfigError("measures.monitor_window", "must be at least 3")
    if ms.representation_scales < 3:
        raise ConfigError("measures.representation_scales", "must be at least 3")


def config_from_table(table: dict) -> MagnitudeGeneralizationConfig:
    return build_dataclass(MagnitudeGeneralizationConfig, table)


# --------------------------------------------------------------------------------------------
# the sweep


def point_id(lr: float, bs: int, seed: int) -> str:
    """Directory name of one grid point, e.g. ``bs64-lr0.05-seed1``."""
    return f"bs{bs}-lr{lr:g}-seed{seed}"


def _dataset(cfg: MagnitudeGeneralizationConfig):
    from .mlp_training import clusters_dataset, digits_dataset

    d = cfg.data
    if d.source == "digits":
        data = digits_dataset(test_fraction=d.test_fraction, label_noise=d.label_noise, seed=d.seed)
    else:
        data = clusters_dataset(
            n_classes=d.n_classes,
            points_per_class=d.points_per_class,
            dim=d.dim,
            radius=d.radius,
            separation=d.separation,
            test_fraction=d.test_fraction,
            label_noise=d.label_noise,
            seed=d.seed,
        )
    if cfg.training.dtype == "float32":
        data = jax.tree.map(
            lambda a: a.astype(jnp.float32) if jnp.issubdtype(a.dtype, jnp.floating) else a, data
        )
    return data


def _init_models(cfg, data, seeds):
    from .mlp_training import init_mlp

    dtype = jnp.float32 if cfg.training.dtype == "float32" else jnp.float64
    keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 0) for s in seeds])
    batch_keys = jnp.stack([jax.random.fold_in(jax.random.PRNGKey(s), 1) for s in seeds])
    models = jax.vmap(
        lambda k: init_mlp(k, data.dim, cfg.model.hidden, data.n_classes, dtype=dtype)
    )(keys)
    return models, batch_keys


def _train_group(cfg, data, bs: int, points: list[dict], pending: set[str], root: Path, progress):
    """Train every (lr, seed) of batch size ``bs`` together; write the pending points."""
    from .mlp_training import MemberRecorder, RecordingPlan, TrainingSpec, train_and_record
    from .trajectory_io import ChunkedArrayWriter

    tj = cfg.trajectory
    plan = RecordingPlan(
        mode=tj.mode,
        n_iterates=tj.n_iterates,
        every=tj.every,
        chunk_steps=tj.chunk_steps,
        max_steps=tj.max_steps,
        monitor_every=tj.monitor_every,
        probe_layers=tuple(tj.probe_layers),
    )
    spec = TrainingSpec(
        optimizer=cfg.training.optimizer,
        momentum=cfg.training.momentum,
        batch_size=bs,
        eval_block=cfg.training.eval_block,
    )
    models, keys = _init_models(cfg, data, [p["seed"] for p in points])
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
        tmp = pdir / "monitor.npz.tmp"
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        tmp.replace(pdir / "monitor.npz")
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


def _measure_point(cfg, data, p: dict, pdir: Path) -> dict:
    """Measures and gaps of one trained point; writes curves.npz, returns the result."""
    from .generalization import cloud_measures, loss_pseudometric, trajectory_measures
    from .magnitude import pairwise_distances
    from .mlp_training import evaluate, flatten_params, init_mlp, loss_matrix, unflatten_params
    from .trajectory_io import read_stream

    ms, tj = cfg.measures, cfg.trajectory
    t0 = time.perf_counter()
    traj, steps, _ = read_stream(pdir / "trajectory")
    traj = jnp.asarray(traj, dtype=jnp.float64)
    like = init_mlp(jax.random.PRNGKey(0), data.dim, cfg.model.hidden, data.n_classes)
    d64 = jax.tree.map(
        lambda a: a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a, data
    )
    final = unflatten_params(traj[-1], like)
    tr_loss, tr_acc = evaluate(final, d64.x_train, d64.y_train, block=cfg.training.eval_block)
    te_loss, te_acc = evaluate(final, d64.x_test, d64.y_test, block=cfg.training.eval_block)
    result = {
        "train_loss": float(tr_loss),
        "train_acc": float(tr_acc),
        "test_loss": float(te_loss),
        "test_acc": float(te_acc),
        "acc_gap": float(tr_acc - te_acc),
        "loss_gap": float(te_loss - tr_loss),
        "n_iterates": int(traj.shape[0]),
        "first_step": int(steps[0]),
        "last_step": int(steps[-1]),
        "n_params": int(flatten_params(like).shape[0]),
    }
    measures: dict[str, float] = {}
    curves: dict[str, np.ndarray] = {"trajectory_steps": steps}
    warn: list[str] = []
    for metric in ms.metrics:
        if metric == "euclidean":
            D = pairwise_distances(traj)
        else:
            n_ex = ms.loss_examples or data.n_train
            L = loss_matrix(traj, like, d64.x_train[:n_ex], d64.y_train[:n_ex])
            D = loss_pseudometric(L)
        m = trajectory_measures(
            D,
            n_scales=ms.n_scales,
            log10_range=tuple(ms.log10_scale_range),
            slope_window=tuple(ms.slope_window),
            alpha=ms.alpha,
        )
        warn += [f"{metric}: {w}" for w in m.warnings]
        for k, v in m.values.items():
            measures[f"traj_{metric}_{k}"] = v
        curves[f"{metric}/scales"] = m.scales
        curves[f"{metric}/magnitude"] = m.magnitude
        curves[f"{metric}/dimension"] = m.dimension_profile
    result["trajectory_seconds"] = time.perf_counter() - t0

    # representations of the probe batch over training, per layer
    t1 = time.perf_counter()
    with np.load(pdir / "monitor.npz") as z:
        mon = {k: z[k] for k in z.files}
    curves["monitor_steps"] = mon["steps"]
    for k in ("train_loss", "train_acc", "test_loss", "test_acc"):
        curves[f"monitor/{k}"] = mon[k]
    for layer in tj.probe_layers:
        reps = mon[f"representations/layer{layer}"].astype(np.float64)
        values = cloud_measures(list(reps), n_scales=ms.representation_scales)
        dims = np.array([v["mag_dim_max"] for v in values])
        pmags = np.array([v["pmag_sqrt_n"] for v in values])
        curves[f"representations/layer{layer}/mag_dim_max"] = dims
        curves[f"representations/layer{layer}/pmag_sqrt_n"] = pmags
        measures[f"repr_L{layer}_mag_dim_max"] = float(dims[-1])
        measures[f"repr_L{layer}_pmag_sqrt_n"] = float(pmags[-1])

    # monitoring curve: Euclidean measures of a sliding window of checkpoints
    stream = pdir / ("checkpoints" if tj.mode == "after_interpolation" else "trajectory")
    ck, ck_steps, _ = read_stream(stream)
    W = ms.monitor_window
    windows, mon_at = [], []
    for s in mon["steps"]:
        upto = np.flatnonzero(ck_steps <= s)
        if upto.size >= 3:
            windows.append(ck[upto[-W:]].astype(np.float64))
            mon_at.append(int(s))
    values = cloud_measures(windows, n_scales=ms.representation_scales, pad_to=W)
    curves["window/steps"] = np.asarray(mon_at, dtype=np.int64)
    curves["window/mag_dim_max"] = np.array([v["mag_dim_max"] for v in values])
    curves["window/pmag_sqrt_n"] = np.array([v["pmag_sqrt_n"] for v in values])
    result["representation_seconds"] = time.perf_counter() - t1

    tmp = pdir / "curves.npz.tmp"
    with open(tmp, "wb") as fh:
        np.savez(fh, **curves)
    tmp.replace(pdir / "curves.npz")
    result["measures"] = measures
    result["warnings"] = warn[:20]
    result["n_warnings"] = len(warn)
    return result


def _grid_points(cfg) -> list[dict]:
    g = cfg.grid
    return [
        {"id": point_id(lr, bs, s), "lr": lr, "batch_size": bs, "seed": s}
        for bs in g.batch_sizes
        for lr in g.learning_rates
        for s in g.seeds
    ]


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
    data = _dataset(cfg)
    points = _grid_points(cfg)
    for p in points:
        (root / p["id"]).mkdir(exist_ok=True)
    finished = {p["id"] for p in points if (root / p["id"] / "result.json").is_file()}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(points), initial=len(finished), desc="sweep", unit="net")
    timings = {"train_seconds": 0.0, "measure_seconds": 0.0}
    try:
        for bs in cfg.grid.batch_sizes:
            group = [p for p in points if p["batch_size"] == bs]
            if all(p["id"] in finished for p in group):
                continue
            pending = {p["id"] for p in group if not (root / p["id"] / "training.json").is_file()}
            if pending:
                timings["train_seconds"] += _train_group(
                    cfg, data, bs, group, pending, root, progress
                )
            for p in group:
                if p["id"] in finished:
                    continue
                pdir = root / p["id"]
                t0 = time.perf_counter()
                training = json.loads((pdir / "training.json").read_text())
                result = {k: p[k] for k in ("id", "lr", "batch_size", "seed")}
                result["training"] = training
                if training["status"] != "ok":
                    result.update(status="failed", error=training["error"])
                else:
                    try:
                        result.update(_measure_point(cfg, data, p, pdir))
                        result["status"] = "ok"
                    except Exception as err:  # a failed point must not kill the sweep
                        result.update(
                            status="failed",
                            error=f"{type(err).__name__}: {err}",
                            traceback=traceback.format_exc(limit=5),
                        )
                result["measure_seconds"] = time.perf_counter() - t0
                timings["measure_seconds"] += result["measure_seconds"]
                write_json(pdir / "result.json", result)
                finished.add(p["id"])
                if bar is not None:
                    bar.update(1)
                if on_point_done is not None:
                    on_point_done(p["id"])
    finally:
        if bar is not None:
            bar.close()
    summary = _aggregate(cfg, run_dir, points)
    summary["timings"] = {
        **timings,
        "this_call_seconds": time.perf_counter() - t_start,
        "note": "times of this call only (a resumed run does not re-count finished points)",
    }
    return summary


# --------------------------------------------------------------------------------------------
# aggregation: correlation table


GAPS = ("acc_gap", "loss_gap")


def correlation_table(results: list[dict]) -> list[dict]:
    """τ_b, ψ_lr, ψ_bs, Ψ of every measure against every gap, over the successful points."""
    from .generalization import granulated_kendall, kendall_tau

    ok = [r for r in results if r.get("status") == "ok"]
    if not ok:
        return []
    names = sorted({k for r in ok for k in r["measures"]})
    skip = ("n_points", "n_unique", "max_condition", "argmax_scale")
    names = [n for n in names if not n.endswith(skip)]
    factors = {
        "lr": [r["lr"] for r in ok],
        "bs": [r["batch_size"] for r in ok],
        "seed": [r["seed"] for r in ok],
    }
    rows = []
    for name in names:
        values = [r["measures"].get(name, math.nan) for r in ok]
        row = {"measure": name}
        for gap in GAPS:
            g = [r[gap] for r in ok]
            gk = granulated_kendall(values, g, factors, over=("lr", "bs"))
            row[f"tau[{gap}]"] = kendall_tau(values, g)
            row[f"psi_lr[{gap}]"] = gk.psi["lr"]
            row[f"psi_bs[{gap}]"] = gk.psi["bs"]
            row[f"Psi[{gap}]"] = gk.Psi
        rows.append(row)
    return rows


def _format_table(rows: list[dict], n_ok: int, n_total: int) -> str:
    out = io.StringIO()
    cols = [f"{q}[{g}]" for g in GAPS for q in ("tau", "psi_lr", "psi_bs", "Psi")]
    out.write(f"Kendall tau_b and granulated psi over {n_ok} of {n_total} networks\n")
    out.write(f"{'measure':34s}" + "".join(f"{c:>18s}" for c in cols) + "\n")
    for r in rows:
        out.write(f"{r['measure']:34s}" + "".join(f"{r[c]:18.3f}" for c in cols) + "\n")
    return out.getvalue()


def _early_warning(cfg, run_dir: Path, ok: list[dict]) -> dict:
    """τ_b between the windowed trajectory dimension at each monitor step and the final gap."""
    from .generalization import kendall_tau

    series = {}
    for r in ok:
        with np.load(run_dir / "points" / r["id"] / "curves.npz") as z:
            series[r["id"]] = dict(
                zip(z["window/steps"].tolist(), z["window/mag_dim_max"], strict=True)
            )
    if not series:
        return {}
    common = sorted(set.intersection(*(set(s) for s in series.values())))
    out = {"steps": common}
    for gap in GAPS:
        out[f"tau[{gap}]"] = [
            kendall_tau([series[r["id"]][s] for r in ok], [r[gap] for r in ok]) for s in common
        ]
    return out


def _aggregate(cfg, run_dir: Path, points: list[dict]) -> dict:
    results = []
    for p in points:
        path = run_dir / "points" / p["id"] / "result.json"
        if path.is_file():
            results.append(json.loads(path.read_text()))
    ok = [r for r in results if r.get("status") == "ok"]
    rows = correlation_table(results)
    table_text = _format_table(rows, len(ok), len(points))
    print(table_text, end="")
    with open(run_dir / "table.csv", "w", newline="") as fh:
        if rows:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    early = _early_warning(cfg, run_dir, ok)
    write_json(run_dir / "correlations.json", {"table": rows, "early_warning": early})
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
    np.savez_compressed(run_dir / "arrays.npz", **arrays)
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
        "table": rows,
    }


def _run(cfg: MagnitudeGeneralizationConfig, run_dir: Path, progress: bool) -> dict:
    return run_sweep(cfg, run_dir, progress)


# --------------------------------------------------------------------------------------------
# figures (from the run directory only)

_SCATTER = (
    "traj_euclidean_mag_dim_max",
    "traj_loss_mag_dim_max",
    "traj_euclidean_pmag_sqrt_n",
    "traj_loss_pmag_sqrt_n",
    "traj_euclidean_e_alpha",
    "traj_loss_e_alpha",
)


def _load_results(run_dir: Path) -> tuple[dict, list[dict]]:
    cfg = json.loads((run_dir / "config.json").read_text())
    results = []
    for path in sorted((run_dir / "points").glob("*/result.json")):
        r = json.loads(path.read_text())
        if r.get("status") == "ok":
            results.append(r)
    return cfg, results


def _colours(values, cmap):
    import matplotlib.pyplot as plt

    vals = sorted(set(values))
    cm = plt.get_cmap(cmap)
    return {v: cm(i / max(len(vals) - 1, 1)) for i, v in enumerate(vals)}


def plot_magnitude_generalization(run_dir: str | Path) -> list[Path]:
    """Log-log magnitude curves, measure-vs-gap scatter (coloured by lr and by batch size) and
    monitoring curves of a ``magnitude_generalization`` run directory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    fig_dir = run_dir / "figures"
    fig_dir.mkdir(exist_ok=True)
    cfg, results = _load_results(run_dir)
    if not results:
        return []
    curves = {}
    for r in results:
        with np.load(run_dir / "points" / r["id"] / "curves.npz") as z:
            curves[r["id"]] = {k: z[k] for k in z.files}
    lr_c = _colours([r["lr"] for r in results], "viridis")
    bs_c = _colours([r["batch_size"] for r in results], "plasma")
    line_styles = ("-", "--", ":", "-.")
    styles = {
        bs: line_styles[i % 4] for i, bs in enumerate(sorted({r["batch_size"] for r in results}))
    }
    paths = []
    sub = (
        f"{cfg['data']['source']}, MLP {cfg['model']['hidden']}, {cfg['training']['optimizer']}, "
        f"K = {cfg['trajectory']['n_iterates']} ({cfg['trajectory']['mode']})"
    )

    # 1. magnitude functions and dimension profiles
    metrics = cfg["measures"]["metrics"]
    fig, axes = plt.subplots(2, len(metrics), figsize=(5.5 * len(metrics), 8), squeeze=False)
    for j, metric in enumerate(metrics):
        for r in results:
            c = curves[r["id"]]
            diam = r["measures"][f"traj_{metric}_diameter"]
            kw = {"color": lr_c[r["lr"]], "ls": styles[r["batch_size"]], "lw": 0.9, "alpha": 0.8}
            axes[0, j].loglog(c[f"{metric}/scales"] * diam, c[f"{metric}/magnitude"], **kw)
            axes[1, j].semilogx(c[f"{metric}/scales"] * diam, c[f"{metric}/dimension"], **kw)
        name = "Euclidean (weights)" if metric == "euclidean" else "ρ_S (losses)"
        axes[0, j].set(title=f"trajectory magnitude, {name}", ylabel="|tX|")
        axes[1, j].set(xlabel="t · diam", ylabel="dim(t) = d log|tX| / d log t")
    for lr, col in lr_c.items():
        axes[0, 0].plot([], [], color=col, label=f"lr {lr:g}")
    for bs, ls in styles.items():
        axes[0, 0].plot([], [], color="k", ls=ls, label=f"bs {bs}")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"Magnitude of training trajectories — {sub}", fontsize=10)
    paths.append(save_figure(fig, fig_dir / "magnitude_curves.png"))

    # 2. measure vs gap, coloured by lr and by batch size
    table = {
        row["measure"]: row
        for row in json.loads((run_dir / "correlations.json").read_text())["table"]
    }
    names = [n for n in _SCATTER if n in table]
    layers = cfg["trajectory"]["probe_layers"]
    if layers and f"repr_L{layers[-1]}_mag_dim_max" in table:
        names.append(f"repr_L{layers[-1]}_mag_dim_max")
    for gap in GAPS:
        fig, axes = plt.subplots(2, len(names), figsize=(3.3 * len(names), 6.4), squeeze=False)
        for j, n in enumerate(names):
            x = [r["measures"][n] for r in results]
            y = [r[gap] for r in results]
            for i, (key, cols) in enumerate((("lr", lr_c), ("batch_size", bs_c))):
                axes[i, j].scatter(x, y, c=[cols[r[key]] for r in results], s=18)
                axes[i, j].set_xlabel(n, fontsize=7)
            row = table[n]
            axes[0, j].set_title(
                f"τ={row[f'tau[{gap}]']:.2f}  Ψ={row[f'Psi[{gap}]']:.2f}", fontsize=8
            )
        axes[0, 0].set_ylabel(f"{gap} (colour: lr)")
        axes[1, 0].set_ylabel(f"{gap} (colour: batch size)")
        for lr, col in lr_c.items():
            axes[0, -1].scatter([], [], color=col, label=f"lr {lr:g}")
        for bs, col in bs_c.items():
            axes[1, -1].scatter([], [], color=col, label=f"bs {bs}")
        axes[0, -1].legend(fontsize=6)
        axes[1, -1].legend(fontsize=6)
        fig.suptitle(f"Measures vs generalisation gap ({gap}) — {sub}", fontsize=10)
        paths.append(save_figure(fig, fig_dir / f"measure_vs_{gap}.png"))

    # 3. monitoring curves
    early = json.loads((run_dir / "correlations.json").read_text()).get("early_warning", {})
    fig, axes = plt.subplots(1, 4, figsize=(19, 4))
    for r in results:
        c = curves[r["id"]]
        kw = {"color": lr_c[r["lr"]], "ls": styles[r["batch_size"]], "lw": 0.8, "alpha": 0.8}
        axes[0].plot(c["window/steps"], c["window/mag_dim_max"], **kw)
        if layers:
            key = f"representations/layer{layers[-1]}/mag_dim_max"
            axes[1].plot(c["monitor_steps"], c[key], **kw)
        axes[2].plot(c["monitor_steps"], c["monitor/train_acc"] - c["monitor/test_acc"], **kw)
    axes[0].set(
        xlabel="step",
        ylabel="max dim",
        title=f"window of {cfg['measures']['monitor_window']} checkpoints (Euclidean)",
    )
    if layers:
        axes[1].set(
            xlabel="step", ylabel="max dim", title=f"probe representations, layer {layers[-1]}"
        )
    axes[2].set(xlabel="step", ylabel="train acc − test acc", title="accuracy gap during training")
    for gap in GAPS:
        if early.get("steps"):
            axes[3].plot(early["steps"], early[f"tau[{gap}]"], marker=".", label=gap)
    axes[3].axhline(0, color="k", lw=0.5)
    axes[3].set(
        xlabel="step", ylabel="Kendall τ_b", title="τ(window dim at step, final gap)", ylim=(-1, 1)
    )
    axes[3].legend(fontsize=8)
    fig.suptitle(f"Monitoring during training — {sub}", fontsize=10)
    paths.append(save_figure(fig, fig_dir / "monitoring.png"))
    return paths


def _figures(run_dir: Path) -> list[Path]:
    return plot_magnitude_generalization(run_dir)


MAGNITUDE_GENERALIZATION = ExperimentKind(
    name="magnitude_generalization",
    description="magnitude (dimension) of SGD trajectories and representations vs the "
    "generalisation gap over a learning-rate x batch-size x seed sweep",
    from_table=config_from_table,
    run=_run,
    figures=_figures,
    resumable=True,
)
