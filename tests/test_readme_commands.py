"""Every command in the code blocks of the README and the docs is run, placeholders filled in,
so none can rot.

Fast (the default suite): ``gflow run``, ``gflow sweep`` and ``gflow reproduce`` commands are run
with ``--dry-run`` (the config and every override validated, every option parsed, nothing
written); ``gflow info``, ``gflow magnitude``, ``gflow figures`` (on a small truncation run made
here; on the directory of a ``magnitude_generalization`` run that was never run it must refuse
with "nothing to draw yet"), ``gflow reproduce --list``, the Python blocks and ``make -n`` run as
written. Slow (``make test-all``): every ``gflow`` command runs for real, as written, except
``--executor slurm`` (no Slurm cluster on a test machine) and the studies of 15 minutes and more
(``EXPENSIVE``; their small variant runs), which stay dry runs.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from gflow_jax.cli import main

from .helpers import SMALL_TRUNCATION

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
TINY = SMALL_TRUNCATION


def _blocks() -> list[tuple[str, int, str, str]]:
    """``(document, line, language, text)`` of every fenced code block."""
    found = []
    for doc in DOCUMENTS:
        text = (ROOT / doc).read_text()
        for m in FENCE.finditer(text):
            found.append((doc, text[: m.start()].count("\n") + 1, m.group(1), m.group(2)))
    return found


SHELL = ("bash", "sh", "")  # an unlabelled block holds commands
NOT_RUN = ("text", "toml")  # diagrams and config excerpts


def _commands() -> list[tuple[str, str]]:
    """``(id, command)`` of every line of every shell block (comments removed)."""
    out = []
    for doc, line, lang, text in _blocks():
        if lang not in SHELL:
            continue
        for i, raw in enumerate(text.splitlines()):
            command = raw.split(" #", 1)[0].strip()
            if command and not command.startswith("#"):
                out.append((f"{doc}:{line + 1 + i}", command))
    return out


COMMANDS = _commands()
PYTHON_BLOCKS = [(f"{d}:{n}", t) for d, n, lang, t in _blocks() if lang == "python"]


class Fillers:
    """What the placeholders of the docs stand for, made on first use in one folder."""

    def __init__(self, root: Path, real: bool):
        self.root, self.real, self.made = root, real, {}

    def _once(self, key, make):
        if key not in self.made:
            self.made[key] = make()
        return self.made[key]

    def run_dir(self, config: str, overrides=(), *, interrupted: bool = False) -> str:
        def make():
            out = self.root / "made"
            before = set(out.glob("*")) if out.exists() else set()
            if interrupted:  # the directory of a run stopped at once
                from gflow_jax.experiments import config_snapshot, load_experiment
                from gflow_jax.io import create_run_dir, write_json

                kind, cfg = load_experiment(ROOT / "experiments" / config, list(overrides))
                run = create_run_dir(out, cfg.name)
                write_json(run / "config.json", config_snapshot(kind, cfg))
                write_json(run / "status.json", {"state": "interrupted"})
                return str(run)
            argv = ["run", f"experiments/{config}", *overrides, "--out", str(out), "--quiet"]
            assert main(argv) == 0
            (run,) = set(out.glob("*")) - before
            return str(run)

        return self._once((config, tuple(overrides)), make)

    def sweep_dir(self) -> str:
        def make():
            from gflow_jax.sweep import create_sweep, plan_sweep

            plan = plan_sweep(ROOT / "experiments" / "truncation_sweep.toml")
            return str(create_sweep(plan, self.root / "made"))

        return self._once("sweep", make)

    def points(self) -> str:
        path = self.root / "points.npy"
        np.save(path, np.random.default_rng(0).normal(size=(40, 2)))
        return str(path)

    def is_stub(self, path: str) -> bool:
        """A run directory made without running (fast mode): figures refuse it, politely."""
        status = Path(path) / "status.json"
        return status.is_file() and '"interrupted"' in status.read_text()

    def fill(self, argv: list[str]) -> list[str]:
        out = []
        for word in argv:
            if re.fullmatch(r"runs/truncation-\d{8}-\d{6}", word):
                word = self.run_dir("truncation.toml", [] if self.real else TINY)
            elif re.fullmatch(r"runs/[a-z_]+-<stamp>", word) and word != SWEEP_DIR:
                name = word[len("runs/") : -len("-<stamp>")]
                if name in EXPENSIVE or not self.real:  # the directory of a run, never run
                    word = self.run_dir(f"{name}.toml", interrupted=True)
                else:
                    word = self.run_dir(f"{name}.toml")
            elif word == SWEEP_DIR:
                word = self.sweep_dir()
            elif word == "CONFIG.toml":
                word = "experiments/truncation_sweep.toml"
            elif word == "points.npy":
                word = self.points()
            assert "<" not in word and "CONFIG" not in word, f"no filler for {word!r}"
            out.append(word)
        return out


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with the repository's experiments/, where runs/ is written."""
    path = tmp_path_factory.mktemp("readme")
    (path / "experiments").symlink_to(ROOT / "experiments")
    return path


SWEEP_DIR = "runs/truncation-sweep-<stamp>"
# studies of 15 to 30 minutes and more: dry runs even in test-all (their run directories are
# made, never run: `gflow figures` must refuse them, `--resume` is a dry run)
EXPENSIVE = ("magnitude_generalization", "generalization_grid", "generalization_grid_cpu")
ALWAYS_DRY = tuple(f"experiments/{name}.toml" for name in EXPENSIVE)


def _check_install(command: str) -> None:
    """An install command for an accelerator (no GPU and no CUDA wheels on a test machine):
    every extra it names is declared in pyproject.toml and pins jax with that CUDA plugin."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    named = re.findall(r"\.\[(\w+)\]", command)
    assert named, command
    for extra in named:
        assert extra in extras, f"{command!r}: no extra {extra!r} in pyproject.toml"
        assert any(dep.startswith(f"jax[{extra}]") for dep in extras[extra]), extras[extra]


def _dry(argv: list[str]) -> bool:
    command = argv[0]
    if "--executor" in argv and argv[argv.index("--executor") + 1] == "slurm":
        return True
    return command in ("run", "sweep") or (command == "reproduce" and "--list" not in argv)


def _run(command: str, workdir: Path, fillers: Fillers, real: bool, monkeypatch):
    monkeypatch.chdir(workdir)
    argv = shlex.split(command)
    program = argv.pop(0)
    if program in ("make",):
        if shutil.which("make") is None:
            pytest.skip("make is not installed")
        proc = subprocess.run(["make", "-n", *argv], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        return
    if program == "python" and argv[:2] == ["-m", "venv"]:
        _check_install(command)
        return
    assert program.endswith("gflow"), f"a command the test cannot run: {command!r}"
    argv = fillers.fill(argv)
    if argv[0] in ("run", "sweep"):
        argv.append("--quiet")
    expensive = any(a in ALWAYS_DRY or fillers.is_stub(a) for a in argv[1:])
    if (not real and _dry(argv)) or "slurm" in argv or (expensive and argv[0] != "figures"):
        argv.append("--dry-run")
    if argv[0] == "figures" and fillers.is_stub(argv[1]):
        assert main(argv) == 2  # not run here: "nothing to draw yet; finish it with ..."
        return
    assert main(argv) == 0, command


@pytest.fixture(scope="module")
def fast_fillers(workdir):
    return Fillers(workdir, real=False)


@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_documented_command(where, command, workdir, fast_fillers, monkeypatch):
    _run(command, workdir, fast_fillers, False, monkeypatch)


@pytest.fixture(scope="module")
def real_fillers(tmp_path_factory):
    path = tmp_path_factory.mktemp("readme_real")
    (path / "experiments").symlink_to(ROOT / "experiments")
    return Fillers(path, real=True)


@pytest.mark.slow
@pytest.mark.parametrize(("where", "command"), COMMANDS, ids=[c[0] for c in COMMANDS])
def test_documented_command_as_written(where, command, real_fillers, monkeypatch):
    _run(command, real_fillers.root, real_fillers, True, monkeypatch)


@pytest.mark.parametrize(("where", "code"), PYTHON_BLOCKS, ids=[p[0] for p in PYTHON_BLOCKS])
def test_documented_python(where, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec(compile(code, where, "exec"), {"__name__": "__docs__"})


def test_every_block_is_covered():
    """Every fenced block is shell commands this test runs, or Python it executes."""
    for doc, line, lang, _ in _blocks():
        assert lang in (*SHELL, *NOT_RUN, "python"), f"{doc}:{line}: label the block's language"
    assert len(COMMANDS) >= 10 and PYTHON_BLOCKS
    assert any("gflow reproduce" in c for _, c in COMMANDS)


def test_placeholders_cover_the_docs():
    """Every ``<...>`` or upper-case placeholder of a command has a filler (checked without
    running anything: the fillers raise on unknown placeholders)."""
    for where, command in COMMANDS:
        for word in shlex.split(command)[1:]:
            if "<" in word or word.isupper() and word.endswith(".toml"):
                known = word in (SWEEP_DIR, "CONFIG.toml")
                run = re.fullmatch(r"runs/([a-z_]+)-<stamp>", word)
                assert known or (run and (ROOT / "experiments" / f"{run[1]}.toml").is_file()), (
                    f"{where}: {word}"
                )
