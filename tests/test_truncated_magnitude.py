"""Magnitude of the truncated data (docs/theory.md: truncation × magnitude): closed forms
on a line, exact collapse values, compaction of duplicates, honest failure reports, configs."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow_jax.diagnostics import (
    hidden_representations,
    magnitude_increases,
    representation_magnitude,
    truncated_magnitude,
    truncation_diagnostics,
)
from gflow_jax.dynamics import SolverSettings, check_solution, solve_flow
from gflow_jax.experiments import ConfigError
from gflow_jax.experiments.truncation import load_config, write_truncated_magnitude
from gflow_jax.magnitude import _clouds, cloud_magnitudes, magnitude_function

from .helpers import random_network, sweep_problem

TIGHT = SolverSettings(rtol=1e-10, atol=1e-12)
SCALES = np.array([0.3, 1.0, 3.0, 10.0, 30.0])


def _line_magnitude(points: np.ndarray, t: float) -> float:
    """Oracle (docs/theory.md#oracles): points on a line with gaps g_i (distinct, sorted):
    1 + Σ tanh(t g_i/2)."""
    gaps = np.diff(np.unique(points))
    return 1.0 + float(np.sum(np.tanh(t * gaps / 2)))


def _two_points(d: float, t: np.ndarray) -> np.ndarray:
    """Oracle (docs/theory.md#oracles): two points at distance d: 2/(1 + e^{−td})."""
    return 2.0 / (1.0 + np.exp(-t * d))


def test_line_sweep_magnitude_is_non_increasing_and_matches_closed_form():
    """1-D sweep (threshold from below, ỹ beyond the cluster): truncation only shrinks gaps, so
    |tX̃(s)| = 1 + Σ tanh(t g_i/2) of the sorted distinct points is non-increasing in s; the
    batched solve equals that closed form at every save and scale."""
    problem, params = sweep_problem()
    ts = jnp.linspace(0.0, 30.0, 121)
    sol = check_solution(solve_flow(problem, params, ts, TIGHT), TIGHT)
    labels = jnp.asarray(np.r_[np.zeros(10, int), np.ones(15, int)])
    xt = np.asarray(truncation_diagnostics(sol.params, problem.u, labels, 2).x_tilde)  # (T,25,1)
    r = truncated_magnitude(xt, SCALES, labels=labels)
    m = np.asarray(r.whole.magnitude)
    exact = np.array([[_line_magnitude(x[:, 0], t) for t in SCALES] for x in xt])
    np.testing.assert_allclose(m, exact, rtol=1e-11)
    assert np.all(np.diff(m, axis=0) <= 1e-12 * m[1:])
    assert np.all(m[0] - m[-1] > 0.05 * (m[0] - 1.0))  # it really decreases
    assert magnitude_increases(np.asarray(ts), m)["non_increasing"]
    # 4 of the cluster points start below c = 0.35 (one distinct point); all 10 at the end
    assert int(r.whole.n_unique[0]) == 22 and int(r.whole.n_unique[-1]) == 16
    cluster = r.cluster_field("magnitude")[:, 0]  # (T, S)
    single = r.cluster_field("n_unique")[:, 0] == 1
    assert single[-1] and not single[0]
    np.testing.assert_array_equal(cluster[single], 1.0)  # merged duplicates: exactly 1
    assert np.all(cluster[~single] > 1.0)


def test_complete_collapse_equals_the_targets_and_clusters_reach_one():
    """`collapse` (two clusters clamped onto their targets): at complete truncation each
    cluster is ONE point; |tX̃(s_final)| equals the two-point closed form of X̃'s distinct points
    to 1e-12 and |t{ỹ_j}| to the solver's tolerance; every cluster's magnitude is exactly 1
    from the save at which its points coincide."""
    cfg = load_config("experiments/collapse.toml", ["flow.t_final=80", "flow.n_save=41"])
    from gflow_jax.experiments.truncation import setup_experiment

    setup = setup_experiment(cfg)
    sol = check_solution(
        solve_flow(setup.problem, setup.params0, setup.save_ts, setup.settings), setup.settings
    )
    diag = truncation_diagnostics(sol.params, setup.problem.u, setup.data.labels, 2)
    xt = np.asarray(diag.x_tilde @ setup.frame)
    r = truncated_magnitude(xt, SCALES, labels=setup.data.labels)
    final = np.unique(xt[-1], axis=0)
    assert final.shape[0] == 2 and int(r.whole.n_unique[-1]) == 2
    d_final = np.linalg.norm(final[0] - final[1])
    np.testing.assert_allclose(r.whole.magnitude[-1], _two_points(d_final, SCALES), rtol=1e-12)
    y = np.asarray(setup.targets_input)
    error = np.max(np.abs(xt[-1] - y[np.asarray(setup.data.labels)]))
    assert error < 1e-9  # the corners converged to ỹ_j (rate N_j/(N d²) = 1/2)
    target = _two_points(np.linalg.norm(y[0] - y[1]), SCALES)
    # |t{p, q}| is Lipschitz in the positions with constant t/2 per unit of |p − q|
    assert np.all(np.abs(r.whole.magnitude[-1] - target) <= SCALES * error + 1e-12)
    np.testing.assert_allclose(r.whole.magnitude[-1], target, rtol=1e-9)
    n_unique = r.cluster_field("n_unique")  # (T, Q)
    cluster = r.cluster_field("magnitude")  # (T, Q, S)
    for j in range(2):
        single = n_unique[:, j] == 1
        assert single[-1] and not single[0]
        first = int(np.argmax(single))
        assert np.all(single[first:])  # once collapsed, it stays one point
        np.testing.assert_array_equal(cluster[single, j], 1.0)
        assert np.all(cluster[~single, j] > 1.0)
    assert np.all(np.asarray(r.whole.solver) == 0)


def test_compaction_equals_the_full_solve_and_the_library():
    """Removing exact duplicates on the host changes nothing but the cost: same magnitude and
    dimension as the full-size solve (the core merges duplicates by masking) and as
    :func:`gflow_jax.magnitude.magnitude_function` on the distinct points; works for any width
    (hidden representations: (T, N, width))."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 30, 5))
    base[1, 10:20] = base[1, 0]  # 10 copies of one point
    base[2, :] = base[2, :4][np.arange(30) % 4]  # only 4 distinct points
    full = cloud_magnitudes(base, SCALES, compact=False)
    comp = representation_magnitude(base, SCALES, per_cluster=False).whole
    np.testing.assert_array_equal(comp.n_unique, [30, 20, 4])
    np.testing.assert_array_equal(full.n_unique, comp.n_unique)
    np.testing.assert_allclose(comp.magnitude, full.magnitude, rtol=1e-12)
    np.testing.assert_allclose(comp.dimension, full.dimension, rtol=1e-10, atol=1e-13)
    for c in range(3):
        lib = magnitude_function(np.unique(base[c], axis=0), SCALES, method="cholesky")
        np.testing.assert_allclose(comp.magnitude[c], lib.magnitude, rtol=1e-12)
        np.testing.assert_allclose(comp.dimension[c], lib.dimension, rtol=1e-10, atol=1e-13)


def test_new_scale_grid_of_the_same_length_does_not_recompile():
    x = np.random.default_rng(1).normal(size=(2, 12, 3))
    cloud_magnitudes(x, SCALES)
    before = _clouds._chunk_kernel._cache_size()
    cloud_magnitudes(x, SCALES * 1.7)
    assert _clouds._chunk_kernel._cache_size() == before


def test_a_failed_solve_is_reported_not_hidden():
    """Two points 1e-20 apart are distinct (not merged) but give identical rows of Z: Cholesky
    and LU both fail, and the result says so (solver 2, NaN) instead of a number."""
    r = cloud_magnitudes(np.array([[[0.0], [1e-20], [1.0]]]), [1.0, 10.0])
    np.testing.assert_array_equal(r.solver, [[2, 2]])
    assert np.all(np.isnan(r.magnitude)) and int(r.n_unique[0]) == 3
    with pytest.raises(ValueError, match="NaN"):
        cloud_magnitudes(np.array([[[np.nan], [1.0]]]), [1.0])
    with pytest.raises(ValueError, match="positive"):
        cloud_magnitudes(np.zeros((1, 2, 1)), [0.0])


def test_release_is_not_a_sweep_and_the_magnitude_grows():
    """The 1-D theorem needs a sweep: when ỹ lies below the threshold (release), c moves down,
    truncated points return to their data values, gaps grow and so does |tX̃(s)| — still equal
    to the closed form 1 + Σ tanh(t g_i/2)."""
    problem, _ = sweep_problem(target=0.3)
    from gflow_jax.core import AdaptedParameters

    params = AdaptedParameters.from_thresholds(jnp.array([[1.0]]), jnp.array([[0.8]]))
    ts = jnp.linspace(0.0, 30.0, 31)
    sol = check_solution(solve_flow(problem, params, ts, TIGHT), TIGHT)
    xt = np.asarray(truncation_diagnostics(sol.params, problem.u, jnp.zeros(25, int), 1).x_tilde)
    m = np.asarray(cloud_magnitudes(xt, SCALES).magnitude)
    exact = np.array([[_line_magnitude(x[:, 0], t) for t in SCALES] for x in xt])
    np.testing.assert_allclose(m, exact, rtol=1e-11)
    assert np.all(m[-1] > m[0] + 0.01) and not magnitude_increases(ts, m)["non_increasing"]


def test_one_face_truncation_can_increase_the_magnitude_in_the_plane():
    """Counterexample (docs/truncated_magnitude.md): in R² one face x₂ ↦ max(x₂, c) moves one of
    five points; every pairwise distance shrinks, yet |tX| grows at small t (and falls at
    large t). Values checked with 50-digit mpmath arithmetic; κ(Z) < 1e5 here."""
    X = np.array(
        [
            [-1.47132807, -0.4912756],
            [0.25293303, 0.47230486],
            [-0.2568569, -0.11361613],
            [-3.26048083, -0.11245526],
            [-1.81125459, 1.79278861],
        ]
    )
    Y = X.copy()
    Y[:, 1] = np.maximum(Y[:, 1], -0.157577683)
    assert (X[:, 1] < -0.157577683).sum() == 1
    dx = np.linalg.norm(X[:, None] - X[None], axis=-1)
    dy = np.linalg.norm(Y[:, None] - Y[None], axis=-1)
    assert np.all(dy <= dx) and np.any(dy < dx)
    t = np.array([0.02, 0.05, 1.0])
    r = cloud_magnitudes(np.stack([X, Y]), t)
    mpmath = {0.02: (1.0387668463611582, 1.038900068923412), 1.0: (3.2254927205571794, None)}
    np.testing.assert_allclose(r.magnitude[:, 0], mpmath[0.02], rtol=1e-11)
    np.testing.assert_allclose(r.magnitude[0, 2], mpmath[1.0][0], rtol=1e-12)
    increase = np.asarray(r.magnitude[1] - r.magnitude[0])
    assert increase[0] > 1.3e-4 and increase[1] > 1.1e-4 and increase[2] < -0.06


def test_hidden_representations_are_the_layer_form_of_the_network():
    from gflow_jax.core import relu_forward

    nets = [random_network(jax.random.PRNGKey(k), L=3, M=4) for k in range(2)]
    x = jax.random.normal(jax.random.PRNGKey(5), (7, 4))
    W = jnp.stack([n.weights for n in nets])
    b = jnp.stack([n.biases for n in nets])
    h = np.asarray(hidden_representations(W, b, x))  # (T, L, N, M)
    for k, net in enumerate(nets):
        ref = np.asarray(jax.vmap(lambda xi, net=net: relu_forward(net, xi)[0])(x))  # (N, L, M)
        np.testing.assert_allclose(h[k], ref.transpose(1, 0, 2), rtol=1e-13, atol=1e-14)


def test_magnitude_increases_finds_the_largest_step():
    ts = np.arange(5.0)
    m = np.array([[5.0, 3.0], [4.0, 3.5], [4.5, 3.0], [4.0, 2.0], [3.0, 2.0]])
    out = magnitude_increases(ts, m)
    assert out["max_increase"] == [0.5, 0.5]
    assert out["at_s"] == [[1.0, 2.0], [0.0, 1.0]]
    assert out["increasing_steps"] == [1, 1] and not out["non_increasing"]


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        ("magnitude.t_min=0", "magnitude.t_min", "positive"),
        ("magnitude.t_max=0.01", "magnitude.t_max", "exceed"),
        ("magnitude.n_scales=0", "magnitude.n_scales", "positive"),
        ("magnitude.scales=[1.0, -2.0]", "magnitude.scales[1]", "positive"),
        ("magnitude.bogus=1", "magnitude.bogus", "unknown key"),
    ],
)
def test_bad_magnitude_config_names_the_key(override, key, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config("experiments/collapse.toml", [override])
    assert info.value.key == key


@pytest.mark.slow
def test_collapse_run_writes_magnitude_files_and_figures(tmp_path):
    """`gflow run experiments/collapse.toml`: truncated_magnitude.{npz,json} and two figures;
    the explicit scale list is used; |tX̃(s)| never increases; the final cloud is at the
    targets' magnitude; computed once (a second call reads the files)."""
    from gflow_jax.cli import main

    args = ["run", "experiments/collapse.toml", "flow.n_save=161", "gd.etas=[0.25]"]
    args += ["magnitude.scales=[0.5, 2.0, 8.0]", "--out", str(tmp_path), "--quiet"]
    assert main(args) == 0
    (run,) = tmp_path.iterdir()
    summary = json.loads((run / "truncated_magnitude.json").read_text())
    assert summary["scales"] == [0.5, 2.0, 8.0]
    for prefix in ("flow", "gd/eta=0.25"):
        entry = summary[prefix]
        assert entry["monotonicity"]["non_increasing"]
        assert entry["max_abs_final_gap_to_targets"] < 1e-6
        assert entry["cluster_final_magnitude_minus_one"] == [0.0, 0.0]
        assert entry["failed_solves"] == 0
    with np.load(run / "truncated_magnitude.npz") as z:
        assert z["flow/magnitude"].shape == (161, 3)
        assert z["flow/cluster_magnitude"].shape == (161, 2, 3)
    for fig in ("truncated_magnitude.png", "cluster_magnitude.png"):
        assert (run / "figures" / fig).stat().st_size > 10_000
    again, _ = write_truncated_magnitude(run)
    assert again == summary
