"""``gflow run``, ``gflow figures`` and ``gflow info``."""

from __future__ import annotations

import argparse
import json
import traceback
from pathlib import Path

from ..experiments import ConfigError, config_snapshot, get_kind, load_experiment
from ..io import (
    create_run_dir,
    describe_environment,
    environment_info,
    progress_enabled,
    read_json,
    utc_now,
    write_json,
)
from ._errors import CommandError, add_command

RUN_HELP = """Run an experiment config into a new run directory <output.root>/<name>-<UTC time>/.

Every config is validated before anything runs (nothing is written for a bad one); what
validation chose for you (the save grid of the common clock s = eta*k) is printed as a note.
The run ends with the line "gflow: results in RUN_DIR; main figure ...".

--resume RUN_DIR finishes an interrupted or failed run in its own directory, for every kind:
magnitude_generalization skips the networks it already finished; the other kinds (truncation,
rates, spectral_gap, sgd_vs_flow) write their results only at the end, so they run again from
s = 0.
"""


def run_directory(path: Path) -> tuple[dict, dict]:
    """``config.json`` and ``status.json`` of a run directory (refusing anything else)."""
    if not path.is_dir():
        raise CommandError(f"no such run directory: {path}")
    config_file = path / "config.json"
    if not config_file.is_file():
        hint = " (a sweep: use `gflow sweep --resume`)" if (path / "sweep.json").is_file() else ""
        raise CommandError(f"not a run directory (no config.json): {path}{hint}")
    status = read_json(path / "status.json", missing=None) or {"state": "unknown"}
    return read_json(config_file), status


def _resumed(args: argparse.Namespace):
    if args.config is not None or args.overrides:
        raise ConfigError("--resume", "takes the config from RUN_DIR/config.json: give no file")
    table, status = run_directory(args.resume)
    kind, config = load_experiment(table=table)
    return kind, config, status


def _clear_for_rerun(run_dir: Path) -> None:
    """Remove what an earlier attempt wrote (results cached from its arrays included), keeping
    ``config.json``: a kind that cannot skip finished work runs again from the start."""
    for path in run_dir.iterdir():
        if path.is_file() and path.name != "config.json":
            path.unlink()
    for path in (run_dir / "figures").glob("*"):
        if path.is_file():
            path.unlink()


def _print_notes(config) -> None:
    for note in getattr(config, "notes", ()):
        print(f"gflow: note: {note}")


def main_figure(kind, run_dir: Path, drawn: list[Path]) -> Path | None:
    """The kind's main figure in ``run_dir`` if drawn, else the first figure drawn."""
    if kind.main_figure and (run_dir / "figures" / kind.main_figure).is_file():
        return run_dir / "figures" / kind.main_figure
    return drawn[0] if drawn else None


def cmd_run(args: argparse.Namespace) -> int:
    if args.resume is not None:
        kind, config, status = _resumed(args)
        run_dir = args.resume
        if status.get("state") == "complete":
            print(f"gflow: {run_dir} is complete: nothing to resume (`gflow figures` redraws it)")
            return 0
        how = "skipping finished work" if kind.resumable else "from the start"
        print(f"gflow: resuming {kind.name} run {run_dir} ({status.get('state')}), {how}")
        if not kind.resumable and not args.dry_run:
            _clear_for_rerun(run_dir)
    else:
        if args.config is None:
            raise CommandError("give a config file (or --resume RUN_DIR); see `gflow run --help`")
        kind, config = load_experiment(args.config, args.overrides)  # validated: nothing ran
        _print_notes(config)
        if args.dry_run:
            root = args.out or config.output.root
            print(f"gflow: {kind.name} config valid; would write {root}/{config.name}-<UTC time>/")
            return 0
        run_dir = create_run_dir(args.out or config.output.root, config.name)
        write_json(run_dir / "config.json", config_snapshot(kind, config))
        print(f"gflow: {kind.name} run directory {run_dir}")
    if args.dry_run:
        print(f"gflow: {run_dir} can be resumed")
        return 0
    progress = progress_enabled(config.output.progress and not args.quiet)
    drawn = execute_run(kind, config, run_dir, progress, resumed=args.resume is not None)
    figure = main_figure(kind, run_dir, drawn)
    if figure is None:
        print(f"gflow: results in {run_dir} (draw figures with `gflow figures {run_dir}`)")
    else:
        print(f"gflow: results in {run_dir}; main figure {figure}")
    return 0


def execute_run(kind, config, run_dir: Path, progress: bool, *, resumed: bool = False):
    """Run ``config`` into ``run_dir`` (``config.json`` already there): ``env.json``,
    ``status.json`` from ``running`` to ``complete``, the kind's files, ``summary.json`` and the
    figures (if the config asks); returns the figures drawn. A failure or Ctrl-C is recorded in
    ``status.json`` (with the traceback) and raised as a one-line :class:`CommandError`."""
    write_json(run_dir / "env.json", environment_info())
    status = {"state": "running", "started": utc_now()}
    if resumed:
        status["resumed"] = True
    write_json(run_dir / "status.json", status)
    drawn: list[Path] = []
    try:
        summary = kind.run(config, run_dir, progress)
        write_json(run_dir / "summary.json", summary)
        if config.output.figures:
            drawn = kind.figures(run_dir)
    except KeyboardInterrupt:
        status.update(state="interrupted", error="KeyboardInterrupt (Ctrl-C)")
        write_json(run_dir / "status.json", status)
        raise CommandError(
            f"run {run_dir} stopped; finish it with `gflow run --resume {run_dir}`",
            code=130,
            label="interrupted",
        ) from None
    except Exception as err:  # recorded in the run directory; one line here
        status.update(
            state="failed",
            error=f"{type(err).__name__}: {err}",
            traceback="".join(traceback.format_exception(err)),
        )
        write_json(run_dir / "status.json", status)
        raise CommandError(
            f"{err} [run {run_dir} failed; traceback in its status.json]", code=1
        ) from err
    status.update(state="complete", finished=utc_now())
    write_json(run_dir / "status.json", status)
    return drawn


_STATES = {
    "interrupted": "was interrupted",
    "failed": "failed",
    "running": "is still running (or was killed)",
    "pending": "has not started",
    "unknown": "has no status.json",
}


def cmd_figures(args: argparse.Namespace) -> int:
    run_dir = args.run_dir
    if (run_dir / "sweep.json").is_file():
        from ..sweep import merge_sweep

        summary = merge_sweep(run_dir)
        for name in summary.get("figures", []):
            print(f"gflow: figure {run_dir / name}")
        return 0
    table, status = run_directory(run_dir)
    kind = get_kind(table.get("kind", "truncation"))
    state = status.get("state")
    not_yet = CommandError(
        f"run {run_dir} {_STATES.get(state, f'is {state}')}: nothing to draw yet; finish it "
        f"with `gflow run --resume {run_dir}`"
    )
    try:
        drawn = kind.figures(run_dir)
    except FileNotFoundError as err:
        if state == "complete":
            missing = Path(err.filename).name if err.filename else str(err)
            raise CommandError(
                f"run {run_dir} is complete but incomplete on disk: {missing}"
            ) from None
        raise not_yet from None
    if not drawn and state != "complete":
        raise not_yet
    for path in drawn:
        print(f"gflow: figure {path}")
    figure = main_figure(kind, run_dir, drawn)
    if figure is not None:
        print(f"gflow: main figure {figure}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    """Versions, backend, devices with their memory, float64 state (``--json``: everything
    ``env.json`` records)."""
    env = environment_info()
    print(json.dumps(env, indent=2) if args.json else describe_environment(env))
    return 0


def register(sub) -> None:
    """Add ``run``, ``figures`` and ``info`` to the ``gflow`` subparsers."""
    run = add_command(
        sub, "run", cmd_run, "run an experiment config into a new run directory", RUN_HELP
    )
    run.add_argument("config", type=Path, nargs="?", help="experiment TOML file")
    run.add_argument("overrides", nargs="*", help="section.key=value (TOML values)")
    run.add_argument("--out", type=Path, default=None, help="root for run directories")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.add_argument(
        "--dry-run", action="store_true", help="validate the config and stop (nothing written)"
    )
    run.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="finish an interrupted or failed run (every kind; see above)",
    )

    figures = add_command(
        sub,
        "figures",
        cmd_figures,
        "redraw the figures of a run (or sweep) directory without re-simulating",
    )
    figures.add_argument("run_dir", type=Path, metavar="RUN_DIR")

    info = add_command(sub, "info", cmd_info, "versions, backend, devices, memory and float64 mode")
    info.add_argument("--json", action="store_true", help="everything env.json records, as JSON")
