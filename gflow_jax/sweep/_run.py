"""Running a whole sweep (here or as array jobs), then merging its points."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from ..experiments import ConfigError
from ._cluster import submit_sweep
from ._points import Hook, run_points
from ._report import merge_sweep


def run_sweep(
    sweep_dir: str | Path,
    *,
    devices: int | Sequence | None = None,
    executor: str = "local",
    jobs: int | None = None,
    progress: bool = True,
    batch: bool = True,
    hook: Hook | None = None,
    log: Callable[[str], None] = print,
) -> dict:
    """Run every unfinished point of a sweep directory, then merge the results.

    ``executor="local"`` runs in this process (batched where the kind can, sharded over
    ``devices``); ``"slurm"`` and ``"submitit-local"`` split the unfinished points into ``jobs``
    chunks, one array job each (:func:`submit_sweep`), and wait for them. Returns the
    merged sweep summary (:func:`merge_sweep`).
    """
    sweep_dir = Path(sweep_dir)
    t0 = time.perf_counter()
    if executor == "local":
        run_points(sweep_dir, devices=devices, progress=progress, batch=batch, hook=hook, log=log)
    elif executor in ("slurm", "submitit-local"):
        submit_sweep(
            sweep_dir, executor=executor, jobs=jobs, devices=devices, progress=progress, log=log
        )
    else:
        raise ConfigError(
            "--executor", f"must be 'local', 'slurm' or 'submitit-local', got {executor!r}"
        )
    return merge_sweep(sweep_dir, seconds=time.perf_counter() - t0)
