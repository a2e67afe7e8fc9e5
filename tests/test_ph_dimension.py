"""The PH⁰ dimension from MST lengths of subsamples (docs/theory.md#ph-dimension)."""

import numpy as np
import pytest

from gflow_jax.diagnostics import loss_pseudometric, mst_lengths, ph_dimension, trajectory_measures
from gflow_jax.magnitude import e_alpha, pairwise_distances


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_uniform_samples_of_a_segment_square_and_cube(dim):
    X = np.random.default_rng(dim).uniform(size=(1000, dim))
    r = ph_dimension(X, seed=1)  # Birdal et al.: alpha = 1, n = 200, 250, ..., 1000
    assert r.dimension == pytest.approx(dim, rel=0.10)
    assert r.sizes.tolist() == list(range(200, 1001, 50)) and r.e_alpha.shape == (17, 1)
    assert r.slope == pytest.approx(1 - 1 / r.dimension)


def test_a_square_embedded_in_more_dimensions_is_still_two_dimensional():
    rng = np.random.default_rng(7)
    Q, _ = np.linalg.qr(rng.normal(size=(10, 2)))
    X = rng.uniform(size=(1000, 2)) @ Q.T  # a flat square in R^10
    assert ph_dimension(X, seed=0, n_repeats=2).dimension == pytest.approx(2, rel=0.10)


def test_precomputed_metric_equals_euclidean_on_the_same_points():
    X = np.random.default_rng(0).normal(size=(600, 4))
    kw = {"min_points": 100, "max_points": 600, "step": 100, "n_repeats": 2, "seed": 3}
    a = ph_dimension(X, **kw)
    b = ph_dimension(pairwise_distances(X), metric="precomputed", **kw)
    np.testing.assert_allclose(a.e_alpha, b.e_alpha, rtol=1e-10)
    assert a.dimension == pytest.approx(b.dimension, rel=1e-10)


def test_mst_lengths_match_prim_and_count_duplicates_as_zero_edges():
    X = np.random.default_rng(1).normal(size=(80, 3))
    D = np.asarray(pairwise_distances(X))
    assert np.sum(mst_lengths(D)) == pytest.approx(e_alpha(X), rel=1e-12)
    # a duplicate point: one extra edge of length 0, the rest of the tree unchanged
    Xd = np.vstack([X, X[:1]])
    edges = mst_lengths(np.asarray(pairwise_distances(Xd)))
    assert edges.size == 80 and edges[0] == 0.0
    assert np.sum(edges) == pytest.approx(np.sum(mst_lengths(D)), rel=1e-12)


def test_scale_invariance_and_alpha():
    X = np.random.default_rng(2).uniform(size=(500, 2))
    kw = {"min_points": 100, "max_points": 500, "step": 50}
    a = ph_dimension(X, **kw)
    assert ph_dimension(1e3 * X, **kw).dimension == pytest.approx(a.dimension, rel=1e-10)
    half = ph_dimension(X, alpha=0.5, **kw)
    assert half.dimension == pytest.approx(2, rel=0.15) and half.alpha == 0.5


def test_ph_dimension_of_a_loss_pseudometric_with_ties():
    # rho_S of iterates whose loss vectors repeat: zero distances are edges of length 0
    rng = np.random.default_rng(3)
    losses = rng.exponential(size=(300, 20))
    losses[150:] = losses[:150]
    r = ph_dimension(loss_pseudometric(losses), metric="precomputed", min_points=50, step=25)
    assert np.isfinite(r.dimension) and r.dimension > 0


def test_errors():
    X = np.zeros((100, 2))
    with pytest.raises(ValueError, match="fewer than two subsample sizes"):
        ph_dimension(X)  # 100 points < min_points = 200
    with pytest.raises(ValueError, match="alpha"):
        ph_dimension(X, alpha=0.0, min_points=10, max_points=50)
    with pytest.raises(ValueError, match="min_points"):
        ph_dimension(X, min_points=1)


def test_trajectory_measures_carry_the_ph_dimension():
    X = np.random.default_rng(4).uniform(size=(400, 2))
    D = pairwise_distances(X)
    m = trajectory_measures(D, n_scales=6, ph_sizes=(100, 400, 50))
    ref = ph_dimension(D, metric="precomputed", min_points=100, max_points=400, step=50)
    assert m.values["ph_dim"] == ref.dimension
    assert set(m.seconds) == {"magnitude", "e_alpha", "ph_dim"} and m.engine == "cholesky"
    small = trajectory_measures(D[:50, :50], n_scales=6)  # too small for 200..1000
    assert np.isnan(small.values["ph_dim"]) and any("ph_dim" in w for w in small.warnings)
