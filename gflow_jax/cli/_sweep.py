"""``gflow sweep CONFIG.toml [key=value ...] [--out DIR] [--resume SWEEP_DIR] [--devices N]
[--cpu-devices N] [--executor local|slurm|submitit-local] [--jobs N] [--quiet] [--no-batch]``.

Exit status: 0 when every point
is complete, 1 when some failed (recorded in their run directories and the summary), 2 for a
bad config (nothing ran, no directory created).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..experiments import ConfigError
from ..io import read_json


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ..core import use_cpu_cores
    from ..sweep import create_sweep, load_sweep, plan_sweep, run_sweep

    if args.cpu_devices is not None and args.cpu_devices < 1:
        raise ConfigError("--cpu-devices", f"must be a positive integer, got {args.cpu_devices}")
    cores = use_cpu_cores(args.cpu_devices)  # before anything starts JAX's backends
    if cores is not None:
        print(f"gflow: {cores} CPU devices (one per core) for sharded batches")

    if args.resume is not None:
        if args.config is not None or args.overrides:
            raise ConfigError("--resume", "takes the sweep from SWEEP_DIR/sweep.json: give no file")
        sweep_dir = args.resume
        meta, _ = load_sweep(sweep_dir)
        first = sweep_dir / meta["points"][0]["run_dir"] / "config.json"
        progress = read_json(first).get("output", {}).get("progress", True)
        print(f"gflow: resuming sweep {sweep_dir}")
    else:
        if args.config is None:
            raise ConfigError("config", "give a config file with a [sweep] table (or --resume)")
        plan = plan_sweep(args.config, args.overrides)  # every point validated: nothing ran
        sweep_dir = create_sweep(plan, args.out)
        progress = plan.configs[0].output.progress
        print(
            f"gflow: {plan.kind.name} sweep of {len(plan.points)} points "
            f"({plan.spec.mode} over {', '.join(plan.spec.axes)}) in {sweep_dir}"
        )
    try:
        summary = run_sweep(
            sweep_dir,
            devices=args.devices,
            executor=args.executor,
            jobs=args.jobs,
            progress=progress and not args.quiet,
            batch=not args.no_batch,
        )
    except KeyboardInterrupt:
        print(f"gflow: interrupted; finish with `gflow sweep --resume {sweep_dir}`")
        raise
    states = ", ".join(f"{n} {s}" for s, n in sorted(summary["states"].items()))
    print(f"gflow: sweep {sweep_dir}: {states}; table {sweep_dir / 'summary.csv'}")
    for failed in summary["failed"]:
        print(f"gflow: point {failed['point']} failed: {failed['error']}")
    if not summary["complete"]:
        print(f"gflow: rerun unfinished points with `gflow sweep --resume {sweep_dir}`")
        return 1
    return 0


def register(subparsers) -> None:
    """Add the ``sweep`` subcommand to ``gflow``'s subparsers."""
    sweep = subparsers.add_parser(
        "sweep", help="run a config's [sweep] table: one run directory per point"
    )
    sweep.add_argument("config", type=Path, nargs="?", help="experiment TOML with a [sweep] table")
    sweep.add_argument("overrides", nargs="*", help="section.key=value (TOML values)")
    sweep.add_argument("--out", type=Path, default=None, help="root for the sweep directory")
    sweep.add_argument(
        "--resume", type=Path, default=None, metavar="SWEEP_DIR", help="run unfinished points"
    )
    sweep.add_argument(
        "--devices", type=int, default=None, help="local devices to shard over (default: all)"
    )
    sweep.add_argument(
        "--cpu-devices",
        type=int,
        default=None,
        metavar="N",
        help="split the CPU into N devices (default: one per core; 1 = off; ignored when "
        "JAX_NUM_CPU_DEVICES or XLA_FLAGS already set it)",
    )
    sweep.add_argument(
        "--executor",
        choices=("local", "slurm", "submitit-local"),
        default="local",
        help="local: this process; slurm / submitit-local: array jobs via submitit",
    )
    sweep.add_argument("--jobs", type=int, default=None, help="array jobs (default: sweep.jobs)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.add_argument(
        "--no-batch", action="store_true", help="run point by point even if the kind can batch"
    )
    sweep.set_defaults(func=_cmd_sweep)
