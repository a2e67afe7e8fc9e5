"""The toolkit's diffrax calls for a gradient flow: the plain solve, and one segment of an
event-located solve."""

from __future__ import annotations

import diffrax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ..core._shapes import Shapes
from ..io import flow_progress_meter
from ._settings import SolverSettings


def solver_of(name: str) -> diffrax.AbstractSolver:
    """The diffrax solver called ``name``."""
    return {
        "tsit5": diffrax.Tsit5,
        "dopri5": diffrax.Dopri5,
        "dopri8": diffrax.Dopri8,
        "euler": diffrax.Euler,
    }[name]()


def controller(settings: SolverSettings) -> diffrax.AbstractStepSizeController:
    """Fixed steps ``dt0`` for ``solver="euler"``, else a PID controller with the settings'
    tolerances and coefficients (pcoeff = 0, icoeff = 1 is the classical I controller)."""
    if settings.solver == "euler":
        return diffrax.ConstantStepSize()
    return diffrax.PIDController(
        rtol=settings.rtol,
        atol=settings.atol,
        pcoeff=settings.pcoeff,
        icoeff=settings.icoeff,
        # diffrax's controller takes more steps with any dtmin, even 0: pass None for 0
        dtmin=None if settings.dtmin == 0.0 else settings.dtmin,
    )


def integrate_gradient_flow(
    field, y0, args, save_ts: Float[Array, " T"], settings: SolverSettings, progress: bool
) -> diffrax.Solution:
    """The toolkit's one diffrax call for a gradient flow ∂_s y = field(s, y, args).

    Adaptive steps (PIDController with the settings' tolerances and coefficients; ``dtmin`` 0
    never binds, > 0 forces steps of at least ``dtmin`` through sliding modes) or, with
    ``solver="euler"``, fixed steps ``dt0``; states saved at ``save_ts``; ``throw=False`` so a
    failed solve is reported in ``result`` instead of raised (batches survive).

    ``y0`` and ``args`` are any pytrees (the field checks them); ``save_ts`` ``(T,)``. Batch axis:
    refused on ``save_ts`` (vmap the call).
    """
    Shapes("integrate_gradient_flow")("save_ts", save_ts, "T")
    return diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        solver_of(settings.solver),
        t0=save_ts[0],
        t1=save_ts[-1],
        dt0=settings.dt0,
        y0=y0,
        args=args,
        saveat=diffrax.SaveAt(ts=save_ts),
        stepsize_controller=controller(settings),
        max_steps=settings.max_steps,
        throw=False,
        progress_meter=flow_progress_meter(progress),
    )


def integrate_segment(
    field, condition, root_finder, y0, args, t0, t1, save_ts: Float[Array, " T"], settings
) -> diffrax.Solution:
    """One segment of an event-located solve: ∂_s y = field(s, y, args) from ``t0`` until the
    first root of ``condition(s, y, args)`` (located by ``root_finder`` on the step's
    interpolant) or ``t1``, with the settings' adaptive controller and diffrax's initial-step
    heuristic. Saves: ``ys[0]`` at ``save_ts`` clipped into [t0, t1] (only those up to the
    segment's end are meaningful), ``ys[1]`` (and ``ts[1]``) at the segment's end; ``result``
    ``event_occurred`` when the condition stopped it; failures reported, not raised.

    ``y0`` and ``args`` are any pytrees; ``save_ts`` ``(T,)``. Batch axis: refused (vmap it)."""
    return diffrax.diffeqsolve(
        diffrax.ODETerm(field),
        solver_of(settings.solver),
        t0=t0,
        t1=t1,
        dt0=None,  # diffrax's initial-step heuristic at every restart
        y0=y0,
        args=args,
        saveat=diffrax.SaveAt(
            subs=[diffrax.SubSaveAt(ts=jnp.clip(save_ts, t0, t1)), diffrax.SubSaveAt(t1=True)]
        ),
        stepsize_controller=controller(settings),
        event=diffrax.Event(condition, root_finder=root_finder),
        max_steps=settings.max_steps,
        throw=False,
    )
