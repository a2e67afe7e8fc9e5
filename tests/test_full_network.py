"""Full-network gradient flow vs GD/SGD: Euler = GD, first order, balance laws, input-space map."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow_jax.core import (
    AdaptedParameters,
    ReLUNetwork,
    adapted_truncate,
    make_clusters,
    network_standard_cost,
)
from gflow_jax.diagnostics import network_diagnostics, offdiagonality, parameter_distance
from gflow_jax.dynamics import (
    NetworkProblem,
    SolverSettings,
    balance_quantities,
    check_solution,
    minibatch_indices,
    network_descent,
    solve_network_flow,
)

from .helpers import random_orthogonal

M, L, Q, PER_CLASS = 3, 2, 3, 20  # one set of shapes for every test: one compilation each


def _problem(seed=0):
    data = make_clusters(
        jax.random.PRNGKey(seed),
        n_classes=Q,
        n_per_class=PER_CLASS,
        dim=M,
        radius=0.3,
        separation=1.5,
        distribution="gaussian",
        layout="random",
    )
    x = data.x - jnp.mean(data.x, axis=0, keepdims=True)
    return NetworkProblem(x, jnp.eye(Q)[data.labels]), data.labels


def _net(seed=1, bias=0.1):
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    return ReLUNetwork(
        weights=jax.random.normal(k[0], (L, M, M)) * np.sqrt(2.0 / M),
        biases=bias * jax.random.normal(k[1], (L, M)),
        out_weight=0.5 * jax.random.normal(k[2], (Q, M)) / np.sqrt(M),
        out_bias=jnp.zeros(Q),
    )


def _at(tree, i):
    return jax.tree.map(lambda v: v[i], tree)


def _np_forward(net, x):
    """Layer form with NumPy: hidden activations (N, L, M) and output (N, Q)."""
    W, b = np.asarray(net.weights), np.asarray(net.biases)
    h, hidden = np.asarray(x), []
    for ell in range(W.shape[0]):
        h = np.maximum(h @ W[ell].T + b[ell], 0.0)
        hidden.append(h)
    return np.stack(hidden, 1), h @ np.asarray(net.out_weight).T + np.asarray(net.out_bias)


# ------------------------------------------------------------------------------------------
# dynamics


def test_euler_flow_equals_optax_gd_to_rounding():
    problem, _ = _problem()
    net = _net()
    eta = 0.05
    ts = jnp.linspace(0.0, 2.0, 5)
    settings = SolverSettings(solver="euler", dt0=eta, max_steps=1000)
    sol = check_solution(solve_network_flow(problem, net, ts, settings), settings)
    gd = network_descent(problem, net, ts, eta)
    assert float(parameter_distance(_at(gd.params, -1), net)) > 0.1  # it moved
    for a, b in zip(jax.tree.leaves(gd.params), jax.tree.leaves(sol.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(gd.loss, sol.loss, rtol=1e-11)


def test_flow_loss_is_the_standard_cost_and_decreases():
    problem, _ = _problem()
    sol = check_solution(
        solve_network_flow(problem, _net(), jnp.linspace(0.0, 10.0, 5)), SolverSettings()
    )
    expected = [network_standard_cost(_at(sol.params, i), problem.x, problem.y) for i in range(5)]
    np.testing.assert_allclose(sol.loss, expected, rtol=1e-12)
    assert np.all(np.diff(np.asarray(sol.loss)) <= 1e-12)
    assert float(sol.loss[-1]) < 0.2 * float(sol.loss[0])


def test_gd_converges_to_flow_first_order():
    """max_s ‖θ_GD(s) − θ_flow(s)‖ = O(η): halving η roughly halves it; log-log order ≈ 1."""
    problem, _ = _problem()
    net = _net()
    ts = jnp.linspace(0.0, 2.4, 5)
    settings = SolverSettings(rtol=1e-11, atol=1e-13)
    ref = check_solution(solve_network_flow(problem, net, ts, settings), settings)
    etas = np.array([0.04, 0.02, 0.01, 0.005, 0.0025])
    errors = np.array(
        [
            float(
                jnp.max(parameter_distance(network_descent(problem, net, ts, e).params, ref.params))
            )
            for e in etas
        ]
    )
    assert errors[-1] > 1e-6  # not trivially zero
    ratios = errors[:-1] / errors[1:]
    assert np.all((ratios > 1.6) & (ratios < 2.5)), (errors, ratios)
    order = np.polyfit(np.log(etas), np.log(errors), 1)[0]
    assert 0.8 <= order <= 1.3, (errors, order)


def _balance_drift(nets):
    bal = np.asarray(jax.vmap(balance_quantities)(nets))
    return np.max(np.abs(bal - bal[0])), np.max(np.abs(bal[0]))


def test_balance_conserved_by_flow_not_by_large_step_gd():
    """Δ_{ℓ,k} = |W_ℓ[k,:]|² + b_{ℓ,k}² − |W_{ℓ+1}[:,k]|² is constant along the flow (to solver
    tolerance, tightening with it); GD with a large step drifts, by O(η)."""
    problem, _ = _problem()
    net = _net()
    ts = jnp.linspace(0.0, 4.0, 5)
    drifts = {}
    for rtol in (1e-7, 1e-10):
        settings = SolverSettings(rtol=rtol, atol=1e-2 * rtol)
        sol = check_solution(solve_network_flow(problem, net, ts, settings), settings)
        drifts[rtol], scale = _balance_drift(sol.params)
    assert float(parameter_distance(_at(sol.params, -1), net)) > 0.5  # parameters really moved
    assert drifts[1e-10] < 1e-8 * scale, drifts
    assert drifts[1e-10] < drifts[1e-7]  # the residual drift is solver error
    # the off-diagonal of W_ℓW_ℓᵀ + b_ℓb_ℓᵀ − W_{ℓ+1}ᵀW_{ℓ+1} is *not* conserved (ReLU ≠ linear)
    full = jax.vmap(
        lambda n: (
            n.weights[0] @ n.weights[0].T
            + jnp.outer(n.biases[0], n.biases[0])
            - n.weights[1].T @ n.weights[1]
        )
    )(sol.params)
    off = full - jax.vmap(jnp.diag)(jax.vmap(jnp.diag)(full))
    assert float(jnp.max(jnp.abs(off[-1] - off[0]))) > 1e-2
    gd_drift = [
        _balance_drift(network_descent(problem, net, ts, eta).params)[0] for eta in (0.2, 0.1, 0.05)
    ]
    assert gd_drift[0] > 1e-2 * scale, gd_drift
    assert 1.5 < gd_drift[1] / gd_drift[2] < 2.7, gd_drift  # O(η) once η is small


def test_one_gd_step_changes_balance_by_eta_squared():
    """Δ(θ − ηg) − Δ(θ) = η²(|g_in|² + g_b² − |g_out|²) exactly, with g from jax.grad."""
    problem, _ = _problem()
    net = _net(bias=0.5)
    eta = 0.1
    g = jax.grad(network_standard_cost)(net, problem.x, problem.y)
    one = network_descent(problem, net, eta * jnp.arange(5.0), eta)  # shapes as elsewhere
    predicted = eta**2 * np.asarray(balance_quantities(g))
    np.testing.assert_allclose(
        balance_quantities(_at(one.params, 1)) - balance_quantities(net), predicted, atol=1e-13
    )
    assert np.max(np.abs(predicted)) > 1e-4


def test_minibatch_is_a_uniform_subset_and_its_mean_gradient():
    problem, _ = _problem()
    n, B = problem.n_points, 5
    keys = jax.random.split(jax.random.PRNGKey(0), 4000)
    rows = jnp.arange(n, dtype=jnp.int32)
    idx = np.asarray(jax.vmap(lambda k: minibatch_indices(k, jnp.ones(n), B, rows))(keys))
    assert all(len(set(row.tolist())) == B for row in idx)
    freq = np.bincount(idx.ravel(), minlength=n) / 4000  # each point chosen with prob. B/n
    assert np.max(np.abs(freq - B / n)) < 4 * np.sqrt(B / n * (1 - B / n) / 4000)
    # one SGD step = one step along the mean gradient of the chosen subset
    net = _net()
    key = jax.random.PRNGKey(7)
    eta = 0.1
    sgd = network_descent(problem, net, eta * jnp.arange(5.0), eta, batch_size=B, key=key)
    first = jax.random.fold_in(jax.random.split(key, 1)[0], 0)
    idx = np.asarray(minibatch_indices(first, jnp.ones(n), B, rows))
    g = jax.grad(network_standard_cost)(net, problem.x[idx], problem.y[idx])
    expected = jax.tree.map(lambda p, gp: p - eta * gp, net, g)
    for a, b in zip(jax.tree.leaves(_at(sgd.params, 1)), jax.tree.leaves(expected), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_sgd_noisy_reproducible_and_full_batch_is_gd():
    problem, _ = _problem()
    net = _net()
    ts = jnp.linspace(0.0, 2.0, 5)
    key = jax.random.PRNGKey(3)
    sgd = network_descent(problem, net, ts, 0.05, batch_size=4, key=key)
    again = network_descent(problem, net, ts, 0.05, batch_size=4, key=key)
    gd = network_descent(problem, net, ts, 0.05)
    full = network_descent(problem, net, ts, 0.05, batch_size=problem.n_points, key=key)
    np.testing.assert_array_equal(sgd.params.weights, again.params.weights)
    assert float(jnp.max(parameter_distance(sgd.params, gd.params))) > 1e-3
    np.testing.assert_allclose(full.params.weights, gd.params.weights, rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="PRNG key"):
        network_descent(problem, net, ts, 0.05, batch_size=4)
    with pytest.raises(ValueError, match="batch_size"):
        network_descent(problem, net, ts, 0.05, batch_size=problem.n_points + 1)
    with pytest.raises(ValueError, match="whole number"):
        network_descent(problem, net, ts, 0.03)


def test_new_step_size_does_not_recompile_and_batch_size_compiles_once():
    """η is traced; the batch size sets the minibatch shape (the one sampler of the toolkit),
    so each new B compiles one program, which every η then reuses."""
    from gflow_jax.dynamics import _network_flow as full_network

    problem, _ = _problem()
    net = _net()
    ts = jnp.linspace(0.0, 0.8, 5)
    key = jax.random.PRNGKey(0)
    network_descent(problem, net, ts, 0.1, batch_size=4, key=key)
    before = full_network._descend._cached._cache_size()
    network_descent(problem, net, ts, 0.05, batch_size=4, key=key)
    assert full_network._descend._cached._cache_size() == before
    network_descent(problem, net, ts, 0.025, batch_size=7, key=key)
    network_descent(problem, net, ts, 0.1, batch_size=7, key=key)
    assert full_network._descend._cached._cache_size() == before + 1


def test_new_tolerances_do_not_recompile_the_flow():
    from gflow_jax.dynamics import _network_flow as full_network

    problem, _ = _problem()
    ts = jnp.linspace(0.0, 0.4, 5)
    solve_network_flow(problem, _net(), ts, SolverSettings(rtol=1e-6, atol=1e-8))
    before = full_network._solve._cached._cache_size()
    solve_network_flow(problem, _net(), ts, SolverSettings(rtol=1e-9, atol=1e-11, dt0=1e-4))
    assert full_network._solve._cached._cache_size() == before  # dtmin alone is static


def test_failed_solve_is_reported():
    problem, _ = _problem()
    settings = SolverSettings(solver="euler", dt0=0.05, max_steps=1000)  # 2000 steps needed
    sol = solve_network_flow(problem, _net(), jnp.linspace(0.0, 100.0, 5), settings)
    assert not bool(sol.success)
    with pytest.raises(RuntimeError, match="max_steps"):
        check_solution(sol, settings)


# ------------------------------------------------------------------------------------------
# input-space diagnostics


def test_cumulative_mapping_of_trained_parameters_reproduces_the_network():
    """At every saved time of (S)GD: x⁽ℓ⁾ = W⁽ℓ⁾z⁽ℓ⁾ + b⁽ℓ⁾ with W⁽ℓ⁾, b⁽ℓ⁾, z⁽ℓ⁾ rebuilt in NumPy,
    the output is W_{L+1}x⁽ᴸ⁾ + b_{L+1}, and the diagnostics' x̃ and counts match."""
    problem, labels = _problem()
    ts = jnp.linspace(0.0, 4.0, 5)
    traj = network_descent(problem, _net(), ts, 0.05, batch_size=5, key=jax.random.PRNGKey(1))
    diag = network_diagnostics(traj.params, problem.x, labels, Q)
    x = np.asarray(problem.x)
    for t in range(len(ts)):
        net = _at(traj.params, t)
        W, b = np.asarray(net.weights), np.asarray(net.biases)
        hidden, out = _np_forward(net, x)
        W_cum, b_cum = np.eye(M), np.zeros(M)
        z = x.copy()
        inactive = []
        for ell in range(L):
            W_cum, b_cum = W[ell] @ W_cum, W[ell] @ b_cum + b[ell]
            pre = z @ W_cum.T + b_cum
            inactive.append(pre < 0)
            z = np.linalg.solve(W_cum, (np.maximum(pre, 0.0) - b_cum).T).T
            np.testing.assert_allclose(z @ W_cum.T + b_cum, hidden[:, ell], atol=1e-10)
        np.testing.assert_allclose(
            (z @ W_cum.T + b_cum) @ np.asarray(net.out_weight).T + np.asarray(net.out_bias),
            out,
            atol=1e-10,
        )
        np.testing.assert_allclose(diag.x_tilde[t], z, atol=1e-10)
        np.testing.assert_array_equal(diag.truncated[t], np.stack(inactive, 1))
        np.testing.assert_array_equal(diag.counts[t], np.stack(inactive, 1).sum(0))
        assert float(diag.identity_error[t]) < 1e-10
        acc = np.mean(np.argmax(out, 1) == np.asarray(labels))
        np.testing.assert_allclose(diag.accuracy[t], acc)
    assert 0 < int(diag.counts.sum()) < diag.truncated.size  # some, not all, units off


def test_adapted_network_diagnostics():
    """Adapted W⁽ℓ⁾ = D_ℓO: off-diagonality 0, x̃ equals the coordinatewise clamp, the rate is
    n/(N d²), and rank counts the coordinates not clamped; generic weights are not adapted."""
    problem, labels = _problem()
    frame = random_orthogonal(jax.random.PRNGKey(4), M)
    d = jnp.array([[1.5, 0.8, 1.1], [-0.6, -1.3, -0.9]])
    u = problem.x @ frame.T
    c = jnp.stack([jnp.quantile(u, 0.4, axis=0), jnp.quantile(u, 0.7, axis=0)])
    params = AdaptedParameters.from_thresholds(d, c)
    net = params.to_network(frame, jnp.ones((Q, M)), jnp.zeros(Q))
    diag = network_diagnostics(jax.tree.map(lambda v: v[None], net), problem.x, labels, Q)
    np.testing.assert_allclose(diag.offdiag[0], 0.0, atol=1e-12)
    clamp, hits = adapted_truncate(params, u)
    np.testing.assert_allclose(diag.x_tilde[0], clamp @ frame, atol=1e-12)
    np.testing.assert_array_equal(diag.truncated[0], hits)
    n = np.asarray(hits).sum(0)
    np.testing.assert_allclose(diag.rates[0], n / (problem.n_points * np.asarray(d) ** 2))
    clamped_coords = np.asarray(hits).any(axis=1).sum(-1)  # coordinates moved onto a face
    np.testing.assert_array_equal(diag.rank[0], M - clamped_coords)
    assert 0 < int(clamped_coords.sum()) < problem.n_points * M
    generic = float(offdiagonality(_net().weights[0]))
    assert 0.1 < generic <= 1.0


# ------------------------------------------------------------------------------------------
# the sgd_vs_flow experiment

_SMALL = [
    "flow.t_final=0.8",  # the shapes of the tests above (N = 60, T = 5): cached compilations
    "flow.n_save=5",
    "flow.max_steps=100000",
    "gd.etas=[0.1, 0.05]",
    "sgd.etas=[0.1]",
    "sgd.batch_sizes=[4]",
    "output.progress=false",
]


@pytest.mark.parametrize(
    ("override", "key", "message"),
    [
        ("flow.rtoll=1e-3", "flow.rtoll", "unknown key"),
        ("flow.t_final=0", "flow.t_final", "positive"),
        ("gd.etas=[0.03]", "gd.etas[0]", "whole number"),
        ("sgd.etas=[-0.1]", "sgd.etas[0]", "positive"),
        ("sgd.batch_sizes=[0]", "sgd.batch_sizes[0]", "must lie in"),
        ("network.init='xavier'", "network.init", "one of"),
        ("data.n_classes=1", "data.n_classes", "at least 2"),
        ("network.bias_scale=-1.0", "network.bias_scale", "non-negative"),
        ("flow.dtmin=-1.0", "flow.dtmin", "non-negative"),
        ("targets.scale='big'", "targets.scale", "expected a number"),
    ],
)
def test_bad_config_names_the_key(override, key, message):
    from gflow_jax.experiments import ConfigError, load_experiment

    with pytest.raises(ConfigError, match=message) as info:
        load_experiment("experiments/sgd_vs_flow.toml", [override])
    assert info.value.key == key


def test_default_config_loads_and_adapted_init_is_adapted():
    from gflow_jax.experiments import load_experiment
    from gflow_jax.experiments.sgd_vs_flow import SgdVsFlowConfig, initial_network

    kind, cfg = load_experiment("experiments/sgd_vs_flow.toml")
    assert kind.name == "sgd_vs_flow" and isinstance(cfg, SgdVsFlowConfig)
    _, cfg = load_experiment("experiments/sgd_vs_flow.toml", ["network.init='adapted'"])
    problem, _ = _problem()
    net = initial_network(cfg, problem.x, jax.random.PRNGKey(0))
    W_cum = jnp.einsum("ij,jk->ik", net.weights[1], net.weights[0])
    assert float(offdiagonality(W_cum)) < 1e-12
    assert float(offdiagonality(net.weights[0])) < 1e-12


def test_gflow_run_writes_arrays_metrics_and_figures(tmp_path):
    import json

    from gflow_jax.cli import main

    convention = ["collapse.convention=papyan", "collapse.nc4=agreement"]
    args = ["run", "experiments/sgd_vs_flow.toml", *_SMALL, *convention, "--out", str(tmp_path)]
    assert main([*args, "--quiet"]) == 0
    (run,) = tmp_path.iterdir()
    for name in ("config.json", "env.json", "metrics.jsonl", "arrays.npz", "summary.json"):
        assert (run / name).is_file(), name
    assert json.loads((run / "status.json").read_text())["state"] == "complete"
    config = json.loads((run / "config.json").read_text())
    assert config["kind"] == "sgd_vs_flow"
    # the Papyan convention of the run, every option written out, in config and summary
    papyan = {"global_mean": "features", "ddof": 1, "nc3": "squared", "nc4": "agreement"}
    assert config["collapse"] == {"convention": "papyan", **papyan}
    assert json.loads((run / "summary.json").read_text())["collapse"] == config["collapse"]
    figures = ("loss", "collapse", "truncation", "discrepancy", "input_space")
    for fig in figures:
        assert (run / "figures" / f"{fig}.png").stat().st_size > 10_000, fig
    trajectories = ["flow", "gd/eta=0.1", "gd/eta=0.05", "sgd/eta=0.1,B=4"]
    with np.load(run / "arrays.npz") as z:
        assert z["ts"].shape == (5,)
        for p in trajectories:
            assert z[f"{p}/x_tilde"].shape == (5, 3 * 20, M)
            assert z[f"{p}/counts"].shape == (5, L, M)
            assert z[f"{p}/offdiag"].shape == (5, L)
            assert float(z[f"{p}/identity_error"].max()) < 1e-9
        assert float(z["flow/balance_drift"].max()) < 1e-5
        assert float(z["flow/gap_to_flow"].max()) == 0.0
        assert float(z["gd/eta=0.1/gap_to_flow"].max()) > float(z["gd/eta=0.05/gap_to_flow"].max())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["s"] for r in rows] == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    assert rows[-1]["flow/loss"] < rows[0]["flow/loss"]
    assert {f"{p}/nc1" for p in trajectories} <= set(rows[0])
    summary = json.loads((run / "summary.json").read_text())
    assert summary["flow"]["num_steps"] > 0 and "gd_discrepancy_order" in summary
    (run / "figures" / "collapse.png").unlink()
    assert main(["figures", str(run)]) == 0  # redrawn from the run directory alone
    assert (run / "figures" / "collapse.png").is_file()
