"""Solver settings of every gradient-flow solve, and their defaults (declared here only)."""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

#: the solvers a flow can be integrated with: diffrax's Runge–Kutta pairs, fixed-step explicit
#: Euler (``"euler"``: steps ``dt0``, = full-batch GD), and the exact event-driven solution of the
#: bias-only flow on C_in (``"exact"``, docs/theory.md#meeting-faces)
#: the adaptive Runge–Kutta pairs (step-size control; the ones that can locate events)
ADAPTIVE = ("tsit5", "dopri5", "dopri8")
SOLVERS = (*ADAPTIVE, "euler", "exact")

#: the most pre-activations the event-located full-network solve holds at 0 at once (the size of
#: its α system, docs/theory.md#sliding; fewer when the network has fewer (unit, point) pairs)
MAX_HELD = 16

#: default settings, the one declaration every config section and ``SolverSettings`` share
DEFAULTS: dict = {
    "rtol": 1e-8,
    "atol": 1e-10,
    "pcoeff": 0.3,
    "icoeff": 0.3,
    "dtmin": 0.0,
    "dt0": 1e-3,
    "solver": "tsit5",
    "max_steps": 100_000,
    "events": False,
    "max_events": 2000,
}


class SolverSettings(eqx.Module):
    """How a gradient flow is integrated (docs/theory.md#sliding on why the field is only piecewise
    smooth). ``rtol``/``atol``/``pcoeff``/``icoeff``/``dt0`` are arrays, so changing them does
    not recompile; ``solver``, ``max_steps`` (buffer sizes; counts rejected steps too),
    ``dtmin`` (0 = no lower bound; diffrax's controller behaves differently with any dtmin),
    ``events`` and ``max_events`` are static. ``solver="euler"`` takes fixed steps ``dt0``
    (explicit Euler = full-batch GD with η = dt0); ``solver="exact"`` solves the bias-only flow
    on C_in event by event in closed form (tolerances unused). ``events=True`` stops the
    adaptive solver at every discontinuity of the field, resolves it (crossing, sliding, gluing)
    and restarts (docs/theory.md#sliding); it applies to the effective flow of the input-layer
    cost (bias or joint) and to the full network (a pre-activation crossing 0, or held there
    with the Filippov α) with an adaptive solver, and elsewhere (the effective flow of the
    standard cost, ``"euler"``) the plain solve runs. The default ``events=False`` integrates
    across the jumps with step-size control alone: fastest on separated data at the default
    tolerances, but where a face sticks (or a pre-activation slides) it chatters until
    ``max_steps`` (a reported failure; benchmarks/README.md, work precision). ``max_events``
    bounds the events per coordinate of the exact and event-located solves (the located solve:
    ``max_events · M`` in all; the full network: ``max_events`` in all); reaching it is
    reported as a failure.
    """

    rtol: Float[Array, ""] = eqx.field(default=DEFAULTS["rtol"], converter=jnp.asarray)
    atol: Float[Array, ""] = eqx.field(default=DEFAULTS["atol"], converter=jnp.asarray)
    pcoeff: Float[Array, ""] = eqx.field(default=DEFAULTS["pcoeff"], converter=jnp.asarray)
    icoeff: Float[Array, ""] = eqx.field(default=DEFAULTS["icoeff"], converter=jnp.asarray)
    dtmin: float = eqx.field(static=True, default=DEFAULTS["dtmin"])
    dt0: Float[Array, ""] = eqx.field(default=DEFAULTS["dt0"], converter=jnp.asarray)
    solver: str = eqx.field(static=True, default=DEFAULTS["solver"])
    max_steps: int = eqx.field(static=True, default=DEFAULTS["max_steps"])
    events: bool = eqx.field(static=True, default=DEFAULTS["events"])
    max_events: int = eqx.field(static=True, default=DEFAULTS["max_events"])

    @classmethod
    def from_config(cls, section) -> SolverSettings:
        """From a config's ``[flow]`` section: any object with the attributes ``rtol``,
        ``atol``, ``pcoeff``, ``icoeff``, ``dtmin``, ``dt0``, ``solver`` and ``max_steps``."""
        return cls(**{name: getattr(section, name) for name in DEFAULTS})

    def __check_init__(self):
        if self.solver not in SOLVERS:
            raise ValueError(f"unknown solver {self.solver!r}; expected one of {SOLVERS}")
        if self.max_steps < 1:
            raise ValueError(f"max_steps must be positive, got {self.max_steps}")
        if self.max_events < 1:
            raise ValueError(f"max_events must be positive, got {self.max_events}")
