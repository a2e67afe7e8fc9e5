"""``gflow reproduce [NAME ...] [--out DIR] [--list] [--cheap] [--update-docs]``: re-run the
experiment behind each figure of the docs, redraw the figure, and check every number the docs
quote from it against the new run (exit status 1 on a mismatch).

The entries (config, overrides, figures, quoted numbers with their tolerances) are the registry
``gflow_jax/experiments/reproductions.toml``; docs/results.md shows each with its
command. Runs go to DIR/<name>-<UTC time>/ and the figures, under their docs names, to
DIR/figures/; ``--update-docs`` also copies them into docs/figures/ when every number checks.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from ._errors import CommandError, add_command

#: the command's line in ``gflow --help``
HELP = "re-run the experiments behind the docs' figures and check the numbers quoted"

ROOT = Path(__file__).resolve().parents[2]


def _entries(names: list[str], cheap: bool):
    from ..experiments._results import reproductions

    known = reproductions()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CommandError(f"unknown figure(s) {', '.join(unknown)}; known: {', '.join(known)}")
    chosen = [known[n] for n in names] if names else list(known.values())
    if cheap:
        chosen = [e for e in chosen if e.cheap]
    return chosen


def _list(entries) -> int:
    print(f"{'name':<26} {'min':>5} {'cheap':<5} {'numbers':>7}  docs figures  <-  command")
    for e in entries:
        figs = ", ".join(e.figures.values())
        state = "stub" if e.stub else str(len(e.numbers))
        cheap = "yes" if e.cheap else "no"
        print(f"{e.name:<26} {e.minutes:>5.1f} {cheap:<5} {state:>7}  {figs}  <-  {e.command}")
    return 0


def reproduce(entry, out: Path, *, progress: bool = False, log=print) -> list[dict]:
    """Run one entry into ``out``, copy its figures to ``out/figures`` under their docs names
    and check its numbers; returns one row per number (``ok`` false on a mismatch)."""
    from ..experiments import config_snapshot, load_experiment
    from ..experiments._reproduce import describe_source, read_value
    from ..io import create_run_dir, write_json
    from ._run import execute_run

    config_path = ROOT / entry.config
    kind, config = load_experiment(config_path, list(entry.overrides))
    run_dir = create_run_dir(out, entry.name)
    write_json(run_dir / "config.json", config_snapshot(kind, config))
    log(f"gflow: {entry.name}: {entry.command} -> {run_dir}")
    t0 = time.perf_counter()
    drawn = {p.name: p for p in execute_run(kind, config, run_dir, progress)}
    (out / "figures").mkdir(parents=True, exist_ok=True)
    for name, docs_name in entry.figures.items():
        if name not in drawn:
            raise CommandError(f"{entry.name}: the run drew no {name} (drawn: {sorted(drawn)})")
        shutil.copyfile(drawn[name], out / "figures" / docs_name)
    rows = []
    for q in entry.numbers:
        try:
            new = read_value(run_dir, q.source) * q.scale
        except (KeyError, IndexError, FileNotFoundError, TypeError, ValueError) as err:
            new, where = float("nan"), f"{describe_source(q.source)} unreadable: {err!r}"
        else:
            where = describe_source(q.source)
        rows.append(
            {"entry": entry.name, "label": q.label, "quoted": q.quoted, "new": new,
             "tolerance": q.tolerance(), "ok": q.check(new), "docs": q.docs, "source": where}
        )  # fmt: skip
    for t in entry.tables:
        try:
            n, worst, where = t.compare(
                (ROOT / t.docs).read_text(encoding="utf-8"),
                (run_dir / t.source).read_text(encoding="utf-8"),
            )
        except (KeyError, FileNotFoundError) as err:
            n, worst, where = 0, float("nan"), f"{t.source} unreadable: {err}"
        rows.append(
            {"entry": entry.name, "label": t.label, "quoted": f"{n} numbers", "new": worst,
             "tolerance": t.tolerance(), "ok": n > 0 and t.check(worst), "docs": t.docs,
             "source": f"{t.source} → {t.source_heading}; largest difference at {where}"}
        )  # fmt: skip
    seconds = time.perf_counter() - t0
    bad = sum(not r["ok"] for r in rows)
    log(
        f"gflow: {entry.name}: {len(rows) - bad}/{len(rows)} numbers as quoted "
        f"({seconds:.0f} s); figures {', '.join(entry.figures.values())}"
    )
    return rows


def _cmd_reproduce(args: argparse.Namespace) -> int:
    entries = _entries(args.names, args.cheap)
    if args.list:
        return _list(entries)
    if args.markdown:
        from ..experiments._reproduce import results_markdown

        print(results_markdown(entries), end="")
        return 0
    if args.dry_run:
        from ..experiments import load_experiment

        for e in entries:
            if not e.stub:
                load_experiment(ROOT / e.config, list(e.overrides))
        print(f"gflow: {len(entries)} entries valid: {', '.join(e.name for e in entries)}")
        return 0
    stubs = [e for e in entries if e.stub]
    for e in stubs:
        print(f"gflow: {e.name}: a stub (no config or numbers registered yet); skipped")
    entries = [e for e in entries if not e.stub]
    if not entries:
        print("gflow: nothing to run (see `gflow reproduce --list`)")
        return 0
    out = args.out or Path("runs") / f"reproduce-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    rows = []
    for entry in entries:
        mine = reproduce(entry, out)
        rows += mine
        if args.update_docs and all(r["ok"] for r in mine):
            for docs_name in entry.figures.values():
                shutil.copyfile(out / "figures" / docs_name, ROOT / "docs" / "figures" / docs_name)
                print(f"gflow: updated docs/figures/{docs_name}")
    print(f"{'':3}{'entry':<14} {'number':<52} {'docs':>10} {'new run':>12}  tolerance")
    for r in rows:
        mark = "ok" if r["ok"] else "!!"
        print(
            f"{mark:<3}{r['entry']:<14} {r['label'][:52]:<52} {r['quoted']:>10} "
            f"{r['new']:>12.4g}  {r['tolerance']}"
        )
    bad = [r for r in rows if not r["ok"]]
    if bad:
        for r in bad:
            print(
                f"gflow: mismatch: {r['entry']}: {r['label']}: docs ({r['docs']}) say "
                f"{r['quoted']}, the new run gives {r['new']:.6g} ({r['source']})"
            )
        print(f"gflow: {len(bad)} of {len(rows)} numbers differ from the docs; runs in {out}")
        return 1
    print(f"gflow: all {len(rows)} numbers as the docs quote them; figures in {out / 'figures'}")
    return 0


def register(sub) -> None:
    """Add ``reproduce`` to the ``gflow`` subparsers."""
    p = add_command(sub, "reproduce", _cmd_reproduce, HELP, __doc__)
    p.add_argument("names", nargs="*", metavar="NAME", help="entries to run (default: all)")
    p.add_argument("--out", type=Path, default=None, help="root of the runs and figures")
    p.add_argument("--list", action="store_true", help="list the entries and stop")
    p.add_argument("--cheap", action="store_true", help="only the entries the tests run")
    p.add_argument(
        "--markdown", action="store_true", help="print the sections of docs/results.md and stop"
    )
    p.add_argument("--dry-run", action="store_true", help="validate every entry's config and stop")
    p.add_argument(
        "--update-docs",
        action="store_true",
        help="copy each figure into docs/figures/ when all its numbers check",
    )
