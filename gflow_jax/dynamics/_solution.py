"""The one solution type of every gradient-flow solve, and its check."""

from __future__ import annotations

from typing import Any

import equinox as eqx
from jaxtyping import Array, Bool, Float, Int

from ._settings import SolverSettings


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
    """

    ts: Float[Array, " T"]
    params: Any
    loss: Float[Array, " T"]
    num_steps: Int[Array, ""]
    num_accepted_steps: Int[Array, ""]
    num_rejected_steps: Int[Array, ""]
    success: Bool[Array, ""]

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


def check_solution(solution: FlowSolution, settings: SolverSettings) -> FlowSolution:
    """Return ``solution`` if a single (un-batched) solve succeeded; otherwise raise a
    ``RuntimeError`` that says how far it got and what to change."""
    if not bool(solution.success):
        raise RuntimeError(
            f"the gradient-flow solve stopped before s = {float(solution.ts[-1]):g} after "
            f"{int(solution.num_steps)} steps ({int(solution.num_rejected_steps)} rejected; "
            f"max_steps = {settings.max_steps}): raise flow.max_steps, loosen flow.rtol/atol, "
            "or check for d → 0 (singular weights)"
        )
    return solution
