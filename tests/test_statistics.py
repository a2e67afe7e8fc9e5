"""Kendall τ-a and τ-b by hand, the conditional τ given the hyperparameters, and bootstrap
intervals (docs/theory.md#generalisation-statistics)."""

import itertools
import math

import numpy as np
import pytest
import scipy.stats

from gflow_jax.diagnostics import (
    bootstrap_weights,
    conditional_kendall,
    granulated_kendall,
    kendall_statistics,
    kendall_tau,
)
from gflow_jax.diagnostics._kendall import _Pairs, _tau

# --------------------------------------------------------------------------------------------
# the two variants


def test_tau_a_and_b_by_hand_with_ties_in_both_variables():
    # x = (1, 2, 2, 3), y = (1, 1, 2, 3); the six pairs:
    #   (1,2): y tied            (1,3): +1   (1,4): +1
    #   (2,3): x tied            (2,4): +1   (3,4): +1
    # n_c - n_d = 4, n0 = 6, n1 = 1 (x ties), n2 = 1 (y ties)
    x, y = [1, 2, 2, 3], [1, 1, 2, 3]
    assert kendall_tau(x, y, variant="a") == pytest.approx(4 / 6, abs=1e-15)
    assert kendall_tau(x, y, variant="b") == pytest.approx(4 / 5, abs=1e-15)
    assert kendall_tau(x, y) == kendall_tau(x, y, variant="b")  # b is the default
    assert kendall_tau(x, y) == pytest.approx(scipy.stats.kendalltau(x, y).statistic)


def test_tau_a_equals_tau_b_without_ties_and_is_smaller_with_ties():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=25), rng.normal(size=25)
    assert kendall_tau(x, y, variant="a") == pytest.approx(kendall_tau(x, y, variant="b"))
    xt, yt = np.round(x), np.round(y)  # many ties
    a, b = kendall_tau(xt, yt, variant="a"), kendall_tau(xt, yt, variant="b")
    assert abs(a) < abs(b)


def test_constant_variable_tau_a_is_zero_tau_b_undefined():
    assert kendall_tau([1, 1, 1], [1, 2, 3], variant="a") == 0.0
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3], variant="b"))
    assert math.isnan(kendall_tau([1.0], [2.0], variant="a"))
    with pytest.raises(ValueError, match="variant"):
        kendall_tau([1, 2], [1, 2], variant="c")


def test_granulated_kendall_tau_a_by_hand():
    # the example of test_generalization's τ_b case, now with τ_a: groups with a constant
    # variable count as τ = 0 instead of being left out.
    #   across lr: bs = 32: +1/3, bs = 64: -1           -> psi_lr = -1/3
    #   across bs: lr = 0.1: 0 (gap tied), lr = 0.2: 0 (measure tied), lr = 0.3: -1
    #                                                    -> psi_bs = -1/3
    lr = [0.1, 0.2, 0.3, 0.1, 0.2, 0.3]
    bs = [32, 32, 32, 64, 64, 64]
    m = [1, 2, 3, 3, 2, 1]
    g = [1, 3, 2, 1, 2, 3]
    res = granulated_kendall(m, g, {"lr": lr, "bs": bs, "seed": [0] * 6}, variant="a")
    assert res.psi["lr"] == pytest.approx(-1 / 3, abs=1e-15)
    assert res.psi["bs"] == pytest.approx(-1 / 3, abs=1e-15)
    assert res.Psi == pytest.approx(-1 / 3, abs=1e-15)
    assert res.n_groups == {"lr": 2, "bs": 3} and res.variant == "a"


# --------------------------------------------------------------------------------------------
# weighted counts = explicit resampling


def test_weighted_counts_equal_the_explicitly_resampled_data():
    rng = np.random.default_rng(1)
    x = np.round(rng.normal(size=15), 1)
    y = np.round(x + rng.normal(size=15), 1)
    W = bootstrap_weights(15, 20, seed=4)
    assert np.all(W.sum(axis=1) == 15)
    pairs = _Pairs(x, y)
    for variant in ("a", "b"):
        got = _tau(*pairs.counts(W), variant)
        for w, t in zip(W, got, strict=True):
            idx = np.repeat(np.arange(15), w.astype(int))  # the resample, copies included
            assert t == pytest.approx(kendall_tau(x[idx], y[idx], variant=variant), abs=1e-14)
    ref = scipy.stats.kendalltau(x[idx], y[idx]).statistic  # the last resample, τ_b
    assert got[-1] == pytest.approx(ref, abs=1e-14)


# --------------------------------------------------------------------------------------------
# conditional τ


def _grid(n_lr=3, n_bs=3, n_seed=4):
    grid = list(itertools.product(range(n_lr), range(n_bs), range(n_seed)))
    lr, bs, seed = (np.array(c) for c in zip(*grid, strict=True))
    return {"lr": 0.01 * 2.0**lr, "bs": 32 * (bs + 1), "seed": seed}


@pytest.mark.parametrize("variant", ["a", "b"])
def test_conditional_tau_is_zero_for_a_measure_of_the_hyperparameters_alone(variant):
    f = _grid()
    rng = np.random.default_rng(2)
    # the gap rises with lr/bs, plus seed noise; the measure knows lr and bs only
    gap = np.log(f["lr"]) - np.log(f["bs"]) + 0.1 * rng.normal(size=f["lr"].size)
    measure = 3.0 * np.log(f["lr"]) - np.log(f["bs"])
    s = kendall_statistics(measure, gap, f, variant=variant, n_bootstrap=300, seed=1)
    assert s.tau.value > 0.5  # large unconditionally ...
    assert s.psi["lr"].value > 0.5 and s.psi["bs"].value > 0.5
    assert s.tau_given.value == 0.0  # ... and exactly nothing once lr and bs are given
    assert (s.tau_given.low, s.tau_given.high) == (0.0, 0.0)
    assert conditional_kendall(measure, gap, f, variant=variant).tau == 0.0


def test_conditional_tau_sees_a_measure_that_follows_the_seed_variation():
    f = _grid()
    rng = np.random.default_rng(3)
    noise = rng.normal(size=f["lr"].size)
    gap = np.log(f["lr"]) + 0.2 * noise
    measure = noise + 0.3 * rng.normal(size=noise.size)  # knows the noise, not lr
    s = kendall_statistics(measure, gap, f, n_bootstrap=400, seed=2)
    assert s.tau_given.value > 0.4 and s.tau_given.low > 0.0


def test_conditional_tau_by_hand():
    # two cells of three seeds and one cell of two:
    #   cell A: m = (1, 2, 3), g = (1, 3, 2)  -> S = 1, 3 pairs, tau = 1/3
    #   cell B: m = (5, 5, 6), g = (1, 2, 3)  -> S = 2, 3 pairs, one tied in m
    #   cell C: m = (1, 2),    g = (2, 1)     -> S = -1, 1 pair
    # tau_a: pooled (1 + 2 - 1) / (3 + 3 + 1) = 2/7
    # tau_b: (3 * 1/3 + 3 * 2/sqrt(2 * 3) + 1 * (-1)) / 7
    f = {"lr": [1, 1, 1, 2, 2, 2, 3, 3], "bs": [8] * 8, "seed": [0, 1, 2, 0, 1, 2, 0, 1]}
    m = [1, 2, 3, 5, 5, 6, 1, 2]
    g = [1, 3, 2, 1, 2, 3, 2, 1]
    a = conditional_kendall(m, g, f, variant="a")
    assert a.tau == pytest.approx(2 / 7, abs=1e-15)
    assert a.cell_pairs == {(1, 8): 3, (2, 8): 3, (3, 8): 1}
    b = conditional_kendall(m, g, f, variant="b")
    assert b.tau == pytest.approx((1 + 3 * 2 / math.sqrt(6) - 1) / 7, abs=1e-15)
    assert b.cell_taus[(1, 8)] == pytest.approx(1 / 3)
    # a cell with a constant gap: tau_b undefined there, counted as 0
    g2 = [1, 3, 2, 4, 4, 4, 2, 1]
    assert math.isnan(conditional_kendall(m, g2, f).cell_taus[(2, 8)])
    assert conditional_kendall(m, g2, f).tau == pytest.approx((1 + 0 - 1) / 7, abs=1e-15)


# --------------------------------------------------------------------------------------------
# bootstrap intervals


def test_bootstrap_intervals_cover_the_true_tau_of_a_monotone_relation():
    # (x, y) bivariate normal with correlation rho: population tau = (2/pi) arcsin(rho)
    rho = 0.6
    true_tau = 2 / math.pi * math.asin(rho)
    f = _grid(4, 4, 5)  # 80 networks
    n = f["lr"].size
    rng = np.random.default_rng(5)
    covered, excludes_zero, reps = 0, 0, 40
    for r in range(reps):
        x = rng.normal(size=n)
        y = rho * x + math.sqrt(1 - rho**2) * rng.normal(size=n)
        s = kendall_statistics(np.exp(x), y, f, n_bootstrap=400, seed=r)  # exp: monotone
        assert s.tau.low <= s.tau.value <= s.tau.high
        covered += s.tau.covers(true_tau)
        excludes_zero += s.tau.low > 0
    assert covered >= 0.85 * reps  # nominal 95 %
    assert excludes_zero >= 0.9 * reps  # and the intervals are not uselessly wide


def test_bootstrap_is_reproducible_and_shared_weights_are_used():
    f = _grid()
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=f["lr"].size), rng.normal(size=f["lr"].size)
    a = kendall_statistics(x, y, f, n_bootstrap=100, seed=3)
    b = kendall_statistics(x, y, f, weights=bootstrap_weights(x.size, 100, seed=3))
    assert a == b
    c = kendall_statistics(x, y, f, n_bootstrap=0)
    assert math.isnan(c.tau.low) and c.tau.value == a.tau.value
    with pytest.raises(ValueError, match="unknown factor 'momentum'"):
        kendall_statistics(x, y, f, given=("momentum",))
