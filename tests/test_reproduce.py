"""``gflow reproduce``: the registry of the docs' figures agrees with the docs (every figure of
docs/figures has an entry, every number an entry checks is quoted where it says, docs/results.md
is the registry's own markdown), the cheap entries reproduce, and a mismatch exits non-zero."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gflow_jax.cli import main
from gflow_jax.experiments import ConfigBase, ExperimentKind, OutputConfig, register_kind
from gflow_jax.experiments._reproduce import (
    Quoted,
    QuotedTable,
    Reproduction,
    markdown_rows,
    results_markdown,
)
from gflow_jax.experiments._results import _REPRODUCTIONS, reproductions
from gflow_jax.io import write_metrics

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- generated: gflow reproduce --markdown -->\n"


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_every_docs_figure_has_an_entry_and_every_entry_a_config():
    entries = reproductions()
    shown = {name for e in entries.values() for name in e.figures.values()}
    on_disk = {p.name for p in (ROOT / "docs" / "figures").glob("*.png")}
    assert on_disk <= shown, f"figures of the docs with no entry: {sorted(on_disk - shown)}"
    for e in entries.values():
        assert (ROOT / e.config).is_file(), e.config
        assert e.stub or e.numbers, e.name


def test_every_quoted_number_is_where_the_entry_says():
    for e in reproductions().values():
        for q in e.numbers:
            text = _flat((ROOT / q.docs).read_text())
            assert re.search(rf"(?<![\d.]){re.escape(q.quoted)}(?![\d])", text), (
                f"{e.name}: {q.label}: {q.quoted!r} is not quoted in {q.docs}"
            )
            assert q.check(q.value) or q.at_most is not None, (e.name, q.label)


def test_every_quoted_table_is_where_the_entry_says():
    tables = [(e, t) for e in reproductions().values() for t in e.tables]
    assert tables, "the generalisation tables are registered"
    for e, t in tables:
        rows = markdown_rows((ROOT / t.docs).read_text(), t.heading)
        assert len(rows) >= 2 and all(len(v) > 0 for v in rows.values()), (e.name, t.label)


PAGE = """intro

### Gap

| measure | τ | ψ |
|---|---|---|
| `a` | +0.35 [+0.24, +0.47] | – |
| `b` | −0.08 [−0.30, +0.15] | +1.00 [+1.00, +1.00] |

after
"""


def test_table_rows_and_their_comparison():
    assert markdown_rows(PAGE, "### Gap") == {
        "a": [0.35, 0.24, 0.47],
        "b": [-0.08, -0.30, 0.15, 1.0, 1.0, 1.0],
    }
    t = QuotedTable("gap table", "page.md", "### Gap", "table.md", "### g")
    run = PAGE.replace("### Gap", "### g")
    assert t.compare(PAGE, run) == (9, 0.0, "")
    n, worst, where = t.compare(PAGE, run.replace("+0.47", "+0.46"))
    assert n == 9 and abs(worst - 0.01) < 1e-12 and not t.check(worst) and "row a" in where
    assert t.check(t.compare(PAGE, run.replace("+0.47", "+0.474"))[1])
    assert t.compare(PAGE, run.replace("`b`", "`c`"))[1] == np.inf
    assert t.compare(PAGE, run.replace("| – |", "| +0.1 |"))[1] == np.inf


def test_results_page_is_the_registry():
    text = (ROOT / "docs" / "results.md").read_text()
    assert MARK in text
    generated = text.split(MARK, 1)[1]
    assert generated.strip() == results_markdown(list(reproductions().values())).strip(), (
        "docs/results.md is out of date: regenerate its sections with gflow reproduce --markdown"
    )


def test_tolerances():
    q = Quoted("x", "0.027", ("summary.json", "x"))
    assert q.check(0.0274) and q.check(0.0265) and not q.check(0.0276) and not q.check(np.nan)
    assert Quoted("x", "13 858", ("s",)).check(13858) and not Quoted("x", "13 858", ("s",)).check(1)
    assert Quoted("x", "1.3e-9", ("s",)).tolerance() == "± 5e-11"
    bound = Quoted("x", "1e-30", ("s",), at_most=1e-28)
    assert bound.check(3e-29) and not bound.check(2e-28)
    assert Quoted("x", "0", ("s",), atol=1e-12).check(-1e-16)


def test_cheap_entries_reproduce(tmp_path, capsys):
    cheap = [e.name for e in reproductions().values() if e.cheap]
    assert cheap, "at least one entry runs in the test suite"
    assert main(["reproduce", "--cheap", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "numbers as the docs quote them" in out
    for name in cheap:
        for docs_name in reproductions()[name].figures.values():
            assert (tmp_path / "figures" / docs_name).stat().st_size > 10_000


# --------------------------------------------------------------------------------------------
# a mismatch


@dataclass(frozen=True)
class ConstConfig(ConfigBase):
    name: str = "const"
    value: float = 1.0
    output: OutputConfig = field(default_factory=OutputConfig)


def _const_run(cfg: ConstConfig, run_dir: Path, progress: bool) -> dict:
    np.savez(run_dir / "arrays.npz", ts=np.arange(3.0), y=cfg.value * np.arange(3.0))
    (run_dir / "table.md").write_text(f"### g\n\n| m | v |\n|---|---|\n| `a` | {cfg.value} |\n")
    write_metrics(run_dir / "metrics.jsonl", [{"s": 0.0}])
    return {"value": cfg.value}


def _const_figures(run_dir: Path) -> list[Path]:
    from gflow_jax.io import pyplot, save_figure

    fig, ax = pyplot().subplots()
    ax.plot([0, 1])
    return [save_figure(fig, run_dir / "figures" / "const.png")]


CONST = ExperimentKind("const", "test kind", ConstConfig, _const_run, _const_figures)
register_kind("const", "tests.test_reproduce:CONST")


def test_a_mismatch_exits_non_zero_and_names_the_page(tmp_path, capsys, monkeypatch):
    config = tmp_path / "const.toml"
    config.write_text('kind = "const"\nvalue = 2.0\n[output]\nprogress = false\n')
    page = tmp_path / "page.md"
    page.write_text(
        "### Table\n\n| m | v |\n|---|---|\n| `a` | 2.00 |\n\n"
        "### Other\n\n| m | v |\n|---|---|\n| `a` | 2.5 |\n"
    )
    entry = Reproduction(
        name="const_check",
        config=str(config),
        figures={"const.png": "const_docs.png"},
        numbers=(
            Quoted("the value", "2.0", ("summary.json", "value")),
            Quoted("y at s = 2", "5.0", ("arrays.npz", "y", 2.0), docs="docs/elsewhere.md"),
        ),
        tables=(
            QuotedTable("the table", str(page), "### Table", "table.md", "### g"),
            QuotedTable("the other table", str(page), "### Other", "table.md", "### g"),
        ),
    )
    monkeypatch.setitem(_REPRODUCTIONS, entry.name, entry)
    assert main(["reproduce", "const_check", "--out", str(tmp_path / "out")]) == 1
    out = capsys.readouterr().out
    assert "mismatch: const_check: y at s = 2: docs (docs/elsewhere.md) say 5.0" in out
    assert "the new run gives 4" in out and "2 of 4 numbers differ" in out
    assert "the other table" in out and "row a, number 1: 2.5 vs 2" in out
    assert "!! const_check     the table" not in out
    assert (tmp_path / "out" / "figures" / "const_docs.png").is_file()
    (run,) = (tmp_path / "out").glob("const_check-*")
    assert json.loads((run / "summary.json").read_text()) == {"value": 2.0}
