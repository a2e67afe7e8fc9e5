"""benchmarks/work_precision.py: its NumPy field is the library's field, and ``--quick`` writes a
table with every method and a finite error wherever a solve succeeded (timings not checked)."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from gflow_jax.core import threshold_gradient

ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def _benchmark():
    path = ROOT / "benchmarks" / "work_precision.py"
    spec = importlib.util.spec_from_file_location("work_precision", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_numpy_field_and_jacobian_are_the_library_field():
    wp = _benchmark()
    gradient = jax.jit(threshold_gradient)
    for name, make in wp.PROBLEMS.items():
        problem, params = make(jax.random.PRNGKey(3), wp.QUICK)
        field = wp.NumpyField(
            np.asarray(problem.u), np.asarray(problem.targets), np.asarray(params.d)
        )
        rng = np.random.default_rng(0)
        u = np.asarray(problem.u)
        for trial in range(20):
            c = np.asarray(params.thresholds) + rng.normal(0.0, 1.0, params.d.shape)
            if trial % 2:  # faces exactly on data values and on each other: the tie conventions
                c = u[rng.integers(0, u.shape[0], c.shape), np.arange(c.shape[1])[None, :]]
                c[-1] = c[0]
            b = -c * np.asarray(params.d)
            c = -b / np.asarray(params.d)  # as the field sees it (ties survive the rounding)
            g, n = gradient(jnp.asarray(c), params.d, problem.sorted)
            expected = np.asarray(g / params.d).ravel()  # ∂_s b = −∂C/∂b = g/d
            np.testing.assert_allclose(field(0.0, b.ravel()), expected, rtol=1e-13, atol=1e-14)
            jac = np.diag(field.jacobian(0.0, b.ravel()))
            n_points = u.shape[0]
            expected_jac = -(np.asarray(n) / (n_points * np.asarray(params.d) ** 2)).ravel()
            np.testing.assert_allclose(jac, expected_jac, rtol=1e-13, err_msg=name)


def test_quick_mode_has_every_method_and_finite_errors(tmp_path):
    wp = _benchmark()
    result = wp.main(["--quick", "--out", str(tmp_path)])
    methods = {f"diffrax {solver} + {controller}" for solver, controller, _ in wp.DIFFRAX}
    methods |= {f"scipy {m}" for m in wp.SCIPY} | {wp.LOCATED_METHOD, wp.EXACT_METHOD}
    table = (tmp_path / "work_precision.md").read_text()
    for problem in ("separated", "sliding"):
        rows = [r for r in result["rows"] if r["problem"] == problem]
        assert {r["method"] for r in rows} == methods, problem
        for r in rows:
            assert np.isfinite(r["seconds"]) and r["seconds"] > 0
            if r["success"]:
                assert np.isfinite(r["error"]), (problem, r["method"], r["rtol"])
            else:
                assert r["note"], (problem, r["method"], r["rtol"])  # failures say why
        # without sliding every method solves at the loosest tolerance; with it, the event-
        # located solve and the exact solver do at every tolerance (the others may chatter out)
        must = methods if problem == "separated" else {wp.LOCATED_METHOD, wp.EXACT_METHOD}
        for method in must:
            assert all(r["success"] for r in rows if r["method"] == method) or (
                problem == "separated" and any(r["success"] for r in rows if r["method"] == method)
            ), (problem, method)
        exact = next(r for r in rows if r["method"] == wp.EXACT_METHOD)
        assert exact["error"] == 0.0 and exact["steps"] == result["exact"][problem]["events"]
        assert result["ratios"][problem]["exact_vs_default"] > 0
        interleaved = result["exact"][problem]["interleaved"]
        assert len(interleaved["ratios"]) == 2 and interleaved["median_ratio"] > 0
        assert "timed interleaved" in table
        assert f"## {problem}" in table
    for method in methods:
        assert f"| {method} |" in table
    assert json.loads((tmp_path / "work_precision.json").read_text())["rows"]
    assert (tmp_path / "work_precision.png").stat().st_size > 10_000
