"""The figures of the documentation and the numbers it quotes, as a registry that
``gflow reproduce`` re-runs and checks.

Each :class:`Reproduction` is one experiment behind one or more figures of ``docs/figures/``: the
config (a file of ``experiments/``, with overrides), which figures of its run directory the docs
show, and every number the docs quote from that run (:class:`Quoted`): where the new run holds
it and within what tolerance it must come out again. ``cheap`` entries run in the test suite.
The entries of the docs are declared in ``reproductions.toml`` and registered by :mod:`._results`
(:func:`register_reproduction` adds one).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io import load_arrays, read_json

Source = tuple  # ("summary.json", key, ...) | ("arrays.npz", key, s[, index ...])


@dataclass(frozen=True)
class Quoted:
    """A number as the docs quote it (``quoted``, in ``docs``), where a run holds it
    (``source``) and how close a new run must come.

    ``source``: ``("summary.json" | "analysis.json" | <any JSON of the run>, key, ...)`` — keys
    of nested objects, integers index lists — or ``("<file>.npz", key, s, index ...)``: the array
    at the save nearest to flow time ``s`` (``-1``: the last save; the file's own ``ts`` or that
    of ``arrays.npz``). Tolerance: with ``at_most`` the new value must not exceed it (numbers at
    rounding level, quoted as an order of magnitude); otherwise |new − quoted| ≤
    ``rel``·|quoted| + ``atol``, where ``atol`` defaults to half a unit of the last digit quoted
    (so "0.027" allows 0.0265 … 0.0275 at ``rel = 0``). ``scale`` multiplies the run's value
    first (100 for a fraction the docs quote in per cent).
    """

    label: str
    quoted: str
    source: Source
    rel: float = 0.0
    at_most: float | None = None
    atol: float | None = None
    docs: str = "docs/results.md"
    scale: float = 1.0

    @property
    def value(self) -> float:
        return float(self.quoted.replace(" ", "").replace("−", "-"))

    def tolerance(self) -> str:
        if self.at_most is not None:
            return f"≤ {self.at_most:g}"
        rel = f"{self.rel:.0%} + " if self.rel else ""
        return f"± {rel}{self._atol():g}"

    def _atol(self) -> float:
        return _half_unit(self.quoted) if self.atol is None else self.atol

    def check(self, new: float) -> bool:
        if not math.isfinite(new):
            return False
        if self.at_most is not None:
            return new <= self.at_most
        allowed = self.rel * abs(self.value) + self._atol()
        return abs(new - self.value) <= allowed * (1 + 1e-9)


def _half_unit(quoted: str) -> float:
    """Half a unit of the last digit written: "0.027" → 0.0005, "1.3e-9" → 5e-11, "13 858" → 0.5."""
    text = quoted.replace(" ", "").replace("−", "-").lower()
    mantissa, _, exponent = text.partition("e")
    decimals = len(mantissa.split(".", 1)[1]) if "." in mantissa else 0
    return 0.5 * 10.0 ** (-decimals + (int(exponent) if exponent else 0))


_NUMBER = re.compile(r"[+−-]?\d+(?:\.\d+)?")


def markdown_rows(text: str, heading: str) -> dict[str, list[float]]:
    """The numbers of each row of the first markdown table after the line ``heading``: row label
    (first cell, backticks removed) → every number of the other cells in reading order ("−" read
    as minus; cells without a number, such as "–", contribute none). Raises ``KeyError`` when the
    heading or its table is missing."""
    lines = text.splitlines()
    if heading not in lines:
        raise KeyError(f"no heading {heading!r}")
    rows: dict[str, list[float]] = {}
    started = False
    for line in lines[lines.index(heading) + 1 :]:
        if not line.startswith("|"):
            if started:
                break
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if not started or set(cells[0]) <= set("-: "):  # header row, separator row
            started = True
            continue
        rows[cells[0].strip("`")] = [
            float(m.replace("−", "-")) for c in cells[1:] for m in _NUMBER.findall(c)
        ]
    if not rows:
        raise KeyError(f"no table rows after {heading!r}")
    return rows


@dataclass(frozen=True)
class QuotedTable:
    """A table the docs copy from a markdown file the run writes: the docs' table under
    ``heading`` (in ``docs``) must have the rows of the run's table under ``source_heading`` (in
    the run's ``source``), and every number in it must come out again within ``atol`` (default:
    half a unit of the two decimals the tables print)."""

    label: str
    docs: str
    heading: str
    source: str
    source_heading: str
    atol: float = 0.005

    def compare(self, docs_text: str, run_text: str) -> tuple[int, float, str]:
        """(numbers compared, largest |difference|, where it is or what does not match);
        the difference is ``inf`` when the rows or their counts of numbers differ."""
        quoted = markdown_rows(docs_text, self.heading)
        new = markdown_rows(run_text, self.source_heading)
        if set(quoted) != set(new):
            odd = sorted(set(quoted) ^ set(new))
            return 0, math.inf, f"rows differ: {', '.join(odd[:4])}"
        n, worst, where = 0, 0.0, ""
        for row, values in quoted.items():
            if len(values) != len(new[row]):
                return n, math.inf, f"row {row}: {len(values)} numbers vs {len(new[row])}"
            for k, (a, b) in enumerate(zip(values, new[row], strict=True)):
                n += 1
                if abs(a - b) > worst:
                    worst, where = abs(a - b), f"row {row}, number {k + 1}: {a:g} vs {b:g}"
        return n, worst, where

    def check(self, worst: float) -> bool:
        return worst <= self.atol * (1 + 1e-9)

    def tolerance(self) -> str:
        return f"± {self.atol:g} each"


@dataclass(frozen=True)
class Reproduction:
    """One experiment of the docs: ``gflow run <config> <overrides>``, the figures it draws that
    the docs show (``figures``: file in the run's ``figures/`` → file in ``docs/figures/``) and
    the numbers the docs quote from it. ``cheap``: runs in the test suite (seconds);
    ``minutes``: rough wall time on a 2-core machine; ``stub``: declared, not yet filled (its
    numbers are not checked)."""

    name: str
    config: str
    figures: dict[str, str]
    numbers: tuple[Quoted, ...] = ()
    tables: tuple[QuotedTable, ...] = ()
    overrides: tuple[str, ...] = ()
    cheap: bool = False
    minutes: float = 1.0
    description: str = ""
    stub: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def command(self) -> str:
        return " ".join(["gflow run", self.config, *self.overrides])


def read_value(run_dir: str | Path, source: Source) -> float:
    """The number at ``source`` (see :class:`Quoted`) in a run directory."""
    run_dir = Path(run_dir)
    file, *path = source
    if file.endswith(".npz"):
        arrays = load_arrays(run_dir / file)
        key, s, *index = path
        ts = np.asarray(arrays["ts"] if "ts" in arrays else load_arrays(run_dir)["ts"])
        value = np.asarray(arrays[key])[len(ts) - 1 if s == -1 else int(np.argmin(abs(ts - s)))]
        for i in index:
            value = value[i]
        return float(value)
    value = read_json(run_dir / file)
    for key in path:
        value = value[key]
    return float(value)


def describe_source(source: Source) -> str:
    file, *path = source
    if file.endswith(".npz"):
        key, s, *index = path
        at = "last save" if s == -1 else f"s = {s:g}"
        return f"{file} {key}{''.join(f'[{i}]' for i in index)} at {at}"
    return f"{file} → " + " → ".join(str(p) for p in path)


def _duration(minutes: float) -> str:
    return f"{minutes * 60:.0f} s" if minutes < 1 else f"{minutes:g} min"


def results_markdown(entries: list[Reproduction]) -> str:
    """The sections of docs/results.md, one per entry (``gflow reproduce --markdown``)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    out = []
    for e in entries:
        out += [f"## {e.name}", ""]
        if e.description:
            out += [e.description[0].upper() + e.description[1:] + ".", ""]
        out += [f"![{e.name}](figures/{f})" for f in e.figures.values()] + [""]
        cheap = " The test suite runs it." if e.cheap else ""
        out += [
            f"`{e.command}`, about {_duration(e.minutes)} on a 2-core machine.{cheap}",
            "",
            "```bash",
            f"gflow reproduce {e.name}",
            "```",
            "",
        ]
        if e.stub:
            out += ["A stub: the numbers of this study are not registered yet.", ""]
            continue
        out += [
            "| number | docs | tolerance | where in the run | quoted in |",
            "|---|---|---|---|---|",
        ]
        for q in e.numbers:
            where = "this page" if q.docs == "docs/results.md" else q.docs
            out.append(
                f"| {cell(q.label)} | {q.quoted} | {q.tolerance()} | "
                f"{cell(describe_source(q.source))}{f' (× {q.scale:g})' if q.scale != 1 else ''}"
                f" | {where} |"
            )
        for t in e.tables:
            out.append(
                f"| {cell(t.label)} | every number of the table | {t.tolerance()} | "
                f"{t.source} → {cell(t.source_heading)} | {t.docs} → {cell(t.heading)} |"
            )
        out.append("")
    return "\n".join(out)
