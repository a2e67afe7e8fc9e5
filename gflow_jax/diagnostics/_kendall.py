"""Rank correlation of a measure with the generalisation gap: Kendall's τ and the granulated
coefficients ψ_h, Ψ (docs/theory.md#generalisation-statistics)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np


def _finite_pairs(x, y) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise ValueError(f"kendall_tau needs equal lengths, got {x.shape[0]} and {y.shape[0]}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's τ_b with tie correction (Kendall 1945; ``scipy.stats.kendalltau`` default).

    τ_b = (n_c − n_d) / √((n_0 − n_1)(n_0 − n_2)), n_0 = n(n−1)/2, n_1 (n_2) the pairs tied in x
    (y), n_c − n_d = Σ_{i<j} sign(x_i − x_j)·sign(y_i − y_j). Pairs with a non-finite entry (a
    failed point) are dropped first. NaN when fewer than two points remain or either variable is
    constant (τ undefined), as scipy does. O(n²) memory: meant for sweeps of up to a few
    thousand points.

    Example:
        >>> kendall_tau([1, 2, 3, 4], [10, 20, 40, 30])  # 5 concordant pairs, 1 discordant
        0.6666666666666666
    """
    x, y = _finite_pairs(x, y)
    n = x.shape[0]
    if n < 2:
        return math.nan
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    iu = np.triu_indices(n, 1)
    sx, sy = sx[iu], sy[iu]
    n0 = sx.size
    n1 = np.count_nonzero(sx == 0)
    n2 = np.count_nonzero(sy == 0)
    denom = math.sqrt(float(n0 - n1) * float(n0 - n2))
    if denom == 0.0:
        return math.nan
    return float(np.sum(sx * sy)) / denom


@dataclass(frozen=True)
class GranulatedKendall:
    """Granulated Kendall coefficients of one (measure, gap) pair.

    Attributes:
        psi: ψ_h for each hyperparameter h (mean of τ_b over the groups where the other factors
            are fixed; NaN if no group has a defined τ).
        Psi: Ψ = mean of the ψ_h that are defined (NaN if none).
        n_groups: number of groups that entered each ψ_h (groups with τ undefined — a constant
            measure or gap, fewer than two finite points — are left out and not counted).
        group_taus: τ_b of every group, keyed ``h -> {other-factor values: τ}``.
    """

    psi: dict[str, float]
    Psi: float
    n_groups: dict[str, int]
    group_taus: dict[str, dict[tuple, float]] = field(repr=False)


def granulated_kendall(
    measure: Sequence[float],
    gap: Sequence[float],
    factors: Mapping[str, Sequence],
    over: Sequence[str] | None = None,
) -> GranulatedKendall:
    """Granulated Kendall coefficients ψ_h and Ψ (Jiang et al. 2020;
    docs/theory.md#generalisation-statistics).

    For h in ``over``: group the points by the values of every *other* factor in ``factors``
    (e.g. batch size and seed for h = learning rate), compute τ_b(measure, gap) within each group
    (i.e. across the values of h), and average the defined τ's: ψ_h. Ψ = mean over h of ψ_h.

    Args:
        measure: ``(P,)`` one value per trained network (NaN for failed points).
        gap: ``(P,)`` the generalisation gap of each network.
        factors: ``name -> (P,)`` the grid coordinates of every point, e.g.
            ``{"lr": lrs, "bs": bss, "seed": seeds}``.
        over: the hyperparameters to granulate over (default: every factor except ``"seed"``).
    """
    measure = np.asarray(measure, dtype=float).ravel()
    gap = np.asarray(gap, dtype=float).ravel()
    n = measure.shape[0]
    if gap.shape[0] != n:
        raise ValueError(f"measure has {n} values but gap has {gap.shape[0]}")
    cols = {}
    for name, values in factors.items():
        values = list(np.asarray(values).ravel().tolist())
        if len(values) != n:
            raise ValueError(f"factor {name!r} has {len(values)} values, expected {n}")
        cols[name] = values
    over = [h for h in cols if h != "seed"] if over is None else list(over)
    for h in over:
        if h not in cols:
            raise ValueError(f"unknown factor {h!r} (known: {sorted(cols)})")
    psi, counts, taus = {}, {}, {}
    for h in over:
        others = [k for k in cols if k != h]
        groups: dict[tuple, list[int]] = {}
        for i in range(n):
            groups.setdefault(tuple(cols[k][i] for k in others), []).append(i)
        taus[h] = {g: kendall_tau(measure[idx], gap[idx]) for g, idx in groups.items()}
        defined = [t for t in taus[h].values() if math.isfinite(t)]
        psi[h] = float(np.mean(defined)) if defined else math.nan
        counts[h] = len(defined)
    defined_psi = [v for v in psi.values() if math.isfinite(v)]
    Psi = float(np.mean(defined_psi)) if defined_psi else math.nan
    return GranulatedKendall(psi=psi, Psi=Psi, n_groups=counts, group_taus=taus)
