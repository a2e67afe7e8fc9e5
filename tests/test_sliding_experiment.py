"""experiments/sliding.toml end to end at a short horizon: the face of coordinate 1 sticks at the
data value 2 at the closed-form time s* (docs/theory.md#sliding), the exact solution follows the
closed form to rounding, GD chatters around 2 within one step, the analysis has the stick row and
the sliding figure is drawn; explicit ``data.points`` are checked."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gflow_jax.cli import main
from gflow_jax.experiments import ConfigError
from gflow_jax.experiments.truncation import (
    load_config,
    run_truncation,
    run_truncation_batch,
    setup_experiment,
    write_analysis,
)
from gflow_jax.experiments.truncation._figures import S_LABEL, _style
from gflow_jax.experiments.truncation._sliding import plot_sliding
from gflow_jax.io import load_arrays

# N = 6 points, d = 1, targets 4 (cluster 0) and −6 (cluster 1) in coordinate 1
CROSSINGS = (0.5, 1.0, 2.0)  # the values the face reaches owning n = 1, 2, 3 points
C0, TARGET, N = 0.25, 4.0, 6


def closed_form(s: np.ndarray) -> tuple[np.ndarray, float]:
    """c(s) of coordinate 1: c = ỹ + (c_a − ỹ)e^{−n(s − s_a)/N} between crossings, then held at
    2 from s*; and s*."""
    c = np.full_like(s, CROSSINGS[-1])
    start, value = 0.0, C0
    for n, xi in enumerate(CROSSINGS, start=1):
        end = start + (N / n) * math.log((TARGET - value) / (TARGET - xi))
        on = (s >= start) & (s < end)
        c[on] = TARGET + (value - TARGET) * np.exp(-n * (s[on] - start) / N)
        start, value = end, xi
    return c, start


S_STICK = closed_form(np.zeros(1))[1]
ETA = 0.05


def test_the_stick_time_is_the_docs_formula():
    expected = 6 * math.log(3.75 / 3.5) + 3 * math.log(3.5 / 3) + 2 * math.log(1.5)
    assert S_STICK == pytest.approx(expected, rel=1e-15)
    assert S_STICK == pytest.approx(1.6873, abs=1e-4)  # quoted in experiments/sliding.toml


def _run(tmp_path, *overrides: str):
    args = ["run", "experiments/sliding.toml", "flow.t_final=5.0", "flow.n_save=101"]
    args += [f"gd.etas=[{ETA}]", "output.figures=false", *overrides]
    assert main([*args, "--out", str(tmp_path), "--quiet"]) == 0
    (run,) = tmp_path.iterdir()
    return run


def test_sliding_experiment_sticks_at_the_closed_form_value(tmp_path):
    """The run, its analysis and its figure, with the exact solver as the flow too (one
    compilation; the diffrax flow with events located is compared in the slow test below)."""
    run = _run(tmp_path, "flow.solver=exact")
    summary = json.loads((run / "summary.json").read_text())
    analysis, _ = write_analysis(run)  # what `gflow figures` computes first
    a = np.load(run / "arrays.npz")
    ts = a["ts"]

    # the exact solver: one stuck face, at the data value 2, from s*
    (face,) = summary["exact"]["stuck_faces"]
    assert (face["layer"], face["coord"]) == (0, 0)
    assert face["value"] == 2.0
    assert face["time"] == pytest.approx(S_STICK, abs=1e-12)
    assert summary["exact"]["events_by_kind"]["stick"] == 1
    exact = a["exact/thresholds"]
    np.testing.assert_allclose(exact[:, 0, 0], closed_form(ts)[0], rtol=0, atol=1e-12)
    # coordinate 2 crosses 2 and 2.5 and relaxes to the classical c* = 2.8 of the shared face
    assert np.all(np.diff(exact[:, 0, 1]) > 0) and 2.5 < exact[-1, 0, 1] < 2.8

    # GD on the same clock: within O(η) before, and within one step of 2 after s* (the one-sided
    # speeds at 2 are 1 from below and 1/3 from above)
    gd = a[f"gd/eta={ETA}/thresholds"][:, 0, 0]
    assert np.max(np.abs(gd - exact[:, 0, 0])) < 2 * ETA
    late = ts >= S_STICK + 0.5
    assert np.max(np.abs(gd[late] - 2.0)) <= 1.01 * ETA
    assert np.min(gd[late]) < 2.0 < np.max(gd[late])  # chatters across it

    # the analysis of the saved states: a stick row at 2 near s* for the flow and the exact one
    for prefix in ("flow", "exact"):
        sticks = analysis[prefix]["stick_events"]
        assert [(e["layer"], e["coord"], e["value"]) for e in sticks] == [(0, 0, 2.0)], prefix
        assert sticks[0]["time"] == pytest.approx(S_STICK, abs=1e-6)
        assert sticks[0]["amplitude"] < 1e-9  # held on the value
    # GD's stick rows report its chatter around the value: O(η), the size of its steps there
    gd_sticks = analysis[f"gd/eta={ETA}"]["stick_events"]
    assert gd_sticks and all(0 < e["amplitude"] <= 1.01 * ETA for e in gd_sticks)
    figure = plot_sliding(run, _style, S_LABEL, "test")  # the kind's other figures: elsewhere
    assert figure.name == "sliding.png" and figure.stat().st_size > 10_000


def test_explicit_points_are_checked():
    with pytest.raises(ConfigError, match="data.points"):
        load_config("experiments/sliding.toml", ["data.points=[[0.0, 0.0]]"])
    with pytest.raises(ConfigError, match="flow.compare_exact"):
        load_config("experiments/sliding.toml", ["flow.mode=joint"])


def test_sliding_experiment_diffrax_with_events_follows_the_exact_solution(tmp_path):
    """The config as written: diffrax with every event located sticks where the exact solution
    does (its analysis finds the stick row at s*)."""
    run = _run(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["exact"]["max_threshold_gap_to_flow"] < 1e-6
    analysis, _ = write_analysis(run)
    (stick,) = analysis["flow"]["stick_events"]
    assert (stick["layer"], stick["coord"], stick["value"]) == (0, 0, 2.0)
    assert stick["time"] == pytest.approx(S_STICK, abs=1e-6)


def test_a_sweep_batch_keeps_the_exact_trajectory(tmp_path):
    """The batched path of `gflow sweep` solves the exact flow beside the others, as a single
    run does (same arrays, same stuck face)."""
    base = ["flow.solver=exact", "flow.t_final=5.0", "flow.n_save=101"]
    configs = [
        load_config("experiments/sliding.toml", [*base, f"gd.etas=[{eta}]"]) for eta in (0.05, 0.1)
    ]
    run_dirs = [tmp_path / f"point{i}" for i in range(len(configs))]
    for d in run_dirs:
        d.mkdir()
    results = dict(run_truncation_batch(configs, run_dirs, log=lambda message: None))
    for i, cfg in enumerate(configs):
        assert not isinstance(results[i], Exception), results[i]
        arrays, single = run_truncation(setup_experiment(cfg))
        stored = load_arrays(run_dirs[i])
        assert sorted(stored) == sorted(arrays)
        np.testing.assert_allclose(
            stored["exact/thresholds"], arrays["exact/thresholds"], atol=1e-12
        )
        (face,) = results[i]["exact"]["stuck_faces"]
        assert face == pytest.approx(single["exact"]["stuck_faces"][0], abs=1e-12)
