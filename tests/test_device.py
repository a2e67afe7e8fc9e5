"""Accelerators, checked on the CPU where JAX lets us: what `gflow info` reports, batch sizes from
device memory, sweeps streamed in chunks, the float32 option and its measured error, the
magnitude device engine against the CPU engines, no host round trip inside the hot loops
(transfer guard, no callbacks in the programs), and the device suite's --smoke run.

Tests marked ``gpu`` need an accelerator (deselected by ``-m "not slow and not gpu"``): every
experiment kind's small config on the accelerator against the CPU answer, the magnitude device
engine against the CPU engine, the float64 flow on device against CPU."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow_jax.cli import main
from gflow_jax.core import (
    batched,
    device_memory,
    member_bytes,
    members_per_device,
    memory_batch_size,
    on_accelerator,
    pad_batch,
    stack,
)
from gflow_jax.experiments import ConfigError, load_experiment
from gflow_jax.experiments.truncation import load_config, run_truncation, setup_experiment
from gflow_jax.io import describe_environment, environment_info, load_arrays
from gflow_jax.magnitude import cloud_magnitudes, magnitude_function

from .helpers import SMALL_TRUNCATION

ROOT = Path(__file__).resolve().parents[1]
SMALL = SMALL_TRUNCATION


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


# --------------------------------------------------------------------------------------------
# gflow info


def test_info_reports_backend_devices_memory_and_float64(capsys):
    env = environment_info()
    assert env["backend"] == jax.default_backend() and env["float64"] is True
    assert len(env["devices"]) == len(jax.local_devices())
    assert all({"id", "platform", "kind"} <= set(d) for d in env["devices"])
    assert env["host_memory_bytes"] > 0
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert text == describe_environment(env) + "\n" or "backend:" in text
    assert f"backend: {jax.default_backend()}" in text and "float64: on" in text
    assert "device 0:" in text and "GiB" in text
    assert main(["info", "--json"]) == 0
    assert (
        json.loads(capsys.readouterr().out)["devices"][0]["platform"]
        == env["devices"][0]["platform"]
    )


# --------------------------------------------------------------------------------------------
# batch sizes from memory; sweeps in chunks


def test_members_per_device_divides_the_free_memory():
    devices = jax.local_devices()
    assert device_memory(devices[0]) > 0  # the host's available memory on a CPU
    assert members_per_device(100, devices, memory=10_000, fraction=0.5) == 50
    assert members_per_device(10**9, devices, memory=10) == 1  # at least one
    with pytest.raises(ValueError, match="member_bytes"):
        members_per_device(0, devices)


def test_member_bytes_counts_arguments_and_results():
    def member(x, y):
        return {"sum": x + y, "outer": x[:, None] * y[None, :]}

    x = jnp.ones(10)
    # arguments 2 × 80 B, results 80 B + 800 B, times the working-set factor 4
    assert member_bytes(member, (x, x)) == 4 * (160 + 880)


def test_a_sweep_group_streams_in_memory_sized_chunks(tmp_path, monkeypatch):
    """Three points whose memory allows two at a time: two chunks (the second padded, dispatched
    before the first is written); point 2 repeats point 0's config, and gets its answer. (Batches
    of 2: tests/test_sweep.py counts its own compilations of the batches of 4.)"""
    import gflow_jax.core._devices as devices_module
    from gflow_jax.experiments.truncation import _batch

    seeds = [0, 1, 0]
    configs = [load_config("experiments/truncation.toml", [*SMALL, f"seed={k}"]) for k in seeds]
    one = _batch._member_args(setup_experiment(configs[0]), 12)
    per_member = member_bytes(_batch._batch_member, one)
    devices = jax.local_devices()[:1]
    monkeypatch.setattr(devices_module, "device_memory", lambda d: 1 << 40)
    assert memory_batch_size(_batch._batch_member, one, 1000, devices) == 128  # CPU: cache-sized
    # memory for exactly two members per chunk (a chunk plans with half of MEMORY_FRACTION)
    monkeypatch.setattr(devices_module, "device_memory", lambda d: 2 * per_member * 4)
    assert memory_batch_size(_batch._batch_member, one, 3, devices) == 2
    assert memory_batch_size(_batch._batch_member, one, 3, devices, 1) == 1  # max_batch caps
    run_dirs = [tmp_path / f"p{k}" for k in range(3)]
    for d in run_dirs:
        d.mkdir()
    logs: list[str] = []
    results = dict(_batch.run_truncation_batch(configs, run_dirs, log=logs.append))
    assert sorted(results) == [0, 1, 2]
    assert all(isinstance(r, dict) for r in results.values()), results
    assert any("3 points in 2 chunks of 2" in m for m in logs), logs
    assert results[2]["sweep_batch"]["points"] == 1 and results[0]["sweep_batch"]["points"] == 2
    first, last = load_arrays(run_dirs[0]), load_arrays(run_dirs[2])
    for key in ("flow/b", "sgd/b", "gd/eta=0.1/b"):
        np.testing.assert_array_equal(last[key], first[key], err_msg=key)
    assert np.max(np.abs(load_arrays(run_dirs[1])["flow/b"] - first["flow/b"])) > 1e-3


def test_sweep_max_batch_is_auto_or_a_positive_integer():
    from gflow_jax.sweep import parse_sweep

    assert parse_sweep({"axes": {"seed": [0, 1]}}).max_batch == "auto"
    assert parse_sweep({"axes": {"seed": [0]}, "max_batch": 8}).max_batch == 8
    with pytest.raises(ConfigError, match="sweep.max_batch"):
        parse_sweep({"axes": {"seed": [0]}, "max_batch": "lots"})


# --------------------------------------------------------------------------------------------
# precision: float32 as an explicit option, its error measured


def test_float32_flow_and_sgd_within_the_stated_error():
    """The small truncation config at the default tolerances (rtol 1e-8, atol 1e-10), against
    float64 solved at rtol 1e-12: float32's flow within 5e-5 (measured 1.5e-5; float64 at the
    default tolerances: 1.0e-5 — the tolerance dominates), its cost within 5e-5 of the initial
    cost (9e-6), GD and SGD within 2e-6 of float64's iterates (2.8e-7; the same minibatches)."""
    f32 = setup_experiment(
        load_config("experiments/truncation.toml", [*SMALL, "flow.dtype='float32'"])
    )
    f64 = setup_experiment(load_config("experiments/truncation.toml", SMALL))
    ref = setup_experiment(
        load_config("experiments/truncation.toml", [*SMALL, "flow.rtol=1e-12", "flow.atol=1e-14"])
    )
    assert f32.problem.u.dtype == f32.params0.b.dtype == f32.save_ts.dtype == jnp.float32
    assert f32.settings.rtol.dtype == jnp.float32 and f64.params0.b.dtype == jnp.float64
    a32, s32 = run_truncation(f32)
    a64, s64 = run_truncation(f64)
    aref, _ = run_truncation(ref)
    assert a32["flow/b"].dtype == np.float32 and s32["flow"]["dtype"] == "float32"
    assert s64["flow"]["dtype"] == "float64"
    err32 = np.max(np.abs(a32["flow/b"] - aref["flow/b"]))
    err64 = np.max(np.abs(a64["flow/b"] - aref["flow/b"]))
    assert err32 < 5e-5 and err64 < 5e-5, (err32, err64)
    assert np.max(np.abs(a32["flow/loss"] - aref["flow/loss"])) < 5e-5 * aref["flow/loss"][0]
    for key in ("sgd/b", "gd/eta=0.1/b"):
        assert 0 < np.max(np.abs(a32[key] - a64[key])) < 2e-6, key


def test_float32_needs_a_tolerance_it_can_meet():
    with pytest.raises(ConfigError, match="float32") as info:
        load_config("experiments/truncation.toml", ["flow.dtype='float32'", "flow.rtol=1e-10"])
    assert info.value.key == "flow.rtol"
    with pytest.raises(ConfigError, match="flow.dtype"):
        load_config("experiments/truncation.toml", ["flow.dtype='float16'"])


# --------------------------------------------------------------------------------------------
# the magnitude device engine (on whatever device JAX has: here the CPU)


def _cloud(n=150, seed=0):
    X = np.random.default_rng(seed).normal(size=(n, 4))
    X[7] = X[3]
    X[11] = X[3]  # a group of three duplicates
    return X


def test_device_engine_equals_the_cpu_engines():
    X, s = _cloud(), np.geomspace(0.05, 50.0, 13)
    dev = magnitude_function(X, s, method="device")
    chol = magnitude_function(X, s, method="cholesky")
    adap = magnitude_function(X, s, method="adaptive")
    assert dev.method == "device" and dev.n_unique == 148 and dev.n_points == 150
    assert dev.duplicate_groups() == [[3, 7, 11]]
    assert set(dev.solver) == {"cholesky"}
    assert float(np.max(dev.residual)) <= 1e-12
    for ref in (chol, adap):
        for key in ("magnitude", "dimension", "positive_magnitude", "spread", "derivative"):
            assert _rel(getattr(dev, key), getattr(ref, key)) < 1e-10, key
        np.testing.assert_allclose(dev.weights, ref.weights, rtol=0, atol=1e-10)
        np.testing.assert_array_equal(dev.representative, ref.representative)
    np.testing.assert_allclose(dev.weights.sum(axis=0), dev.magnitude, rtol=1e-12)
    assert "engine device" in dev.table()


def test_device_engine_refines_towards_rtol_and_reports_it():
    X, s = _cloud(60, seed=1), np.array([0.02, 0.5, 20.0])
    plain = magnitude_function(X, s, method="device")
    refined = magnitude_function(X, s, method="device", rtol=0.0)  # refine until exact
    from gflow_jax.magnitude._device import MAX_REFINEMENTS

    steps, residual = np.asarray(refined.iterations), np.asarray(refined.residual)
    assert np.all(steps >= 1) and np.all((steps == MAX_REFINEMENTS) | (residual == 0.0))
    np.testing.assert_array_equal(plain.iterations, 0)
    assert _rel(refined.magnitude, plain.magnitude) < 1e-12
    assert np.all(np.asarray(refined.residual) <= 1e-14)


def test_device_engine_solves_an_indefinite_scale_by_lu():
    """K_{3,2} with its path metric: Z(0.1) is indefinite (Cholesky fails, LU solves it and says
    so), Z(1) is positive definite."""
    D = np.full((5, 5), 2.0)
    D[:3, 3:] = D[3:, :3] = 1.0
    np.fill_diagonal(D, 0.0)
    dev = magnitude_function(D, [0.1, 1.0], metric="precomputed", method="device")
    ref = magnitude_function(D, [0.1, 1.0], metric="precomputed", method="cholesky")
    assert dev.solver == ("lu", "cholesky") == ref.solver
    assert _rel(dev.magnitude, ref.magnitude) < 1e-12
    assert float(np.max(dev.residual)) < 1e-14


def test_device_distances_are_exact_and_symmetric():
    from scipy.spatial.distance import cdist

    from gflow_jax.magnitude._device import device_distances

    X = _cloud(40) * 1e3 + 1e6  # far from the origin: the Gram identity would cancel
    for metric in ("euclidean", "cityblock", "chebyshev"):
        D = np.asarray(device_distances(X, metric))
        np.testing.assert_array_equal(D, D.T)
        assert D[3, 7] == D[3, 11] == 0.0 and np.all(np.diag(D) == 0.0)
        np.testing.assert_allclose(D, cdist(X, X, metric), rtol=1e-13, atol=0)


def test_device_cloud_engine_equals_the_cholesky_chunks():
    X = np.random.default_rng(2).normal(size=(5, 24, 3))
    X[1, 6:] = X[1, 0]  # collapsed: 6 distinct points
    s = np.geomspace(0.1, 30.0, 8)
    dev = cloud_magnitudes(X, s, method="device")
    ref = cloud_magnitudes(X, s, method="cholesky")
    np.testing.assert_array_equal(dev.n_unique, [24, 6, 24, 24, 24])
    assert _rel(dev.magnitude, ref.magnitude) < 1e-12
    assert np.all(np.asarray(dev.solver) == 0) and float(np.max(dev.residual)) <= 1e-12
    with pytest.raises(ValueError, match="unknown method"):
        cloud_magnitudes(X, s, method="gpu")


def test_auto_chooses_the_device_engine_only_on_an_accelerator():
    r = magnitude_function(_cloud(), np.geomspace(0.05, 50.0, 13))  # shapes compiled above
    assert r.method == ("device" if on_accelerator() else "cholesky")


# --------------------------------------------------------------------------------------------
# no host round trip inside the hot loops


def _equations(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, list | tuple) else [value]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _equations(inner)


def _no_callbacks(fn):
    """No host callback in ``fn``'s program, except equinox's runtime checks (a callback in the
    branch of a ``lax.cond`` taken only when a check fails, to raise the error)."""
    found = set()
    for eqn in _equations(jax.make_jaxpr(fn)().jaxpr):
        if "callback" in eqn.primitive.name:
            target = eqn.params.get("callback")
            target = getattr(target, "callback_func", target)
            found.add(
                f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', '?')}"
            )
    assert all(f.startswith("equinox._errors:") for f in found), found


def test_hot_loops_run_without_host_transfers():
    """Second (compiled) calls of the flow solve, SGD, the magnitude engines and a vmapped
    sweep batch under ``jax.transfer_guard("disallow")``, inputs already on the device: any
    implicit transfer between host and device inside would raise. Their programs hold no host
    callbacks either."""
    import equinox as eqx

    from gflow_jax.dynamics import solve_flow, steps_per_interval
    from gflow_jax.dynamics._descent import _descend
    from gflow_jax.experiments.truncation._batch import _batch_member, _member_args
    from gflow_jax.magnitude._clouds import _chunk_kernel
    from gflow_jax.magnitude._device import _device_core, cloud_kernel

    setup = setup_experiment(load_config("experiments/truncation.toml", SMALL))
    put = jax.device_put
    problem, params0, ts = put((setup.problem, setup.params0, setup.save_ts))
    settings = put(setup.settings)
    steps = put(jnp.asarray(steps_per_interval(np.asarray(setup.save_ts), 0.1)))
    eta, key = put(jnp.asarray(0.1)), put(jax.random.PRNGKey(0))
    sgd = _descend  # the compiled descent of gradient_descent (shared with the other tests)
    dynamic, static = eqx.partition(
        pad_batch(stack([_member_args(setup, 12)] * 2), 2), eqx.is_array
    )
    args = eqx.combine(put(dynamic), static)  # the arrays on the device, static values kept
    run_batch = batched(_batch_member)
    D = put(jnp.asarray(np.abs(np.subtract.outer(np.arange(16.0), np.arange(16.0)))))
    scales, tol, rtol = put((jnp.geomspace(0.1, 10.0, 8), jnp.asarray(0.0), jnp.asarray(1e-12)))
    clouds = put(jnp.asarray(np.random.default_rng(0).normal(size=(2, 8, 2))))
    valid, cloud_scales = put((jnp.ones((2, 8), bool), jnp.ones((2, 4))))

    calls = {
        "flow": lambda: solve_flow(problem, params0, ts, settings),
        "sgd": lambda: sgd(problem, params0, eta, steps, key, 4, False),
        "sweep batch": lambda: run_batch(args, None),
        "magnitude": lambda: _device_core(D, scales, tol, rtol, scale_batch=4),
        "clouds (device)": lambda: cloud_kernel(clouds, valid, cloud_scales, tol, rtol),
        "clouds (cholesky)": lambda: _chunk_kernel(clouds, valid, cloud_scales, tol),
    }
    for call in calls.values():
        jax.block_until_ready(call())  # compile
        with jax.transfer_guard("disallow"):
            jax.block_until_ready(call())
        _no_callbacks(lambda call=call: call())
    with pytest.raises(Exception, match="[Dd]isallowed"):  # the guard does bite
        with jax.transfer_guard("disallow"):
            solve_flow(problem, params0, np.asarray(setup.save_ts), settings)


# --------------------------------------------------------------------------------------------
# the device suite never rots: its --smoke run is part of the test suite


def test_device_suite_smoke_runs_every_part(tmp_path, capsys):
    # in this process (its memory is then released with the rest of the suite's), as
    # `python benchmarks/device_suite.py --smoke --out DIR` runs it
    spec = importlib.util.spec_from_file_location(
        "device_suite", ROOT / "benchmarks" / "device_suite.py"
    )
    suite = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(suite)
    assert suite.main(["--smoke", "--out", str(tmp_path)]) == 0
    assert "device suite: digits done" in capsys.readouterr().out
    result = json.loads((tmp_path / "device_suite.json").read_text())
    parts = {p["part"] for p in result["parts"]}
    assert parts == {"flow_vs_scipy", "sweep_flow", "sweep_sgd", "magnitude", "truncated", "digits"}
    assert result["environment"]["backend"] == jax.default_backend()
    table = (tmp_path / "device_suite.md").read_text()
    assert table.count("\n|") >= len(result["parts"]) + 1


# --------------------------------------------------------------------------------------------
# on an accelerator (deselected on CPU): the accelerator equals the CPU


def _cpu():
    return jax.default_device(jax.devices("cpu")[0])


@pytest.mark.gpu
def test_gpu_magnitude_equals_the_cpu_engine():
    """n = 2000 × 32 scales: the device engine on the accelerator against the adaptive CPU
    engine, 1e-10 relative."""
    assert on_accelerator()
    X, s = np.random.default_rng(3).normal(size=(2000, 10)), np.geomspace(0.05, 100.0, 32)
    dev = magnitude_function(X, s)  # auto: the device engine
    with _cpu():
        ref = magnitude_function(X, s, method="adaptive")
    assert dev.method == "device" and jax.devices()[0].platform != "cpu"
    assert _rel(dev.magnitude, ref.magnitude) < 1e-10
    assert _rel(dev.dimension, ref.dimension) < 1e-10
    assert float(np.max(dev.residual)) <= 1e-12


@pytest.mark.gpu
def test_gpu_float64_flow_equals_cpu_to_solver_tolerance():
    """experiments/truncation.toml at rtol 1e-10, atol 1e-12 in float64: |Δb| ≤ 1e-7 between
    the accelerator and the CPU (rounding differs, the tolerance bounds what it can move)."""
    from gflow_jax.dynamics import solve_flow

    over = ["flow.rtol=1e-10", "flow.atol=1e-12", "output.progress=false"]
    cfg = load_config("experiments/truncation.toml", over)
    s = setup_experiment(cfg)
    dev = solve_flow(s.problem, s.params0, s.save_ts, s.settings)
    with _cpu():
        c = setup_experiment(cfg)
        cpu = solve_flow(c.problem, c.params0, c.save_ts, c.settings)
    assert list(dev.params.b.devices())[0].platform != "cpu"
    assert np.max(np.abs(np.asarray(dev.params.b) - np.asarray(cpu.params.b))) < 1e-7


GPU_KINDS = [  # (config, overrides, rtol, atol) — tolerances for float64 on both sides
    ("truncation.toml", SMALL, 1e-6, 1e-8),
    ("rates.toml", [], 1e-6, 1e-8),
    ("spectral_gap.toml", [], 1e-6, 1e-8),
    (
        "sgd_vs_flow.toml",
        ["flow.t_final=0.8", "flow.n_save=5", "output.progress=false"],
        1e-6,
        1e-8,
    ),
    (
        "magnitude_generalization_small.toml",
        [
            "grid.learning_rates=[0.1]",
            "grid.batch_sizes=[8]",
            "grid.seeds=[0]",
            "output.progress=false",
        ],
        1e-5,
        1e-8,
    ),
]


@pytest.mark.gpu
@pytest.mark.parametrize(("config", "overrides", "rtol", "atol"), GPU_KINDS)
def test_gpu_every_kind_equals_its_cpu_answer(tmp_path, config, overrides, rtol, atol):
    """Each kind's small config run on the accelerator and on the CPU (the same process,
    ``jax.default_device``): every array of ``arrays.npz`` agrees within (rtol, atol)."""
    kind, cfg = load_experiment(ROOT / "experiments" / config, overrides)
    (tmp_path / "gpu").mkdir()
    (tmp_path / "cpu").mkdir()
    kind.run(cfg, tmp_path / "gpu", False)
    with _cpu():
        kind.run(cfg, tmp_path / "cpu", False)
    a, b = load_arrays(tmp_path / "gpu"), load_arrays(tmp_path / "cpu")
    assert set(a) == set(b)
    for key in b:
        if np.issubdtype(b[key].dtype, np.number):
            np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol, err_msg=key)
