"""The exact, event-driven solution of the bias-only flow on C_in of the whole adapted network
(docs/theory.md#meeting-faces).

In the common frame every coordinate evolves on its own, and between two events every face follows
c(t) = ȳ + (c − ȳ)e^{−λt} in closed form (a glued group as one face, a stuck face not at all;
:mod:`gflow_jax.dynamics._filippov`). Events are the times at which a face (or glued group)
reaches a data value, meets another face, or a glued group stops attracting: data crossings in
closed form, meetings as the root of a difference of two exponentials (it has at most one
extremum, so each monotone piece is solved to machine precision by safeguarded Newton;
:mod:`gflow_jax.dynamics._meetings`), releases
as the root of an affine function of the group's value. At each event the faces that meet there
are given their Filippov mode (:func:`~gflow_jax.dynamics._filippov.resolve`): a crossing, a
hand-over, a face sticking at a data value, or faces gluing — a zero-time cross/release loop is
recognised as sliding, never iterated.

Everything is one ``lax.while_loop`` over events, each step advancing every coordinate to its own
next event (coordinates that are done wait), so the solver is jit-able and vmappable. The number
of events per coordinate is bounded by ``max_events``; reaching the bound is reported (and named
by :func:`~gflow_jax.dynamics.check_solution`), never a hang. Saved states are evaluated in closed
form from the recorded segments afterwards.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..core import AdaptedParameters, sort_data
from ..core._shapes import Shapes
from ._filippov import Coordinate, Mode, coordinates, motion, resolve
from ._meetings import meeting_times, path
from ._problem import FlowProblem, check_problem
from ._solution import FlowEvents, FlowSolution, SlidingStatus

# event kinds (FlowEvents.kind)
CROSS, STICK, MEET, GLUE, RELEASE = 0, 1, 2, 3, 4
KIND_NAMES = ("cross", "stick", "meet", "glue", "release")


class _State(eqx.Module):
    """Per-coordinate state of the event loop (leading axis M)."""

    s: Float[Array, " M"]
    c: Float[Array, "M L"]
    rank: Int[Array, "M L"]
    group: Int[Array, "M L"]
    stuck: Bool[Array, "M L"]
    stuck_time: Float[Array, "M L"]
    pending: Bool[Array, "M L"]  # faces whose initial ties are not yet resolved
    count: Int[Array, " M"]  # recorded segments (= events + 1 once started)
    done: Bool[Array, " M"]
    failed: Bool[Array, " M"]
    seg_s: Float[Array, "M E"]
    seg_c: Float[Array, "M E L"]
    seg_ybar: Float[Array, "M E L"]
    seg_rate: Float[Array, "M E L"]
    ev_time: Float[Array, "M E"]
    ev_face: Int[Array, "M E"]
    ev_kind: Int[Array, "M E"]
    ev_value: Float[Array, "M E"]


def _at_data(v, co: Coordinate):
    """Whether the value v is exactly one of the coordinate's data values."""
    i = jnp.clip(jnp.searchsorted(co.values, v, side="left"), 0, co.values.shape[0] - 1)
    return co.values[i] == v


def _data_crossing(c, mo, co: Coordinate):
    """Time to the next data value strictly beyond each face in its direction of motion, and
    that value (``inf`` when it is not reached before the face settles), ``(L,)``."""
    up = mo.ybar > c
    n = co.values.shape[0]
    i_up = jnp.searchsorted(co.values, c, side="right")
    i_dn = jnp.searchsorted(co.values, c, side="left") - 1
    idx = jnp.clip(jnp.where(up, i_up, i_dn), 0, n - 1)
    xi = co.values[idx]
    exists = jnp.where(up, i_up < n, i_dn >= 0)
    reach = exists & (mo.rate > 0) & jnp.where(up, xi < mo.ybar, xi > mo.ybar)
    gap0 = mo.ybar - c
    gap1 = jnp.where(reach, mo.ybar - xi, 1.0)
    dt = jnp.log(jnp.where(reach, gap0 / gap1, 1.0)) / jnp.where(reach, mo.rate, 1.0)
    return jnp.where(reach, jnp.maximum(dt, 0.0), jnp.inf), xi


def _splits(c, rank, group, stuck, co: Coordinate):
    """For every glued group (by label) and every split of it into a lower part P and an upper
    part Q: h = v_P − v_Q now and its slope dh/dc′ = λ_Q − λ_P in the group's value (each part
    moves as v(c′) = −λ(c′ − ȳ) while ownership is fixed). ``(L, 2^L)`` each; invalid splits
    have h = +inf."""
    L = c.shape[0]
    masks = (jnp.arange(2**L)[:, None] >> jnp.arange(L)[None, :]) & 1 == 1  # (2^L, L)

    def split(label, mask):
        members = (group == label) & ~stuck
        lower, upper = mask & members, members & ~mask
        valid = jnp.any(lower) & jnp.any(upper) & jnp.all(mask <= members)
        parts = motion(
            c, jnp.where(lower, -1, jnp.where(upper, 1, rank)), jnp.where(upper, L + label, group),
            stuck, co,
        )  # fmt: skip
        i_low, i_up = jnp.argmax(lower), jnp.argmax(upper)
        h = parts.velocity[i_low] - parts.velocity[i_up]
        slope = parts.rate[i_up] - parts.rate[i_low]
        return jnp.where(valid, h, jnp.inf), jnp.where(valid, slope, 0.0)

    return jax.vmap(lambda lab: jax.vmap(lambda m: split(lab, m))(masks))(jnp.arange(L))


def split_margin(c, rank, group, stuck, co: Coordinate):
    """The least attraction v_P − v_Q over the splits of each glued group, by label ``(L,)``
    (``inf``: not a glued group)."""
    return jnp.min(_splits(c, rank, group, stuck, co)[0], axis=1)


def _release(c, rank, group, stuck, mo, co: Coordinate):
    """Time at which each glued group stops attracting (``inf``: not before it settles).

    The group holds while v_P ≥ v_Q for every split (:func:`_splits`); each difference is affine
    in the group's value, so its root c* is exact, and the time to reach c* at the group's
    exponential rate is the release (docs/theory.md#meeting-faces). Stuck groups never release
    on their own: their ownership does not change until another face meets them."""
    h, slope = _splits(c, rank, group, stuck, co)  # (L labels, 2^L)
    L = c.shape[0]
    cg, ybar, rate = c[:, None], mo.ybar[:, None], mo.rate[:, None]
    cstar = cg - h / jnp.where(slope != 0, slope, 1.0)
    between = jnp.isfinite(h) & (slope != 0) & (rate > 0) & ((cstar - cg) * (ybar - cstar) > 0)
    dt = jnp.log(jnp.where(between, (ybar - cg) / jnp.where(between, ybar - cstar, 1.0), 1.0))
    dt = jnp.maximum(dt / jnp.where(between, rate, 1.0), 0.0)
    t = jnp.where(h < 0, 0.0, jnp.where(between, dt, jnp.inf))
    del L
    return jnp.min(t, axis=1)[group]


class Breakpoint(eqx.Module):
    """What a face (or glued group) of one coordinate reaches at an event: the face, the value,
    and whether it is a data value or the release of a glued group. Shared by the exact and the
    event-located solvers; :meth:`kind` names the event once the faces that meet there have
    their new mode."""

    face: Int[Array, ""]
    value: Float[Array, ""]
    is_data: Bool[Array, ""]
    is_release: Bool[Array, ""]

    def kind(self, cluster, group, stuck) -> Int[Array, ""]:
        """The kind of the event (:class:`~gflow_jax.dynamics.FlowEvents`) from the faces
        ``cluster`` ``(L,)`` that met at its value and their new mode (``group``, ``stuck``
        ``(L,)``): a release, else a stick (the face is held at a data value), a glue (it moves
        on with another face of the cluster), a crossing of a data value, or a meeting
        (hand-over)."""
        glued = jnp.sum(cluster & (group == group[self.face])) > 1
        kind = jnp.where(
            stuck[self.face], STICK, jnp.where(glued, GLUE, jnp.where(self.is_data, CROSS, MEET))
        )
        return jnp.where(self.is_release, RELEASE, kind).astype(jnp.int32)


class _Event(eqx.Module):
    """Where one coordinate goes next (before the faces that meet there are resolved)."""

    dt: Float[Array, ""]
    finished: Bool[Array, ""]
    at: Breakpoint
    is_check: Bool[Array, ""]  # a zero-time check of the initial ties of ``face``
    c: Float[Array, " L"]
    cluster: Bool[Array, " L"]
    has_data: Bool[Array, ""]
    ybar: Float[Array, " L"]
    rate: Float[Array, " L"]


def _next_event(c, group, pending, s, s_final, co, mo, t_rel) -> _Event:
    """The next event of one coordinate moving with ``mo``; ``t_rel`` ``(L,)`` the release times
    of its glued groups (:func:`_release`). Faces still ``pending`` first have their initial
    ties resolved, one value at a time, in zero time."""
    remaining = s_final - s
    t_data, xi = _data_crossing(c, mo, co)
    horizon = jnp.minimum(jnp.min(t_data), remaining)
    other = group[:, None] != group[None, :]
    t_meet = jnp.where(other, meeting_times(c, mo, horizon), jnp.inf)
    t_face = jnp.minimum(jnp.minimum(t_data, jnp.min(t_meet, axis=1)), t_rel)
    face = jnp.argmin(t_face)
    dt = t_face[face]
    finished = dt >= remaining
    dt = jnp.where(finished, remaining, dt)
    # a glued group held at one value, its label face's: the path need not round alike at
    # different array positions, and a split of a group one ulp apart has the wrong ownership
    c_new = path(c, mo.ybar, mo.rate, dt)[group]
    is_release = (t_rel[face] <= t_data[face]) & (t_rel[face] <= jnp.min(t_meet[face]))
    is_data = ~is_release & (t_data[face] <= jnp.min(t_meet[face]))
    partner = jnp.argmin(t_meet[face])
    # faces meet at the value of the one that does not move, if one does not (a stuck face's
    # data value, exactly: the data value then joins the cluster)
    meet = jnp.where(mo.rate[face] == 0, c_new[face], c_new[partner])
    value = jnp.where(is_data, xi[face], jnp.where(is_release, c_new[face], meet))
    # snap the event exactly onto its value: the data value, or the other face's value
    snap = (group == group[face]) | (~is_data & ~is_release & (group == group[partner]))
    c_new = jnp.where(snap & ~finished, value, c_new)
    check = jnp.any(pending)
    first = jnp.argmax(pending)
    face = jnp.where(check, first, face)
    value = jnp.where(check, c[first], value)
    dt = jnp.where(check, 0.0, dt)
    finished = finished & ~check
    c_new = jnp.where(check, c, c_new)
    cluster = (c_new == value) & ~finished
    has_data = _at_data(value, co) & ~finished
    at = Breakpoint(face, value, is_data & ~check, is_release & ~check)
    return _Event(dt, finished, at, check, c_new, cluster, has_data, mo.ybar, mo.rate)


def _record(state: _State, ev: _Event, res) -> _State:
    """Write the segment that ends at this event and the event, then the new mode."""
    k = state.count
    E = state.seg_s.shape[0]
    slot = jnp.minimum(k, E - 1)
    check = ev.is_check & ~state.done  # an initial tie: a new mode, no time passes
    active = ~state.done & ~ev.is_check
    record = active & ~ev.finished
    ok = res.ok | ~(record | check)
    overflow = record & (k >= E - 1)
    kind = ev.at.kind(ev.cluster, res.group, res.stuck)
    s_new = state.s + ev.dt

    def put(arr, value):
        return arr.at[slot].set(jnp.where(active, value, arr[slot]))

    def log(arr, value):
        return arr.at[slot].set(jnp.where(record, value, arr[slot]))

    newly_stuck = (record | check) & res.stuck & ~state.stuck
    return _State(
        s=jnp.where(active, s_new, state.s),
        c=jnp.where(active, ev.c, state.c),
        rank=jnp.where(record | check, res.rank, state.rank),
        group=jnp.where(record | check, res.group, state.group),
        stuck=jnp.where(record | check, res.stuck, state.stuck),
        stuck_time=jnp.where(newly_stuck, s_new, state.stuck_time),
        pending=state.pending & ~(check & ev.cluster),
        count=jnp.where(active, k + 1, k),
        done=state.done | (ev.finished & ~ev.is_check) | overflow | ~ok,
        failed=state.failed | overflow | ~ok,
        seg_s=put(state.seg_s, state.s),
        seg_c=put(state.seg_c, state.c),
        seg_ybar=put(state.seg_ybar, ev.ybar),
        seg_rate=put(state.seg_rate, ev.rate),
        ev_time=log(state.ev_time, s_new),
        ev_face=log(state.ev_face, ev.at.face.astype(jnp.int32)),
        ev_kind=log(state.ev_kind, kind.astype(jnp.int32)),
        ev_value=log(state.ev_value, ev.at.value),
    )


def initial_mode(c0, co: Coordinate):
    """The Filippov mode of one coordinate's initial thresholds ``(L,)``: faces equal to each
    other or to a data value are resolved before anything moves, one tied value at a time."""
    L = c0.shape[0]
    mode = Mode.free((L, 1))
    rank, group, stuck = mode.rank[:, 0], mode.group[:, 0], mode.stuck[:, 0]

    def settle(j, carry):
        rank, group, stuck, ok = carry
        cluster = c0 == c0[j]
        has_data = _at_data(c0[j], co)
        use = (jnp.argmax(cluster) == j) & ((jnp.sum(cluster) > 1) | has_data)
        res = resolve(c0, rank, group, stuck, cluster, has_data, co, full=True)
        return (
            jnp.where(use, res.rank, rank),
            jnp.where(use, res.group, group).astype(group.dtype),
            jnp.where(use, res.stuck, stuck),
            ok & (res.ok | ~use),
        )

    return jax.lax.fori_loop(0, L, settle, (rank, group, stuck, jnp.asarray(True)))


def _initial_state(c0, s0, E) -> _State:
    """One coordinate's state at s0; its initial ties are resolved by the loop's first steps."""
    L = c0.shape[0]
    mode = Mode.free((L, 1))
    dtype = c0.dtype
    return _State(
        s=jnp.asarray(s0, dtype),
        c=c0,
        rank=mode.rank[:, 0],
        group=mode.group[:, 0],
        stuck=mode.stuck[:, 0],
        stuck_time=jnp.full(L, jnp.nan, dtype),
        pending=jnp.ones(L, bool),
        count=jnp.asarray(0, jnp.int32),
        done=jnp.asarray(False),
        failed=jnp.asarray(False),
        seg_s=jnp.full(E, jnp.inf, dtype),
        seg_c=jnp.zeros((E, L), dtype),
        seg_ybar=jnp.zeros((E, L), dtype),
        seg_rate=jnp.zeros((E, L), dtype),
        ev_time=jnp.full(E, jnp.inf, dtype),
        ev_face=jnp.full(E, -1, jnp.int32),
        ev_kind=jnp.full(E, -1, jnp.int32),
        ev_value=jnp.full(E, jnp.nan, dtype),
    )


def _run(c0, co, s0, s_final, max_events: int) -> _State:
    """The event loop over every coordinate (``c0``: ``(M, L)``; ``co``: leading M)."""
    E = max_events + 1
    state = jax.vmap(lambda c: _initial_state(c, s0, E))(c0)

    def cond(state):
        return ~jnp.all(state.done)

    def body(state):
        glued = jnp.any(
            jax.vmap(lambda g, st: jnp.any(((g[:, None] == g[None, :]).sum(1) > 1) & ~st))(
                state.group, state.stuck
            )
        )

        mo = jax.vmap(motion)(state.c, state.rank, state.group, state.stuck, co)
        t_rel = jax.lax.cond(
            glued,
            lambda: jax.vmap(_release)(state.c, state.rank, state.group, state.stuck, mo, co),
            lambda: jnp.full_like(state.c, jnp.inf),
        )
        ev = jax.vmap(
            lambda st, k, m, tr: _next_event(st.c, st.group, st.pending, st.s, s_final, k, m, tr)
        )(state, co, mo, t_rel)
        items = jnp.sum(ev.cluster, axis=1) + ev.has_data.astype(jnp.int32)

        def resolved(full):
            return jax.vmap(
                lambda st, e, k: resolve(
                    e.c, st.rank, st.group, st.stuck, e.cluster, e.has_data, k, full=full
                )  # fmt: skip
            )(state, ev, co)

        big = jnp.any((items > 2) & ~ev.finished & ~state.done)
        res = jax.lax.cond(big, lambda: resolved(True), lambda: resolved(False))
        return jax.vmap(_record)(state, ev, res)

    return jax.lax.while_loop(cond, body, state)


def _saves(state: _State, save_ts) -> Float[Array, "T M L"]:
    """Thresholds at the save times from the recorded segments (closed form)."""

    def one(st):
        j = jnp.clip(jnp.searchsorted(st.seg_s, save_ts, side="right") - 1, 0, None)
        t = save_ts - st.seg_s[j]
        return path(st.seg_c[j], st.seg_ybar[j], st.seg_rate[j], t[:, None])

    return jnp.moveaxis(jax.vmap(one)(state), 0, 1)


def _events(state: _State) -> FlowEvents:
    M, E = state.ev_time.shape
    order = jnp.argsort(state.ev_time.ravel(), stable=True)
    coord = jnp.repeat(jnp.arange(M, dtype=jnp.int32), E)
    return FlowEvents(
        time=state.ev_time.ravel()[order],
        layer=state.ev_face.ravel()[order],
        coord=coord[order],
        kind=state.ev_kind.ravel()[order],
        value=state.ev_value.ravel()[order],
    )


@eqx.filter_jit
def solve_exact(
    problem: FlowProblem,
    params0: AdaptedParameters,
    save_ts: Float[Array, " T"],
    *,
    max_events: int = 2000,
) -> FlowSolution:
    """The exact solution of the bias-only flow on C_in (docs/theory.md#meeting-faces), event by
    event, saved at ``save_ts``. Batch axis: refused on ``problem``, ``params0`` (d, b
    ``(L, M)``) and ``save_ts`` ``(T,)``; vmap the solve over a batch.

    Between events every face follows c(t) = ȳ + (c − ȳ)e^{−λt} exactly; events (data values
    crossed, faces meeting, faces sticking at a data value, glued groups forming and releasing)
    are located in closed form or by bisection of a difference of exponentials to machine
    precision, and resolved by their Filippov mode (docs/theory.md#sliding). The result has the
    same type as the diffrax solve, with ``events`` (every event) and ``sliding`` (which faces
    are stuck or glued at the end); ``num_steps`` counts the events.

    Args:
        problem: a bias-only (``mode="bias"``) problem on the input-layer cost.
        params0: the initial ``(d, b)``; ``d`` stays fixed.
        save_ts: ``(T,)`` increasing save times; the solve runs from ``save_ts[0]``.
        max_events: the most events per coordinate (static). Reaching it sets
            ``success = False``; :func:`check_solution` then names the coordinate.

    Pure and jittable; ``vmap`` over problems of one shape batches them.
    """
    check = check_problem(Shapes("solve_exact").adapted("params0", params0), problem)
    check("save_ts", save_ts, "T")
    if problem.mode != "bias" or problem.cost != "input":
        raise ValueError(
            "the exact solver solves the bias-only flow of the input-layer cost "
            f"(mode='bias', cost='input'); got mode={problem.mode!r}, cost={problem.cost!r}"
        )
    data = (
        problem.sorted
        if problem.sorted is not None
        else sort_data(problem.u, problem.targets, problem.weights)
    )
    d = params0.d
    co = coordinates(data, d)
    c0 = params0.thresholds.T  # (M, L)
    save_ts = jnp.asarray(save_ts, c0.dtype)
    state = _run(c0, co, save_ts[0], save_ts[-1], max_events)
    c_t = _saves(state, save_ts)  # (T, M, L)
    thresholds = jnp.swapaxes(c_t, 1, 2)  # (T, L, M)
    params = AdaptedParameters(d=jnp.broadcast_to(d, thresholds.shape), b=-thresholds * d[None])
    loss = jax.vmap(problem.loss)(params)
    events = jnp.sum(state.count) - c0.shape[0]  # segments minus the final one per coordinate
    sliding = SlidingStatus(
        stuck=state.stuck.T,
        stuck_value=jnp.where(state.stuck, state.c, jnp.nan).T,
        stuck_time=jnp.where(state.stuck, state.stuck_time, jnp.nan).T,
        group=state.group.T,
    )
    return FlowSolution(
        ts=save_ts,
        params=params,
        loss=loss,
        num_steps=events,
        num_accepted_steps=events,
        num_rejected_steps=jnp.zeros((), jnp.int32),
        success=~jnp.any(state.failed) & jnp.all(jnp.isfinite(loss)),
        events=_events(state),
        sliding=sliding,
    )
