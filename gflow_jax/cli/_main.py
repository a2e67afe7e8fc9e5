"""Command line: ``gflow run CONFIG.toml [key=value ...]``, ``gflow figures RUN_DIR``,
``gflow sweep CONFIG.toml``, ``gflow magnitude POINTS.npy`` and ``gflow info``.

Subcommand modules only define their parsers at import; what a command needs (the library, a
kind, matplotlib) is imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys

from ..experiments import ConfigError
from . import _magnitude, _run, _sweep


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gflow", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (_run, _sweep, _magnitude):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError) as err:
        print(f"gflow: error: {err}", file=sys.stderr)
        return 2
