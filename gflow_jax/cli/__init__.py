"""The ``gflow`` command line (:func:`main`)."""

from ._main import build_parser as build_parser, main as main

__all__ = ["build_parser", "main"]
