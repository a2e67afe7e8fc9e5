"""Neural-collapse measures: ideal values on a constructed collapse, independent NumPy oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gflow_jax.diagnostics import class_means, nc1_input, papyan_collapse

from .helpers import random_orthogonal


def _simplex_etf(Q: int, M: int, key) -> jnp.ndarray:
    """Centred class means forming a simplex ETF in R^M: rows of √(Q/(Q−1))(I − 11ᵀ/Q) Uᵀ with
    U ``(M, Q)`` orthonormal columns (unit norms, pairwise cosine −1/(Q−1))."""
    U = random_orthogonal(key, M)[:, :Q]
    return jnp.sqrt(Q / (Q - 1)) * (jnp.eye(Q) - 1.0 / Q) @ U.T


def _collapsed(Q, M, n_per_class=7, seed=0, scale=2.5, w_scale=0.7):
    """Features equal to their class means μ_G + scale·ETF_c; classifier W = w_scale·ETF with the
    bias that cancels W μ_G, so the network's argmax is the nearest class mean."""
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    etf = _simplex_etf(Q, M, k1)
    mu_g = jax.random.normal(k2, (M,))
    labels = jnp.repeat(jnp.arange(Q), n_per_class)
    features = mu_g[None] + scale * etf[labels]
    W = w_scale * etf
    b = -W @ mu_g
    return features, labels, W, b


def _nc_numpy(h, labels, Q, W, b):
    """Papyan's definitions written out with loops (the oracle)."""
    h, labels, W, b = map(np.asarray, (h, labels, W, b))
    N, M = h.shape
    mu = np.stack([h[labels == c].mean(0) for c in range(Q)])
    mu_g = mu.mean(0)
    Mbar = mu - mu_g
    sw = np.zeros((M, M))
    for i in range(N):
        r = h[i] - mu[labels[i]]
        sw += np.outer(r, r) / N
    sb = sum(np.outer(m, m) for m in Mbar) / Q
    nc1 = np.trace(sw @ np.linalg.pinv(sb)) / Q
    norms = np.linalg.norm(Mbar, axis=1)
    cos = [Mbar[c] @ Mbar[d] / (norms[c] * norms[d]) for c in range(Q) for d in range(Q) if c != d]
    wn = np.linalg.norm(W, axis=1)
    nc3 = np.linalg.norm(W / np.linalg.norm(W) - Mbar / np.linalg.norm(Mbar))
    agree = np.mean(
        [
            np.argmin([np.linalg.norm(h[i] - mu[c]) for c in range(Q)]) == np.argmax(W @ h[i] + b)
            for i in range(N)
        ]
    )
    return {
        "nc1": nc1,
        "nc2_equinorm": norms.std() / norms.mean(),
        "nc2_equinorm_w": wn.std() / wn.mean(),
        "nc2_equiangle": np.std(cos),
        "nc2_maxangle": np.mean(np.abs(np.array(cos) + 1 / (Q - 1))),
        "nc3": nc3,
        "nc4": agree,
    }


@pytest.mark.parametrize(("Q", "M"), [(3, 4), (4, 6)])
def test_collapsed_configuration_has_ideal_values(Q, M):
    h, labels, W, b = _collapsed(Q, M)
    nc = papyan_collapse(h, labels, Q, W, b)
    for name in ("nc1", "nc2_equinorm", "nc2_equinorm_w", "nc2_equiangle", "nc2_maxangle", "nc3"):
        assert abs(float(getattr(nc, name))) < 1e-10, (name, getattr(nc, name))
    assert float(nc.nc4) == 1.0
    # the construction really is a simplex ETF: cosines −1/(Q−1), not merely equal
    means = class_means(h, labels, Q)
    centred = np.asarray(means) - np.asarray(means).mean(0)
    gram = centred @ centred.T / np.outer(*2 * [np.linalg.norm(centred, axis=1)])
    np.testing.assert_allclose(gram[~np.eye(Q, dtype=bool)], -1 / (Q - 1), atol=1e-12)


@pytest.mark.parametrize("what", ["spread", "means", "classifier"])
def test_non_collapsed_configurations_are_detected(what):
    """Break one ingredient at a time; the measures that see it move away from ideal."""
    Q, M = 3, 4
    h, labels, W, b = _collapsed(Q, M)
    key = jax.random.PRNGKey(5)
    if what == "spread":
        h = h + 0.3 * jax.random.normal(key, h.shape)
        nc = papyan_collapse(h, labels, Q, W, b)
        assert float(nc.nc1) > 1e-2
    elif what == "means":
        h = h * jnp.where(labels == 0, 2.0, 1.0)[:, None]  # one class mean further out
        nc = papyan_collapse(h, labels, Q, W, b)
        assert float(nc.nc2_equinorm) > 1e-2
        assert float(nc.nc2_maxangle) > 1e-2
        assert float(nc.nc3) > 1e-2
        assert abs(float(nc.nc1)) < 1e-10  # still no within-class spread
    else:
        W = W + 0.5 * jax.random.normal(key, W.shape)
        nc = papyan_collapse(h, labels, Q, W, jnp.zeros(Q))
        assert float(nc.nc3) > 1e-2
        assert float(nc.nc2_equinorm_w) > 1e-2
        assert float(nc.nc2_equinorm) < 1e-10


@pytest.mark.parametrize("seed", range(3))
def test_measures_equal_numpy_definitions(seed):
    Q, M, N = 3, 4, 21  # the shapes of the other tests: one compilation
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(seed), 4)
    labels = jnp.arange(N) % Q
    h = jax.random.normal(k1, (N, M)) + 2.0 * jax.random.normal(k2, (Q, M))[labels]
    W = jax.random.normal(k3, (Q, M))
    b = jax.random.normal(k4, (Q,))
    nc = papyan_collapse(h, labels, Q, W, b)
    expected = _nc_numpy(h, labels, Q, W, b)
    for name, value in expected.items():
        np.testing.assert_allclose(float(getattr(nc, name)), value, rtol=1e-10, err_msg=name)
    assert 0.0 < expected["nc4"] < 1.0  # the random case is informative


def test_nc1_two_classes_on_a_line():
    """Q = 2, M = 1: Σ_B = (Δ/2)², Σ_W the pooled variance, NC1 = Σ_W / Σ_B / 2."""
    h = jnp.array([[0.0], [1.0], [2.0], [5.0], [6.0], [10.0]])
    labels = jnp.array([0, 0, 0, 1, 1, 1])
    nc = papyan_collapse(h, labels, 2, jnp.array([[-1.0], [1.0]]), jnp.zeros(2))
    mu0, mu1 = 1.0, 7.0
    sigma_w = ((0 - 1) ** 2 + 0 + (2 - 1) ** 2 + (5 - 7) ** 2 + (6 - 7) ** 2 + (10 - 7) ** 2) / 6
    sigma_b = ((mu1 - mu0) / 2) ** 2
    np.testing.assert_allclose(float(nc.nc1), sigma_w / sigma_b / 2, rtol=1e-12)


def test_nc1_invariant_under_similarity_of_features():
    """tr(Σ_W Σ_B⁺) is unchanged by h → a·R h + t (R orthogonal); NC3 too when W → W Rᵀ."""
    Q, M, N = 3, 4, 21
    k1, k2, k3, k4 = jax.random.split(jax.random.PRNGKey(11), 4)
    labels = jnp.arange(N) % Q
    h = jax.random.normal(k1, (N, M)) + 3.0 * jax.random.normal(k2, (Q, M))[labels]
    W = jax.random.normal(k3, (Q, M))
    R = random_orthogonal(k4, M)
    a = papyan_collapse(h, labels, Q, W, jnp.zeros(Q))
    b = papyan_collapse(3.0 * h @ R.T + 1.5, labels, Q, W @ R.T, jnp.zeros(Q))
    for name in ("nc1", "nc2_equinorm", "nc2_equiangle", "nc2_maxangle", "nc3"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-9, err_msg=name)


def test_input_space_nc1_and_class_means_unchanged():
    x = jnp.array([[0.0, 0.0], [2.0, 0.0], [5.0, 5.0], [5.0, 7.0]])
    labels = jnp.array([0, 0, 1, 1])
    np.testing.assert_allclose(class_means(x, labels, 2), [[1.0, 0.0], [5.0, 6.0]])
    np.testing.assert_allclose(float(nc1_input(x, labels, 2)), 1.0)


def test_coinciding_class_means_give_nan_not_zero():
    """A dead network maps every point to one feature: Σ_W = Σ_B = 0 and NC1 is undefined."""
    Q, M = 3, 4
    h, labels, W, b = _collapsed(Q, M)
    nc = papyan_collapse(jnp.zeros_like(h), labels, Q, W, b)
    assert np.isnan(float(nc.nc1)) and np.isnan(float(nc.nc2_maxangle))


def test_one_class_is_rejected():
    with pytest.raises(ValueError, match="at least 2 classes"):
        papyan_collapse(jnp.zeros((3, 2)), jnp.zeros(3, int), 1, jnp.ones((1, 2)), jnp.zeros(1))
