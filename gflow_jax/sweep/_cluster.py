"""Sweeps on several machines: Slurm job arrays through submitit (optional ``cluster`` extra).

The unfinished points of a sweep directory are split into ``jobs`` contiguous chunks (contiguous
so grid neighbours, which usually share shapes, stay in one batched program); each chunk is one
array job that runs :func:`~gflow_jax.sweep.run_points` on its node (batched and sharded over
that node's devices; with the submitting process's compilation cache, where the node can reach
it, so the jobs compile each program once between them) and writes its points' run directories
on the shared file system. The submitting process waits with a progress bar over points,
records a crashed job's error in its unfinished points, and merges everything from the run
directories.

``executor="slurm"`` uses ``submitit.AutoExecutor(cluster="slurm")`` with the ``[sweep.slurm]``
parameters (``slurm_partition``, ``timeout_min``, ``gpus_per_node``, ...);
``"submitit-local"`` uses ``submitit.LocalExecutor`` (subprocesses on this machine; what the
tests run); its jobs share this process's cores out between them (:func:`cpu_shares`), each
pinned to its own, with as many BLAS threads: unpinned, the jobs' thread pools contend for every
core (measured on a 2-core machine, two jobs: an exact solve 7–11 ms and a Tsit5 solve 100 ms,
against 6–6.5 ms and 67–76 ms pinned).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..core._devices import cpu_affinity
from ..experiments import ConfigError, kind_target, register_kind
from ..io import (
    compilation_cache_dir,
    enable_compilation_cache,
    progress_bar,
    read_json,
    write_json,
)
from ._directory import load_sweep, point_states
from ._points import run_points


def run_chunk(
    sweep_dir: str,
    indices: list[int],
    devices: int | None,
    kind_name: str,
    kind_target: str,
    cache_dir: str | None = None,
    cpus: list[int] | None = None,
) -> dict[int, str]:
    """Entry point of one array job: run ``indices`` of the sweep (kinds registered at run time
    in the submitting process are registered here too), with the compilation cache
    ``cache_dir`` if the job can write it, on the cores ``cpus`` (a local job's share; before
    JAX starts its backends, which size their thread pools by the cores they may use)."""
    if cpus:
        _pin(cpus)
    if cache_dir is not None:
        try:
            enable_compilation_cache(cache_dir)
        except OSError as err:  # e.g. not on this node's file systems: compile without
            print(f"gflow sweep: compilation cache off in this job: {err}")
    register_kind(kind_name, kind_target)
    return run_points(sweep_dir, indices, devices=devices, progress=False)


def cpu_shares(n_jobs: int) -> list[list[int] | None]:
    """This process's cores split into ``n_jobs`` contiguous shares, one per local job;
    ``None`` for every job where there is nothing to share (one job, fewer cores than jobs, or
    a platform without CPU affinity)."""
    cores = cpu_affinity()
    if n_jobs <= 1 or cores is None or len(cores) < n_jobs:
        return [None] * max(n_jobs, 0)
    return [[int(c) for c in share] for share in np.array_split(np.asarray(cores), n_jobs)]


def _pin(cpus: list[int]) -> None:
    """Run this process on ``cpus`` with as many BLAS threads (threadpoolctl: the BLAS library
    sized its pool when NumPy was imported)."""
    try:
        os.sched_setaffinity(0, cpus)
    except OSError as err:  # e.g. cores taken away since: run unpinned
        print(f"gflow sweep: this job runs unpinned ({err})")
        return
    try:
        from threadpoolctl import threadpool_limits  # comes with scikit-learn
    except ImportError:  # pragma: no cover - a dependency of a dependency
        pass
    else:
        threadpool_limits(limits=len(cpus))
    print(f"gflow sweep: this job runs on cores {cpus}")


def _executor(executor: str, folder: Path, slurm: dict):
    try:
        import submitit
    except ImportError as err:
        raise ConfigError(
            "--executor",
            f"{executor!r} needs submitit: pip install 'gflow_jax[cluster]' ({err})",
        ) from err
    if executor == "slurm":
        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        ex.update_parameters(**{"name": "gflow-sweep", **slurm})
    else:
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=int(slurm.get("timeout_min", 60)))
    return ex


def submit_sweep(
    sweep_dir: str | Path,
    *,
    executor: str = "submitit-local",
    jobs: int | None = None,
    devices: int | Sequence | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    poll_seconds: float = 1.0,
) -> list[list[int]]:
    """Run the unfinished points of a sweep as ``jobs`` array jobs and wait for them.

    Returns the chunks of point indices, one per job (empty if nothing was left to do).
    """
    sweep_dir = Path(sweep_dir).resolve()
    meta, spec = load_sweep(sweep_dir)
    pending = [i for i, s in enumerate(point_states(sweep_dir)) if s != "complete"]
    if not pending:
        return []
    if devices is not None and not isinstance(devices, int):
        devices = len(devices)
    n_jobs = min(jobs or spec.jobs, len(pending))
    chunks = [[int(i) for i in c] for c in np.array_split(np.asarray(pending), n_jobs)]
    ex = _executor(executor, sweep_dir / "submitit", spec.slurm)
    kind = meta["kind"]
    target = kind_target(kind)
    # local jobs share this machine's cores; Slurm binds its jobs itself
    shares = cpu_shares(n_jobs) if executor != "slurm" else [None] * n_jobs
    submitted = ex.map_array(
        run_chunk,
        [str(sweep_dir)] * n_jobs,
        chunks,
        [devices] * n_jobs,
        [kind] * n_jobs,
        [target] * n_jobs,
        [compilation_cache_dir()] * n_jobs,
        shares,
    )
    ids = [str(j.job_id) for j in submitted]
    pinned = f" (cores {shares})" if any(shares) else ""
    log(
        f"gflow sweep: {len(pending)} points in {n_jobs} {executor} array jobs: "
        f"{', '.join(ids)}{pinned}"
    )
    write_json(
        sweep_dir / "jobs.json",
        {"executor": executor, "jobs": ids, "chunks": chunks, "cpus": shares},
    )

    bar = progress_bar(
        len(pending), f"sweep {kind} ({executor})", enabled=progress, unit="point", leave=True
    )
    try:
        while True:
            finished = all(j.done() for j in submitted)
            states = point_states(sweep_dir)
            bar.n = sum(states[i] in ("complete", "failed") for i in pending)
            bar.refresh()
            if finished:
                break
            time.sleep(poll_seconds)
    finally:
        bar.close()

    for job, chunk in zip(submitted, chunks, strict=True):
        try:
            job.result()
        except Exception as err:  # a crashed or cancelled job: its unfinished points failed
            message = f"array job {job.job_id} failed: {type(err).__name__}: {err}"
            log(f"gflow sweep: {message}")
            for i in chunk:
                status_path = sweep_dir / meta["points"][i]["run_dir"] / "status.json"
                status = read_json(status_path, missing=None) or {}
                if status.get("state") not in ("complete", "failed"):
                    status.update(state="failed", error=message)
                    write_json(status_path, status)
    return chunks
