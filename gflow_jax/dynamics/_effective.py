"""The effective flow, integrated with diffrax (docs/theory.md#effective-flows)."""

from __future__ import annotations

import equinox as eqx
import jax
from jaxtyping import Array, Float

from ..core import AdaptedParameters, adapted_input_cost_gradient
from ..core._shapes import Shapes
from ._exact import solve_exact
from ._integrate import integrate_gradient_flow
from ._located import solve_located
from ._problem import FlowProblem, check_problem
from ._settings import ADAPTIVE, SolverSettings
from ._solution import FlowSolution


def _check_field(function: str, s, params, problem) -> None:
    check = check_problem(Shapes(function).adapted("params", params), problem)
    check("s", s, "")


def vector_field(s: Float[Array, ""], params: AdaptedParameters, problem: FlowProblem):
    """diffrax vector field ∂_s params = −mask ⊙ ∇C(params) (time-independent); ``s`` a scalar,
    d and b ``(L, M)`` with M the problem's. Batch axis: refused (vmap over it)."""
    _check_field("vector_field", s, params, problem)
    del s
    return problem.descent_direction(params)


def closed_form_vector_field(
    s: Float[Array, ""], params: AdaptedParameters, problem: FlowProblem
) -> AdaptedParameters:
    """The same vector field from the closed-form gradient of C_in (docs/theory.md#gradient).
    Shapes as in :func:`vector_field`. Batch axis: refused."""
    _check_field("closed_form_vector_field", s, params, problem)
    del s
    if problem.cost != "input":
        raise ValueError("the closed-form field is implemented for the input-layer cost only")
    grad = adapted_input_cost_gradient(params, problem.u, problem.targets, problem.weights)
    return jax.tree.map(lambda g, m: -g * m, grad, problem.mask(params))


def locatable(problem: FlowProblem, settings: SolverSettings) -> bool:
    """Whether ``settings.events`` applies: the effective flow of the input-layer cost (its
    sorted field knows where it jumps) integrated by an adaptive solver."""
    return problem.cost == "input" and problem.sorted is not None and settings.solver in ADAPTIVE


@eqx.filter_jit
def solve_flow(
    problem: FlowProblem,
    params0: AdaptedParameters,
    save_ts: Float[Array, " T"],
    settings: SolverSettings | None = None,
    *,
    progress: bool = False,
) -> FlowSolution:
    """Integrate the effective flow from ``params0`` over ``[save_ts[0], save_ts[-1]]``.

    Pure and jittable; ``vmap`` over ``problem``/``params0`` batches problems of one shape (a
    vmapped adaptive solve runs until its slowest member finishes). A failed solve (``max_steps``
    reached, non-finite state) is *reported* in ``success`` rather than raised, so batches survive;
    :func:`check_solution` raises for a single solve.

    Example:
        One face sweeping a cluster of ten points towards ỹ = 1.5 (docs/theory.md#closed-forms);
        the diffrax solution agrees with the exact event-driven one.

        >>> import jax.numpy as jnp, numpy as np
        >>> from gflow_jax import AdaptedParameters, FlowProblem, solve_face
        >>> u = jnp.linspace(0.0, 1.0, 10)[:, None]
        >>> problem = FlowProblem(u, jnp.full_like(u, 1.5))
        >>> p0 = AdaptedParameters.from_thresholds(jnp.ones((1, 1)), jnp.full((1, 1), 0.35))
        >>> ts = jnp.linspace(0.0, 10.0, 11)
        >>> sol = solve_flow(problem, p0, ts, SolverSettings(rtol=1e-10, atol=1e-12))
        >>> exact = solve_face(np.linspace(0, 1, 10), 1.5, c0=0.35, d=1.0, n_total=10)
        >>> gap = np.max(np.abs(sol.params.thresholds[:, 0, 0] - exact(ts)))
        >>> bool(sol.success), bool(gap < 1e-7)
        (True, True)

    Batch axis: refused on ``problem``, ``params0`` (d, b ``(L, M)``) and ``save_ts``
    ``(T,)``; vmap the solve over a batch.
    """
    check = check_problem(Shapes("solve_flow").adapted("params0", params0), problem)
    check("save_ts", save_ts, "T")
    settings = SolverSettings() if settings is None else settings
    if settings.solver == "exact":
        return solve_exact(problem, params0, save_ts, max_events=settings.max_events)
    if settings.events and locatable(problem, settings):
        return solve_located(problem, params0, save_ts, settings)
    sol = integrate_gradient_flow(vector_field, params0, problem, save_ts, settings, progress)
    return FlowSolution.from_diffrax(sol, save_ts, jax.vmap(problem.loss)(sol.ys))
