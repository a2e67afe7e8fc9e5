"""The one solution type of every gradient-flow solve, and its check."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ..core import ReLUNetwork
from ..core._shapes import Shapes
from ._settings import MAX_HELD, SolverSettings


class FlowEvents(eqx.Module):
    """The events of an event-driven solve, in time order, padded with ``time = inf``.

    Attributes:
        time: ``(E,)`` flow time s of each event.
        layer: ``(E,)`` layer ℓ of the face that triggered it (index from 0).
        coord: ``(E,)`` its coordinate k (full network: the unit k of layer ℓ).
        kind: ``(E,)`` 0 cross (a data value crossed; full network: a pre-activation crossed
            0), 1 stick (held at a data value, or a pre-activation held at 0: Filippov
            sliding), 2 meet (faces met and handed points over), 3 glue (faces move on as one),
            4 release (a glued group separated), 5 unstick (full network: a held
            pre-activation left 0, its α reached 0 or 1); ``-1`` for padding.
        value: ``(E,)`` the value at which it happened (the data value or the common threshold);
            full network: the pair's ReLU' after the event (1 active, 0 inactive, α held; NaN
            for a pair that could not be held, more than ``MAX_HELD`` at once).
        point: ``(E,)`` full network: the training point i of the pre-activation z_{ℓ,k,i};
            ``None`` for the effective flow.
    """

    time: Float[Array, " E"]
    layer: Int[Array, " E"]
    coord: Int[Array, " E"]
    kind: Int[Array, " E"]
    value: Float[Array, " E"]
    point: Int[Array, " E"] | None = None

    @property
    def count(self) -> Int[Array, ""]:
        """The number of events (the rest is padding)."""
        import jax.numpy as jnp

        return jnp.sum(self.kind >= 0)


class SlidingStatus(eqx.Module):
    """Each face's Filippov status at the end of an event-driven solve, ``(L, M)``.

    Attributes:
        stuck: the face is held at a data value (docs/theory.md#sliding).
        stuck_value: the threshold it is held at (NaN if not stuck).
        stuck_time: when it got stuck (NaN if not stuck).
        group: glued groups: faces with the same label move as one (docs/theory.md#meeting-faces).
    """

    stuck: Bool[Array, "L M"]
    stuck_value: Float[Array, "L M"]
    stuck_time: Float[Array, "L M"]
    group: Int[Array, "L M"]


class FlowSolution(eqx.Module):
    """Saved states of a gradient-flow solve (effective flow or full network).

    Attributes:
        ts: ``(T,)`` save times s.
        params: the state (``AdaptedParameters`` or ``ReLUNetwork``) with a leading ``(T,)``
            axis on every leaf.
        loss: ``(T,)`` cost at each save time.
        num_steps: accepted + rejected steps taken.
        num_accepted_steps: accepted steps.
        num_rejected_steps: rejected steps (the field jumps when a point crosses a face).
        success: whether the solve reached the final time with a finite state.
        events: the events of an event-driven solve (``None`` for a plain diffrax solve).
        sliding: each face's sliding status at the end (``None`` for a plain diffrax solve).
    """

    ts: Float[Array, " T"]
    params: Any
    loss: Float[Array, " T"]
    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_rejected_steps: Int[Array, ""]
    success: Bool[Array, ""]
    events: FlowEvents | None = None
    sliding: SlidingStatus | None = None

    @classmethod
    def from_diffrax(cls, sol, save_ts: Float[Array, " T"], loss: Float[Array, " T"]):
        """The solution of a ``diffrax.diffeqsolve`` saved at ``save_ts`` with its ``loss``
        (``success``: reached the final time with a finite loss)."""
        import diffrax
        import jax.numpy as jnp

        return cls(
            ts=save_ts,
            params=sol.ys,
            loss=loss,
            num_steps=sol.stats["num_steps"],
            num_accepted_steps=sol.stats["num_accepted_steps"],
            num_rejected_steps=sol.stats["num_rejected_steps"],
            success=(sol.result == diffrax.RESULTS.successful) & jnp.all(jnp.isfinite(loss)),
        )


def _sliding_hint(solution: FlowSolution, settings: SolverSettings) -> str:
    """Advice when a plain adaptive solve ran out of steps: most often a face sticks at a data
    value, or a pre-activation of the full network slides at 0, and the solver chatters across
    it (docs/theory.md#sliding)."""
    plain = solution.events is None and settings.solver != "euler" and not settings.events
    if not plain or int(solution.num_steps) < settings.max_steps:
        return ""
    if isinstance(solution.params, ReLUNetwork):
        return (
            "; if a pre-activation slides at 0 (Filippov sliding), the plain solve chatters: "
            "set flow.events = true"
        )
    return (
        "; if a face sticks at a data value (shared faces), the plain solve chatters: set "
        'flow.solver = "exact" (bias-only flow) or flow.events = true'
    )


def _network_event_failure(solution: FlowSolution, settings: SolverSettings) -> str | None:
    """The message of a failed event-located full-network solve that ran into one of its
    bounds (``max_events``, ``MAX_HELD``), naming the last event's unit and point; ``None``
    when it failed otherwise."""
    events = solution.events
    if events is None or events.point is None:
        return None
    count = int(np.sum(np.asarray(events.kind) >= 0))
    if count == 0:
        return None
    last = count - 1
    time, value = float(events.time[last]), float(events.value[last])
    if count <= settings.max_events and not np.isnan(value):
        return None
    kind = {0: "a crossing", 1: "a stick", 5: "an unstick"}.get(int(events.kind[last]), "an event")
    what = (
        f"{kind} at s = {time:g} of the pre-activation of unit {int(events.coord[last])} of "
        f"hidden layer {int(events.layer[last])} at training point {int(events.point[last])} "
        "(indices from 0)"
    )
    if count > settings.max_events:
        return (
            f"the event-located solve reached flow.max_events = {settings.max_events} before "
            f"s = {float(solution.ts[-1]):g}; its last event was {what}: raise flow.max_events"
        )
    return (
        f"the event-located solve would hold more than {MAX_HELD} pre-activations at 0 at once; "
        f"its last event was {what}, which could not be held"
    )


def check_solution(solution: FlowSolution, settings: SolverSettings) -> FlowSolution:
    """Return ``solution`` if a single (un-batched) solve succeeded; otherwise raise a
    ``RuntimeError`` that says how far it got and what to change.

    Batch axis: refused (``solution.success`` must be a scalar; check each member of a batch).
    """
    check = Shapes("check_solution")
    check("solution.success", solution.success, "")
    check("solution.ts", solution.ts, "T")
    if not bool(solution.success):
        bound = _network_event_failure(solution, settings)
        if bound is not None:
            raise RuntimeError(bound)
        raise RuntimeError(
            f"the gradient-flow solve stopped before s = {float(solution.ts[-1]):g} after "
            f"{int(solution.num_steps)} steps ({int(solution.num_rejected_steps)} rejected; "
            f"max_steps = {settings.max_steps}): raise flow.max_steps, loosen flow.rtol/atol, "
            "or check for d → 0 (singular weights)" + _sliding_hint(solution, settings)
        )
    return solution
