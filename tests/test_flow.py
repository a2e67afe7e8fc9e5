"""Effective flow: gradients, monotone cost, conservation, GD ↔ flow on the clock s = η·k."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from gflow_jax.core import (
    AdaptedParameters,
    adapted_input_cost,
    adapted_truncate,
    general_input_cost_gradient,
    last_truncations,
    make_clusters,
    sort_data,
    threshold_gradient,
    truncation_map,
)
from gflow_jax.dynamics import (
    FlowProblem,
    SolverSettings,
    check_solution,
    closed_form_vector_field,
    gradient_descent,
    solve_flow,
    steps_per_interval,
    vector_field,
)

from .helpers import input_problem, random_orthogonal, sweep_problem


def _two_cluster_problem(mode="bias", M=3, L=2, seed=0):
    """Cluster-separated data, layers alternating truncation sides, targets beyond clusters."""
    data = make_clusters(
        jax.random.PRNGKey(seed), n_classes=2, n_per_class=15, dim=M, radius=0.5, separation=3.0
    )
    targets = jnp.array([[1.0] * M, [2.0] * M])[data.labels]
    signs = jnp.array([1.0 if ell % 2 == 0 else -1.0 for ell in range(L)])[:, None]
    d = signs * jnp.linspace(0.8, 1.3, M)[None, :]
    c = jnp.where(
        d > 0, jnp.quantile(data.x, 0.2, axis=0)[None], jnp.quantile(data.x, 0.8, axis=0)[None]
    )
    return input_problem(data.x, targets, mode), AdaptedParameters.from_thresholds(d, c)


@pytest.mark.parametrize("mode", ["bias", "joint"])
def test_autodiff_field_equals_closed_form(mode):
    """Three computations of the field agree: jax.grad of C_in, the closed form of
    docs/theory.md#gradient (masks over all points) and the sorted-interval form the solver
    uses."""
    problem, params = _two_cluster_problem(mode, M=4, L=3)
    # move along the flow a little so that several faces own points
    params = jax.tree.map(
        lambda v: v[-1], solve_flow(problem, params, jnp.array([0.0, 0.7])).params
    )
    autodiff = FlowProblem(problem.u, problem.targets, mode=mode, gradient="autodiff")
    auto = vector_field(0.0, params, autodiff)
    closed = closed_form_vector_field(0.0, params, problem)
    fast = vector_field(0.0, params, problem)
    assert problem.gradient == "sorted"
    assert float(jnp.max(jnp.abs(auto.b))) > 1e-3  # the field is not trivially zero
    for other in (closed, fast):
        np.testing.assert_allclose(other.b, auto.b, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(other.d, auto.d, rtol=1e-12, atol=1e-14)
    if mode == "bias":
        assert float(jnp.max(jnp.abs(auto.d))) == 0.0


@pytest.mark.parametrize("seed", range(40))
def test_sorted_gradient_equals_autodiff_with_ties(seed):
    """Random signs, data on a grid (ties) and thresholds on data values: the interval counts
    equal n_{ℓ,k} from the masks and the gradient equals jax.grad exactly."""
    k = jax.random.split(jax.random.PRNGKey(seed), 4)
    N, M, L = 30, 3, 4
    u = jnp.round(4 * jax.random.normal(k[0], (N, M))) / 4
    targets = jax.random.normal(k[1], (N, M))
    d = jnp.where(jax.random.bernoulli(k[2], 0.5, (L, M)), 1.3, -0.7)
    c = jnp.round(4 * jax.random.normal(k[3], (L, M))) / 4
    params = AdaptedParameters.from_thresholds(d, c)
    g, n = threshold_gradient(params.thresholds, d, sort_data(u, targets))
    _, hits = adapted_truncate(params, u)
    np.testing.assert_array_equal(n, last_truncations(hits).sum(0))
    g_auto = jax.grad(
        lambda cc: adapted_input_cost(AdaptedParameters.from_thresholds(d, cc), u, targets)
    )(params.thresholds)
    np.testing.assert_allclose(g, g_auto, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("seed", range(3))
def test_general_closed_form_gradient_matches_autodiff(seed):
    """∇_{b⁽ℓ⁾}C_in from the Π-matrix formula equals jax.grad for generic (oblique) weights."""
    L, M, N = 3, 3, 40
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    W_cum = jnp.eye(M)[None] + 0.4 * jax.random.normal(k1, (L, M, M))
    b_cum = 0.5 * jax.random.normal(k2, (L, M))
    x = jax.random.normal(k3, (N, M))
    targets = jax.random.normal(k4, (N, M))

    def cost(b):
        def one(xi):
            z = xi
            for ell in range(L):
                z = truncation_map(W_cum[ell], b[ell], z)
            return z

        return 0.5 * jnp.mean(jnp.sum((jax.vmap(one)(x) - targets) ** 2, axis=-1))

    auto = jax.grad(cost)(b_cum)
    closed = general_input_cost_gradient(W_cum, b_cum, x, targets)
    assert float(jnp.max(jnp.abs(auto))) > 1e-3
    np.testing.assert_allclose(closed, auto, rtol=1e-10, atol=1e-12)


def test_unconstrained_weights_leave_the_adapted_set():
    """At an adapted point the gradient in the full cumulative W⁽ℓ⁾ has off-diagonal parts that
    make W⁽ℓ⁾W⁽ℓ⁾ᵀ non-diagonal, while the adapted (d) gradient keeps it diagonal."""
    problem, params = _two_cluster_problem("joint", M=3, L=1)
    frame = random_orthogonal(jax.random.PRNGKey(3), 3)
    x = problem.u @ frame  # data in input coordinates: u = O x
    targets = problem.targets @ frame
    W = params.cumulative_weights(frame)[0]
    b = params.b[0]

    def cost(W):
        x_tilde = jax.vmap(lambda xi: truncation_map(W, b, xi))(x)
        return 0.5 * jnp.mean(jnp.sum((x_tilde - targets) ** 2, axis=-1))

    G = jax.grad(cost)(W)
    velocity = -(G @ W.T + W @ G.T)  # d/dε of (W − εG)(W − εG)ᵀ at ε = 0
    off = velocity - jnp.diag(jnp.diag(velocity))
    assert float(jnp.max(jnp.abs(off))) > 1e-3
    gd = vector_field(0.0, params, problem).d[0]  # adapted: W → (d + ε gd) O
    W_adapted = (params.d[0] + 1e-2 * gd)[:, None] * frame
    gram = W_adapted @ W_adapted.T
    np.testing.assert_allclose(gram - jnp.diag(jnp.diag(gram)), 0.0, atol=1e-12)


@pytest.mark.parametrize("mode", ["bias", "joint"])
def test_cost_non_increasing_along_flow(mode):
    problem, params = _two_cluster_problem(mode)
    sol = check_solution(solve_flow(problem, params, jnp.linspace(0, 30, 301)), SolverSettings())
    increments = np.diff(np.asarray(sol.loss))
    assert sol.loss[-1] < 1e-3 * sol.loss[0]
    assert np.all(increments <= 1e-12), increments.max()


def test_joint_flow_conserves_b2_plus_d2():
    problem, params = _two_cluster_problem("joint", M=3, L=3)
    settings = SolverSettings(rtol=1e-10, atol=1e-12)
    sol = check_solution(solve_flow(problem, params, jnp.linspace(0, 20, 41), settings), settings)
    invariant = sol.params.b**2 + sol.params.d**2
    assert float(jnp.max(jnp.abs(sol.params.d[-1] - params.d))) > 1e-2  # d really moved
    np.testing.assert_allclose(
        invariant, jnp.broadcast_to(invariant[0], invariant.shape), rtol=1e-8
    )


def test_bias_flow_matches_sweep_closed_form():
    """Sweep oracle (docs/theory.md#closed-forms): c(s) = ỹ + (c_a − ỹ)e^{−n(s−s_a)/(N d²)}
    between crossings."""
    problem, params = sweep_problem()
    xi = np.linspace(0.0, 1.0, 10)
    N, target = 25, 1.5
    ts = np.linspace(0.0, 60.0, 121)
    # closed form, event by event
    s_a, c_a, exact = 0.0, 0.35, []
    n = int(np.sum(xi < c_a))
    events = []
    while n < 10:
        delta = (N / n) * np.log((target - c_a) / (target - xi[n]))
        events.append(s_a + delta)
        s_a, c_a, n = s_a + delta, xi[n], n + 1
    events = np.array(events)
    n0 = int(np.sum(xi < 0.35))
    for s in ts:
        k = int(np.searchsorted(events, s))
        sa = 0.0 if k == 0 else events[k - 1]
        ca = 0.35 if k == 0 else xi[n0 + k - 1]
        exact.append(target + (ca - target) * np.exp(-(n0 + k) * (s - sa) / N))
    settings = SolverSettings(rtol=1e-10, atol=1e-12)
    sol = check_solution(solve_flow(problem, params, jnp.asarray(ts), settings), settings)
    np.testing.assert_allclose(sol.params.thresholds[:, 0, 0], exact, atol=1e-7)
    assert int(sol.num_rejected_steps) > 0  # the solver saw the jumps and reported them


def test_euler_flow_equals_optax_gd_to_rounding():
    """Fixed-step Euler with dt = η is full-batch optax.sgd(η), step for step."""
    problem, params = _two_cluster_problem("joint")
    eta = 0.05
    ts = jnp.linspace(0.0, 5.0, 11)
    settings = SolverSettings(solver="euler", dt0=eta, max_steps=1000)
    sol = check_solution(solve_flow(problem, params, ts, settings), settings)
    gd = gradient_descent(problem, params, ts, eta)
    np.testing.assert_allclose(gd.params.b, sol.params.b, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(gd.params.d, sol.params.d, rtol=1e-12, atol=1e-13)


def test_gd_converges_to_flow_first_order():
    """GD error against the flow is O(η) (sweep oracle, docs/theory.md#oracles). After the last
    crossing the error halves with η; the max over the run also carries the O(η) phase of each
    discrete crossing, so its order is read from a log-log fit over five halvings."""
    problem, params = sweep_problem()
    ts = jnp.linspace(0.0, 40.0, 41)
    settings = SolverSettings(rtol=1e-11, atol=1e-13)
    ref = check_solution(solve_flow(problem, params, ts, settings), settings).params.thresholds
    etas = np.array([0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625])
    final, worst = [], []
    for eta in etas:
        err = jnp.abs(gradient_descent(problem, params, ts, eta).params.thresholds - ref)
        final.append(float(err[-1].max()))
        worst.append(float(err.max()))
    ratios = np.array(final[:-1]) / np.array(final[1:])
    assert final[0] > 1e-8
    assert np.all((ratios > 1.6) & (ratios < 2.5)), (final, ratios)
    order = np.polyfit(np.log(etas), np.log(worst), 1)[0]
    assert 0.8 < order < 1.3, (worst, order)


def test_sgd_is_noisy_but_converges():
    problem, params = _two_cluster_problem("bias")
    ts = jnp.linspace(0.0, 30.0, 31)
    sgd = gradient_descent(problem, params, ts, 0.05, batch_size=5, key=jax.random.PRNGKey(0))
    gd = gradient_descent(problem, params, ts, 0.05)
    assert float(jnp.max(jnp.abs(sgd.params.b - gd.params.b))) > 1e-4  # really stochastic
    assert float(sgd.loss[-1]) < 1e-2 * float(sgd.loss[0])
    again = gradient_descent(problem, params, ts, 0.05, batch_size=5, key=jax.random.PRNGKey(0))
    np.testing.assert_array_equal(again.params.b, sgd.params.b)  # reproducible from the key


def test_new_step_size_does_not_recompile():
    from gflow_jax.dynamics import _descent as training

    problem, params = sweep_problem()
    ts = jnp.linspace(0.0, 2.0, 5)
    gradient_descent(problem, params, ts, 0.1)
    before = training._descend._cached._cache_size()
    gradient_descent(problem, params, ts, 0.05)
    gradient_descent(problem, params, ts, 0.025)
    assert training._descend._cached._cache_size() == before


def test_vmapped_solves_equal_single_solves():
    problem, params = sweep_problem()
    ts = jnp.linspace(0.0, 10.0, 11)
    c0 = jnp.array([0.2, 0.35, 0.55])
    batch = jax.vmap(lambda c: AdaptedParameters.from_thresholds(params.d, c[None, None]))(c0)
    sols = eqx.filter_vmap(lambda p: solve_flow(problem, p, ts))(batch)
    for i, c in enumerate(c0):
        single = solve_flow(problem, AdaptedParameters.from_thresholds(params.d, c[None, None]), ts)
        np.testing.assert_allclose(sols.params.thresholds[i], single.params.thresholds, atol=1e-9)


def test_failed_solve_is_reported():
    problem, params = _two_cluster_problem()
    settings = SolverSettings(max_steps=5)
    sol = solve_flow(problem, params, jnp.linspace(0, 10, 3), settings)
    assert not bool(sol.success)
    with pytest.raises(RuntimeError, match="max_steps"):
        check_solution(sol, settings)


def test_steps_per_interval_rejects_incommensurate_grid():
    assert list(steps_per_interval(np.linspace(0, 1, 5), 0.05)) == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="whole number"):
        steps_per_interval(np.linspace(0, 1, 5), 0.03)
    with pytest.raises(ValueError, match="positive"):
        steps_per_interval(np.linspace(0, 1, 5), -0.1)


# keep imports used (diffrax/optax are the peers these tests pin down)
_ = (diffrax, optax)


@pytest.mark.parametrize("mode", ["bias", "joint"])
def test_weighted_padding_equals_the_unpadded_problem(mode):
    """Padding rows of weight 0 (anywhere in the data, even inside the clusters) change nothing:
    same gradient (sorted, autodiff and closed form) and same solution, normalised by the real N.
    Non-uniform weights: sorted gradient equals jax.grad of the weighted cost."""
    problem, params0 = _two_cluster_problem(mode)
    n, M = problem.u.shape
    pad_u = jax.random.uniform(jax.random.PRNGKey(7), (9, M), minval=-2.0, maxval=5.0)
    u = jnp.concatenate([problem.u, pad_u])
    targets = jnp.concatenate([problem.targets, jnp.zeros((9, M))])
    weights = jnp.concatenate([jnp.ones(n), jnp.zeros(9)])
    padded = FlowProblem(u, targets, mode=mode, weights=weights)
    ref = problem.descent_direction(params0)
    for gradient in ("sorted", "autodiff"):
        p = FlowProblem(u, targets, mode=mode, weights=weights, gradient=gradient)
        np.testing.assert_allclose(p.descent_direction(params0).b, ref.b, rtol=1e-12, atol=1e-15)
    closed = closed_form_vector_field(0.0, params0, padded)
    np.testing.assert_allclose(closed.b, ref.b, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(padded.loss(params0), problem.loss(params0), rtol=1e-13)
    ts = jnp.linspace(0.0, 3.0, 4)
    euler = SolverSettings(solver="euler", dt0=0.01)  # same steps: only rounding may differ
    a = solve_flow(problem, params0, ts, euler)
    b = solve_flow(padded, params0, ts, euler)
    np.testing.assert_allclose(b.params.b, a.params.b, rtol=1e-11, atol=1e-13)

    w = jax.random.uniform(jax.random.PRNGKey(3), (n,), minval=0.0, maxval=3.0)
    weighted = FlowProblem(problem.u, problem.targets, mode=mode, weights=w)
    g_auto = jax.grad(weighted.loss)(params0)
    g_sorted = weighted.gradient_of_loss(params0)
    np.testing.assert_allclose(g_sorted.b, g_auto.b, rtol=1e-11, atol=1e-14)
    with pytest.raises(ValueError, match="weights"):
        FlowProblem(problem.u, problem.targets, weights=-w)


def test_new_solver_tolerance_does_not_recompile():
    """SolverSettings' float fields are arrays: a new rtol/atol/dt0 reuses the compiled solve."""
    problem, params = sweep_problem()
    ts = jnp.linspace(0.0, 2.0, 5)
    solve_flow(problem, params, ts, SolverSettings(rtol=1e-6))
    before = solve_flow._cached._cache_size()
    for rtol in (1e-7, 1e-9):
        solve_flow(problem, params, ts, SolverSettings(rtol=rtol, atol=rtol * 1e-2, dt0=0.01))
    assert solve_flow._cached._cache_size() == before


def test_solver_settings_from_config_section():
    """Every solver field of a [flow] section reaches SolverSettings (static and array fields)."""
    from pathlib import Path

    from gflow_jax.experiments.truncation import load_config

    toml = Path(__file__).resolve().parents[1] / "experiments" / "truncation.toml"
    fc = load_config(toml, ["flow.rtol=1e-7", "flow.solver='dopri5'"]).flow
    settings = SolverSettings.from_config(fc)
    assert float(settings.rtol) == 1e-7 and settings.solver == "dopri5"
    assert (float(settings.atol), float(settings.dt0)) == (fc.atol, fc.dt0)
    assert (settings.dtmin, settings.max_steps) == (fc.dtmin, fc.max_steps)
