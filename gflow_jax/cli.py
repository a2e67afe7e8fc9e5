"""Command line: ``gflow run CONFIG.toml [key=value ...]``, ``gflow figures RUN_DIR``,
``gflow info`` and ``gflow magnitude POINTS.npy``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main"]

_SCALAR_SERIES = ("loss", "n_truncated", "nc1")


def _metrics_rows(arrays: dict) -> list[dict]:
    prefixes = sorted({k.rsplit("/", 1)[0] for k in arrays if k.endswith("/loss")})
    rows = []
    for i, s in enumerate(arrays["ts"]):
        row = {"s": float(s)}
        for p in prefixes:
            for q in _SCALAR_SERIES:
                row[f"{p}/{q}"] = arrays[f"{p}/{q}"][i].item()
        rows.append(row)
    return rows


def _cmd_run(args: argparse.Namespace) -> int:
    from . import plots
    from .config import config_to_dict, load_config
    from .experiment import run_truncation, setup_experiment
    from .runs import create_run_dir, environment_info, write_json, write_metrics

    config = load_config(args.config, args.overrides)  # validation: nothing has run yet
    root = args.out or config.output.root
    run_dir = create_run_dir(root, config.name)
    write_json(run_dir / "config.json", config_to_dict(config))
    write_json(run_dir / "env.json", environment_info())
    status = {"state": "running", "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(run_dir / "status.json", status)
    print(f"gflow: run directory {run_dir}")
    try:
        setup = setup_experiment(config)
        arrays, summary = run_truncation(setup, progress=config.output.progress and not args.quiet)
        np.savez_compressed(run_dir / "arrays.npz", **arrays)
        write_metrics(run_dir / "metrics.jsonl", _metrics_rows(arrays))
        write_json(run_dir / "summary.json", summary)
        if config.output.figures:
            for path in plots.plot_truncation_run(run_dir):
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
    flow = summary["flow"]
    print(
        f"gflow: flow solved in {flow['num_steps']} steps ({flow['num_rejected_steps']} rejected),"
        f" final cost {flow['final_loss']:.3e}"
    )
    for name, entry in summary.items():
        if name != "flow":
            print(
                f"gflow: {name}: final cost {entry['final_loss']:.3e}, max |c - c_flow| = "
                f"{entry['max_threshold_gap_to_flow']:.3e}"
            )
    return 0


def _cmd_figures(args: argparse.Namespace) -> int:
    from . import plots

    for path in plots.plot_truncation_run(args.run_dir):
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
    run.add_argument("config", type=Path, help="experiment TOML file")
    run.add_argument("overrides", nargs="*", help="section.key=value (TOML values)")
    run.add_argument("--out", type=Path, default=None, help="root for run directories")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(func=_cmd_run)

    figures = sub.add_parser("figures", help="redraw the figures of a run directory")
    figures.add_argument("run_dir", type=Path)
    figures.set_defaults(func=_cmd_figures)

    info = sub.add_parser("info", help="versions, devices and float64 mode")
    info.set_defaults(func=_cmd_info)

    try:
        from .magnitude_cli import register
    except ImportError:  # pragma: no cover - module lands with the magnitude library
        pass
    else:
        register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"gflow: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
