"""``gflow run``, ``gflow figures`` and ``gflow info``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..experiments import ConfigError, config_snapshot, get_kind, load_experiment
from ..io import (
    create_run_dir,
    describe_environment,
    environment_info,
    read_json,
    utc_now,
    write_json,
)


def _resumed_config(args: argparse.Namespace):
    if args.config is not None or args.overrides:
        raise ConfigError("--resume", "takes the config from RUN_DIR/config.json: give no file")
    config_file = args.resume / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"not a run directory (no config.json): {args.resume}")
    kind, config = load_experiment(table=read_json(config_file))
    if not kind.resumable:
        raise ConfigError("--resume", f"experiments of kind {kind.name!r} cannot be resumed")
    return kind, config


def cmd_run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        run_dir = args.resume
        kind, config = _resumed_config(args)
    else:
        if args.config is None:
            raise ConfigError("config", "give a config file (or --resume RUN_DIR)")
        kind, config = load_experiment(args.config, args.overrides)  # validated: nothing ran
        run_dir = create_run_dir(args.out or config.output.root, config.name)
        write_json(run_dir / "config.json", config_snapshot(kind, config))
    write_json(run_dir / "env.json", environment_info())
    status = {"state": "running", "started": utc_now()}
    if args.resume is not None:
        status["resumed"] = True
    write_json(run_dir / "status.json", status)
    print(f"gflow: {kind.name} run directory {run_dir}")
    try:
        summary = kind.run(config, run_dir, config.output.progress and not args.quiet)
        write_json(run_dir / "summary.json", summary)
        if config.output.figures:
            for path in kind.figures(run_dir):
                print(f"gflow: figure {path}")
    except BaseException as err:  # record interrupted and failed runs, then re-raise
        status.update(
            state="interrupted" if isinstance(err, KeyboardInterrupt) else "failed",
            error=f"{type(err).__name__}: {err}",
        )
        write_json(run_dir / "status.json", status)
        raise
    status.update(state="complete", finished=utc_now())
    write_json(run_dir / "status.json", status)
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    config_file = args.run_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"not a run directory (no config.json): {args.run_dir}")
    kind = get_kind(read_json(config_file).get("kind", "truncation"))
    for path in kind.figures(args.run_dir):
        print(f"gflow: figure {path}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Versions, backend, devices with their memory, float64 state (``--json``: everything
    ``env.json`` records)."""
    env = environment_info()
    print(json.dumps(env, indent=2) if args.json else describe_environment(env))
    return 0


def register(sub) -> None:
    """Add ``run``, ``figures`` and ``info`` to the ``gflow`` subparsers."""
    run = sub.add_parser("run", help="run an experiment config into a new run directory")
    run.add_argument("config", type=Path, nargs="?", help="experiment TOML file")
    run.add_argument("overrides", nargs="*", help="section.key=value (TOML values)")
    run.add_argument("--out", type=Path, default=None, help="root for run directories")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--resume", type=Path, default=None, metavar="RUN_DIR", help="finish an interrupted run"
    )
    run.set_defaults(func=cmd_run)

    figures = sub.add_parser("figures", help="redraw the figures of a run directory")
    figures.add_argument("run_dir", type=Path)
    figures.set_defaults(func=cmd_figures)

    info = sub.add_parser("info", help="versions, backend, devices, memory and float64 mode")
    info.add_argument("--json", action="store_true", help="everything env.json records, as JSON")
    info.set_defaults(func=cmd_info)
