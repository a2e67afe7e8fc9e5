"""The CPU magnitude engine (docs/theory.md#magnitude-numerics): mixed precision against an
independent float64 Cholesky solve (scipy), the float32 fallbacks and how they are reported, the
host duplicate merge, the engine rule shared with the many-clouds path, the per-phase profile."""

import numpy as np
import pytest
import scipy.linalg as sla
from scipy.spatial.distance import cdist

import gflow_jax.magnitude._adaptive as adaptive
import gflow_jax.magnitude._api as api
import gflow_jax.magnitude._clouds as clouds
from gflow_jax.magnitude import (
    AdaptiveSettings,
    _host,
    cloud_magnitudes,
    duplicate_groups,
    magnitude_function,
    solve_adaptive,
)
from gflow_jax.magnitude._host import duplicate_groups as host_duplicate_groups

# every scale factorised: the mixed-precision path at each scale (no CG, no neighbours)
DIRECT = dict(allow_cg=False, allow_pcg=False, single_max_condition=np.inf, budget=1e6)


def near_pairs(m=150, p=3, gap=1e-5, seed=0):
    """m random points and a copy of each displaced by ~gap: Z is ill-conditioned at small t
    (κ ≈ 1e7 at t = 1, ≈ 7e8 at t = 0.1, where float32 Cholesky fails) and benign at large t."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, p))
    return np.concatenate([X, X + gap * rng.standard_normal((m, p))])


def reference(D, t):
    """Z and the weights by scipy's float64 Cholesky (LAPACK dpotrf/dpotrs)."""
    Z = np.exp(-t * D)
    return Z, sla.cho_solve(sla.cho_factor(Z), np.ones(D.shape[0]))


def check_against_reference(D, ts, out, rtol=1e-12):
    for k, t in enumerate(ts):
        Z, w = reference(D, t)
        mine = out["weights"][:, k]
        assert abs(out["magnitude"][k] - w.sum()) <= rtol * abs(w.sum()), (t, out["solver"][k])
        np.testing.assert_allclose(out["derivative"][k], w @ ((D * Z) @ w), rtol=1e-9)
        # the residual is recomputed here, independently of the engine's own report
        assert np.linalg.norm(Z @ mine - 1) / np.sqrt(D.shape[0]) <= 1e-12
        assert out["residual"][k] <= 1e-12


def test_mixed_precision_equals_float64_cholesky_well_and_ill_conditioned():
    D = cdist(near_pairs(), near_pairs())
    ts = np.geomspace(1.0, 1e4, 6)
    kappa = [np.linalg.cond(np.exp(-t * D)) for t in (ts[0], ts[-1])]
    assert kappa[0] > 1e6 and kappa[1] < 1e3  # both regimes are covered
    out = solve_adaptive(D, ts, AdaptiveSettings(**DIRECT))
    assert out["solver"] == ["cholesky32"] * 6
    np.testing.assert_array_equal(out["precision"], 32)
    assert out["fallback"] == [""] * 6
    check_against_reference(D, ts, out)
    # the default schedule (CG, neighbours, float32 factors while κ allows) agrees as well
    check_against_reference(D, ts, solve_adaptive(D, ts))


def test_float32_failure_falls_back_to_float64_and_says_so():
    X = near_pairs()
    D = cdist(X, X)
    ts = np.array([1e3, 1.0, 0.1, 0.01])
    out = solve_adaptive(D, ts, AdaptiveSettings(**DIRECT))
    assert out["solver"] == ["cholesky32", "cholesky32", "cholesky", "cholesky"]
    np.testing.assert_array_equal(out["precision"], [32, 32, 64, 64])
    assert out["fallback"][:2] == ["", ""]
    assert out["fallback"][2] == "float32 Cholesky failed (not positive definite in float32)"
    assert out["fallback"][3].startswith("float64: float32 abandoned at t = 0.1 (float32 Chol")
    check_against_reference(D, ts, out, rtol=1e-11)
    # the default threshold on the latest condition estimate (≈ 1e7 at t = 1) stops float32
    # before it is tried at t = 0.1
    settings = AdaptiveSettings(**{**DIRECT, "single_max_condition": 1e6})
    out = solve_adaptive(D, ts, settings)
    assert out["solver"] == ["cholesky32", "cholesky32", "cholesky", "cholesky"]
    assert out["fallback"][2].startswith("condition estimate")
    # a float32 factor that cannot refine within its budget (4 iterations; t = 0.3, κ ≈ 8e7,
    # needs 9) is abandoned as well
    out = solve_adaptive(D, [0.3], AdaptiveSettings(**{**DIRECT, "budget": 1e-12}))
    assert out["solver"] == ["cholesky"]
    assert out["fallback"][0].startswith("float32 factor as preconditioner: residual")
    assert out["fallback"][0].endswith("after 4 iterations")
    check_against_reference(D, [0.3], out)


def test_magnitude_function_reports_the_engine_per_scale():
    X = near_pairs(60, 3, 1e-3, 1)
    ts = np.geomspace(0.3, 30, 5)
    r = magnitude_function(X, ts, method="adaptive")
    assert set(r.solver) <= {"cg", "pcg", "cholesky32", "cholesky"}
    D = cdist(X, X)
    for k, t in enumerate(ts):
        _, w = reference(D, t)
        np.testing.assert_allclose(r.magnitude[k], w.sum(), rtol=1e-12)


def test_adaptive_path_compiles_no_duplicate_search(monkeypatch):
    """The CPU engine merges duplicates on the host: the jitted search is never called."""

    def forbidden(*args, **kwargs):
        raise AssertionError("the JAX duplicate search ran on the CPU engine's path")

    monkeypatch.setattr(api, "_groups", forbidden)
    X = np.concatenate([near_pairs(30, 2, 1e-2), near_pairs(30, 2, 1e-2)[:5]])
    r = magnitude_function(X, [0.5, 5.0], method="adaptive")
    assert r.n_unique == 60 and r.n_points == 65


@pytest.mark.parametrize("tol", [0.0, 0.05, 0.3])
def test_host_duplicate_groups_match_the_core(tol):
    rng = np.random.default_rng(4)
    X = rng.integers(0, 4, size=(80, 2)) + rng.uniform(0, 0.1, size=(80, 2)) * (tol > 0)
    D = cdist(X, X)
    mine = host_duplicate_groups(D, tol)
    core = [np.asarray(a) for a in duplicate_groups(D, tol)]
    assert mine[0].sum() < 80  # there are groups to merge
    for a, b in zip(mine, core, strict=True):
        np.testing.assert_array_equal(a, b)


def test_many_clouds_use_the_cpu_engine_above_the_threshold(monkeypatch):
    """Clouds with at least ADAPTIVE_FROM distinct points go through solve_adaptive (the rule
    is lowered here to keep the test small); results match scipy on the distinct points."""
    calls = []

    def counted(D, scales, *args):
        calls.append(D.shape[0])
        return solve_adaptive(D, scales, *args)

    monkeypatch.setattr(adaptive, "ADAPTIVE_FROM", 40)
    monkeypatch.setattr(clouds, "solve_adaptive", counted)
    rng = np.random.default_rng(2)
    small = rng.standard_normal((30, 3))
    big = rng.standard_normal((50, 3))
    big[45:] = big[:5]  # 5 exact duplicates: 45 distinct points
    X = np.zeros((2, 50, 3))
    X[0, :30], X[1] = small, big
    valid = np.zeros((2, 50), bool)
    valid[0, :30] = valid[1] = True
    ts = np.array([0.2, 2.0, 20.0])
    r = cloud_magnitudes(X, ts, valid=valid)
    assert calls == [45]
    np.testing.assert_array_equal(r.n_unique, [30, 45])
    np.testing.assert_array_equal(r.solver, 0)
    for c, pts in enumerate((small, big[:45])):
        D = cdist(pts, pts)
        for k, t in enumerate(ts):
            _, w = reference(D, t)
            np.testing.assert_allclose(r.magnitude[c, k], w.sum(), rtol=1e-12)
        np.testing.assert_allclose(r.diameter[c], D.max(), rtol=1e-13)
    assert np.all(np.asarray(r.residual) <= 1e-12)


def test_profile_accounts_for_the_phases():
    X = near_pairs(100, 4, 1e-2)
    D = cdist(X, X)
    out = solve_adaptive(D, np.geomspace(0.1, 10, 8))
    assert tuple(out["profile"]) == adaptive.PHASES
    assert all(v >= 0 for v in out["profile"].values())
    assert out["profile"]["build"] > 0 and out["profile"]["iterate"] > 0


def test_float32_products_with_reliable_updates_reach_float64_accuracy():
    """CG whose products are float32 (recomputing the float64 residual each time it fell by
    1e-3) reaches the float64 tolerance with a fraction of the float64 products."""
    X = near_pairs(150, 4, 1e-2, 3)
    D = cdist(X, X)
    Z, w_ref = reference(D, 2.0)
    Zl, Z32 = np.zeros_like(Z), np.zeros(Z.shape, np.float32)
    _host.build_lower(D, 2.0, Zl, Z32)
    b = np.ones(D.shape[0])
    calls = []

    def product(v):
        calls.append(1)
        return _host.symv(Zl, v)

    identity = lambda r: r  # noqa: E731
    w, k, ok, _, _ = _host.cg(
        product, b, b, identity, 1e-13, 500, None, lambda v: _host.symv32(Z32, v), 1e-3
    )
    assert ok and np.linalg.norm(Z @ w - b) / np.sqrt(b.size) <= 1e-12
    assert len(calls) < k / 3  # most products were float32
    np.testing.assert_allclose(w.sum(), w_ref.sum(), rtol=1e-12)
    # the engine with and without float32 products: the same magnitudes
    ts = np.geomspace(0.3, 30, 6)
    one = solve_adaptive(D, ts, AdaptiveSettings(single_products=True))
    two = solve_adaptive(D, ts, AdaptiveSettings(single_products=False))
    np.testing.assert_allclose(one["magnitude"], two["magnitude"], rtol=1e-12)
    assert np.all(one["residual"] <= 1e-12)


def test_build_shares_rows_among_threads_exactly():
    """The fused build: Z within 1 ulp of NumPy's exp on the lower triangle (nothing written
    above it), its float32 copy the rounding of Z, the row sums, the product with a vector and
    the derivative of the previous Z equal to dense NumPy, and the same Z from one or two
    threads."""
    X = near_pairs(100, 3, 1e-2, 5)
    D = cdist(X, X)
    m = D.shape[0]
    w = np.random.default_rng(0).standard_normal(m)
    one, two = np.zeros_like(D), np.zeros_like(D)
    one32, two32 = np.zeros(D.shape, np.float32), np.zeros(D.shape, np.float32)
    rs1, rs2, y1, y2 = np.zeros(m), np.zeros(m), np.zeros(m), np.zeros(m)
    x = np.random.default_rng(1).standard_normal(m)
    _host.build_lower(D, 0.7, one, one32)
    _host.build_lower(D, 0.7, two, two32)
    d1 = _host.build_lower(D, 1.3, one, one32, w_old=w, threads=1, row_sums=rs1, x=x, product=y1)
    d2 = _host.build_lower(D, 1.3, two, two32, w_old=w, threads=2, row_sums=rs2, x=x, product=y2)
    np.testing.assert_array_equal(one, two)
    np.testing.assert_array_equal(one32, two32)
    np.testing.assert_allclose(rs1, rs2, rtol=1e-15)
    np.testing.assert_allclose(y1, y2, rtol=1e-13, atol=1e-13 * np.abs(y1).max())
    Z = np.exp(-1.3 * D)
    lower = np.tril(np.ones((m, m), bool))
    assert np.all(np.abs(one - Z)[lower] <= np.spacing(Z)[lower])
    assert np.all(one[~lower] == 0) and np.all(one32[~lower] == 0)
    np.testing.assert_array_equal(one32[lower], one[lower].astype(np.float32))
    np.testing.assert_allclose(rs1, Z.sum(axis=1), rtol=1e-14)
    np.testing.assert_allclose(y1, Z @ x, rtol=1e-13, atol=1e-13 * np.abs(Z @ x).max())
    np.testing.assert_allclose(_host.symv(one, x), Z @ x, rtol=1e-13, atol=1e-13 * np.abs(y1).max())
    Z_old = np.exp(-0.7 * D)
    np.testing.assert_allclose([d1, d2], w @ ((D * Z_old) @ w), rtol=1e-13)
    np.testing.assert_allclose(_host.derivative(D, one, w), w @ ((D * Z) @ w), rtol=1e-13)


def test_a_solve_without_products_leaves_the_iteration_clock_alone():
    """At a scale where the warm start is already the answer (Z = I to rounding) and the build
    gave the initial residual, CG takes no step and no product: it must not record a
    near-zero cost per iteration, or the cost model would keep plain CG running on badly
    conditioned scales below (a K = 5000 trajectory took 38 s instead of 7 so)."""
    X = near_pairs(60, 3, 1.0, 2)
    D = cdist(X, X)
    run = adaptive._Run(D, np.array([1e4]), AdaptiveSettings())
    solve = run.iterate(0, None, run.b.copy(), 50)
    assert solve.ok and solve.iterations == 0
    assert run.clock.iteration[0] == []


def test_fused_exponential_within_one_ulp_of_exact():
    """The pass's exponential against 40-digit decimal arithmetic (≤ 1 ulp, on ln2-spaced
    breakpoints, the subnormal range and beyond the underflow) and against NumPy on 10⁵ random
    arguments."""
    import decimal

    from gflow_jax.magnitude._similarity_pass import exp_array

    rng = np.random.default_rng(1)
    edges = np.array([0.0, -1e-300, -5e-324, -np.log(2) / 2, -np.log(2), -700.0, -708.39])
    edges = np.concatenate([edges, [-708.4, -709.0, -744.4, -745.1, -745.2, -746.0, -1e4, -1e300]])
    x = np.concatenate([edges, -rng.uniform(0, 40, 600), -rng.uniform(700, 746, 200)])
    out = np.empty_like(x)
    exp_array(x, out)
    decimal.getcontext().prec = 40
    for xi, yi in zip(x, out, strict=True):
        exact = decimal.Decimal(float(xi)).exp()
        assert abs(exact - decimal.Decimal(float(yi))) <= decimal.Decimal(np.spacing(yi)), xi
    y = -rng.exponential(5.0, 100_000)
    got = np.empty_like(y)
    exp_array(y, got)
    assert np.all(np.abs(got - np.exp(y)) <= np.spacing(np.exp(y)))
    special = np.array([np.nan, -np.inf, -0.0])
    exp_array(special, out := np.empty(3))
    assert np.isnan(out[0]) and out[1] == 0.0 and out[2] == 1.0  # a NaN distance stays NaN


@pytest.mark.parametrize("k", [1, 2, 57, 600])
def test_ritz_extremes_equal_the_dense_eigenvalues(k):
    """The extreme Ritz values of a CG run (the engine's condition estimate) by bisection equal
    the extremes of all eigenvalues of the dense Lanczos tridiagonal (to rounding relative to
    the largest: bisection's accuracy)."""
    from gflow_jax.magnitude._host import lanczos_tridiagonal, tridiagonal_extremes

    rng = np.random.default_rng(k)
    alphas, betas = rng.uniform(0.1, 3.0, k), rng.uniform(0.0, 2.0, k)
    diag, off = lanczos_tridiagonal(alphas, betas)
    theta = np.linalg.eigvalsh(np.diag(diag) + np.diag(off, 1) + np.diag(off, -1))
    lo, hi = tridiagonal_extremes(list(alphas), list(betas))
    np.testing.assert_allclose([lo, hi], [theta[0], theta[-1]], rtol=1e-12, atol=1e-13 * theta[-1])
