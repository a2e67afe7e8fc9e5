"""Measures of a training trajectory (docs/theory.md#trajectory-protocol): the loss
pseudometric ρ_S, magnitude function and dimension, PMag, Mag(√n·X), E_α and the PH dimension of
one cloud, and the magnitude scalars for many small clouds.

Scale convention (every output states it): Z(t)_ij = exp(−t·d_ij) with d the *raw* distance —
Euclidean distance between flattened weight vectors, or ρ_S in nats. PMag is reported at t = √n
(n = number of points in the cloud) and t = 0.01 on those raw distances. The magnitude
*function* and *dimension* are evaluated on a grid relative to the cloud's diameter,
t·diam ∈ [10^a, 10^b], so that clouds of different size are compared at the same relative
resolution (the dimension profile is invariant under d → c·d with t → t/c).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core._shapes import Shapes
from ..magnitude import cloud_magnitudes, e_alpha, magnitude_function
from ._ph import PHDimension, ph_dimension


def loss_pseudometric(
    losses: Float[Array, "K n"], *, chunk_size: int | None = None
) -> Float[Array, "K K"]:
    """ρ_S(w_a, w_b) = (1/n) Σ_i |ℓ(w_a, z_i) − ℓ(w_b, z_i)| for every pair of iterates.

    docs/theory.md#trajectory-protocol. ``losses[a, i]`` is the loss of iterate a on example z_i.
    This is the ℓ1 distance of the loss vectors divided by n: symmetric, zero on the diagonal,
    satisfying the triangle inequality, and zero for distinct weights with identical losses (a
    *pseudo*metric: such iterates are duplicates for magnitude). Rows are computed in blocks of
    ``chunk_size`` (default: about 2²⁴ elements per block) so memory stays O(chunk·K·n).

    ``losses``: ``(K, n)`` (K iterates, n examples). Batch axis: refused (vmap over it).
    """
    losses = jnp.asarray(losses)
    Shapes("loss_pseudometric")("losses", losses, "K n")
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
    """Scales t with t·diam log-spaced over ``10**log10_range`` (``n_scales`` values), from the
    ``(n, n)`` distance matrix ``distances``. Batch axis: refused."""
    d = np.asarray(Shapes("relative_scales")("distances", distances, "n n"))
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
            (|√n·X|), ``e_alpha`` (E_α), ``ph_dim`` (PH⁰ dimension, NaN when not computed) and
            ``ph_dim_r2`` (R² of its log-log fit), ``diameter``, ``n_points``, ``n_unique``
            (after merging points at distance 0) and ``max_condition`` (largest condition
            estimate of Z).
        warnings: messages of the magnitude library (ill-conditioned or failed scales).
        engine: the magnitude engine that solved the cloud (``"cholesky"`` or ``"adaptive"``).
        seconds: wall-clock seconds of ``magnitude`` (function, PMag, |√n·X|), ``e_alpha`` and
            ``ph_dim``.
    """

    scales: np.ndarray
    magnitude: np.ndarray
    dimension_profile: np.ndarray
    values: dict[str, float]
    warnings: tuple[str, ...] = ()
    engine: str = ""
    seconds: dict[str, float] = field(default_factory=dict)


def trajectory_measures(
    distances: Float[Array, "n n"],
    *,
    n_scales: int = 32,
    log10_range: tuple[float, float] = (-1.0, 4.0),
    slope_window: tuple[float, float] = (0.0, 2.0),
    alpha: float = 1.0,
    e_alpha_measure: bool = True,
    ph_sizes: tuple[int, int, int] | None = (200, 1000, 50),
    ph_repeats: int = 1,
    ph_seed: int = 0,
) -> TrajectoryMeasures:
    """Magnitude function and dimension, PMag at t = √n and 0.01, E_α and the PH dimension of a
    point cloud.

    docs/theory.md#magnitude-dimension, docs/theory.md#ph-dimension. ``distances`` is a
    precomputed ``(n, n)`` (pseudo)metric matrix (Euclidean from
    :func:`~gflow_jax.magnitude.pairwise_distances` or ρ_S from :func:`loss_pseudometric`). The
    function and the dimension are evaluated at t = 10^u / diam for ``n_scales`` values of u spread
    over ``log10_range``, with ``magnitude_function(method="auto")`` (the fastest exact engine for
    the cloud's size and device); the slope uses the scales with u in ``slope_window``. The PH
    dimension (:func:`~gflow_jax.diagnostics.ph_dimension`, exponent ``alpha``) uses subsample
    sizes ``ph_sizes = (min, max, step)`` (None: not computed; a cloud too small for two sizes
    gets NaN and a warning), ``ph_repeats`` subsamples per size drawn with ``ph_seed``. Warnings
    of the magnitude library are collected in the result instead of being printed.

    Batch axis: refused (``distances`` must be ``(n, n)``; loop over clouds, or use
    :func:`cloud_measures` for many small ones).
    """
    d = jnp.asarray(distances)
    Shapes("trajectory_measures")("distances", d, "n n")
    n = d.shape[0]
    scales = relative_scales(d, n_scales, log10_range)
    diam = float(jnp.max(d))
    unit = 1.0 / diam if diam > 0 else 1.0
    window = (10.0 ** slope_window[0] * unit, 10.0 ** slope_window[1] * unit)
    fixed = np.array([math.sqrt(n), 0.01])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # one solve for the grid and the two fixed scales
        t0 = time.perf_counter()
        report = magnitude_function(
            d, np.concatenate([scales, fixed]), metric="precomputed", method="auto"
        )
        report.magnitude.block_until_ready()
        t1 = time.perf_counter()
        e_a = e_alpha(d, alpha, metric="precomputed") if e_alpha_measure else math.nan
        t2 = time.perf_counter()
    ph, notes = _ph(d, alpha, ph_sizes, ph_repeats, ph_seed)
    seconds = {"magnitude": t1 - t0, "e_alpha": t2 - t1, "ph_dim": time.perf_counter() - t2}
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
        "ph_dim": ph.dimension if ph is not None else math.nan,
        "ph_dim_r2": ph.r_squared if ph is not None else math.nan,
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
        warnings=tuple(str(w.message) for w in caught) + notes,
        engine=report.method,
        seconds=seconds,
    )


def _ph(d, alpha, sizes, repeats, seed) -> tuple[PHDimension | None, tuple[str, ...]]:
    """The PH dimension of the cloud, or None and why not."""
    if sizes is None:
        return None, ()
    lo, hi, step = sizes
    if np.arange(lo, min(hi, d.shape[0]) + 1, step).size < 2:
        return None, (f"ph_dim: {d.shape[0]} points allow fewer than two sizes in {sizes}",)
    r = ph_dimension(
        np.asarray(d), metric="precomputed", alpha=alpha, min_points=lo, max_points=hi,
        step=step, n_repeats=repeats, seed=seed,
    )  # fmt: skip
    return r, ()


def cloud_measures(
    clouds: Sequence[np.ndarray],
    *,
    n_scales: int = 12,
    log10_range: tuple[float, float] = (-1.0, 3.0),
) -> list[dict[str, float]]:
    """Magnitude measures of many small Euclidean clouds (probe representations, monitoring
    windows), through the one many-clouds engine (:func:`~gflow_jax.magnitude.cloud_magnitudes`).

    Per cloud ``(n_i, p)`` (same ``p`` for all): ``mag_dim_max`` (maximum of the exact dimension
    profile on t = 10^u/diam, u ∈ ``log10_range``, ``n_scales`` values), ``pmag_sqrt_n`` and
    ``mag_sqrt_n`` (t = √n_i, raw distances), ``pmag_0.01`` and ``diameter``. A cloud of
    identical points has magnitude 1 and dimension 0.

    Batch axis: the clouds are the batch (a sequence, or a ``(C, n, p)`` array); each cloud must
    be ``(n_i, p)``, and a further axis is refused.
    """
    if len(clouds) == 0:
        return []
    clouds = [np.asarray(c) for c in clouds]
    check = Shapes("cloud_measures")
    for i, c in enumerate(clouds):
        check(f"clouds[{i}]", c, "n_i p")
        check.sizes.pop("n_i")
    p = clouds[0].shape[1]
    n_max = max(c.shape[0] for c in clouds)
    X = np.zeros((len(clouds), n_max, p))
    valid = np.zeros((len(clouds), n_max), bool)
    for i, c in enumerate(clouds):
        X[i, : c.shape[0]] = c
        valid[i, : c.shape[0]] = True
    diam = np.array([_diameter(c) for c in clouds])
    unit = np.where(diam > 0, 1.0 / np.where(diam > 0, diam, 1.0), 1.0)
    u = np.logspace(log10_range[0], log10_range[1], int(n_scales))
    n = valid.sum(axis=1)
    scales = np.concatenate(
        [u[None, :] * unit[:, None], np.sqrt(n)[:, None], np.full((len(clouds), 1), 0.01)], axis=1
    )
    r = cloud_magnitudes(X, scales, valid=valid)
    mag, dim, pmag = (np.asarray(a) for a in (r.magnitude, r.dimension, r.positive_magnitude))
    out = []
    for i in range(len(clouds)):
        prof = dim[i, :n_scales]
        out.append(
            {
                "mag_dim_max": float(np.nanmax(prof)) if np.any(np.isfinite(prof)) else math.nan,
                "pmag_sqrt_n": float(pmag[i, n_scales]),
                "mag_sqrt_n": float(mag[i, n_scales]),
                "pmag_0.01": float(pmag[i, n_scales + 1]),
                "diameter": float(diam[i]),
            }
        )
    return out


def _diameter(cloud: np.ndarray) -> float:
    """Largest Euclidean distance within a small cloud."""
    diff = cloud[:, None, :] - cloud[None, :, :]
    return float(np.sqrt(np.max(np.sum(diff * diff, axis=-1)))) if cloud.shape[0] > 1 else 0.0
