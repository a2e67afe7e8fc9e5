"""Magnitude of finite metric spaces: magnitude function, weights, exact dimension profile,
positive magnitude and spread (docs/theory.md#magnitude).

Scale convention (stated in every result): Z(t)_ij = exp(−t·d(x_i, x_j)), t > 0 in inverse units
of the distances; |tX| = Σ_i w_i with Z(t) w = 1; built per scale as exp(−t·D), never as
exp(−D)**t (which underflows for distances ≳ 700).

One mechanism serves every public function: :func:`magnitude_function` checks its inputs,
computes the distances (:func:`pairwise_distances`, chunked, float64), merges exact duplicates
(kept in a map back to the input rows: weights stay aligned with the input) and solves with one
of three engines, which produce the same report, :class:`MagnitudeFunction`:

* ``method="cholesky"`` — :func:`magnitude_from_distances`, pure JAX,
  one Cholesky factorisation per scale batched over scales (CPU or GPU), LU fallback reported;
* ``method="adaptive"`` — :func:`solve_adaptive`, on the host (NumPy/LAPACK, nothing to
  compile): CG at large scales, CG preconditioned by a neighbouring scale's (float32 or float64)
  Cholesky factor, and Cholesky, each iterative result checked against ``rtol`` and otherwise
  re-solved directly;
* ``method="device"`` — :mod:`gflow_jax.magnitude._device`, the accelerator engine:
  distances, duplicates and one factorisation per scale on the device, batched over scales from
  its free memory, every scale's float64 residual refined to ``rtol`` and reported;
* ``method="auto"`` (default) — ``device`` on a GPU or TPU; on CPU ``adaptive`` for ≥ 1024
  distinct points, else ``cholesky`` (the rule :func:`~gflow_jax.magnitude._adaptive.use_adaptive`,
  shared with :func:`~gflow_jax.magnitude.cloud_magnitudes`).

Duplicates and conditioning are reported, never hidden: ``n_unique``, ``duplicate_groups()``,
a condition estimate, the solver and the relative residual of every scale. A warning is issued
when a scale's condition estimate exceeds 1e12 (relative accuracy of the weights ≈ κ·1e-16) or
a solve failed.
"""

from __future__ import annotations

import math
import warnings
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ..core import on_accelerator
from ..core._shapes import Shapes
from . import _host
from ._adaptive import AdaptiveSettings, solve_adaptive, use_adaptive
from ._clouds import bucket_size
from ._core import (
    SOLVER_NAMES,
    MagnitudeReport,
    MagnitudeResult,
    duplicate_groups,
    host_to_jax,
    magnitude_from_distances,
    report_fields,
)
from ._device import cut_back, device_distances, device_magnitude
from ._distances import canonical_metric, check_points, checked_host, distance_matrix

SCALE_CONVENTION = "Z_ij = exp(-t d_ij); t in inverse units of the distances"
#: condition estimates above this trigger a warning
ILL_CONDITIONED = 1e12
Method = Literal["auto", "cholesky", "adaptive", "device"]


class MagnitudeFunction(MagnitudeReport):
    """The magnitude function of a point cloud at S scales, with everything needed to trust it.

    Attributes:
        scales: ``(S,)`` scales t (inverse units of the distances), as given.
        magnitude: ``(S,)`` |tX| of the set of distinct points.
        weights: ``(n, S)`` weights aligned with the input rows; k exact duplicates share their
            point's weight equally (so the weights sum to |tX| and solve the input's Z w = 1).
        derivative: ``(S,)`` d|tX|/dt = wᵀ(D∘Z)w (exact).
        dimension: ``(S,)`` instantaneous magnitude dimension t·wᵀ(D∘Z)w/|tX| (exact).
        positive_magnitude: ``(S,)`` Σ max(w, 0) over distinct points.
        spread: ``(S,)`` Σ_i 1/Σ_j Z_ij over distinct points.
        n_points: number of input rows n.
        n_unique: number of distinct points.
        representative: ``(n,)`` for each row, the first row equal to it.
        condition: ``(S,)`` estimate of κ₂(Z) (see :mod:`gflow_jax.magnitude._core`).
        min_eigenvalue, max_eigenvalue: ``(S,)`` the two halves of that estimate.
        residual: ``(S,)`` achieved relative residual ‖Zw − 1‖₂/‖1‖₂ per scale.
        iterations: ``(S,)`` CG iterations per scale (0 for direct solves; the device engine:
            refinement steps).
        solver: per scale, ``"cholesky"``, ``"cholesky32"`` (a float32 factor refined to
            ``rtol`` by float64 CG), ``"lu"`` (fallback), ``"cg"``, ``"pcg"`` (preconditioned by
            a neighbouring scale's factor) or ``"failed"``.
        method: the engine used (``"cholesky"``, ``"adaptive"`` or ``"device"``).
        metric: the metric of the distances.
        scale_convention: how t enters Z.
    """

    iterations: Int[Array, " S"]
    n_points: int = eqx.field(static=True)
    n_unique: int = eqx.field(static=True)
    solver: tuple[str, ...] = eqx.field(static=True)
    method: str = eqx.field(static=True)
    metric: str = eqx.field(static=True)
    scale_convention: str = eqx.field(static=True, default=SCALE_CONVENTION)

    def duplicate_groups(self) -> list[list[int]]:
        """Groups of input rows holding the same point (only groups of two or more)."""
        rep = np.asarray(self.representative)
        groups: dict[int, list[int]] = {}
        for i, r in enumerate(rep.tolist()):
            groups.setdefault(r, []).append(i)
        return [g for g in groups.values() if len(g) > 1]

    def table(self) -> str:
        """A plain-text table: scale, magnitude, dimension, condition, solver, residual."""
        lines = [
            f"# n = {self.n_points} points, {self.n_unique} distinct; metric {self.metric};"
            f" {self.scale_convention}; engine {self.method}",
            f"{'t':>12} {'|tX|':>16} {'dim(t)':>10} {'PMag':>14} {'cond':>10} "
            f"{'solver':>8} {'iters':>5} {'residual':>9}",
        ]
        for k in range(self.scales.shape[0]):
            lines.append(
                f"{float(self.scales[k]):12.6g} {float(self.magnitude[k]):16.10g} "
                f"{float(self.dimension[k]):10.6f} {float(self.positive_magnitude[k]):14.8g} "
                f"{float(self.condition[k]):10.3g} {self.solver[k]:>8} "
                f"{int(self.iterations[k]):5d} {float(self.residual[k]):9.2e}"
            )
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# input checks


def _check_scales(scales: ArrayLike, function: str = "magnitude_function") -> np.ndarray:
    s = np.atleast_1d(np.asarray(scales, dtype=np.float64))
    check = Shapes(function)
    check("scales", s, "S")
    if s.size == 0:
        check.fail("scales", "must hold at least one scale")
    if not np.all(np.isfinite(s)):
        check.fail("scales", "contain NaN or inf")
    if np.any(s <= 0):
        check.fail("scales", "must be positive (t > 0)")
    return s


def _check_method(method: str) -> str:
    if method not in ("auto", "cholesky", "adaptive", "device"):
        raise ValueError(
            f"unknown method {method!r}: expected 'auto', 'cholesky', 'adaptive' or 'device'"
        )
    return method


_core = jax.jit(magnitude_from_distances, static_argnames=("fallback", "scale_batch"))
_groups = jax.jit(duplicate_groups)


def _padded_core(D, s, duplicate_tol) -> MagnitudeResult:
    """The JAX core on D and scales padded to bucketed shapes, then cut back to (n, S)."""
    n, S = D.shape[0], s.size
    nb, Sb = bucket_size(n), -(-S // 8) * 8
    Dp = jnp.zeros((nb, nb), dtype=D.dtype).at[:n, :n].set(D)
    sp = jnp.asarray(np.concatenate([s, np.full(Sb - S, s[-1])]))
    valid = jnp.arange(nb) < n
    return cut_back(_core(Dp, sp, duplicate_tol=duplicate_tol, valid=valid), n, S)


def _engine(method: str, n_unique: int) -> str:
    if method != "auto":
        return method
    return "adaptive" if use_adaptive(n_unique) else "cholesky"


def _host_groups(D, method: str, duplicate_tol: float):
    """Duplicate groups computed on the host (NumPy) when the CPU engine may be chosen, else
    None: the adaptive path then compiles nothing for a new n."""
    if method == "cholesky" or (method == "auto" and not use_adaptive(np.inf)):
        return None
    return _host.duplicate_groups(np.asarray(D), duplicate_tol)


def _from_core(
    result: MagnitudeResult, metric: str, method: str = "cholesky", iterations=None
) -> MagnitudeFunction:
    codes = np.asarray(result.solver).tolist()
    if iterations is None:
        iterations = jnp.zeros(result.scales.shape, dtype=jnp.int32)
    return MagnitudeFunction(
        **report_fields(result),
        iterations=iterations,
        n_points=int(result.weights.shape[0]),
        n_unique=int(result.n_unique),
        solver=tuple(SOLVER_NAMES[c] for c in codes),
        method=method,
        metric=metric,
    )


def _on_device(X, scales, metric, duplicate_tol, rtol, function) -> MagnitudeFunction:
    """The accelerator engine: distances computed on the device (or a precomputed matrix
    checked there), then :func:`~gflow_jax.magnitude._device.device_magnitude`."""
    D = distance_matrix(X, metric, function) if metric == "precomputed" else None
    if D is None:
        D = device_distances(check_points(X, "X", function), metric)
    result, iterations = device_magnitude(D, scales, duplicate_tol=duplicate_tol, rtol=rtol)
    return _from_core(result, metric, "device", iterations)


def _adaptive(D, scales, metric, groups, rtol, progress) -> MagnitudeFunction:
    keep, representative, group_size = groups
    index = np.flatnonzero(keep)
    D = np.asarray(D)
    Du = D if index.size == D.shape[0] else D[np.ix_(index, index)]
    out = solve_adaptive(Du, scales, AdaptiveSettings(rtol=rtol, progress=progress))
    # group weights sit at the representatives' rows; members share them equally
    position = np.full(D.shape[0], -1)
    position[index] = np.arange(index.size)
    weights = out["weights"][position[representative]] / group_size[:, None]
    magnitude = out["magnitude"]
    return MagnitudeFunction(
        scales=host_to_jax(scales),
        magnitude=host_to_jax(magnitude),
        weights=host_to_jax(weights),
        derivative=host_to_jax(out["derivative"]),
        dimension=host_to_jax(scales * out["derivative"] / magnitude),
        positive_magnitude=host_to_jax(out["positive_magnitude"]),
        spread=host_to_jax(out["spread"]),
        representative=host_to_jax(representative),
        condition=host_to_jax(out["condition"]),
        min_eigenvalue=host_to_jax(out["min_eigenvalue"]),
        max_eigenvalue=host_to_jax(out["max_eigenvalue"]),
        residual=host_to_jax(out["residual"]),
        iterations=host_to_jax(out["iterations"]),
        n_points=int(D.shape[0]),
        n_unique=int(index.size),
        solver=tuple(out["solver"]),
        method="adaptive",
        metric=metric,
    )


def _warn(result: MagnitudeFunction) -> None:
    failed = [i for i, s in enumerate(result.solver) if s == "failed"]
    if failed:
        warnings.warn(
            f"magnitude: the solve failed at {len(failed)} scale(s) (t = "
            f"{', '.join(f'{float(result.scales[i]):.4g}' for i in failed[:5])}); their results"
            " are NaN",
            RuntimeWarning,
            stacklevel=3,
        )
    cond = np.asarray(result.condition)
    bad = np.flatnonzero(~(cond < ILL_CONDITIONED))
    bad = [i for i in bad.tolist() if i not in failed]
    if bad:
        warnings.warn(
            f"magnitude: Z is near-singular at {len(bad)} scale(s) (condition estimate up to "
            f"{np.nanmax(cond[bad]):.3g} at t = {float(result.scales[bad[0]]):.4g}); expect a "
            "relative error of about condition × 1e-16 in the weights",
            RuntimeWarning,
            stacklevel=3,
        )


def magnitude_function(
    X: ArrayLike,
    scales: ArrayLike,
    *,
    metric: str = "euclidean",
    method: Method = "auto",
    duplicate_tol: float = 0.0,
    rtol: float = 1e-12,
    progress: bool = False,
) -> MagnitudeFunction:
    """The magnitude function of a point cloud with weights, exact dimension profile, PMag,
    spread and per-scale diagnostics (docs/theory.md#magnitude).

    Args:
        X: ``(n, p)`` points, or with ``metric="precomputed"`` an ``(n, n)`` distance matrix.
        scales: ``(S,)`` scales t > 0 (any order; results follow it).
        metric: ``"euclidean"``, ``"cityblock"`` (ℓ1), ``"chebyshev"`` (ℓ∞) or
            ``"precomputed"``.
        method: ``"auto"``, ``"cholesky"`` (JAX, any device), ``"adaptive"`` (CPU host
            engine; see :mod:`gflow_jax.magnitude._adaptive`) or ``"device"`` (the accelerator
            engine, :mod:`gflow_jax.magnitude._device`; ``auto`` on a GPU or TPU).
        duplicate_tol: points at distance ≤ this are merged (0: exact duplicates only).
        rtol: relative residual every iterative solve must reach (adaptive engine), and that
            the device engine refines every scale towards.
        progress: a tqdm bar over scales (adaptive engine; useful for n ≳ 10⁴).

    Returns:
        :class:`MagnitudeFunction`.

    Raises:
        ValueError: NaN/inf in ``X``, wrong shapes, non-positive scales, an invalid precomputed
            distance matrix, or an unknown metric or method.

    Batch axis: refused (one cloud ``X``; :func:`~gflow_jax.magnitude.cloud_magnitudes`
    solves many); ``scales`` must be ``(S,)`` (a scalar is read as one scale).
    """
    return _magnitude_function(
        "magnitude_function", X, scales, metric, method, duplicate_tol, rtol, progress
    )


def _called_as(function: str, X: ArrayLike, scales: ArrayLike, **options) -> MagnitudeFunction:
    """:func:`magnitude_function` for the public ``function`` that forwards its keywords
    ``options`` to it: those left out take the defaults of :func:`magnitude_function`'s
    signature (declared there once)."""
    options = {**magnitude_function.__kwdefaults__, **options}
    return _magnitude_function(function, X, scales, **options)


def _magnitude_function(
    function: str,
    X: ArrayLike,
    scales: ArrayLike,
    metric: str,
    method: Method,
    duplicate_tol: float,
    rtol: float,
    progress: bool,
) -> MagnitudeFunction:
    """:func:`magnitude_function` with errors naming ``function`` (the public caller)."""
    metric = canonical_metric(metric)
    method = _check_method(method)
    s = _check_scales(scales, function)
    if not (duplicate_tol >= 0 and math.isfinite(duplicate_tol)):
        raise ValueError(f"{function}: duplicate_tol must be finite and ≥ 0, got {duplicate_tol}")
    if method == "device" or (method == "auto" and on_accelerator()):
        result = _on_device(X, s, metric, duplicate_tol, rtol, function)
        _warn(result)
        return result
    # a precomputed matrix stays on the host (NumPy): the CPU engine reads it there, and the
    # JAX core converts it itself (a 32 MB copy saved at n = 2000)
    if metric == "precomputed":
        D = checked_host(X, name="X", function=function)
    else:
        D = distance_matrix(X, metric, function)
    groups = _host_groups(D, method, duplicate_tol)
    engine = "cholesky" if groups is None else _engine(method, int(groups[0].sum()))
    if engine == "cholesky":
        result = _from_core(_padded_core(D, s, duplicate_tol), metric)
    else:
        result = _adaptive(D, s, metric, groups, rtol, progress)
    _warn(result)
    return result


def magnitude(
    X: ArrayLike, scales: ArrayLike, *, metric: str = "euclidean", **kwargs
) -> Float[Array, " S"]:
    """|tX| at each scale, ``(S,)``: |tX| = 1ᵀZ(t)⁻¹1 of the distinct points
    (docs/theory.md#magnitude).

    Example:
        Two points at distance 1 (docs/theory.md#oracles): |tX| = 2/(1 + e^{−t}).

        >>> import numpy as np
        >>> np.round(np.asarray(magnitude(np.array([[0.0], [1.0]]), [1.0, 2.0])), 8).tolist()
        [1.46211716, 1.76159416]

    Batch axis: refused, as :func:`magnitude_function`.
    """
    return _called_as("magnitude", X, scales, metric=metric, **kwargs).magnitude


def magnitude_weights(
    X: ArrayLike, scales: ArrayLike, *, metric: str = "euclidean", **kwargs
) -> Float[Array, "n S"]:
    """Weights w(t) with Z(t) w = 1, ``(n, S)``, aligned with the input rows (duplicates share
    their point's weight equally). Batch axis: refused, as :func:`magnitude_function`."""
    return _called_as("magnitude_weights", X, scales, metric=metric, **kwargs).weights


def magnitude_dimension_profile(
    X: ArrayLike, scales: ArrayLike, *, metric: str = "euclidean", **kwargs
) -> Float[Array, " S"]:
    """Instantaneous magnitude dimension dim(t) = d log|tX| / d log t = t·wᵀ(D∘Z)w / Σw,
    ``(S,)``, from the exact derivative (no finite differences). Batch axis: refused, as
    :func:`magnitude_function`."""
    return _called_as("magnitude_dimension_profile", X, scales, metric=metric, **kwargs).dimension


def positive_magnitude(
    X: ArrayLike, scales: ArrayLike, *, metric: str = "euclidean", **kwargs
) -> Float[Array, " S"]:
    """PMag(tX) = Σ_i max(w_i, 0), ``(S,)``. Batch axis: refused, as
    :func:`magnitude_function`."""
    return _called_as("positive_magnitude", X, scales, metric=metric, **kwargs).positive_magnitude


def spread(
    X: ArrayLike, scales: ArrayLike, *, metric: str = "euclidean", **kwargs
) -> Float[Array, " S"]:
    """Spread E(tX) = Σ_i 1/Σ_j Z_ij over the distinct points, ``(S,)``. Batch axis: refused,
    as :func:`magnitude_function`."""
    return _called_as("spread", X, scales, metric=metric, **kwargs).spread
