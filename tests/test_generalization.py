"""Kendall τ_b against scipy, granulated coefficients checked by hand, the loss pseudometric."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from gflow_jax.diagnostics import granulated_kendall, kendall_tau, loss_pseudometric

# --------------------------------------------------------------------------------------------
# Kendall tau


@pytest.mark.parametrize("n", [2, 5, 17, 60])
def test_kendall_tau_matches_scipy_continuous(n):
    rng = np.random.default_rng(n)
    x = rng.normal(size=n)
    y = 0.5 * x + rng.normal(size=n)
    assert kendall_tau(x, y) == pytest.approx(scipy.stats.kendalltau(x, y).statistic, abs=1e-14)


@pytest.mark.parametrize("seed", range(6))
def test_kendall_tau_b_matches_scipy_with_ties(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 4, size=30).astype(float)  # many ties in both variables
    y = rng.integers(0, 3, size=30).astype(float) + 0.1 * x
    ref = scipy.stats.kendalltau(x, y, variant="b").statistic
    assert kendall_tau(x, y) == pytest.approx(ref, abs=1e-14)


def test_kendall_tau_hand_values():
    # m = (1, 1, 2), g = (1, 2, 3): pair (1,2) tied in m, (1,3) and (2,3) concordant.
    # n0 = 3, n1 = 1, n2 = 0: tau_b = 2 / sqrt(2 * 3).
    assert kendall_tau([1, 1, 2], [1, 2, 3]) == pytest.approx(2 / math.sqrt(6), abs=1e-15)
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))  # constant: undefined, as scipy
    assert math.isnan(kendall_tau([1.0], [2.0]))


def test_kendall_tau_drops_failed_points():
    x = [1.0, 2.0, np.nan, 4.0, 3.0]
    y = [1.0, 3.0, 0.0, 2.0, np.inf]
    assert kendall_tau(x, y) == pytest.approx(scipy.stats.kendalltau([1, 2, 4], [1, 3, 2])[0])


def test_kendall_tau_length_mismatch():
    with pytest.raises(ValueError, match=r"kendall_tau: y must have shape \(P,\) = \(3,\)"):
        kendall_tau([1, 2, 3], [1, 2])


# --------------------------------------------------------------------------------------------
# granulated Kendall


def test_granulated_kendall_hand_example():
    # lr in (0.1, 0.2, 0.3) x bs in (32, 64), one seed.
    #   bs = 32: m = 1, 2, 3; g = 1, 3, 2 -> 2 concordant, 1 discordant: tau = 1/3
    #   bs = 64: m = 3, 2, 1; g = 1, 2, 3 -> all discordant:              tau = -1
    #   psi_lr = (1/3 - 1) / 2 = -1/3
    # across bs at fixed lr:
    #   lr = 0.1: m 1 -> 3, g 1 -> 1 (gap constant): tau undefined, left out
    #   lr = 0.2: m 2 -> 2 (measure constant): undefined, left out
    #   lr = 0.3: m 3 -> 1, g 2 -> 3: tau = -1
    #   psi_bs = -1 (one group); Psi = (-1/3 - 1) / 2 = -2/3
    lr = [0.1, 0.2, 0.3, 0.1, 0.2, 0.3]
    bs = [32, 32, 32, 64, 64, 64]
    m = [1, 2, 3, 3, 2, 1]
    g = [1, 3, 2, 1, 2, 3]
    res = granulated_kendall(m, g, {"lr": lr, "bs": bs, "seed": [0] * 6})
    assert res.psi["lr"] == pytest.approx(-1 / 3, abs=1e-15)
    assert res.psi["bs"] == pytest.approx(-1.0, abs=1e-15)
    assert res.Psi == pytest.approx(-2 / 3, abs=1e-15)
    assert res.n_groups == {"lr": 2, "bs": 1}
    assert res.group_taus["lr"][(32, 0)] == pytest.approx(1 / 3)


def test_granulated_kendall_holds_seed_fixed():
    # two seeds; with seed 0 the measure orders the gap perfectly, with seed 1 inversely,
    # so psi_lr = (1 + (-1)) / 2 = 0 although the pooled tau is not 0.
    lr = [1, 2, 3, 1, 2, 3]
    seed = [0, 0, 0, 1, 1, 1]
    m = [1, 2, 3, 10, 20, 30]
    g = [1, 2, 3, 6, 5, 4]
    res = granulated_kendall(m, g, {"lr": lr, "seed": seed})
    assert res.psi == {"lr": 0.0}
    assert res.Psi == 0.0
    assert kendall_tau(m, g) != 0.0


def test_granulated_kendall_random_against_scipy_loops():
    rng = np.random.default_rng(3)
    lrs, bss, seeds = [0.01, 0.03, 0.1, 0.3], [16, 64, 256], [0, 1]
    grid = list(itertools.product(lrs, bss, seeds))
    lr, bs, sd = (np.array(c) for c in zip(*grid, strict=True))
    m, g = rng.normal(size=len(grid)), rng.normal(size=len(grid))
    res = granulated_kendall(m, g, {"lr": lr, "bs": bs, "seed": sd})
    psi_lr = np.mean(
        [
            scipy.stats.kendalltau(m[(bs == b) & (sd == s)], g[(bs == b) & (sd == s)])[0]
            for b in bss
            for s in seeds
        ]
    )
    psi_bs = np.mean(
        [
            scipy.stats.kendalltau(m[(lr == a) & (sd == s)], g[(lr == a) & (sd == s)])[0]
            for a in lrs
            for s in seeds
        ]
    )
    assert res.psi["lr"] == pytest.approx(psi_lr, abs=1e-14)
    assert res.psi["bs"] == pytest.approx(psi_bs, abs=1e-14)
    assert res.Psi == pytest.approx(0.5 * (psi_lr + psi_bs), abs=1e-14)


def test_granulated_kendall_errors():
    with pytest.raises(ValueError, match=r"factors\['lr'\] must have shape \(P,\) = \(3,\)"):
        granulated_kendall([1, 2, 3], [1, 2, 3], {"lr": [1, 2]})
    with pytest.raises(ValueError, match="unknown factor 'bs'"):
        granulated_kendall([1, 2, 3], [1, 2, 3], {"lr": [1, 2, 3]}, over=["bs"])


# --------------------------------------------------------------------------------------------
# loss pseudometric


def test_loss_pseudometric_matches_definition_and_is_a_pseudometric():
    losses = jax.random.exponential(jax.random.PRNGKey(0), (13, 37))
    losses = losses.at[5].set(losses[2])  # two iterates with identical losses
    rho = np.asarray(loss_pseudometric(losses))
    ref = np.mean(np.abs(np.asarray(losses)[:, None] - np.asarray(losses)[None]), axis=-1)
    np.testing.assert_allclose(rho, ref, rtol=1e-14, atol=1e-15)
    assert np.array_equal(rho, rho.T)  # symmetry
    assert np.all(np.diag(rho) == 0.0)  # zero diagonal
    assert rho[2, 5] == 0.0 and rho[5, 2] == 0.0  # loss-identical: distance 0
    assert np.all(rho >= 0)
    # triangle inequality over all triples
    assert np.all(rho[:, None, :] <= rho[:, :, None] + rho[None, :, :] + 1e-14)


@pytest.mark.parametrize("chunk", [1, 4, 13, 50])
def test_loss_pseudometric_chunking_is_exact(chunk):
    losses = jax.random.uniform(jax.random.PRNGKey(1), (13, 9))
    np.testing.assert_allclose(
        loss_pseudometric(losses, chunk_size=chunk), loss_pseudometric(losses), rtol=1e-15
    )


def test_loss_pseudometric_bad_input():
    with pytest.raises(ValueError, match=r"losses must have shape \(K, n\)"):
        loss_pseudometric(jnp.ones(4))
    with pytest.raises(ValueError, match="n = 0"):
        loss_pseudometric(jnp.ones((4, 0)))


# --------------------------------------------------------------------------------------------
# measures of one cloud against closed forms (docs/theory.md#oracles)


def test_trajectory_measures_on_a_simplex_match_closed_forms():
    from gflow_jax.diagnostics import trajectory_measures

    n = 5
    D = 1.0 - jnp.eye(n)  # n points at mutual distance 1
    m = trajectory_measures(D, n_scales=9, log10_range=(-1.0, 3.0), slope_window=(0.0, 1.0))
    mag = lambda t: n / (1 + (n - 1) * np.exp(-t))  # noqa: E731
    dim = lambda t: t * (n - 1) * np.exp(-t) / (1 + (n - 1) * np.exp(-t))  # noqa: E731
    t = np.logspace(-1, 3, 9)  # diameter 1
    np.testing.assert_allclose(m.scales, t, rtol=1e-14)
    np.testing.assert_allclose(m.magnitude, mag(t), rtol=1e-10)
    np.testing.assert_allclose(m.dimension_profile, dim(t), rtol=1e-8, atol=1e-12)
    v = m.values
    assert v["mag_dim_max"] == pytest.approx(dim(t).max(), rel=1e-8)
    # weights of the simplex are equal and positive: PMag = magnitude
    assert v["pmag_sqrt_n"] == pytest.approx(mag(math.sqrt(n)), rel=1e-10)
    assert v["pmag_0.01"] == pytest.approx(mag(0.01), rel=1e-8)
    assert v["mag_sqrt_n"] == pytest.approx(mag(math.sqrt(n)), rel=1e-10)
    assert v["e_alpha"] == pytest.approx(n - 1)  # MST: n - 1 edges of length 1
    inside = (t >= 1) & (t <= 10)
    slope = np.polyfit(np.log(t[inside]), np.log(mag(t[inside])), 1)[0]
    assert v["mag_dim_slope"] == pytest.approx(slope, rel=1e-8)
    assert v["n_unique"] == n and v["diameter"] == 1.0


# --------------------------------------------------------------------------------------------
# the sweep: interruption, resume, failed points, config errors

TINY = {
    "kind": "magnitude_generalization",
    "name": "tiny",
    "data": {
        "source": "clusters",
        "n_classes": 3,
        "points_per_class": 12,
        "dim": 3,
        "radius": 0.4,
        "separation": 2.0,
        "test_fraction": 0.25,
    },
    "model": {"hidden": [8, 8]},
    "grid": {"learning_rates": [0.1, 0.3], "batch_sizes": [4, 9], "seeds": [0]},
    "trajectory": {
        "n_iterates": 12,
        "every": 1,
        "chunk_steps": 10,
        "max_steps": 2000,
        "monitor_every": 10,
        "probe_size": 5,
        "probe_layers": [1, 2],
    },
    "measures": {
        "n_scales": 6,
        "monitor_window": 5,
        "representation_scales": 4,
        "ph_sizes": [4, 12, 2],
    },
    "statistics": {"n_bootstrap": 50},
    "output": {"figures": False, "progress": False},
}


def _tiny(**over):
    from gflow_jax.experiments import load_experiment

    table = {k: (dict(v) if isinstance(v, dict) else v) for k, v in TINY.items()}
    for key, value in over.items():
        section, name = key.split(".")
        table.setdefault(section, {})[name] = value
    return load_experiment(table=table)


def _new_run_dir(tmp_path, kind, cfg, name):
    from gflow_jax.experiments import config_snapshot
    from gflow_jax.io import write_json

    run_dir = tmp_path / name
    run_dir.mkdir()
    write_json(run_dir / "config.json", config_snapshot(kind, cfg))
    return run_dir


def _results(run_dir):
    import json

    out = {}
    for path in sorted((run_dir / "points").glob("*/result.json")):
        r = json.loads(path.read_text())
        out[r["id"]] = {
            k: r.get(k) for k in ("status", "measures", "acc_gap", "loss_gap", "first_step")
        }
    return out


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    from gflow_jax.experiments.magnitude_generalization import (
        plot_magnitude_generalization,
        run_sweep,
    )

    kind, cfg = _tiny()
    run_dir = _new_run_dir(tmp_path_factory.mktemp("mg"), kind, cfg, "full")
    summary = run_sweep(cfg, run_dir)
    return run_dir, summary, plot_magnitude_generalization(run_dir)


def test_sweep_writes_every_point_table_and_figures(uninterrupted):
    run_dir, summary, figures = uninterrupted
    assert summary["n_ok"] == 4, summary["failed"]
    res = _results(run_dir)
    assert len(res) == 4
    names = {row["measure"] for row in summary["table"]}
    for metric in ("euclidean", "loss"):
        for q in ("mag_dim_max", "pmag_sqrt_n", "pmag_0.01", "e_alpha", "mag_dim_slope"):
            assert f"traj_{metric}_{q}" in names
        assert f"traj_{metric}_ph_dim" in names
        for r in res.values():
            assert not math.isnan(r["measures"][f"traj_{metric}_ph_dim"])  # computed
    assert {"repr_L1_mag_dim_max", "repr_L2_mag_dim_max"} <= names
    assert {"hyper_lr", "hyper_batch_size"} <= names  # the reference rows
    header = (run_dir / "table.csv").read_text().splitlines()[0].split(",")
    for gap in ("acc_gap", "loss_gap"):
        for q in ("tau", "psi_lr", "psi_bs", "Psi", "tau_given"):
            assert {f"{q}[{gap}]", f"{q}_lo[{gap}]", f"{q}_hi[{gap}]"} <= set(header)
    import json

    corr = json.loads((run_dir / "correlations.json").read_text())
    assert corr["statistics"]["kendall_variant"] == "b"
    assert corr["statistics"]["n_bootstrap"] == 50
    # hyperparameters alone carry no information once they are conditioned on
    hyper = {row["measure"]: row for row in summary["table"]}["hyper_lr"]
    assert hyper["tau_given[acc_gap]"] == 0.0 or math.isnan(hyper["tau_given[acc_gap]"])
    assert "| measure | τ |" in (run_dir / "table.md").read_text()
    assert {p.name for p in figures} == {
        "magnitude_curves.png",
        "measure_vs_acc_gap.png",
        "measure_vs_loss_gap.png",
        "monitoring.png",
        "statistics.png",
    }


def test_interrupted_sweep_resumes_to_the_uninterrupted_result(uninterrupted, tmp_path):
    from gflow_jax.cli import main
    from gflow_jax.experiments.magnitude_generalization import run_sweep

    full_dir = uninterrupted[0]
    kind, cfg = _tiny()
    run_dir = _new_run_dir(tmp_path, kind, cfg, "interrupted")
    done = []

    def stop_after_three(pid):
        done.append(pid)
        if len(done) == 3:  # inside the second batch-size group
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_sweep(cfg, run_dir, on_point_done=stop_after_three)
    assert len(_results(run_dir)) == 3  # finished points survived the interruption
    # simulate a crash inside the second group's training for its last point as well
    last = run_dir / "points" / "bs9-lr0.3-seed0"
    (last / "training.json").unlink()
    kept = (run_dir / "points" / "bs9-lr0.1-seed0" / "result.json").read_text()
    assert main(["run", "--resume", str(run_dir), "--quiet"]) == 0
    assert (run_dir / "points" / "bs9-lr0.1-seed0" / "result.json").read_text() == kept
    assert _results(run_dir) == _results(full_dir)
    import json

    assert json.loads((run_dir / "status.json").read_text())["state"] == "complete"


def test_failed_point_is_recorded_and_the_sweep_goes_on(tmp_path):
    from gflow_jax.experiments.magnitude_generalization import run_sweep

    kind, cfg = _tiny(**{"grid.learning_rates": [0.1, 1e200]})
    run_dir = _new_run_dir(tmp_path, kind, cfg, "failing")
    summary = run_sweep(cfg, run_dir)
    assert summary["n_ok"] == 2
    assert set(summary["failed"]) == {"bs4-lr1e+200-seed0", "bs9-lr1e+200-seed0"}
    assert all("diverged" in e for e in summary["failed"].values())


@pytest.mark.parametrize(
    "override, key, message",
    [
        ({"grid.batch_sizes": [4, 100]}, "grid.batch_sizes[1]", "must lie in [1, 27]"),
        ({"trajectory.probe_layers": [3]}, "trajectory.probe_layers[0]", "hidden layer in 1..2"),
        ({"trajectory.chunk_steps": 7, "trajectory.every": 2}, "trajectory.chunk_steps", "every"),
        ({"measures.metrics": ["cosine"]}, "measures.metrics[0]", "'euclidean', 'loss'"),
        ({"data.source": "mnist"}, "data.source", "'digits', 'clusters'"),
        ({"grid.learning_rates": [0.1, -1.0]}, "grid.learning_rates[1]", "positive"),
        ({"measures.slope_window": [5.0, 6.0]}, "measures.slope_window", "fewer than two"),
        ({"model.widths": [3]}, "model.widths", "unknown key"),
        ({"measures.ph_sizes": [11, 100, 5]}, "measures.ph_sizes", "fewer than two sizes"),
        ({"measures.ph_sizes": [4, 12]}, "measures.ph_sizes", "[min, max, step]"),
        ({"statistics.kendall_variant": "c"}, "statistics.kendall_variant", "'a', 'b'"),
        ({"statistics.level": 1.5}, "statistics.level", "(0, 1)"),
    ],
)
def test_config_errors_name_the_key(override, key, message):
    from gflow_jax.experiments import ConfigError

    with pytest.raises(ConfigError) as err:
        _tiny(**override)
    assert err.value.key == key and message in str(err.value)


def test_batched_cloud_measures_match_the_library_path():
    from gflow_jax.diagnostics import cloud_measures, trajectory_measures
    from gflow_jax.magnitude import pairwise_distances

    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(k, 3)) for k in (7, 12, 12)]
    clouds.append(np.zeros((5, 3)))  # one point, five times (a dead layer)
    clouds[1][4] = clouds[1][2]  # a duplicate
    got = cloud_measures(clouds, n_scales=6)
    for c, g in zip(clouds[:3], got, strict=False):
        ref = trajectory_measures(
            pairwise_distances(c), n_scales=6, log10_range=(-1.0, 3.0), e_alpha_measure=False
        ).values
        for k in ("mag_dim_max", "pmag_sqrt_n", "mag_sqrt_n", "pmag_0.01", "diameter"):
            assert g[k] == pytest.approx(ref[k], rel=1e-9), k
    assert got[3]["mag_sqrt_n"] == pytest.approx(1.0) and got[3]["mag_dim_max"] == 0.0


@pytest.mark.parametrize(
    "path",
    [
        "magnitude_generalization.toml",
        "magnitude_generalization_small.toml",
        "generalization_grid.toml",
        "generalization_grid_cpu.toml",
    ],
)
def test_shipped_configs_validate(path):
    from pathlib import Path

    from gflow_jax.experiments import load_experiment

    root = Path(__file__).resolve().parents[1] / "experiments"
    kind, cfg = load_experiment(root / path)
    assert kind.name == "magnitude_generalization" and kind.resumable
    g = cfg.grid
    assert len(g.learning_rates) * len(g.batch_sizes) * len(g.seeds) >= 12
    assert cfg.statistics.kendall_variant in ("a", "b")  # the variant is recorded
    if path.startswith("generalization_grid"):  # the literature's grid (Dupuis et al. 2023)
        lr, bs = np.array(g.learning_rates), np.array(g.batch_sizes)
        np.testing.assert_allclose(lr, np.geomspace(0.005, 0.1, 6), rtol=1e-4)
        np.testing.assert_allclose(bs, np.linspace(32, 256, 6), atol=0.5)
        assert len(g.seeds) >= 3 and set(cfg.measures.metrics) == {"euclidean", "loss"}
    if path == "generalization_grid.toml":
        assert cfg.trajectory.n_iterates == 5000 and cfg.measures.ph_sizes == (200, 1000, 50)


@pytest.mark.slow
def test_sweep_float32_adam_every_mode(tmp_path):
    """The other code paths of the kind: float32 training, Adam, recording every k-th step."""
    from gflow_jax.experiments.magnitude_generalization import run_sweep

    kind, cfg = _tiny(
        **{
            "training.dtype": "float32",
            "training.optimizer": "adam",
            "trajectory.mode": "every",
            "trajectory.every": 2,
            "trajectory.max_steps": 40,
            "grid.learning_rates": [0.01, 0.03],
        }
    )
    run_dir = _new_run_dir(tmp_path, kind, cfg, "f32")
    summary = run_sweep(cfg, run_dir)
    assert summary["n_ok"] == 4, summary["failed"]
    r = _results(run_dir)["bs4-lr0.01-seed0"]
    assert r["first_step"] == 0
    from gflow_jax.io import read_stream

    X, steps, _ = read_stream(run_dir / "points" / "bs4-lr0.01-seed0" / "trajectory")
    assert X.dtype == np.float32 and steps.tolist() == list(range(0, 41, 2))
