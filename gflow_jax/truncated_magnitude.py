"""Magnitude of the truncated data: one number that watches truncation and collapse.

MATH.md Part A (truncation) meets Part B (magnitude). Along a flow or (S)GD solution the
truncated cloud X̃(s) = {x̃_{j,i}(s)} (input space, ``(T, N, M)`` saved states) loses effective
points: faces pin points onto themselves and, at complete truncation, every point of a cluster
sits on ONE point (the face corner), which converges to the target ỹ_j. At a fixed scale t the
magnitude |tX̃(s)| = 1ᵀZ⁻¹1 with Z_ij = exp(−t·|x̃_i − x̃_j|) (Euclidean distances, MATH.md
Part B; scale convention :data:`SCALE_CONVENTION`) therefore falls from about the magnitude of
the raw data towards the magnitude of the Q collapse points {ỹ_j} (per cluster: towards 1).

**Duplicates.** At collapse many truncated points coincide *exactly* (the same clamped
coordinates), which makes Z exactly singular. The magnitude is that of the set of *distinct*
points (duplicates merged, MATH.md Part B "Numerics"); ``n_unique`` reports how many there were
at every save. This is also what makes the computation cheap: with ``compact=True`` (default)
exact duplicates are removed on the host before anything is factorised (``np.unique``), each
cloud is padded to a size bucket (:func:`bucket_size`) and every bucket is solved by one
compiled program, vmapped over a fixed-size chunk of clouds and over all scales
(:func:`~gflow_jax.magnitude_core.magnitude_from_distances`: one float64 Cholesky per cloud and
scale, the masked duplicates of the core as a second, tolerance-aware merge). So the work per
save is O(S·n_unique³), not O(S·N³). ``compact=False`` solves every cloud at its full size (one
bucket, one compiled program) — the reference the tests compare against.

**Failures are reported, not hidden.** The vmapped solves run without the core's LU fallback
(under ``vmap`` it would compute LU for every scale); a (cloud, scale) whose Cholesky
factorisation failed is re-solved once with ``fallback=True`` (LU) and ``solver`` says so
(0 Cholesky, 1 LU, 2 failed: NaN). ``condition`` and ``residual`` are the core's per-scale
estimates.

Run directories: :func:`write_truncated_magnitude` reads ``arrays.npz`` (``ts``, ``targets``,
``data/labels``, ``<traj>/x_tilde`` for the flow and every GD/SGD run) and the run's
``config.json`` (``[magnitude]`` table) and stores ``truncated_magnitude.npz`` and
``truncated_magnitude.json`` once; :func:`plot_truncated_magnitude` draws from them.
"""

from __future__ import annotations

import functools
import json
import math
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .figures import save_figure
from .magnitude_core import CHOLESKY, FAILED, LU, magnitude_from_distances

__all__ = [
    "SCALE_CONVENTION",
    "CloudMagnitudes",
    "TruncatedMagnitude",
    "bucket_size",
    "cloud_magnitudes",
    "hidden_representations",
    "magnitude_increases",
    "magnitude_scales",
    "plot_network_magnitude",
    "plot_truncated_magnitude",
    "representation_magnitude",
    "truncated_magnitude",
    "write_network_magnitude",
    "write_truncated_magnitude",
]

SCALE_CONVENTION = "Z_ij = exp(-t |x_i - x_j|_2); t in inverse units of the input coordinates"
# bytes of n×n float64 temporaries one compiled call may hold (clouds × scales × 4 n²)
_CALL_BYTES = 1 << 28
_MAX_CHUNK = 64


class CloudMagnitudes(eqx.Module):
    """Magnitude functions of C point clouds at S common scales (MATH.md Part B).

    Attributes:
        scales: ``(S,)`` scales t (inverse units of the coordinates).
        magnitude: ``(C, S)`` |tX_c| of the distinct points of cloud c.
        dimension: ``(C, S)`` exact instantaneous magnitude dimension t·wᵀ(D∘Z)w / Σw.
        positive_magnitude: ``(C, S)`` Σ max(w, 0) over distinct points.
        n_points: ``(C,)`` valid rows of each cloud.
        n_unique: ``(C,)`` distinct points of each cloud (duplicates merged).
        condition: ``(C, S)`` estimate of κ₂(Z) of the distinct points.
        residual: ``(C, S)`` relative residual ‖Zw − 1‖₂/‖1‖₂.
        solver: ``(C, S)`` 0 Cholesky, 1 LU (fallback), 2 failed (NaN results).
    """

    scales: Float[Array, " S"]
    magnitude: Float[Array, "C S"]
    dimension: Float[Array, "C S"]
    positive_magnitude: Float[Array, "C S"]
    n_points: Int[Array, " C"]
    n_unique: Int[Array, " C"]
    condition: Float[Array, "C S"]
    residual: Float[Array, "C S"]
    solver: Int[Array, "C S"]


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


def magnitude_scales(
    t_min: float = 0.1, t_max: float = 100.0, n_scales: int = 32, scales=()
) -> np.ndarray:
    """The scale grid: ``scales`` if given, else ``n_scales`` log-spaced values in
    [t_min, t_max] (float64, ``(S,)``)."""
    if len(scales):
        s = np.asarray(scales, dtype=np.float64)
    else:
        s = np.geomspace(t_min, t_max, n_scales)
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise ValueError(f"scales must be a non-empty 1-d array of positive numbers, got {s}")
    return s


def bucket_size(n: int) -> int:
    """Padded cloud size: 8, 16, 32, 64, then multiples of 64 (≤ 1024), then of 256 — few
    shapes (one compilation each) and at most ~(1 + 64/n)³ extra Cholesky work."""
    for b in (8, 16, 32, 64):
        if n <= b:
            return b
    step = 64 if n <= 1024 else 256
    return -(-n // step) * step


def _distances(x: Float[Array, "n M"]) -> Float[Array, "n n"]:
    """Euclidean distances from coordinate differences (fused; no Gram-identity cancellation):
    exactly symmetric, exactly 0 on the diagonal and between exact duplicates."""
    diff = x[:, None, :] - x[None, :, :]
    return jnp.sqrt(jnp.sum(diff * diff, axis=-1))


def _one_cloud(x, valid, scales, duplicate_tol, fallback):
    """|tX| and diagnostics of one padded cloud ``x`` (B, M) at every scale: the core
    :func:`~gflow_jax.magnitude_core.magnitude_from_distances` on its Euclidean distances."""
    r = magnitude_from_distances(
        _distances(x), scales, duplicate_tol=duplicate_tol, valid=valid, fallback=fallback
    )
    return {k: getattr(r, k) for k in _FIELDS}


_FIELDS = (
    "magnitude",
    "dimension",
    "positive_magnitude",
    "n_unique",
    "condition",
    "residual",
    "solver",
)


@functools.partial(jax.jit, static_argnames=("fallback",))
def _chunk_kernel(
    X: Float[Array, "K B M"],
    valid: Bool[Array, "K B"],
    scales: Float[Array, " S"],
    duplicate_tol: Float[Array, ""],
    fallback: bool = False,
) -> dict:
    """One compiled program per (K, B, M, S): every cloud of the chunk × every scale."""
    if fallback:  # sequential over clouds, so the LU branch is a real branch
        return jax.lax.map(
            lambda a: _one_cloud(a[0], a[1], scales, duplicate_tol, True), (X, valid)
        )
    return jax.vmap(lambda x, v: _one_cloud(x, v, scales, duplicate_tol, False))(X, valid)


def _chunk(B: int, S: int) -> int:
    """Clouds per compiled call: ~256 MiB of n×n temporaries, at most 64."""
    return int(max(1, min(_MAX_CHUNK, _CALL_BYTES // (32 * S * B * B))))


def _compact(x: np.ndarray) -> np.ndarray:
    """The distinct rows of ``x`` (exact equality)."""
    if x.shape[0] <= 1:
        return x
    return np.unique(x, axis=0)


def cloud_magnitudes(
    clouds: Float[ArrayLike, "C n M"],
    scales: Float[ArrayLike, " S"],
    *,
    valid: Bool[ArrayLike, "C n"] | None = None,
    duplicate_tol: float = 0.0,
    compact: bool = True,
) -> CloudMagnitudes:
    """Magnitude functions of C clouds at S common scales, batched (MATH.md Part B).

    Args:
        clouds: ``(C, n, M)`` points (units of length), e.g. the saved states of a trajectory.
        scales: ``(S,)`` scales t > 0 (an array: a new grid of the same length reuses every
            compilation).
        valid: optional ``(C, n)`` mask of the real rows (clouds of different sizes).
        duplicate_tol: points at distance ≤ this are merged by the core (0: exact duplicates).
        compact: remove exact duplicates on the host first and solve each cloud at the bucket
            of its number of distinct points (same result, far less work after collapse);
            ``False`` solves every cloud at the bucket of ``n``.

    Returns:
        :class:`CloudMagnitudes` (one row per cloud, in input order).
    """
    X = np.asarray(clouds, dtype=np.float64)
    if X.ndim != 3 or X.shape[0] == 0 or X.shape[1] == 0 or X.shape[2] == 0:
        raise ValueError(f"clouds must be a non-empty (C, n, M) array, got shape {X.shape}")
    C, n, M = X.shape
    V = np.ones((C, n), bool) if valid is None else np.asarray(valid, dtype=bool)
    if V.shape != (C, n):
        raise ValueError(f"valid must have shape {(C, n)}, got {V.shape}")
    if not np.all(np.isfinite(X[V])):
        raise ValueError("clouds contain NaN or inf")
    if not V.any(axis=1).all():
        raise ValueError("every cloud needs at least one valid point")
    s = magnitude_scales(scales=scales)
    S = s.size
    if not (duplicate_tol >= 0 and math.isfinite(duplicate_tol)):
        raise ValueError(f"duplicate_tol must be finite and ≥ 0, got {duplicate_tol}")

    points = [X[c][V[c]] for c in range(C)]
    if compact:
        points = [_compact(p) for p in points]
    sizes = np.array([p.shape[0] for p in points])
    buckets: dict[int, list[int]] = {}
    for c in range(C):
        buckets.setdefault(bucket_size(int(sizes[c])) if compact else bucket_size(n), []).append(c)

    scales_dev = jnp.asarray(s)
    tol = jnp.asarray(duplicate_tol, dtype=jnp.float64)
    pending = []
    for B, members in sorted(buckets.items()):
        K = _chunk(B, S)
        for start in range(0, len(members), K):
            idx = members[start : start + K]
            xb = np.zeros((K, B, M))
            vb = np.zeros((K, B), bool)
            for k, c in enumerate(idx):
                xb[k, : sizes[c]] = points[c]
                vb[k, : sizes[c]] = True
            vb[len(idx) :, 0] = True  # padding clouds: one point, results discarded
            pending.append((idx, xb, vb, _chunk_kernel(xb, vb, scales_dev, tol)))

    out = {
        "magnitude": np.empty((C, S)),
        "dimension": np.empty((C, S)),
        "positive_magnitude": np.empty((C, S)),
        "n_unique": np.empty(C, dtype=np.int64),
        "condition": np.empty((C, S)),
        "residual": np.empty((C, S)),
        "solver": np.empty((C, S), dtype=np.int64),
    }
    for idx, xb, vb, res in pending:
        res = jax.tree.map(np.array, res)
        failed = np.flatnonzero((res["solver"][: len(idx)] != CHOLESKY).any(axis=1))
        if failed.size:  # LU pass for those clouds only (sequential program, real branch)
            again = jax.tree.map(
                np.asarray,
                _chunk_kernel(xb[failed], vb[failed], scales_dev, tol, fallback=True),
            )
            for key in out:
                res[key][failed] = again[key]
        for key in out:
            out[key][idx] = res[key][: len(idx)]
    return CloudMagnitudes(
        scales=jnp.asarray(s),
        magnitude=jnp.asarray(out["magnitude"]),
        dimension=jnp.asarray(out["dimension"]),
        positive_magnitude=jnp.asarray(out["positive_magnitude"]),
        n_points=jnp.asarray(V.sum(axis=1)),
        n_unique=jnp.asarray(out["n_unique"]),
        condition=jnp.asarray(out["condition"]),
        residual=jnp.asarray(out["residual"]),
        solver=jnp.asarray(out["solver"]),
    )


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
        duplicate_tol, compact: as in :func:`cloud_magnitudes`.

    Returns:
        :class:`TruncatedMagnitude`: ``whole`` has one row per save, ``clusters`` one row per
        (save, cluster).
    """
    X = np.asarray(x_tilde, dtype=np.float64)
    if X.ndim != 3:
        raise ValueError(f"x_tilde must be (T, N, M), got shape {X.shape}")
    T, N, M = X.shape
    whole = cloud_magnitudes(X, scales, duplicate_tol=duplicate_tol, compact=compact)
    clusters, Q = None, 0
    if per_cluster and labels is not None:
        lab = np.asarray(labels).astype(int)
        if lab.shape != (N,):
            raise ValueError(f"labels must have shape ({N},), got {lab.shape}")
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
    alias of :func:`truncated_magnitude`."""
    return truncated_magnitude(representations, scales, labels=labels, **kwargs)


def magnitude_increases(ts: Float[ArrayLike, " T"], magnitude: Float[ArrayLike, "T S"]) -> dict:
    """Monotonicity of |tX̃(s)| in s, per scale: the largest increase between consecutive
    saves, where it happens, and the number of increasing steps (JSON-ready; increases below
    1e-12·|tX̃| count as rounding and are not counted)."""
    ts, m = np.asarray(ts), np.asarray(magnitude)
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


# --------------------------------------------------------------------------------------------
# run directories


def _magnitude_settings(cfg: dict) -> dict:
    mc = dict(cfg.get("magnitude") or {})
    return {
        "t_min": float(mc.get("t_min", 0.1)),
        "t_max": float(mc.get("t_max", 100.0)),
        "n_scales": int(mc.get("n_scales", 32)),
        "scales": list(mc.get("scales", [])),
        "per_cluster": bool(mc.get("per_cluster", True)),
    }


def _trajectory_prefixes(arrays: dict) -> list[str]:
    names = sorted({k.rsplit("/", 1)[0] for k in arrays if k.endswith("/x_tilde")})
    return (["flow"] if "flow" in names else []) + [p for p in names if p != "flow"]


def write_truncated_magnitude(run_dir: str | Path) -> tuple[dict, dict]:
    """Compute the truncated-data magnitude of every trajectory of a truncation run and store
    ``truncated_magnitude.npz`` and ``truncated_magnitude.json`` (once; later calls read them).

    Keys: ``scales``, ``targets/magnitude`` (S,) = |t{ỹ_j}|, and per trajectory ``<traj>/…``:
    ``magnitude``, ``dimension``, ``positive_magnitude``, ``condition``, ``residual``,
    ``solver`` (T, S), ``n_unique`` (T,); with ``per_cluster``: ``cluster_magnitude``,
    ``cluster_dimension`` (T, Q, S) and ``cluster_n_unique`` (T, Q). The JSON summary holds the
    scale convention, the monotonicity of |tX̃(s)| per scale (:func:`magnitude_increases`),
    the final gap to |t{ỹ_j}|, solver and duplicate reports, and timings.
    """
    from .runs import load_arrays, write_json

    run_dir = Path(run_dir)
    jpath, npath = run_dir / "truncated_magnitude.json", run_dir / "truncated_magnitude.npz"
    if jpath.is_file() and npath.is_file():
        with np.load(npath) as z:
            return json.loads(jpath.read_text()), dict(z)
    cfg = json.loads((run_dir / "config.json").read_text())
    settings = _magnitude_settings(cfg)
    s = magnitude_scales(
        settings["t_min"], settings["t_max"], settings["n_scales"], settings["scales"]
    )
    a = load_arrays(run_dir)
    ts, labels, targets = a["ts"], a["data/labels"], a["targets"]
    Q = int(targets.shape[0])
    tables: dict[str, np.ndarray] = {"scales": s, "ts": ts}
    target_mag = cloud_magnitudes(targets[None], s)
    tables["targets/magnitude"] = np.asarray(target_mag.magnitude[0])
    summary: dict = {
        "scale_convention": SCALE_CONVENTION,
        "metric": "euclidean (input space)",
        "scales": s.tolist(),
        "duplicates": "exact duplicates merged: the magnitude is that of the distinct points",
        "targets_magnitude": tables["targets/magnitude"].tolist(),
    }
    for prefix in _trajectory_prefixes(a):
        t0 = time.perf_counter()
        r = truncated_magnitude(
            a[f"{prefix}/x_tilde"],
            s,
            labels=labels,
            n_classes=Q,
            per_cluster=settings["per_cluster"],
        )
        seconds = time.perf_counter() - t0
        w = r.whole
        for key in ("magnitude", "dimension", "positive_magnitude", "condition", "residual"):
            tables[f"{prefix}/{key}"] = np.asarray(getattr(w, key))
        tables[f"{prefix}/solver"] = np.asarray(w.solver)
        tables[f"{prefix}/n_unique"] = np.asarray(w.n_unique)
        entry = {
            "seconds_including_compile": seconds,
            "n_unique_first_last": [int(w.n_unique[0]), int(w.n_unique[-1])],
            "final_magnitude": tables[f"{prefix}/magnitude"][-1].tolist(),
            "max_abs_final_gap_to_targets": float(
                np.max(np.abs(tables[f"{prefix}/magnitude"][-1] - tables["targets/magnitude"]))
            ),
            "monotonicity": magnitude_increases(ts, tables[f"{prefix}/magnitude"]),
            "max_condition": float(np.nanmax(tables[f"{prefix}/condition"])),
            "max_residual": float(np.nanmax(tables[f"{prefix}/residual"])),
            "lu_fallbacks": int((tables[f"{prefix}/solver"] == LU).sum()),
            "failed_solves": int((tables[f"{prefix}/solver"] == FAILED).sum()),
            "dimension_max_first_last": [
                float(np.nanmax(tables[f"{prefix}/dimension"][0])),
                float(np.nanmax(tables[f"{prefix}/dimension"][-1])),
            ],
        }
        if r.clusters is not None:
            cm = r.cluster_field("magnitude")
            tables[f"{prefix}/cluster_magnitude"] = cm
            tables[f"{prefix}/cluster_dimension"] = r.cluster_field("dimension")
            tables[f"{prefix}/cluster_n_unique"] = r.cluster_field("n_unique")
            one = np.all(r.cluster_field("n_unique") == 1, axis=0)  # (Q,) at the end?
            first_one = [
                float(ts[np.argmax(r.cluster_field("n_unique")[:, j] == 1)])
                if (r.cluster_field("n_unique")[:, j] == 1).any()
                else None
                for j in range(Q)
            ]
            entry["cluster_final_magnitude_minus_one"] = (cm[-1] - 1.0).max(-1).tolist()
            entry["cluster_first_single_point_s"] = first_one
            entry["cluster_single_point_throughout"] = one.tolist()
            entry["cluster_failed_solves"] = int((np.asarray(r.clusters.solver) == FAILED).sum())
        summary[prefix] = entry
    np.savez_compressed(npath, **tables)
    write_json(jpath, summary)
    return summary, tables


def _time_axis(ax, ts) -> None:
    """Flow time on a symlog axis from 0 (truncation is fast early, collapse exponential)."""
    if len(ts) > 1 and ts[1] > ts[0]:
        ax.set_xscale("symlog", linthresh=float(ts[1] - ts[0]) * 4)
        ax.set_xlim(float(ts[0]), float(ts[-1]))


def plot_truncated_magnitude(run_dir: str | Path, n_lines: int = 5) -> list[Path]:
    """Figures (``figures/``): |tX̃(s)| against s at ``n_lines`` scales with the flow's
    truncation events marked and |t{ỹ_j}| dashed, beside the magnitude dimension profile
    dim_t(X̃(s)) over (s, t); per-cluster |tX̃_j(s)| − 1 on a log axis next to NC1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .runs import load_arrays

    run_dir = Path(run_dir)
    summary, t = write_truncated_magnitude(run_dir)
    if "flow" not in summary:
        return []
    a = load_arrays(run_dir)
    out = run_dir / "figures"
    out.mkdir(exist_ok=True)
    ts, s = t["ts"], t["scales"]
    events = []
    if (run_dir / "analysis.json").is_file():
        analysis = json.loads((run_dir / "analysis.json").read_text())
        events = list(analysis.get("flow", {}).get("event_times", []))
    pick = np.unique(np.linspace(0, s.size - 1, min(n_lines, s.size)).round().astype(int))
    colors = plt.cm.viridis(np.linspace(0, 0.9, pick.size))
    paths = []

    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.4))
    for c, i in zip(colors, pick, strict=True):
        ax.plot(ts, t["flow/magnitude"][:, i], color=c, lw=1.6, label=f"t = {s[i]:.3g}")
        ax.axhline(t["targets/magnitude"][i], color=c, ls=":", lw=1.0)
    ax.vlines(events, 0.97, 1.0, transform=ax.get_xaxis_transform(), color="tab:red", lw=0.6)
    ax.set_yscale("log")
    ax.set_xlabel("flow time s")
    ax.set_ylabel("|tX̃(s)|  (distinct points)")
    ax.set_title(
        f"magnitude of the truncated data (flow); dotted: |t{{ỹ_j}}|;\n"
        f"red ticks: {len(events)} truncation events (analysis.json)",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    _time_axis(ax, ts)
    dim = t["flow/dimension"].T  # (S, T)
    mesh = bx.pcolormesh(ts, s, dim, shading="nearest", cmap="magma")
    bx.set_yscale("log")
    _time_axis(bx, ts)
    bx.set_xlabel("flow time s")
    bx.set_ylabel("scale t")
    bx.set_title("magnitude dimension dim_t = d log|tX̃(s)| / d log t (exact)", fontsize=9)
    fig.colorbar(mesh, ax=bx)
    fig.suptitle(f"{run_dir.name}: {SCALE_CONVENTION}", fontsize=8)
    paths.append(save_figure(fig, out / "truncated_magnitude.png"))

    if "flow/cluster_magnitude" in t:
        cm = t["flow/cluster_magnitude"]  # (T, Q, S)
        fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 4.2))
        styles = ("-", "--", "-.", ":")
        for j in range(cm.shape[1]):
            for c, i in zip(colors, pick, strict=True):
                y = cm[:, j, i] - 1.0
                ax.plot(
                    ts,
                    np.where(y > 0, y, np.nan),
                    color=c,
                    ls=styles[j % 4],
                    label=f"cluster {j}, t = {s[i]:.3g}" if j < 2 else None,
                )
        ax.set_yscale("log")
        ax.set_xlabel("flow time s")
        ax.set_ylabel("|tX̃_j(s)| − 1  (exactly 0 once the cluster is one point)")
        ax.set_title("per-cluster magnitude (flow)", fontsize=9)
        ax.legend(fontsize=6, ncol=2)
        for name in sorted({k.rsplit("/", 1)[0] for k in a if k.endswith("/nc1")}):
            y = a[f"{name}/nc1"]
            bx.plot(
                ts,
                np.where(y > 0, y, np.nan),
                lw=2.0 if name == "flow" else 1.0,
                color="k" if name == "flow" else None,
                label=name,
            )
        bx.set_yscale("log")
        bx.set_xlabel("flow time s")
        bx.set_ylabel("NC1 in input space")
        bx.set_title("NC1 (MATH.md: (1/N) Σ |x̃ − mean_j x̃|²)", fontsize=9)
        bx.legend(fontsize=7)
        for axis in (ax, bx):
            _time_axis(axis, ts)
        paths.append(save_figure(fig, out / "cluster_magnitude.png"))
    return paths


# --------------------------------------------------------------------------------------------
# full networks (sgd_vs_flow): input space and hidden layers side by side


@jax.jit
def hidden_representations(
    weights: Float[Array, "T L M M"], biases: Float[Array, "T L M"], x: Float[Array, "N M"]
) -> Float[Array, "T L N M"]:
    """Hidden activations x⁽ℓ⁾ = σ(W_ℓ x⁽ℓ⁻¹⁾ + b_ℓ) of every saved network (MATH.md Part A,
    layer form :func:`gflow_jax.network.relu_forward`), ``(T, L, N, M)``."""

    def one(W, b):
        def layer(h, wb):
            h = jax.nn.relu(h @ wb[0].T + wb[1][None, :])
            return h, h

        return jax.lax.scan(layer, x, (W, b))[1]

    return jax.vmap(one)(weights, biases)


def write_network_magnitude(
    run_dir: str | Path, scales: Float[ArrayLike, " S"] | None = None
) -> tuple[dict, dict]:
    """Magnitude of the truncated data x̃(s) (input space) and of every hidden layer's
    representation x⁽ℓ⁾(s) (feature space) for every trajectory of an ``sgd_vs_flow`` run,
    whole and per class; stored once as ``representation_magnitude.{npz,json}``.

    Keys ``<traj>/<space>/magnitude`` (T, S) and ``…/cluster_magnitude`` (T, Q, S),
    ``…/n_unique`` (T,), with ``<space>`` = ``input`` or ``layer1`` … ``layerL``. Default
    scales: 16 log-spaced in [0.1, 100]. Note x⁽ᴸ⁾ = W⁽ᴸ⁾x̃ + b⁽ᴸ⁾ (MATH.md): the last hidden
    layer is an affine image of the truncated data, with the same duplicates.
    """
    from .runs import load_arrays, write_json

    run_dir = Path(run_dir)
    jpath, npath = (
        run_dir / "representation_magnitude.json",
        run_dir / "representation_magnitude.npz",
    )
    if jpath.is_file() and npath.is_file():
        with np.load(npath) as z:
            return json.loads(jpath.read_text()), dict(z)
    s = magnitude_scales(0.1, 100.0, 16) if scales is None else magnitude_scales(scales=scales)
    a = load_arrays(run_dir)
    ts, x, labels = a["ts"], a["data/x"], a["data/labels"]
    Q = int(labels.max()) + 1
    prefixes = _trajectory_prefixes(a)
    tables: dict[str, np.ndarray] = {"scales": s, "ts": ts}
    summary: dict = {"scale_convention": SCALE_CONVENTION, "scales": s.tolist()}
    for prefix in prefixes:
        hidden = np.asarray(
            hidden_representations(
                jnp.asarray(a[f"{prefix}/weights"]), jnp.asarray(a[f"{prefix}/biases"]), x
            )
        )
        spaces = {"input": a[f"{prefix}/x_tilde"]}
        spaces.update({f"layer{ell + 1}": hidden[:, ell] for ell in range(hidden.shape[1])})
        entry = {}
        for space, cloud in spaces.items():
            r = truncated_magnitude(cloud, s, labels=labels, n_classes=Q)
            key = f"{prefix}/{space}"
            tables[f"{key}/magnitude"] = np.asarray(r.whole.magnitude)
            tables[f"{key}/n_unique"] = np.asarray(r.whole.n_unique)
            tables[f"{key}/cluster_magnitude"] = r.cluster_field("magnitude")
            entry[space] = {
                "n_unique_first_last": [int(r.whole.n_unique[0]), int(r.whole.n_unique[-1])],
                "magnitude_first_last": [
                    tables[f"{key}/magnitude"][0].tolist(),
                    tables[f"{key}/magnitude"][-1].tolist(),
                ],
                "monotonicity": magnitude_increases(ts, tables[f"{key}/magnitude"]),
                "failed_solves": int((np.asarray(r.whole.solver) == FAILED).sum()),
            }
        summary[prefix] = entry
    np.savez_compressed(npath, **tables)
    write_json(jpath, summary)
    return summary, tables


def plot_network_magnitude(run_dir: str | Path) -> list[Path]:
    """One figure (``figures/representation_magnitude.png``): |tX(s)| at the middle scale of
    the grid in input space (truncated data x̃) and in each hidden layer x⁽ℓ⁾, every
    trajectory of an ``sgd_vs_flow`` run (flow thick black)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    summary, t = write_network_magnitude(run_dir)
    ts, s = t["ts"], t["scales"]
    i = s.size // 2
    prefixes = [p for p in summary if isinstance(summary[p], dict)]
    spaces = list(summary[prefixes[0]])
    fig, axes = plt.subplots(1, len(spaces), figsize=(4.6 * len(spaces), 4.0), squeeze=False)
    for ax, space in zip(axes[0], spaces, strict=True):
        for prefix in prefixes:
            flow = prefix == "flow"
            ax.plot(
                ts,
                t[f"{prefix}/{space}/magnitude"][:, i],
                color="k" if flow else None,
                lw=2.2 if flow else 1.0,
                ls="-" if flow or prefix.startswith("sgd") else "--",
                label=prefix,
            )
        ax.set_xlabel("flow time s = η·k")
        ax.set_title(
            "input space: truncated data x̃(s)"
            if space == "input"
            else f"feature space: hidden {space} activations",
            fontsize=9,
        )
        _time_axis(ax, ts)
    axes[0, 0].set_ylabel(f"|tX(s)| at t = {s[i]:.3g} (distinct points)")
    axes[0, 0].legend(fontsize=6)
    fig.suptitle(
        f"{run_dir.name}: magnitude in input and feature space; "
        "Z_ij = exp(-t |x_i - x_j|_2) in each space"
    )
    return [save_figure(fig, run_dir / "figures" / "representation_magnitude.png")]
