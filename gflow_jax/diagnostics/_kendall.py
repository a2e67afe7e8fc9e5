"""Rank correlation of a measure with the generalisation gap: Kendall's τ (variants a and b), the
granulated coefficients ψ_h, Ψ and the conditional τ given the hyperparameters
(docs/theory.md#generalisation-statistics).

Every coefficient here is a ratio of pair counts over a set of networks. The counts are computed
for a *weighted* set: network p enters w_p times (w = 1 for the data, bootstrap multiplicities for
a resample), so that one code path serves the point estimate and every bootstrap resample
(:mod:`gflow_jax.diagnostics._statistics`). For a group G with weights w,

    S   = Σ_{a<b} sign(x_a − x_b)·sign(y_a − y_b) = ½ Σ_{i,j∈G} w_i w_j s^x_ij s^y_ij,
    n_0 = m(m − 1)/2,  m = Σ_{i∈G} w_i,
    n_1 = ½ (Σ_{i,j∈G} w_i w_j [x_i = x_j] − m)   (pairs tied in x; a network and its copy tie),

and n_2 likewise for y. The counts are integers held exactly in float64.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..core._shapes import Shapes

Variant = Literal["a", "b"]
VARIANTS = ("a", "b")


def check_variant(variant: str) -> str:
    """``variant`` if it is ``"a"`` or ``"b"``; else ValueError."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown Kendall variant {variant!r}: expected 'a' or 'b'")
    return variant


# --------------------------------------------------------------------------------------------
# weighted pair counts (shared by the point estimates and the bootstrap)


class _Pairs:
    """Sign matrices of one (measure, gap) pair over P networks, non-finite entries masked.

    ``sxy[i, j] = sign(x_i − x_j)·sign(y_i − y_j)``, ``tx``/``ty`` the tie indicators (1 on the
    diagonal), ``finite`` the networks with both values finite (the others get weight 0).
    """

    def __init__(self, x, y, check: Shapes | None = None, names: tuple[str, str] = ("x", "y")):
        check = Shapes("kendall_tau") if check is None else check
        x = np.asarray(check(names[0], np.asarray(x, dtype=float), "P"))
        y = np.asarray(check(names[1], np.asarray(y, dtype=float), "P"))
        self.finite = np.isfinite(x) & np.isfinite(y)
        x = np.where(self.finite, x, 0.0)
        y = np.where(self.finite, y, 0.0)
        sx = np.sign(x[:, None] - x[None, :])
        sy = np.sign(y[:, None] - y[None, :])
        self.sxy = sx * sy
        self.tx = (sx == 0).astype(float)
        self.ty = (sy == 0).astype(float)
        self.n = x.shape[0]

    def counts(self, W: np.ndarray, index: np.ndarray | None = None):
        """``(S, n0, n1, n2)``, each ``(B,)``, of the weighted networks ``index`` (all: None)
        for the weight rows ``W`` ``(B, P)``; non-finite networks weigh 0."""
        W = W * self.finite
        if index is None:
            index = np.arange(self.n)
        Wg = W[:, index]
        sub = np.ix_(index, index)
        m = Wg.sum(axis=1)

        def form(M):
            return np.einsum("bi,ij,bj->b", Wg, M[sub], Wg, optimize=True)

        S = 0.5 * form(self.sxy)
        n0 = 0.5 * (m * m - m)
        n1 = 0.5 * (form(self.tx) - m)
        n2 = 0.5 * (form(self.ty) - m)
        return S, n0, n1, n2


def _tau(S, n0, n1, n2, variant: str) -> np.ndarray:
    """τ from pair counts: τ_a = S/n0, τ_b = S/√((n0 − n1)(n0 − n2)); NaN where undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if variant == "a":
            return np.where(n0 > 0, S / np.where(n0 > 0, n0, 1.0), np.nan)
        denom = np.sqrt(np.maximum(n0 - n1, 0.0) * np.maximum(n0 - n2, 0.0))
        return np.where(denom > 0, S / np.where(denom > 0, denom, 1.0), np.nan)


def _groups(cols: Mapping[str, list], keys: Sequence[str]) -> dict[tuple, np.ndarray]:
    """Indices of the networks sharing the values of ``keys``, per value tuple."""
    n = len(next(iter(cols.values()))) if cols else 0
    groups: dict[tuple, list[int]] = {}
    for i in range(n):
        groups.setdefault(tuple(cols[k][i] for k in keys), []).append(i)
    return {g: np.asarray(idx) for g, idx in groups.items()}


def _factor_columns(factors: Mapping[str, Sequence], check: Shapes) -> dict[str, list]:
    """Each factor's ``(P,)`` values as a list (P from the measure, bound in ``check``)."""
    cols = {}
    for name, values in factors.items():
        values = np.asarray(values)
        check(f"factors[{name!r}]", values, "P")
        cols[name] = values.tolist()
    return cols


def _nanmean(a: np.ndarray, axis: int) -> np.ndarray:
    """Mean of the finite entries along ``axis`` (NaN where there are none), without warnings."""
    ok = np.isfinite(a)
    count = ok.sum(axis=axis)
    total = np.where(ok, a, 0.0).sum(axis=axis)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _granulated(pairs: _Pairs, W, cols, over, variant):
    """ψ_h ``(B,)`` per h in ``over``, Ψ ``(B,)``, and the group τ's of the first weight row."""
    psi, taus, counts = {}, {}, {}
    for h in over:
        groups = _groups(cols, [k for k in cols if k != h])
        per_group = np.stack(
            [_tau(*pairs.counts(W, idx), variant) for idx in groups.values()], axis=1
        )  # (B, G)
        psi[h] = _nanmean(per_group, axis=1)
        taus[h] = {g: float(t) for g, t in zip(groups, per_group[0], strict=True)}
        counts[h] = int(np.isfinite(per_group[0]).sum())
    Psi = _nanmean(np.stack(list(psi.values()), axis=1), axis=1) if psi else np.full(len(W), np.nan)
    return psi, Psi, taus, counts


def _conditional(pairs: _Pairs, W, cols, given, variant):
    """τ_{xy|H} ``(B,)`` (cells of equal ``given`` values, pair-weighted, undefined cell τ → 0)
    and the cell τ's and pair counts of the first weight row."""
    cells = _groups(cols, list(given))
    num = np.zeros(len(W))
    den = np.zeros(len(W))
    cell_taus, cell_pairs = {}, {}
    for g, idx in cells.items():
        S, n0, n1, n2 = pairs.counts(W, idx)
        t = _tau(S, n0, n1, n2, variant)
        num += np.where(n0 > 0, n0 * np.where(np.isfinite(t), t, 0.0), 0.0)
        den += n0
        cell_taus[g], cell_pairs[g] = float(t[0]), int(n0[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    return tau, cell_taus, cell_pairs


# --------------------------------------------------------------------------------------------
# public coefficients


def kendall_tau(x: Sequence[float], y: Sequence[float], *, variant: Variant = "b") -> float:
    """Kendall's τ of two samples, ``variant="b"`` (default) or ``"a"``.

    docs/theory.md#generalisation-statistics. With n_0 = n(n−1)/2 pairs, n_c − n_d =
    Σ_{i<j} sign(x_i − x_j)·sign(y_i − y_j), and n_1 (n_2) the pairs tied in x (y):

    * τ_b = (n_c − n_d)/√((n_0 − n_1)(n_0 − n_2)) — Kendall's tie-corrected coefficient, the
      default of ``scipy.stats.kendalltau``; ±1 for a strictly monotone relation without ties.
      Undefined (NaN) when either variable is constant.
    * τ_a = (n_c − n_d)/n_0 — ties count as neither concordant nor discordant; what Jiang et al.
      (2020) and the granulated coefficients of the literature use. 0 when a variable is
      constant. On tied data |τ_a| < |τ_b|.

    Pairs with a non-finite entry (a failed point) are dropped first. NaN when fewer than two
    points remain. O(n²) memory: meant for sweeps of up to a few thousand points.

    ``x`` and ``y``: ``(n,)``. Batch axis: refused (a 2-d input is not flattened: loop over the
    rows).

    Example:
        >>> kendall_tau([1, 2, 3, 4], [10, 20, 40, 30])  # 5 concordant pairs, 1 discordant
        0.6666666666666666
        >>> kendall_tau([1, 1, 2], [1, 2, 3], variant="a")  # one pair tied in x: 2/3
        0.6666666666666666
    """
    check_variant(variant)
    pairs = _Pairs(x, y, Shapes("kendall_tau"))
    return float(_tau(*pairs.counts(np.ones((1, pairs.n))), variant)[0])


@dataclass(frozen=True)
class GranulatedKendall:
    """Granulated Kendall coefficients of one (measure, gap) pair.

    Attributes:
        psi: ψ_h for each hyperparameter h (mean of τ over the groups where the other factors
            are fixed; NaN if no group has a defined τ).
        Psi: Ψ = mean of the ψ_h that are defined (NaN if none).
        n_groups: number of groups that entered each ψ_h (groups with τ undefined — fewer than
            two finite points, or for τ_b a constant measure or gap — are left out).
        group_taus: τ of every group, keyed ``h -> {other-factor values: τ}``.
        variant: the Kendall variant used (``"a"`` or ``"b"``).
    """

    psi: dict[str, float]
    Psi: float
    n_groups: dict[str, int]
    group_taus: dict[str, dict[tuple, float]] = field(repr=False)
    variant: str = "b"


def granulated_kendall(
    measure: Sequence[float],
    gap: Sequence[float],
    factors: Mapping[str, Sequence],
    over: Sequence[str] | None = None,
    *,
    variant: Variant = "b",
) -> GranulatedKendall:
    """Granulated Kendall coefficients ψ_h and Ψ (Jiang et al. 2020;
    docs/theory.md#generalisation-statistics).

    For h in ``over``: group the points by the values of every *other* factor in ``factors``
    (e.g. batch size and seed for h = learning rate), compute τ(measure, gap) within each group
    (i.e. across the values of h), and average the defined τ's: ψ_h. Ψ = mean over h of ψ_h.
    With ``variant="a"`` a group where the measure is constant contributes τ = 0; with ``"b"``
    it is left out (τ_b undefined).

    Args:
        measure: ``(P,)`` one value per trained network (NaN for failed points).
        gap: ``(P,)`` the generalisation gap of each network.
        factors: ``name -> (P,)`` the grid coordinates of every point, e.g.
            ``{"lr": lrs, "bs": bss, "seed": seeds}``.
        over: the hyperparameters to granulate over (default: every factor except ``"seed"``).
        variant: ``"b"`` (default) or ``"a"``, see :func:`kendall_tau`.

    Batch axis: refused (``measure``, ``gap`` and every factor must be ``(P,)``).
    """
    check_variant(variant)
    check = Shapes("granulated_kendall")
    pairs = _Pairs(measure, gap, check, ("measure", "gap"))
    cols = _factor_columns(factors, check)
    over = [h for h in cols if h != "seed"] if over is None else list(over)
    for h in over:
        if h not in cols:
            raise ValueError(f"unknown factor {h!r} (known: {sorted(cols)})")
    psi, Psi, taus, counts = _granulated(pairs, np.ones((1, pairs.n)), cols, over, variant)
    return GranulatedKendall(
        psi={h: float(v[0]) for h, v in psi.items()},
        Psi=float(Psi[0]),
        n_groups=counts,
        group_taus=taus,
        variant=variant,
    )


@dataclass(frozen=True)
class ConditionalKendall:
    """Kendall's τ of a (measure, gap) pair conditional on the hyperparameters.

    Attributes:
        tau: τ_{xy|H} = Σ_r P_r τ_r / Σ_r P_r over the cells r (networks sharing the values of
            ``given``) with at least two networks; P_r = m_r(m_r − 1)/2; a cell τ that is
            undefined (a constant variable) counts as 0.
        cell_taus: τ_r of every cell (NaN where undefined), keyed by the ``given`` values.
        cell_pairs: P_r of every cell.
        given: the conditioning factors.
        variant: the Kendall variant.
    """

    tau: float
    cell_taus: dict[tuple, float] = field(repr=False)
    cell_pairs: dict[tuple, int] = field(repr=False)
    given: tuple[str, ...] = ()
    variant: str = "b"


def conditional_kendall(
    measure: Sequence[float],
    gap: Sequence[float],
    factors: Mapping[str, Sequence],
    given: Sequence[str] = ("lr", "bs"),
    *,
    variant: Variant = "b",
) -> ConditionalKendall:
    """Kendall's τ of measure and gap conditional on the factors ``given``
    (docs/theory.md#generalisation-statistics).

    Networks that share the values of ``given`` (e.g. learning rate and batch size, so that only
    the seed differs) form a cell r of m_r networks and P_r = m_r(m_r − 1)/2 comparable pairs;
    τ_r is τ within the cell (undefined → 0), and

        τ_{xy|H} = Σ_r P_r τ_r / Σ_r P_r.

    For τ_a this is the pooled ratio Σ_r (n_c − n_d)_r / Σ_r P_r. A measure that depends on
    the ``given`` factors alone is constant within every cell and has τ_{xy|H} = 0 exactly, however
    large its unconditional τ. NaN when no cell holds two networks.

    Example:
        >>> conditional_kendall([1, 1, 2, 2], [0.1, 0.3, 0.2, 0.4], {"lr": [1, 1, 2, 2]},
        ...                     given=("lr",)).tau
        0.0

    ``measure``, ``gap`` and every factor: ``(P,)``. Batch axis: refused.
    """
    check_variant(variant)
    check = Shapes("conditional_kendall")
    pairs = _Pairs(measure, gap, check, ("measure", "gap"))
    cols = _factor_columns(factors, check)
    for h in given:
        if h not in cols:
            raise ValueError(f"unknown factor {h!r} (known: {sorted(cols)})")
    tau, cell_taus, cell_pairs = _conditional(
        pairs, np.ones((1, pairs.n)), cols, tuple(given), variant
    )
    return ConditionalKendall(
        tau=float(tau[0]),
        cell_taus=cell_taus,
        cell_pairs=cell_pairs,
        given=tuple(given),
        variant=variant,
    )
