"""The jit- and vmap-friendly magnitude core: distances → weights at a batch of scales.

docs/theory.md#magnitude. For a distance matrix D and scale t > 0, Z(t) = exp(−t·D) (built per
scale, never as exp(−D)**t, which underflows for distances ≳ 700); the weighting w solves Z w = 1
and the magnitude is |tX| = Σ_i w_i. Everything here has fixed shapes and no host round trips, so a
batch of clouds can be processed by ``jax.vmap(magnitude_from_distances, (0, None))`` inside one
compiled computation.

**Duplicates** (points at distance ≤ ``duplicate_tol``; exactly equal points when it is 0) make
Z exactly singular. They are merged by masking, with fixed shapes: groups are formed greedily
in index order (a point starts a new group unless it is within ``duplicate_tol`` of an earlier
group representative), the first index of each group is its representative, and the rows and
columns of the other members are replaced by those of the identity with right-hand side 0. The
solve therefore yields the weighting of the *deduplicated* space. Each member of a group is
reported the group's weight **split equally** among its members: the reported weights sum to the
magnitude, are aligned with the input rows, and form an exact weighting of the input's own
(singular) Z — every row of Z w = 1 holds.

**Solves.** One Cholesky factorisation per scale (Z is positive definite for distinct points of
a negative-type space: Euclidean, ℓ1). If it fails (non-finite), the scale is solved again by LU
(``jnp.linalg.solve``) and reported as such — nothing is perturbed.

**Reports per scale.** The relative residual ‖Zw − b‖₂/‖b‖₂ (b the masked right-hand side) and a
condition estimate λ_max/λ_min of the deduplicated Z: λ_max is bounded above by the largest row
sum (Perron–Frobenius, Z ≥ 0 entrywise), and λ_min is bounded above by the smallest Rayleigh
quotient of one inverse iteration, from 1 (that is, of w itself: Σw/‖w‖²) and from a fixed
pseudo-random vector r (yᵀr/yᵀy with y = Z⁻¹r). Both bounds are typically within a small factor
of the truth, so ``condition`` estimates the 2-norm condition number κ₂(Z) from below by at most
that factor.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ..core._shapes import Shapes

#: solver codes of :class:`MagnitudeResult` (``solver`` field) and their names
SOLVER_NAMES = ("cholesky", "lu", "failed")
CHOLESKY, LU, FAILED = 0, 1, 2
# memory budget (bytes) for the scales solved together in one vmapped batch
_BATCH_BYTES = 1 << 28


class MagnitudeReport(eqx.Module):
    """The arrays that every magnitude engine reports alike, declared once: the common base of
    :class:`MagnitudeResult` (the jit/vmap core's result) and
    :class:`~gflow_jax.magnitude.MagnitudeFunction` (the public report), which add what differs
    (counts, solver codes or names); their docstrings document every field. A core result
    becomes a public report field for field (:func:`report_fields`)."""

    scales: Float[Array, " S"]
    magnitude: Float[Array, " S"]
    weights: Float[Array, "n S"]
    derivative: Float[Array, " S"]
    dimension: Float[Array, " S"]
    positive_magnitude: Float[Array, " S"]
    spread: Float[Array, " S"]
    representative: Int[Array, " n"]
    max_eigenvalue: Float[Array, " S"]
    min_eigenvalue: Float[Array, " S"]
    condition: Float[Array, " S"]
    residual: Float[Array, " S"]


def host_to_jax(a) -> Array:
    """A host (NumPy) result as a JAX array. ``jax.device_put`` copies it; ``jnp.asarray`` would
    also compile a conversion for every new shape (20–70 ms each, ~0.15 s per report of the CPU
    engine at n = 2000)."""
    return jax.device_put(np.asarray(a))


def report_fields(report: MagnitudeReport) -> dict:
    """The :class:`MagnitudeReport` fields of ``report`` by name (to build another report)."""
    return {f.name: getattr(report, f.name) for f in dataclasses.fields(MagnitudeReport)}


class MagnitudeResult(MagnitudeReport):
    """Magnitude of one finite metric space at S scales (pure arrays: a pytree for jit/vmap).

    Attributes:
        scales: ``(S,)`` the scales t (inverse units of the distances).
        magnitude: ``(S,)`` |tX| = Σ_i w_i of the deduplicated space.
        weights: ``(n, S)`` weights aligned with the input rows; a group of k duplicates
            shares its group weight equally (each member gets 1/k of it).
        derivative: ``(S,)`` d|tX|/dt = wᵀ(D∘Z)w (exact, docs/theory.md#magnitude-dimension).
        dimension: ``(S,)`` instantaneous magnitude dimension t·wᵀ(D∘Z)w / Σw.
        positive_magnitude: ``(S,)`` Σ max(w_g, 0) over the groups' weights.
        spread: ``(S,)`` Σ_g 1/Σ_h Z_gh over the deduplicated points.
        representative: ``(n,)`` index of each row's group representative (first member).
        max_eigenvalue: ``(S,)`` upper bound on λ_max(Z) (largest row sum).
        min_eigenvalue: ``(S,)`` upper estimate of λ_min(Z) (Rayleigh quotients, see module).
        condition: ``(S,)`` estimate of κ₂(Z) = max_eigenvalue / min_eigenvalue.
        residual: ``(S,)`` achieved relative residual ‖Zw − b‖₂ / ‖b‖₂.
        n_unique: ``()`` number of distinct points (groups).
        group_size: ``(n,)`` size of each row's group.
        solver: ``(S,)`` solver code per scale: 0 Cholesky, 1 LU fallback, 2 failed
            (:data:`SOLVER_NAMES`).
    """

    n_unique: Int[Array, ""]
    group_size: Int[Array, " n"]
    solver: Int[Array, " S"]


def duplicate_groups(
    D: Float[Array, "n n"],
    duplicate_tol: float | Float[Array, ""] = 0.0,
    valid: Bool[Array, " n"] | None = None,
) -> tuple[Bool[Array, " n"], Int[Array, " n"], Int[Array, " n"]]:
    """Greedy duplicate groups of a distance matrix, in index order (jit/vmap-able).

    Point i starts a new group unless D_ij ≤ ``duplicate_tol`` for an earlier representative j;
    otherwise it joins the first such j. For ``duplicate_tol = 0`` and a metric these are exactly
    the classes of equal points. Rows with ``valid[i] = False`` (padding) belong to no group:
    they are not kept, are their own representative and have group size 1.

    Returns:
        keep: ``(n,)`` True for group representatives.
        representative: ``(n,)`` index of each point's representative.
        group_size: ``(n,)`` size of each point's group.

    ``D`` ``(n, n)``, ``duplicate_tol`` a scalar, ``valid`` ``(n,)``. Batch axis: refused (vmap).
    """
    check = Shapes("duplicate_groups")
    check("D", D, "n n")
    check("duplicate_tol", duplicate_tol, "")
    check("valid", valid, "n")
    n = D.shape[0]
    valid = jnp.ones((n,), dtype=bool) if valid is None else jnp.asarray(valid, dtype=bool)
    close = (D <= duplicate_tol) & valid[:, None] & valid[None, :]

    def body(i, keep):
        return keep.at[i].set(valid[i] & ~jnp.any(close[i] & keep))

    keep = jax.lax.fori_loop(0, n, body, jnp.zeros((n,), dtype=bool))
    first = jnp.argmax(close & keep[None, :], axis=1).astype(jnp.int32)
    representative = jnp.where(valid, first, jnp.arange(n, dtype=jnp.int32))
    counts = jnp.zeros((n,), dtype=jnp.int32).at[representative].add(1)
    return keep, representative, counts[representative]


def split_group_weights(
    group_weights: Float[Array, "n S"],
    representative: Int[Array, " n"],
    group_size: Int[Array, " n"],
) -> Float[Array, "n S"]:
    """Weights aligned with the input rows: each member of a group gets an equal share of the
    group weight held at its representative's row."""
    return group_weights[representative] / group_size[:, None].astype(group_weights.dtype)


def _probe_vector(n: int, dtype) -> Float[Array, " n"]:
    """A fixed, deterministic pseudo-random vector (a sine hash; cheaper to compile than a PRNG)
    for the inverse-iteration estimate of λ_min."""
    i = jnp.arange(n, dtype=dtype)
    v = jnp.sin(i * 12.9898 + 78.233) * 43758.5453
    v = v - jnp.floor(v) - 0.5
    return v / jnp.linalg.norm(v)


def _masked_similarity(D, keep, t):
    pair = keep[:, None] & keep[None, :]
    eye = jnp.eye(D.shape[0], dtype=D.dtype)
    return jnp.where(pair, jnp.exp(-t * D), eye)


def _finish(D, Z, b, t, W):
    """Everything after the solve: ``W`` is ``(n, 2)`` = Z⁻¹[b, r]."""
    w, y = W[:, 0], W[:, 1]
    r = _probe_vector(D.shape[0], D.dtype) * b
    magnitude = jnp.sum(w)
    Zw = Z @ w
    residual = jnp.linalg.norm(Zw - b) / jnp.linalg.norm(b)
    derivative = w @ ((D * Z) @ w)
    row_sums = Z @ b
    spread = jnp.sum(jnp.where(b > 0, 1.0 / row_sums, 0.0))
    lam_max = jnp.max(jnp.where(b > 0, row_sums, 0.0))
    rq_w = magnitude / (w @ w)
    # only the kept block of Z is meaningful; r's masked entries see the identity (λ = 1)
    rq_y = (y @ r) / (y @ y)
    lam_min = jnp.minimum(rq_w, rq_y)
    return dict(
        magnitude=magnitude,
        weights=w,
        derivative=derivative,
        dimension=t * derivative / magnitude,
        positive_magnitude=jnp.sum(jnp.maximum(w, 0.0)),
        spread=spread,
        max_eigenvalue=lam_max,
        min_eigenvalue=lam_min,
        condition=lam_max / lam_min,
        residual=residual,
    )


def _rhs(keep, dtype):
    b = keep.astype(dtype)
    r = _probe_vector(keep.shape[0], dtype) * b
    return jnp.stack([b, r], axis=1)


def _cholesky_solve(D, keep, t):
    """Z⁻¹[b, r] by Cholesky; NaN where the factorisation fails."""
    L = jnp.linalg.cholesky(_masked_similarity(D, keep, t))
    return jax.scipy.linalg.cho_solve((L, True), _rhs(keep, D.dtype))


def _lu_solve(D, keep, t):
    """Z⁻¹[b, r] by LU with partial pivoting."""
    lu, _, perm = jax.lax.linalg.lu(_masked_similarity(D, keep, t))
    B = _rhs(keep, D.dtype)[perm]
    y = jax.lax.linalg.triangular_solve(lu, B, left_side=True, lower=True, unit_diagonal=True)
    return jax.lax.linalg.triangular_solve(lu, y, left_side=True, lower=False)


def default_scale_batch(n: int, n_scales: int) -> int:
    """Scales solved together (vmapped) per step: about 256 MiB of n×n float64 temporaries."""
    per_scale = 4 * 8 * n * n
    return int(max(1, min(n_scales, _BATCH_BYTES // per_scale)))


def magnitude_from_distances(
    D: Float[ArrayLike, "n n"],
    scales: Float[ArrayLike, " S"],
    *,
    duplicate_tol: float | Float[ArrayLike, ""] = 0.0,
    valid: Bool[ArrayLike, " n"] | None = None,
    fallback: bool = True,
    scale_batch: int | None = None,
) -> MagnitudeResult:
    """Magnitude, weights, exact dimension profile and diagnostics from a distance matrix.

    Pure JAX with fixed shapes: jit-able, and vmap-able over a leading batch of ``D`` (e.g.
    ``jax.vmap(magnitude_from_distances, in_axes=(0, None))(Ds, scales)``). ``scales`` is an
    array, so new values of the same length do not recompile. No input validation happens here
    (it would need host round trips): ``D`` must be a symmetric, non-negative ``(n, n)`` float64
    distance matrix with a zero diagonal and ``scales`` positive; the public functions of
    :mod:`gflow_jax.magnitude` check their inputs and then call this function.

    Args:
        D: ``(n, n)`` distances (units of length).
        scales: ``(S,)`` scales t > 0 (inverse length).
        duplicate_tol: points at distance ≤ this are merged (0: exact duplicates only).
        valid: optional ``(n,)`` mask; rows marked False are padding, excluded exactly like
            merged duplicates (weight 0). Lets clouds of different sizes share one shape (and
            one compilation): pad D with zeros and mark the padding invalid.
        fallback: re-solve scales whose Cholesky factorisation failed by LU (a sequential pass
            that costs nothing when every factorisation succeeds; under ``vmap`` it becomes a
            select and computes the LU solve for every scale, so vmapped callers may prefer
            ``fallback=False``, which reports such scales as failed with NaN results).
        scale_batch: scales solved together in one vmapped step (memory ≈ 4·scale_batch·n²
            float64 per cloud); default about 256 MiB worth, at least 1.

    Returns:
        :class:`MagnitudeResult` (docs/theory.md#magnitude: Z w = 1, |tX| = Σw, d|tX|/dt =
        wᵀ(D∘Z)w).

    Batch axis: refused (vmap over a batch of ``D``, as above; shapes are static, so the check
    costs nothing under jit).
    """
    D = jnp.asarray(D)
    if not jnp.issubdtype(D.dtype, jnp.floating):
        D = D.astype(jnp.float64)
    scales = jnp.asarray(scales, dtype=D.dtype)
    check = Shapes("magnitude_from_distances")
    check("D", D, "n n")
    check("scales", scales, "S")
    check("valid", valid, "n")
    if scales.shape[0] == 0:
        check.fail("scales", "must hold at least one scale")
    n, S = D.shape[0], scales.shape[0]
    keep, representative, group_size = duplicate_groups(D, duplicate_tol, valid)
    batch = default_scale_batch(n, S) if scale_batch is None else max(1, int(scale_batch))

    W = jax.lax.map(lambda t: _cholesky_solve(D, keep, t), scales, batch_size=batch)
    ok = jnp.all(jnp.isfinite(W), axis=(1, 2))
    solver = jnp.where(ok, CHOLESKY, FAILED).astype(jnp.int32)
    if fallback:
        # sequential, so that only the scales whose factorisation failed pay for LU
        W = jax.lax.map(
            lambda a: jax.lax.cond(a[2], lambda: a[1], lambda: _lu_solve(D, keep, a[0])),
            (scales, W, ok),
        )
        solver = jnp.where(ok, CHOLESKY, jnp.where(jnp.all(jnp.isfinite(W), (1, 2)), LU, FAILED))
    b = keep.astype(D.dtype)
    out = jax.lax.map(
        lambda a: _finish(D, _masked_similarity(D, keep, a[0]), b, a[0], a[1]),
        (scales, W),
        batch_size=batch,
    )
    out["solver"] = jnp.where(
        jnp.isfinite(out["residual"]), solver, jnp.asarray(FAILED, solver.dtype)
    ).astype(jnp.int32)
    return result_of(scales, out, keep, representative, group_size, out["solver"])


def result_of(scales, out: dict, keep, representative, group_size, solver) -> MagnitudeResult:
    """The :class:`MagnitudeResult` of per-scale solves ``out`` (the fields of :func:`_finish`
    stacked over scales, weights ``(S, n)`` of the deduplicated space), with each duplicate
    group's weight split equally among its members and the solver codes ``solver`` ``(S,)``."""
    return MagnitudeResult(
        scales=scales,
        magnitude=out["magnitude"],
        weights=split_group_weights(out["weights"].T, representative, group_size),
        derivative=out["derivative"],
        dimension=out["dimension"],
        positive_magnitude=out["positive_magnitude"],
        spread=out["spread"],
        n_unique=jnp.sum(keep).astype(jnp.int32),
        representative=representative,
        group_size=group_size,
        max_eigenvalue=out["max_eigenvalue"],
        min_eigenvalue=out["min_eigenvalue"],
        condition=out["condition"],
        residual=out["residual"],
        solver=solver.astype(jnp.int32),
    )
