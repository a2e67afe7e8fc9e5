"""Command line: ``gflow run CONFIG.toml [key=value ...]``, ``gflow figures RUN_DIR``,
``gflow sweep CONFIG.toml``, ``gflow magnitude POINTS.npy``, ``gflow reproduce [NAME ...]`` and
``gflow info``.

Every error a user can cause is one line on stderr naming the key, option or file, with exit
status 2 when the command was refused (nothing is written then), 1 when a run failed (its run
directory records the error and traceback) and 130 when interrupted (Ctrl-C). Set
``GFLOW_DEBUG=1`` to see Python tracebacks instead.

Every command keeps the programs it compiles in the persistent compilation cache
(:mod:`gflow_jax.io._compilation_cache`: ``$GFLOW_JAX_CACHE`` or ``~/.cache/gflow_jax/xla``;
``GFLOW_JAX_CACHE=0`` turns it off), so that running a configuration again does not compile it
again. A cache directory that cannot be used is one line on stderr, and the command runs without.

Subcommand modules only define their parsers at import; what a command needs (the library, a
kind, matplotlib) is imported when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys

from ..experiments import ConfigError
from . import _magnitude, _reproduce, _run, _sweep
from ._errors import CommandError, Parser


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="gflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (_run, _sweep, _magnitude, _reproduce):
        module.register(sub)
    return parser


def _file_message(err: OSError) -> str:
    if err.filename is None:
        return str(err)
    what = {FileNotFoundError: "no such file or directory", IsADirectoryError: "is a directory"}
    return f"{what.get(type(err), err.strerror or type(err).__name__)}: {err.filename}"


def _compilation_cache() -> None:
    """Turn the persistent compilation cache on (a note on stderr when it cannot be used)."""
    from ..io import enable_compilation_cache

    try:
        enable_compilation_cache()
    except OSError as err:
        print(
            f"gflow: note: compilation cache off ({_file_message(err)}); set GFLOW_JAX_CACHE to "
            "a writable directory, or to 0",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as done:  # --help, or a one-line usage error (exit status 2)
        return done.code if isinstance(done.code, int) else 2
    _compilation_cache()
    if os.environ.get("GFLOW_DEBUG"):
        return args.func(args)
    try:
        return args.func(args)
    except CommandError as err:
        print(f"gflow: {err.label}: {err}", file=sys.stderr)
        return err.code
    except ConfigError as err:
        print(f"gflow: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        print(f"gflow: error: {_file_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gflow: interrupted", file=sys.stderr)
        return 130
