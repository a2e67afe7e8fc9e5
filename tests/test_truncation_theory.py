"""Closed forms of docs/theory.md (cluster-separated and general cases): the diffrax flow against
the exact event-driven solver, measured rates against n/(N d²), event times, collapse, fixed
points."""

import jax.numpy as jnp
import numpy as np
import pytest

from gflow_jax.core import AdaptedParameters
from gflow_jax.diagnostics import (
    cluster_spread,
    event_times,
    interval_rates,
    rate_diagnostics,
    truncation_diagnostics,
)
from gflow_jax.dynamics import (
    FlowProblem,
    SolverSettings,
    check_solution,
    gradient_descent,
    solve_face,
    solve_flow,
    two_sided_width,
)

from .helpers import input_problem, sweep_problem

TIGHT = SolverSettings(rtol=1e-10, atol=1e-12)
CLUSTER = np.linspace(0.0, 1.0, 10)


def _solve(problem, params, ts, settings=TIGHT):
    return check_solution(solve_flow(problem, params, jnp.asarray(ts), settings), settings)


def _face_problem(target, c0, d=1.0, n_extra=15):
    """The sweep oracle's layout with any target and start: 10 cluster points, n_extra far."""
    problem, _ = sweep_problem(d=d, target=target)
    if n_extra != 15:
        problem = input_problem(problem.u[: 10 + n_extra], problem.targets[: 10 + n_extra])
    params = AdaptedParameters.from_thresholds(jnp.array([[d]]), jnp.array([[c0]]))
    return problem, params


@pytest.mark.parametrize(
    ("case", "target", "c0"),
    [
        ("sweep", 1.5, 0.35),  # ỹ beyond the cluster: complete truncation at s*
        ("partial", 0.5, 0.05),  # ξ_5 < ỹ < ξ_6: c → ỹ at rate 5/(N d²)
        ("release", 0.3, 0.8),  # ỹ below c: points are released, the rate drops
        ("dead", 1.5, -0.5),  # nothing truncated: stationary
    ],
)
def test_diffrax_matches_event_driven_solution(case, target, c0):
    problem, params = _face_problem(target, c0)
    face = solve_face(CLUSTER, target, c0, 1.0, 25)
    ts = np.linspace(0.0, 60.0, 241)
    sol = _solve(problem, params, ts)
    np.testing.assert_allclose(sol.params.thresholds[:, 0, 0], face(ts), atol=1e-6)
    n_final = {"sweep": 10, "partial": 5, "release": 3, "dead": 0}[case]
    assert face.counts[-1] == n_final
    assert len(face.event_times) == {"sweep": 6, "partial": 4, "release": 5, "dead": 0}[case]
    if case == "dead":
        np.testing.assert_array_equal(sol.params.thresholds[:, 0, 0], c0)
    if case == "partial":  # residual cost (1/2N) Σ_{ξ > ỹ} (ξ − ỹ)² plus the far points' cost
        far = 0.5 * np.sum((np.linspace(5.0, 6.0, 15) - 5.5) ** 2) / 25
        residual = 0.5 * np.sum((CLUSTER[CLUSTER > target] - target) ** 2) / 25 + far
        np.testing.assert_allclose(sol.loss[-1], residual, rtol=1e-9)


def test_complete_truncation_pins_the_cluster_exactly():
    """After s* every point of the cluster sits on the face: the spread is exactly 0."""
    problem, params = _face_problem(1.5, 0.35)
    face = solve_face(CLUSTER, 1.5, 0.35, 1.0, 25)
    assert np.isfinite(face.complete_time)
    ts = np.sort(np.concatenate([np.linspace(0, 30, 61), [face.complete_time * 1.001]]))
    sol = _solve(problem, params, ts)
    labels = jnp.asarray(np.r_[np.zeros(10, int), np.ones(15, int)])
    diag = truncation_diagnostics(sol.params, problem.u, labels, 2)
    spread = np.asarray(cluster_spread(diag.x_tilde, labels, 2))[:, 0, 0]
    after = ts > face.complete_time
    assert np.all(spread[after] == 0.0)
    assert np.all(spread[~after] > 0.0)


def test_measured_rates_equal_prediction_and_jump_per_crossing():
    """Fitted log-slopes on every inter-event interval equal n/(N d²) to 1e-6, and consecutive
    intervals differ by exactly 1/(N d²) (one point crossed)."""
    for d in (1.0, 1.5):
        problem, params = _face_problem(1.5, 0.05, d=d)
        ts = np.linspace(0.0, 40.0, 801)
        sol = _solve(problem, params, ts)
        rates = rate_diagnostics(problem, sol.params)
        table = interval_rates(ts, np.asarray(sol.params.thresholds), rates)
        assert len(table["fitted"]) >= 8
        np.testing.assert_allclose(table["predicted"], table["count"] / (25 * d * d), rtol=1e-12)
        np.testing.assert_allclose(table["fitted"], table["predicted"], rtol=1e-6)
        jumps = np.diff(table["fitted"])
        np.testing.assert_allclose(jumps, 1 / (25 * d * d), rtol=2e-6)
        inst = np.asarray(rates.instantaneous_rate)[:, 0, 0]
        n = np.asarray(rates.counts)[:, 0, 0]
        np.testing.assert_allclose(inst[n > 0], n[n > 0] / (25 * d * d), rtol=1e-9)


def test_doubling_d_multiplies_every_event_time_by_four():
    times = []
    for d in (1.0, 2.0):
        problem, params = _face_problem(1.5, 0.05, d=d)
        ts = np.linspace(0.0, 25.0 * d * d, 101)
        sol = _solve(problem, params, ts)
        hits = truncation_diagnostics(sol.params, problem.u, jnp.zeros(25, int), 1).truncated
        ev = event_times(
            ts,
            np.asarray(sol.params.thresholds),
            np.asarray(sol.params.d),
            np.asarray(hits),
            np.asarray(problem.u),
            np.asarray(problem.targets),
        )
        times.append(ev["time"])
        exact = solve_face(CLUSTER, 1.5, 0.05, d, 25).event_times
        np.testing.assert_allclose(ev["time"], exact, rtol=1e-6)
    assert len(times[0]) == 9
    np.testing.assert_allclose(times[1], 4 * times[0], rtol=1e-6)


def test_gd_reproduces_event_times_to_first_order():
    """GD on the clock s = η·k crosses each point within O(η) of the flow's exact event."""
    problem, params = _face_problem(1.5, 0.05)
    exact = solve_face(CLUSTER, 1.5, 0.05, 1.0, 25).event_times
    errors = []
    for eta in (0.04, 0.02, 0.01):
        ts = jnp.linspace(0.0, 24.0, round(24 / eta) + 1)  # save every step
        gd = gradient_descent(problem, params, ts, eta)
        c = np.asarray(gd.params.thresholds)[:, 0, 0]
        n = (CLUSTER[None, :] < c[:, None]).sum(1)
        first = [np.asarray(ts)[np.argmax(n >= m)] for m in range(2, 11)]
        errors.append(np.max(np.abs(np.array(first) - exact)))
    assert errors[0] < 30 * 0.04  # O(η) with a modest constant
    assert errors[2] < 0.7 * errors[0]  # and it shrinks with η


def test_two_sided_clamp_width_is_a_sum_of_two_exponentials():
    """Layer 1 from below (d₁ = 1), layer 2 from above (d₂ = −1.5) on one cluster with ỹ inside:
    both faces match the event-driven solver and the width w = A e^{−λ₁s} + B e^{−λ₂s} with
    λ₁ = #{ξ < ỹ}/(N d₁²), λ₂ = #{ξ > ỹ}/(N d₂²): the cluster contracts to the point ỹ."""
    u = jnp.asarray(CLUSTER)[:, None]
    target = 0.47
    problem = input_problem(u, jnp.full((10, 1), target))
    d = jnp.array([[1.0], [-1.5]])
    params = AdaptedParameters.from_thresholds(d, jnp.array([[0.05], [0.95]]))
    ts = np.linspace(0.0, 80.0, 321)
    sol = _solve(problem, params, ts)
    lower = solve_face(CLUSTER, target, 0.05, 1.0, 10)
    upper = solve_face(CLUSTER, target, 0.95, -1.5, 10)
    c = np.asarray(sol.params.thresholds)[:, :, 0]
    np.testing.assert_allclose(c[:, 0], lower(ts), atol=1e-6)
    np.testing.assert_allclose(c[:, 1], upper(ts), atol=1e-6)
    width = c[:, 1] - c[:, 0]
    np.testing.assert_allclose(width, two_sided_width(lower, upper, ts), atol=2e-6)
    lam1, lam2 = np.sum(CLUSTER < target) / 10, np.sum(CLUSTER > target) / (10 * 1.5**2)
    late = ts > max(lower.starts[-1], upper.starts[-1])
    basis = np.stack([np.exp(-lam1 * ts[late]), np.exp(-lam2 * ts[late])], axis=1)
    (A, B), *_ = np.linalg.lstsq(basis, width[late], rcond=None)
    assert A > 0 and B > 0
    np.testing.assert_allclose(basis @ [A, B], width[late], rtol=1e-5, atol=1e-12)
    assert width[-1] < 1e-6 * width[0]


def test_shared_face_relaxes_to_the_weighted_mean_fixed_point():
    """Two clusters under one face with different targets: c → c* = Σ_j n_j ỹ_j / n, the
    clusters merge onto c*, and the residual cost stays positive as predicted."""
    a, b = np.linspace(0.0, 0.4, 6), np.linspace(0.6, 1.0, 9)
    values = np.r_[a, b]
    targets = np.r_[np.full(6, 0.9), np.full(9, 2.0)]  # both beyond their cluster
    face = solve_face(values, targets, 0.1, 1.0, 15)
    c_star = (6 * 0.9 + 9 * 2.0) / 15
    assert face.counts[-1] == 15 and face.limit == pytest.approx(c_star, rel=1e-14)
    problem = input_problem(jnp.asarray(values)[:, None], jnp.asarray(targets)[:, None])
    params = AdaptedParameters.from_thresholds(jnp.array([[1.0]]), jnp.array([[0.1]]))
    ts = np.linspace(0.0, 60.0, 121)
    sol = _solve(problem, params, ts)
    np.testing.assert_allclose(sol.params.thresholds[:, 0, 0], face(ts), atol=1e-6)
    residual = 0.5 * np.mean((c_star - targets) ** 2)
    np.testing.assert_allclose(sol.loss[-1], residual, rtol=1e-9)
    assert residual > 0.1


def test_solve_face_rejects_bad_input():
    with pytest.raises(ValueError, match="non-zero d"):
        solve_face(CLUSTER, 1.0, 0.0, 0.0, 10)
    with pytest.raises(ValueError, match="finite"):
        solve_face(np.r_[CLUSTER, np.nan], 1.0, 0.0, 1.0, 11)
    with pytest.raises(ValueError, match="n_total"):
        solve_face(CLUSTER, 1.0, 0.0, 1.0, 5)


def test_face_from_above_mirrors_face_from_below():
    up = solve_face(CLUSTER, 1.5, 0.35, 1.0, 25)
    down = solve_face(-CLUSTER, -1.5, -0.35, -1.0, 25)
    ts = np.linspace(0, 50, 51)
    np.testing.assert_allclose(down(ts), -up(ts), rtol=1e-14)
    np.testing.assert_allclose(down.event_times, up.event_times, rtol=1e-14)


def test_weighted_padding_gives_each_problem_its_own_rate():
    """One shape, different N: zero-weight padding keeps the rate n/(N d²) of the real N."""
    u = jnp.asarray(np.r_[CLUSTER, np.linspace(5, 6, 15)])[:, None]
    targets = jnp.full((25, 1), 1.5)
    weights = jnp.asarray(np.r_[np.ones(10), np.zeros(15)])
    problem = FlowProblem(u, targets, weights=weights)
    params = AdaptedParameters.from_thresholds(jnp.array([[1.0]]), jnp.array([[0.05]]))
    ts = np.linspace(0.0, 20.0, 81)
    sol = _solve(problem, params, ts)
    np.testing.assert_allclose(
        sol.params.thresholds[:, 0, 0], solve_face(CLUSTER, 1.5, 0.05, 1.0, 10)(ts), atol=1e-6
    )


def test_collapse_experiment_reaches_neural_collapse_and_gd_tracks_events(tmp_path):
    """`collapse` config end to end: NC1 and cost < 1e-8, spread exactly 0, every flow rate
    within 1e-6 of n/(N d²), and GD's event times within O(η) of the flow's (halving η)."""
    import json

    from gflow_jax.cli import main

    args = ["run", "experiments/collapse.toml", "flow.n_save=401", "gd.etas=[0.1, 0.05]"]
    args.append("magnitude.enabled=false")  # tested in test_truncated_magnitude.py
    assert main([*args, "output.figures=true", "--out", str(tmp_path), "--quiet"]) == 0
    (run,) = tmp_path.iterdir()
    analysis = json.loads((run / "analysis.json").read_text())
    flow = analysis["flow"]
    assert flow["final_nc1"] < 1e-8 and flow["residual_cost"] < 1e-8
    assert flow["final_spread_max"] == 0.0
    assert flow["max_rel_rate_error"] < 1e-6 and flow["intervals"] >= 10
    gaps = [analysis[f"gd/eta={eta}"]["max_event_time_gap_to_flow"] for eta in (0.1, 0.05)]
    assert gaps[0] < 1.0 * 0.1 and gaps[1] < 0.7 * gaps[0]
    for fig in ("rates.png", "events.png", "collapse.png"):
        assert (run / "figures" / fig).stat().st_size > 10_000


def test_rates_experiment_twenty_configurations_in_one_compiled_solve(tmp_path):
    """`rates`: 4 N × 5 d padded to one shape, one vmapped solve, one compilation; fitted rates
    equal n/(N d²) to 1e-6, jump by 1/(N d²) per crossing, and c(s) matches the exact solver."""
    from gflow_jax.experiments import load_experiment, rates as rates_experiment

    kind, cfg = load_experiment("experiments/rates.toml", ["n_save=600"])
    before = rates_experiment._solve_all._cached._cache_size()
    arrays, summary = rates_experiment.run_rates(cfg)
    assert rates_experiment._solve_all._cached._cache_size() == before + 1
    assert summary["configurations"] == 20
    assert summary["max_rel_rate_error"] < 1e-6
    assert summary["max_abs_error_vs_event_driven"] < 1e-6
    cfg_id, count = arrays["intervals/config"], arrays["intervals/count"]
    fitted, N, d = arrays["intervals/fitted"], arrays["intervals/N"], arrays["intervals/d"]
    np.testing.assert_allclose(fitted, count / (N * d**2), rtol=1e-6)
    step = (cfg_id[1:] == cfg_id[:-1]) & (np.diff(count) == 1)
    assert step.sum() > 100
    np.testing.assert_allclose(np.diff(fitted)[step], 1 / (N[1:] * d[1:] ** 2)[step], rtol=1e-5)
    assert sorted(set(N.tolist())) == [10, 20, 40, 80]


def test_spectral_gap_bound_holds_and_kernel_component_persists():
    """Standard cost with the cumulative output map frozen: e(s) equals expm(−(N_j/N)K s)e(0)
    (eigendecomposition, independent of diffrax), |e(s)| ≤ e^{−(N_j/N)μs}|e(0)| along the
    flow, μ > 0 for an injective W⁽ᴸ⁺¹⁾, and for Q < M the ker-K component of e stays put."""
    from gflow_jax.experiments import load_experiment
    from gflow_jax.experiments.spectral_gap import run_spectral_gap

    _, cfg = load_experiment("experiments/spectral_gap.toml", ["flow.n_save=121"])
    arrays, summary = run_spectral_gap(cfg)
    for case in ("injective", "not_injective"):
        entry = summary[case]
        assert entry["cluster_stayed_truncated"]
        assert entry["max_abs_error_vs_exact"] < 1e-8
        assert np.all(arrays[f"{case}/e_norm"] <= arrays[f"{case}/bound"] * (1 + 1e-9) + 1e-12)
    assert summary["injective"]["mu"] > 1e-3
    assert summary["injective"]["final_e_norm"] < 0.5 * arrays["injective/e_norm"][0]
    assert abs(summary["not_injective"]["mu"]) < 1e-12
    lam = arrays["not_injective/eigenvalues"]
    e = arrays["not_injective/e"]
    assert lam[0] < 1e-12 < lam[1]
    null = arrays["not_injective/eigenvectors"][:, 0]
    along = e @ null
    np.testing.assert_allclose(along, along[0], atol=1e-9)  # the kernel component is frozen
    assert abs(along[0]) > 0.05
    norms = arrays["not_injective/e_norm"]
    assert norms[-1] > 0.2 * norms[0]  # does not decay to 0
    assert np.all(np.diff(norms) <= 1e-12)  # but never grows
