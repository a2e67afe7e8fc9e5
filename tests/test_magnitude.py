"""Magnitude: exact oracles (docs/theory.md#oracles), properties, duplicates, conditioning, scipy.

Every expected value is a closed form or an independent dense solve (numpy/scipy), never an
output of our own code.
"""

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg as sla
from scipy.sparse.csgraph import minimum_spanning_tree
from scipy.spatial.distance import cdist

import gflow_jax
from gflow_jax.magnitude import (
    AdaptiveSettings,
    check_distance_matrix,
    convergence_scale,
    e_alpha,
    magnitude,
    magnitude_dimension,
    magnitude_dimension_profile,
    magnitude_from_distances,
    magnitude_function,
    magnitude_weights,
    pairwise_distances,
    positive_magnitude,
    solve_adaptive,
    spread,
)

ENGINES = ["cholesky", "adaptive"]
# the adaptive engine guarantees a residual ≤ rtol (weights to about κ·rtol): oracle tests that
# check weights to ~1e-13 ask it for a residual at the float64 floor
TIGHT = {"cholesky": {}, "adaptive": {"rtol": 1e-15}}


def dense_weights(D, t):
    """Reference weights by scipy's dense Cholesky solve of exp(−tD) w = 1."""
    Z = np.exp(-t * np.asarray(D))
    return sla.cho_solve(sla.cho_factor(Z), np.ones(Z.shape[0]))


def line_weights(x, t):
    """Exact weights of points x_1 < … < x_n on a line: ends 1/(1+e^{−t g}), interior
    (tanh(t g_{i−1}/2) + tanh(t g_i/2))/2 (the tridiagonal inverse of Z)."""
    g = np.diff(np.sort(x))
    h = np.tanh(t * g / 2)
    w = np.empty(x.size)
    w[0] = 1 / (1 + np.exp(-t * g[0]))
    w[-1] = 1 / (1 + np.exp(-t * g[-1]))
    w[1:-1] = (h[:-1] + h[1:]) / 2
    return w


def cloud(n, p, seed=0):
    return np.random.default_rng(seed).standard_normal((n, p))


# ---------------------------------------------------------------------------------------------
# exact oracles


@pytest.mark.parametrize("method", ENGINES)
def test_two_points(method):
    for t, d in [(1.0, 1.0), (0.3, 2.5), (4.0, 0.7)]:
        X = np.array([[0.0, 0.0], [d, 0.0]])
        m = magnitude(X, [t], method=method)
        np.testing.assert_allclose(m, [2 / (1 + math.exp(-t * d))], rtol=1e-14)
    np.testing.assert_allclose(magnitude(np.array([[0.0], [1.0]]), [1.0]), [1.46211716], atol=5e-9)


@pytest.mark.parametrize("method", ENGINES)
def test_equidistant_points(method):
    n = 5
    X = np.eye(n) / math.sqrt(2)  # mutual distance 1
    ts = np.array([0.1, 1.0, 3.0])
    r = magnitude_function(X, ts, method=method, **TIGHT[method])
    np.testing.assert_allclose(r.magnitude, n / (1 + (n - 1) * np.exp(-ts)), rtol=1e-13)
    np.testing.assert_allclose(r.magnitude[1], 2.02304838, atol=5e-9)
    # vertex-transitive: equal weights; spread equals magnitude
    np.testing.assert_allclose(r.weights, np.broadcast_to(r.magnitude / n, (n, 3)), rtol=1e-13)
    np.testing.assert_allclose(r.spread, r.magnitude, rtol=1e-13)


@pytest.mark.parametrize("method", ENGINES)
def test_points_on_a_line_exact_weights(method):
    x = np.cumsum(np.random.default_rng(1).uniform(0.1, 2.0, 12))
    ts = np.array([0.05, 0.7, 3.0])
    r = magnitude_function(x[:, None], ts, method=method, **TIGHT[method])
    g = np.diff(x)
    for k, t in enumerate(ts):
        np.testing.assert_allclose(r.magnitude[k], 1 + np.tanh(t * g / 2).sum(), rtol=1e-12)
        exact = line_weights(x, t)
        np.testing.assert_allclose(
            exact, dense_weights(np.abs(x[:, None] - x[None, :]), t), rtol=1e-9, atol=1e-12
        )  # the closed form is the dense solve
        np.testing.assert_allclose(r.weights[:, k], exact, rtol=1e-10, atol=1e-13)


def test_evenly_spaced_points():
    N = 11
    x = np.linspace(0.0, 1.0, N)[:, None]
    ts = np.array([0.5, 10.0, 200.0])
    exact = 1 + (N - 1) * np.tanh(ts / (2 * (N - 1)))
    np.testing.assert_allclose(magnitude(x, ts), exact, rtol=1e-13)
    np.testing.assert_allclose(magnitude(x, [10.0])[0], 5.62117157, atol=5e-9)


@pytest.mark.parametrize("method", ENGINES)
def test_l1_product(method):
    X, Y = cloud(6, 2, 2), cloud(5, 1, 3)
    XY = np.array([np.concatenate([x, y]) for x in X for y in Y])
    ts = np.array([0.2, 1.0, 5.0])
    lhs = magnitude(XY, ts, metric="cityblock", method=method)
    rhs = magnitude(X, ts, metric="cityblock") * magnitude(Y, ts, metric="cityblock")
    np.testing.assert_allclose(lhs, rhs, rtol=1e-11)


def test_dimension_profile_exact_derivative():
    """The profile t·wᵀ(D∘Z)w/Σw equals the derivative of the closed form on a line."""
    N = 101
    x = np.linspace(0.0, 1.0, N)[:, None]
    ts = np.array([1.0, 20.0, 180.0, 900.0])
    a = 2.0 * (N - 1)
    f = 1 + (N - 1) * np.tanh(ts / a)
    df = (N - 1) / a / np.cosh(ts / a) ** 2
    np.testing.assert_allclose(magnitude_dimension_profile(x, ts), ts * df / f, rtol=1e-9)


def test_dimension_1001_points():
    """Oracle (docs/theory.md#oracles): 1001 evenly spaced points on [0, 1], profile max 0.98366
    near t ≈ 180."""
    N = 1001
    x = np.linspace(0.0, 1.0, N)[:, None]
    res = magnitude_dimension(x, np.geomspace(100.0, 320.0, 5), refine=True)
    # closed form of the maximum of t f'(t)/f(t), f = 1 + (N−1) tanh(t/(2(N−1)))
    u = np.geomspace(100, 320, 200001)
    a = 2.0 * (N - 1)
    prof = u * (N - 1) / a / np.cosh(u / a) ** 2 / (1 + (N - 1) * np.tanh(u / a))
    assert abs(res.max - prof.max()) < 1e-8
    assert abs(res.max - 0.98366) < 5e-6
    assert abs(res.argmax_scale - u[prof.argmax()]) < 1.0
    assert 170 < res.argmax_scale < 190
    # log-log slope over the stated window lies below the profile maximum
    assert res.window == (100.0, 320.0)
    assert 0.9 < res.slope < res.max


# ---------------------------------------------------------------------------------------------
# properties


def test_isometry_invariance():
    X = cloud(40, 3, 4)
    q, _ = np.linalg.qr(np.random.default_rng(5).standard_normal((3, 3)))
    Y = X @ q.T + np.array([3.0, -1.0, 7.0])
    ts = np.geomspace(0.1, 10, 6)
    np.testing.assert_allclose(magnitude(X, ts), magnitude(Y, ts), rtol=1e-11)


def test_subset_monotone_and_lower_bound():
    X = cloud(50, 4, 6)
    ts = np.geomspace(0.05, 20, 8)
    big = np.asarray(magnitude(X, ts))
    small = np.asarray(magnitude(X[:30], ts))
    assert np.all(small <= big + 1e-12)
    D = cdist(X, X)
    lower = np.array([X.shape[0] ** 2 / np.exp(-t * D).sum() for t in ts])
    assert np.all(big >= lower - 1e-12)
    assert np.all((big >= 1 - 1e-12) & (big <= X.shape[0] + 1e-12))


def test_scaling():
    X = cloud(30, 2, 7)
    ts = np.geomspace(0.1, 10, 5)
    s = 3.7
    np.testing.assert_allclose(magnitude(s * X, ts), magnitude(X, s * ts), rtol=1e-11)


# ---------------------------------------------------------------------------------------------
# numerics: large distances, duplicates, conditioning, fallback, scipy


def test_large_distances_do_not_underflow():
    """Distances of 10⁴ at t = 10⁻⁴: exp(−D)**t would give 0; exp(−tD) is e^{−1}."""
    x = np.array([0.0, 1e4, 2.5e4, 4e4])
    t = 1e-4
    exact = 1 + np.tanh(t * np.diff(x) / 2).sum()
    np.testing.assert_allclose(magnitude(x[:, None], [t]), [exact], rtol=1e-13)
    r = magnitude_function(x[:, None], [1.0])
    np.testing.assert_allclose(r.magnitude, [4.0], rtol=1e-15)


@pytest.mark.parametrize("method", ENGINES)
def test_duplicates_merged_with_aligned_weights(method):
    base = cloud(20, 3, 8)
    X = np.concatenate([base, base[[3, 3, 7]], base[:1]])
    perm = np.random.default_rng(9).permutation(X.shape[0])
    X = X[perm]
    ts = np.geomspace(0.1, 10, 4)
    r = magnitude_function(X, ts, method=method)
    assert r.n_points == 24 and r.n_unique == 20
    groups = sorted(sorted(g) for g in r.duplicate_groups())
    expected = {}
    for row, i in enumerate(perm):
        expected.setdefault(i % 20 if i < 20 else [3, 3, 7, 0][i - 20], []).append(row)
    assert groups == sorted(sorted(g) for g in expected.values() if len(g) > 1)
    D = cdist(base, base)
    for k, t in enumerate(ts):
        w_ref = dense_weights(D, t)
        np.testing.assert_allclose(r.magnitude[k], w_ref.sum(), rtol=1e-11)
        for rows in expected.values():
            src = perm[rows[0]] if perm[rows[0]] < 20 else [3, 3, 7, 0][perm[rows[0]] - 20]
            np.testing.assert_allclose(r.weights[rows, k], w_ref[src] / len(rows), rtol=1e-10)
        # the split weights solve the input's own (singular) system Z w = 1
        Z = np.exp(-t * cdist(X, X))
        np.testing.assert_allclose(Z @ np.asarray(r.weights[:, k]), 1.0, rtol=1e-10)
    assert np.all(np.asarray(r.residual) < 1e-12)


def test_core_vmap_jit_batch_with_duplicates():
    """Batch of clouds collapsing onto few points, in one compiled vmapped computation."""
    key = jax.random.PRNGKey(0)
    ts = jnp.geomspace(0.2, 5.0, 4)
    clouds = []
    for b in range(3):
        base = np.asarray(jax.random.normal(jax.random.fold_in(key, b), (6, 2)))
        clouds.append(base[np.arange(12) % (6 - b)])  # 6 − b distinct points, repeated
    Ds = jnp.stack([pairwise_distances(c) for c in clouds])
    batched = jax.jit(jax.vmap(lambda D, s: magnitude_from_distances(D, s), in_axes=(0, None)))
    out = batched(Ds, ts)
    for b, c in enumerate(clouds):
        u = c[: 6 - b]
        ref = [dense_weights(cdist(u, u), float(t)).sum() for t in ts]
        np.testing.assert_allclose(out.magnitude[b], ref, rtol=1e-11)
        assert int(out.n_unique[b]) == 6 - b
        assert np.all(np.asarray(out.solver[b]) == 0)
    # new scale values of the same length do not recompile
    before = batched._cache_size()
    batched(Ds, ts * 1.5)
    assert batched._cache_size() == before


@pytest.mark.parametrize("method", ENGINES)
def test_agrees_with_scipy_dense_solve(method):
    X = cloud(80, 5, 10)
    ts = np.geomspace(0.02, 20, 7)
    r = magnitude_function(X, ts, method=method)
    D = cdist(X, X)
    for k, t in enumerate(ts):
        Z = np.exp(-t * D)
        w = sla.solve(Z, np.ones(80), assume_a="pos")
        np.testing.assert_allclose(r.weights[:, k], w, rtol=1e-8, atol=1e-10 * np.abs(w).max())
        np.testing.assert_allclose(r.magnitude[k], w.sum(), rtol=1e-10)
        np.testing.assert_allclose(r.positive_magnitude[k], np.maximum(w, 0).sum(), rtol=1e-10)
        np.testing.assert_allclose(r.spread[k], (1 / Z.sum(1)).sum(), rtol=1e-12)
        np.testing.assert_allclose(r.derivative[k], w @ ((D * Z) @ w), rtol=1e-8)
        assert r.residual[k] < 1e-12
        cond = np.linalg.cond(Z)
        assert cond / 20 < r.condition[k] < cond * 20


def test_adaptive_iterative_paths_against_scipy():
    """Force CG and neighbour-preconditioned CG (float64 and float32 factors); every result
    meets rtol and matches scipy."""
    X = cloud(300, 6, 11)
    D = cdist(X, X)
    ts = np.geomspace(0.05, 8, 12)
    cases = (
        (True, False, {"cg"}),
        (False, False, {"pcg", "cholesky"}),
        (False, True, {"pcg", "cholesky32"}),
    )
    for allow_cg, mixed, used in cases:
        settings = AdaptiveSettings(
            rtol=1e-13, budget=1e6, cg_switch=1e9, allow_cg=allow_cg, mixed_precision=mixed
        )
        out = solve_adaptive(D, ts, settings)
        assert set(out["solver"]) == used
        for k, t in enumerate(ts):
            Z = np.exp(-t * D)
            w = dense_weights(D, t)
            np.testing.assert_allclose(out["weights"][:, k], w, rtol=1e-9, atol=1e-11)
            assert np.linalg.norm(Z @ out["weights"][:, k] - 1) / np.sqrt(300) <= 1e-13
            assert out["residual"][k] <= 1e-13
    # with a tiny budget CG gives up and every scale is solved directly
    out = solve_adaptive(D, ts, AdaptiveSettings(budget=1e-9, allow_pcg=False))
    assert all(s in ("cholesky32", "cholesky", "cg") for s in out["solver"])


def test_adaptive_lower_triangle_paths():
    """The engine builds only the lower triangle of Z (row blocks of 64: m = 257 leaves a
    ragged last block). One factor three scales down preconditions the scales above it and all
    those below it; weights, derivative wᵀ(D∘Z)w and spread match dense scipy. An indefinite Z
    (K_{3,2} at t = 0.2) falls back to LU on the full matrix rebuilt from the triangle."""
    X = cloud(257, 5, 3)
    D = cdist(X, X)
    ts = np.geomspace(0.05, 2, 9)[::-1]
    for mixed, name, bits in ((False, "cholesky", 64), (True, "cholesky32", 32)):
        settings = AdaptiveSettings(
            rtol=1e-13, budget=1e6, pcg_switch=1e9, allow_cg=False, lead=3, mixed_precision=mixed
        )
        out = solve_adaptive(D, ts, settings)
        assert out["solver"] == ["pcg"] * 3 + [name] + ["pcg"] * 5
        np.testing.assert_array_equal(out["precision"], bits)
        pcg = [k for k, s in enumerate(out["solver"]) if s == "pcg"]
        np.testing.assert_array_equal(out["preconditioner"][pcg], ts[3])
        for k, t in enumerate(ts):
            Z = np.exp(-t * D)
            w = dense_weights(D, t)
            np.testing.assert_allclose(out["weights"][:, k], w, rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(out["derivative"][k], w @ ((D * Z) @ w), rtol=1e-10)
            np.testing.assert_allclose(out["spread"][k], (1 / Z.sum(1)).sum(), rtol=1e-13)
            assert np.linalg.norm(Z @ out["weights"][:, k] - 1) / np.sqrt(257) <= 1e-13
    D5 = np.full((5, 5), 2.0)
    D5[:3, 3:] = D5[3:, :3] = 1.0
    np.fill_diagonal(D5, 0.0)
    out = solve_adaptive(D5, np.array([0.2]), AdaptiveSettings(allow_cg=False))
    q = np.exp(-0.2)
    assert out["solver"] == ["lu"]
    assert out["fallback"][0].startswith("float32 Cholesky failed")
    np.testing.assert_allclose(
        out["magnitude"][0], (5 - 7 * q) / ((1 + q) * (1 - 2 * q**2)), rtol=1e-12
    )


def test_non_negative_type_falls_back_to_lu():
    """K_{3,2} (graph metric) is not of negative type: Z is indefinite for t < log √2. Leinster's
    closed form |tK_{3,2}| = (5 − 7q)/((1 + q)(1 − 2q²)), q = e^{−t}."""
    D = np.full((5, 5), 2.0)
    D[:3, 3:] = D[3:, :3] = 1.0
    np.fill_diagonal(D, 0.0)
    ts = np.array([0.2, 1.0])
    q = np.exp(-ts)
    exact = (5 - 7 * q) / ((1 + q) * (1 - 2 * q**2))
    r = magnitude_function(D, ts, metric="precomputed", method="cholesky")
    np.testing.assert_allclose(r.magnitude, exact, rtol=1e-12)
    assert r.solver == ("lu", "cholesky")
    assert r.residual[0] < 1e-13
    # the adaptive engine may solve it by CG (which needs no definiteness when it converges):
    # whatever it uses, the residual is checked
    r = magnitude_function(D, ts, metric="precomputed", method="adaptive")
    np.testing.assert_allclose(r.magnitude, exact, rtol=1e-12)
    assert np.all(np.asarray(r.residual) < 1e-12)


def test_near_singular_is_reported():
    X = np.array([[0.0], [1e-9], [1.0], [2.0]])
    with pytest.warns(RuntimeWarning, match="near-singular"):
        r = magnitude_function(X, [1e-3, 1.0])
    assert r.condition[0] > 1e12
    assert r.n_unique == 4  # close, not equal: not merged
    # exact duplicates are merged instead, silently and exactly
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = magnitude_function(np.array([[0.0], [0.0], [1.0]]), [1.0])
    np.testing.assert_allclose(r.magnitude, [2 / (1 + math.exp(-1))], rtol=1e-14)


def test_condition_estimate_in_core():
    D = cdist(cloud(60, 2, 12), cloud(60, 2, 12))
    ts = np.array([0.01, 0.3, 10.0])
    r = magnitude_from_distances(jnp.asarray(D), jnp.asarray(ts))
    for k, t in enumerate(ts):
        cond = np.linalg.cond(np.exp(-t * D))
        assert cond / 20 < r.condition[k] <= cond * 1.0001 * 60


# ---------------------------------------------------------------------------------------------
# distances, other measures, validation


@pytest.mark.parametrize("metric", ["euclidean", "cityblock", "chebyshev"])
def test_pairwise_distances_against_scipy(metric):
    X, Y = cloud(37, 9, 13), cloud(23, 9, 14)
    np.testing.assert_allclose(
        pairwise_distances(X, Y, metric=metric, chunk_size=5), cdist(X, Y, metric), rtol=1e-12
    )
    D = np.asarray(pairwise_distances(X, metric=metric, chunk_size=4))
    np.testing.assert_allclose(D, cdist(X, X, metric), rtol=1e-12, atol=1e-12)
    assert np.all(D == D.T) and np.all(np.diag(D) == 0)


def test_high_dimensional_close_points_are_exact():
    """Trajectory-like cloud: norm 10³, steps 10⁻⁶, p = 5000. The Gram identity alone would
    lose every digit; duplicates must come out at distance exactly 0."""
    rng = np.random.default_rng(15)
    p = 5000
    start = 1e3 * rng.standard_normal(p) / math.sqrt(p)
    X = start + 1e-6 * np.cumsum(rng.standard_normal((30, p)), axis=0)
    X = np.concatenate([X, X[4:5]])
    D = np.asarray(pairwise_distances(X, chunk_size=7))
    ref = np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(-1))
    np.testing.assert_allclose(D, ref, rtol=1e-12)
    assert D[4, 30] == 0.0 and D[30, 4] == 0.0


def test_e_alpha_against_scipy_mst():
    X = cloud(40, 3, 16)
    mst = minimum_spanning_tree(cdist(X, X)).toarray()
    edges = mst[mst > 0]
    for alpha in (0.5, 1.0, 2.0):
        np.testing.assert_allclose(e_alpha(X, alpha), (edges**alpha).sum(), rtol=1e-12)


def test_convergence_scale_two_points():
    d = 2.5
    X = np.array([[0.0], [d]])
    # 2/(1 + e^{−td}) = 0.95·2  ⇔  e^{−td} = 1/19
    assert abs(convergence_scale(X) - math.log(19) / d) < 1e-9
    t = convergence_scale(cloud(30, 2, 17), fraction=0.9)
    np.testing.assert_allclose(magnitude(cloud(30, 2, 17), [t]), [27.0], rtol=1e-8)


def test_wrappers_and_top_level_exports():
    X = cloud(15, 2, 18)
    ts = [0.5, 2.0]
    r = magnitude_function(X, ts)
    np.testing.assert_array_equal(magnitude_weights(X, ts), r.weights)
    np.testing.assert_array_equal(positive_magnitude(X, ts), r.positive_magnitude)
    np.testing.assert_array_equal(spread(X, ts), r.spread)
    assert gflow_jax.magnitude is not None
    for name in ("magnitude", "magnitude_function", "magnitude_from_distances", "e_alpha"):
        assert hasattr(gflow_jax, name)
    assert "t" in r.table() and r.scale_convention.startswith("Z_ij = exp(-t d_ij)")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: magnitude(np.array([[0.0], [np.nan]]), [1.0]), "NaN"),
        (lambda: magnitude(np.zeros((3, 2)) + np.arange(3)[:, None], [0.0]), "positive"),
        (lambda: magnitude(np.zeros((3, 2)) + np.arange(3)[:, None], [-1.0, 1.0]), "positive"),
        (lambda: magnitude(np.arange(4.0), [1.0]), r"X must have shape \(n, p\)"),
        (lambda: magnitude(np.ones((2, 3)), [1.0], metric="precomputed"), r"shape \(n, n\)"),
        (lambda: magnitude(np.array([[0, 1.0], [2, 0]]), [1.0], metric="precomputed"), "symm"),
        (lambda: magnitude(np.array([[0, -1.0], [-1, 0]]), [1.0], metric="precomputed"), "negat"),
        (lambda: magnitude(np.ones((2, 2)), [1.0], metric="cosine"), "unknown metric"),
        (lambda: magnitude(np.ones((2, 2)), [1.0], method="magic"), "unknown method"),
    ],
)
def test_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_distance_matrix_check_over_several_blocks():
    """The check reads D in pairs of mirrored tiles: a defect anywhere, above or below the
    diagonal, in any tile, is found; the result is (D + Dᵀ)/2, asymmetry within 1e-12 relative
    accepted."""
    n = 1100  # nine tiles a side
    x = np.random.default_rng(0).normal(size=(n, 3))
    D = cdist(x, x)
    np.testing.assert_array_equal(np.asarray(check_distance_matrix(D)), D)
    skew = D.copy()
    skew[5, n - 3] *= 1 + 1e-14
    np.testing.assert_array_equal(np.asarray(check_distance_matrix(skew)), 0.5 * (skew + skew.T))
    for i, j, value, match in [
        (5, n - 3, D[5, n - 3] * (1 + 1e-9), "not symmetric"),
        (n - 2, 7, D[n - 2, 7] + 1e-3, "not symmetric"),
        (n - 1, 4, np.nan, "NaN or inf"),
        (4, n - 1, np.inf, "NaN or inf"),
        (3, n - 1, -1.0, "negative entries"),
        (n - 1, 3, -1.0, "negative entries"),
        (n - 1, n - 1, 1e-300, "zero diagonal"),
    ]:
        bad = D.copy()
        bad[i, j] = value
        with pytest.raises(ValueError, match=match):
            check_distance_matrix(bad)
