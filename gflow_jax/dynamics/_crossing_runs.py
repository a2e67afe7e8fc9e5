"""Several plain crossings of one coordinate in one step of the exact solver
(docs/theory.md#meeting-faces).

Most events of a separated problem are a free face crossing a data value and moving on in the
same direction. A face alone in its group moves with ȳ and λ of the points it owns, so between
its own crossings its motion changes only if another face's crossing changes which points it
owns. When the crossings of a coordinate are *decoupled* — each changes the owned points of the
crossing face alone — every face's next K crossings follow from its own data values, whatever
the other faces do, and the coordinate's next events are these crossings merged in time.
:func:`plain_crossings` computes them speculatively, all K at once, and accepts the longest
prefix that is verified to be what the event-by-event step would do:

* each crossing is decided: the face arrives moving towards the value and beyond it the field
  points onwards (docs/theory.md#sliding); the first event that is not such a crossing (a face
  that would stick there, a direction in doubt) ends the run, and so does the end of the solve;
* no two faces can meet within the run: every face moves monotonically, and the ranges of
  values they cover are disjoint (the test of :func:`~gflow_jax.dynamics._meetings.may_meet`);
* after each accepted event every face owns exactly the points it owns with itself moved and
  the other faces where they started: the crossings were decoupled.

Glued groups and initial ties are left to the event-by-event step. Used by
:mod:`gflow_jax.dynamics._exact`, one run per coordinate after each of its steps.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..core._sorted_field import cut_counts, intervals_from_counts, value_counts
from ._filippov import Coordinate, Motion
from ._meetings import path

#: the event kind of a crossing (:class:`~gflow_jax.dynamics.FlowEvents`)
CROSS = 0


def crossing_time(start, ybar, rate, xi, exists, up):
    """Time for a face at ``start`` moving as c(t) = ȳ + (c − ȳ)e^{−λt} to reach ``xi``
    (``up``: from below), ``inf`` when it does not exist or is not reached before the face
    settles at ȳ. Elementwise; the one formula of the exact solver's data crossings."""
    reach = exists & (rate > 0) & jnp.where(up, xi < ybar, xi > ybar)
    gap0 = ybar - start
    gap1 = jnp.where(reach, ybar - xi, 1.0)
    dt = jnp.log(jnp.where(reach, gap0 / gap1, 1.0)) / jnp.where(reach, rate, 1.0)
    return jnp.where(reach, jnp.maximum(dt, 0.0), jnp.inf)


class RunTables(NamedTuple):
    """One coordinate's sorted values as runs of equal values, for stepping from run to run
    without a search: the run of every sorted position ``(N,)``, the first position of every
    run ``(N + 1,)`` (N past the last run), its value ``(N,)`` (``inf`` past the last run), the
    number of runs, and the prefix sums of weights and weighted targets side by side
    ``(N + 1, 2)``."""

    run_id: Int[Array, " N"]
    run_first: Int[Array, " N1"]
    run_value: Float[Array, " N"]
    n_runs: Int[Array, ""]
    prefix: Float[Array, "N1 2"]


def run_tables(co: Coordinate) -> RunTables:
    """:class:`RunTables` of one coordinate (no search: a running count of new values)."""
    values = co.values
    N = values.shape[0]
    new = jnp.concatenate([jnp.ones(1, bool), values[1:] != values[:-1]])
    # a log-depth scan: XLA's CPU cumsum is a reduce-window, O(N²) for N values
    run_id = jax.lax.associative_scan(jnp.add, new.astype(jnp.int32)) - 1
    run_first = jnp.full(N + 1, N, jnp.int32).at[run_id].min(jnp.arange(N, dtype=jnp.int32))
    value = jnp.where(run_first[:N] < N, values[jnp.minimum(run_first[:N], N - 1)], jnp.inf)
    prefix = jnp.stack([co.weight_prefix, co.target_prefix], axis=1)
    return RunTables(run_id, run_first, value, run_id[-1] + 1, prefix)


def singleton_motion(c, lo, hi, stuck, d2, co: Coordinate, prefix) -> Motion:
    """:func:`~gflow_jax.dynamics._filippov.motion` of faces alone in their groups, from the
    sorted positions ``lo ≤ i < hi`` of the points they own (same arithmetic, no search);
    elementwise over ``c``, ``lo``, ``hi``, ``stuck``, ``d2``; ``prefix``: :class:`RunTables`."""
    sums = prefix[hi] - prefix[lo]
    n, t = sums[..., 0], sums[..., 1]
    g = (n * c - t) / co.values.shape[0]
    moving = ~stuck & (n > 0)
    rate = jnp.where(moving, n / (co.n_rows * d2), 0.0)
    ybar = jnp.where(moving, c - co.n_rows * g / jnp.where(n > 0, n, 1.0), c)
    return Motion(jnp.where(stuck, 0.0, -g / d2), ybar, rate, jnp.where(stuck, 0.0, d2 * g / d2))


def _places(times):
    """The place in time order of every entry of ``times`` ``(L, K)``, each row increasing (ties:
    the lower face first, then the earlier entry), by counting comparisons: no sort (XLA's CPU
    sort is slow for a few dozen numbers)."""
    L, K = times.shape
    f, g = jnp.arange(L)[:, None, None, None], jnp.arange(L)[None, None, :, None]
    k, k2 = jnp.arange(K)[None, :, None, None], jnp.arange(K)[None, None, None, :]
    a, b = times[None, None, :, :], times[:, :, None, None]
    ahead = (a < b) | ((a == b) & ((g < f) | ((g == f) & (k2 < k))))
    return jnp.sum(ahead, axis=(2, 3), dtype=jnp.int32)


def _upto(ok):
    """How many leading entries of ``ok`` hold, along its last axis (a min, not a scan)."""
    K = ok.shape[-1]
    at = jnp.arange(K, dtype=jnp.int32).reshape((1,) * (ok.ndim - 1) + (K,))
    return jnp.min(jnp.where(ok, K, at), axis=-1)


class CrossingRun(NamedTuple):
    """The accepted crossings of one coordinate: ``n`` events; K log rows (the first ``n``
    used; :class:`~gflow_jax.dynamics._event_log.EventLog`): the segment that ends at each event
    ``(K, 1 + 3L)``, the event's time and value and its face and kind ``(K, 2)``; and the state
    after the last of them."""

    n: Int[Array, ""]
    seg: Float[Array, "K F"]
    ev: Float[Array, "K 2"]
    ev_id: Int[Array, "K 2"]
    s: Float[Array, ""]
    c: Float[Array, " L"]
    rank: Int[Array, " L"]
    motion: Motion


def no_run(c, rank, s, mo: Motion, K: int) -> CrossingRun:
    """A run of no events (the state as it is)."""
    L = c.shape[0]
    return CrossingRun(
        jnp.zeros((), jnp.int32),
        jnp.zeros((K, 1 + 3 * L), c.dtype),
        jnp.zeros((K, 2), c.dtype),
        jnp.full((K, 2), -1, jnp.int32),
        s,
        c,
        rank,
        mo,
    )


def plain_crossings(
    c: Float[Array, " L"],
    rank: Int[Array, " L"],
    group: Int[Array, " L"],
    stuck: Bool[Array, " L"],
    s: Float[Array, ""],
    mo: Motion,
    co: Coordinate,
    tables: RunTables,
    s_final: Float[Array, ""],
    room: Int[Array, ""],
    K: int,
) -> CrossingRun:
    """Up to K (at most ``room``) decoupled crossings of one coordinate from its state at ``s``
    (values ``c``, mode ``rank``/``group``/``stuck``, moving with ``mo``, the motion of that
    mode there), verified as the module says; ``n = 0`` when the coordinate has a glued group.

    Times add up each face's own closed-form crossing times (docs/theory.md#meeting-faces), so
    they agree with the event-by-event step to rounding; a crossing face's motion is evaluated
    at the data value it crossed, as there. Written for XLA on CPU, where a step costs what its
    kernels cost: elementwise work, counted comparisons and a few gathers, no search of the
    data after the first and no sort."""
    L, N = c.shape[0], co.values.shape[0]
    faces, ks = jnp.arange(L), jnp.arange(K)
    up = mo.ybar > c
    side = jnp.where(up, 1, -1).astype(rank.dtype)
    below, upto = value_counts(co.values, co.run_end, c)  # the faces' own values
    below0, at_most0, cuts0 = (
        a[:, 0]
        for a in cut_counts(
            c[:, None],
            co.positive[:, None],
            co.sorted_data(),
            rank[:, None],
            (below[:, None], upto[:, None]),
        )  # fmt: skip
    )
    # the face's next K distinct values, run by run
    first = jnp.where(up, upto, below - 1)
    step = jnp.where(up[:, None], ks[None, :], -ks[None, :])
    r = tables.run_id[jnp.clip(first, 0, N - 1)][:, None] + step
    exists = ((first >= 0) & (first < N))[:, None] & (r >= 0) & (r < tables.n_runs)
    r = jnp.clip(r, 0, N - 1)
    x = tables.run_value[r]  # (L, K)
    # a face past its k-th value, before its next, counts #{u < c} = #{u ≤ c} = this (while the
    # order of the faces holds, a cut that is ±inf stays so, and so do its counts)
    finite = jnp.isfinite(cuts0)[:, None]
    past = tables.run_first[r + up[:, None]]
    below_tab = jnp.concatenate([below0[:, None], jnp.where(finite, past, below0[:, None])], 1)
    at_most_tab = jnp.concatenate(
        [at_most0[:, None], jnp.where(finite, past, at_most0[:, None])], 1
    )

    def intervals(b, a):  # owned positions from counts (layers on axis 0)
        return intervals_from_counts(b, a, co.positive.reshape((L,) + (1,) * (b.ndim - 1)), N)

    # configuration (f, k): face f past its k-th value (k = 0: as now), the others as now;
    # axes (layer, f, k)
    eye = jnp.eye(L, dtype=bool)[:, :, None]
    lo_c, hi_c = intervals(
        jnp.where(eye, below_tab[None], below0[:, None, None]),
        jnp.where(eye, at_most_tab[None], at_most0[:, None, None]),
    )
    lo_tab, hi_tab = lo_c[faces, faces], hi_c[faces, faces]  # (L, K + 1)
    m_own = singleton_motion(
        x, lo_tab[:, 1:], hi_tab[:, 1:], stuck[:, None], co.d2[:, None], co, tables.prefix
    )
    ybar_tab = jnp.concatenate([mo.ybar[:, None], m_own.ybar], 1)
    rate_tab = jnp.concatenate([mo.rate[:, None], m_own.rate], 1)
    c_tab = jnp.concatenate([c[:, None], x], 1)
    prev_ybar, prev_rate = ybar_tab[:, :-1], rate_tab[:, :-1]
    dt = crossing_time(c_tab[:, :-1], prev_ybar, prev_rate, x, exists, up[:, None])
    reach = jnp.isfinite(dt)
    # decided as the step decides a single crossing (_exact._crossings, resolve_crossing)
    approach = prev_rate * (prev_ybar - x)
    sure = jnp.abs(approach) > 1e-9 * prev_rate * (jnp.abs(prev_ybar) + jnp.abs(x))
    arrives = sure & jnp.where(up[:, None], approach > 0, approach < 0)
    onward = jnp.where(up[:, None], m_own.velocity > 0, m_own.velocity < 0)
    good = reach & arrives & onward
    T = jnp.cumsum(dt, axis=1)  # time of each crossing from s (inf once one is not reached)
    chain = ks[None, :] < _upto(good)[:, None]
    before = ks[None, :] <= _upto(good)[:, None]
    barrier = jnp.min(jnp.where(before & reach & ~good, T, jnp.inf))
    limit = jnp.minimum(barrier, s_final - s)
    times = jnp.where(chain & (T < limit), T, jnp.inf)  # (L, K)
    place = _places(times)  # ties: the lower face first
    # after event j, face f has crossed kf[j, f] of its values; event j is at W[j]
    kf = jnp.sum(
        (place[None] <= ks[:, None, None]) & jnp.isfinite(times)[None], axis=2, dtype=jnp.int32
    )  # (K, L)
    kf_prev = jnp.concatenate([jnp.zeros((1, L), jnp.int32), kf[:-1]])
    T_tab = jnp.concatenate([jnp.zeros((L, 1), T.dtype), T], 1)
    # every per-face table (L, K + 1) at kf, in one gather: (K, L, 8)
    tabs = jnp.stack(
        [c_tab, ybar_tab, rate_tab, T_tab]
        + [t.astype(c.dtype) for t in (below_tab, at_most_tab, lo_tab, hi_tab)],
        axis=-1,
    )
    got = tabs[faces[None, :], kf]
    c_at, y_at, r_at, T_at = (got[..., i] for i in range(4))
    b_at, a_at, lo_b, hi_b = (got[..., i].astype(jnp.int32) for i in range(4, 8))
    is_face = kf > kf_prev  # the face of event j
    accepted = (jnp.sum(kf, axis=1) == ks + 1) & (ks < room)
    W = jnp.where(accepted, jnp.sum(jnp.where(is_face, T_at, 0.0), axis=1), 0.0)
    pos = path(c_at, y_at, r_at, W[:, None] - T_at)  # (K, L): every face after event j
    # no meeting: every face's range over [0, W_j] is disjoint from every other face's
    lo_r, hi_r = jnp.minimum(c[None], pos), jnp.maximum(c[None], pos)
    pad = 1e-9 * (jnp.abs(lo_r) + jnp.abs(hi_r)) + jnp.finfo(c.dtype).tiny
    lo_r, hi_r = lo_r - pad, hi_r + pad
    overlap = (lo_r[:, :, None] <= hi_r[:, None, :]) & (lo_r[:, None, :] <= hi_r[:, :, None])
    clear = ~jnp.any(overlap & ~jnp.eye(L, dtype=bool)[None], axis=(1, 2))
    # decoupled: after each event every face owns what it owns in its own configuration
    lo_t, hi_t = intervals(b_at.T, a_at.T)
    lo_t, hi_t = lo_t.T, hi_t.T  # (K, L)
    empty = (hi_t <= lo_t) & (hi_b <= lo_b)  # no points: where the empty range sits is moot
    same = jnp.all(((lo_t == lo_b) & (hi_t == hi_b)) | empty, axis=1)
    # the counts above hold for a face that moves off a data value only on its far side
    on_value = upto > below
    consistent = jnp.all(~on_value | (mo.rate == 0) | stuck | (rank == side))
    ok = accepted & clear & same & consistent & jnp.all(group == faces)
    n = _upto(ok)
    rank_t = jnp.where(kf > 0, side[None, :], rank[None, :])
    # the log rows: the segment before event j (its start, values and motion), the event
    W_prev = jnp.concatenate([jnp.zeros((1,), W.dtype), W[:-1]])
    c_prev = jnp.concatenate([c[None], pos[:-1]])
    y_prev = jnp.concatenate([mo.ybar[None], y_at[:-1]])
    r_prev = jnp.concatenate([mo.rate[None], r_at[:-1]])
    seg = jnp.concatenate([(s + W_prev)[:, None], c_prev, y_prev, r_prev], axis=1)
    face = jnp.argmax(is_face, axis=1).astype(jnp.int32)
    value = jnp.sum(jnp.where(is_face, pos, 0.0), axis=1)  # exactly its data value
    ev = jnp.stack([s + W, value], axis=1)
    ev_id = jnp.stack([face, jnp.full_like(face, CROSS)], axis=1).astype(jnp.int32)
    any_, last = n > 0, jnp.maximum(n - 1, 0)
    m_n = singleton_motion(pos[last], lo_t[last], hi_t[last], stuck, co.d2, co, tables.prefix)
    return CrossingRun(
        n,
        seg,
        ev,
        ev_id,
        jnp.where(any_, s + W[last], s),
        jnp.where(any_, pos[last], c),
        jnp.where(any_, rank_t[last], rank),
        jax.tree.map(lambda a, b: jnp.where(any_, a, b), m_n, mo),
    )
