"""The one engine for the magnitude of many point clouds at once (docs/theory.md#magnitude).

Saved states of a trajectory (truncated data x̃(s), hidden representations x⁽ℓ⁾(s)), probe
representations over training and windows of checkpoints are all *many* clouds of modest size.
:func:`cloud_magnitudes` solves them together:

* exact duplicates are removed on the host first (``np.unique``, ``compact=True``): at collapse
  many points coincide *exactly*, Z would be singular, and the magnitude is that of the distinct
  points (duplicates merged, never perturbed: docs/theory.md#magnitude-numerics); the work per
  cloud is then O(S·n_unique³), not O(S·n³);
* every cloud is padded to a size bucket (:func:`bucket_size`) and each bucket is solved by one
  compiled program, vmapped over a fixed-size chunk of clouds and over all scales
  (:func:`~gflow_jax.magnitude.magnitude_from_distances`: one float64 Cholesky per cloud and
  scale, the masked duplicates of the core as a second, tolerance-aware merge);
* scales are common ``(S,)`` or per cloud ``(C, S)`` (e.g. relative to each cloud's diameter).

* a cloud with ≥ 1024 distinct points on CPU (e.g. a long trajectory's iterates) is solved by
  the CPU engine of :func:`~gflow_jax.magnitude.magnitude_function` instead
  (:func:`~gflow_jax.magnitude.solve_adaptive`, the rule
  :func:`~gflow_jax.magnitude._adaptive.use_adaptive`): host distances and duplicate merge,
  CG / neighbour-preconditioned CG / mixed-precision Cholesky, every scale's float64 residual
  ≤ 1e-12 verified.

Failures are reported, not hidden: the vmapped solves run without the core's LU fallback (under
``vmap`` it would compute LU for every scale); a cloud with a failed Cholesky factorisation is
re-solved with ``fallback=True`` (LU) and ``solver`` says so (0 Cholesky — for the CPU engine:
any solve verified to the residual bound —, 1 LU, 2 failed: NaN).

On a GPU or TPU (``method="auto"``, or ``method="device"`` anywhere) each chunk runs the
accelerator engine's kernel instead (:func:`gflow_jax.magnitude._device.cloud_kernel`: every
scale's residual refined towards ``rtol``), with as many clouds per call as the device's free
memory holds (:func:`~gflow_jax.magnitude._device.clouds_per_call`).
"""

from __future__ import annotations

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from ..core import on_accelerator
from ..core._shapes import Shapes
from . import _host
from ._adaptive import solve_adaptive, use_adaptive
from ._core import CHOLESKY, LU, host_to_jax, magnitude_from_distances
from ._device import cloud_kernel, clouds_per_call
from ._distances import pairwise_distances

# bytes of n×n float64 temporaries one compiled call may hold (clouds × scales × 4 n²)
_CALL_BYTES = 1 << 28
_MAX_CHUNK = 64
_FIELDS = (
    "magnitude",
    "dimension",
    "positive_magnitude",
    "n_unique",
    "condition",
    "residual",
    "solver",
)


class CloudMagnitudes(eqx.Module):
    """Magnitude functions of C point clouds at S scales each.

    Attributes:
        scales: ``(S,)`` common scales t, or ``(C, S)`` one row per cloud (inverse units of the
            coordinates).
        magnitude: ``(C, S)`` |tX_c| of the distinct points of cloud c.
        dimension: ``(C, S)`` exact instantaneous magnitude dimension t·wᵀ(D∘Z)w / Σw.
        positive_magnitude: ``(C, S)`` Σ max(w, 0) over distinct points.
        n_points: ``(C,)`` valid rows of each cloud.
        n_unique: ``(C,)`` distinct points of each cloud (duplicates merged).
        diameter: ``(C,)`` largest distance within each cloud.
        condition: ``(C, S)`` estimate of κ₂(Z) of the distinct points.
        residual: ``(C, S)`` relative residual ‖Zw − 1‖₂/‖1‖₂.
        solver: ``(C, S)`` 0 Cholesky (CPU engine: a solve verified to residual ≤ 1e-12), 1 LU
            (fallback), 2 failed (NaN results).
    """

    scales: Float[Array, "*C S"]
    magnitude: Float[Array, "C S"]
    dimension: Float[Array, "C S"]
    positive_magnitude: Float[Array, "C S"]
    n_points: Int[Array, " C"]
    n_unique: Int[Array, " C"]
    diameter: Float[Array, " C"]
    condition: Float[Array, "C S"]
    residual: Float[Array, "C S"]
    solver: Int[Array, "C S"]


def magnitude_scales(
    t_min: float = 0.1, t_max: float = 100.0, n_scales: int = 32, scales=()
) -> np.ndarray:
    """The scale grid: ``scales`` if given, else ``n_scales`` log-spaced values in
    [t_min, t_max] (float64, ``(S,)``). Batch axis: refused (``scales`` must be ``(S,)``)."""
    s = np.asarray(scales, dtype=np.float64)
    if s.size == 0:
        s = np.geomspace(t_min, t_max, n_scales)
    Shapes("magnitude_scales")("scales", s, "S")
    if s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(
            f"magnitude_scales: scales must be a non-empty array of positive numbers, got {s}"
        )
    return s


def bucket_size(n: int) -> int:
    """Padded cloud size: 8, 16, 32, 64, then multiples of 64 (≤ 1024), then of 256 — few
    shapes (one compilation each) and at most ~(1 + 64/n)³ extra Cholesky work."""
    for b in (8, 16, 32, 64):
        if n <= b:
            return b
    step = 64 if n <= 1024 else 256
    return -(-n // step) * step


def euclidean_distances(x: Float[Array, "n M"]) -> Float[Array, "n n"]:
    """Euclidean distances from coordinate differences (fused; no Gram-identity cancellation):
    exactly symmetric, exactly 0 on the diagonal and between exact duplicates. O(n²·M) memory:
    for the small clouds of this engine (large clouds: :func:`pairwise_distances`). ``x``
    ``(n, M)``. Batch axis: refused (vmap over clouds)."""
    Shapes("euclidean_distances")("x", x, "n M")
    diff = x[:, None, :] - x[None, :, :]
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


def _one_cloud(x, valid, scales, duplicate_tol, fallback):
    """|tX| and diagnostics of one padded cloud ``x`` (B, M) at every scale."""
    D = euclidean_distances(x)
    r = magnitude_from_distances(
        D, scales, duplicate_tol=duplicate_tol, valid=valid, fallback=fallback
    )
    out = {k: getattr(r, k) for k in _FIELDS}
    out["diameter"] = jnp.max(jnp.where(valid[:, None] & valid[None, :], D, 0.0))
    return out


@functools.partial(jax.jit, static_argnames=("fallback",))
def _chunk_kernel(
    X: Float[Array, "K B M"],
    valid: Bool[Array, "K B"],
    scales: Float[Array, "K S"],
    duplicate_tol: Float[Array, ""],
    fallback: bool = False,
) -> dict:
    """One compiled program per (K, B, M, S): every cloud of the chunk × every scale."""
    if fallback:  # sequential over clouds, so the LU branch is a real branch
        return jax.lax.map(
            lambda a: _one_cloud(a[0], a[1], a[2], duplicate_tol, True), (X, valid, scales)
        )
    return jax.vmap(lambda x, v, s: _one_cloud(x, v, s, duplicate_tol, False))(X, valid, scales)


def _host_cloud(x: np.ndarray, scales: np.ndarray, duplicate_tol: float) -> dict:
    """One large cloud ``(n, M)`` by the CPU engine: the fields of :class:`CloudMagnitudes`."""
    D = np.asarray(pairwise_distances(x))
    index = np.flatnonzero(_host.duplicate_groups(D, duplicate_tol)[0])
    out = solve_adaptive(D if index.size == D.shape[0] else D[np.ix_(index, index)], scales)
    return {
        "magnitude": out["magnitude"],
        "dimension": scales * out["derivative"] / out["magnitude"],
        "positive_magnitude": out["positive_magnitude"],
        "n_unique": index.size,
        "diameter": D.max(),
        "condition": out["condition"],
        "residual": out["residual"],
        "solver": np.where(np.asarray(out["solver"]) == "lu", LU, CHOLESKY),
    }


def _chunk(B: int, S: int) -> int:
    """Clouds per compiled call: ~256 MiB of n×n temporaries, at most 64."""
    return int(max(1, min(_MAX_CHUNK, _CALL_BYTES // (32 * S * B * B))))


def _compact(x: np.ndarray) -> np.ndarray:
    """The distinct rows of ``x`` (exact equality)."""
    if x.shape[0] <= 1:
        return x
    return np.unique(x, axis=0)


def _check_clouds(clouds, valid, scales, duplicate_tol):
    X = np.asarray(clouds, dtype=np.float64)
    check = Shapes("cloud_magnitudes")
    check("clouds", X, "C n M")
    if 0 in X.shape:
        check.fail("clouds", f"must be a non-empty (C, n, M) array, got shape {X.shape}")
    C, n, _ = X.shape
    V = np.ones((C, n), bool) if valid is None else np.asarray(valid, dtype=bool)
    check("valid", V, "C n")
    if not np.all(np.isfinite(X[V])):
        check.fail("clouds", "contain NaN or inf")
    if not V.any(axis=1).all():
        check.fail("valid", "must mark at least one valid point in every cloud")
    s = np.asarray(scales, dtype=np.float64)
    check("scales", s, "S" if s.ndim < 2 else "C S")
    if s.size == 0:
        check.fail("scales", "must hold at least one scale")
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        check.fail("scales", "must be positive and finite")
    if s.ndim == 1:
        s = np.broadcast_to(s, (C, s.size))
    if not (duplicate_tol >= 0 and math.isfinite(duplicate_tol)):
        check.fail("duplicate_tol", f"must be finite and ≥ 0, got {duplicate_tol}")
    return X, V, s


def cloud_magnitudes(
    clouds: Float[ArrayLike, "C n M"],
    scales: Float[ArrayLike, "*C S"],
    *,
    valid: Bool[ArrayLike, "C n"] | None = None,
    duplicate_tol: float = 0.0,
    compact: bool = True,
    method: str = "auto",
    rtol: float = 1e-12,
) -> CloudMagnitudes:
    """Magnitude functions of C Euclidean clouds, batched (docs/theory.md#magnitude).

    Args:
        clouds: ``(C, n, M)`` points (units of length), e.g. the saved states of a trajectory.
        scales: ``(S,)`` scales t > 0 shared by every cloud, or ``(C, S)`` a row per cloud
            (arrays: new values of the same shape reuse every compilation).
        valid: optional ``(C, n)`` mask of the real rows (clouds of different sizes).
        duplicate_tol: points at distance ≤ this are merged by the core (0: exact duplicates).
        compact: remove exact duplicates on the host first and solve each cloud at the bucket
            of its number of distinct points (same result, far less work after collapse);
            ``False`` solves every cloud at the bucket of ``n``.
        method: ``"auto"`` (``"device"`` on a GPU or TPU; on CPU the CPU engine for clouds of
            ≥ 1024 distinct points, ``"cholesky"`` for the others),
            ``"cholesky"`` (the chunks above, every cloud) or ``"device"`` (the accelerator
            engine's kernel and memory-sized chunks).
        rtol: relative residual the device engine refines every scale towards.

    Returns:
        :class:`CloudMagnitudes` (one row per cloud, in input order).

    Batch axis: the clouds are the batch (the leading C of ``clouds``, ``valid`` and per-cloud
    ``scales``); a further axis is refused.

    Example:
        >>> import numpy as np
        >>> two = np.array([[[0.0], [1.0]], [[0.0], [0.0]]])  # 2 points; 1 point twice
        >>> r = cloud_magnitudes(two, [1.0])
        >>> np.round(np.asarray(r.magnitude[:, 0]), 8).tolist()  # 2/(1 + e^{-1}), then 1
        [1.46211716, 1.0]
    """
    X, V, s = _check_clouds(clouds, valid, scales, duplicate_tol)
    if method not in ("auto", "cholesky", "device"):
        raise ValueError(f"unknown method {method!r}: expected 'auto', 'cholesky' or 'device'")
    device = method == "device" or (method == "auto" and on_accelerator())
    C, n, M = X.shape
    S = s.shape[1]
    points = [X[c][V[c]] for c in range(C)]
    if compact:
        points = [_compact(p) for p in points]
    sizes = np.array([p.shape[0] for p in points])
    auto_cpu = method == "auto" and not device
    host = [c for c in range(C) if auto_cpu and use_adaptive(int(sizes[c]))]
    buckets: dict[int, list[int]] = {}
    for c in sorted(set(range(C)) - set(host)):
        buckets.setdefault(bucket_size(int(sizes[c])) if compact else bucket_size(n), []).append(c)

    tol = jnp.asarray(duplicate_tol, dtype=jnp.float64)
    pending = []
    for B, members in sorted(buckets.items()):
        K = clouds_per_call(B, S, len(members)) if device else _chunk(B, S)
        for start in range(0, len(members), K):
            idx = members[start : start + K]
            xb = np.zeros((K, B, M))
            vb = np.zeros((K, B), bool)
            sb = np.ones((K, S))
            for k, c in enumerate(idx):
                xb[k, : sizes[c]] = points[c]
                vb[k, : sizes[c]] = True
                sb[k] = s[c]
            vb[len(idx) :, 0] = True  # padding clouds: one point, results discarded
            run = cloud_kernel(xb, vb, sb, tol, rtol) if device else _chunk_kernel(xb, vb, sb, tol)
            pending.append((idx, xb, vb, sb, run))

    out = {
        "magnitude": np.empty((C, S)),
        "dimension": np.empty((C, S)),
        "positive_magnitude": np.empty((C, S)),
        "n_unique": np.empty(C, dtype=np.int64),
        "diameter": np.empty(C),
        "condition": np.empty((C, S)),
        "residual": np.empty((C, S)),
        "solver": np.empty((C, S), dtype=np.int64),
    }
    for c in host:
        for key, value in _host_cloud(points[c], s[c], duplicate_tol).items():
            out[key][c] = value
    for idx, xb, vb, sb, res in pending:
        res = jax.tree.map(np.array, res)
        failed = np.flatnonzero((res["solver"][: len(idx)] != CHOLESKY).any(axis=1))
        if failed.size:  # LU pass for those clouds only (sequential program, real branch)
            again = _chunk_kernel(xb[failed], vb[failed], sb[failed], tol, fallback=True)
            for key, value in jax.tree.map(np.asarray, again).items():
                res[key][failed] = value
        for key in out:
            out[key][idx] = res[key][: len(idx)]
    common = np.asarray(scales, dtype=np.float64).ndim == 1
    return CloudMagnitudes(
        scales=host_to_jax(s[0] if common else s),
        n_points=host_to_jax(V.sum(axis=1)),
        **{k: host_to_jax(v) for k, v in out.items()},
    )
