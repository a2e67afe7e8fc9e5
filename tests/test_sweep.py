"""Sweeps: spec and validation, batched results equal single runs, no recompilation per point,
resume, failures recorded, sharding over virtual CPU devices, submitit's local executor."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from gflow_jax.cli import main
from gflow_jax.core import padded_batch_size, use_cpu_cores
from gflow_jax.experiments import (
    ConfigBase,
    ConfigError,
    ExperimentKind,
    OutputConfig,
    config_snapshot,
    load_experiment,
    register_kind,
)
from gflow_jax.experiments.truncation import run_truncation, setup_experiment
from gflow_jax.io import load_arrays, write_metrics
from gflow_jax.sweep import (
    create_sweep,
    expand_points,
    parse_sweep,
    plan_sweep,
    point_states,
    run_points,
    run_sweep,
)
from gflow_jax.sweep._cluster import cpu_shares

ROOT = Path(__file__).resolve().parents[1]

# the small truncation config of tests/test_config_cli.py (N = 12, T = 9), as a sweep
BASE = """
name = "tiny"
[data]
points_per_class = 6
[flow]
t_final = 4.0
n_save = 9
[gd]
etas = [0.1]
[sgd]
eta = 0.1
batch_size = 4
[output]
progress = false
"""
SWEEP = """
[sweep]
max_batch = 4
[sweep.axes]
seed = [0, 1, 2]
"gd.etas" = [[0.1], [0.05]]
"""


def _write(tmp_path: Path, text: str, name: str = "sweep.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


# --------------------------------------------------------------------------------------------
# a trivial kind without a batched path (point by point through kind.run)


@dataclass(frozen=True)
class ToyConfig(ConfigBase):
    name: str = "toy"
    seed: int = 0
    scale: float = 1.0
    fail: bool = False
    output: OutputConfig = field(default_factory=OutputConfig)


def _toy_run(cfg: ToyConfig, run_dir: Path, progress: bool) -> dict:
    if cfg.fail:
        raise RuntimeError(f"toy failure at seed {cfg.seed}")
    x = cfg.scale * np.arange(5.0) + cfg.seed
    np.savez(run_dir / "arrays.npz", x=x)
    write_metrics(run_dir / "metrics.jsonl", [{"s": 0.0, "loss": float(x.sum())}])
    return {"total": float(x.sum()), "pid": os.getpid()}


TOY = ExperimentKind(
    name="toy",
    description="test kind",
    config=ToyConfig,
    run=_toy_run,
    figures=lambda run_dir: [],
)
register_kind("toy", "tests.test_sweep:TOY")

TOY_SWEEP = """
kind = "toy"
[output]
progress = false
figures = false
[sweep.axes]
seed = [0, 1]
fail = [false, true]
scale = [1.0, 2.0]
"""


# --------------------------------------------------------------------------------------------
# spec


def test_grid_and_random_points():
    spec = parse_sweep(
        {
            "axes": {
                "seed": [0, 1],
                "gd": {"etas": [[0.1], [0.05]]},
                "data.radius": {"linspace": [0.2, 0.8, 3]},
            }
        }
    )
    points = expand_points(spec)
    assert len(points) == 12 and list(points[0]) == ["seed", "gd.etas", "data.radius"]
    assert points[0] == {"seed": 0, "gd.etas": [0.1], "data.radius": 0.2}
    assert points[1]["data.radius"] == pytest.approx(0.5)  # last axis fastest
    assert points[-1] == {"seed": 1, "gd.etas": [0.05], "data.radius": 0.8}

    table = {
        "mode": "random",
        "n_samples": 200,
        "seed": 3,
        "axes": {
            "data.radius": {"log_uniform": [0.2, 0.8]},
            "seed": {"int_uniform": [0, 5]},
            "sgd.eta": {"choice": [0.1, 0.05]},
            "flow.rtol": {"uniform": [1e-8, 2e-8]},
        },
    }
    draws = expand_points(parse_sweep(table))
    assert draws == expand_points(parse_sweep(table))  # reproducible from the sweep seed
    radius = np.array([p["data.radius"] for p in draws])
    assert radius.min() >= 0.2 and radius.max() <= 0.8
    assert np.median(radius) == pytest.approx(0.4, rel=0.2)  # log-uniform: median √(0.2·0.8)
    assert {p["seed"] for p in draws} == set(range(6))
    assert {p["sgd.eta"] for p in draws} == {0.1, 0.05}
    assert expand_points(parse_sweep({**table, "seed": 4})) != draws


@pytest.mark.parametrize(
    ("sweep", "key", "message"),
    [
        ({"axes": {"gd.etaz": [[0.1]]}}, "sweep.axes.gd.etaz", "unknown key"),
        ({"axes": {"gd": {"etas": [[0.1], [0.03]]}}}, "sweep.axes.gd.etas", "whole number"),
        ({"axes": {"data.radius": [0.5, -1.0]}}, "sweep.axes.data.radius", "positive"),
        ({"axes": {"data.radius": {"log_uniform": [0.1, 1]}}}, "sweep.axes.data.radius", "random"),
        ({"axes": {"seed": []}}, "sweep.axes.seed", "empty"),
        ({"axes": {"kind": ["toy"]}}, "sweep.axes.kind", "cannot be a sweep axis"),
        ({"mode": "random", "axes": {"seed": [0]}}, "sweep.n_samples", "integer"),
        ({"mode": "lattice", "axes": {"seed": [0]}}, "sweep.mode", "grid"),
        ({"axes": {"seed": [0]}, "repeats": 2}, "sweep.repeats", "unknown key"),
        ({}, "sweep.axes", "non-empty"),
    ],
)
def test_bad_sweep_names_the_key(tmp_path, sweep, key, message):
    table = {"name": "tiny", "sweep": sweep}
    with pytest.raises(ConfigError, match=message) as info:
        plan_sweep(None, table=table)
    assert info.value.key == key


def test_overriding_an_axis_and_bad_cli_sweep_run_nothing(tmp_path, capsys):
    config = _write(tmp_path, BASE + SWEEP)
    with pytest.raises(ConfigError, match="is a sweep axis") as info:
        plan_sweep(config, ["seed=4"])
    assert info.value.key == "seed"
    out = tmp_path / "out"
    assert main(["sweep", str(config), "sweep.axes.gd.etaz=[[0.1]]", "--out", str(out)]) == 2
    assert "sweep.axes.gd.etaz" in capsys.readouterr().err
    assert not out.exists()  # validated before anything was created
    plain = _write(tmp_path, BASE, "plain.toml")
    assert main(["sweep", str(plain), "--out", str(out)]) == 2
    assert "no [sweep] table" in capsys.readouterr().err


def test_padded_batch_sizes():
    sizes = [padded_batch_size(n, 1, 256) for n in (1, 2, 3, 5, 7, 9, 24, 25, 200, 300)]
    assert sizes == [1, 2, 3, 6, 8, 12, 24, 32, 256, 256]
    assert [padded_batch_size(n, 4, 256) for n in (1, 5, 6, 9, 13)] == [4, 8, 8, 12, 16]
    assert padded_batch_size(7, 3, 4) == 6  # max_batch rounded up to a multiple of 3 devices


# --------------------------------------------------------------------------------------------
# the point-by-point path: a kind without run_batch, failures recorded


def test_failed_points_are_recorded_and_the_sweep_goes_on(tmp_path, capsys):
    config = _write(tmp_path, TOY_SWEEP)
    assert main(["sweep", str(config), "--out", str(tmp_path), "--quiet"]) == 1
    (sweep_dir,) = tmp_path.glob("toy-sweep-*")
    states = point_states(sweep_dir)
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    for p, state in zip(meta["points"], states, strict=True):
        run_dir = sweep_dir / p["run_dir"]
        status = json.loads((run_dir / "status.json").read_text())
        if p["overrides"]["fail"]:
            assert state == "failed"
            assert "toy failure" in status["error"] and not (run_dir / "summary.json").exists()
        else:
            assert state == "complete"
            x = p["overrides"]["scale"] * np.arange(5.0) + p["overrides"]["seed"]
            np.testing.assert_array_equal(load_arrays(run_dir)["x"], x)
            summary = json.loads((run_dir / "summary.json").read_text())
            assert summary["total"] == x.sum()
            assert json.loads((run_dir / "config.json").read_text())["kind"] == "toy"
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert summary["states"] == {"complete": 4, "failed": 4} and not summary["complete"]
    assert all("toy failure" in f["error"] for f in summary["failed"])
    with (sweep_dir / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["state"] for r in rows] == states
    assert {"axis:seed", "axis:fail", "axis:scale", "summary.total", "final.loss"} <= set(rows[0])
    assert "point 2 failed" in capsys.readouterr().out
    assert (sweep_dir / "figures" / "final_vs_scale.png").stat().st_size > 5_000

    # resume reruns only what is not complete: the failures fail again, nothing else runs
    before = {p: (sweep_dir / p / "arrays.npz").stat().st_mtime_ns for p in _complete(sweep_dir)}
    assert main(["sweep", "--resume", str(sweep_dir), "--quiet"]) == 1
    after = {p: (sweep_dir / p / "arrays.npz").stat().st_mtime_ns for p in _complete(sweep_dir)}
    assert after == before


def _complete(sweep_dir: Path) -> list[str]:
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    states = point_states(sweep_dir)
    return [p["run_dir"] for p, s in zip(meta["points"], states, strict=True) if s == "complete"]


# --------------------------------------------------------------------------------------------
# the batched truncation path


def _singles(sweep_dir: Path) -> list[tuple[dict, dict]]:
    """Each point run singly, as `gflow run` would, from its config.json."""
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    out = []
    for p in meta["points"]:
        kind, config = load_experiment(
            table=json.loads((sweep_dir / p["run_dir"] / "config.json").read_text())
        )
        out.append(run_truncation(setup_experiment(config)))
    return out


@pytest.fixture(scope="module")
def batched_sweep(tmp_path_factory):
    """6 points (3 seeds × 2 step sizes) batched 4 at a time: two calls of one program."""
    from gflow_jax.core import batched
    from gflow_jax.experiments.truncation._batch import _batch_member

    tmp = tmp_path_factory.mktemp("batched")
    plan = plan_sweep(_write(tmp, BASE + SWEEP))
    sweep_dir = create_sweep(plan, tmp)
    cache = batched(_batch_member)._cached
    before = cache._cache_size()
    logs = []
    summary = run_sweep(sweep_dir, devices=1, progress=False, log=logs.append)
    compiled = cache._cache_size() - before
    return plan, sweep_dir, summary, compiled, logs


def test_batched_sweep_equals_single_runs(batched_sweep):
    plan, sweep_dir, summary, compiled, logs = batched_sweep
    assert summary["complete"] and summary["n_points"] == 6
    # the second chunk (other seeds and step sizes, padded 2 → 4) reused the compiled program
    assert compiled == 1, compiled
    assert any("2 points padded to a batch of 4" in m for m in logs), logs
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    for p, config, (arrays, single) in zip(
        meta["points"], plan.configs, _singles(sweep_dir), strict=True
    ):
        run_dir = sweep_dir / p["run_dir"]
        stored = load_arrays(run_dir)
        assert sorted(stored) == sorted(arrays)
        for key in arrays:
            np.testing.assert_allclose(stored[key], arrays[key], rtol=0, atol=1e-10, err_msg=key)
        eta = p["overrides"]["gd.etas"][0]
        assert f"gd/eta={eta:g}/thresholds" in stored
        written = json.loads((run_dir / "summary.json").read_text())
        assert set(written) == set(single) | {"sweep_batch"}
        assert written["flow"]["num_steps"] == single["flow"]["num_steps"]
        assert written["sgd"]["batch_size"] == single["sgd"]["batch_size"] == 4
        assert json.loads((run_dir / "config.json").read_text()) == json.loads(
            json.dumps(config_snapshot(plan.kind, config))
        )
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert len(rows) == 9 and rows[-1]["flow/loss"] == pytest.approx(arrays["flow/loss"][-1])
        assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"
        assert (run_dir / "env.json").is_file()
    with (sweep_dir / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["axis:seed"]) for r in rows] == [0, 0, 1, 1, 2, 2]
    assert [json.loads(r["axis:gd.etas"]) for r in rows] == [[0.1], [0.05]] * 3
    final = [float(r["final.flow/loss"]) for r in rows]
    assert final == [load_arrays(sweep_dir / p["run_dir"])["flow/loss"][-1] for p in meta["points"]]
    assert (sweep_dir / "figures" / "final_vs_seed.png").is_file()


def test_resume_after_an_interrupted_sweep(batched_sweep, tmp_path):
    plan, reference_dir, *_ = batched_sweep
    sweep_dir = create_sweep(plan, tmp_path)

    def stop_after_four(i, state):
        if i == 3:
            raise KeyboardInterrupt("stopped by the test")

    with pytest.raises(KeyboardInterrupt):
        run_points(sweep_dir, devices=1, progress=False, hook=stop_after_four)
    states = point_states(sweep_dir)
    assert states == ["complete"] * 4 + ["interrupted"] * 2
    first = (sweep_dir / "points/p00000/arrays.npz").stat().st_mtime_ns
    summary = run_sweep(sweep_dir, devices=1, progress=False)
    assert summary["complete"]
    assert (sweep_dir / "points/p00000/arrays.npz").stat().st_mtime_ns == first  # not rerun
    for k in range(6):
        a = load_arrays(sweep_dir / f"points/p{k:05d}")
        b = load_arrays(reference_dir / f"points/p{k:05d}")
        for key in b:
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-10, err_msg=key)


def test_points_differing_in_n_share_a_padded_group(batched_sweep, tmp_path):
    """N = 10 and N = 12 run in one program, the smaller problem padded with zero-weight rows:
    GD and SGD equal the single runs to rounding (same minibatches); the adaptive flow meets the
    single run to within the solver tolerance (rounding changes its accepted steps)."""
    config = _write(
        tmp_path,
        BASE
        + """
        [sweep]
        [sweep.axes]
        seed = [0, 1]
        "data.points_per_class" = [5, 6]
        """,
    )
    plan = plan_sweep(config)
    sweep_dir = create_sweep(plan, tmp_path)
    logs = []
    assert run_sweep(sweep_dir, devices=1, progress=False, log=logs.append)["complete"]
    assert any("padded to N = 12" in m for m in logs), logs
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    for p, (arrays, _) in zip(meta["points"], _singles(sweep_dir), strict=True):
        stored = load_arrays(sweep_dir / p["run_dir"])
        assert stored["data/x"].shape == arrays["data/x"].shape
        for key in arrays:
            tol = 1e-5 if key.startswith("flow/") else 1e-12
            np.testing.assert_allclose(stored[key], arrays[key], rtol=0, atol=tol, err_msg=key)


def test_real_failure_point_by_point(batched_sweep, tmp_path):
    """--no-batch: the truncation kind through kind.run; a flow that runs out of steps fails its
    point only."""
    config = _write(
        tmp_path,
        BASE
        + """
        [sweep.axes]
        "flow.max_steps" = [200000, 5]
        """,
    )
    out = tmp_path / "out"
    assert main(["sweep", str(config), "--out", str(out), "--quiet", "--no-batch"]) == 1
    (sweep_dir,) = out.iterdir()
    assert point_states(sweep_dir) == ["complete", "failed"]
    status = json.loads((sweep_dir / "points/p00001/status.json").read_text())
    assert "max_steps" in status["error"] and "RuntimeError" in status["error"]
    reference = load_arrays(batched_sweep[1] / "points/p00000")
    np.testing.assert_allclose(
        load_arrays(sweep_dir / "points/p00000")["flow/b"], reference["flow/b"], atol=1e-10
    )


def test_sharded_results_equal_unsharded(batched_sweep, tmp_path):
    """The same sweep on 4 virtual CPU devices (a fresh process: the device count is fixed when
    the backend starts): the batch axis is sharded, 6 points padded to multiples of 4."""
    plan, reference_dir, *_ = batched_sweep
    sweep_dir = create_sweep(plan, tmp_path)
    script = textwrap.dedent(
        f"""
        import jax
        jax.config.update("jax_num_cpu_devices", 4)
        import gflow_jax
        from gflow_jax.sweep import run_sweep
        assert jax.device_count() == 4, jax.devices()
        summary = run_sweep({str(sweep_dir)!r}, devices=4, progress=False)
        assert summary["complete"], summary
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 points padded to a batch of 4 (4 device(s) × 1)" in proc.stdout, proc.stdout
    for k in range(6):
        run_dir = sweep_dir / f"points/p{k:05d}"
        assert json.loads((run_dir / "summary.json").read_text())["sweep_batch"]["devices"] == 4
        a, b = load_arrays(run_dir), load_arrays(reference_dir / f"points/p{k:05d}")
        for key in b:
            np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-10, err_msg=key)


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "3 3 None"), ({"JAX_NUM_CPU_DEVICES": "1"}, "None 1 None")],
)
def test_use_cpu_cores_splits_the_cpu_only_when_nobody_chose(env, expected):
    """A fresh process gets 3 CPU devices; a count set by the environment is left alone, and
    once the backend has started nothing changes (here: the test process itself)."""
    assert use_cpu_cores(2) is None  # this process's backend started in conftest
    script = textwrap.dedent(
        """
        from gflow_jax.core import use_cpu_cores
        first = use_cpu_cores(3)
        import jax
        print(first, jax.device_count(), use_cpu_cores(2))
        """
    )
    clean = {k: v for k, v in os.environ.items() if k not in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS")}
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**clean, **env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split("\n")[-2] == expected, proc.stdout
    assert main(["sweep", "missing.toml", "--cpu-devices", "0"]) == 2


# --------------------------------------------------------------------------------------------
# several machines: submitit


def test_submitit_local_executor_runs_chunks_and_merges(tmp_path):
    """Runs in CI: `make test` installs the `cluster` extra (never skipped)."""
    import submitit  # noqa: F401  (a missing extra is a failure, not a skip)

    config = _write(tmp_path, TOY_SWEEP.replace("[sweep.axes]", "[sweep]\njobs = 2\n[sweep.axes]"))
    plan = plan_sweep(config)
    sweep_dir = create_sweep(plan, tmp_path)
    summary = run_sweep(sweep_dir, executor="submitit-local", progress=False)
    assert summary["states"] == {"complete": 4, "failed": 4}
    jobs = json.loads((sweep_dir / "jobs.json").read_text())
    assert len(jobs["jobs"]) == 2 and jobs["chunks"] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    pids = set()
    for p in meta["points"]:
        run_dir = sweep_dir / p["run_dir"]
        if not p["overrides"]["fail"]:
            pids.add(json.loads((run_dir / "summary.json").read_text())["pid"])
    assert len(pids) == 2 and os.getpid() not in pids  # two jobs, neither this process
    with (sweep_dir / "summary.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 8
    # the two jobs ran on their own shares of this process's cores (env.json of each point)
    ours = sorted(os.sched_getaffinity(0))
    assert jobs["cpus"] == cpu_shares(2)
    ran = {}
    for p in meta["points"]:
        env = json.loads((sweep_dir / p["run_dir"] / "env.json").read_text())
        ran.setdefault(p["index"] // 4, set()).add(tuple(env["cpu_affinity"]))
    if len(ours) >= 2:
        first, second = (set(next(iter(ran[j]))) for j in (0, 1))
        assert len(ran[0]) == len(ran[1]) == 1 and first and second and not first & second
        assert first | second == set(ours)
    else:
        assert ran[0] == ran[1] == {tuple(ours)}


def test_cpu_shares_split_the_cores_among_local_jobs(monkeypatch):
    """Contiguous shares of this process's cores, one per job; nothing to share for one job or
    more jobs than cores."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 6}, raising=False)
    assert cpu_shares(2) == [[0, 1, 2], [3, 6]]
    assert cpu_shares(5) == [[0], [1], [2], [3], [6]]
    assert cpu_shares(1) == [None] and cpu_shares(6) == [None] * 6


# --------------------------------------------------------------------------------------------
# the merged figures


def test_sweep_figures_compare_gd_with_gd_across_step_sizes(tmp_path):
    """A sweep over gd.etas names each point's GD run differently (gd/eta=0.05, gd/eta=0.025):
    the figures follow "gd" across points, with its distance to the flow, in small multiples."""
    from gflow_jax.sweep._report import _panels, _series, plot_sweep

    rows = []
    for i, eta in enumerate((0.05, 0.025)):
        g = f"gd/eta={eta:g}"
        rows.append(
            {"point": i, "state": "complete", "axis:gd.etas": [eta],
             "final.flow/loss": 1e-3, f"final.{g}/loss": 2e-3 * eta, "final.sgd/loss": 3e-3,
             f"final.{g}/n_truncated": 12, "final.flow/n_truncated": 12,
             f"summary.{g}.max_threshold_gap_to_flow": eta / 5}
        )  # fmt: skip
    series = [_series(r) for r in rows]
    assert series[0][("loss", "gd")] == 1e-4 and series[1][("loss", "gd")] == 5e-5
    assert series[1][("distance to the flow", "gd")] == 0.005
    panels = dict(_panels(series))
    assert panels["loss"] == ["flow", "gd", "sgd"] and panels["distance to the flow"] == ["gd"]
    (path,) = plot_sweep(tmp_path, rows, ["gd.etas"])
    width, height = __import__("matplotlib.image").image.imread(path).shape[1::-1]
    assert width < 4 * height, (width, height)  # small multiples, not a strip


# --------------------------------------------------------------------------------------------
# the example sweep


def test_truncation_sweep_example_is_valid():
    plan = plan_sweep(ROOT / "experiments" / "truncation_sweep.toml")
    assert plan.kind.name == "truncation"
    assert set(plan.spec.axes) == {"seed", "gd.etas", "data.radius"}
    assert len(plan.points) == len(plan.configs) >= 8


def test_minibatches_are_uniform_and_ignore_padding():
    """Floyd's sampler: distinct rows, every subset equally likely, zero-weight rows (anywhere)
    never drawn, and padding rows at the end leave the draws unchanged."""
    import jax
    import jax.numpy as jnp

    from gflow_jax.dynamics import minibatch_indices, positive_rows

    key = jax.random.PRNGKey(0)
    ones = jnp.ones(12)
    padded = jnp.concatenate([ones, jnp.zeros(5)])
    np.testing.assert_array_equal(
        minibatch_indices(key, ones, 4), minibatch_indices(key, padded, 4)
    )
    weights = jnp.array([1.0, 0.0, 1.0, 2.0, 0.0, 1.0, 0.5, 0.0])  # positive rows 0 2 3 5 6
    rows = positive_rows(weights)
    np.testing.assert_array_equal(rows[:5], [0, 2, 3, 5, 6])
    np.testing.assert_array_equal(  # precomputed rows (as SGD passes them) draw the same rows
        minibatch_indices(key, weights, 3, rows), minibatch_indices(key, weights, 3)
    )
    keys = jax.random.split(key, 20_000)
    draws = np.asarray(jax.vmap(lambda k: minibatch_indices(k, weights, 2))(keys))
    assert all(len(set(row)) == 2 for row in draws)
    pairs = np.unique(np.sort(draws, axis=1), axis=0, return_counts=True)
    assert {tuple(p) for p in pairs[0]} == {
        (a, b) for a in (0, 2, 3, 5, 6) for b in (0, 2, 3, 5, 6) if a < b
    }
    assert np.all(np.abs(pairs[1] / len(draws) - 0.1) < 0.01)  # 10 subsets, 1/10 each


def test_where_needed_keeps_a_cond_under_vmap_and_gives_each_member_its_result():
    """where_needed (gflow_jax.core._batching): without vmap it is the lax.cond, result for
    result; under vmap every member gets where(need, expensive, cheap) and the cond stays a
    cond (its predicate unbatched), where a batched lax.cond becomes a select of both branches,
    i.e. the dear branch would run for every member."""
    import jax
    import jax.numpy as jnp

    from gflow_jax.core._batching import where_needed

    def f(need, x):
        return where_needed(need, lambda: 2.0 * jnp.sin(x), lambda: x - 1.0)

    x = jnp.linspace(0.0, 1.0, 5)
    need = jnp.array([True, False, True, False, False])
    np.testing.assert_array_equal(jax.vmap(f)(need, x), jnp.where(need, 2.0 * jnp.sin(x), x - 1))
    for flag in (True, False):
        expected = jax.lax.cond(flag, lambda: 2.0 * jnp.sin(0.5), lambda: jnp.asarray(0.5) - 1.0)
        assert float(f(jnp.asarray(flag), jnp.asarray(0.5))) == float(expected)

    def primitives(fn):
        return {e.primitive.name for e in jax.make_jaxpr(jax.vmap(fn))(need, x).jaxpr.eqns}

    assert "cond" in primitives(f)
    plain = primitives(lambda n, v: jax.lax.cond(n, lambda: 2.0 * jnp.sin(v), lambda: v - 1.0))
    assert "cond" not in plain and "select_n" in plain


def test_where_needed_traces_the_cheap_branch_once_also_when_nested():
    """The cheap branch is computed once, before the cond, and used by both branches: traced
    once, so a heavy light path (or a nested where_needed) is not compiled twice; nested calls
    still give every member of a vmapped batch its own branch."""
    import jax
    import jax.numpy as jnp

    from gflow_jax.core._batching import where_needed

    traces = {"cheap": 0, "middle": 0, "dear": 0}

    def traced(name, fn):
        def call():
            traces[name] += 1
            return fn()

        return call

    def f(a, b, x):
        inner = lambda: where_needed(  # noqa: E731
            b, traced("middle", lambda: jnp.cos(x)), traced("cheap", lambda: x + 1.0)
        )
        return where_needed(a, traced("dear", lambda: 2.0 * jnp.sin(x)), inner)

    a = jnp.array([True, False, False, True])
    b = jnp.array([False, True, False, True])
    x = jnp.linspace(0.0, 1.0, 4)
    got = jax.vmap(f)(a, b, x)
    assert traces == {"cheap": 1, "middle": 1, "dear": 1}
    want = jnp.where(a, 2.0 * jnp.sin(x), jnp.where(b, jnp.cos(x), x + 1.0))
    np.testing.assert_allclose(got, want, rtol=0, atol=0)
