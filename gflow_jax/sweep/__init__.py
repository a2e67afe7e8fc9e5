"""Sweeps: a ``[sweep]`` table in any experiment config, run point by point or batched, sharded
over local devices, or as Slurm array jobs; every point is a run directory, merged into one
table and figures.
"""

from ._cluster import run_chunk as run_chunk, submit_sweep as submit_sweep
from ._directory import (
    create_sweep as create_sweep,
    load_sweep as load_sweep,
    point_states as point_states,
)
from ._points import run_points as run_points
from ._report import merge_sweep as merge_sweep, plot_sweep as plot_sweep, sweep_rows as sweep_rows
from ._run import run_sweep as run_sweep
from ._spec import (
    SweepPlan as SweepPlan,
    SweepSpec as SweepSpec,
    expand_points as expand_points,
    parse_sweep as parse_sweep,
    plan_sweep as plan_sweep,
)

__all__ = [
    "SweepPlan",
    "SweepSpec",
    "create_sweep",
    "expand_points",
    "load_sweep",
    "merge_sweep",
    "parse_sweep",
    "plan_sweep",
    "plot_sweep",
    "point_states",
    "run_chunk",
    "run_points",
    "run_sweep",
    "submit_sweep",
    "sweep_rows",
]
