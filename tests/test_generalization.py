"""Kendall τ_b against scipy, granulated coefficients checked by hand, the loss pseudometric."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from gflow_jax.generalization import granulated_kendall, kendall_tau, loss_pseudometric

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
    with pytest.raises(ValueError, match="equal lengths"):
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
    with pytest.raises(ValueError, match="factor 'lr' has 2 values"):
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
    with pytest.raises(ValueError, match="K iterates, n examples"):
        loss_pseudometric(jnp.ones(4))
    with pytest.raises(ValueError, match="n = 0"):
        loss_pseudometric(jnp.ones((4, 0)))
