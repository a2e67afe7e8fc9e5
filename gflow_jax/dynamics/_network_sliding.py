"""The full-network gradient flow by diffrax with every kink located and Filippov sliding held
(docs/theory.md#sliding, the full network).

The field −∇C(θ) of all parameters of a ReLU network jumps where a pre-activation
z_{ℓ,k,i} = (W_ℓ x⁽ℓ⁻¹⁾_i + b_ℓ)_k of hidden unit (ℓ, k) at training point i crosses 0. Here every
*pair* (ℓ, k, i) carries a slope s_{ℓ,k,i}, the ReLU' of its unit at its point: 1 (active) or 0
(inactive), frozen for a segment, or, for a pair *held* at z = 0, the Filippov weight
α_{ℓ,k,i} solved from d z_held/ds = 0 at every evaluation of the field. Within a segment the
network is x⁽ℓ⁾ = s ∘ z⁽ℓ⁾, smooth in θ: the solver's stages may look past a kink without seeing
the jump, and the kink is located on a smooth interpolant.

A diffrax ``Event`` watches the signed distance ±z of every free pair to 0 (+ for an active
pair, − for an inactive one) and, for every held pair, min(α, 1 − α); the first root stops the
solve (bisection on the step's interpolant). There the pair is resolved by its two one-sided
velocities v₋ = dz/ds with s = 0 and v₊ with s = 1 (the held pairs' α solved again for each):
v₋ > 0 > v₊ holds it (sliding: a crossing that would be undone at once is recognised before
any step is taken across the kink, never iterated), otherwise it crosses to the side its
velocity leaves to (a tie that repels, v₋ ≤ 0 ≤ v₊, leaves active: the tie convention). A held
pair whose α reaches 0 or 1 is released to that side. The solve restarts from the event in a
bounded ``lax.while_loop`` over segments: at most ``settings.max_events`` events in all and at
most :data:`MAX_HELD` pairs held at once, else ``success = False`` with the last event
recorded (:func:`~gflow_jax.dynamics.check_solution` names its unit and point).

With several held pairs α solves d z_held/ds = 0 jointly (Newton; the system is affine in α
for one hidden layer and polynomial for more). α enters the field as a constant ReLU' (the
cost is differentiated with the slopes fixed), so the field is a convex combination of the
one-sided fields (with product weights where pairs of one point are held in several layers):
a Filippov selection. Each one-sided field conserves the balance quantities Δ_{ℓ,k} (the
scaling argument of :mod:`~gflow_jax.dynamics._network_flow` holds for the network with any
fixed slopes), and Δ̇ is linear in the field, so the sliding solution conserves them too.

Limits. A pair reaching its kink whose own slope does not change its dz/ds (a point whose
representation equals a held one's) is held with them, the α system then singular and solved
in the least-norm sense. A held z is kept at 0 exactly (to rounding) in the first hidden layer,
where it is linear in θ; deeper ones drift at the solver's tolerance (nothing projects them
back). Each field evaluation with pairs held costs K forward-over-reverse passes for the α
system's Jacobian (K = min(MAX_HELD, L·N·M) slots).
"""

from __future__ import annotations

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ..core import ReLUNetwork, network_standard_cost
from ..core._batching import where_needed
from ._integrate import integrate_segment
from ._located import _EventBisection
from ._settings import MAX_HELD, SolverSettings
from ._solution import FlowEvents, FlowSolution

# event kinds (FlowEvents.kind) of the full network: a free pair crosses 0, a pair is held at 0,
# a held pair leaves 0 (its α reached 0 or 1)
CROSS, STICK, UNSTICK = 0, 1, 5
#: a held pair whose α lies this far outside [0, 1] at an event is released at once
RELEASE_TOL = 1e-9
#: how far a pair resolved at an event must come back (relative to its segment's largest |z|), or
#: a held pair's margin min(α, 1 − α) that starts on the edge of [0, 1] fall, to be an event
FRESH_TOL = 1e-12
#: a pair reaching its kink whose own ReLU' changes its dz/ds by less than this (relative to the
#: largest |dz/ds|) is slaved to the held pairs and held with them
SLAVED_TOL = 1e-9
_BISECTION = _EventBisection(rtol=1e-14, atol=1e-14)
#: Newton iterations of the α system for more than one hidden layer (one is exact for one)
NEWTON_ITERATIONS = 8


class _Pattern(eqx.Module):
    """Which pairs (ℓ, i, k) are active (slope 1; else 0) and which are held, ``(L, N, M)``."""

    active: Bool[Array, "L N M"]
    held: Bool[Array, "L N M"]


class _Held(eqx.Module):
    """The held pairs as K slots: flat indices into ``(L, N, M)`` (padding: L·N·M)."""

    idx: Int[Array, " K"]
    valid: Bool[Array, " K"]


def _slots(held: Bool[Array, "L N M"], K: int) -> _Held:
    """The held pairs in K slots (the first K; more are a failure the caller reports)."""
    flat = held.ravel()
    idx = jnp.nonzero(flat, size=K, fill_value=flat.size)[0]
    return _Held(idx, idx < flat.size)


def _slopes(pattern: _Pattern, held: _Held, alpha: Float[Array, " K"]) -> Float[Array, "L N M"]:
    base = jnp.where(pattern.held | ~pattern.active, 0.0, 1.0)
    return base.ravel().at[held.idx].set(alpha, mode="drop").reshape(base.shape)


def _forward(net: ReLUNetwork, x: Float[Array, "N M"], slopes: Float[Array, "L N M"]):
    """Pre-activations ``(L, N, M)`` and output ``(N, Q)`` of the network whose units act as
    s ∘ z (slopes s per pair)."""

    def layer(h, wbs):
        w, b, s = wbs
        z = h @ w.T + b[None, :]
        return s * z, z

    h, z = jax.lax.scan(layer, x, (net.weights, net.biases, slopes))
    return z, h @ net.out_weight.T + net.out_bias[None, :]


def _descent(net: ReLUNetwork, problem, slopes) -> ReLUNetwork:
    """−∇C of the network with fixed slopes: C = (1/2N) Σ_i |x⁽ᴸ⁺¹⁾_i − y_i|²."""

    def cost(n):
        out = _forward(n, problem.x, slopes)[1]
        return 0.5 * jnp.mean(jnp.sum((out - problem.y) ** 2, axis=-1))

    return jax.tree.map(jnp.negative, jax.grad(cost)(net))


def _rates(net: ReLUNetwork, problem, slopes) -> Float[Array, "L N M"]:
    """dz/ds of every pair along the field with these slopes."""
    field = _descent(net, problem, slopes)
    return jax.jvp(lambda n: _forward(n, problem.x, slopes)[0], (net,), (field,))[1]


def _alpha(net: ReLUNetwork, problem, pattern: _Pattern, held: _Held) -> Float[Array, " K"]:
    """The held pairs' α: Newton on d z_held/ds (α) = 0 (min-norm steps where the system is
    singular); 0 in the empty slots."""
    K = held.idx.shape[0]
    iterations = 1 if net.weights.shape[0] == 1 else NEWTON_ITERATIONS

    def residual(a):
        r = _rates(net, problem, _slopes(pattern, held, a)).ravel()
        r = jnp.where(held.valid, r[jnp.minimum(held.idx, r.size - 1)], a)
        return r, r

    def newton():
        def cond(c):
            i, a, step = c
            return (i < iterations) & (step > 1e-14 * (1.0 + jnp.max(jnp.abs(a))))

        def body(c):
            i, a, _ = c
            J, r = jax.jacfwd(residual, has_aux=True)(a)
            delta = jnp.linalg.lstsq(J, r)[0]
            return i + 1, a - delta, jnp.max(jnp.abs(delta))

        a0 = jnp.where(held.valid, 0.5, 0.0).astype(net.biases.dtype)
        return jax.lax.while_loop(cond, body, (0, a0, jnp.asarray(jnp.inf, a0.dtype)))[1]

    # evaluated at every stage of the solver: where_needed keeps the skip under vmap (a batched
    # cond would run the Newton solve for every member at every stage)
    return where_needed(jnp.any(held.valid), newton, lambda: jnp.zeros(K, net.biases.dtype))


def _field(t, net, args):
    problem, seg = args
    alpha = _alpha(net, problem, seg.pattern, seg.held)
    return _descent(net, problem, _slopes(seg.pattern, seg.held, alpha))


class _Segment(eqx.Module):
    """A segment's frozen pattern and what its event condition watches, fixed at its start."""

    pattern: _Pattern
    held: _Held
    sign: Float[Array, "L N M"]  # +1 active, −1 inactive (watched: s·z > 0), 0 held
    fresh: Bool[Array, "L N M"]  # free pairs resolved at the start (watched from their z there)
    z0: Float[Array, "L N M"]
    margin0: Float[Array, " K"]  # min(α, 1 − α) of the held pairs at the start
    fresh_margin: Bool[Array, " K"]  # held pairs that start on the edge of [0, 1]
    t0: Float[Array, ""]


def _segment(problem, net, pattern: _Pattern, fresh, t0) -> _Segment:
    K = min(MAX_HELD, pattern.held.size)
    held = _slots(pattern.held, K)
    alpha = _alpha(net, problem, pattern, held)
    z0 = _forward(net, problem.x, _slopes(pattern, held, alpha))[0]
    sign = jnp.where(pattern.held, 0.0, jnp.where(pattern.active, 1.0, -1.0))
    margin0 = jnp.minimum(alpha, 1.0 - alpha)
    fresh_margin = held.valid & (margin0 <= FRESH_TOL)
    return _Segment(pattern, held, sign, fresh & ~pattern.held, z0, margin0, fresh_margin, t0)


def _terms(t, net, problem, seg: _Segment):
    """Every watched distance, positive until its kink is reached: s·z of the free pairs
    ``(L, N, M)`` and min(α, 1 − α) of the held ones ``(K,)``. A pair that starts on its kink
    is watched through (s·(z − z₀) + ε)/(s − s₀)², and a held pair that starts on the edge of
    [0, 1] through its margin's change, (m − m₀ + ε)/(s − s₀): +inf at s₀, zero where it comes
    back (ε = :data:`FRESH_TOL`, relative to the largest |z₀|, keeps a pair that does not move
    at all, e.g. of a unit inactive at every point, from an event in rounding noise)."""
    alpha = _alpha(net, problem, seg.pattern, seg.held)
    z = _forward(net, problem.x, _slopes(seg.pattern, seg.held, alpha))[0]
    elapsed = t - seg.t0
    after = elapsed > 0
    gap = jnp.where(after, elapsed, 1.0)
    tol = FRESH_TOL * (1.0 + jnp.max(jnp.abs(seg.z0)))
    back = (seg.sign * (z - seg.z0) + tol) / gap / gap
    to_kink = jnp.where(seg.fresh, jnp.where(after, back, jnp.inf), seg.sign * z)
    to_kink = jnp.where(seg.sign != 0, to_kink, jnp.inf)
    margin = jnp.minimum(alpha, 1.0 - alpha)
    out = (margin - seg.margin0 + FRESH_TOL) / gap
    margin = jnp.where(seg.fresh_margin, jnp.where(after, out, jnp.inf), margin)
    return to_kink, jnp.where(seg.held.valid, margin, jnp.inf)


def _condition(t, y, args, **kwargs):
    problem, seg = args
    to_kink, margin = _terms(t, y, problem, seg)
    return jnp.minimum(jnp.min(to_kink), jnp.min(margin))


class _Log(eqx.Module):
    """The events so far: a FlowEvents buffer of ``max_events + 1`` rows (the last for the
    event that reaches the bound), their count, and failure."""

    events: FlowEvents
    count: Int[Array, ""]
    failed: Bool[Array, ""]

    @classmethod
    def empty(cls, max_events: int, dtype) -> _Log:
        minus = jnp.full(max_events + 1, -1, jnp.int32)
        nan = jnp.full(max_events + 1, jnp.nan, dtype)
        events = FlowEvents(jnp.full_like(nan, jnp.inf), minus, minus, minus, nan, minus)
        return cls(events, jnp.asarray(0), jnp.asarray(False))

    def record(self, t, flat, kind, value, shape, fail=False) -> _Log:
        """One row: pair ``flat`` (into ``shape`` = (L, N, M)) became ``kind`` with slope
        ``value``; the row past ``max_events`` (or ``fail``) is a failure."""
        ell, i, k = jnp.unravel_index(flat, shape)
        ev, n = self.events, self.count
        last = ev.time.shape[0] - 1
        events = FlowEvents(
            ev.time.at[n].set(t, mode="drop"),
            ev.layer.at[n].set(ell.astype(jnp.int32), mode="drop"),
            ev.coord.at[n].set(k.astype(jnp.int32), mode="drop"),
            ev.kind.at[n].set(kind, mode="drop"),
            ev.value.at[n].set(value, mode="drop"),
            ev.point.at[n].set(i.astype(jnp.int32), mode="drop"),
        )
        return _Log(events, n + 1, self.failed | (n >= last) | fail)


def _velocities(problem, net, pattern: _Pattern, held: _Held, flat) -> Float[Array, "2 LNM"]:
    """dz/ds of every pair (flat) with free pair ``flat`` inactive (row 0) and active (row 1),
    the held α solved again for each."""

    def rate(on):
        active = pattern.active.ravel().at[flat].set(on).reshape(pattern.held.shape)
        side = _Pattern(active, pattern.held)
        alpha = _alpha(net, problem, side, held)
        return _rates(net, problem, _slopes(side, held, alpha)).ravel()

    return jax.vmap(rate)(jnp.array([False, True]))


def _resolve(problem, net, pattern: _Pattern, t, trigger, release, log: _Log):
    """The pattern after an event at ``t``: held pair ``release`` (flat, −1: none) let go to
    the side of its α, then, one at a time, every held pair whose α left [0, 1] released and
    every free pair on or past its kink (``trigger`` among them) held or crossed by its
    one-sided velocities. Returns the pattern, the pairs resolved (fresh) and the log."""
    shape = pattern.held.shape
    K = min(MAX_HELD, pattern.held.size)
    size = pattern.held.size

    def let_go(pattern, log, flat, alpha):
        on = alpha >= 0.5
        pattern = _Pattern(
            pattern.active.ravel().at[flat].set(on).reshape(shape),
            pattern.held.ravel().at[flat].set(False).reshape(shape),
        )
        return pattern, log.record(t, flat, UNSTICK, jnp.where(on, 1.0, 0.0), shape)

    held = _slots(pattern.held, K)
    alpha = _alpha(net, problem, pattern, held)
    slot = jnp.argmax(held.idx == release)
    pattern, log = where_needed(
        release >= 0,
        lambda: let_go(pattern, log, release, alpha[slot]),
        lambda: (pattern, log),
    )
    fresh = jnp.zeros(size, bool).at[jnp.where(release >= 0, release, size)].set(True, mode="drop")

    def cond(c):
        return ~c[-1]

    def body(c):
        pattern, fresh, log, pending, _ = c
        held = _slots(pattern.held, K)
        alpha = _alpha(net, problem, pattern, held)
        z = _forward(net, problem.x, _slopes(pattern, held, alpha))[0].ravel()
        sign = jnp.where(pattern.active.ravel(), 1.0, -1.0)
        outside = held.valid & ((alpha < -RELEASE_TOL) | (alpha > 1.0 + RELEASE_TOL))
        worst = jnp.argmax(jnp.where(outside, jnp.maximum(-alpha, alpha - 1.0), -jnp.inf))
        on_kink = ~pattern.held.ravel() & ~fresh & (sign * z <= 0)
        on_kink = on_kink | ((jnp.arange(size) == pending) & ~fresh)
        p = jnp.argmax(on_kink)

        def release_one():
            new, log2 = let_go(pattern, log, held.idx[worst], alpha[worst])
            return new, fresh.at[held.idx[worst]].set(True), log2

        def classify():
            rates = _velocities(problem, net, pattern, held, p)
            v_minus, v_plus = rates[0, p], rates[1, p]
            # a pair whose own slope does not move it is slaved to the held ones (a point with
            # the same representation as a held one): held too, the α system shares the load
            slaved = jnp.maximum(jnp.abs(v_minus), jnp.abs(v_plus)) <= SLAVED_TOL * jnp.max(
                jnp.abs(rates)
            )
            slide = ((v_minus > 0) & (v_plus < 0)) | slaved
            on = (v_minus > 0) | (v_plus >= 0)
            new = _Pattern(
                pattern.active.ravel().at[p].set(on & ~slide).reshape(shape),
                pattern.held.ravel().at[p].set(slide).reshape(shape),
            )
            # NaN: one pair more than the α system holds (a failure)
            overflow = slide & (jnp.sum(pattern.held) >= K)
            held_new = _slots(new.held, K)
            alpha = _alpha(net, problem, new, held_new)[jnp.argmax(held_new.idx == p)]
            alpha = jnp.where(overflow, jnp.nan, alpha)
            value = jnp.where(slide, alpha, jnp.where(on, 1.0, 0.0))
            kind = jnp.where(slide, STICK, CROSS)
            return new, fresh.at[p].set(True), log.record(t, p, kind, value, shape, overflow)

        def nothing():
            return pattern, fresh, log

        # a release first, else a pair on its kink, else nothing (stop); where_needed: under
        # vmap only the work some member needs
        leaving, kink = jnp.any(outside), jnp.any(on_kink)
        pattern, fresh, log = where_needed(
            leaving, release_one, lambda: where_needed(kink, classify, nothing)
        )
        stop = (~leaving & ~kink) | log.failed
        return pattern, fresh, log, pending, stop

    pattern, fresh, log, _, _ = jax.lax.while_loop(
        cond, body, (pattern, fresh, log, trigger, log.failed)
    )
    return pattern, fresh.reshape(shape), log


@eqx.filter_jit
def solve_network_sliding(
    problem, net0: ReLUNetwork, save_ts: Float[Array, " T"], settings: SolverSettings
) -> FlowSolution:
    """The full-network flow with every kink located and sliding held (module docstring).

    ``problem`` a :class:`~gflow_jax.dynamics.NetworkProblem` (x ``(N, M)``, y ``(N, Q)``),
    ``net0`` the initial network, ``save_ts`` ``(T,)`` increasing; ``settings`` with an
    adaptive solver. The solution's ``events`` lists every event (``point`` the training point
    of the pair, ``value`` its slope after the event: 1, 0 or α); ``sliding`` is ``None``.
    Shapes are checked by the caller. Batch axis: refused (vmap the solve)."""
    L, M = net0.biases.shape
    N = problem.x.shape[0]
    T = save_ts.shape[0]
    t_final = save_ts[-1]
    dtype = net0.biases.dtype
    pattern = _Pattern(_initial_active(net0, problem.x), jnp.zeros((L, N, M), bool))
    saved0 = jax.tree.map(lambda a: jnp.broadcast_to(a, (T, *a.shape)), net0)
    none = jnp.asarray(-1, jnp.int32)

    def cond(carry):
        return ~carry[6]

    def body(carry):
        # resolve the last event (the first time: the pairs that start at 0), then advance to
        # the next one
        t, net, pattern, trigger, release, saved, _, log, stats = carry
        pattern, fresh, log = _resolve(problem, net, pattern, t, trigger, release, log)

        def advance():
            seg = _segment(problem, net, pattern, fresh, t)
            sol = integrate_segment(
                _field, _condition, _BISECTION, net, (problem, seg), t, t_final, save_ts, settings
            )
            ok = (sol.result == diffrax.RESULTS.successful) | (
                sol.result == diffrax.RESULTS.event_occurred
            )
            t_end = sol.ts[1][0]
            y_end = jax.tree.map(lambda a: a[0], sol.ys[1])
            # a solve without an event reached t1 (under vmap its last time may round below it)
            finished = (t_end >= t_final) | (sol.result == diffrax.RESULTS.successful)
            keep = (save_ts >= t) & ((save_ts <= t_end) | finished)
            new_saved = jax.tree.map(
                lambda old, new: jnp.where(keep.reshape((T,) + (1,) * (old.ndim - 1)), new, old),
                saved,
                sol.ys[0],
            )
            to_kink, margin = _terms(t_end, y_end, problem, seg)
            by_kink = jnp.min(to_kink) <= jnp.min(margin)
            trigger = jnp.where(by_kink, jnp.argmin(to_kink), -1).astype(jnp.int32)
            release = jnp.where(by_kink, -1, seg.held.idx[jnp.argmin(margin)]).astype(jnp.int32)
            steps = jnp.stack([sol.stats[name] for name in _STEPS]).astype(stats.dtype)
            return t_end, y_end, trigger, release, new_saved, finished | ~ok, ~ok, stats + steps

        def stop():
            return t, net, none, none, saved, jnp.asarray(True), jnp.asarray(False), stats

        t, net, trigger, release, saved, done, failed, stats = where_needed(
            ~log.failed, advance, stop
        )
        log = eqx.tree_at(lambda g: g.failed, log, log.failed | failed)
        return t, net, pattern, trigger, release, saved, done, log, stats

    log = _Log.empty(settings.max_events, dtype)
    carry = (save_ts[0], net0, pattern, none, none, saved0, jnp.asarray(False), log,
             jnp.zeros(3, jnp.int32))  # fmt: skip
    _, _, _, _, _, saved, _, log, stats = jax.lax.while_loop(cond, body, carry)
    loss = jax.vmap(lambda n: network_standard_cost(n, problem.x, problem.y))(saved)
    return FlowSolution(
        ts=save_ts,
        params=saved,
        loss=loss,
        num_steps=stats[0],
        num_accepted_steps=stats[1],
        num_rejected_steps=stats[2],
        success=~log.failed & jnp.all(jnp.isfinite(loss)),
        events=log.events,
    )


_STEPS = ("num_steps", "num_accepted_steps", "num_rejected_steps")


def _initial_active(net: ReLUNetwork, x: Float[Array, "N M"]) -> Bool[Array, "L N M"]:
    """Active pairs of the network as it is (z > 0; a pair at 0 is resolved before the start)."""

    def layer(h, wb):
        w, b = wb
        z = h @ w.T + b[None, :]
        return jax.nn.relu(z), z > 0

    return jax.lax.scan(layer, x, (net.weights, net.biases))[1]
