"""Trajectory → magnitude measures, and their rank correlation with the generalisation gap.

MATH.md Part B (trajectory protocol). Three pieces:

* :func:`kendall_tau` — Kendall's τ_b (ties corrected), the coefficient of
  ``scipy.stats.kendalltau`` with its default ``variant="b"``.
* :func:`granulated_kendall` — the granulated coefficients of Jiang et al. (2020) used by
  2305.05611: for each hyperparameter h, τ_b between measure and gap across the values of h with
  every other factor (the other hyperparameters *and* the seed) held fixed, averaged over those
  groups: ψ_h; Ψ is the mean of the ψ_h.
* :func:`loss_pseudometric` — the data-dependent pseudometric
  ρ_S(w, w') = (1/n) Σ_i |ℓ(w, z_i) − ℓ(w', z_i)| from a per-example loss matrix, chunked, and
  :func:`trajectory_measures` — magnitude function, magnitude dimension, PMag, E_α of one point
  cloud (through :mod:`gflow_jax.magnitude`, with ``metric="precomputed"``), and
  :func:`cloud_measures` — the same scalars for many small Euclidean clouds (probe
  representations, monitoring windows) in one vmapped program.

Scale convention (every output states it): the similarity matrix is Z(t)_ij = exp(−t·d_ij) with
d the *raw* distance — Euclidean distance between flattened weight vectors, or ρ_S in nats. PMag
is reported at t = √n (n = number of points in the cloud) and t = 0.01 on those raw distances.
The magnitude *function* and *dimension* are evaluated on a grid relative to the cloud's
diameter, t·diam ∈ [10^a, 10^b], so that clouds of different size are compared at the same
relative resolution (the dimension profile is invariant under d → c·d with t → t/c).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = [
    "GranulatedKendall",
    "cloud_measures",
    "TrajectoryMeasures",
    "granulated_kendall",
    "kendall_tau",
    "loss_pseudometric",
    "relative_scales",
    "trajectory_measures",
]


# --------------------------------------------------------------------------------------------
# rank correlation


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
    """Granulated Kendall coefficients ψ_h and Ψ (Jiang et al. 2020; MATH.md trajectory protocol).

    For h in ``over``: group the points by the values of every *other* factor in ``factors``
    (e.g. batch size and seed for h = learning rate), compute τ_b(measure, gap) within each group
    (i.e. across the values of h), and average the defined τ's: ψ_h. Ψ = mean over h of ψ_h.

    Args:
        measure, gap: ``(P,)`` one value per trained network (NaN for failed points).
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


# --------------------------------------------------------------------------------------------
# the loss-based pseudometric


def loss_pseudometric(
    losses: Float[Array, "K n"], *, chunk_size: int | None = None
) -> Float[Array, "K K"]:
    """ρ_S(w_a, w_b) = (1/n) Σ_i |ℓ(w_a, z_i) − ℓ(w_b, z_i)| for every pair of iterates.

    MATH.md trajectory protocol. ``losses[a, i]`` is the loss of iterate a on example z_i. This is
    the ℓ1 distance of the loss vectors divided by n: symmetric, zero on the diagonal, satisfying
    the triangle inequality, and zero for distinct weights with identical losses (a
    *pseudo*metric: such iterates are duplicates for magnitude). Rows are computed in blocks of
    ``chunk_size`` (default: about 2²⁴ elements per block) so memory stays O(chunk·K·n).
    """
    losses = jnp.asarray(losses)
    if losses.ndim != 2:
        raise ValueError(f"losses must be (K iterates, n examples), got shape {losses.shape}")
    k, n = losses.shape
    if n == 0:
        raise ValueError("losses has no examples (n = 0)")
    if chunk_size is None:
        chunk_size = max(1, min(k, (1 << 24) // max(k * n, 1)))
    return _l1_rows(losses, int(chunk_size)) / n


@partial(jax.jit, static_argnames="chunk")
def _l1_rows(losses, chunk):
    k, n = losses.shape
    n_blocks = -(-k // chunk)
    padded = jnp.concatenate([losses, jnp.zeros((n_blocks * chunk - k, n), losses.dtype)])
    blocks = padded.reshape(n_blocks, chunk, n)

    def block(rows):
        return jnp.sum(jnp.abs(rows[:, None, :] - losses[None, :, :]), axis=-1)

    out = jax.lax.map(block, blocks).reshape(n_blocks * chunk, k)[:k]
    # exact symmetry (summation order may differ between (a, b) and (b, a) blocks)
    return 0.5 * (out + out.T)


# --------------------------------------------------------------------------------------------
# measures of one point cloud


def relative_scales(
    distances: Float[Array, "n n"], n_scales: int, log10_range: tuple[float, float]
) -> np.ndarray:
    """Scales t with t·diam log-spaced over ``10**log10_range`` (``n_scales`` values)."""
    d = np.asarray(distances)
    diam = float(np.max(d)) if d.size else 0.0
    if not diam > 0:
        diam = 1.0  # a single point (or all duplicates): any grid gives |tX| = 1
    lo, hi = log10_range
    return np.logspace(lo, hi, int(n_scales)) / diam


@dataclass(frozen=True)
class TrajectoryMeasures:
    """Magnitude measures of one point cloud (a trajectory or a representation cloud).

    Attributes:
        scales: ``(S,)`` grid of the magnitude function (relative to the diameter).
        magnitude: ``(S,)`` |tX| on that grid.
        dimension_profile: ``(S,)`` instantaneous magnitude dimension d log|tX|/d log t.
        values: scalar measures: ``mag_dim_max`` (profile maximum over the grid),
            ``mag_dim_slope`` (least-squares log-log slope over ``slope_window``),
            ``mag_dim_argmax_scale`` (t of the maximum, raw units), ``pmag_sqrt_n`` and
            ``pmag_0.01`` (PMag at t = √n and t = 0.01 on raw distances), ``mag_sqrt_n``
            (|√n·X|), ``e_alpha`` (E_α), ``diameter``, ``n_points``, ``n_unique`` (after merging
            points at distance 0) and ``max_condition`` (largest condition estimate of Z).
        warnings: messages of the magnitude library (ill-conditioned or failed scales).
    """

    scales: np.ndarray
    magnitude: np.ndarray
    dimension_profile: np.ndarray
    values: dict[str, float]
    warnings: tuple[str, ...] = ()


def trajectory_measures(
    distances: Float[Array, "n n"],
    *,
    n_scales: int = 32,
    log10_range: tuple[float, float] = (-1.0, 4.0),
    slope_window: tuple[float, float] = (0.0, 2.0),
    alpha: float = 1.0,
    e_alpha_measure: bool = True,
) -> TrajectoryMeasures:
    """Magnitude function and dimension, PMag at t = √n and 0.01, and E_α of a point cloud.

    MATH.md Part B. ``distances`` is a precomputed ``(n, n)`` (pseudo)metric matrix (Euclidean
    from ``magnitude.pairwise_distances`` or ρ_S from :func:`loss_pseudometric`). The function
    and the dimension are evaluated at t = 10^u / diam for ``n_scales`` values of u spread over
    ``log10_range``; the slope uses the scales with u in ``slope_window``. Warnings of the
    magnitude library are collected in the result instead of being printed.
    """
    # sibling module, imported lazily (``gflow_jax.magnitude`` the attribute is the function)
    from .magnitude import e_alpha, magnitude_function

    d = jnp.asarray(distances)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a square matrix, got shape {d.shape}")
    n = d.shape[0]
    scales = relative_scales(d, n_scales, log10_range)
    diam = float(jnp.max(d))
    unit = 1.0 / diam if diam > 0 else 1.0
    window = (10.0 ** slope_window[0] * unit, 10.0 ** slope_window[1] * unit)
    fixed = np.array([math.sqrt(n), 0.01])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # one solve for the grid and the two fixed scales
        report = magnitude_function(d, np.concatenate([scales, fixed]), metric="precomputed")
        e_a = e_alpha(d, alpha, metric="precomputed") if e_alpha_measure else math.nan
    S = scales.shape[0]
    magnitude = np.asarray(report.magnitude)
    profile = np.asarray(report.dimension)[:S]
    k = int(np.nanargmax(profile)) if np.any(np.isfinite(profile)) else 0
    inside = (scales >= window[0] * (1 - 1e-12)) & (scales <= window[1] * (1 + 1e-12))
    if inside.sum() < 2:
        raise ValueError(f"slope_window {slope_window} holds fewer than two grid scales")
    slope = np.polyfit(np.log(scales[inside]), np.log(magnitude[:S][inside]), 1)[0]
    cond = np.asarray(report.condition)
    pmag = np.asarray(report.positive_magnitude)[S:]
    values = {
        "mag_dim_max": float(profile[k]),
        "mag_dim_slope": float(slope),
        "mag_dim_argmax_scale": float(scales[k]),
        "pmag_sqrt_n": float(pmag[0]),
        "pmag_0.01": float(pmag[1]),
        "mag_sqrt_n": float(magnitude[S]),
        "e_alpha": float(e_a),
        "diameter": diam,
        "n_points": int(n),
        "n_unique": int(report.n_unique),
        "max_condition": float(np.nanmax(cond)) if np.any(np.isfinite(cond)) else math.nan,
    }
    return TrajectoryMeasures(
        scales=np.asarray(scales),
        magnitude=magnitude[:S],
        dimension_profile=profile,
        values=values,
        warnings=tuple(str(w.message) for w in caught),
    )


# --------------------------------------------------------------------------------------------
# many small clouds at once (probe representations, monitoring windows)


def _euclidean_padded(X: Float[Array, "n p"]) -> Float[Array, "n n"]:
    """Euclidean distances from differences (exact zeros for equal rows: duplicates merge)."""
    diff = X[:, None, :] - X[None, :, :]
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


@partial(jax.jit, static_argnames=("n_scales", "log10_range"))
def _batched_cloud_core(X, valid, n_scales, log10_range):
    from .magnitude_core import magnitude_from_distances

    u = jnp.linspace(log10_range[0], log10_range[1], n_scales)

    def one(x, ok):
        D = _euclidean_padded(x)
        D = jnp.where(ok[:, None] & ok[None, :], D, 0.0)
        diam = jnp.max(D)
        unit = jnp.where(diam > 0, 1.0 / jnp.where(diam > 0, diam, 1.0), 1.0)
        n = jnp.sum(ok).astype(D.dtype)
        scales = jnp.concatenate([10.0**u * unit, jnp.stack([jnp.sqrt(n), 0.01])])
        r = magnitude_from_distances(D, scales, valid=ok, fallback=False)
        return r.magnitude, r.dimension, r.positive_magnitude, diam

    return jax.vmap(one)(X, valid)


def cloud_measures(
    clouds: Sequence[np.ndarray],
    *,
    n_scales: int = 12,
    log10_range: tuple[float, float] = (-1.0, 3.0),
    batch: int = 8,
    pad_to: int | None = None,
) -> list[dict[str, float]]:
    """Magnitude measures of many small Euclidean clouds in one compiled, vmapped program.

    Each cloud ``(n_i, p)`` (same ``p`` for all) is padded to ``pad_to`` (default: the largest
    n_i) points with the padding masked out, and processed ``batch`` clouds at a time, so a new
    set of clouds of the same sizes reuses the compilation. Per cloud: ``mag_dim_max`` (maximum
    of the exact dimension profile on t = 10^u/diam, u ∈ ``log10_range``), ``pmag_sqrt_n`` and
    ``mag_sqrt_n`` (t = √n_i, raw distances), ``pmag_0.01`` and ``diameter``. A cloud of
    identical points has magnitude 1 and dimension 0. Solves whose Cholesky factorisation
    fails give NaN (no LU fallback in the batched path).
    """
    if not clouds:
        return []
    p = clouds[0].shape[1]
    n_max = max(c.shape[0] for c in clouds) if pad_to is None else int(pad_to)
    out: list[dict[str, float]] = []
    for start in range(0, len(clouds), batch):
        part = list(clouds[start : start + batch])
        real = len(part)
        part += [part[-1]] * (batch - real)
        X = np.zeros((batch, n_max, p))
        valid = np.zeros((batch, n_max), bool)
        for i, c in enumerate(part):
            if c.shape[0] > n_max or c.shape[1] != p:
                raise ValueError(f"cloud of shape {c.shape} does not fit ({n_max}, {p})")
            X[i, : c.shape[0]] = c
            valid[i, : c.shape[0]] = True
        mag, dim, pmag, diam = (
            np.asarray(a)
            for a in _batched_cloud_core(
                jnp.asarray(X), jnp.asarray(valid), int(n_scales), tuple(map(float, log10_range))
            )
        )
        for i in range(real):
            prof = dim[i, :n_scales]
            out.append(
                {
                    "mag_dim_max": float(np.nanmax(prof))
                    if np.any(np.isfinite(prof))
                    else math.nan,
                    "pmag_sqrt_n": float(pmag[i, n_scales]),
                    "mag_sqrt_n": float(mag[i, n_scales]),
                    "pmag_0.01": float(pmag[i, n_scales + 1]),
                    "diameter": float(diam[i]),
                }
            )
    return out
