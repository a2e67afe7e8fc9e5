"""Exact, event-driven solution of one truncation face (docs/theory.md#closed-forms).

One face (ℓ, k) truncating from below (d > 0) owns the points with u < c (a point exactly on the
face is not truncated, as in :func:`~gflow_jax.core.adapted_truncate`). In the bias-only flow

    ∂_s c = −(1/(N d²)) Σ_{owned i} (c − ỹ_i) = −λ_n (c − ȳ_n),   λ_n = n/(N d²),

with n the number of owned points and ȳ_n the mean of their targets. Between crossings n is
constant, so c(s) is *exactly* exponential: c(s) = ȳ_n + (c(s_a) − ȳ_n) e^{−λ_n (s − s_a)}. The
face reaches the next data value ξ after

    Δ = (1/λ_n) ln[(ȳ_n − c(s_a)) / (ȳ_n − ξ)]        (moving up: ξ the next point above c)

and the count jumps (by the number of points at that value); moving down, points are released.
That one rule covers every closed form: *sweep* (ỹ beyond the next points), *complete
truncation* (every point crossed at the finite time s*), *partial* (ỹ between two points: c → ỹ at
rate m/(N d²)), *dead* (n = 0: stationary), *release* (ỹ below c) and, with targets that differ
between points, the *general* case whose fixed point is the weighted mean c* = Σ_j n_j ỹ_j / n.
A face truncating from above (d < 0) is the mirror image u → −u.

The solver is host-side NumPy in float64: at most one event per data value, each in closed form
— the exact oracle the diffrax solution is tested against, and a feature in its own right.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from jaxtyping import ArrayLike

from ..core._shapes import Shapes


@dataclass(frozen=True)
class FaceSolution:
    """Piecewise-exponential threshold c(s) of one face, exact.

    Piece p holds on ``[starts[p], starts[p+1])`` (the last one forever) with
    ``c(s) = target_means[p] + (c_starts[p] − target_means[p]) · exp(−rates[p]·(s − starts[p]))``.

    Attributes:
        starts: ``(P,)`` flow times at which the pieces start; ``starts[1:]`` are the events.
        c_starts: ``(P,)`` threshold at the start of each piece.
        counts: ``(P,)`` owned points n during each piece.
        target_means: ``(P,)`` ȳ_n during each piece (NaN where n = 0).
        rates: ``(P,)`` λ_n = n/(N d²) during each piece.
        event_values: ``(P − 1,)`` the data value crossed at each event.
        complete_time: s* at which every candidate point is owned (``inf`` if never).
        limit: lim_{s→∞} c(s): ȳ of the last piece, the frozen c of a dead face, or the data
            value the face sticks to.
        sign: +1 for a face truncating from below, −1 from above.
        stick_value: the data value at which the face sticks (Filippov sliding: the one-sided
            fields point at each other there; docs/theory.md#sliding), NaN if it never does.
        stick_time: when it gets there (``inf`` if never); the last piece then has rate 0.
    """

    starts: np.ndarray
    c_starts: np.ndarray
    counts: np.ndarray
    target_means: np.ndarray
    rates: np.ndarray
    event_values: np.ndarray
    complete_time: float
    limit: float
    sign: int
    stick_value: float = float("nan")
    stick_time: float = float("inf")

    @property
    def event_times(self) -> np.ndarray:
        return self.starts[1:]

    def __call__(self, s) -> np.ndarray:
        """c(s) at the flow times ``s`` (any shape)."""
        s = np.asarray(s, dtype=float)
        p = np.clip(np.searchsorted(self.starts, s, side="right") - 1, 0, None)
        ybar = np.where(
            (self.counts[p] > 0) & (self.rates[p] > 0), self.target_means[p], self.c_starts[p]
        )
        decay = np.exp(-self.rates[p] * (s - self.starts[p]))
        return ybar + (self.c_starts[p] - ybar) * decay

    def count(self, s) -> np.ndarray:
        """n(s): owned points at the flow times ``s``."""
        s = np.asarray(s, dtype=float)
        return self.counts[np.clip(np.searchsorted(self.starts, s, side="right") - 1, 0, None)]


def solve_face(
    values: ArrayLike,
    targets: ArrayLike,
    c0: float,
    d: float,
    n_total: int | float,
    *,
    s_final: float = np.inf,
) -> FaceSolution:
    """Event-driven exact solution of one face of the bias-only flow on C_in. Batch axis:
    refused (``values`` and ``targets`` must be 1-d).

    Args:
        values: ``(n,)`` coordinate u_k of the points this face can own
            (for a separated face, the cluster's coordinates).
        targets: ``(n,)`` or scalar: the k-th target coordinate ỹ of each of those points.
        c0: threshold c_{ℓ,k}(0).
        d: diagonal weight d_{ℓ,k}; its sign is the truncation side, d² sets the time scale.
        n_total: N, the number of points in the cost's 1/N (all clusters).
        s_final: stop looking for events after this time.

    Returns:
        The :class:`FaceSolution` c(s), counts and event times. It always terminates: at most one
        event per data value, and a face that would cross and release a value in zero time
        sticks there instead (``stick_value``, ``stick_time``).

    Example:
        A sweep (docs/theory.md#closed-forms): ten points in [0, 1], target ỹ = 1.5 beyond them,
        N = 25, d = 1; every point is crossed, then c → ỹ.

        >>> import numpy as np
        >>> face = solve_face(np.linspace(0, 1, 10), 1.5, c0=0.35, d=1.0, n_total=25)
        >>> int(face.counts[-1]), bool(np.isfinite(face.complete_time)), face.limit
        (10, True, 1.5)
    """
    check = Shapes("solve_face")
    check("values", values, "n")
    if np.ndim(targets):
        check("targets", targets, "n")
    values = np.asarray(values, dtype=float)
    targets = np.broadcast_to(np.asarray(targets, dtype=float), values.shape)
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(targets))):
        raise ValueError("values and targets must be finite")
    if not (np.isfinite(c0) and np.isfinite(d) and d != 0.0):
        raise ValueError(f"need a finite threshold and a finite, non-zero d; got c0={c0}, d={d}")
    if not n_total >= values.size or n_total <= 0:
        raise ValueError(f"n_total = {n_total} must be at least the number of values {values.size}")
    sign = 1 if d > 0 else -1
    # mirror a face truncating from above onto one truncating from below
    order = np.argsort(sign * values, kind="stable")
    xi, y = sign * values[order], sign * targets[order]
    prefix = np.concatenate([[0.0], np.cumsum(y)])
    scale = n_total * d * d
    c, s = sign * float(c0), 0.0
    n = int(np.searchsorted(xi, c, side="left"))  # #{ξ < c}
    starts, c_starts, counts, means, rates, crossed = [], [], [], [], [], []
    complete = 0.0 if n == xi.size else np.inf
    stick_value, stick_time = np.nan, np.inf
    while True:
        ybar = prefix[n] / n if n else np.nan
        lam = n / scale
        starts.append(s)
        c_starts.append(c)
        counts.append(n)
        means.append(ybar)
        rates.append(lam)
        if n == 0 or c == ybar:
            break
        if c < ybar and n < xi.size and xi[n] < ybar:  # moving up: next point is crossed
            nxt = xi[n]
            n_new = int(np.searchsorted(xi, nxt, side="right"))
        elif c > ybar and xi[n - 1] > ybar:  # moving down: the largest owned point is released
            nxt = xi[n - 1]
            n_new = int(np.searchsorted(xi, nxt, side="left"))
        else:  # relaxes to ȳ without another crossing
            break
        s_next = s + np.log((ybar - c) / (ybar - nxt)) / lam
        if s_next > s_final:
            break
        # past nxt the field points back at it: the face sticks there (a crossing and a release
        # in zero time, docs/theory.md#sliding), held with velocity 0 from then on
        ybar_new = prefix[n_new] / n_new if n_new else np.nan
        if (ybar_new < nxt) if c < ybar else (ybar_new > nxt):
            crossed.append(nxt)
            stick_value, stick_time = nxt, s_next
            starts.append(s_next)
            c_starts.append(nxt)
            counts.append(n)
            means.append(nxt)
            rates.append(0.0)
            break
        s, c, n = s_next, nxt, n_new
        crossed.append(nxt)
        if n == xi.size and not np.isfinite(complete):
            complete = s
    last_mean = means[-1]
    limit = c_starts[-1] if counts[-1] == 0 or np.isnan(last_mean) else last_mean
    return FaceSolution(
        starts=np.asarray(starts),
        c_starts=sign * np.asarray(c_starts),
        counts=np.asarray(counts),
        target_means=sign * np.asarray(means),
        rates=np.asarray(rates),
        event_values=sign * np.asarray(crossed),
        complete_time=float(complete),
        limit=float(sign * limit),
        sign=sign,
        stick_value=float(sign * stick_value),
        stick_time=float(stick_time),
    )


def two_sided_width(lower: FaceSolution, upper: FaceSolution, s) -> np.ndarray:
    """Width w(s) = c_upper(s) − c_lower(s) of a two-sided clamp (docs/theory.md#closed-forms):
    a face from below (d₁ > 0) and a later face from above (d₂ < 0) on the same coordinate.
    While the two owned sets are disjoint the faces evolve independently, and once both counts
    are final
    w(s) = A e^{−λ₁ s} + B e^{−λ₂ s}, λ₁ = #{ξ < ỹ}/(N d₁²), λ₂ = #{ξ > ỹ}/(N d₂²).

    ``s``: flow times of any shape (elementwise); returns w of the same shape. Batch axis:
    accepted (on ``s``)."""
    if not (isinstance(lower, FaceSolution) and isinstance(upper, FaceSolution)):
        raise ValueError("two_sided_width: lower and upper must be FaceSolution (solve_face)")
    if lower.sign != 1 or upper.sign != -1:
        raise ValueError("need a face from below (d > 0) and a face from above (d < 0)")
    return upper(s) - lower(s)
