"""The one solution type of every gradient-flow solve, and its check."""

from __future__ import annotations

from typing import Any

import equinox as eqx
from jaxtyping import Array, Bool, Float, Int

from ..core._shapes import Shapes
from ._settings import SolverSettings


class FlowEvents(eqx.Module):
    """The events of an event-driven solve, in time order, padded with ``time = inf``.

    Attributes:
        time: ``(E,)`` flow time s of each event.
        layer: ``(E,)`` layer ℓ of the face that triggered it.
        coord: ``(E,)`` its coordinate k.
        kind: ``(E,)`` 0 cross (a data value crossed), 1 stick (held at a data value: Filippov
            sliding), 2 meet (faces met and handed points over), 3 glue (faces move on as one),
            4 release (a glued group separated); ``-1`` for padding.
        value: ``(E,)`` the value at which it happened (the data value or the common threshold).
    """

    time: Float[Array, " E"]
    layer: Int[Array, " E"]
    coord: Int[Array, " E"]
    kind: Int[Array, " E"]
    value: Float[Array, " E"]

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
    value and the solver chatters across it (docs/theory.md#sliding)."""
    plain = solution.events is None and settings.solver != "euler" and not settings.events
    if not plain or int(solution.num_steps) < settings.max_steps:
        return ""
    return (
        "; if a face sticks at a data value (shared faces), the plain solve chatters: set "
        'flow.solver = "exact" (bias-only flow) or flow.events = true'
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
        raise RuntimeError(
            f"the gradient-flow solve stopped before s = {float(solution.ts[-1]):g} after "
            f"{int(solution.num_steps)} steps ({int(solution.num_rejected_steps)} rejected; "
            f"max_steps = {settings.max_steps}): raise flow.max_steps, loosen flow.rtol/atol, "
            "or check for d → 0 (singular weights)" + _sliding_hint(solution, settings)
        )
    return solution
