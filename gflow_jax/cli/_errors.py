"""What the commands say when they stop: one line on stderr and an exit status, never a
traceback for what a user can cause (``GFLOW_DEBUG=1`` re-raises, for developers); and the
argparse pieces every command is declared with (:class:`Parser`, :func:`add_command`)."""

from __future__ import annotations

import argparse


class CommandError(Exception):
    """A command that cannot go on: ``gflow: <label>: <message>`` and exit status ``code``
    (2: refused before anything ran; 1: a run failed; 130: interrupted)."""

    def __init__(self, message: str, code: int = 2, label: str = "error"):
        super().__init__(message)
        self.code = code
        self.label = label


def positive_int(text: str) -> int:
    """argparse type: an integer ≥ 1 (the option is named by argparse on error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line naming the option and pointing at
    ``--help`` (argparse's own print the whole usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def add_command(subparsers, name: str, func, help: str, description: str | None = None):
    """Add the command ``name`` to ``gflow``'s subparsers and return its parser: ``help`` is its
    line in ``gflow --help``, ``description`` (printed as written) heads its own ``--help``, and
    ``func(args) -> exit status`` runs it."""
    parser = subparsers.add_parser(
        name,
        help=help,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=func)
    return parser
