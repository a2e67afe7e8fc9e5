"""Magnitude of the truncated data: one number that watches truncation and collapse
(docs/theory.md#magnitude, docs/theory.md#closed-forms).

Along a flow or (S)GD solution the truncated cloud X̃(s) = {x̃_{j,i}(s)} (input space, ``(T, N,
M)`` saved states) loses effective points: faces pin points onto themselves and, at complete
truncation, every point of a cluster sits on ONE point (the face corner), which converges to the
target ỹ_j. At a fixed scale t the magnitude |tX̃(s)| = 1ᵀZ⁻¹1 with Z_ij = exp(−t·|x̃_i − x̃_j|)
therefore falls from about the magnitude of the raw data towards the magnitude of the Q collapse
points {ỹ_j} (per cluster: towards 1). At collapse many truncated points coincide *exactly*; the
magnitude is that of the distinct points, and ``n_unique`` reports how many there were at every
save. Every cloud goes through the one many-clouds engine,
:func:`~gflow_jax.magnitude.cloud_magnitudes`.
"""

from __future__ import annotations

import equinox as eqx
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int

from ..core._shapes import Shapes
from ..magnitude import CloudMagnitudes, cloud_magnitudes

SCALE_CONVENTION = "Z_ij = exp(-t |x_i - x_j|_2); t in inverse units of the input coordinates"


class TruncatedMagnitude(eqx.Module):
    """Magnitude of a saved trajectory X̃(s), ``(T, N, M)``, whole and per cluster.

    Attributes:
        scales: ``(S,)`` scales t.
        whole: :class:`CloudMagnitudes` with C = T (one cloud per save).
        clusters: :class:`CloudMagnitudes` with C = T·Q (row ``k·Q + j`` = save k, cluster j),
            or ``None`` without labels.
        n_classes: Q (0 without labels).
    """

    scales: Float[Array, " S"]
    whole: CloudMagnitudes
    clusters: CloudMagnitudes | None
    n_classes: int = eqx.field(static=True, default=0)

    def cluster_field(self, name: str) -> np.ndarray:
        """A per-cluster field reshaped to ``(T, Q, …)``."""
        a = np.asarray(getattr(self.clusters, name))
        return a.reshape(-1, self.n_classes, *a.shape[1:])


def truncated_magnitude(
    x_tilde: Float[ArrayLike, "T N M"],
    scales: Float[ArrayLike, " S"],
    *,
    labels: Int[ArrayLike, " N"] | None = None,
    n_classes: int | None = None,
    per_cluster: bool = True,
    duplicate_tol: float = 0.0,
    compact: bool = True,
) -> TruncatedMagnitude:
    """|tX̃(s)| of a saved trajectory at every save and scale, whole and per cluster.

    Works for any ``(T, N, width)`` array: truncated input-space data ``x̃_{j,i}(s)`` of the
    flow or of (S)GD, or hidden-layer representations ``x⁽ℓ⁾(s)`` of a full network.

    Args:
        x_tilde: ``(T, N, M)`` points at T saved times.
        scales: ``(S,)`` scales t > 0.
        labels: ``(N,)`` cluster of each point (needed for ``per_cluster``).
        n_classes: Q (default ``labels.max() + 1``).
        per_cluster: also the magnitude of each cluster {x̃_{j,i}(s)}_i (→ 1 at collapse).
        duplicate_tol: as in :func:`~gflow_jax.magnitude.cloud_magnitudes`.
        compact: as in :func:`~gflow_jax.magnitude.cloud_magnitudes`.

    Returns:
        :class:`TruncatedMagnitude`: ``whole`` has one row per save, ``clusters`` one row per
        (save, cluster).

    Batch axis: the one save axis T by design; a further axis is refused.
    """
    return _truncated_magnitude(
        "truncated_magnitude", "x_tilde", x_tilde, scales, labels, n_classes, per_cluster,
        duplicate_tol, compact,
    )  # fmt: skip


def _truncated_magnitude(
    function, name, x_tilde, scales, labels, n_classes, per_cluster, duplicate_tol, compact
) -> TruncatedMagnitude:
    X = np.asarray(x_tilde, dtype=np.float64)
    check = Shapes(function)
    check(name, X, "T N M")
    check("scales", scales, "S")
    check("labels", labels, "N")  # before any solve
    T, N, M = X.shape
    whole = cloud_magnitudes(X, scales, duplicate_tol=duplicate_tol, compact=compact)
    clusters, Q = None, 0
    if per_cluster and labels is not None:
        lab = np.asarray(labels).astype(int)
        Q = int(lab.max()) + 1 if n_classes is None else int(n_classes)
        members = [np.flatnonzero(lab == j) for j in range(Q)]
        if any(m.size == 0 for m in members):
            raise ValueError("every cluster needs at least one point")
        size = max(m.size for m in members)
        cx = np.zeros((T, Q, size, M))
        cv = np.zeros((T, Q, size), bool)
        for j, m in enumerate(members):
            cx[:, j, : m.size] = X[:, m]
            cv[:, j, : m.size] = True
        clusters = cloud_magnitudes(
            cx.reshape(T * Q, size, M),
            scales,
            valid=cv.reshape(T * Q, size),
            duplicate_tol=duplicate_tol,
            compact=compact,
        )
    return TruncatedMagnitude(scales=whole.scales, whole=whole, clusters=clusters, n_classes=Q)


def representation_magnitude(
    representations: Float[ArrayLike, "T N W"],
    scales: Float[ArrayLike, " S"],
    *,
    labels: Int[ArrayLike, " N"] | None = None,
    **kwargs,
) -> TruncatedMagnitude:
    """The same measure for hidden-layer representations x⁽ℓ⁾(s) of a full network, ``(T, N,
    width)`` (feature space), so input-space and feature-space pictures can be compared; an
    alias of :func:`truncated_magnitude` (the same keywords). Batch axis: the one save axis T by
    design; a further axis is refused."""
    options = dict(n_classes=None, per_cluster=True, duplicate_tol=0.0, compact=True)
    unknown = set(kwargs) - set(options)
    if unknown:
        raise TypeError(f"representation_magnitude: unknown keywords {sorted(unknown)}")
    options.update(kwargs)
    return _truncated_magnitude(
        "representation_magnitude", "representations", representations, scales, labels,
        options["n_classes"], options["per_cluster"], options["duplicate_tol"],
        options["compact"],
    )  # fmt: skip


def magnitude_increases(ts: Float[ArrayLike, " T"], magnitude: Float[ArrayLike, "T S"]) -> dict:
    """Monotonicity of |tX̃(s)| in s, per scale: the largest increase between consecutive
    saves, where it happens, and the number of increasing steps (JSON-ready; increases below
    1e-12·|tX̃| count as rounding and are not counted). ``ts`` ``(T,)``, ``magnitude``
    ``(T, S)``. Batch axis: refused."""
    ts, m = np.asarray(ts), np.asarray(magnitude)
    check = Shapes("magnitude_increases")
    check("ts", ts, "T")
    check("magnitude", m, "T S")
    inc = np.diff(m, axis=0)  # (T-1, S)
    k = np.nanargmax(inc, axis=0)
    S = m.shape[1]
    big = inc > 1e-12 * np.maximum(np.abs(m[1:]), 1.0)
    return {
        "max_increase": [float(inc[k[i], i]) for i in range(S)],
        "max_relative_increase": [float(inc[k[i], i] / m[k[i], i]) for i in range(S)],
        "at_s": [[float(ts[k[i]]), float(ts[k[i] + 1])] for i in range(S)],
        "increasing_steps": [int(big[:, i].sum()) for i in range(S)],
        "non_increasing": bool(not big.any()),
    }
