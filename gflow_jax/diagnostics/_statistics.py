"""Kendall statistics of a measure against the generalisation gap with bootstrap intervals:
τ, the granulated ψ_h and Ψ, and τ conditional on the hyperparameters
(docs/theory.md#generalisation-statistics).

One bootstrap resample is a vector of multiplicities w ∈ ℕ^P with Σ w = P (the P networks drawn
with replacement); every statistic of a resample is computed from weighted pair counts
(:mod:`gflow_jax.diagnostics._kendall`), so the point estimate (w = 1) and the resamples share one
code path and no network is copied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core._shapes import Shapes
from ._kendall import (
    Variant,
    _conditional,
    _factor_columns,
    _granulated,
    _Pairs,
    _tau,
    check_variant,
)


@dataclass(frozen=True)
class Estimate:
    """A statistic and its bootstrap percentile interval.

    Attributes:
        value: the statistic on the data (NaN where undefined).
        low, high: the (1 − level)/2 and (1 + level)/2 quantiles of the statistic over the
            bootstrap resamples where it is defined (NaN if none is).
    """

    value: float
    low: float
    high: float

    def covers(self, x: float) -> bool:
        """``low ≤ x ≤ high``."""
        return bool(self.low <= x <= self.high)


@dataclass(frozen=True)
class KendallStatistics:
    """Every Kendall statistic of one (measure, gap) pair, with intervals.

    Attributes:
        tau: τ over all networks.
        psi: ψ_h for h in ``over`` (granulated: τ across h with every other factor, the seed
            included, fixed; mean over groups).
        Psi: Ψ, the mean of the ψ_h.
        tau_given: τ_{xy|H}, conditional on the factors ``given`` (pair-weighted mean of the τ
            within cells where only the remaining factors — the seed — vary).
        cell_taus: τ within every cell of equal ``given`` values (the seed-only groups), NaN
            where undefined.
        n_points: networks with a finite measure and gap.
        variant, level, n_bootstrap, over, given: how it was computed.
    """

    tau: Estimate
    psi: dict[str, Estimate]
    Psi: Estimate
    tau_given: Estimate
    cell_taus: dict[tuple, float] = field(repr=False)
    n_points: int = 0
    variant: str = "b"
    level: float = 0.95
    n_bootstrap: int = 0
    over: tuple[str, ...] = ()
    given: tuple[str, ...] = ()


def bootstrap_weights(n: int, n_bootstrap: int, seed: int = 0) -> np.ndarray:
    """``(n_bootstrap, n)`` multiplicities of n items drawn n times with replacement."""
    if n < 1 or n_bootstrap < 0:
        raise ValueError(f"need n ≥ 1 and n_bootstrap ≥ 0, got {n} and {n_bootstrap}")
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_bootstrap, n))
    W = np.zeros((n_bootstrap, n))
    np.add.at(W, (np.arange(n_bootstrap)[:, None], draws), 1.0)
    return W


def _estimate(values: np.ndarray, level: float) -> Estimate:
    """``values[0]`` is the point estimate, ``values[1:]`` the resamples."""
    boot = values[1:]
    boot = boot[np.isfinite(boot)]
    if boot.size:
        low, high = np.quantile(boot, [(1 - level) / 2, (1 + level) / 2])
    else:
        low = high = np.nan
    return Estimate(float(values[0]), float(low), float(high))


def kendall_statistics(
    measure: Sequence[float],
    gap: Sequence[float],
    factors: Mapping[str, Sequence],
    *,
    over: Sequence[str] = ("lr", "bs"),
    given: Sequence[str] = ("lr", "bs"),
    variant: Variant = "b",
    n_bootstrap: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    weights: np.ndarray | None = None,
) -> KendallStatistics:
    """τ, ψ_h (h ∈ ``over``), Ψ and τ_{xy|given} of measure against gap, each with a bootstrap
    percentile interval (docs/theory.md#generalisation-statistics).

    The P networks are resampled with replacement ``n_bootstrap`` times (``seed``); every
    statistic is recomputed on each resample (a network drawn twice forms a pair tied in both
    variables with its copy), and the interval runs between the (1 − level)/2 and (1 + level)/2
    quantiles of the resampled values. Pass the same ``weights`` (from :func:`bootstrap_weights`)
    to compare several measures on the same resamples.

    Args:
        measure, gap: ``(P,)`` one value per network; non-finite values drop the network.
        factors: ``name -> (P,)`` grid coordinates, e.g. ``{"lr": …, "bs": …, "seed": …}``.
        over: factors to granulate over (ψ_h).
        given: factors to condition on (τ_{xy|H}: cells where these are equal).
        variant: ``"b"`` (default) or ``"a"`` (:func:`~gflow_jax.diagnostics.kendall_tau`).
        n_bootstrap: resamples B (0: intervals are NaN).
        level: coverage of the intervals, in (0, 1).
        weights: ``(B, P)`` resample multiplicities; overrides ``n_bootstrap`` and ``seed``.

    Batch axis: refused (``measure``, ``gap`` and every factor must be ``(P,)``).
    """
    check_variant(variant)
    if not 0.0 < level < 1.0:
        raise ValueError(f"kendall_statistics: level must lie in (0, 1), got {level}")
    check = Shapes("kendall_statistics")
    pairs = _Pairs(measure, gap, check, ("measure", "gap"))
    cols = _factor_columns(factors, check)
    for h in (*over, *given):
        if h not in cols:
            raise ValueError(f"unknown factor {h!r} (known: {sorted(cols)})")
    if weights is None:
        weights = bootstrap_weights(pairs.n, n_bootstrap, seed)
    weights = np.asarray(check("weights", np.asarray(weights, dtype=float), "B P"))
    W = np.concatenate([np.ones((1, pairs.n)), weights])
    tau = _tau(*pairs.counts(W), variant)
    psi, Psi, _, _ = _granulated(pairs, W, cols, list(over), variant)
    tau_given, cell_taus, _ = _conditional(pairs, W, cols, tuple(given), variant)
    return KendallStatistics(
        tau=_estimate(tau, level),
        psi={h: _estimate(v, level) for h, v in psi.items()},
        Psi=_estimate(Psi, level),
        tau_given=_estimate(tau_given, level),
        cell_taus=cell_taus,
        n_points=int(pairs.finite.sum()),
        variant=variant,
        level=level,
        n_bootstrap=int(weights.shape[0]),
        over=tuple(over),
        given=tuple(given),
    )
