"""The figures of the docs and the numbers they quote: one :class:`Reproduction` per experiment
behind a figure of ``docs/figures/`` (``gflow reproduce --list``; docs/results.md shows them).

The entries are data, declared in ``reproductions.toml`` beside this module: one table per entry,
named by it, whose keys are the fields of :class:`Reproduction`; each ``[[<name>.numbers]]``
table is one :class:`~gflow_jax.experiments._reproduce.Quoted`, each ``[[<name>.tables]]`` one
:class:`~gflow_jax.experiments._reproduce.QuotedTable`.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from ._reproduce import Quoted, QuotedTable, Reproduction

REGISTRY = Path(__file__).with_name("reproductions.toml")

_REPRODUCTIONS: dict[str, Reproduction] = {}


def register_reproduction(entry: Reproduction) -> None:
    """Add (or replace) an entry of the registry behind ``gflow reproduce``."""
    if not re.fullmatch(r"[a-z0-9_]+", entry.name):
        raise ValueError(f"reproduction names are lower_snake_case, got {entry.name!r}")
    _REPRODUCTIONS[entry.name] = entry


def reproductions() -> dict[str, Reproduction]:
    """Every registered :class:`Reproduction`, by name, in registration order."""
    return dict(_REPRODUCTIONS)


def _entry(name: str, table: dict) -> Reproduction:
    """The :class:`Reproduction` of the table ``name`` of ``reproductions.toml`` (TOML arrays
    become the tuples of the dataclasses; an unknown key is an error naming the entry)."""
    table = dict(table)
    try:
        numbers = tuple(
            Quoted(**{**q, "source": tuple(q["source"])}) for q in table.pop("numbers", ())
        )
        tables = tuple(QuotedTable(**t) for t in table.pop("tables", ()))
        overrides = tuple(table.pop("overrides", ()))
        return Reproduction(name=name, numbers=numbers, tables=tables, overrides=overrides, **table)
    except (TypeError, KeyError) as err:
        raise ValueError(f"{REGISTRY.name}: entry {name!r}: {err}") from None


for _name, _table in tomllib.loads(REGISTRY.read_text(encoding="utf-8")).items():
    register_reproduction(_entry(_name, _table))
