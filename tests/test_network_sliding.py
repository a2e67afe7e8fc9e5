"""Filippov sliding of the full-network gradient flow (docs/theory.md#sliding, the full network):
the worked example of one hidden unit against scipy's solution of the hand-derived field (the
reduced smooth system with α eliminated while the pair is held), the plain solve chattering on
it, a transversal crossing equal to the plain solve, the balance quantities along the sliding
solution, GD's O(η) chatter, the event bound, a fuzz of tiny two-layer networks, bad input."""

import time

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.integrate import solve_ivp

from gflow_jax.core import ReLUNetwork
from gflow_jax.dynamics import (
    NetworkProblem,
    SolverSettings,
    balance_quantities,
    check_solution,
    network_descent,
    solve_network_flow,
)

# the worked example of docs/theory.md#sliding (the full network): one hidden unit (M = Q = 1),
# N = 2 points; the unit is active at point 0 and z₁ = −w + b at point 1 starts below 0 (points
# are indexed from 0 here, from 1 in the theory: its z₂ is z₁ here)
X = np.array([2.0, -1.0])
THETA0 = (1.0, 0.9, 1.0, 0.0)  # w, b, v (output weight), c (output bias)
SLIDING_Y = (0.5, -2.0)  # point 1's target far below: once active it pulls z₁ back down
CROSSING_Y = (1.0, 3.0)  # point 1's target above: once active it pushes z₁ further up
# one set of static settings, so one compiled solve, for every event solve of the example
EVENTS = SolverSettings(rtol=1e-11, atol=1e-13, events=True, max_events=2)
TS = jnp.linspace(0.0, 2.0, 21)
CROSS, STICK, UNSTICK = 0, 1, 5


def _problem(targets) -> NetworkProblem:
    return NetworkProblem(jnp.asarray(X)[:, None], jnp.asarray(targets, float)[:, None])


def _net(theta=THETA0) -> ReLUNetwork:
    w, b, v, c = theta
    return ReLUNetwork(
        jnp.full((1, 1, 1), w), jnp.full((1, 1), b), jnp.full((1, 1), v), jnp.full((1,), c)
    )


def _theta(params: ReLUNetwork) -> np.ndarray:
    """(T, 4): w, b, v, c of the saves."""
    leaves = (params.weights, params.biases, params.out_weight, params.out_bias)
    return np.stack([np.asarray(a).reshape(a.shape[0]) for a in leaves], axis=1)


def _field(theta, y, slope_1):
    """−∇C of C = (1/2N) Σ_i (v s_i z_i + c − y_i)², z_i = w x_i + b, derived by hand (NumPy,
    independent of the library): slope s₀ = 1 at point 0 and ``slope_1`` at point 1."""
    w, b, v, c = theta
    z = w * X + b
    s = np.array([1.0, slope_1])
    r = v * s * z + c - np.asarray(y)
    return -np.array([v * r @ (s * X), v * r @ s, r @ (s * z), r.sum()]) / X.size


def _z1_rate(theta, y, slope_1):
    dw, db, _, _ = _field(theta, y, slope_1)
    return dw * X[1] + db


def _alpha(theta, y):
    """The α rule: dz₁/ds is affine in point 1's slope; α makes it 0."""
    v_minus, v_plus = _z1_rate(theta, y, 0.0), _z1_rate(theta, y, 1.0)
    return v_minus / (v_minus - v_plus)


def _reference(y, ts):
    """Three phases by scipy: point 1 inactive until z₁ = −w + b reaches 0 (an event of
    solve_ivp), the reduced system with α eliminated until α reaches 0 or 1 (another event),
    then the side it leaves to. Returns θ at ``ts``, the stick and release times, α at the stick
    and at the saves in between."""
    tol = {"method": "DOP853", "rtol": 1e-13, "atol": 1e-14, "dense_output": True}

    def reach(t, th):
        return -th[0] + th[1]

    def leave(t, th):
        a = _alpha(th, y)
        return min(a, 1.0 - a)

    reach.terminal, reach.direction, leave.terminal = True, 1, True
    end = ts[-1]
    first = solve_ivp(lambda t, th: _field(th, y, 0.0), (0, end), THETA0, events=reach, **tol)
    t_stick = first.t_events[0][0]
    second = solve_ivp(
        lambda t, th: _field(th, y, _alpha(th, y)), (t_stick, end), first.y[:, -1], events=leave,
        **tol,
    )  # fmt: skip
    t_release = second.t_events[0][0]
    side = float(_alpha(second.y[:, -1], y) > 0.5)
    third = solve_ivp(lambda t, th: _field(th, y, side), (t_release, end), second.y[:, -1], **tol)
    phases = [(t_stick, first), (t_release, second), (np.inf, third)]
    out = np.array([next(p.sol(t) for e, p in phases if t <= e) for t in ts])
    between = (ts > t_stick) & (ts < t_release)
    alphas = np.array([_alpha(th, y) for th in out[between]])
    return out, t_stick, t_release, _alpha(first.y[:, -1], y), alphas


@pytest.fixture(scope="module")
def sliding():
    """The event-located solve of the sliding example (one compile, shared by its tests)."""
    return check_solution(solve_network_flow(_problem(SLIDING_Y), _net(), TS, EVENTS), EVENTS)


def test_sliding_example_sticks_follows_the_reduced_system_and_is_released(sliding):
    """z₁ reaches 0 at s ≈ 0.162 where v₋ > 0 > v₊: it is held there (α ≈ 0.253) until α
    reaches 0 at s ≈ 0.609, and then leaves to the inactive side. The solve follows scipy's
    three-phase solution to 1e-8 and holds z₁ at 0 to 1e-10."""
    ts = np.asarray(TS)
    ref, t_stick, t_release, alpha, alphas = _reference(SLIDING_Y, ts)
    assert 0.1 < t_stick < t_release - 0.3 < ts[-1] - 1.0, (t_stick, t_release)
    assert np.all((alphas > 0) & (alphas < 1)) and alphas.size >= 3
    sol = sliding
    theta = _theta(sol.params)
    np.testing.assert_allclose(theta, ref, rtol=0, atol=1e-8)
    z1 = theta[:, 1] - theta[:, 0]  # w·(−1) + b
    held = (ts > t_stick) & (ts < t_release)
    assert np.max(np.abs(z1[held])) < 1e-10
    assert np.all(z1[ts < t_stick] < -1e-3) and np.all(z1[ts > t_release] < 0)
    assert np.min(z1[ts > t_release]) < -1e-2  # it left
    events = sol.events
    assert int(events.count) == 2, np.asarray(events.kind)
    np.testing.assert_array_equal(events.kind[:2], [STICK, UNSTICK])
    np.testing.assert_array_equal(events.point[:2], [1, 1])
    np.testing.assert_array_equal(events.layer[:2], [0, 0])
    np.testing.assert_array_equal(events.coord[:2], [0, 0])
    np.testing.assert_allclose(events.time[:2], [t_stick, t_release], rtol=0, atol=1e-9)
    np.testing.assert_allclose(events.value[:2], [alpha, 0.0], rtol=0, atol=1e-9)


def test_plain_solve_chatters_on_the_sliding_example_and_check_solution_suggests_events(sliding):
    """Without events the steps shrink to nothing at z₁ = 0 and max_steps is spent (a reported
    failure whose message points to events); with dtmin it "succeeds" by forcing steps across
    the kink, z₁ chattering around 0 instead of being held at it."""
    settings = SolverSettings(rtol=1e-11, atol=1e-13, max_steps=4000)
    sol = solve_network_flow(_problem(SLIDING_Y), _net(), TS, settings)
    assert not bool(sol.success)
    assert int(sol.num_steps) == settings.max_steps
    with pytest.raises(RuntimeError, match="flow.events = true") as info:
        check_solution(sol, settings)
    assert "pre-activation slides" in str(info.value) and "\n" not in str(info.value)
    forced = SolverSettings(rtol=1e-11, atol=1e-13, dtmin=1e-3, max_steps=20_000)
    sol = check_solution(solve_network_flow(_problem(SLIDING_Y), _net(), TS, forced), forced)
    located = sliding
    ts, (_, t_stick, t_release, _, _) = np.asarray(TS), _reference(SLIDING_Y, np.asarray(TS))
    held = (ts > t_stick) & (ts < t_release)
    forced_z1 = np.diff(_theta(sol.params)[:, :2], axis=1)[held, 0]
    located_z1 = np.diff(_theta(located.params)[:, :2], axis=1)[held, 0]
    assert np.max(np.abs(located_z1)) < 1e-10 < 1e-6 < np.max(np.abs(forced_z1)), forced_z1


def test_transversal_crossing_equals_the_plain_solve():
    """Point 1 turns on at s ≈ 0.197 and stays on: one crossing event, and the event solve equals
    the plain solve (and scipy's solution of the hand-derived field) at tight tolerances."""
    problem = _problem(CROSSING_Y)
    tight = SolverSettings(rtol=1e-12, atol=1e-14)
    located = SolverSettings(rtol=1e-12, atol=1e-14, events=True, max_events=2)
    sol = check_solution(solve_network_flow(problem, _net(), TS, located), located)
    plain = check_solution(solve_network_flow(problem, _net(), TS, tight), tight)
    assert int(sol.events.count) == 1
    assert (int(sol.events.kind[0]), float(sol.events.value[0])) == (CROSS, 1.0)
    theta = _theta(sol.params)
    z1 = theta[:, 1] - theta[:, 0]
    assert z1[0] < 0 < z1[-1] and np.all(np.diff(np.sign(z1)) >= 0)  # it crossed, once
    np.testing.assert_allclose(theta, _theta(plain.params), rtol=0, atol=1e-9)
    ref = solve_ivp(
        lambda t, th: _field(th, CROSSING_Y, float(th[1] - th[0] > 0)), (0.0, 2.0), THETA0,
        t_eval=np.asarray(TS), rtol=1e-13, atol=1e-14, method="DOP853",
    )  # fmt: skip
    np.testing.assert_allclose(theta, ref.y.T, rtol=0, atol=1e-7)


def test_balance_quantities_are_conserved_while_sliding(sliding):
    """Δ = w² + b² − v² along the sliding solution (docs/theory.md#sliding: every one-sided field
    conserves it, so does their convex combination) while the parameters move by O(1)."""
    sol = sliding
    delta = np.asarray(balance_quantities(sol.params))[:, 0, 0]
    w, b, v, _ = THETA0
    np.testing.assert_allclose(delta, w**2 + b**2 - v**2, rtol=0, atol=1e-10)
    theta = _theta(sol.params)
    assert np.max(np.abs(theta[-1] - theta[0])) > 0.3


def test_gradient_descent_chatters_around_zero_with_amplitude_of_order_eta():
    """GD on the sliding example, 200 steps from s = 0.3 (inside the sliding interval): z₁
    changes sign again and again within a band that halves with η."""
    problem = _problem(SLIDING_Y)
    _, t_stick, t_release, _, _ = _reference(SLIDING_Y, np.asarray(TS))
    t_a, window, amplitude = 0.3, 200, {}
    for eta in (1e-3, 5e-4):
        assert t_stick + 0.05 < t_a and t_a + window * eta < t_release - 0.05
        ts = jnp.concatenate([jnp.zeros(1), t_a + eta * jnp.arange(window)])
        params = network_descent(problem, _net(), ts, eta).params
        z1 = np.asarray(params.biases[1:, 0, 0] - params.weights[1:, 0, 0, 0])
        assert np.sum(np.diff(np.sign(z1)) != 0) > window // 10  # it chatters across 0
        amplitude[eta] = np.max(np.abs(z1))
    assert 0 < amplitude[1e-3] < 2e-3, amplitude
    assert 1.6 < amplitude[1e-3] / amplitude[5e-4] < 2.5, amplitude


def test_event_bound_is_a_reported_failure_naming_the_unit_and_point():
    """Point 1 turns on, point 0 sticks and is released again: three events, one more than
    ``max_events = 2``; the solve stops there and check_solution names the pair."""
    theta0, targets = (0.6, 0.45, 2.85, 2.25), (-1.5, 1.85)
    sol = solve_network_flow(_problem(targets), _net(theta0), TS, EVENTS)
    assert not bool(sol.success)
    np.testing.assert_array_equal(sol.events.kind, [CROSS, STICK, UNSTICK])
    np.testing.assert_array_equal(sol.events.point, [1, 0, 0])
    with pytest.raises(RuntimeError, match="max_events = 2") as info:
        check_solution(sol, EVENTS)
    message = str(info.value)
    assert "unstick" in message and "unit 0 of hidden layer 0 at training point 0" in message
    assert "\n" not in message


def _random_instance(seed: int):
    """A tiny network (L = 2, M = 2, Q = 1) and N = 3 points with independent targets."""
    rng = np.random.default_rng([seed, 7])
    L, M, N = 2, 2, 3
    net = ReLUNetwork(
        jnp.asarray(np.eye(M)[None] + 0.6 * rng.normal(size=(L, M, M))),
        jnp.asarray(0.5 * rng.normal(size=(L, M))),
        jnp.asarray(rng.normal(size=(1, M))),
        jnp.asarray(rng.normal(size=1)),
    )
    x, y = rng.normal(size=(N, M)), 2.0 * rng.normal(size=(N, 1))
    return NetworkProblem(jnp.asarray(x), jnp.asarray(y)), net


def test_fuzz_every_event_solve_terminates_and_reports():
    """20 random two-layer networks (a held pair's α then solves a polynomial system): every
    event-located solve ends within a fixed time, either succeeding, with the balance
    quantities conserved and every held pre-activation at 0, or failing with a reported bound
    (more than ``max_events`` events, named by check_solution); some of them slide."""
    settings = SolverSettings(rtol=1e-9, atol=1e-11, events=True, max_events=5, max_steps=4000)
    ts = jnp.linspace(0.0, 3.0, 4)
    started, outcomes, sticks = time.perf_counter(), [], 0
    for seed in range(20):
        problem, net = _random_instance(seed)
        sol = solve_network_flow(problem, net, ts, settings)
        kinds = np.asarray(sol.events.kind)
        sticks += int(np.any(kinds == STICK))
        if bool(sol.success):
            outcomes.append("success")
            delta = np.asarray(balance_quantities(sol.params))
            assert np.max(np.abs(delta - delta[0])) < 1e-7, seed
            continue
        with pytest.raises(RuntimeError) as info:
            check_solution(sol, settings)
        bound = "max_events = 5" in str(info.value)
        outcomes.append("bound" if bound else "failure")
        if bound:
            assert "training point" in str(info.value) and int(sol.events.count) == 6
    elapsed = time.perf_counter() - started
    assert elapsed < 240, elapsed
    assert outcomes.count("success") >= 16 and "bound" in outcomes, outcomes
    assert sticks >= 5, sticks


def test_bad_input_is_one_line():
    problem = _problem(SLIDING_Y)
    with pytest.raises(ValueError, match="settings.solver") as info:
        solve_network_flow(problem, _net(), TS, SolverSettings(solver="exact"))
    assert "\n" not in str(info.value)
    wrong = NetworkProblem(jnp.zeros((2, 2)), jnp.zeros((2, 1)))
    with pytest.raises(ValueError, match="problem.x") as info:
        solve_network_flow(wrong, _net(), TS, EVENTS)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="save_ts") as info:
        solve_network_flow(problem, _net(), TS[:, None], EVENTS)
    assert "\n" not in str(info.value)


def _two_layer_rates(theta, x, y, s1, s2):
    """dz/ds of both layers' pre-activations of a two-layer, one-unit network (z₁ = w₁x + b₁,
    h₁ = s₁z₁, z₂ = w₂h₁ + b₂, output v s₂z₂ + c) under the descent field with slopes s₁, s₂
    per point, derived by hand (NumPy)."""
    w1, b1, w2, b2, v, c = theta
    z1 = w1 * x + b1
    h1 = s1 * z1
    z2 = w2 * h1 + b2
    r = v * s2 * z2 + c - y
    d2 = r * v * s2 / x.size  # ∂C/∂z₂ per point
    d1 = d2 * w2 * s1  # ∂C/∂z₁ per point
    dw1, db1, dw2, db2 = -(d1 @ x), -d1.sum(), -(d2 @ h1), -d2.sum()
    dz1 = dw1 * x + db1
    return dz1, dw2 * h1 + w2 * s1 * dz1 + db2


def test_alpha_of_pairs_held_in_two_layers_solves_the_polynomial_system():
    """Point 1 held at 0 in both layers of a two-layer, one-unit network: dz/ds of the two pairs
    is polynomial in (α₁, α₂) (point 1's backward pass multiplies α₁α₂). By hand: the second
    layer's rate is ∂_s b₂ ∝ r₀ + r₁α₂ once the first is 0, so α₂ = −r₀/r₁ (r₁ = c − y₁), and
    then the first layer's ∝ r₀[(x₀x₁ + 1) − α₁(x₁² + 1)], so α₁ = (x₀x₁ + 1)/(x₁² + 1). The
    library's Newton solve (the α system the event solve evaluates at every step; the fuzz
    runs it inside solves) finds that root and zeroes the rates of both pairs."""
    from scipy.optimize import fsolve

    from gflow_jax.dynamics import _network_sliding as sliding

    x, y = np.array([0.5, -1.0]), np.array([-0.4, 1.7])
    w1, w2, v, c = 0.7, 0.75, 0.4, 0.15
    theta = (w1, -w1 * x[1], w2, 0.0, v, c)  # z₁ = z₂ = 0 at point 1; both > 0 at point 0
    net = ReLUNetwork(
        jnp.array([[[w1]], [[w2]]]), jnp.array([[theta[1]], [0.0]]), jnp.full((1, 1), v),
        jnp.full((1,), c),
    )  # fmt: skip
    problem = NetworkProblem(jnp.asarray(x)[:, None], jnp.asarray(y)[:, None])
    held = np.zeros((2, 2, 1), bool)
    held[:, 1, 0] = True
    pattern = sliding._Pattern(jnp.asarray(~held), jnp.asarray(held))
    slots = sliding._slots(pattern.held, 4)
    alpha = np.asarray(sliding._alpha(net, problem, pattern, slots))

    r0 = v * w2 * w1 * (x[0] - x[1]) + c - y[0]
    closed = [(x[0] * x[1] + 1) / (x[1] ** 2 + 1), -r0 / (c - y[1])]
    assert 0 < closed[0] < 1 and 0 < closed[1] < 1, closed
    np.testing.assert_allclose(alpha, [*closed, 0.0, 0.0], rtol=0, atol=1e-12)

    def rates(a):
        dz1, dz2 = _two_layer_rates(theta, x, y, np.array([1.0, a[0]]), np.array([1.0, a[1]]))
        return [dz1[1], dz2[1]]

    np.testing.assert_allclose(fsolve(rates, [0.5, 0.5], xtol=1e-14), closed, atol=1e-10)
    corners = [rates([a1, a2])[0] for a1 in (0.0, 1.0) for a2 in (0.0, 1.0)]
    assert abs(corners[0] - corners[1] - corners[2] + corners[3]) > 0.1, corners  # α₁α₂ term
    library = np.asarray(sliding._rates(net, problem, sliding._slopes(pattern, slots, alpha)))
    np.testing.assert_allclose(library[:, 1, 0], 0.0, atol=1e-14)


@pytest.mark.slow
def test_vmapped_event_solves_equal_the_solves_one_by_one():
    """Four random two-layer networks (some of them slide) solved in one vmapped event-located
    solve: every member's saves, events and outcome equal its own solve's. Slow (a minute: the
    vmapped solve compiles for itself); the fast suite checks where_needed, the mechanism that
    keeps its skips under vmap, in tests/test_sweep.py."""
    import jax

    settings = SolverSettings(rtol=1e-9, atol=1e-11, events=True, max_events=5, max_steps=4000)
    ts = jnp.linspace(0.0, 3.0, 4)
    instances = [_random_instance(seed) for seed in range(4)]
    singles = [solve_network_flow(p, n, ts, settings) for p, n in instances]
    problems, nets = zip(*instances, strict=True)
    stacked = [jax.tree.map(lambda *a: jnp.stack(a), *parts) for parts in (problems, nets)]
    batch = jax.vmap(lambda p, n: solve_network_flow(p, n, ts, settings))(*stacked)
    sticks = 0
    for i, one in enumerate(singles):
        member = jax.tree.map(lambda a, i=i: a[i], batch)
        assert bool(member.success) == bool(one.success), i
        np.testing.assert_allclose(member.params.biases, one.params.biases, rtol=0, atol=1e-12)
        np.testing.assert_array_equal(member.events.kind, one.events.kind)
        np.testing.assert_allclose(member.events.time, one.events.time, rtol=1e-12)
        sticks += int(np.any(np.asarray(one.events.kind) == STICK))
    assert sticks >= 1, sticks
