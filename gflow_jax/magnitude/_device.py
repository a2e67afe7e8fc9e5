"""The accelerator engine for magnitude: distances, duplicate groups and one float64 factorisation
per scale, all on the device, batched over scales (and over clouds), with every scale verified
(docs/theory.md#magnitude, docs/theory.md#magnitude-numerics).

On a GPU or TPU the CPU engines would leave the device idle: the adaptive engine runs NumPy/SciPy
LAPACK on the host, and copying every n×n matrix across costs as much as solving it there. This
engine keeps everything in one compiled program per shape (no host round trip inside):

* **distances** from coordinate differences, ``√Σ_k (x_ik − x_jk)²`` (or Σ|·|, max|·|), in
  row blocks and coordinate chunks: exact to rounding, exactly symmetric, exactly 0 between
  duplicates (no Gram-identity cancellation, so nothing to recompute on the host);
* **duplicates** merged by masking, as in :func:`~gflow_jax.magnitude.magnitude_from_distances`
  (groups in index order, weights split equally, nothing perturbed);
* **solves**: per scale t, Z(t) = exp(−t·D) is factorised once (Cholesky; a scale whose
  factorisation fails is solved again by LU in a second program, and reported as such), the
  weighting w of Z w = 1 and the probe solve of the condition estimate come from the factor, and
  the float64 relative residual ‖Zw − 1‖₂/‖1‖₂ is computed explicitly. While it exceeds ``rtol``
  (the adaptive CPU engine's requirement, 1e-12 by default), up to :data:`MAX_REFINEMENTS` steps
  of iterative refinement w ← w + Z⁻¹(1 − Zw) reuse the factor. The residual achieved, the
  refinement steps (``iterations``), the solver and the condition estimate of every scale are
  reported, exactly as the CPU engines report them;
* **batching**: ``jax.lax.map`` over scales in steps of :func:`scales_per_step` scales, chosen
  from the device's free memory (Z, its factor, D∘Z and temporaries: planned as 6 n×n float64
  per scale);
  many clouds (:func:`cloud_kernel`) are vmapped over clouds and scales, :func:`clouds_per_call`
  clouds per call.

On a CPU device the engine runs too (tests compare it with the CPU engines there), with the CPU
engines' 256 MiB working budget: batching scales buys nothing on a CPU, whose memory is shared.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ..core import default_device, device_memory
from ._core import (
    CHOLESKY,
    FAILED,
    LU,
    MagnitudeResult,
    _finish,
    _masked_similarity,
    _rhs,
    duplicate_groups,
    result_of,
)

#: most refinement steps per scale (each: one product with Z and two triangular solves)
MAX_REFINEMENTS = 3
#: fraction of an accelerator's free memory the engine plans to use
MEMORY_FRACTION = 0.5
# working budget on a CPU device (bytes), as the CPU engines
_CPU_BUDGET = 1 << 28
# elements of one distance block (rows × n × coordinates), float64: 2^25 = 256 MiB
_BLOCK_ELEMENTS = 1 << 25


# ---------------------------------------------------------------------------------------------
# memory


def memory_budget(device: jax.Device | None = None) -> int:
    """Bytes the engine may plan to use on ``device`` (default: JAX's default device):
    :data:`MEMORY_FRACTION` of its free memory on an accelerator, 256 MiB on a CPU."""
    device = default_device() if device is None else device
    free = device_memory(device)
    if device.platform == "cpu":
        return min(_CPU_BUDGET, free or _CPU_BUDGET)
    return int(MEMORY_FRACTION * (free or _CPU_BUDGET))


def scale_bytes(n: int) -> int:
    """Device memory planned for one scale of an n-point space: Z, its factor, D∘Z and
    temporaries (exp(−tD) before masking, products), 6 n×n float64."""
    return 6 * 8 * n * n


def scales_per_step(n: int, n_scales: int, device: jax.Device | None = None) -> int:
    """Scales factorised together for one n-point space: what fits in :func:`memory_budget`
    beside D (at least 1, at most ``n_scales``)."""
    room = memory_budget(device) - 9 * n * n  # D (float64) and the duplicate mask (bool)
    return int(max(1, min(n_scales, room // scale_bytes(n))))


def clouds_per_call(n: int, n_scales: int, n_clouds: int, device: jax.Device | None = None) -> int:
    """Clouds of (padded) size n solved together at ``n_scales`` scales each: what fits in
    :func:`memory_budget`, at most the power of two ≥ ``n_clouds`` (no padding clouds beyond)."""
    fit = memory_budget(device) // (n_scales * (scale_bytes(n) + 9 * n * n))
    return int(max(1, min(fit, 1 << max(0, int(n_clouds) - 1).bit_length())))


def padded_size(n: int) -> int:
    """The padded size of an n-point space (one compilation per size): a power of two up to 64,
    then a multiple of 128 (at most ~(1 + 128/n)³ extra work)."""
    if n <= 64:
        return max(8, 1 << max(0, n - 1).bit_length())
    return -(-n // 128) * 128


# ---------------------------------------------------------------------------------------------
# distances


def _block_shape(n: int, p: int) -> tuple[int, int]:
    cols = int(max(1, min(p, _BLOCK_ELEMENTS // max(1, n))))
    rows = int(max(1, min(n, _BLOCK_ELEMENTS // (n * cols))))
    return rows, cols


@functools.partial(jax.jit, static_argnames=("metric", "rows", "cols"))
def _distances(X, metric: str, rows: int, cols: int):
    n, p = X.shape
    n_blocks, n_chunks = -(-n // rows), -(-p // cols)
    Xp = jnp.zeros((n, n_chunks * cols), X.dtype).at[:, :p].set(X)  # zero columns add nothing
    Xr = jnp.zeros((n_blocks * rows, Xp.shape[1]), X.dtype).at[:n].set(Xp)

    def block(xb):
        def chunk(k, acc):
            a = jax.lax.dynamic_slice_in_dim(xb, k * cols, cols, axis=1)
            b = jax.lax.dynamic_slice_in_dim(Xp, k * cols, cols, axis=1)
            diff = a[:, None, :] - b[None, :, :]
            if metric == "euclidean":
                return acc + jnp.sum(diff * diff, axis=2)
            if metric == "cityblock":
                return acc + jnp.sum(jnp.abs(diff), axis=2)
            return jnp.maximum(acc, jnp.max(jnp.abs(diff), axis=2))

        return jax.lax.fori_loop(0, n_chunks, chunk, jnp.zeros((rows, n), X.dtype))

    D = jax.lax.map(block, Xr.reshape(n_blocks, rows, -1)).reshape(-1, n)[:n]
    D = jnp.sqrt(D) if metric == "euclidean" else D
    D = 0.5 * (D + D.T)  # exactly symmetric already; guarantees it whatever the reduction order
    return jnp.where(jnp.eye(n, dtype=bool), 0.0, D)


def device_distances(X: Float[ArrayLike, "n p"], metric: str = "euclidean") -> Float[Array, "n n"]:
    """The ``(n, n)`` distances of the rows of ``X`` on the device, from coordinate differences
    (``"euclidean"``, ``"cityblock"``, ``"chebyshev"``), in blocks of at most 2²⁵ elements."""
    X = jnp.asarray(X, dtype=jnp.float64)
    rows, cols = _block_shape(X.shape[0], X.shape[1])
    return _distances(X, metric, rows, cols)


# ---------------------------------------------------------------------------------------------
# one space, every scale


def _refine(Z, solve, B, rtol, max_refine: int):
    """``solve(B)`` (B = [b, r]), then refinement of the first column while its relative
    residual exceeds ``rtol``; returns the solution and the number of refinement steps."""
    b = B[:, 0]
    norm_b = jnp.linalg.norm(b)
    W = solve(B)

    def residual(w):
        return jnp.linalg.norm(Z @ w - b) / norm_b

    def more(state):
        _, k, r = state
        return (k < max_refine) & (r > rtol)  # False for NaN: a failed factor stops at once

    def step(state):
        w, k, _ = state
        w = w + solve((b - Z @ w)[:, None])[:, 0]
        return w, k + 1, residual(w)

    w0 = W[:, 0]
    w, k, _ = jax.lax.while_loop(more, step, (w0, jnp.int32(0), residual(w0)))
    return W.at[:, 0].set(w), k


def _solve_scale(D, keep, t, rtol, max_refine: int, lu: bool) -> dict:
    """Weights and report of one scale: factorise Z(t), solve, refine, finish."""
    Z = _masked_similarity(D, keep, t)
    if lu:
        factor, _, perm = jax.lax.linalg.lu(Z)

        def solve(B):
            y = jax.lax.linalg.triangular_solve(
                factor, B[perm], left_side=True, lower=True, unit_diagonal=True
            )
            return jax.lax.linalg.triangular_solve(factor, y, left_side=True, lower=False)

    else:
        L = jnp.linalg.cholesky(Z)

        def solve(B):
            return jax.scipy.linalg.cho_solve((L, True), B)

    W, k = _refine(Z, solve, _rhs(keep, D.dtype), rtol, max_refine)
    out = _finish(D, Z, keep.astype(D.dtype), t, W)
    out["iterations"] = k
    return out


def device_core(
    D: Float[Array, "n n"],
    scales: Float[Array, " S"],
    duplicate_tol: Float[ArrayLike, ""],
    rtol: Float[ArrayLike, ""],
    valid: Bool[Array, " n"] | None = None,
    *,
    scale_batch: int,
    max_refine: int = MAX_REFINEMENTS,
    lu: bool = False,
) -> tuple[MagnitudeResult, Int[Array, " S"]]:
    """Magnitude of one (padded) space at every scale: pure JAX, jit- and vmap-able.

    ``scale_batch`` scales are factorised together (vmapped) per step of a ``lax.map``;
    ``lu=True`` factorises by LU instead of Cholesky (the second pass for scales whose Cholesky
    factorisation failed). Returns the :class:`MagnitudeResult` (``solver``: 0 Cholesky, 1 LU,
    2 failed) and the refinement steps per scale ``(S,)``.
    """
    keep, representative, group_size = duplicate_groups(D, duplicate_tol, valid)
    out = jax.lax.map(
        lambda t: _solve_scale(D, keep, t, rtol, max_refine, lu), scales, batch_size=scale_batch
    )
    solver = jnp.where(jnp.isfinite(out["residual"]), LU if lu else CHOLESKY, FAILED)
    result = result_of(scales, out, keep, representative, group_size, solver)
    return result, out["iterations"]


_device_core = jax.jit(device_core, static_argnames=("scale_batch", "max_refine", "lu"))


_PER_SCALE = (
    "scales",
    "magnitude",
    "derivative",
    "dimension",
    "positive_magnitude",
    "spread",
    "max_eigenvalue",
    "min_eigenvalue",
    "condition",
    "residual",
    "solver",
)


def _replace_scales(result: MagnitudeResult, again: MagnitudeResult, index, m: int):
    """``result`` with the scales ``index`` taken from the first ``m`` scales of ``again``."""
    fields = {k: getattr(result, k).at[index].set(getattr(again, k)[:m]) for k in _PER_SCALE}
    weights = result.weights.at[:, index].set(again.weights[:, :m])
    return _rebuild(result, weights, fields)


def _rebuild(result: MagnitudeResult, weights, fields: dict, n: int | None = None):
    n = result.weights.shape[0] if n is None else n
    return MagnitudeResult(
        weights=weights,
        n_unique=result.n_unique,
        representative=result.representative[:n],
        group_size=result.group_size[:n],
        **fields,
    )


def device_magnitude(
    D: Float[Array, "n n"],
    scales: np.ndarray,
    *,
    duplicate_tol: float = 0.0,
    rtol: float = 1e-12,
) -> tuple[MagnitudeResult, Int[Array, " S"]]:
    """Magnitude of the distance matrix ``D`` (on the device) at ``scales`` ``(S,)``: one
    compiled program (D padded to :func:`padded_size`, scales to a multiple of 8), then an LU
    program for the scales whose Cholesky factorisation failed, if any. Inputs are checked by
    the caller (:func:`~gflow_jax.magnitude.magnitude_function`). Returns the result cut back to
    ``(n, S)`` and the refinement steps per scale."""
    n, S = D.shape[0], len(scales)
    nb, Sb = padded_size(n), -(-S // 8) * 8
    Dp = jnp.zeros((nb, nb), D.dtype).at[:n, :n].set(D)
    sp = jnp.asarray(np.concatenate([scales, np.full(Sb - S, scales[-1])]), dtype=D.dtype)
    valid = jnp.arange(nb) < n
    tol, rt = jnp.asarray(duplicate_tol, D.dtype), jnp.asarray(rtol, D.dtype)
    batch = scales_per_step(nb, Sb)
    result, iterations = _device_core(Dp, sp, tol, rt, valid, scale_batch=batch)
    failed = np.flatnonzero(np.asarray(result.solver)[:S] == FAILED)  # after the whole solve
    if failed.size:
        k = -(-failed.size // 8) * 8
        again_s = sp[np.concatenate([failed, np.full(k - failed.size, failed[-1])])]
        again, again_it = _device_core(Dp, again_s, tol, rt, valid, scale_batch=1, lu=True)
        index = jnp.asarray(failed)
        result = _replace_scales(result, again, index, failed.size)
        iterations = iterations.at[index].set(again_it[: failed.size])
    return cut_back(result, n, S), iterations[:S]


def cut_back(result: MagnitudeResult, n: int, S: int) -> MagnitudeResult:
    """The result of a solve padded to bucketed shapes (padding rows last, masked out by
    ``valid``; padding scales last) cut back to its first ``n`` rows and ``S`` scales."""
    fields = {k: getattr(result, k)[:S] for k in _PER_SCALE}
    return _rebuild(result, result.weights[:n, :S], fields, n)


# ---------------------------------------------------------------------------------------------
# many clouds


def _one_cloud(x, valid, scales, duplicate_tol, rtol) -> dict:
    D = _cloud_distances(x)
    r, _ = device_core(D, scales, duplicate_tol, rtol, valid, scale_batch=scales.shape[0])
    out = {
        k: getattr(r, k)
        for k in ("magnitude", "dimension", "positive_magnitude", "n_unique", "condition")
    }
    out.update(residual=r.residual, solver=r.solver)
    out["diameter"] = jnp.max(jnp.where(valid[:, None] & valid[None, :], D, 0.0))
    return out


def _cloud_distances(x: Float[Array, "B M"]) -> Float[Array, "B B"]:
    diff = x[:, None, :] - x[None, :, :]
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


@jax.jit
def cloud_kernel(
    X: Float[Array, "K B M"],
    valid: Bool[Array, "K B"],
    scales: Float[Array, "K S"],
    duplicate_tol: Float[Array, ""],
    rtol: Float[ArrayLike, ""] = 1e-12,
) -> dict:
    """Every cloud of a chunk × every scale in one program (vmapped over clouds and scales),
    Cholesky with refinement to ``rtol``; the keys of the many-clouds engine
    (:func:`~gflow_jax.magnitude.cloud_magnitudes`), ``solver`` 2 where a factorisation failed."""
    return jax.vmap(lambda x, v, s: _one_cloud(x, v, s, duplicate_tol, rtol))(X, valid, scales)
