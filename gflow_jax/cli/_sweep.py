"""``gflow sweep CONFIG.toml [key=value ...] [--out DIR] [--resume SWEEP_DIR] [--devices N]
[--cpu-devices N] [--executor local|slurm|submitit-local] [--jobs N] [--quiet] [--no-batch]
[--dry-run]``.

Every point is validated before anything runs. Exit status: 0 when every point is complete, 1
when some failed (recorded in their run directories and the summary), 2 for a refused command
(bad config or option: nothing ran, no directory created), 130 when interrupted (finish with
``--resume``). Sweeps of every kind resume: ``--resume`` reruns the points not complete.
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from ..experiments import ConfigError
from ..io import progress_enabled, read_json
from ._errors import CommandError, add_command, positive_int

#: the command's line in ``gflow --help``
HELP = "run a config's [sweep] table: one run directory per point"


def _check_executor(args: argparse.Namespace) -> None:
    if args.executor != "local" and importlib.util.find_spec("submitit") is None:
        raise ConfigError(
            "--executor",
            f"{args.executor!r} needs submitit: pip install 'gflow_jax[cluster]' "
            "(or run here with --executor local)",
        )


def _check_slurm(args: argparse.Namespace) -> None:
    """Before anything is written: ``--executor slurm`` needs Slurm's commands on this machine."""
    import shutil

    if args.executor == "slurm" and shutil.which("sbatch") is None:
        raise ConfigError(
            "--executor",
            "'slurm' submits with sbatch, which is not on this machine's PATH (run on a Slurm "
            "login node, or use --executor submitit-local / local)",
        )


def _check_devices(args: argparse.Namespace) -> None:
    if args.devices is None or args.executor != "local":
        return  # array jobs count the devices of their own node
    import jax

    available = len(jax.local_devices())
    if args.devices > available:
        raise ConfigError("--devices", f"{args.devices} requested, {available} available here")


def _cmd_sweep(args: argparse.Namespace) -> int:
    from ..core import use_cpu_cores
    from ..sweep import create_sweep, load_sweep, plan_sweep, run_sweep

    _check_executor(args)
    cores = use_cpu_cores(args.cpu_devices)  # before anything starts JAX's backends
    if args.resume is not None:
        if args.config is not None or args.overrides:
            raise ConfigError("--resume", "takes the sweep from SWEEP_DIR/sweep.json: give no file")
        sweep_dir = args.resume
        meta, _ = load_sweep(sweep_dir)
        first = sweep_dir / meta["points"][0]["run_dir"] / "config.json"
        progress = read_json(first).get("output", {}).get("progress", True)
        _check_devices(args)
        if args.dry_run:
            print(f"gflow: sweep {sweep_dir} can be resumed ({len(meta['points'])} points)")
            return 0
        _check_slurm(args)
        print(f"gflow: resuming sweep {sweep_dir}")
    else:
        if args.config is None:
            raise CommandError("give a config file with a [sweep] table (or --resume SWEEP_DIR)")
        plan = plan_sweep(args.config, args.overrides)  # every point validated: nothing ran
        notes = sorted({n for c in plan.configs for n in getattr(c, "notes", ())})
        for note in notes:
            print(f"gflow: note: {note}")
        _check_devices(args)
        what = (
            f"{plan.kind.name} sweep of {len(plan.points)} points "
            f"({plan.spec.mode} over {', '.join(plan.spec.axes)})"
        )
        if args.dry_run:
            root = args.out or plan.configs[0].output.root
            print(f"gflow: {what} valid; would write {root}/{plan.configs[0].name}-sweep-<time>/")
            return 0
        _check_slurm(args)
        sweep_dir = create_sweep(plan, args.out)
        progress = plan.configs[0].output.progress
        print(f"gflow: {what} in {sweep_dir}")
    if cores is not None:
        print(f"gflow: {cores} CPU devices (one per core) for sharded batches")
    try:
        summary = run_sweep(
            sweep_dir,
            devices=args.devices,
            executor=args.executor,
            jobs=args.jobs,
            progress=progress_enabled(progress and not args.quiet),
            batch=not args.no_batch,
        )
    except KeyboardInterrupt:
        raise CommandError(
            f"sweep {sweep_dir} stopped; finish it with `gflow sweep --resume {sweep_dir}`",
            code=130,
            label="interrupted",
        ) from None
    states = ", ".join(f"{n} {s}" for s, n in sorted(summary["states"].items()))
    print(f"gflow: sweep {sweep_dir}: {states}")
    for failed in summary["failed"]:
        print(f"gflow: point {failed['point']} failed: {failed['error']}")
    figures = summary.get("figures") or []
    main = f"; main figure {sweep_dir / figures[0]}" if figures else ""
    print(f"gflow: results in {sweep_dir}: table {sweep_dir / 'summary.csv'}{main}")
    if not summary["complete"]:
        print(f"gflow: rerun unfinished points with `gflow sweep --resume {sweep_dir}`")
        return 1
    return 0


def register(subparsers) -> None:
    """Add the ``sweep`` subcommand to ``gflow``'s subparsers."""
    sweep = add_command(subparsers, "sweep", _cmd_sweep, HELP, __doc__)
    sweep.add_argument("config", type=Path, nargs="?", help="experiment TOML with a [sweep] table")
    sweep.add_argument("overrides", nargs="*", help="section.key=value (TOML values)")
    sweep.add_argument("--out", type=Path, default=None, help="root for the sweep directory")
    sweep.add_argument(
        "--resume", type=Path, default=None, metavar="SWEEP_DIR", help="run unfinished points"
    )
    sweep.add_argument(
        "--devices",
        type=positive_int,
        default=None,
        help="local devices to shard over (default: all)",
    )
    sweep.add_argument(
        "--cpu-devices",
        type=positive_int,
        default=None,
        metavar="N",
        help="split the CPU into N devices (default: one per core; 1 = off; ignored when "
        "JAX_NUM_CPU_DEVICES or XLA_FLAGS already set it)",
    )
    sweep.add_argument(
        "--executor",
        choices=("local", "slurm", "submitit-local"),
        default="local",
        help="local: this process; slurm / submitit-local: array jobs via submitit (the "
        "`cluster` extra; submitit-local jobs share this machine's cores, each pinned to its own)",
    )
    sweep.add_argument(
        "--jobs", type=positive_int, default=None, help="array jobs (default: sweep.jobs)"
    )
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.add_argument(
        "--no-batch", action="store_true", help="run point by point even if the kind can batch"
    )
    sweep.add_argument(
        "--dry-run", action="store_true", help="validate every point and stop (nothing written)"
    )
