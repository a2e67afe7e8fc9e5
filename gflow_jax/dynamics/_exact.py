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

Everything is one ``lax.while_loop``, so the solver is jit-able and vmappable. Each step first
takes, for every coordinate, its next plain crossings at once — up to ``run`` of them, merged
in time, where they are verified to be decoupled (:mod:`gflow_jax.dynamics._crossing_runs`):
on separated data nearly every event, so the loop takes about events/``run`` steps — and then,
where some coordinate took none (its next event is a meeting, a face sticking, a release, an
initial tie, the end) or its motion is not known, one event of every coordinate (coordinates
that are done wait). The number of events per coordinate is bounded by ``max_events``;
reaching the bound is reported (and named by :func:`~gflow_jax.dynamics.check_solution`),
never a hang. The log holds every coordinate's segments in time order; saved states are
evaluated in closed form from them afterwards.
"""

from __future__ import annotations

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..core import AdaptedParameters, sort_data
from ..core._batching import where_needed
from ..core._shapes import Shapes
from ..core._sorted_field import value_counts
from ._crossing_runs import crossing_time, no_run, plain_crossings, run_tables
from ._event_log import EventLog, segment_saves, sorted_events
from ._filippov import Coordinate, Mode, coordinates, motion, resolve, resolve_crossing
from ._glued import release_times
from ._meetings import may_meet, meeting_times, path
from ._problem import FlowProblem, check_problem
from ._solution import FlowSolution, SlidingStatus

# event kinds (FlowEvents.kind)
CROSS, STICK, MEET, GLUE, RELEASE = 0, 1, 2, 3, 4
KIND_NAMES = ("cross", "stick", "meet", "glue", "release")
#: the most plain crossings a coordinate takes at once, before the step of its next event
#: (:mod:`gflow_jax.dynamics._crossing_runs`). On the N = 1000, M = 16, L = 4 benchmark problem
#: (about 140 events per coordinate) 8, 16 and 32 take 22, 11 and 9 loop steps; 16 was the
#: fastest (the work of a run grows with its square)
RUN = 16


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


def _at_data(v, co: Coordinate):
    """Whether the value v is exactly one of the coordinate's data values."""
    below, upto = value_counts(co.values, co.run_end, v)
    return upto > below


def _data_crossing(c, mo, co: Coordinate):
    """Time to the next data value strictly beyond each face in its direction of motion, and
    that value (``inf`` when it is not reached before the face settles), ``(L,)``."""
    up = mo.ybar > c
    n = co.values.shape[0]
    below, upto = value_counts(co.values, co.run_end, c)  # #{u < c}, #{u ≤ c}
    i_up, i_dn = upto, below - 1
    idx = jnp.clip(jnp.where(up, i_up, i_dn), 0, n - 1)
    xi = co.values[idx]
    exists = jnp.where(up, i_up < n, i_dn >= 0)
    return crossing_time(c, mo.ybar, mo.rate, xi, exists, up), xi


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


def _next_event(c, group, pending, s, s_final, co, mo, t_rel, t_data, xi, t_meet) -> _Event:
    """The next event of one coordinate moving with ``mo``: ``t_rel`` ``(L,)`` the release times
    of its glued groups (:func:`~gflow_jax.dynamics._glued.release_times`), ``t_data``, ``xi``
    ``(L,)`` the next data value of each face and when it is reached (:func:`_data_crossing`),
    ``t_meet`` ``(L, L)`` when faces of different groups meet (:func:`_meetings`). Faces still
    ``pending`` first have their initial ties resolved, one value at a time, in zero time."""
    remaining = s_final - s
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


def _record(state: _State, ev: _Event, res, max_events: int):
    """The new mode after this event, and the log row of this step (:class:`EventLog`): the segment
    that ends at the event and the event (a zero-time check of initial ties writes its segment,
    which the next one at the same ``s`` supersedes; a coordinate that is done writes nothing)."""
    k = state.count
    check = ev.is_check & ~state.done  # an initial tie: a new mode, no time passes
    active = ~state.done & ~ev.is_check
    record = active & ~ev.finished
    ok = res.ok | ~(record | check)
    overflow = record & (k >= max_events)
    kind = ev.at.kind(ev.cluster, res.group, res.stuck)
    s_new = state.s + ev.dt
    segment = active | check
    inf, nan = jnp.asarray(jnp.inf, state.s.dtype), jnp.asarray(jnp.nan, state.s.dtype)
    seg = jnp.concatenate([jnp.where(segment, state.s, inf)[None], state.c, ev.ybar, ev.rate])
    event = jnp.stack([jnp.where(record, s_new, inf), jnp.where(record, ev.at.value, nan)])
    event_id = jnp.where(record, jnp.stack([ev.at.face, kind]), -1).astype(jnp.int32)
    newly_stuck = (record | check) & res.stuck & ~state.stuck
    new = _State(
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
    )
    return new, (seg, event, event_id)


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


def _initial_state(c0, s0, co: Coordinate) -> _State:
    """One coordinate's state at s0; its initial ties (faces equal to another face or to a data
    value) are resolved by the loop's first steps. A face with no tie starts free, the mode such
    a step would give it."""
    L = c0.shape[0]
    on_data = jax.vmap(lambda v: _at_data(v, co))(c0)
    tied = (jnp.sum(c0[:, None] == c0[None, :], axis=1) > 1) | on_data
    mode = Mode.free((L, 1))
    dtype = c0.dtype
    return _State(
        s=jnp.asarray(s0, dtype),
        c=c0,
        rank=mode.rank[:, 0],
        group=mode.group[:, 0],
        stuck=mode.stuck[:, 0],
        stuck_time=jnp.full(L, jnp.nan, dtype),
        pending=tied,
        count=jnp.asarray(0, jnp.int32),
        done=jnp.asarray(False),
        failed=jnp.asarray(False),
    )


def _run(
    c0, co, s0, s_final, max_events: int, run: int = RUN
) -> tuple[Int[Array, ""], _State, EventLog]:
    """The event loop over every coordinate (``c0``: ``(M, L)``; ``co``: leading M).

    A coordinate takes at most L zero-time steps for its initial ties, ``max_events`` events and
    one final segment, so ``max_events + L + 1`` steps bound the loop."""
    M, L = c0.shape
    E = max_events + L + 1
    state = jax.vmap(lambda c, k: _initial_state(c, s0, k))(c0, co)
    tables = jax.vmap(run_tables)(co)
    log = EventLog.empty(M, E, L, c0.dtype)

    def cond(carry):
        # ``finished`` (every coordinate done) comes from the body through unvmap_all: under
        # vmap the loop runs until every member is done, with an unbatched predicate, so JAX
        # does not select every carry (the whole log) between old and new at every step, and the
        # log stays written in place; a member that is done takes steps that record nothing
        # (rows that read as unused). (unvmap_all in this function instead costs ~8 % of a
        # small solve: measured.)
        step, finished = carry[0], carry[-1]
        return (step < E) & ~finished

    def event_step(state: _State, carried, known):
        """One event of every coordinate that is not done: its state after it, the log row
        (its index per coordinate and content), the motion after it and whether that is known
        (every event a crossing whose motion beyond was evaluated)."""
        glued = jnp.any(
            jax.vmap(lambda g, st: jnp.any(((g[:, None] == g[None, :]).sum(1) > 1) & ~st))(
                state.group, state.stuck
            )
        )
        # the dear work of a step (the motion of a new mode, releases of glued groups, the
        # general resolution, meetings) only where some coordinate needs it: where_needed keeps
        # these skips under vmap too, where a batched lax.cond would do the work at every step
        mo = where_needed(
            ~known,
            lambda: jax.vmap(motion)(state.c, state.rank, state.group, state.stuck, co),
            lambda: carried,
        )
        t_rel = where_needed(
            glued,
            lambda: jax.vmap(release_times)(state.c, state.rank, state.group, state.stuck, mo, co),
            lambda: jnp.full_like(state.c, jnp.inf),
        )
        t_data, xi = jax.vmap(_data_crossing)(state.c, mo, co)
        t_meet = _meetings(state, mo, t_data, s_final)
        ev = jax.vmap(
            lambda st, k, m, *t: _next_event(st.c, st.group, st.pending, st.s, s_final, k, m, *t)
        )(state, co, mo, t_rel, t_data, xi, t_meet)
        # the common event, one free face reaching a data value, has one of two outcomes
        # (it crosses or sticks): decided by its velocity beyond the value alone
        single = ev.at.is_data & ~ev.is_check & ev.has_data & (jnp.sum(ev.cluster, axis=1) == 1)
        fast, decided, beyond = _crossings(state, ev, co)

        def resolved(full):
            return jax.vmap(
                lambda st, e, k: resolve(
                    e.c, st.rank, st.group, st.stuck, e.cluster, e.has_data, k, full=full
                )  # fmt: skip
            )(state, ev, co)

        def general():
            items = jnp.sum(ev.cluster, axis=1) + ev.has_data.astype(jnp.int32)
            big = jnp.any((items > 2) & ~ev.finished & ~state.done)
            return where_needed(big, lambda: resolved(True), lambda: resolved(False))

        settled = ev.finished | state.done
        easy = jnp.all((single & decided) | settled)
        res = where_needed(~easy, general, lambda: fast)
        new, row = jax.vmap(lambda st, e, r: _record(st, e, r, max_events))(state, ev, res)
        # every face that moved on crossed: the motion beyond is the next step's motion
        stuck_now = jnp.take_along_axis(res.stuck, ev.at.face[:, None], axis=1)[:, 0]
        return new, state.count, row, beyond, easy & jnp.all(~stuck_now | settled)

    def body(carry):
        step, state, log, carried, known, _ = carry
        # first up to `run` plain crossings of each coordinate, where they are decoupled
        # (:mod:`gflow_jax.dynamics._crossing_runs`): most events of separated data
        room = jnp.where(
            known & ~state.done & ~jnp.any(state.pending, axis=1), max_events - state.count, 0
        )

        def runs():
            return jax.vmap(
                lambda st, m, k, tb, r: plain_crossings(
                    st.c, st.rank, st.group, st.stuck, st.s, m, k, tb, s_final, r, run
                )
            )(state, carried, co, tables, room)

        def none():
            return jax.vmap(lambda st, m: no_run(st.c, st.rank, st.s, m, run))(state, carried)

        if run > 0:
            taken = where_needed(jnp.any(room > 0), runs, none)
            log = log.write_runs(state.count, taken.n, taken.seg, taken.ev, taken.ev_id)
            state = eqx.tree_at(
                lambda st: (st.s, st.c, st.rank, st.count),
                state,
                (taken.s, taken.c, taken.rank, state.count + taken.n),
            )
            carried, n = taken.motion, taken.n
        else:
            n = jnp.zeros_like(state.count)
        # then one event of every coordinate, where one took no crossing (its next event is
        # not a plain one) or the motion is not known: a step that skips it costs nothing.
        # The predicate is never batched, so the carries stay in place under vmap; a member
        # that does not need the step keeps its state, as it would alone (bit for bit)
        need = ~known | jnp.any(~state.done & (n == 0))
        E = log.ev.shape[0]

        def skip(state, carried, known):
            row = (
                jnp.zeros(log.seg.shape[1:], log.seg.dtype),
                jnp.zeros(log.ev.shape[1:], log.ev.dtype),
                jnp.zeros(log.ev_id.shape[1:], log.ev_id.dtype),
            )
            return state, jnp.full_like(state.count, E), row, carried, known

        def step_where_needed(state, carried, known):
            new = event_step(state, carried, known)
            old = skip(state, carried, known)
            return jax.tree.map(lambda a, b: jnp.where(need, a, b), new, old)

        state, row_at, row, carried, known = jax.lax.cond(
            eqxi.unvmap_any(need), step_where_needed, skip, state, carried, known
        )
        log = log.write(row_at, *row)
        finished = eqxi.unvmap_all(jnp.all(state.done))
        return step + 1, state, log, carried, known, finished

    mo0 = jax.vmap(motion)(state.c, state.rank, state.group, state.stuck, co)
    # nothing is done at s0 (every coordinate's first step resolves its initial ties)
    carry = (jnp.asarray(0), state, log, mo0, jnp.asarray(False), jnp.asarray(False))
    steps, state, log, _, _, _ = jax.lax.while_loop(cond, body, carry)
    return steps, state, log


def _meetings(state: _State, mo, t_data, s_final) -> Float[Array, "M L L"]:
    """When the faces of different groups of every coordinate first meet before their next data
    value (``inf``: not before), by :func:`~gflow_jax.dynamics._meetings.meeting_times` — only
    when :func:`~gflow_jax.dynamics._meetings.may_meet` does not rule out every pair."""
    horizon = jnp.minimum(jnp.min(t_data, axis=1), s_final - state.s)
    other = state.group[:, :, None] != state.group[:, None, :]
    close = jax.vmap(may_meet)(state.c, mo, horizon, other) & ~state.done

    def solve():
        return jnp.where(other, jax.vmap(meeting_times)(state.c, mo, horizon), jnp.inf)

    return where_needed(jnp.any(close), solve, lambda: jnp.full_like(other, jnp.inf, state.c.dtype))


def _crossings(state: _State, ev: _Event, co: Coordinate):
    """:func:`~gflow_jax.dynamics._filippov.resolve_crossing` for every coordinate's event.

    The velocity on arrival is the closed form −λ(ξ − ȳ) of the motion that brought the face
    there; within 1e-9 of its scale λ(|ȳ| + |ξ|) of zero it is not trusted for the direction
    (0: the case is left to :func:`~gflow_jax.dynamics._filippov.resolve`)."""

    def one(st, e, k):
        f, value = e.at.face, e.at.value
        approach = e.rate[f] * (e.ybar[f] - value)
        sure = jnp.abs(approach) > 1e-9 * e.rate[f] * (jnp.abs(e.ybar[f]) + jnp.abs(value))
        up = value > st.c[f]
        approach = jnp.where(sure, approach, 0.0)
        return resolve_crossing(e.c, st.rank, st.group, st.stuck, f, up, approach, k)

    return jax.vmap(one)(state, ev, co)


@eqx.filter_jit
def solve_exact(
    problem: FlowProblem,
    params0: AdaptedParameters,
    save_ts: Float[Array, " T"],
    *,
    max_events: int = 2000,
    run: int = RUN,
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
        run: the most plain crossings of a coordinate taken in one step of the loop, where
            they are decoupled (static; :mod:`gflow_jax.dynamics._crossing_runs`); 0 takes every
            event on its own. The answer is the same to rounding; only the speed differs.

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
    steps, state, log = _run(c0, co, save_ts[0], save_ts[-1], max_events, run)
    c_t = segment_saves(log, state.count, save_ts)  # (T, M, L)
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
        events=sorted_events(log, state.count),
        sliding=sliding,
    )
