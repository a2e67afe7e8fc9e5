"""The effective flow integrated by diffrax between located events, with Filippov modes at the
events (docs/theory.md#sliding, docs/theory.md#meeting-faces).

The field of the effective flow jumps where a face crosses a data value or another face of its
coordinate. Here the adaptive solver never steps across such a value: a diffrax ``Event`` whose
condition is the signed distance of every face to its nearest data values and of every pair of
faces to each other (and, for glued faces, how strongly they still attract) stops the solve at
the first crossing, located by a root finder on the step's interpolant. There the faces that meet
are put exactly on the breakpoint and given their Filippov mode
(:func:`~gflow_jax.dynamics._filippov.resolve`: cross, hand over, stick, glue), and the solve
restarts with the corrected field, in a ``lax.while_loop`` over segments. Sliding is therefore
integrated as sliding (a stuck face held at its data value, glued faces as one), never as
chatter. Every restart records its event (time, face, coordinate, kind, value: the
:class:`~gflow_jax.dynamics.FlowEvents` of the exact solver) in bounded arrays, and the final
modes give each face's :class:`~gflow_jax.dynamics.SlidingStatus`. Works for the bias-only and
the joint (D, b) flow of C_in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int

from ..core import AdaptedParameters
from ..core._batching import where_needed
from ..core._shapes import Shapes
from ..core._sorted_field import value_counts
from ._exact import Breakpoint, _at_data, initial_mode
from ._filippov import Mode, coordinates, gradient, motion, resolve
from ._glued import split_margin
from ._integrate import controller, solver_of
from ._problem import FlowProblem, check_problem
from ._settings import SolverSettings
from ._solution import FlowEvents, FlowSolution, SlidingStatus

#: the most a located event may move the faces it puts on their breakpoint, relative to the
#: breakpoint's scale (the root is located to ~1e-14 in time: what it moves is rounding)
JUMP_TOL = 1e-8


def _modes(problem: FlowProblem, params: AdaptedParameters, mode: Mode):
    """Per-coordinate motion of every face in ``mode`` (leading M)."""
    co = coordinates(problem.sorted, params.d)
    c = params.thresholds
    return co, jax.vmap(motion)(c.T, mode.rank.T, mode.group.T, mode.stuck.T, co)


class _State(eqx.Module):
    """The located solver's state: weights d and thresholds c ``(L, M)`` (c, not b, so that a face
    put on a breakpoint sits exactly on it)."""

    d: Float[Array, "L M"]
    c: Float[Array, "L M"]

    @property
    def thresholds(self) -> Float[Array, "L M"]:
        return self.c


def _held(state: _State, mode: Mode) -> _State:
    """The state with every face of a glued group at its group's value: the value of the face
    that labels it (its lowest layer), ``(L, M)``. The group moves with one velocity, but the
    solver's arithmetic on different array positions need not round alike (vectorised and
    scalar code paths), and a split of a group whose faces differ by one ulp is evaluated with
    the wrong ownership: its attraction jumps, and a spurious event follows. Everything that
    reads the thresholds (field, event condition, snap, saves) reads them held."""
    return _State(state.d, jnp.take_along_axis(state.c, mode.group, axis=0))


def filippov_direction(problem: FlowProblem, state: _State, seg: _Segment) -> _State:
    """The segment's Filippov descent direction in (d, c).

    Ownership is frozen at the segment's start (each face's owned weight n and target sum S),
    so g = (n c − S)/N is the smooth extension of the field on this side of the next
    breakpoint: the solver's stages may look past the event without seeing the jump, and the
    event's root is located on a smooth interpolant. g is then replaced by its sliding value g̃
    (a glued group's Σg shared in proportion to d², stuck faces 0). The flow is ∂_s b = g̃/d and,
    for the joint flow, ∂_s d = c g̃/d (docs/theory.md#effective-flows); with b = −c d this is
    ∂_s c = −(∂_s b + c ∂_s d)/d."""
    m = seg.mode
    c, d = _held(state, m).c, state.d
    N = problem.sorted.values.shape[1]
    g = (seg.n * c - seg.S) / N
    same = m.group[:, None, :] == m.group[None, :, :]  # (L, L, M)
    G = jnp.sum(jnp.where(same, g[None, :, :], 0.0), axis=1)
    D = jnp.sum(jnp.where(same, (d**2)[None, :, :], 0.0), axis=1)
    v = jnp.where(m.stuck, 0.0, -G / D)  # the group's velocity: one number for its members
    if problem.mode == "joint":
        return _State(d=-c * d * v, c=(1.0 + c**2) * v)
    return _State(d=jnp.zeros_like(d), c=v)


class _EventBisection(optx.AbstractRootFinder):
    """Bisection for an event condition that is positive at the step's start and not positive at
    its end (every watched distance falls to 0 at its breakpoint). It stops on the width of the
    bracket alone: the condition has kinks (a minimum over terms) where Newton's method cycles,
    and its value at the root is only as small as its slope allows. A condition that is not
    negative at the step's end has its root there, returned exactly: diffrax calls the root
    finder on batch members without an event too, with the distance to the step's end as the
    condition, and their solve must end exactly at t1."""

    rtol: float
    atol: float
    norm: Callable = optx.max_norm

    def init(self, fn, y, args, options, f_struct, aux_struct, tags):
        upper = jnp.asarray(options["upper"], f_struct.dtype)
        at_end = fn(upper, args)[0] >= 0
        return jnp.asarray(options["lower"], f_struct.dtype), upper, at_end

    def step(self, fn, y, args, options, state, tags):
        lower, upper, at_end = state
        value, aux = fn(y, args)
        below = value > 0  # the root lies above y
        lower, upper = jnp.where(below, y, lower), jnp.where(below, upper, y)
        new = jnp.where(at_end, state[1], lower + 0.5 * (upper - lower))
        return new, (lower, upper, at_end), aux

    def terminate(self, fn, y, args, options, state, tags):
        lower, upper, at_end = state
        narrow = jnp.abs(upper - lower) < self.atol + self.rtol * jnp.abs(y)
        return at_end | narrow, optx.RESULTS.successful

    def postprocess(self, fn, y, aux, args, options, state, tags, result):
        return y, aux, {}


class _Segment(eqx.Module):
    """A segment's frozen ownership and what its event condition watches, fixed at its start."""

    n: Float[Array, "L M"]  # owned weight of each face
    S: Float[Array, "L M"]  # owned weighted target sum
    lo: Float[Array, "L M"]  # nearest data value strictly below each face (−inf: none)
    hi: Float[Array, "L M"]  # nearest data value strictly above (+inf: none)
    watch: Array  # (L, M) bool: faces that move (not stuck)
    sign: Float[Array, "L L M"]  # +1/−1: the order of each pair of faces of different groups
    fresh: Array  # (L, L, M) bool: pairs that start at one value (and separate)
    speed: Float[Array, "L L M"]  # |relative velocity| of each pair at the start
    t0: Float[Array, ""]  # the segment's start
    mode: Mode
    glued: Array  # bool: some group of ≥ 2 faces moves (watch its release)
    watch_glue: Array  # (L labels, M) bool: the moving glued groups that attract now


def _segment(problem: FlowProblem, params: _State, mode: Mode, t0) -> _Segment:
    co, mo = _modes(problem, params, mode)
    c = params.thresholds  # (L, M)
    values = problem.sorted.values  # (M, N)
    n = values.shape[1]
    # #{u < c} and #{u ≤ c}: one loop-free search, as the exact solver's data crossings
    below, upto = jax.vmap(value_counts)(values, problem.sorted.run_end, c.T)
    i_hi, i_lo = upto.T, below.T - 1
    take = jax.vmap(lambda v, i: v[jnp.clip(i, 0, n - 1)])
    hi = jnp.where(i_hi < n, take(values, i_hi.T).T, jnp.inf)
    lo = jnp.where(i_lo >= 0, take(values, i_lo.T).T, -jnp.inf)
    v = mo.velocity.T  # (L, M)
    diff = c[:, None, :] - c[None, :, :]
    dv = v[:, None, :] - v[None, :, :]
    other = mode.group[:, None, :] != mode.group[None, :, :]
    # faces that leave one value apart are ordered by their velocities (the mode makes them so)
    sign = jnp.where(other, jnp.where(diff != 0, jnp.sign(diff), jnp.sign(dv)), 0.0)
    fresh = other & (diff == 0) & (dv != 0)
    size = jnp.sum(mode.group[:, None, :] == mode.group[None, :, :], axis=1)
    moving = (size > 1) & ~mode.stuck & (mo.rate.T > 0)  # (L, M), per face
    labels = jnp.arange(c.shape[0])[:, None, None] == mode.group[None, :, :]  # (labels, L, M)
    moving_label = jnp.any(labels & moving[None], axis=1)
    glued = jnp.any(moving)
    margin0 = where_needed(
        glued,
        lambda: jax.vmap(split_margin)(c.T, mode.rank.T, mode.group.T, mode.stuck.T, co).T,
        lambda: jnp.full(c.shape, jnp.inf, c.dtype),
    )
    watch_glue = moving_label & (margin0 > 0) & jnp.isfinite(margin0)
    g, n = jax.vmap(gradient)(c.T, mode.rank.T, co)
    g, n = g.T, n.T
    S = n * c - values.shape[1] * g
    return _Segment(
        n, S, lo, hi, ~mode.stuck & (mo.rate.T > 0), sign, fresh, jnp.abs(dv), t0, mode,
        glued & jnp.any(watch_glue), watch_glue,
    )  # fmt: skip


def _terms(t, params: _State, problem: FlowProblem, seg: _Segment):
    """Every watched distance, each positive until its breakpoint is reached: to the nearest data
    values ``(L, M)`` and between pairs ``(L, L, M)``. A pair that starts at one value is watched
    through its gap divided by the time since the start (its speed at the start), positive from
    the start and zero where the faces meet again."""
    c = _held(params, seg.mode).thresholds
    to_data = jnp.where(seg.watch, jnp.minimum(c - seg.lo, seg.hi - c), jnp.inf)
    gap = seg.sign * (c[:, None, :] - c[None, :, :])
    elapsed = t - seg.t0
    gap = jnp.where(
        seg.fresh,
        jnp.where(elapsed > 0, gap / jnp.where(elapsed > 0, elapsed, 1.0), seg.speed),
        gap,
    )
    pairs = jnp.where(seg.sign != 0, gap, jnp.inf)
    return to_data, pairs


def _condition(t, y, args, **kwargs):
    problem, seg = args
    to_data, pairs = _terms(t, y, problem, seg)
    margin = jnp.min(_release_margin(y, problem, seg))
    return jnp.minimum(jnp.minimum(jnp.min(to_data), jnp.min(pairs)), margin)


def _release_margin(params, problem, seg: _Segment):
    """How strongly each glued group still attracts, ``(L labels, M)``: the least v_P − v_Q
    over its splits (it releases at 0; docs/theory.md#meeting-faces); ``inf`` elsewhere."""
    L, M = params.d.shape

    def margins():
        co = coordinates(problem.sorted, params.d)
        m = seg.mode
        c = _held(params, m).thresholds
        h = jax.vmap(split_margin)(c.T, m.rank.T, m.group.T, m.stuck.T, co).T
        return jnp.where(seg.watch_glue, h, jnp.inf)

    # evaluated at every step of the solver: where_needed keeps the skip under vmap
    return where_needed(seg.glued, margins, lambda: jnp.full((L, M), jnp.inf, params.d.dtype))


class _Snap(NamedTuple):
    """A located event: the state put exactly on its breakpoint, where and what it is, and how
    far the snap moved the faces (a located root: rounding level; more means the event was not
    at a breakpoint)."""

    state: _State
    coord: Int[Array, ""]
    at: Breakpoint
    jump: Float[Array, ""]


def _snap(t, params: _State, problem: FlowProblem, seg: _Segment) -> _Snap:
    """The event at ``t``: its coordinate, face (the lowest layer of those that reached the
    breakpoint) and value; the state with the faces that reached it set to its value."""
    params = _held(params, seg.mode)
    to_data, pairs = _terms(t, params, problem, seg)
    margin = _release_margin(params, problem, seg)
    c = params.thresholds
    L, M = c.shape
    best_data = jnp.min(to_data)
    best_pair = jnp.min(pairs)
    data_hit = best_data <= best_pair
    release = jnp.min(margin) < jnp.minimum(best_data, best_pair)
    fd = jnp.unravel_index(jnp.argmin(to_data), (L, M))
    fp = jnp.unravel_index(jnp.argmin(pairs), (L, L, M))
    k = jnp.where(data_hit, fd[1], fp[2])
    face = jnp.where(data_hit, fd[0], fp[0])
    c_face = c[face, k]
    lo, hi = seg.lo[face, k], seg.hi[face, k]
    value = jnp.where(data_hit, jnp.where(c_face - lo <= hi - c_face, lo, hi), c[fp[1], fp[2]])
    group = seg.mode.group[:, k]
    moved = group == group[face]
    moved = moved | (~data_hit & (group == group[fp[1]]))
    # a glued group's release has no breakpoint: nothing to snap, the group is resolved as is
    fr = jnp.unravel_index(jnp.argmin(margin), (L, M))
    k = jnp.where(release, fr[1], k)
    face = jnp.where(release, fr[0], face)
    value = jnp.where(release, c[fr[0], fr[1]], value)
    moved = moved & ~release
    col = jnp.where(moved, value, c[:, k])
    jump = jnp.max(jnp.abs(col - c[:, k]))
    c = c.at[:, k].set(col)
    at = Breakpoint(face, value, data_hit & ~release, release)
    return _Snap(_State(params.d, c), k, at, jump)


def _advance(problem, params, mode, t0, t1, save_ts, settings):
    seg = _segment(problem, params, mode, t0)
    term = diffrax.ODETerm(lambda t, y, args: filippov_direction(args[0], y, args[1]))
    event = diffrax.Event(_condition, root_finder=_EventBisection(rtol=1e-14, atol=1e-14))
    saveat = diffrax.SaveAt(
        subs=[diffrax.SubSaveAt(ts=jnp.clip(save_ts, t0, t1)), diffrax.SubSaveAt(t1=True)]
    )
    sol = diffrax.diffeqsolve(
        term,
        solver_of(settings.solver),
        t0=t0,
        t1=t1,
        dt0=None,  # diffrax's initial-step heuristic at every restart
        y0=params,
        args=(problem, seg),
        saveat=saveat,
        stepsize_controller=controller(settings),
        event=event,
        max_steps=settings.max_steps,
        throw=False,
    )
    return sol, seg


class _Loop(eqx.Module):
    """The carry of the loop over segments: the state at the start of the next one, its mode,
    the saves so far, the events so far (``(E,)``, E = max_events · M) and when each face
    got stuck ``(L, M)``."""

    t: Float[Array, ""]
    params: _State
    mode: Mode
    saved: _State
    count: Int[Array, ""]  # segments so far (every one but the last ends at an event)
    done: Bool[Array, ""]
    failed: Bool[Array, ""]
    stats: Int[Array, " 3"]
    events: FlowEvents
    stuck_time: Float[Array, "L M"]


def _log(events: FlowEvents, slot, record, t, ev: _Snap, kind) -> FlowEvents:
    """The event written at ``slot`` where ``record``; O(1): one element of each array."""

    def put(arr, value):
        return arr.at[slot].set(jnp.where(record, value, arr[slot]).astype(arr.dtype))

    return FlowEvents(
        time=put(events.time, t),
        layer=put(events.layer, ev.at.face),
        coord=put(events.coord, ev.coord),
        kind=put(events.kind, kind),
        value=put(events.value, ev.at.value),
    )


@eqx.filter_jit
def solve_located(
    problem: FlowProblem,
    params0: AdaptedParameters,
    save_ts: Float[Array, " T"],
    settings: SolverSettings,
) -> FlowSolution:
    """The effective flow by diffrax with every field discontinuity located and resolved
    (module docstring). Same conventions as :func:`~gflow_jax.dynamics.solve_flow`; at most
    ``settings.max_events`` events per coordinate on average (``max_events · M`` segments in
    all), else ``success = False``. Like :func:`~gflow_jax.dynamics.solve_exact` it reports
    ``events`` (every event in time order, ``(max_events · M,)`` padded with ``time = inf``,
    ``kind = −1``) and ``sliding`` (each face's mode at the end, ``(L, M)``). Batch axis:
    refused on ``problem``, ``params0`` (d, b ``(L, M)``) and ``save_ts`` ``(T,)``."""
    check = check_problem(Shapes("solve_located").adapted("params0", params0), problem)
    check("save_ts", save_ts, "T")
    if problem.cost != "input" or problem.sorted is None:
        raise ValueError("event location needs the input-layer cost with the sorted gradient")
    L, M = params0.d.shape
    T = save_ts.shape[0]
    E = settings.max_events * M
    dtype = params0.thresholds.dtype
    mode0 = _initial_mode(problem, params0)
    state0 = _State(params0.d, params0.thresholds)
    none = jnp.full(E, -1, jnp.int32)
    loop0 = _Loop(
        t=jnp.asarray(save_ts[0], dtype),
        params=state0,
        mode=mode0,
        saved=jax.tree.map(lambda a: jnp.broadcast_to(a, (T, *a.shape)), state0),
        count=jnp.asarray(0, jnp.int32),
        done=jnp.asarray(False),
        failed=jnp.asarray(False),
        stats=jnp.zeros(3, jnp.int32),
        events=FlowEvents(
            jnp.full(E, jnp.inf, dtype), none, none, none, jnp.full(E, jnp.nan, dtype)
        ),
        stuck_time=jnp.where(mode0.stuck, save_ts[0], jnp.nan).astype(dtype),
    )

    def body(loop: _Loop) -> _Loop:
        t, mode = loop.t, loop.mode
        sol, seg = _advance(problem, loop.params, mode, t, save_ts[-1], save_ts, settings)
        ok = (sol.result == diffrax.RESULTS.successful) | (
            sol.result == diffrax.RESULTS.event_occurred
        )
        t_end = sol.ts[1][0]
        y_end = _held(jax.tree.map(lambda a: a[0], sol.ys[1]), mode)
        # a solve without an event reached t1 (under vmap its last time may round below it)
        finished = (t_end >= save_ts[-1]) | (sol.result == diffrax.RESULTS.successful)
        keep = (save_ts >= t) & ((save_ts <= t_end) | finished)
        saved = jax.tree.map(
            lambda old, new: jnp.where(keep.reshape((T,) + (1,) * (old.ndim - 1)), new, old),
            loop.saved,
            jax.vmap(lambda y: _held(y, mode))(sol.ys[0]),
        )
        ev = _snap(t_end, y_end, problem, seg)
        # an event the root finder put where no face is at a breakpoint is a defect: reported,
        # never snapped over (JUMP_TOL: far above a located root's rounding)
        ok = ok & (finished | (ev.jump <= JUMP_TOL * (1.0 + jnp.abs(ev.at.value))))
        record = ~finished & ok
        new_mode, kind = where_needed(
            record,
            lambda: _resolve_at(problem, mode, ev),
            lambda: (mode, jnp.asarray(-1, jnp.int32)),
        )
        params = jax.tree.map(lambda a, b: jnp.where(record, b, a), y_end, ev.state)
        steps = ("num_steps", "num_accepted_steps", "num_rejected_steps")
        stats = loop.stats + jnp.stack([sol.stats[name] for name in steps]).astype(jnp.int32)
        slot = jnp.minimum(loop.count, E - 1)
        count = loop.count + 1
        overflow = (count >= E) & ~finished
        return _Loop(
            t=t_end,
            params=params,
            mode=new_mode,
            saved=saved,
            count=count,
            done=finished | ~ok | overflow,
            failed=loop.failed | ~ok | overflow,
            stats=stats,
            events=_log(loop.events, slot, record, t_end, ev, kind),
            stuck_time=jnp.where(new_mode.stuck & ~mode.stuck, t_end, loop.stuck_time),
        )

    loop = jax.lax.while_loop(lambda loop: ~loop.done, body, loop0)
    saved = AdaptedParameters.from_thresholds(loop.saved.d, loop.saved.c)
    loss = jax.vmap(problem.loss)(saved)
    stuck = loop.mode.stuck
    return FlowSolution(
        ts=save_ts,
        params=saved,
        loss=loss,
        num_steps=loop.stats[0],
        num_accepted_steps=loop.stats[1],
        num_rejected_steps=loop.stats[2],
        success=~loop.failed & jnp.all(jnp.isfinite(loss)),
        events=loop.events,
        sliding=SlidingStatus(
            stuck=stuck,
            stuck_value=jnp.where(stuck, loop.params.c, jnp.nan),
            stuck_time=jnp.where(stuck, loop.stuck_time, jnp.nan),
            group=loop.mode.group,
        ),
    )


def _resolve_at(problem, mode: Mode, ev: _Snap) -> tuple[Mode, Int[Array, ""]]:
    """The Filippov mode of the event's coordinate's faces at its value (the other coordinates
    keep theirs), and the event's kind (:meth:`~gflow_jax.dynamics._exact.Breakpoint.kind`)."""
    k, value = ev.coord, ev.at.value
    co = coordinates(problem.sorted, ev.state.d)
    co_k = jax.tree.map(lambda a: a[k], co)
    ck = ev.state.thresholds[:, k]
    cluster = ck == value
    has_data = _at_data(value, co_k)
    items = jnp.sum(cluster) + has_data.astype(jnp.int32)
    args = (ck, mode.rank[:, k], mode.group[:, k], mode.stuck[:, k], cluster, has_data, co_k)
    res = where_needed(
        items > 2, lambda: resolve(*args, full=True), lambda: resolve(*args, full=False)
    )
    kind = ev.at.kind(cluster, res.group, res.stuck)
    new = Mode(
        mode.rank.at[:, k].set(res.rank),
        mode.group.at[:, k].set(res.group.astype(mode.group.dtype)),
        mode.stuck.at[:, k].set(res.stuck),
    )
    return new, kind


def _initial_mode(problem, params) -> Mode:
    """The Filippov mode of the initial thresholds (ties with data values or between faces)."""
    co = coordinates(problem.sorted, params.d)
    rank, group, stuck, _ = jax.vmap(initial_mode)(params.thresholds.T, co)
    return Mode(rank.T, group.T.astype(jnp.int32), stuck.T)
