"""Running the points of a sweep directory in this process: batched where the kind can, point by
point otherwise; every point's run directory ends ``complete`` or ``failed``."""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from ..core import resolve_devices
from ..io import environment_info, progress_bar, read_json, utc_now, write_json
from ._directory import load_point_config, load_sweep

Hook = Callable[[int, str], None]


def run_points(
    sweep_dir: str | Path,
    indices: Iterable[int] | None = None,
    *,
    devices: int | Sequence | None = None,
    progress: bool = True,
    batch: bool = True,
    hook: Hook | None = None,
    log: Callable[[str], None] = print,
) -> dict[int, str]:
    """Run the given points of a sweep directory (default: all) that are not complete.

    Each point's run directory ends ``complete`` (``summary.json`` written, figures if the
    sweep asks) or ``failed`` (``status.json`` holds the error; the sweep goes on). ``hook(i,
    state)`` is called after each point is recorded (raising from it stops the sweep: points
    already started are marked ``interrupted`` and ``--resume`` reruns them). Returns the new
    state of every point attempted.
    """
    sweep_dir = Path(sweep_dir)
    meta, spec = load_sweep(sweep_dir)
    run_dirs = [sweep_dir / p["run_dir"] for p in meta["points"]]
    indices = range(len(run_dirs)) if indices is None else list(indices)
    pending = []
    for i in indices:
        status = read_json(run_dirs[i] / "status.json", missing=None) or {}
        if status.get("state") != "complete":
            pending.append(i)
    if not pending:
        return {}
    loaded = [load_point_config(run_dirs[i]) for i in pending]
    kind = loaded[0][0]
    configs = [c for _, c in loaded]
    env = environment_info()
    statuses: dict[int, dict] = {}
    for i in pending:
        write_json(run_dirs[i] / "env.json", env)
        statuses[i] = {"state": "running", "started": utc_now(), "sweep": str(sweep_dir)}
        write_json(run_dirs[i] / "status.json", statuses[i])
    results: dict[int, str] = {}
    bar = _progress_bar(len(pending), f"sweep {kind.name}", progress)

    def record(i: int, result: dict | BaseException) -> None:
        status = statuses[i]
        if not isinstance(result, BaseException) and spec.point_figures:
            try:
                kind.figures(run_dirs[i])
            except Exception as err:  # as `gflow run`: a figure error fails the run
                result = err
        if isinstance(result, BaseException):
            status.update(state="failed", error=f"{type(result).__name__}: {result}")
            status["traceback"] = "".join(traceback.format_exception(result))
        else:
            write_json(run_dirs[i] / "summary.json", result)
            status.update(state="complete", finished=utc_now())
        write_json(run_dirs[i] / "status.json", status)
        results[i] = status["state"]
        bar.update(1)
        if hook is not None:
            hook(i, status["state"])

    try:
        remaining = list(range(len(pending)))
        if batch and kind.run_batch is not None:
            batches = iter(
                kind.run_batch(
                    configs,
                    [run_dirs[i] for i in pending],
                    devices=resolve_devices(devices),
                    max_batch=None if spec.max_batch == "auto" else spec.max_batch,
                    log=lambda m: _log(bar, log, m),
                )
            )
            while True:
                try:
                    j, result = next(batches)
                except StopIteration:
                    break
                except Exception as err:  # the batch as a whole broke: go on point by point
                    _log(
                        bar,
                        log,
                        f"batched run failed ({type(err).__name__}: {err}); "
                        "running the remaining points one by one",
                    )
                    break
                remaining.remove(j)
                record(pending[j], result)  # a hook raising here stops the sweep
        for j in list(remaining):
            try:
                result = kind.run(configs[j], run_dirs[pending[j]], False)
            except Exception as err:  # recorded; the sweep goes on
                result = err
            remaining.remove(j)
            record(pending[j], result)
    except BaseException as err:
        for i, status in statuses.items():
            if status["state"] == "running":
                status.update(state="interrupted", error=f"{type(err).__name__}: {err}")
                write_json(run_dirs[i] / "status.json", status)
        raise
    finally:
        bar.close()
    return results


def _progress_bar(total: int, desc: str, enabled: bool):
    return progress_bar(total, desc, enabled=enabled, unit="point", leave=True)


def _log(bar, log: Callable[[str], None], message: str) -> None:
    if getattr(bar, "disable", True):
        log(f"gflow sweep: {message}")
    else:
        bar.write(f"gflow sweep: {message}")
