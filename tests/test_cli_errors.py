"""What the command line says when something goes wrong: one line naming the key, option or
file, no traceback, the right exit status, and nothing left behind by a refused command; and
how every run ends (the run directory and its main figure)."""

from __future__ import annotations

import io
import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from gflow_jax.cli import main
from gflow_jax.experiments import ConfigBase, ExperimentKind, OutputConfig, register_kind
from gflow_jax.io import load_arrays, progress_enabled, pyplot, save_figure, write_metrics

from .helpers import SMALL_TRUNCATION

ROOT = Path(__file__).resolve().parents[1]
SMALL = SMALL_TRUNCATION

# --------------------------------------------------------------------------------------------
# a toy kind that succeeds, fails or is interrupted on request


@dataclass(frozen=True)
class ActConfig(ConfigBase):
    name: str = "act"
    seed: int = 0
    action: str = "ok"  # "ok" | "fail" | "interrupt"
    output: OutputConfig = field(default_factory=OutputConfig)


def _act_run(cfg: ActConfig, run_dir: Path, progress: bool) -> dict:
    if cfg.action == "interrupt":
        raise KeyboardInterrupt
    if cfg.action == "fail":
        raise RuntimeError("the solve stopped: raise flow.max_steps")
    np.savez(run_dir / "arrays.npz", x=np.arange(3.0) + cfg.seed)
    write_metrics(run_dir / "metrics.jsonl", [{"s": 0.0, "loss": float(cfg.seed)}])
    return {"seed": cfg.seed}


def _act_figures(run_dir: Path) -> list[Path]:
    x = load_arrays(run_dir)["x"]  # FileNotFoundError before the run finished
    fig, ax = pyplot().subplots()
    ax.plot(x)
    return [save_figure(fig, run_dir / "figures" / "x.png")]


ACT = ExperimentKind("act", "test kind", ActConfig, _act_run, _act_figures, main_figure="x.png")
register_kind("act", "tests.test_cli_errors:ACT")


def _config(tmp_path: Path, action: str = "ok", extra: str = "") -> Path:
    path = tmp_path / f"act_{action}.toml"
    text = f'kind = "act"\naction = "{action}"\n{extra}[output]\nprogress = false\n'
    path.write_text(textwrap.dedent(text))
    return path


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------------------------
# runs: the last line, Ctrl-C, failures, incomplete runs, resume


def test_a_run_ends_naming_its_directory_and_main_figure(tmp_path, capsys):
    assert main(["run", str(_config(tmp_path)), "--out", str(tmp_path / "runs")]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last == f"gflow: results in {run}; main figure {run / 'figures' / 'x.png'}"


def test_ctrl_c_is_one_line_with_the_resume_command(tmp_path, capsys):
    rc = main(["run", str(_config(tmp_path, "interrupt")), "--out", str(tmp_path / "runs")])
    assert rc == 130
    (run,) = (tmp_path / "runs").iterdir()
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("gflow: interrupted:") and f"gflow run --resume {run}" in line
    assert json.loads((run / "status.json").read_text())["state"] == "interrupted"
    # the incomplete run cannot be drawn yet, and says what to do
    assert main(["figures", str(run)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "was interrupted" in line and f"gflow run --resume {run}" in line
    assert "Errno" not in line


def test_a_failed_run_is_one_line_and_keeps_its_traceback(tmp_path, capsys):
    rc = main(["run", str(_config(tmp_path, "fail")), "--out", str(tmp_path / "runs")])
    assert rc == 1
    (run,) = (tmp_path / "runs").iterdir()
    line = _one_line(capsys.readouterr().err)
    assert "raise flow.max_steps" in line and "status.json" in line
    status = json.loads((run / "status.json").read_text())
    assert status["state"] == "failed" and "Traceback" in status["traceback"]


def test_a_real_solver_failure_is_one_line(tmp_path, capsys):
    config = ROOT / "experiments" / "truncation.toml"
    args = ["run", str(config), *SMALL, "flow.max_steps=10", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 1
    line = _one_line(capsys.readouterr().err)
    assert "stopped before s = 4" in line and "flow.max_steps" in line


def test_resume_works_for_every_kind(tmp_path, capsys):
    """A kind that cannot skip finished work runs again from the start in the same directory."""
    config = _config(tmp_path, "interrupt")
    assert main(["run", str(config), "--out", str(tmp_path / "runs")]) == 130
    (run,) = (tmp_path / "runs").iterdir()
    (run / "analysis.json").write_text("{}")  # something an earlier attempt cached
    snapshot = json.loads((run / "config.json").read_text())
    snapshot["action"] = "ok"  # (the toy's way to succeed the second time)
    (run / "config.json").write_text(json.dumps(snapshot))
    capsys.readouterr()
    assert main(["run", "--resume", str(run)]) == 0
    out = capsys.readouterr().out
    assert "from the start" in out and f"gflow: results in {run}" in out
    assert not (run / "analysis.json").exists()
    assert json.loads((run / "status.json").read_text())["state"] == "complete"
    assert main(["run", "--resume", str(run)]) == 0
    assert "nothing to resume" in capsys.readouterr().out


def test_help_says_which_kinds_skip_finished_work(capsys):
    from gflow_jax.experiments import available_kinds, get_kind, kind_target

    assert main(["run", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    skipping = text.split("skips", 1)[0]
    for name in available_kinds():
        if not kind_target(name).startswith("gflow_jax."):
            continue  # kinds registered by tests
        kind = get_kind(name)
        assert (name in skipping) == kind.resumable, name
        assert name in text, name


# --------------------------------------------------------------------------------------------
# refused commands: one line, exit status 2, nothing written


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["sweep", "experiments/truncation_sweep.toml", "--jobs", "0"], "argument --jobs"),
        (["sweep", "experiments/truncation_sweep.toml", "--devices", "x"], "argument --devices"),
        (["sweep", "experiments/truncation_sweep.toml", "--cpu-devices", "0"], "--cpu-devices"),
        (["sweep", "experiments/truncation_sweep.toml", "--executor", "pbs"], "--executor"),
        (["sweep", "experiments/truncation_sweep.toml", "--devices", "64"], "option '--devices'"),
        (["run", "experiments/truncation.toml", "flow"], "argument 'flow'"),
        (["run", "experiments/truncation.toml", "flow.t_final=-1"], "config key 'flow.t_final'"),
        (["run", "missing.toml"], "config file not found: missing.toml"),
        (["run"], "give a config file"),
        (["run", "--resume", "nowhere"], "no such run directory: nowhere"),
        (["figures", "nowhere"], "no such run directory: nowhere"),
        (["sweep", "--resume", "nowhere"], "not a sweep directory"),
        (["reproduce", "no_such_figure"], "unknown figure"),
        (["bogus"], "invalid choice"),
    ],
)
def test_refused_commands_are_one_line_and_write_nothing(argv, needle, tmp_path, capsys):
    argv = [str(ROOT / a) if a.startswith("experiments/") else a for a in argv]
    if argv[0] in ("run", "sweep") and "--resume" not in argv:
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    line = _one_line(capsys.readouterr().err)
    assert needle in line, line
    assert not (tmp_path / "out").exists()


def test_bad_toml_names_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[flow\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "out")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"gflow: error: file '{bad}': not valid TOML")


def test_slurm_without_submitit_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "submitit" else real(name)
    )
    config = ROOT / "experiments" / "truncation_sweep.toml"
    args = ["sweep", str(config), "--executor", "slurm", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert "option '--executor'" in line and "gflow_jax[cluster]" in line
    assert not (tmp_path / "out").exists()


def test_interrupted_sweep_is_one_line_with_the_resume_command(tmp_path, capsys):
    config = _config(tmp_path, "interrupt", "[sweep.axes]\nseed = [0, 1]\n")
    assert main(["sweep", str(config), "--out", str(tmp_path), "--quiet"]) == 130
    (sweep_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    line = _one_line(capsys.readouterr().err)
    assert f"gflow sweep --resume {sweep_dir}" in line


# --------------------------------------------------------------------------------------------
# gflow magnitude


@pytest.mark.parametrize(
    ("make", "options", "needle"),
    [
        (lambda p: np.save(p, np.zeros((1, 2))), [], "give at least two distinct points"),
        (lambda p: p.write_text("hello"), [], "not a .npy/.npz file of points"),
        (lambda p: np.save(p, np.array([{"a": 1}])), [], "not a .npy/.npz file of points"),
        (lambda p: np.save(p, np.eye(3)), ["--scales", "1:0:5"], "argument --scales: a:b:S"),
        (lambda p: np.save(p, np.eye(3)), ["--scales", "abc"], "argument --scales: expected"),
        (lambda p: np.save(p, np.eye(3)), ["--scales", "1"], "argument --scales: give at least"),
        (lambda p: np.save(p, np.eye(3)), ["--n-scales", "1"], "argument --n-scales"),
        (lambda p: np.save(p, np.eye(3)), ["--metric", "cosine"], "argument --metric"),
        (lambda p: None, [], "no such file"),
    ],
)
def test_magnitude_errors_name_the_option_or_file(make, options, needle, tmp_path, capsys):
    points = tmp_path / "points.npy"
    make(points)
    assert main(["magnitude", str(points), *options]) == 2
    line = _one_line(capsys.readouterr().err)
    assert needle in line and "config key" not in line and "pickle" not in line, line
    assert not list(tmp_path.glob("*.png"))


# --------------------------------------------------------------------------------------------
# progress bars and the clock note


def test_progress_bars_only_on_a_terminal():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert progress_enabled(True, Terminal()) is True
    assert progress_enabled(True, io.StringIO()) is False  # a log file: no bar
    assert progress_enabled(False, Terminal()) is False


def test_the_save_grid_is_chosen_from_the_step_sizes(capsys):
    config = str(ROOT / "experiments" / "truncation.toml")
    args = ["run", config, "flow.mode=joint", "flow.t_final=20", "gd.etas=[0.05]", "--dry-run"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "using flow.n_save = 201 (every 0.1)" in out and "config valid" in out
    assert main(["run", config, "gd.etas=[0.03]", "--dry-run"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "gd.etas[0]" in line and "flow.t_final = 40 is not a whole number of steps" in line


def test_slurm_without_sbatch_leaves_nothing_behind(tmp_path, capsys, monkeypatch):
    """submitit installed but no Slurm here: one line naming the option, nothing written."""
    import shutil

    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a: None if name == "sbatch" else real(name))
    config = ROOT / "experiments" / "truncation_sweep.toml"
    args = ["sweep", str(config), "--executor", "slurm", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    line = _one_line(capsys.readouterr().err)
    assert "option '--executor'" in line and "sbatch" in line
    assert not (tmp_path / "out").exists()
