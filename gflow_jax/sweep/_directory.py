"""Sweeps: a ``[sweep]`` table in any experiment config, run point by point or batched.

Schema (every point is a set of ``key = value`` overrides of the base config)::

    [sweep]
    mode = "grid"          # "grid": Cartesian product of the axes, first axis slowest
                           # "random": n_samples points, each axis drawn independently
    n_samples = 16         # random mode only (required there)
    seed = 0               # random mode only: seed of the sweep's own generator
    max_batch = "auto"     # points per compiled call (batched kinds): "auto" = what fits in
                           # an accelerator's free memory (large grids stream in chunks), 128
                           # per CPU device; or a number
    point_figures = false  # draw each point's figures (``gflow figures RUN_DIR`` can later)
    jobs = 4               # submitit executors: number of array jobs (chunks of the points)

    [sweep.axes]           # dotted config keys, quoted or as nested tables
    seed = [0, 1, 2, 3]                          # a list: the grid values (random: a choice)
    "gd.etas" = [[0.05], [0.025]]
    "data.radius" = {linspace = [0.3, 0.6, 4]}  # grid generators: linspace, logspace [a, b, n]
    "flow.rtol" = {log_uniform = [1e-9, 1e-6]}  # random: uniform, log_uniform, int_uniform
                                                 #   [lo, hi] (inclusive ints), choice [...]

    [sweep.slurm]          # passed to submitit's update_parameters (slurm executor), e.g.
    timeout_min = 60       # slurm_partition = "gpu", gpus_per_node = 1, cpus_per_task = 8

Every point is validated with its kind's ``from_table`` before anything runs; an error names
the sweep key (``sweep.axes.gd.etas``), the point and the underlying config error.

A sweep directory ``<root>/<name>-sweep-<stamp>/`` holds ``sweep.json`` (the base config, the
spec and every point's overrides), ``points/pNNNNN/`` (one run directory per point, exactly as
``gflow run`` writes it, ``status.json`` ``pending`` → ``running`` → ``complete``/``failed``),
``summary.csv`` (one row per point: state, axis values, scalar summary and final metrics),
``summary.json`` and ``figures/`` (final metrics against each axis).

Execution: kinds with a ``run_batch`` (the truncation kind) run each group of same-shape points
as one vmapped compiled program, sharded over local devices (:func:`~gflow_jax.core.call_batched`);
other kinds run point by point through ``kind.run``. A failed point is recorded (``status.json``
``failed`` with the error) and the sweep goes on; ``--resume`` reruns every point not complete.
Several machines: Slurm job arrays via submitit (:func:`submit_sweep`).
"""

from __future__ import annotations

from pathlib import Path

from ..experiments import config_snapshot, load_experiment
from ..io import create_run_dir, read_json, utc_now, write_json
from ._spec import SweepPlan, SweepSpec, parse_sweep


def point_dir(sweep_dir: Path, index: int) -> Path:
    return sweep_dir / "points" / f"p{index:05d}"


def create_sweep(plan: SweepPlan, root: str | Path | None = None) -> Path:
    """A new sweep directory with ``sweep.json`` and one ``pending`` run directory per point
    (``config.json`` written), under ``root`` (default: the base config's ``output.root``)."""
    first = plan.configs[0]
    sweep_dir = create_run_dir(root or first.output.root, f"{first.name}-sweep")
    (sweep_dir / "points").mkdir()
    for i, config in enumerate(plan.configs):
        run_dir = point_dir(sweep_dir, i)
        run_dir.mkdir()
        (run_dir / "figures").mkdir()
        write_json(run_dir / "config.json", config_snapshot(plan.kind, config))
        write_json(run_dir / "status.json", {"state": "pending"})
    write_json(
        sweep_dir / "sweep.json",
        {
            "kind": plan.kind.name,
            "created": utc_now(),
            "base": plan.base,
            "sweep": plan.spec.to_dict(),
            "points": [
                {
                    "index": i,
                    "run_dir": str(point_dir(sweep_dir, i).relative_to(sweep_dir)),
                    "overrides": point,
                }
                for i, point in enumerate(plan.points)
            ],
        },
    )
    return sweep_dir


def load_sweep(sweep_dir: str | Path) -> tuple[dict, SweepSpec]:
    """``sweep.json`` of a sweep directory and its spec."""
    sweep_dir = Path(sweep_dir)
    path = sweep_dir / "sweep.json"
    if not path.is_file():
        raise FileNotFoundError(f"not a sweep directory (no sweep.json): {sweep_dir}")
    meta = read_json(path)
    return meta, parse_sweep(meta["sweep"])


def point_states(sweep_dir: str | Path) -> list[str]:
    """The ``status.json`` state of every point (``missing`` if unreadable)."""
    meta, _ = load_sweep(sweep_dir)
    states = []
    for p in meta["points"]:
        status = read_json(Path(sweep_dir) / p["run_dir"] / "status.json", missing=None)
        states.append(status.get("state", "missing") if status else "missing")
    return states


def load_point_config(run_dir: Path):
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"sweep point has no config.json: {run_dir}")
    return load_experiment(table=read_json(config_file))
