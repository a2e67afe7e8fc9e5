"""Command line: ``gflow run CONFIG.toml [key=value ...]``, ``gflow figures RUN_DIR``,
``gflow info`` and ``gflow magnitude POINTS.npy``."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from .config import ConfigError

__all__ = ["main"]

# each module defines ``register(subparsers)``; a module not written yet is skipped
_SUBCOMMAND_MODULES = (".magnitude_cli", ".sweep_cli", ".generalization_cli")


def _resumed_config(args: argparse.Namespace):
    from .kinds import load_experiment

    if args.config is not None or args.overrides:
        raise ConfigError("--resume", "takes the config from RUN_DIR/config.json: give no file")
    config_file = args.resume / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"not a run directory (no config.json): {args.resume}")
    kind, config = load_experiment(table=json.loads(config_file.read_text()))
    if not kind.resumable:
        raise ConfigError("--resume", f"experiments of kind {kind.name!r} cannot be resumed")
    return kind, config


def _cmd_run(args: argparse.Namespace) -> int:
    from .kinds import config_snapshot, load_experiment
    from .runs import create_run_dir, environment_info, write_json

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
    status = {"state": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
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
    status.update(state="complete", finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_json(run_dir / "status.json", status)
    return 0


def _cmd_figures(args: argparse.Namespace) -> int:
    from .kinds import get_kind

    config_file = args.run_dir / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"not a run directory (no config.json): {args.run_dir}")
    kind = get_kind(json.loads(config_file.read_text()).get("kind", "truncation"))
    for path in kind.figures(args.run_dir):
        print(f"gflow: figure {path}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .runs import environment_info

    print(json.dumps(environment_info(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run an experiment config into a new run directory")
    run.add_argument("config", type=Path, nargs="?", help="experiment TOML file")
    run.add_argument("overrides", nargs="*", help="section.key=value (TOML values)")
    run.add_argument("--out", type=Path, default=None, help="root for run directories")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--resume", type=Path, default=None, metavar="RUN_DIR", help="finish an interrupted run"
    )
    run.set_defaults(func=_cmd_run)

    figures = sub.add_parser("figures", help="redraw the figures of a run directory")
    figures.add_argument("run_dir", type=Path)
    figures.set_defaults(func=_cmd_figures)

    info = sub.add_parser("info", help="versions, devices and float64 mode")
    info.set_defaults(func=_cmd_info)

    for module in _SUBCOMMAND_MODULES:  # subcommands contributed by topic modules
        try:
            register = importlib.import_module(module, __package__).register
        except ModuleNotFoundError as err:
            if err.name != f"{__package__}{module}":
                raise
        else:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"gflow: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
