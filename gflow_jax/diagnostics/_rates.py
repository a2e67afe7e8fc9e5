"""Truncation rates and events along a solution (docs/theory.md#effective-flows,
docs/theory.md#closed-forms): the rate n/(N d²) of every face, rates fitted between events, and
crossing times located between saves in closed form."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..core import AdaptedParameters, last_truncations, sort_data, threshold_gradient
from ..core._shapes import Shapes
from ..dynamics import solve_face


class RateDiagnostics(eqx.Module):
    """Rates of every face (ℓ, k) at each saved time (leading axis T),
    docs/theory.md#effective-flows.

    Attributes:
        counts: ``(T, L, M)`` owned points n_{ℓ,k} (weighted counts if the problem has weights).
        target_mean: ``(T, L, M)`` ȳ_{ℓ,k}: mean k-th target coordinate of the owned points
            (NaN where n = 0).
        predicted_rate: ``(T, L, M)`` n/(N d²) for the bias flow, (1 + c²) n/(N d²) for the joint
            flow (1/(N d²) per owned point).
        instantaneous_rate: ``(T, L, M)`` −(d/ds) log|c − ȳ| = −ċ/(c − ȳ), with ċ from the flow's
            own vector field (NaN where n = 0 or c = ȳ).
    """

    counts: Float[Array, "T L M"]
    target_mean: Float[Array, "T L M"]
    predicted_rate: Float[Array, "T L M"]
    instantaneous_rate: Float[Array, "T L M"]


@eqx.filter_jit
def rate_diagnostics(problem, params: AdaptedParameters) -> RateDiagnostics:
    """:class:`RateDiagnostics` along a stack of parameters (flow or (S)GD) of ``problem``
    (a :class:`~gflow_jax.dynamics.FlowProblem` with the input-layer cost).

    ``params``: d, b ``(T, L, M)`` (one stacking axis T; M the problem's). Batch axis: the one
    stacking axis T only (more are refused)."""
    check = Shapes("rate_diagnostics")
    check("problem.u", problem.u, "N M")
    check.adapted("params", params, "T")
    if problem.cost != "input":
        raise ValueError("rates n/(N d²) are those of the input-layer cost C_in")
    data = (
        problem.sorted
        if problem.sorted is not None
        else sort_data(problem.u, problem.targets, problem.weights)
    )
    n_rows = problem.u.shape[0]

    def one(p):
        c, d = p.thresholds, p.d
        g, n = threshold_gradient(c, d, data)  # g = n (c − ȳ)/N
        ybar = jnp.where(n > 0, c - g * n_rows / jnp.where(n > 0, n, 1), jnp.nan)
        lam = n / (n_rows * d**2)
        if problem.mode == "joint":
            lam = lam * (1 + c**2)
        v = problem.descent_direction(p)
        c_dot = (p.b * v.d - d * v.b) / d**2  # c = −b/d
        gap = c - ybar
        inst = jnp.where((n > 0) & (gap != 0), -c_dot / jnp.where(gap != 0, gap, 1), jnp.nan)
        return RateDiagnostics(n, ybar, lam, inst)

    return jax.vmap(one)(params)


def interval_rates(
    ts: np.ndarray,
    thresholds: np.ndarray,
    rates: RateDiagnostics,
    *,
    min_saves: int = 3,
    min_gap: float = 1e-7,
) -> dict[str, np.ndarray]:
    """Rates fitted on each inter-event interval, one row per (face, interval).

    An interval is a maximal run of saved times over which the face's count n and ȳ do not
    change (ȳ to a relative 1e-9: it is recomputed from the state at each save). All its saves
    lie on one exponential piece, so the fitted rate is minus the least-squares slope of
    log|c − ȳ| against s over them (at least ``min_saves``, each with |c − ȳ| above
    ``min_gap``·max(1, |ȳ|): closer to convergence the solver's absolute tolerance, not the
    dynamics, sets log|c − ȳ|). Returns columns ``layer, coord,
    s_start, s_end, count, fitted, predicted`` (predicted = mean of the predicted rate over the
    interval).

    Shapes: ``ts`` ``(T,)``, ``thresholds`` ``(T, L, M)``, ``rates`` of the same stack. Batch
    axis: refused (one trajectory per call).
    """
    check = Shapes("interval_rates")
    check("ts", ts, "T")
    check("thresholds", thresholds, "T L M")
    check("rates.counts", rates.counts, "T L M")
    ts = np.asarray(ts)
    c = np.asarray(thresholds)
    n = np.asarray(rates.counts)
    ybar = np.asarray(rates.target_mean)
    pred = np.asarray(rates.predicted_rate)
    rows: list[tuple] = []
    T, L, M = c.shape
    for ell in range(L):
        for k in range(M):
            yb = np.nan_to_num(ybar[:, ell, k], nan=np.inf)
            with np.errstate(invalid="ignore"):  # inf − inf where a face is empty at both saves
                moved = ~(np.abs(np.diff(yb)) <= 1e-9 * (1 + np.abs(yb[1:])))
            change = (n[1:, ell, k] != n[:-1, ell, k]) | (moved & np.isfinite(yb[1:] + yb[:-1]))
            bounds = np.concatenate([[0], np.flatnonzero(change) + 1, [T]])
            for a, b in zip(bounds[:-1], bounds[1:], strict=True):
                if n[a, ell, k] <= 0:
                    continue
                gap = np.abs(c[a:b, ell, k] - ybar[a:b, ell, k])
                ok = gap > min_gap * np.maximum(1.0, np.abs(ybar[a:b, ell, k]))
                if ok.sum() < min_saves:
                    continue
                slope = np.polyfit(ts[a:b][ok], np.log(gap[ok]), 1)[0]
                rows.append(
                    (ell, k, ts[a], ts[b - 1], n[a, ell, k], -slope, pred[a:b, ell, k].mean())
                )
    names = ("layer", "coord", "s_start", "s_end", "count", "fitted", "predicted")
    table = np.array(rows, dtype=float).reshape(-1, len(names))
    return {name: table[:, i] for i, name in enumerate(names)}


def event_times(
    ts: np.ndarray,
    thresholds: np.ndarray,
    d: np.ndarray,
    truncated: np.ndarray,
    u: np.ndarray,
    targets: np.ndarray,
    *,
    n_total: float | None = None,
) -> dict[str, np.ndarray]:
    """Crossing times of every face, located between saves and refined in closed form.

    Between two saves where the owned set of face (ℓ, k) changes, the event-driven solver
    (:func:`~gflow_jax.dynamics.solve_face`) restarts from the saved c at the earlier save on the
    points owned at either save: in the bias flow of a cluster-separated face this gives the
    exact crossing times (to the accuracy of the saved c), however many crossings fall between
    the two saves. A face that sticks at a data value (docs/theory.md#sliding) gives one
    ``stick`` row (``stick = 1``) with its value and time, and the search always terminates (on
    a (S)GD trajectory that oscillates around the value, each crossing is located where it is
    seen). Rows: ``layer, coord, time, count_before, count_after, value, stick``.

    Shapes: ``ts`` ``(T,)``, ``thresholds`` and ``d`` ``(T, L, M)``, ``truncated``
    ``(T, N, L, M)``, ``u`` and ``targets`` ``(N, M)``. Batch axis: refused (one trajectory
    per call).
    """
    check = Shapes("event_times")
    check("ts", ts, "T")
    check("thresholds", thresholds, "T L M")
    check("d", d, "T L M")
    check("u", u, "N M")
    check("targets", targets, "N M")
    check("truncated", truncated, "T N L M")
    ts, c, d = np.asarray(ts), np.asarray(thresholds), np.asarray(d)
    owner = np.asarray(jax.vmap(last_truncations)(jnp.asarray(truncated)))  # (T, N, L, M)
    u, targets = np.asarray(u), np.asarray(targets)
    n_total = u.shape[0] if n_total is None else n_total
    rows: list[tuple] = []
    T, L, M = c.shape
    for ell in range(L):
        for k in range(M):
            own = owner[:, :, ell, k]
            for i in np.flatnonzero(np.any(own[1:] != own[:-1], axis=1)):
                cand = own[i] | own[i + 1]
                face = solve_face(
                    u[cand, k],
                    targets[cand, k],
                    c[i, ell, k],
                    d[i, ell, k],
                    n_total,
                    s_final=ts[i + 1] - ts[i],
                )
                for j, s in enumerate(face.event_times):
                    stuck = face.rates[j + 1] == 0 and np.isfinite(face.stick_time)
                    rows.append(
                        (
                            ell,
                            k,
                            ts[i] + s,
                            face.counts[j],
                            face.counts[j + 1],
                            face.event_values[j],
                            float(stuck),
                        )
                    )
    names = ("layer", "coord", "time", "count_before", "count_after", "value", "stick")
    table = np.array(rows, dtype=float).reshape(-1, len(names))
    return {name: table[:, i] for i, name in enumerate(names)}
